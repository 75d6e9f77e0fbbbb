"""The body and the head's base: outfit, neck, the face outline, ears and the jaw line."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from avatarforge.data.procedural.canvas import Canvas
from avatarforge.data.procedural.geometry import bez, bez3, ellipse, mirror, offset, taper
from avatarforge.data.procedural.palette import Palette

_FACE_CY = 0.45
_FACE_RX = 0.205


def _face_outline() -> np.ndarray:
    top = ellipse(0.5, _FACE_CY, _FACE_RX, 0.27, n=20, a0=math.pi, a1=2.0 * math.pi)
    jaw = bez3((0.5 + _FACE_RX, _FACE_CY), (0.71, 0.59), (0.60, 0.665), (0.5, 0.678), n=14)
    return np.concatenate([top, jaw[1:], mirror(jaw[::-1])[1:-1]])


FACE = _face_outline()
# The jaw line (for line art and the shadow it casts on the neck).
JAW = FACE[20:]


def draw_body(cv: Canvas, a: Mapping[str, Any], pal: Palette) -> None:
    """Neck, chest skin and the outfit (not affected by head pose)."""
    style = a["outfit_style"]
    if style == "hoodie":
        # The lowered hood: a thick collar behind the neck.
        hood = np.concatenate(
            [
                bez((0.33, 0.84), (0.36, 0.70), (0.5, 0.70), 8),
                bez((0.5, 0.70), (0.64, 0.70), (0.67, 0.84), 8),
            ]
        )
        cv.poly(hood, pal.outfit_shadow, "outfit", head=False)
    neck = np.array([[0.452, 0.60], [0.548, 0.60], [0.556, 0.80], [0.444, 0.80]])
    cv.poly(neck, pal.skin, "skin", head=False)
    # Shoulders: a smooth trapezoid from the neck base out past the image edges.
    right = np.concatenate(
        [
            bez((0.5, 0.765), (0.56, 0.765), (0.64, 0.80), 6),
            bez3((0.64, 0.80), (0.80, 0.83), (0.90, 0.86), (0.94, 0.98), 10)[1:],
            np.array([[0.96, 1.02]]),
        ]
    )
    if cv.sway:
        # A leaning body must still reach the bottom edge of the picture.
        right = np.concatenate([right, np.array([[0.96, 1.2]])])
    body = np.concatenate([right, mirror(right[::-1])])
    cv.poly(body, pal.outfit, "outfit", head=False)
    # Neckline: skin visible below the neck, shape depends on the outfit.
    if style == "sailor":
        v = np.array([[0.445, 0.77], [0.555, 0.77], [0.5, 0.875]])
        cv.poly(v, pal.skin, "skin", head=False)
        collar_r = np.concatenate(
            [np.array([[0.5, 0.885], [0.555, 0.772]]), bez((0.60, 0.775), (0.70, 0.83), (0.76, 0.86), 6)]
        )
        collar_r = np.concatenate([collar_r, np.array([[0.64, 0.92]])])
        trim = pal.outfit_trim
        cv.poly(collar_r, trim, "outfit", head=False)
        cv.poly(mirror(collar_r), trim, "outfit", head=False)
        stripe = pal.outfit if trim[0] < 128 else pal.outfit_line
        cv.line(bez((0.56, 0.80), (0.66, 0.86), (0.70, 0.875), 6), 0.006, stripe, "outfit", head=False)
        cv.line(
            mirror(bez((0.56, 0.80), (0.66, 0.86), (0.70, 0.875), 6)), 0.006, stripe, "outfit", head=False
        )
        # Scarf knot and tails.
        cv.poly(
            np.array([[0.5, 0.87], [0.545, 0.935], [0.52, 0.99], [0.5, 0.93]]),
            pal.accent_dark,
            "outfit",
            head=False,
        )
        cv.poly(
            np.array([[0.5, 0.87], [0.455, 0.935], [0.48, 0.99], [0.5, 0.93]]),
            pal.accent,
            "outfit",
            head=False,
        )
        cv.poly(ellipse(0.5, 0.875, 0.022, 0.017, 12), pal.accent, "outfit", head=False)
    elif style == "blazer":
        cv.poly(
            np.array([[0.445, 0.77], [0.555, 0.77], [0.58, 0.80], [0.5, 0.96], [0.42, 0.80]]),
            pal.shirt,
            "outfit",
            head=False,
        )
        # Shirt collar points.
        cv.poly(
            np.array([[0.5, 0.80], [0.445, 0.765], [0.43, 0.805], [0.47, 0.835]]),
            pal.shirt,
            "outfit",
            head=False,
        )
        cv.poly(
            np.array([[0.5, 0.80], [0.555, 0.765], [0.57, 0.805], [0.53, 0.835]]),
            pal.shirt,
            "outfit",
            head=False,
        )
        cv.outline(
            np.array([[0.5, 0.80], [0.445, 0.765], [0.43, 0.805], [0.47, 0.835]]),
            (170, 176, 196, 255),
            "outfit",
            0.003,
            head=False,
        )
        cv.outline(
            np.array([[0.5, 0.80], [0.555, 0.765], [0.57, 0.805], [0.53, 0.835]]),
            (170, 176, 196, 255),
            "outfit",
            0.003,
            head=False,
        )
        tie = np.array([[0.488, 0.805], [0.512, 0.805], [0.522, 0.93], [0.5, 0.96], [0.478, 0.93]])
        cv.poly(tie, pal.accent, "outfit", head=False)
        cv.poly(
            np.array([[0.486, 0.80], [0.514, 0.80], [0.508, 0.83], [0.492, 0.83]]),
            pal.accent_dark,
            "outfit",
            head=False,
        )
        lapel = np.array([[0.58, 0.795], [0.64, 0.81], [0.60, 0.86], [0.52, 1.0], [0.5, 1.0], [0.5, 0.96]])
        cv.poly(lapel, pal.outfit_shadow, "outfit", head=False)
        cv.poly(mirror(lapel), pal.outfit_shadow, "outfit", head=False)
    elif style == "hoodie":
        neck_hole = ellipse(0.5, 0.77, 0.07, 0.035, 16, 0.0, math.pi)
        cv.poly(
            np.concatenate([[[0.43, 0.765]], neck_hole[::-1], [[0.57, 0.765]]]), pal.skin, "skin", head=False
        )
        cv.line(
            ellipse(0.5, 0.77, 0.072, 0.037, 16, 0.0, math.pi),
            0.008,
            pal.outfit_shadow,
            "outfit",
            head=False,
        )
        for x in (0.465, 0.535):
            cv.line(
                np.array([[x, 0.80], [x + (x - 0.5) * 0.2, 0.90]]),
                0.005,
                pal.outfit_trim,
                "outfit",
                head=False,
            )
            cv.poly(
                ellipse(x + (x - 0.5) * 0.2, 0.905, 0.007, 0.011, 8), pal.outfit_line, "outfit", head=False
            )
    else:  # turtleneck: the collar covers the bottom of the neck
        collar = np.array([[0.442, 0.72], [0.558, 0.72], [0.575, 0.79], [0.425, 0.79]])
        cv.poly(collar, pal.outfit_shadow, "outfit", head=False)
        for x in (0.465, 0.49, 0.51, 0.535):
            cv.line(
                np.array([[x, 0.728], [x + (x - 0.5) * 0.3, 0.785]]),
                0.003,
                pal.outfit_line,
                "outfit",
                head=False,
            )
        cv.line(np.array([[0.43, 0.79], [0.57, 0.79]]), 0.004, pal.outfit_line, "outfit", head=False)
    cv.outline(body, pal.outfit_line, "outfit", 0.004, head=False)


def draw_neck_shadow(cv: Canvas, pal: Palette) -> None:
    """The shadow the jaw casts on the neck, clipped to the neck."""
    neck = np.array([[0.455, 0.58], [0.545, 0.58], [0.552, 0.80], [0.448, 0.80]])
    shadow = np.concatenate([[[0.43, 0.60], [0.57, 0.60]], offset(JAW, 0.0, 0.04)])
    cv.clipped(neck, [(shadow, pal.skin_shadow, "skin")], depth=0.0)


def draw_head(cv: Canvas, pal: Palette) -> None:
    """Ears (behind the face, turned the other way), the face and the jaw line."""
    for side in (-1.0, 1.0):
        ear = ellipse(0.5 + side * 0.198, 0.50, 0.03, 0.05, 14)
        cv.poly(ear, pal.skin, "skin", depth=-0.3)
        cv.poly(ellipse(0.5 + side * 0.2, 0.505, 0.014, 0.03, 10), pal.ear_inner, "skin", depth=-0.3)
    cv.poly(FACE, pal.skin, "skin", depth=0.25)
    cv.line(JAW, taper(len(JAW), 0.002, 0.005, 0.002), pal.skin_line, "skin", depth=0.25)
