"""Colours of one avatar, derived from its attributes (shading towards a cool purple, not black)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from avatarforge.data.procedural.schema import (
    ACCENT_COLORS,
    EYE_COLORS,
    HAIR_COLORS,
    OUTFIT_COLORS,
    SKIN_TONES,
    Color,
)


def mix(a: Sequence[float], b: Sequence[float], t: float) -> Color:
    """Linear blend of two colours: ``a`` at t = 0, ``b`` at t = 1, rounded to integers."""
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


# Anime shading goes towards a cool purple rather than black.
SHADE = (44, 30, 72)
WHITE = (255, 255, 255)


def rgba(c: Color) -> tuple[int, int, int, int]:
    """An opaque RGBA tuple from an RGB colour."""
    return (c[0], c[1], c[2], 255)


class Palette:
    """Every colour of one avatar, derived from its attributes."""

    def __init__(self, a: Mapping[str, Any]) -> None:
        hair = HAIR_COLORS[a["hair_color"]]
        self.hair = rgba(hair)
        self.hair_shadow = rgba(mix(hair, SHADE, 0.28))
        self.hair_deep = rgba(mix(hair, SHADE, 0.45))
        self.hair_line = rgba(mix(hair, SHADE, 0.62))
        # Dark hair needs a stronger, bluish highlight to read as shiny.
        light_target = (200, 210, 255) if sum(hair) < 250 else WHITE
        self.hair_light = rgba(mix(hair, light_target, 0.42 if sum(hair) < 250 else 0.5))
        skin = SKIN_TONES[a["skin_tone"]]
        self.skin = rgba(skin)
        self.skin_shadow = rgba(mix(skin, (200, 90, 110), 0.16))
        self.skin_line = rgba(mix(skin, (120, 40, 50), 0.45))
        self.blush = rgba(mix(skin, (255, 96, 128), 0.28))
        self.blush_strong = rgba(mix(skin, (255, 80, 118), 0.48))
        self.ear_inner = rgba(mix(skin, (200, 90, 110), 0.25))
        eye = EYE_COLORS[a["eye_color"]]
        self.iris = rgba(eye)
        self.iris_dark = rgba(mix(eye, (20, 10, 30), 0.55))
        self.iris_light = rgba(mix(eye, WHITE, 0.45))
        self.pupil = rgba(mix(eye, (16, 8, 24), 0.8))
        self.eye_white = (252, 252, 255, 255)
        self.eye_shadow = (214, 214, 236, 255)
        self.lash = rgba(mix((40, 26, 36), hair, 0.18))
        self.brow = rgba(mix(hair, (40, 26, 36), 0.55))
        self.mouth = (150, 40, 58, 255)
        self.mouth_in = (122, 30, 48, 255)
        self.tongue = (238, 120, 132, 255)
        self.mouth_line = rgba(mix((120, 40, 50), skin, 0.25))
        outfit = OUTFIT_COLORS[a["outfit_color"]]
        self.outfit = rgba(outfit)
        self.outfit_shadow = rgba(mix(outfit, SHADE, 0.22))
        self.outfit_line = rgba(mix(outfit, SHADE, 0.5))
        self.outfit_trim = (250, 250, 252, 255) if sum(outfit) < 480 else (52, 62, 110, 255)
        self.shirt = (250, 250, 252, 255) if sum(outfit) < 700 else (214, 220, 236, 255)
        # The outfit's accent, unless it would vanish against the hair (ribbons, ties).
        accent = next(
            c
            for c in (ACCENT_COLORS[a["outfit_color"]], (224, 60, 80), (110, 170, 240))
            if sum((x - y) ** 2 for x, y in zip(c, hair)) >= 110**2
        )
        self.accent = rgba(accent)
        self.accent_dark = rgba(mix(accent, SHADE, 0.35))
        self.frame = (64, 56, 72, 255)
