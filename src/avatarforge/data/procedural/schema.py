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

# The live (rig) parameter set, after the Live2D standard parameters: what a VTuber rig
# drives every frame. Render-only controls: render() draws them, but they are not labels
# (SCHEMA and EXPRESSION_ATTRIBUTES above are the label columns of packed data sets, and do
# not change). Four are the expression controls under their own names (smile is Live2D's
# mouth form, head_tilt its head roll); the rig has one eye_open per eye instead of
# eye_open. At NEUTRAL_LIVE every picture is bit-identical to one drawn without them.
LIVE_CONTROLS: dict[str, tuple[float, float]] = {
    "eye_open_l": (0.0, 1.0),  # the character's left eye = the image-right one; 0 closed
    "eye_open_r": (0.0, 1.0),  # the character's right eye = the image-left one
    "gaze_x": (-1.0, 1.0),  # irises towards the image right for +
    "gaze_y": (-1.0, 1.0),  # irises up for +
    "mouth_open": (0.0, 1.0),
    "smile": (-1.0, 1.0),
    "vowel_a": (0.0, 1.0),  # wide and tall
    "vowel_i": (0.0, 1.0),  # wide and flat, teeth showing
    "vowel_u": (0.0, 1.0),  # small round pout
    "vowel_e": (0.0, 1.0),  # medium wide, upper teeth
    "vowel_o": (0.0, 1.0),  # round and tall
    "brow_y": (-1.0, 1.0),  # eyebrows up for +
    "head_yaw": (-1.0, 1.0),
    "head_pitch": (-1.0, 1.0),  # nod; + looks up
    "head_tilt": (-1.0, 1.0),
    "body_sway": (-1.0, 1.0),  # the whole figure leans towards the image right for +
    "breath": (0.0, 1.0),  # shoulders, chest and head rise
}
# Neutral values. eye_open_l / eye_open_r are listed as 1 (the neutral eye_open), but when
# absent from a render dict they follow that dict's eye_open.
NEUTRAL_LIVE: dict[str, float] = {name: 0.0 for name in LIVE_CONTROLS} | {
    "eye_open_l": 1.0,
    "eye_open_r": 1.0,
}
# The live controls that are not label fields (drawn only when asked for).
RENDER_ONLY_CONTROLS: tuple[str, ...] = tuple(n for n in LIVE_CONTROLS if n not in EXPRESSION_ATTRIBUTES)

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
