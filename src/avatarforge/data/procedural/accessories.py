"""Head accessories: cat ears (behind the front hair), ribbon, beret, hair clip, headphones, glasses."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from avatarforge.data.procedural.canvas import Canvas
from avatarforge.data.procedural.face import EYE_DX, EYE_Y
from avatarforge.data.procedural.geometry import bez, ellipse, mirror
from avatarforge.data.procedural.hair import HAIR_CY, HAIR_RX, HAIR_RY
from avatarforge.data.procedural.palette import SHADE, Palette, mix, rgba


def draw_accessory_back(cv: Canvas, a: Mapping[str, Any], pal: Palette) -> None:
    """Accessories behind the front hair (cat ears)."""
    if a["accessory"] != "cat_ears":
        return
    for side in (-1.0, 1.0):
        ear = np.array([[0.30, 0.22], [0.285, 0.05], [0.43, 0.14]])
        inner = np.array([[0.315, 0.19], [0.30, 0.09], [0.39, 0.15]])
        if side > 0:
            ear, inner = mirror(ear), mirror(inner)
        cv.poly(ear, pal.hair, "accessory", depth=0.3)
        cv.outline(ear, pal.hair_line, "accessory", 0.004, depth=0.3)
        cv.poly(inner, (250, 180, 196, 255), "accessory", depth=0.3)


def draw_accessory_front(cv: Canvas, a: Mapping[str, Any], pal: Palette) -> None:
    """Accessories over the front hair: ribbon, beret, hair clip, headphones or glasses."""
    acc = a["accessory"]
    if acc == "ribbon":
        d = 0.5
        cx, cy = 0.695, 0.19
        loop_r = np.array([[cx, cy], [cx + 0.09, cy - 0.06], [cx + 0.1, cy + 0.045]])
        loop_l = np.array([[cx, cy], [cx - 0.085, cy - 0.07], [cx - 0.095, cy + 0.03]])
        for loop in (loop_r, loop_l):
            cv.poly(loop, pal.accent, "accessory", depth=d)
            cv.outline(loop, pal.accent_dark, "accessory", 0.004, depth=d)
        for tail in (
            np.array([[cx, cy], [cx + 0.05, cy + 0.1], [cx + 0.025, cy + 0.095]]),
            np.array([[cx, cy], [cx - 0.02, cy + 0.1], [cx - 0.045, cy + 0.085]]),
        ):
            cv.poly(tail, pal.accent_dark, "accessory", depth=d)
        cv.poly(ellipse(cx, cy, 0.022, 0.02, 12), pal.accent, "accessory", depth=d)
        cv.outline(ellipse(cx, cy, 0.022, 0.02, 12), pal.accent_dark, "accessory", 0.003, depth=d)
    elif acc == "beret":
        d = 0.5
        body = ellipse(0.0, 0.0, 0.26, 0.095, 28)
        ang = math.radians(-10.0)
        rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
        body = body @ rot.T + np.array([0.54, 0.168])
        col = pal.accent if a["outfit_color"] in ("white", "grey", "yellow") else pal.outfit
        dark = rgba(mix(col[:3], SHADE, 0.35))
        cv.poly(body, col, "accessory", depth=d)
        cv.outline(body, dark, "accessory", 0.004, depth=d)
        band = bez((0.305, 0.225), (0.52, 0.255), (0.775, 0.16), 10)
        cv.line(band, 0.01, dark, "accessory", depth=d)
        cv.poly(
            np.array([[0.53, 0.082], [0.55, 0.082], [0.548, 0.062], [0.535, 0.062]]),
            dark,
            "accessory",
            depth=d,
        )
    elif acc == "hairclip":
        d = 0.65
        cx, cy, r = 0.355, 0.30, 0.044
        ang = np.linspace(-math.pi / 2, 1.5 * math.pi, 10, endpoint=False)
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        star = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
        # Yellow star, pink on hair too close to yellow to show it.
        warm = a["hair_color"] in ("blonde", "orange", "silver")
        fill, edge = (
            ((255, 128, 170, 255), (214, 70, 120, 255))
            if warm
            else ((252, 214, 80, 255), (214, 150, 40, 255))
        )
        cv.poly(star, fill, "accessory", depth=d)
        cv.outline(star, edge, "accessory", 0.003, depth=d)
    elif acc == "headphones":
        d = 0.4
        band = ellipse(
            0.5, HAIR_CY + 0.02, HAIR_RX + 0.02, HAIR_RY + 0.035, 24, math.pi * 1.05, math.pi * 1.95
        )
        cv.line(band, 0.018, (70, 70, 84, 255), "accessory", depth=d)
        for side in (-1.0, 1.0):
            cup = ellipse(0.5 + side * 0.262, 0.47, 0.036, 0.06, 18)
            cv.poly(cup, (70, 70, 84, 255), "accessory", depth=d)
            cv.poly(ellipse(0.5 + side * 0.272, 0.47, 0.024, 0.044, 14), pal.accent, "accessory", depth=d)
    elif acc == "glasses":
        d = 1.0
        for side in (-1.0, 1.0):
            rim = ellipse(0.5 + side * EYE_DX, EYE_Y + 0.004, 0.068, 0.058, 24)
            cv.outline(rim, pal.frame, "accessory", 0.011, depth=d)
        cv.line(
            bez((0.5 - EYE_DX + 0.068, 0.50), (0.5, 0.49), (0.5 + EYE_DX - 0.068, 0.50), 6),
            0.005,
            pal.frame,
            "accessory",
            depth=d,
        )
