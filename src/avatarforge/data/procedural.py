"""Procedural anime-style avatars: the built-in data set that needs no download.

Every avatar is a bust portrait (back hair, shoulders with an outfit, neck, head, large anime
eyes, mouth, front hair with bangs, accessories) drawn with polygons by PIL at a
supersampled resolution and box-filtered down to the requested size, so edges are
antialiased and the alpha channel is an exact coverage mask of the character.

An avatar is fully described by an attribute dict (see :data:`SCHEMA`): categorical identity
attributes (hair colour and style, eye colour and shape, ...) and continuous expression
controls (``eye_open``, ``mouth_open``, ``smile``, ``head_yaw``, ``head_tilt``).
:func:`sample_attributes` draws such a dict from a seed with a private
``numpy.random.Generator(PCG64(seed))``, so the same seed gives the same avatar, byte for
byte, on every run; :func:`render` is a pure function of the dict and the size.

Geometry is written in unit coordinates (the image is ``[0, 1]^2``, y pointing down). Each
drawn part has a *depth*: ``head_yaw`` shifts a part horizontally in proportion to its depth
(eyes and nose more than the face outline, back hair the other way) which gives a cheap
parallax turn; ``head_tilt`` rotates every head part about the neck.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from avatarforge.data.packed import LabelField, LabelSchema

__all__ = [
    "ACCENT_COLORS",
    "BACKGROUND_COLORS",
    "EXPRESSION_ATTRIBUTES",
    "EYE_COLORS",
    "HAIR_COLORS",
    "IDENTITY_ATTRIBUTES",
    "MAX_SIZE",
    "MIN_SIZE",
    "NEUTRAL_EXPRESSION",
    "OUTFIT_COLORS",
    "PART_NAMES",
    "SCHEMA",
    "SKIN_TONES",
    "check_size",
    "nearest_color",
    "random_expression",
    "render",
    "render_avatar",
    "render_background",
    "render_expressions",
    "sample_attributes",
]

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
_P = {name: i for i, name in enumerate(PART_NAMES)}

# Sampling weights of categorical values (uniform unless listed). "none" accessory is the
# most common single value so that plain avatars stay frequent.
_WEIGHTS: dict[str, dict[str, float]] = {
    "accessory": {"none": 3.0},
    "blush": {"none": 1.5, "light": 2.0},
    "skin_tone": {"fair": 2.0, "light": 2.0},
    "background_kind": {"dots": 0.6},
}


def _probabilities(field: LabelField) -> np.ndarray:
    w = np.array([_WEIGHTS.get(field.name, {}).get(v, 1.0) for v in field.values], dtype=np.float64)
    return w / w.sum()


# (name, values, cumulative probabilities) per categorical attribute, in schema order.
_CDFS = [(f.name, f.values, np.cumsum(_probabilities(f))) for f in SCHEMA.categorical]

# Head turn: horizontal shift (unit coordinates) per unit of depth at |yaw| = 1.
_YAW_SHIFT = 0.045
# Head roll at |tilt| = 1, in radians, about the neck.
_TILT_RAD = math.radians(12.0)
_PIVOT = (0.5, 0.70)


# --------------------------------------------------------------------------- attributes
def random_expression(rng: np.random.Generator) -> dict[str, float]:
    """Draw an expression (the continuous controls) from ``rng``.

    Mostly open eyes with some blinks and half-closed eyes, mouth closed about half the
    time, smiles more common than frowns, small head turns. Always consumes the same number
    of random numbers, so what is drawn after it does not depend on the branch taken.
    """
    u = rng.random(9)
    if u[0] < 0.15:
        eye_open = 0.0
    elif u[0] < 0.4:
        eye_open = float(u[1])
    else:
        eye_open = float(0.85 + 0.15 * u[1])
    mouth_open = 0.0 if u[2] < 0.5 else float(u[3])
    smile = float(-0.6 + 1.6 * u[4])
    yaw = float(np.clip((u[5] - 0.5) * 1.6 * (0.5 + u[6]), -1.0, 1.0))
    tilt = float(np.clip((u[7] - 0.5) * 1.2 * (0.5 + u[8]), -1.0, 1.0))
    return {
        "eye_open": round(eye_open, 4),
        "mouth_open": round(mouth_open, 4),
        "smile": round(smile, 4),
        "head_yaw": round(yaw, 4),
        "head_tilt": round(tilt, 4),
    }


def _check_value(name: str, value: Any) -> Any:
    """Validate one attribute value; categorical indices are accepted and mapped to names."""
    try:
        field = SCHEMA[name]
    except KeyError:
        raise ValueError(f"unknown attribute {name!r}; valid attributes: {', '.join(SCHEMA.names)}") from None
    if field.kind == "categorical":
        if isinstance(value, str):
            if value not in field.values:
                raise ValueError(
                    f"attribute {name!r}: unknown value {value!r}; valid values: {', '.join(field.values)}"
                )
            return value
        is_index = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        if is_index and 0 <= int(value) < len(field.values):
            return field.values[int(value)]
        raise ValueError(
            f"attribute {name!r}: invalid value {value!r}; valid values: {', '.join(field.values)}"
        )
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"attribute {name!r} must be a number in {list(field.range)}, got {value!r}"
        ) from None
    lo, hi = field.range
    if not lo <= x <= hi:  # also rejects NaN
        raise ValueError(f"attribute {name!r} must be in [{lo}, {hi}], got {value!r}")
    return x


def sample_attributes(seed: int, **fixed: Any) -> dict[str, Any]:
    """A full attribute dict drawn from ``seed``; keyword arguments fix chosen attributes.

    Every attribute is always drawn (in schema order) before ``fixed`` is applied, so fixing
    one attribute leaves all the others as they were for that seed.

    Raises:
        ValueError: an unknown attribute name or an invalid value (the message lists the
            valid ones), or a negative seed.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    checked = {name: _check_value(name, value) for name, value in fixed.items()}
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    u = rng.random(len(_CDFS))
    attrs: dict[str, Any] = {
        name: values[min(int(np.searchsorted(cdf, x, side="right")), len(values) - 1)]
        for (name, values, cdf), x in zip(_CDFS, u)
    }
    attrs.update(random_expression(rng))
    attrs.update(checked)
    return attrs


