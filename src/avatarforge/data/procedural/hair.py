"""Hair: the back mass, tails and buns, hair ties, and the front hair with its fringe and shine."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from avatarforge.data.procedural.body import FACE
from avatarforge.data.procedural.canvas import Canvas
from avatarforge.data.procedural.geometry import bez, bez3, ellipse, mirror, offset, stroke, taper
from avatarforge.data.procedural.palette import Palette

HAIR_CY = 0.40
HAIR_RX = 0.262
HAIR_RY = 0.275

# hair style -> sidelock tip y, sidelock outer x offset at the tip, extra volume
_SIDELOCKS: dict[str, tuple[float, float]] = {
    "short": (0.60, 0.0),
    "bob": (0.70, 0.02),
    "long": (0.93, 0.06),
    "twin_tails": (0.66, 0.0),
    "ponytail": (0.64, 0.0),
    "buns": (0.63, 0.0),
}


def _bangs_edge(style: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """The lower edge of the fringe from right to left, and the strand valley points."""
    # (tip x, tip y) right to left, valleys between consecutive tips, first/last valley
    # at the sidelocks.
    if style == "blunt":
        tips_x = np.linspace(0.665, 0.335, 8)
        tips_y = np.full(8, 0.43) + np.array([0.006, 0.002, 0.0, 0.003, 0.004, 0.0, 0.002, 0.006])
        val_y = np.full(9, 0.418)
        val_y[0] = val_y[-1] = 0.43
        lean = 0.0
    elif style == "choppy":
        tips_x = np.array([0.655, 0.605, 0.548, 0.497, 0.445, 0.392, 0.345])
        tips_y = np.array([0.455, 0.432, 0.448, 0.47, 0.442, 0.436, 0.458])
        val_y = np.array([0.38, 0.37, 0.375, 0.36, 0.365, 0.37, 0.375, 0.38])
        lean = 0.0
    elif style == "swept":
        tips_x = np.array([0.64, 0.585, 0.525, 0.46, 0.395, 0.335])
        tips_y = np.array([0.405, 0.412, 0.425, 0.44, 0.455, 0.47])
        val_y = np.array([0.37, 0.355, 0.355, 0.36, 0.37, 0.38, 0.39])
        lean = -0.028
    elif style == "parted":
        tips_x = np.array([0.658, 0.605, 0.395, 0.342])
        tips_y = np.array([0.46, 0.452, 0.452, 0.46])
        val_y = np.array([0.40, 0.40, 0.30, 0.40, 0.40])
        lean = 0.0
    else:  # short: a high fringe that shows the forehead
        tips_x = np.linspace(0.655, 0.345, 7)
        tips_y = np.array([0.39, 0.356, 0.362, 0.352, 0.362, 0.356, 0.39])
        val_y = np.array([0.40, 0.33, 0.325, 0.32, 0.32, 0.325, 0.33, 0.40])
        lean = 0.0
    n = len(tips_x)
    val_x = np.empty(n + 1)
    val_x[1:-1] = (tips_x[:-1] + tips_x[1:]) * 0.5 - lean * 0.3
    val_x[0], val_x[-1] = 0.685, 0.315
    if style == "parted":
        val_x[2] = 0.5
    pts: list[np.ndarray] = []
    valleys: list[np.ndarray] = []
    for i in range(n):
        v0 = np.array([val_x[i], val_y[i]])
        v1 = np.array([val_x[i + 1], val_y[i + 1]])
        tip = np.array([tips_x[i] + lean * 0.5, tips_y[i]])
        # Blade-like strands: each side bows outwards, meeting in a sharp tip.
        c0 = (v0 * 0.35 + tip * 0.65) + np.array([(v0[0] - tip[0]) * 0.15, -0.35 * (tip[1] - v0[1])])
        c1 = (v1 * 0.35 + tip * 0.65) + np.array([(v1[0] - tip[0]) * 0.15, -0.35 * (tip[1] - v1[1])])
        c0[1] = max(c0[1], v0[1])
        c1[1] = max(c1[1], v1[1])
        pts.append(bez(v0, c0, tip, 6)[:-1])
        pts.append(bez(tip, c1, v1, 6)[:-1])
        valleys.append(v0)
    pts.append(np.array([[val_x[-1], val_y[-1]]]))
    return np.concatenate(pts), valleys


@functools.lru_cache(maxsize=64)
def _front_hair(style: str, bangs: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """The front hair mass: crown, sidelocks and fringe, as one polygon (cached: it only
    depends on the two styles)."""
    tip_y, flare = _SIDELOCKS[style]
    cap = ellipse(0.5, HAIR_CY, HAIR_RX, HAIR_RY, 26, math.pi, 2.0 * math.pi)  # left -> top -> right
    ox = 0.5 + HAIR_RX
    # Right sidelock: outer edge down to the tip, inner edge back up next to the cheek.
    if style == "long":
        outer = bez3((ox, HAIR_CY), (ox + 0.012, 0.58), (0.775, 0.76), (0.745, tip_y), 12)
        inner = bez3((0.745, tip_y), (0.70, 0.82), (0.675, 0.62), (0.685, 0.44), 12)
    elif style == "bob":
        outer = bez3((ox, HAIR_CY), (ox + 0.02, 0.55), (ox + flare, 0.66), (0.705, tip_y), 10)
        inner = bez3((0.705, tip_y), (0.69, 0.64), (0.69, 0.52), (0.685, 0.44), 10)
    else:
        outer = bez3((ox, HAIR_CY), (ox, 0.50), (0.73, 0.56), (0.695, tip_y), 10)
        inner = bez3((0.695, tip_y), (0.672, tip_y - 0.06), (0.675, 0.50), (0.685, 0.44), 10)
    edge, valleys = _bangs_edge(bangs)
    right = np.concatenate([outer[1:], inner[1:]])
    left = mirror(right[::-1])
    poly = np.concatenate([cap, right, edge[1:-1], left[:-1]])
    poly.flags.writeable = False
    return poly, valleys


def draw_back_hair(cv: Canvas, a: Mapping[str, Any], pal: Palette) -> None:
    """Hair behind the head and shoulders (drawn first)."""
    style = a["hair_style"]
    d = -0.4
    cap = ellipse(0.5, HAIR_CY, HAIR_RX + 0.004, HAIR_RY + 0.004, 26, math.pi, 2.0 * math.pi)
    ox = 0.5 + HAIR_RX + 0.004
    if style == "long":
        side = bez3((ox, HAIR_CY), (ox + 0.05, 0.62), (0.84, 0.80), (0.85, 1.02), 12)
        bottom = np.array([[0.85, 1.04], [0.15, 1.04]])
        right = np.concatenate([side, bottom[:1]])
        poly = np.concatenate([cap, right, mirror(right[::-1])])
        cv.poly(poly, pal.hair, "hair", depth=d)
        cv.poly(
            np.array([[0.40, 0.60], [0.60, 0.60], [0.68, 1.02], [0.32, 1.02]]), pal.hair_deep, "hair", depth=d
        )
    elif style == "bob":
        side = bez3((ox, HAIR_CY), (ox + 0.025, 0.56), (0.79, 0.68), (0.72, 0.725), 10)
        bottom = bez((0.72, 0.725), (0.5, 0.70), (0.28, 0.725), 9)
        poly = np.concatenate([cap, side[1:], bottom[1:-1], mirror(side[::-1])[:-1]])
        cv.poly(poly, pal.hair, "hair", depth=d)
        cv.poly(
            np.array([[0.40, 0.58], [0.60, 0.58], [0.64, 0.715], [0.36, 0.715]]),
            pal.hair_deep,
            "hair",
            depth=d,
        )
    else:
        side = bez3((ox, HAIR_CY), (ox + 0.005, 0.52), (0.70, 0.62), (0.60, 0.64), 10)
        poly = np.concatenate([cap, side[1:], mirror(side[::-1])[:-1]])
        cv.poly(poly, pal.hair, "hair", depth=d)
    cv.outline(poly, pal.hair_line, "hair", 0.004, depth=d)


def draw_tails(cv: Canvas, a: Mapping[str, Any], pal: Palette) -> None:
    """Twin tails / ponytail / buns: extra hair attached to the back of the head."""
    style = a["hair_style"]
    d = -0.3
    if style == "twin_tails":
        for side in (-1.0, 1.0):
            outer = bez3((0.74, 0.25), (0.90, 0.32), (0.92, 0.62), (0.86, 0.94), 14)
            inner = bez3((0.86, 0.94), (0.86, 0.70), (0.78, 0.50), (0.72, 0.36), 12)
            tail = np.concatenate([outer, inner[1:]])
            if side < 0:
                tail = mirror(tail)
            cv.poly(tail, pal.hair, "hair", depth=d)
            streak = bez3((0.79, 0.33), (0.86, 0.45), (0.87, 0.65), (0.855, 0.86), 10)
            if side < 0:
                streak = mirror(streak)
            cv.line(streak, taper(10, 0.002, 0.006, 0.001), pal.hair_shadow, "hair", depth=d)
            cv.outline(tail, pal.hair_line, "hair", 0.004, depth=d)
    elif style == "ponytail":
        outer = bez3((0.60, 0.14), (0.86, 0.12), (0.90, 0.45), (0.84, 0.86), 16)
        inner = bez3((0.84, 0.86), (0.79, 0.62), (0.75, 0.42), (0.66, 0.30), 12)
        tail = np.concatenate([outer, inner[1:]])
        cv.poly(tail, pal.hair, "hair", depth=d)
        cv.line(
            bez3((0.72, 0.2), (0.84, 0.28), (0.86, 0.5), (0.835, 0.76), 10),
            taper(10, 0.002, 0.006, 0.001),
            pal.hair_shadow,
            "hair",
            depth=d,
        )
        cv.outline(tail, pal.hair_line, "hair", 0.004, depth=d)
    elif style == "buns":
        for side in (-1.0, 1.0):
            bun = ellipse(0.5 + side * 0.19, 0.155, 0.078, 0.074, 22)
            cv.poly(bun, pal.hair, "hair", depth=d)
            cv.outline(bun, pal.hair_line, "hair", 0.004, depth=d)
            cv.line(
                ellipse(0.5 + side * 0.19, 0.16, 0.045, 0.042, 9, math.pi * 1.1, math.pi * 1.6),
                0.005,
                pal.hair_light,
                "hair",
                depth=d,
            )


def draw_hair_ties(cv: Canvas, a: Mapping[str, Any], pal: Palette) -> None:
    """Hair ties where twin tails or the ponytail meet the head."""
    style = a["hair_style"]
    if style == "twin_tails":
        for side in (-1.0, 1.0):
            cv.poly(ellipse(0.5 + side * 0.245, 0.285, 0.022, 0.03, 12), pal.accent, "hair_tie", depth=0.3)
    elif style == "ponytail":
        cv.poly(ellipse(0.70, 0.18, 0.02, 0.028, 12), pal.accent, "hair_tie", depth=-0.3)


@functools.lru_cache(maxsize=256)
def _front_hair_art(style: str, bangs: str, min_w: float) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Front hair polygon, its strand-line polygons and the highlight band. Cached: the
    geometry depends only on the styles (and, through the minimum line width, the size)."""
    poly, valleys = _front_hair(style, bangs)
    strands = []
    # Strand lines from the crown into the valleys of the fringe.
    for v in valleys[1:]:
        top = (0.5 + (v[0] - 0.5) * 0.5, 0.2)
        mid = (v[0], (v[1] + 0.2) * 0.5)
        pts = bez(top, mid, (v[0], v[1] - 0.002), 8)
        strands.append(stroke(pts, np.maximum(taper(8, 0.0005, 0.0045, 0.0015), min_w)))
    # A strand line down each sidelock.
    tip_y = _SIDELOCKS[style][0]
    if style == "long":
        lock = bez((0.728, 0.46), (0.735, 0.70), (0.742, tip_y - 0.06), 10)
    else:
        lock = bez((0.722, 0.46), (0.722, tip_y - 0.06), (0.706, tip_y - 0.025), 10)
    for pts in (lock, mirror(lock)):
        strands.append(stroke(pts, np.maximum(taper(10, 0.001, 0.0045, 0.0005), min_w)))
    # The shiny "angel ring" across the crown, with a jagged lower edge.
    upper = ellipse(0.5, HAIR_CY - 0.01, 0.20, 0.165, 14, math.pi * 1.18, math.pi * 1.82)
    lower = ellipse(0.5, HAIR_CY - 0.01, 0.205, 0.128, 14, math.pi * 1.82, math.pi * 1.18)
    lower[1:-1:2, 1] += 0.016
    shine = np.concatenate([upper, lower])
    for arr in (*strands, shine):
        arr.flags.writeable = False
    return poly, strands, shine


def draw_front_hair(cv: Canvas, a: Mapping[str, Any], pal: Palette) -> None:
    """The front hair over the face: its shadow on the face, strands, shine and outline."""
    d = 0.6
    poly, strands, shine = _front_hair_art(a["hair_style"], a["bangs"], cv.min_w)
    # Shadow the fringe casts on the forehead and cheeks, clipped to the face.
    shadow = offset(poly, 0.0, 0.018)
    cv.clipped(FACE, [(shadow, pal.skin_shadow, "skin")], depth=0.25)
    cv.poly(poly, pal.hair, "hair", depth=d)
    for strand in strands:
        cv.poly(strand, pal.hair_shadow, "hair", depth=d)
    cv.poly(shine, pal.hair_light, "hair", depth=d)
    cv.outline(poly, pal.hair_line, "hair", 0.004, depth=d)
