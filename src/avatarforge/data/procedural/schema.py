"""What an avatar is: sizes, named colours, the categorical values, the label schema and the part ids.

No drawing here: this is the vocabulary that the sampler, the renderer, the data set
builder and the evaluators share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from avatarforge.data.packed import LabelField, LabelSchema

MIN_SIZE = 32
MAX_SIZE = 512

Color = tuple[int, int, int]

# --------------------------------------------------------------------------- colour tables
# Base colours; shading tones are derived from them. Chosen to be far apart in RGB so that
# "nearest named colour of the dominant hair pixel" recovers the label (tests rely on it).
HAIR_COLORS: dict[str, Color] = {
    "black": (44, 40, 54),
    "brown": (116, 74, 50),
    "blonde": (246, 214, 124),
    "red": (204, 52, 60),
    "orange": (242, 142, 58),
    "pink": (250, 164, 198),
    "purple": (150, 96, 200),
    "blue": (64, 106, 208),
    "aqua": (98, 212, 216),
    "green": (86, 170, 98),
    "silver": (212, 214, 228),
}
EYE_COLORS: dict[str, Color] = {
    "brown": (150, 88, 52),
    "blue": (58, 122, 232),
    "green": (56, 170, 92),
    "red": (222, 50, 64),
    "purple": (150, 84, 214),
    "amber": (236, 170, 40),
    "aqua": (44, 196, 210),
    "pink": (242, 98, 170),
    "grey": (124, 134, 152),
}
SKIN_TONES: dict[str, Color] = {
    "fair": (255, 238, 228),
    "light": (253, 222, 198),
    "tan": (232, 184, 146),
    "brown": (184, 130, 94),
    "dark": (122, 82, 60),
}
OUTFIT_COLORS: dict[str, Color] = {
    "white": (244, 244, 250),
    "black": (48, 48, 60),
    "navy": (46, 58, 112),
    "red": (202, 62, 72),
    "blue": (82, 132, 222),
    "green": (72, 152, 104),
    "pink": (240, 152, 186),
    "purple": (142, 102, 200),
    "yellow": (246, 206, 92),
    "grey": (150, 152, 164),
}
# Accent (ribbons, ties, scarves, hair ties) chosen per outfit colour so it always contrasts.
ACCENT_COLORS: dict[str, Color] = {
    "white": (224, 60, 80),
    "black": (224, 60, 80),
    "navy": (232, 70, 86),
    "red": (250, 226, 120),
    "blue": (250, 226, 120),
    "green": (250, 226, 120),
    "pink": (226, 70, 120),
    "purple": (252, 214, 90),
    "yellow": (224, 70, 90),
    "grey": (110, 170, 240),
}
BACKGROUND_COLORS: dict[str, Color] = {
    "white": (246, 246, 250),
    "cream": (252, 244, 222),
    "pink": (255, 212, 226),
    "peach": (255, 208, 178),
    "yellow": (255, 240, 160),
    "mint": (194, 240, 212),
    "sky": (188, 222, 255),
    "lavender": (218, 204, 250),
    "grey": (198, 200, 210),
    "navy": (48, 54, 96),
}

HAIR_STYLES = ("short", "bob", "long", "twin_tails", "ponytail", "buns")
BANGS_STYLES = ("blunt", "choppy", "swept", "parted", "short")
EYE_SHAPES = ("round", "almond", "upturned", "droopy", "sleepy")
EYEBROW_STYLES = ("normal", "thick", "thin", "angry", "worried")
MOUTH_STYLES = ("normal", "cat", "small", "wide", "fang")
BLUSH_STYLES = ("none", "light", "strong", "lines")
ACCESSORIES = ("none", "glasses", "ribbon", "cat_ears", "beret", "hairclip", "headphones")
OUTFIT_STYLES = ("sailor", "blazer", "hoodie", "turtleneck")
BACKGROUND_KINDS = ("solid", "gradient", "radial", "dots")

# --------------------------------------------------------------------------- label schema
_CAT = LabelField
SCHEMA = LabelSchema(
    (
        _CAT("hair_color", "categorical", tuple(HAIR_COLORS), description="base colour of the hair"),
        _CAT("hair_style", "categorical", HAIR_STYLES, description="hair cut / length"),
        _CAT("bangs", "categorical", BANGS_STYLES, description="shape of the fringe in front of the face"),
        _CAT("eye_color", "categorical", tuple(EYE_COLORS), description="iris colour"),
        _CAT("eye_shape", "categorical", EYE_SHAPES, description="eye outline shape"),
        _CAT("skin_tone", "categorical", tuple(SKIN_TONES), description="skin colour"),
        _CAT("eyebrows", "categorical", EYEBROW_STYLES, description="eyebrow shape"),
        _CAT("mouth", "categorical", MOUTH_STYLES, description="mouth shape"),
        _CAT("blush", "categorical", BLUSH_STYLES, description="cheek blush"),
        _CAT("accessory", "categorical", ACCESSORIES, description="head accessory"),
        _CAT("outfit_color", "categorical", tuple(OUTFIT_COLORS), description="main colour of the outfit"),
        _CAT("outfit_style", "categorical", OUTFIT_STYLES, description="kind of outfit"),
        _CAT("background_kind", "categorical", BACKGROUND_KINDS, description="background pattern"),
        _CAT("background_color", "categorical", tuple(BACKGROUND_COLORS), description="background colour"),
        LabelField("eye_open", "continuous", range=(0.0, 1.0), description="0 = closed (blink), 1 = open"),
        LabelField("mouth_open", "continuous", range=(0.0, 1.0), description="0 = closed, 1 = wide open"),
        LabelField(
            "smile", "continuous", range=(-1.0, 1.0), description="-1 = frown, 0 = neutral, 1 = smile"
        ),
        LabelField(
            "head_yaw", "continuous", range=(-1.0, 1.0), description="head turn, + = towards image right"
        ),
        LabelField("head_tilt", "continuous", range=(-1.0, 1.0), description="head roll, + = clockwise"),
    )
)
IDENTITY_ATTRIBUTES: tuple[str, ...] = tuple(f.name for f in SCHEMA.categorical)
EXPRESSION_ATTRIBUTES: tuple[str, ...] = ("eye_open", "mouth_open", "smile", "head_yaw", "head_tilt")
NEUTRAL_EXPRESSION: dict[str, float] = {
    "eye_open": 1.0,
    "mouth_open": 0.0,
    "smile": 0.0,
    "head_yaw": 0.0,
    "head_tilt": 0.0,
}

# Part ids of the label map drawn alongside the picture (0 = nothing = background).
PART_NAMES: tuple[str, ...] = (
    "background",
    "skin",
    "hair",
    "eye_white",
    "iris",
    "eye_line",
    "eyebrow",
    "mouth",
    "outfit",
    "accessory",
    "hair_tie",
)
PART_IDS = {name: i for i, name in enumerate(PART_NAMES)}


# --------------------------------------------------------------------------- public API
def check_size(size: int) -> int:
    """Validate an image size: an integer from MIN_SIZE to MAX_SIZE, else ValueError."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"size must be an integer from {MIN_SIZE} to {MAX_SIZE}, got {size!r}")
    if not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise ValueError(f"size must be from {MIN_SIZE} to {MAX_SIZE} pixels, got {size}")
    return int(size)


def nearest_color(rgb: Sequence[float], table: Mapping[str, Color]) -> str:
    """Name of the colour in ``table`` nearest to ``rgb`` (Euclidean in RGB)."""
    names = list(table)
    cols = np.array([table[n] for n in names], dtype=np.float64)
    d = ((cols - np.asarray(rgb, dtype=np.float64)[None, :3]) ** 2).sum(axis=1)
    return names[int(np.argmin(d))]