def _resolve(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a render dict; missing expression controls default to neutral."""
    if not isinstance(attrs, Mapping):
        raise TypeError(f"attrs must be a dict of attributes, got {type(attrs).__name__}")
    missing = [n for n in IDENTITY_ATTRIBUTES if n not in attrs]
    if missing:
        raise ValueError(
            f"attrs is missing {', '.join(missing)}; build a full dict with sample_attributes(seed, **fixed)"
        )
    out = dict(NEUTRAL_EXPRESSION)
    for name, value in attrs.items():
        out[name] = _check_value(name, value)
    return out


# --------------------------------------------------------------------------- colour helpers
def _mix(a: Sequence[float], b: Sequence[float], t: float) -> Color:
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


# Anime shading goes towards a cool purple rather than black.
_SHADE = (44, 30, 72)
_WHITE = (255, 255, 255)


def _rgba(c: Color) -> tuple[int, int, int, int]:
    return (c[0], c[1], c[2], 255)


class _Palette:
    """Every colour of one avatar, derived from its attributes."""

    def __init__(self, a: Mapping[str, Any]) -> None:
        hair = HAIR_COLORS[a["hair_color"]]
        self.hair = _rgba(hair)
        self.hair_shadow = _rgba(_mix(hair, _SHADE, 0.28))
        self.hair_deep = _rgba(_mix(hair, _SHADE, 0.45))
        self.hair_line = _rgba(_mix(hair, _SHADE, 0.62))
        # Dark hair needs a stronger, bluish highlight to read as shiny.
        light_target = (200, 210, 255) if sum(hair) < 250 else _WHITE
        self.hair_light = _rgba(_mix(hair, light_target, 0.42 if sum(hair) < 250 else 0.5))
        skin = SKIN_TONES[a["skin_tone"]]
        self.skin = _rgba(skin)
        self.skin_shadow = _rgba(_mix(skin, (200, 90, 110), 0.16))
        self.skin_line = _rgba(_mix(skin, (120, 40, 50), 0.45))
        self.blush = _rgba(_mix(skin, (255, 96, 128), 0.28))
        self.blush_strong = _rgba(_mix(skin, (255, 80, 118), 0.48))
        self.ear_inner = _rgba(_mix(skin, (200, 90, 110), 0.25))
        eye = EYE_COLORS[a["eye_color"]]
        self.iris = _rgba(eye)
        self.iris_dark = _rgba(_mix(eye, (20, 10, 30), 0.55))
        self.iris_light = _rgba(_mix(eye, _WHITE, 0.45))
        self.pupil = _rgba(_mix(eye, (16, 8, 24), 0.8))
        self.eye_white = (252, 252, 255, 255)
        self.eye_shadow = (214, 214, 236, 255)
        self.lash = _rgba(_mix((40, 26, 36), hair, 0.18))
        self.brow = _rgba(_mix(hair, (40, 26, 36), 0.55))
        self.mouth = (150, 40, 58, 255)
        self.mouth_in = (122, 30, 48, 255)
        self.tongue = (238, 120, 132, 255)
        self.mouth_line = _rgba(_mix((120, 40, 50), skin, 0.25))
        outfit = OUTFIT_COLORS[a["outfit_color"]]
        self.outfit = _rgba(outfit)
        self.outfit_shadow = _rgba(_mix(outfit, _SHADE, 0.22))
        self.outfit_line = _rgba(_mix(outfit, _SHADE, 0.5))
        self.outfit_trim = (250, 250, 252, 255) if sum(outfit) < 480 else (52, 62, 110, 255)
        self.shirt = (250, 250, 252, 255) if sum(outfit) < 700 else (214, 220, 236, 255)
        # The outfit's accent, unless it would vanish against the hair (ribbons, ties).
        accent = next(
            c
            for c in (ACCENT_COLORS[a["outfit_color"]], (224, 60, 80), (110, 170, 240))
            if sum((x - y) ** 2 for x, y in zip(c, hair)) >= 110**2
        )
        self.accent = _rgba(accent)
        self.accent_dark = _rgba(_mix(accent, _SHADE, 0.35))
        self.frame = (64, 56, 72, 255)


# --------------------------------------------------------------------------- geometry helpers
_T_CACHE: dict[int, np.ndarray] = {}


def _t(n: int) -> np.ndarray:
    t = _T_CACHE.get(n)
    if t is None:
        t = _T_CACHE[n] = np.linspace(0.0, 1.0, n)[:, None]
    return t


def _bez(p0: Sequence[float], p1: Sequence[float], p2: Sequence[float], n: int = 10) -> np.ndarray:
    """Quadratic Bézier curve, ``n`` points including both ends."""
    t = _t(n)
    u = 1.0 - t
    return u * u * np.asarray(p0) + 2.0 * u * t * np.asarray(p1) + t * t * np.asarray(p2)


def _bez3(
    p0: Sequence[float], p1: Sequence[float], p2: Sequence[float], p3: Sequence[float], n: int = 12
) -> np.ndarray:
    """Cubic Bézier curve, ``n`` points including both ends."""
    t = _t(n)
    u = 1.0 - t
    return (
        u**3 * np.asarray(p0)
        + 3.0 * u * u * t * np.asarray(p1)
        + 3.0 * u * t * t * np.asarray(p2)
        + t**3 * np.asarray(p3)
    )


def _ellipse(
    cx: float, cy: float, rx: float, ry: float, n: int = 28, a0: float = 0.0, a1: float | None = None
) -> np.ndarray:
    """Points on an ellipse (full when ``a1`` is None, else the arc from a0 to a1)."""
    cs = _unit_arc(n, a0, a1)
    return cs * (rx, ry) + (cx, cy)


@functools.lru_cache(maxsize=512)
def _unit_arc(n: int, a0: float, a1: float | None) -> np.ndarray:
    """(cos, sin) of ``n`` angles; cached because the same arcs are drawn for every avatar."""
    if a1 is None:
        ang = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    else:
        ang = np.linspace(a0, a1, n)
    out = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    out.flags.writeable = False
    return out


def _stroke(pts: np.ndarray, widths: np.ndarray | float) -> np.ndarray:
    """The outline polygon of a variable-width line along ``pts``."""
    d = np.empty_like(pts)
    d[1:-1] = pts[2:] - pts[:-2]
    d[0] = pts[1] - pts[0]
    d[-1] = pts[-1] - pts[-2]
    norm = np.hypot(d[:, 0], d[:, 1])
    norm[norm == 0] = 1.0
    nrm = np.stack([-d[:, 1] / norm, d[:, 0] / norm], axis=1)
    w = np.asarray(widths, dtype=np.float64).reshape(-1, 1) * 0.5
    return np.concatenate([pts + nrm * w, (pts - nrm * w)[::-1]])


@functools.lru_cache(maxsize=512)
def _taper(n: int, w0: float, w_mid: float, w1: float) -> np.ndarray:
    """Widths rising from ``w0`` to ``w_mid`` and falling to ``w1`` along a stroke."""
    t = np.linspace(0.0, 1.0, n)
    out = np.where(t < 0.5, w0 + (w_mid - w0) * np.sin(t * math.pi), w1 + (w_mid - w1) * np.sin(t * math.pi))
    out.flags.writeable = False
    return out


def _offset(pts: np.ndarray, dx: float, dy: float) -> np.ndarray:
    return pts + np.array([dx, dy])


def _mirror(pts: np.ndarray) -> np.ndarray:
    out = pts.copy()
    out[:, 0] = 1.0 - out[:, 0]
    return out


# --------------------------------------------------------------------------- canvas
class _Canvas:
    """A supersampled RGBA picture plus (optionally) a part-id map drawn with the same shapes."""

    def __init__(self, size: int, ss: int, yaw: float, tilt: float, parts: bool) -> None:
        self.size = size
        self.ss = ss
        self.S = size * ss
        # Every shape is opaque, so each supersampled pixel is (0, 0, 0, 0) or has alpha
        # 255: the picture is already premultiplied. Drawing in "RGBa" lets the box filter
        # run without Pillow's premultiply pass; only the small result is converted.
        self.img = Image.new("RGBa", (self.S, self.S), (0, 0, 0, 0))
        self.draw = ImageDraw.Draw(self.img)
        self.lab = Image.new("L", (self.S, self.S), 0) if parts else None
        self.ldraw = ImageDraw.Draw(self.lab) if self.lab is not None else None
        self.shift = yaw * _YAW_SHIFT * self.S
        # Head parts: rotate about the neck pivot, then scale to pixels, as one affine map
        # p @ A + b (plus a per-depth horizontal shift for the turn).
        ang = tilt * _TILT_RAD
        c, s = math.cos(ang), math.sin(ang)
        rot_t = np.array([[c, s], [-s, c]])  # transpose of the rotation matrix
        pivot = np.array(_PIVOT)
        self.head_a = rot_t * self.S
        self.head_b = (pivot - pivot @ rot_t) * self.S
        # Line widths below one supersampled pixel vanish; this keeps thin lines visible.
        self.min_w = 1.0 / self.S

    def xf(self, pts: np.ndarray, depth: float, head: bool = True) -> np.ndarray:
        """Unit coordinates -> canvas pixels, with the head pose applied to head parts."""
        if not head:
            return np.asarray(pts, dtype=np.float64) * self.S
        return np.asarray(pts, dtype=np.float64) @ self.head_a + (
            self.head_b[0] + self.shift * depth,
            self.head_b[1],
        )

    def w(self, width: float) -> float:
        return max(width, self.min_w)

    def poly(self, pts: np.ndarray, color: tuple, part: str, depth: float = 0.0, head: bool = True) -> None:
        xy = self.xf(pts, depth, head).ravel().tolist()
        self.draw.polygon(xy, fill=color)
        if self.ldraw is not None:
            self.ldraw.polygon(xy, fill=_P[part])

    def outline(
        self,
        pts: np.ndarray,
        color: tuple,
        part: str,
        width: float,
        depth: float = 0.0,
        head: bool = True,
    ) -> None:
        """A closed line of constant width along a polygon (line art, glasses rims).

        Drawn into the part map as well: half the line lies outside the polygon, and
        those pixels must not count as background (alpha > 0 there).
        """
        xy = self.xf(pts, depth, head)
        xy = np.concatenate([xy, xy[:1]]).ravel().tolist()
        px = max(1, round(width * self.S))
        self.draw.line(xy, fill=color, width=px, joint="curve")
        if self.ldraw is not None:
            self.ldraw.line(xy, fill=_P[part], width=px, joint="curve")

    def line(
        self,
        pts: np.ndarray,
        widths: np.ndarray | float,
        color: tuple,
        part: str,
        depth: float = 0.0,
        head: bool = True,
    ) -> None:
        w = np.maximum(np.asarray(widths, dtype=np.float64), self.min_w)
        self.poly(_stroke(np.asarray(pts, dtype=np.float64), w), color, part, depth, head)

    def clipped(self, clip: np.ndarray, items: list[tuple], depth: float, head: bool = True) -> None:
        """Draw ``items`` (pts, color, part) only inside the polygon ``clip``."""
        c = self.xf(clip, depth, head)
        x0 = max(0, math.floor(c[:, 0].min()) - 1)
        y0 = max(0, math.floor(c[:, 1].min()) - 1)
        x1 = min(self.S, math.ceil(c[:, 0].max()) + 2)
        y1 = min(self.S, math.ceil(c[:, 1].max()) + 2)
        if x1 <= x0 or y1 <= y0:
            return
        off = np.array([x0, y0], dtype=np.float64)
        mask = Image.new("L", (x1 - x0, y1 - y0), 0)
        ImageDraw.Draw(mask).polygon((c - off).ravel().tolist(), fill=255)
        box = (x0, y0, x1, y1)
        patch = self.img.crop(box)
        pd = ImageDraw.Draw(patch)
        lpatch = self.lab.crop(box) if self.lab is not None else None
        lpd = ImageDraw.Draw(lpatch) if lpatch is not None else None
        for pts, color, part in items:
            xy = (self.xf(pts, depth, head) - off).ravel().tolist()
            pd.polygon(xy, fill=color)
            if lpd is not None:
                lpd.polygon(xy, fill=_P[part])
        self.img.paste(patch, (x0, y0), mask)
        if self.lab is not None and lpatch is not None:
            self.lab.paste(lpatch, (x0, y0), mask)

    def finish(self) -> np.ndarray:
        """Box-filter down to the output size: (size, size, 4) uint8, straight alpha."""
        small = self.img.resize((self.size, self.size), Image.Resampling.BOX) if self.ss > 1 else self.img
        out = np.asarray(small.convert("RGBA"), dtype=np.uint8).copy()
        out[out[..., 3] == 0, :3] = 0
        return out

    def part_masks(self) -> dict[str, np.ndarray]:
        """Boolean (size, size) mask per part; the masks partition the image.

        ``background`` is exactly the fully transparent pixels (alpha 0); every other pixel
        goes to the part covering most of it (ties to the earlier name in PART_NAMES).
        """
        assert self.lab is not None
        lab = np.asarray(self.lab).reshape(self.size, self.ss, self.size, self.ss)
        counts = np.stack([(lab == i).sum(axis=(1, 3), dtype=np.int32) for i in range(len(PART_NAMES))])
        winner = counts[1:].argmax(axis=0) + 1
        winner[counts[0] == self.ss * self.ss] = 0
        return {name: winner == i for i, name in enumerate(PART_NAMES)}


# --------------------------------------------------------------------------- body parts
_FACE_CY = 0.45
_FACE_RX = 0.205


def _face_outline() -> np.ndarray:
    top = _ellipse(0.5, _FACE_CY, _FACE_RX, 0.27, n=20, a0=math.pi, a1=2.0 * math.pi)
    jaw = _bez3((0.5 + _FACE_RX, _FACE_CY), (0.71, 0.59), (0.60, 0.665), (0.5, 0.678), n=14)
    return np.concatenate([top, jaw[1:], _mirror(jaw[::-1])[1:-1]])


_FACE = _face_outline()
# The jaw line (for line art and the shadow it casts on the neck).
_JAW = _FACE[20:]


def _draw_body(cv: _Canvas, a: Mapping[str, Any], pal: _Palette) -> None:
    """Neck, chest skin and the outfit (not affected by head pose)."""
    style = a["outfit_style"]
    if style == "hoodie":
        # The lowered hood: a thick collar behind the neck.
        hood = np.concatenate(
            [
                _bez((0.33, 0.84), (0.36, 0.70), (0.5, 0.70), 8),
                _bez((0.5, 0.70), (0.64, 0.70), (0.67, 0.84), 8),
            ]
        )
        cv.poly(hood, pal.outfit_shadow, "outfit", head=False)
    neck = np.array([[0.452, 0.60], [0.548, 0.60], [0.556, 0.80], [0.444, 0.80]])
    cv.poly(neck, pal.skin, "skin", head=False)
    # Shoulders: a smooth trapezoid from the neck base out past the image edges.
    right = np.concatenate(
        [
            _bez((0.5, 0.765), (0.56, 0.765), (0.64, 0.80), 6),
            _bez3((0.64, 0.80), (0.80, 0.83), (0.90, 0.86), (0.94, 0.98), 10)[1:],
            np.array([[0.96, 1.02]]),
        ]
    )
    body = np.concatenate([right, _mirror(right[::-1])])
    cv.poly(body, pal.outfit, "outfit", head=False)
    # Neckline: skin visible below the neck, shape depends on the outfit.
    if style == "sailor":
        v = np.array([[0.445, 0.77], [0.555, 0.77], [0.5, 0.875]])
        cv.poly(v, pal.skin, "skin", head=False)
        collar_r = np.concatenate(
            [np.array([[0.5, 0.885], [0.555, 0.772]]), _bez((0.60, 0.775), (0.70, 0.83), (0.76, 0.86), 6)]
        )
        collar_r = np.concatenate([collar_r, np.array([[0.64, 0.92]])])
        trim = pal.outfit_trim
        cv.poly(collar_r, trim, "outfit", head=False)
        cv.poly(_mirror(collar_r), trim, "outfit", head=False)
        stripe = pal.outfit if trim[0] < 128 else pal.outfit_line
        cv.line(_bez((0.56, 0.80), (0.66, 0.86), (0.70, 0.875), 6), 0.006, stripe, "outfit", head=False)
        cv.line(
            _mirror(_bez((0.56, 0.80), (0.66, 0.86), (0.70, 0.875), 6)), 0.006, stripe, "outfit", head=False
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
        cv.poly(_ellipse(0.5, 0.875, 0.022, 0.017, 12), pal.accent, "outfit", head=False)
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
        cv.poly(_mirror(lapel), pal.outfit_shadow, "outfit", head=False)
    elif style == "hoodie":
        neck_hole = _ellipse(0.5, 0.77, 0.07, 0.035, 16, 0.0, math.pi)
        cv.poly(
            np.concatenate([[[0.43, 0.765]], neck_hole[::-1], [[0.57, 0.765]]]), pal.skin, "skin", head=False
        )
        cv.line(
            _ellipse(0.5, 0.77, 0.072, 0.037, 16, 0.0, math.pi),
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
                _ellipse(x + (x - 0.5) * 0.2, 0.905, 0.007, 0.011, 8), pal.outfit_line, "outfit", head=False
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


def _draw_neck_shadow(cv: _Canvas, pal: _Palette) -> None:
    neck = np.array([[0.455, 0.58], [0.545, 0.58], [0.552, 0.80], [0.448, 0.80]])
    shadow = np.concatenate([[[0.43, 0.60], [0.57, 0.60]], _offset(_JAW, 0.0, 0.04)])
    cv.clipped(neck, [(shadow, pal.skin_shadow, "skin")], depth=0.0)


def _draw_head(cv: _Canvas, pal: _Palette) -> None:
    for side in (-1.0, 1.0):
        ear = _ellipse(0.5 + side * 0.198, 0.50, 0.03, 0.05, 14)
        cv.poly(ear, pal.skin, "skin", depth=-0.3)
        cv.poly(_ellipse(0.5 + side * 0.2, 0.505, 0.014, 0.03, 10), pal.ear_inner, "skin", depth=-0.3)
    cv.poly(_FACE, pal.skin, "skin", depth=0.25)
    cv.line(_JAW, _taper(len(_JAW), 0.002, 0.005, 0.002), pal.skin_line, "skin", depth=0.25)


# ---- eyes
# eye_shape -> (half width, half height, inner corner dy, outer corner dy, upper-lid exponent,
#               lower-lid depth, lid droop for "sleepy")
_EYE_SHAPES: dict[str, tuple[float, float, float, float, float, float, float]] = {
    "round": (0.058, 0.072, 0.010, -0.004, 0.45, 0.95, 1.0),
    "almond": (0.061, 0.062, 0.012, -0.012, 0.42, 0.82, 1.0),
    "upturned": (0.061, 0.062, 0.018, -0.024, 0.45, 0.75, 1.0),
    "droopy": (0.060, 0.066, -0.006, 0.020, 0.45, 0.88, 1.0),
    "sleepy": (0.060, 0.068, 0.010, 0.0, 0.42, 0.90, 0.6),
}
_EYE_Y = 0.51
_EYE_DX = 0.098


def _eye_curves(
    shape: str, side: float, eye_open: float, smile: float, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float, float]]:
    """Upper lid, lower lid and closed-lid curves (x, y) from inner to outer corner."""
    w, h, ic, oc, k_up, k_lo, droop = _EYE_SHAPES[shape]
    cx = 0.5 + side * _EYE_DX
    cy = _EYE_Y
    u = np.linspace(-1.0, 1.0, n)
    corner = ic + (oc - ic) * (u + 1.0) * 0.5
    base = np.clip(1.0 - u * u, 0.0, 1.0)
    x = cx + side * u * w
    up = cy - h * base**k_up + corner
    lo = cy + h * k_lo * base**0.9 + corner
    closed = cy + h * 0.45 * base**0.8 + corner
    # Half-lidded shapes and smiling (cheeks push the lower lid up) narrow the eye.
    opening = eye_open * droop
    up = closed + (up - closed) * opening
    lo = lo + (closed - lo) * (0.3 * max(smile, 0.0))
    lo = np.maximum(lo, up)
    return (
        np.stack([x, up], 1),
        np.stack([x, lo], 1),
        np.stack([x, closed], 1),
        (cx, cy, w, h),
    )


def _draw_eyes(cv: _Canvas, a: Mapping[str, Any], pal: _Palette) -> None:
    shape = a["eye_shape"]
    eye_open = float(a["eye_open"])
    smile = float(a["smile"])
    yaw = float(a["head_yaw"])
    for side in (-1.0, 1.0):
        # The eye on the side the head turns towards comes closer and looks a bit bigger.
        scale = 1.0 + 0.1 * yaw * side
        up, lo, closed, (cx, cy, w, h) = _eye_curves(shape, side, eye_open, smile, 17)
        if scale != 1.0:
            for arr in (up, lo, closed):
                arr[:, 0] = cx + (arr[:, 0] - cx) * scale
        if eye_open > 0.06:
            outline = np.concatenate([up, lo[::-1][1:-1]])
            ix = cx + side * 0.04 * w
            iy = cy + 0.12 * h
            rx, ry = 0.74 * w * scale, 1.0 * h
            iris = _ellipse(ix, iy, rx, ry, 28)
            top = iris.copy()
            top[:, 1] = np.minimum(top[:, 1], iy - 0.25 * ry)
            light = _ellipse(ix, iy + 0.42 * ry, 0.72 * rx, 0.5 * ry, 20)
            lid_shadow = np.concatenate([up, _offset(up, 0.0, 0.3 * h)[::-1]])
            hx = ix - 0.38 * rx
            items = [
                (_ellipse(cx, cy, w * 2.0, h * 2.0, 8), pal.eye_white, "eye_white"),
                (lid_shadow, pal.eye_shadow, "eye_white"),
                (iris, pal.iris_dark, "iris"),
                (_ellipse(ix, iy + 0.04 * ry, 0.86 * rx, 0.9 * ry, 24), pal.iris, "iris"),
                (light, pal.iris_light, "iris"),
                (top, pal.iris_dark, "iris"),
                (_ellipse(ix, iy - 0.06 * ry, 0.36 * rx, 0.46 * ry, 16), pal.pupil, "iris"),
                (_ellipse(hx, iy - 0.42 * ry, 0.3 * rx, 0.26 * ry, 14), pal.eye_white, "iris"),
                (_ellipse(ix + 0.4 * rx, iy + 0.42 * ry, 0.13 * rx, 0.11 * ry, 10), pal.eye_white, "iris"),
            ]
            cv.clipped(outline, items, depth=1.0)
            # Upper lash line: thick at the outer corner, with a flick past it.
            n = len(up)
            wts = np.linspace(0.006, 0.015, n) * (0.6 + 0.4 * eye_open)
            cv.line(up, wts, pal.lash, "eye_line", depth=1.0)
            flick = np.array([up[-1] + (0.0, 0.003), up[-1] + (side * 0.018, -0.006), up[-3] + (0.0, -0.004)])
            cv.poly(flick, pal.lash, "eye_line", depth=1.0)
            # Lower lash: a short thin line near the outer corner.
            k = n // 2 + 2
            cv.line(lo[k:], _taper(n - k, 0.001, 0.004, 0.002), pal.lash, "eye_line", depth=1.0)
        else:
            # Closed: a relaxed arc, or a happy "^" arc when smiling.
            pts = closed.copy()
            if smile > 0.4:
                pts[:, 1] = 2.0 * (cy + 0.2 * h) - pts[:, 1] - 0.6 * h
            cv.line(pts, _taper(len(pts), 0.003, 0.009, 0.004), pal.lash, "eye_line", depth=1.0)
            cv.line(
                np.array([pts[-2], pts[-1] + (side * 0.012, 0.006)]), 0.004, pal.lash, "eye_line", depth=1.0
            )


# eyebrow style -> (width, inner dy, outer dy, arch)
_BROWS: dict[str, tuple[float, float, float, float]] = {
    "normal": (0.0055, 0.004, 0.006, 0.010),
    "thick": (0.010, 0.004, 0.006, 0.008),
    "thin": (0.0032, 0.002, 0.008, 0.012),
    "angry": (0.0065, 0.018, -0.006, 0.002),
    "worried": (0.0055, -0.014, 0.012, 0.006),
}


def _draw_brows(cv: _Canvas, a: Mapping[str, Any], pal: _Palette) -> None:
    width, din, dout, arch = _BROWS[a["eyebrows"]]
    lift = -0.006 * max(float(a["smile"]), 0.0)
    for side in (-1.0, 1.0):
        w = _EYE_SHAPES[a["eye_shape"]][0]
        cx = 0.5 + side * (_EYE_DX + 0.006)
        y = _EYE_Y - 0.098 + lift
        p0 = (cx - side * w * 0.85, y + din)
        p2 = (cx + side * w * 0.95, y + dout)
        p1 = (cx, y - arch)
        pts = _bez(p0, p1, p2, 10)
        cv.line(pts, _taper(10, width * 0.8, width, width * 0.35), pal.brow, "eyebrow", depth=0.9)


def _draw_nose(cv: _Canvas, pal: _Palette) -> None:
    cv.line(np.array([[0.505, 0.57], [0.501, 0.58]]), 0.004, pal.skin_line, "skin", depth=1.3)


def _draw_blush(cv: _Canvas, a: Mapping[str, Any], pal: _Palette) -> None:
    style = a["blush"]
    if style == "none":
        return
    for side in (-1.0, 1.0):
        cx, cy = 0.5 + side * 0.118, 0.585
        cv.poly(_ellipse(cx, cy, 0.042, 0.017, 18), pal.blush, "skin", depth=0.8)
        if style == "strong":
            cv.poly(_ellipse(cx, cy, 0.028, 0.011, 14), pal.blush_strong, "skin", depth=0.8)
        elif style == "lines":
            for k in (-1, 0, 1):
                x = cx + k * 0.016
                cv.line(
                    np.array([[x + 0.006, cy - 0.009], [x - 0.006, cy + 0.009]]),
                    0.003,
                    pal.blush_strong,
                    "skin",
                    depth=0.8,
                )


# mouth style -> (half width, cat-shape flag)
_MOUTHS: dict[str, tuple[float, bool]] = {
    "normal": (0.026, False),
    "cat": (0.026, True),
    "small": (0.016, False),
    "wide": (0.038, False),
    "fang": (0.026, False),
}
_MOUTH_Y = 0.622


def _draw_mouth(cv: _Canvas, a: Mapping[str, Any], pal: _Palette) -> None:
    style = a["mouth"]
    mw, cat = _MOUTHS[style]
    m = float(a["mouth_open"])
    s = float(a["smile"])
    n = 15
    u = np.linspace(-1.0, 1.0, n)
    x = 0.5 + u * mw
    # Smile raises the corners relative to the middle; a frown lowers them.
    bend = 0.011 * s * (mw / 0.026) ** 0.5
    top = _MOUTH_Y - bend * (u * u - 0.35)
    if cat and m < 0.08:
        top = top + 0.006 * (1.0 - np.abs(np.abs(u) * 2.0 - 1.0) ** 2) - 0.004
    if m >= 0.08:
        depth_ = (0.012 + 0.05 * m) * (1.0 - u * u) ** 0.65
        flat_top = top - 0.003 * (1.0 - u * u) * (1.0 if not cat else -1.0)
        bottom = flat_top + depth_ + max(s, 0.0) * 0.008 * (1.0 - u * u)
        upper = np.stack([x, flat_top], 1)
        lower = np.stack([x, bottom], 1)
        shape = np.concatenate([upper, lower[::-1][1:-1]])
        tongue = np.concatenate([upper, lower[::-1][1:-1]])
        tongue[:, 1] = np.maximum(tongue[:, 1], (flat_top.mean() + bottom.max()) * 0.5 + 0.003)
        items = [(shape, pal.mouth_in, "mouth"), (tongue, pal.tongue, "mouth")]
        if style == "fang":
            fx = 0.5 + 0.45 * mw
            fy = float(np.interp(fx, x, flat_top))
            items.append(
                (
                    np.array([[fx - 0.007, fy - 0.002], [fx + 0.007, fy - 0.002], [fx + 0.001, fy + 0.011]]),
                    pal.eye_white,
                    "mouth",
                )
            )
        cv.clipped(shape, items, depth=1.0)
        cv.outline(shape, pal.mouth_line, "mouth", 0.003, depth=1.0)
    else:
        pts = np.stack([x, top], 1)
        cv.line(pts, _taper(n, 0.002, 0.0045, 0.002), pal.mouth_line, "mouth", depth=1.0)
        if style == "fang":
            fx = 0.5 + 0.45 * mw
            fy = float(np.interp(fx, x, top))
            cv.poly(
                np.array([[fx - 0.006, fy], [fx + 0.006, fy], [fx + 0.001, fy + 0.010]]),
                pal.eye_white,
                "mouth",
                depth=1.0,
            )
            cv.outline(
                np.array([[fx - 0.006, fy], [fx + 0.006, fy], [fx + 0.001, fy + 0.010]]),
                pal.mouth_line,
                "mouth",
                0.002,
                depth=1.0,
            )


# ---- hair
_HAIR_CY = 0.40
_HAIR_RX = 0.262
_HAIR_RY = 0.275

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
        pts.append(_bez(v0, c0, tip, 6)[:-1])
        pts.append(_bez(tip, c1, v1, 6)[:-1])
        valleys.append(v0)
    pts.append(np.array([[val_x[-1], val_y[-1]]]))
    return np.concatenate(pts), valleys


@functools.lru_cache(maxsize=64)
def _front_hair(style: str, bangs: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """The front hair mass: crown, sidelocks and fringe, as one polygon (cached: it only
    depends on the two styles)."""
    tip_y, flare = _SIDELOCKS[style]
    cap = _ellipse(0.5, _HAIR_CY, _HAIR_RX, _HAIR_RY, 26, math.pi, 2.0 * math.pi)  # left -> top -> right
    ox = 0.5 + _HAIR_RX
    # Right sidelock: outer edge down to the tip, inner edge back up next to the cheek.
    if style == "long":
        outer = _bez3((ox, _HAIR_CY), (ox + 0.012, 0.58), (0.775, 0.76), (0.745, tip_y), 12)
        inner = _bez3((0.745, tip_y), (0.70, 0.82), (0.675, 0.62), (0.685, 0.44), 12)
    elif style == "bob":
        outer = _bez3((ox, _HAIR_CY), (ox + 0.02, 0.55), (ox + flare, 0.66), (0.705, tip_y), 10)
        inner = _bez3((0.705, tip_y), (0.69, 0.64), (0.69, 0.52), (0.685, 0.44), 10)
    else:
        outer = _bez3((ox, _HAIR_CY), (ox, 0.50), (0.73, 0.56), (0.695, tip_y), 10)
        inner = _bez3((0.695, tip_y), (0.672, tip_y - 0.06), (0.675, 0.50), (0.685, 0.44), 10)
    edge, valleys = _bangs_edge(bangs)
    right = np.concatenate([outer[1:], inner[1:]])
    left = _mirror(right[::-1])
    poly = np.concatenate([cap, right, edge[1:-1], left[:-1]])
    poly.flags.writeable = False
    return poly, valleys


def _back_hair(cv: _Canvas, a: Mapping[str, Any], pal: _Palette) -> None:
    """Hair behind the head and shoulders (drawn first)."""
    style = a["hair_style"]
    d = -0.4
    cap = _ellipse(0.5, _HAIR_CY, _HAIR_RX + 0.004, _HAIR_RY + 0.004, 26, math.pi, 2.0 * math.pi)
    ox = 0.5 + _HAIR_RX + 0.004
    if style == "long":
        side = _bez3((ox, _HAIR_CY), (ox + 0.05, 0.62), (0.84, 0.80), (0.85, 1.02), 12)
        bottom = np.array([[0.85, 1.04], [0.15, 1.04]])
        right = np.concatenate([side, bottom[:1]])
        poly = np.concatenate([cap, right, _mirror(right[::-1])])
        cv.poly(poly, pal.hair, "hair", depth=d)
        cv.poly(
            np.array([[0.40, 0.60], [0.60, 0.60], [0.68, 1.02], [0.32, 1.02]]), pal.hair_deep, "hair", depth=d
        )
    elif style == "bob":
        side = _bez3((ox, _HAIR_CY), (ox + 0.025, 0.56), (0.79, 0.68), (0.72, 0.725), 10)
        bottom = _bez((0.72, 0.725), (0.5, 0.70), (0.28, 0.725), 9)
        poly = np.concatenate([cap, side[1:], bottom[1:-1], _mirror(side[::-1])[:-1]])
        cv.poly(poly, pal.hair, "hair", depth=d)
        cv.poly(
            np.array([[0.40, 0.58], [0.60, 0.58], [0.64, 0.715], [0.36, 0.715]]),
            pal.hair_deep,
            "hair",
            depth=d,
        )
    else:
        side = _bez3((ox, _HAIR_CY), (ox + 0.005, 0.52), (0.70, 0.62), (0.60, 0.64), 10)
        poly = np.concatenate([cap, side[1:], _mirror(side[::-1])[:-1]])
        cv.poly(poly, pal.hair, "hair", depth=d)
    cv.outline(poly, pal.hair_line, "hair", 0.004, depth=d)


def _tails(cv: _Canvas, a: Mapping[str, Any], pal: _Palette) -> None:
    """Twin tails / ponytail / buns: extra hair attached to the back of the head."""
    style = a["hair_style"]
    d = -0.3
    if style == "twin_tails":
        for side in (-1.0, 1.0):
            outer = _bez3((0.74, 0.25), (0.90, 0.32), (0.92, 0.62), (0.86, 0.94), 14)
            inner = _bez3((0.86, 0.94), (0.86, 0.70), (0.78, 0.50), (0.72, 0.36), 12)
            tail = np.concatenate([outer, inner[1:]])
            if side < 0:
                tail = _mirror(tail)
            cv.poly(tail, pal.hair, "hair", depth=d)
            streak = _bez3((0.79, 0.33), (0.86, 0.45), (0.87, 0.65), (0.855, 0.86), 10)
            if side < 0:
                streak = _mirror(streak)
            cv.line(streak, _taper(10, 0.002, 0.006, 0.001), pal.hair_shadow, "hair", depth=d)
            cv.outline(tail, pal.hair_line, "hair", 0.004, depth=d)
    elif style == "ponytail":
        outer = _bez3((0.60, 0.14), (0.86, 0.12), (0.90, 0.45), (0.84, 0.86), 16)
        inner = _bez3((0.84, 0.86), (0.79, 0.62), (0.75, 0.42), (0.66, 0.30), 12)
        tail = np.concatenate([outer, inner[1:]])
        cv.poly(tail, pal.hair, "hair", depth=d)
        cv.line(
            _bez3((0.72, 0.2), (0.84, 0.28), (0.86, 0.5), (0.835, 0.76), 10),
            _taper(10, 0.002, 0.006, 0.001),
            pal.hair_shadow,
            "hair",
            depth=d,
        )
        cv.outline(tail, pal.hair_line, "hair", 0.004, depth=d)
    elif style == "buns":
        for side in (-1.0, 1.0):
            bun = _ellipse(0.5 + side * 0.19, 0.155, 0.078, 0.074, 22)
            cv.poly(bun, pal.hair, "hair", depth=d)
            cv.outline(bun, pal.hair_line, "hair", 0.004, depth=d)
            cv.line(
                _ellipse(0.5 + side * 0.19, 0.16, 0.045, 0.042, 9, math.pi * 1.1, math.pi * 1.6),
                0.005,
                pal.hair_light,
                "hair",
                depth=d,
            )


def _hair_ties(cv: _Canvas, a: Mapping[str, Any], pal: _Palette) -> None:
    style = a["hair_style"]
    if style == "twin_tails":
        for side in (-1.0, 1.0):
            cv.poly(_ellipse(0.5 + side * 0.245, 0.285, 0.022, 0.03, 12), pal.accent, "hair_tie", depth=0.3)
    elif style == "ponytail":
        cv.poly(_ellipse(0.70, 0.18, 0.02, 0.028, 12), pal.accent, "hair_tie", depth=-0.3)


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
        pts = _bez(top, mid, (v[0], v[1] - 0.002), 8)
        strands.append(_stroke(pts, np.maximum(_taper(8, 0.0005, 0.0045, 0.0015), min_w)))
    # A strand line down each sidelock.
    tip_y = _SIDELOCKS[style][0]
    if style == "long":
        lock = _bez((0.728, 0.46), (0.735, 0.70), (0.742, tip_y - 0.06), 10)
    else:
        lock = _bez((0.722, 0.46), (0.722, tip_y - 0.06), (0.706, tip_y - 0.025), 10)
    for pts in (lock, _mirror(lock)):
        strands.append(_stroke(pts, np.maximum(_taper(10, 0.001, 0.0045, 0.0005), min_w)))
    # The shiny "angel ring" across the crown, with a jagged lower edge.
    upper = _ellipse(0.5, _HAIR_CY - 0.01, 0.20, 0.165, 14, math.pi * 1.18, math.pi * 1.82)
    lower = _ellipse(0.5, _HAIR_CY - 0.01, 0.205, 0.128, 14, math.pi * 1.82, math.pi * 1.18)
    lower[1:-1:2, 1] += 0.016
    shine = np.concatenate([upper, lower])
    for arr in (*strands, shine):
        arr.flags.writeable = False
    return poly, strands, shine


def _draw_front_hair(cv: _Canvas, a: Mapping[str, Any], pal: _Palette) -> None:
    d = 0.6
    poly, strands, shine = _front_hair_art(a["hair_style"], a["bangs"], cv.min_w)
    # Shadow the fringe casts on the forehead and cheeks, clipped to the face.
    shadow = _offset(poly, 0.0, 0.018)
    cv.clipped(_FACE, [(shadow, pal.skin_shadow, "skin")], depth=0.25)
    cv.poly(poly, pal.hair, "hair", depth=d)
    for strand in strands:
        cv.poly(strand, pal.hair_shadow, "hair", depth=d)
    cv.poly(shine, pal.hair_light, "hair", depth=d)
    cv.outline(poly, pal.hair_line, "hair", 0.004, depth=d)


# ---- accessories
def _draw_accessory_back(cv: _Canvas, a: Mapping[str, Any], pal: _Palette) -> None:
    """Accessories behind the front hair (cat ears)."""
    if a["accessory"] != "cat_ears":
        return
    for side in (-1.0, 1.0):
        ear = np.array([[0.30, 0.22], [0.285, 0.05], [0.43, 0.14]])
        inner = np.array([[0.315, 0.19], [0.30, 0.09], [0.39, 0.15]])
        if side > 0:
            ear, inner = _mirror(ear), _mirror(inner)
        cv.poly(ear, pal.hair, "accessory", depth=0.3)
        cv.outline(ear, pal.hair_line, "accessory", 0.004, depth=0.3)
        cv.poly(inner, (250, 180, 196, 255), "accessory", depth=0.3)


def _draw_accessory_front(cv: _Canvas, a: Mapping[str, Any], pal: _Palette) -> None:
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
        cv.poly(_ellipse(cx, cy, 0.022, 0.02, 12), pal.accent, "accessory", depth=d)
        cv.outline(_ellipse(cx, cy, 0.022, 0.02, 12), pal.accent_dark, "accessory", 0.003, depth=d)
    elif acc == "beret":
        d = 0.5
        body = _ellipse(0.0, 0.0, 0.26, 0.095, 28)
        ang = math.radians(-10.0)
        rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
        body = body @ rot.T + np.array([0.54, 0.168])
        col = pal.accent if a["outfit_color"] in ("white", "grey", "yellow") else pal.outfit
        dark = _rgba(_mix(col[:3], _SHADE, 0.35))
        cv.poly(body, col, "accessory", depth=d)
        cv.outline(body, dark, "accessory", 0.004, depth=d)
        band = _bez((0.305, 0.225), (0.52, 0.255), (0.775, 0.16), 10)
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
        band = _ellipse(
            0.5, _HAIR_CY + 0.02, _HAIR_RX + 0.02, _HAIR_RY + 0.035, 24, math.pi * 1.05, math.pi * 1.95
        )
        cv.line(band, 0.018, (70, 70, 84, 255), "accessory", depth=d)
        for side in (-1.0, 1.0):
            cup = _ellipse(0.5 + side * 0.262, 0.47, 0.036, 0.06, 18)
            cv.poly(cup, (70, 70, 84, 255), "accessory", depth=d)
            cv.poly(_ellipse(0.5 + side * 0.272, 0.47, 0.024, 0.044, 14), pal.accent, "accessory", depth=d)
    elif acc == "glasses":
        d = 1.0
        for side in (-1.0, 1.0):
            rim = _ellipse(0.5 + side * _EYE_DX, _EYE_Y + 0.004, 0.068, 0.058, 24)
            cv.outline(rim, pal.frame, "accessory", 0.011, depth=d)
        cv.line(
            _bez((0.5 - _EYE_DX + 0.068, 0.50), (0.5, 0.49), (0.5 + _EYE_DX - 0.068, 0.50), 6),
            0.005,
            pal.frame,
            "accessory",
            depth=d,
        )


# --------------------------------------------------------------------------- public API
def check_size(size: int) -> int:
    """Validate an image size: an integer from MIN_SIZE to MAX_SIZE, else ValueError."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"size must be an integer from {MIN_SIZE} to {MAX_SIZE}, got {size!r}")
    if not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise ValueError(f"size must be from {MIN_SIZE} to {MAX_SIZE} pixels, got {size}")
    return int(size)


def _supersample(size: int) -> int:
    """Supersampling factor: enough for smooth edges, small enough to stay fast."""
    if size <= 96:
        return 4
    if size <= 192:
        return 3
    return 2


def render_background(attrs: Mapping[str, Any], size: int) -> np.ndarray:
    """The background of an avatar: (size, size, 3) uint8 RGB, from ``background_kind`` and
    ``background_color``."""
    size = check_size(size)
    kind = _check_value("background_kind", attrs["background_kind"])
    base = np.array(
        BACKGROUND_COLORS[_check_value("background_color", attrs["background_color"])], dtype=np.float32
    )
    if kind == "solid":
        return np.broadcast_to(base.astype(np.uint8), (size, size, 3)).copy()
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    dark = base.sum() < 300
    light = base + (255.0 - base) * 0.6
    if kind == "gradient":
        t = coords[:, None, None] * np.ones((1, size, 1), np.float32)
        top = light if not dark else base * 0.6
        img = top + (base - top) * t
    elif kind == "radial":
        r = np.hypot(coords[None, :] - 0.5, coords[:, None] - 0.42)[..., None]
        t = np.clip(r / 0.7, 0.0, 1.0)
        img = light + (base - light) * t
        if dark:
            img = base * 1.35 + (base * 0.7 - base * 1.35) * t
    else:  # dots: soft-edged polka dots on a diagonal lattice
        dot = base * 0.86 if not dark else base * 1.4
        cell = 0.125
        gx = coords[None, :] / cell
        gy = coords[:, None] / cell
        odd = np.floor(gy) % 2
        fx = (gx + 0.5 * odd) % 1.0 - 0.5
        fy = gy % 1.0 - 0.5
        dist = np.hypot(fx, fy) * cell * size  # in output pixels
        cover = np.clip(0.18 * cell * size - dist + 0.5, 0.0, 1.0)[..., None]
        img = base + (dot - base) * cover
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _composite(rgba: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Straight-alpha RGBA over RGB, in integers (exact and deterministic)."""
    a = rgba[..., 3:4].astype(np.uint32)
    out = (rgba[..., :3].astype(np.uint32) * a + bg.astype(np.uint32) * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def render(
    attrs: Mapping[str, Any],
    size: int = 64,
    *,
    background: bool = False,
    return_parts: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
    """Draw one avatar.

    Args:
        attrs: an attribute dict (from :func:`sample_attributes`); the identity attributes
            are required, missing expression controls are neutral.
        size: output width = height in pixels, ``MIN_SIZE`` (32) to ``MAX_SIZE`` (512).
        background: composite onto :func:`render_background` and return RGB.
        return_parts: also return ``{part name: (size, size) bool mask}`` for every name in
            :data:`PART_NAMES` (a pixel belongs to the part covering at least half of it;
            ``"background"`` is where nothing of the character is).

    Returns:
        ``(size, size, 4)`` uint8 RGBA (straight alpha, RGB = 0 where alpha = 0), or
        ``(size, size, 3)`` RGB with ``background=True``; with ``return_parts`` a tuple
        ``(image, parts)``.

    Raises:
        ValueError: size out of range, or an invalid/missing attribute.
    """
    size = check_size(size)
    a = _resolve(attrs)
    pal = _Palette(a)
    cv = _Canvas(size, _supersample(size), float(a["head_yaw"]), float(a["head_tilt"]), return_parts)
    _back_hair(cv, a, pal)
    _tails(cv, a, pal)
    _draw_body(cv, a, pal)
    _draw_neck_shadow(cv, pal)
    _draw_head(cv, pal)
    _draw_blush(cv, a, pal)
    _draw_nose(cv, pal)
    _draw_mouth(cv, a, pal)
    _draw_eyes(cv, a, pal)
    _draw_accessory_back(cv, a, pal)
    _draw_front_hair(cv, a, pal)
    _hair_ties(cv, a, pal)
    _draw_brows(cv, a, pal)
    _draw_accessory_front(cv, a, pal)
    img = cv.finish()
    if background:
        img = _composite(img, render_background(a, size))
    if return_parts:
        return img, cv.part_masks()
    return img


def render_avatar(seed: int, size: int = 64, *, background: bool = False, **fixed: Any) -> np.ndarray:
    """``render(sample_attributes(seed, **fixed), size, background=background)``."""
    return render(sample_attributes(seed, **fixed), size, background=background)  # type: ignore[return-value]


def render_expressions(
    seed_or_attrs: int | Mapping[str, Any],
    expressions: Sequence[Mapping[str, float]],
    size: int = 64,
    *,
    background: bool = False,
) -> np.ndarray:
    """The same identity at several expressions: ``(len(expressions), size, size, 4 or 3)``.

    ``seed_or_attrs`` is a seed (identity from :func:`sample_attributes`) or an attribute
    dict. Each expression dict sets some of :data:`EXPRESSION_ATTRIBUTES`; the ones it
    leaves out are neutral (:data:`NEUTRAL_EXPRESSION`), not taken from the base identity,
    so an expression means the same thing for every identity.
    """
    base = (
        sample_attributes(seed_or_attrs)
        if isinstance(seed_or_attrs, (int, np.integer))
        else dict(seed_or_attrs)
    )
    size = check_size(size)
    frames = []
    for expr in expressions:
        bad = set(expr) - set(EXPRESSION_ATTRIBUTES)
        if bad:
            raise ValueError(
                f"expression keys {sorted(bad)} are not expression attributes ({', '.join(EXPRESSION_ATTRIBUTES)})"
            )
        attrs = {**base, **NEUTRAL_EXPRESSION, **expr}
        frames.append(render(attrs, size, background=background))
    channels = 3 if background else 4
    if not frames:
        return np.zeros((0, size, size, channels), dtype=np.uint8)
    return np.stack(frames)


def nearest_color(rgb: Sequence[float], table: Mapping[str, Color]) -> str:
    """Name of the colour in ``table`` nearest to ``rgb`` (Euclidean in RGB)."""
    names = list(table)
    cols = np.array([table[n] for n in names], dtype=np.float64)
    d = ((cols - np.asarray(rgb, dtype=np.float64)[None, :3]) ** 2).sum(axis=1)
    return names[int(np.argmin(d))]
