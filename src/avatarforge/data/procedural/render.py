"""The public drawing functions: one avatar, its background, and one identity at several expressions.

:func:`render` paints the parts back to front; the order is part of the picture (each
part covers what came before), so it must not change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from avatarforge.data.procedural.accessories import draw_accessory_back, draw_accessory_front
from avatarforge.data.procedural.attributes import check_value, resolve, sample_attributes
from avatarforge.data.procedural.body import draw_body, draw_head, draw_neck_shadow
from avatarforge.data.procedural.canvas import Canvas, supersample
from avatarforge.data.procedural.face import draw_blush, draw_brows, draw_eyes, draw_mouth, draw_nose
from avatarforge.data.procedural.hair import draw_back_hair, draw_front_hair, draw_hair_ties, draw_tails
from avatarforge.data.procedural.palette import Palette
from avatarforge.data.procedural.schema import (
    BACKGROUND_COLORS,
    EXPRESSION_ATTRIBUTES,
    LIVE_CONTROLS,
    NEUTRAL_EXPRESSION,
    check_size,
)

__all__ = ["render", "render_avatar", "render_background", "render_expressions"]


def render_background(attrs: Mapping[str, Any], size: int) -> np.ndarray:
    """The background of an avatar: (size, size, 3) uint8 RGB, from ``background_kind`` and
    ``background_color``."""
    size = check_size(size)
    kind = check_value("background_kind", attrs["background_kind"])
    base = np.array(
        BACKGROUND_COLORS[check_value("background_color", attrs["background_color"])], dtype=np.float32
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
            are required, missing expression controls and live controls
            (:data:`LIVE_CONTROLS`) are neutral.
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
    a = resolve(attrs)
    pal = Palette(a)
    cv = Canvas(
        size,
        supersample(size),
        float(a["head_yaw"]),
        float(a["head_tilt"]),
        return_parts,
        pitch=float(a["head_pitch"]),
        sway=float(a["body_sway"]),
        breath=float(a["breath"]),
    )
    draw_back_hair(cv, a, pal)
    draw_tails(cv, a, pal)
    draw_body(cv, a, pal)
    draw_neck_shadow(cv, pal)
    draw_head(cv, pal)
    draw_blush(cv, a, pal)
    draw_nose(cv, pal)
    draw_mouth(cv, a, pal)
    draw_eyes(cv, a, pal)
    draw_accessory_back(cv, a, pal)
    draw_front_hair(cv, a, pal)
    draw_hair_ties(cv, a, pal)
    draw_brows(cv, a, pal)
    draw_accessory_front(cv, a, pal)
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
    dict. Each expression dict sets some of :data:`EXPRESSION_ATTRIBUTES` and
    :data:`LIVE_CONTROLS`; the ones it leaves out are neutral (:data:`NEUTRAL_EXPRESSION`,
    :data:`NEUTRAL_LIVE`), not taken from the base identity, so an expression means the
    same thing for every identity.
    """
    base = (
        sample_attributes(seed_or_attrs)
        if isinstance(seed_or_attrs, (int, np.integer))
        else dict(seed_or_attrs)
    )
    size = check_size(size)
    base = {k: v for k, v in base.items() if k not in LIVE_CONTROLS}
    valid = (*EXPRESSION_ATTRIBUTES, *(n for n in LIVE_CONTROLS if n not in EXPRESSION_ATTRIBUTES))
    frames = []
    for expr in expressions:
        bad = set(expr) - set(valid)
        if bad:
            raise ValueError(
                f"expression keys {sorted(bad)} are not expression attributes or live controls ({', '.join(valid)})"
            )
        attrs = {**base, **NEUTRAL_EXPRESSION, **expr}
        frames.append(render(attrs, size, background=background))
    channels = 3 if background else 4
    if not frames:
        return np.zeros((0, size, size, channels), dtype=np.uint8)
    return np.stack(frames)
