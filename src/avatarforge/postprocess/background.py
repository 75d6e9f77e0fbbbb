"""Background removal (alpha from a colour key refined by GrabCut, with soft matted edges)
and compositing onto a colour or an image.

:func:`remove_background` decides the alpha channel:

1. **Existing alpha.** An RGBA image with any alpha below 255 already says what is
   background (a generator's or painter's alpha is better than any estimate): with
   ``method="auto"`` it is returned unchanged.
2. **Colour key.** The key colour is the median of a thin border strip (or ``key_color``).
   Pixels within ``tolerance`` (Euclidean RGB distance) of it are background candidates;
   with ``connected`` only candidate regions touching the image border count, so a white
   shirt on a white wall keeps its inside.
3. **GrabCut** (``method="grabcut"``, and ``"auto"``): ``cv2.grabCut`` initialised from
   the key — clear key colour = background, far from it = foreground, everything between
   "probable" — re-labels pixels by colour models, fixing shadows, compression noise and
   colours the key alone misjudges. When the border is not one colour (a gradient or a
   photo), GrabCut starts from a rectangle inset from the border instead.
4. **Soft edges.** In a 2-px band around the boundary alpha comes from *difference
   matting*: with the background colour B known, a pixel ``I = a F + (1 - a) B`` gets
   ``a = |I - B| / |F - B|``, with F estimated from the nearest solid foreground pixels.
   The colour of such edge pixels is then *decontaminated* (``F = B + (I - B) / a``) so no
   green fringe from a green screen remains. ``feather`` adds guided-filter smoothing.

:func:`composite` blends RGBA over a colour or an image and returns opaque RGB.
"""

from __future__ import annotations

import math
import os

import cv2
import numpy as np

from avatarforge.imageio import clean_alpha as _clean_alpha
from avatarforge.imageio import composite_over
from avatarforge.postprocess.alpha import check_image, fill_transparent, has_transparency, to_uint8
from avatarforge.postprocess.detail import guided_filter
from avatarforge.postprocess.registry import Param, register_op

__all__ = ["BACKGROUND_METHODS", "composite", "estimate_key_color", "remove_background"]

BACKGROUND_METHODS = ("auto", "key", "grabcut")
# GrabCut is O(pixels x iterations) with a large constant: run it at most at this size and
# use the full-resolution key near the boundary.
_GRABCUT_MAX_SIDE = 512


def _border(image: np.ndarray) -> np.ndarray:
    """(N, 3) colours of a border strip about 2 % of the shorter side wide (>= 1 px)."""
    h, w = image.shape[:2]
    b = max(1, round(0.02 * min(h, w)))
    rgb = image[..., :3]
    parts = [
        rgb[:b].reshape(-1, 3),
        rgb[-b:].reshape(-1, 3),
        rgb[:, :b].reshape(-1, 3),
        rgb[:, -b:].reshape(-1, 3),
    ]
    return np.concatenate(parts)


def estimate_key_color(image: np.ndarray) -> tuple[int, int, int]:
    """The background colour of an image: the per-channel median of its border strip."""
    med = np.median(_border(image).astype(np.float32), axis=0)
    return (round(float(med[0])), round(float(med[1])), round(float(med[2])))


def _connected_to_border(mask: np.ndarray) -> np.ndarray:
    """The parts of a boolean mask that are 8-connected to the image border."""
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask.copy()
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    keep = np.zeros(n, bool)
    keep[np.unique(edge)] = True
    keep[0] = False  # label 0 is "not in mask"
    return keep[labels]


def _large_regions(mask: np.ndarray, min_area: float) -> np.ndarray:
    """The 8-connected parts of ``mask`` with at least ``min_area`` pixels."""
    _n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= max(min_area, 1.0)
    keep[0] = False
    return keep[labels]


def _grabcut(rgb: np.ndarray, gc_mask: np.ndarray | None, iterations: int) -> np.ndarray | None:
    """Run GrabCut (from a mask, or a rectangle inset 3 % when ``gc_mask`` is None), at
    most ``_GRABCUT_MAX_SIDE`` px; returns a float32 foreground map at full size in [0, 1]
    or None when GrabCut cannot run (one of the classes is empty)."""
    h, w = rgb.shape[:2]
    scale = min(1.0, _GRABCUT_MAX_SIDE / max(h, w))
    small = (
        rgb
        if scale == 1.0
        else cv2.resize(
            rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
        )
    )
    sh, sw = small.shape[:2]
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    # GrabCut wants BGR only by convention; its colour models are order-agnostic.
    img = np.ascontiguousarray(small)
    # GrabCut seeds its colour models with k-means on OpenCV's global RNG: fix the seed so
    # the same image always gives the same cut.
    cv2.setRNGSeed(0)
    try:
        if gc_mask is None:
            m = max(1, round(0.03 * min(sh, sw)))
            if sh <= 2 * m + 1 or sw <= 2 * m + 1:
                return None
            mask = np.zeros((sh, sw), np.uint8)
            cv2.grabCut(
                img, mask, (m, m, sw - 2 * m, sh - 2 * m), bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT
            )
        else:
            mask = gc_mask if scale == 1.0 else cv2.resize(gc_mask, (sw, sh), interpolation=cv2.INTER_NEAREST)
            is_fg = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD))
            if is_fg.all() or not is_fg.any():
                return None
            mask = mask.copy()
            cv2.grabCut(img, mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return None
    fg = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)
    if scale != 1.0:
        fg = cv2.resize(fg, (w, h), interpolation=cv2.INTER_LINEAR)
    return fg


def _matte(
    rgb: np.ndarray, key: np.ndarray, dist: np.ndarray, fg: np.ndarray, tolerance: float
) -> tuple[np.ndarray, np.ndarray]:
    """Soft alpha (difference matting in a band around ``fg``'s boundary) and the
    decontaminated straight colour; see the module docstring."""
    k3 = np.ones((3, 3), np.uint8)
    m = fg.astype(np.uint8)
    sure = cv2.erode(m, k3, borderType=cv2.BORDER_REPLICATE) > 0
    band = (cv2.dilate(m, k3, iterations=2) > 0) & ~sure
    lo = 0.5 * tolerance
    # |F - B| of the nearest solid foreground: the smallest key distance among solid
    # pixels within 2 px (the smallest, so a dark outline next to skin is not read as
    # partly transparent skin).
    ref = cv2.erode(np.where(sure, dist, np.float32(1e6)).astype(np.float32), np.ones((5, 5), np.uint8))
    usable = band & (ref < 1e5) & (ref - lo > tolerance)
    alpha = fg.astype(np.float32)
    soft = np.clip((dist - lo) / np.maximum(ref - lo, 1e-3), 0.0, 1.0)
    alpha[usable] = soft[usable]
    # Decontaminate: remove the key colour's share from partly transparent pixels.
    out = rgb.copy()
    part = usable & (alpha > 0) & (alpha < 1)
    a = np.maximum(alpha[part], 0.1)[:, None]
    out[part] = np.clip(key + (rgb[part] - key) / a, 0.0, 255.0)
    return alpha, out


@register_op(
    "remove_background",
    Param(
        "method", "choice", choices=BACKGROUND_METHODS, help="auto keeps existing alpha, else key + GrabCut"
    ),
    Param("key_color", "color", optional=True, help="background colour; auto = median of the border"),
    Param("tolerance", "float", 0.0, 255.0, help="RGB distance from the key still counted as background"),
    Param("feather", "float", 0.0, 10.0, help="extra edge smoothing radius, px (guided filter)"),
    Param("iterations", "int", 1, 10, help="GrabCut iterations"),
    Param("connected", "bool", help="only key-coloured regions touching the border are background"),
    aliases=("rembg", "remove_bg", "background_removal"),
    alpha="computed",
    group="alpha",
)
def remove_background(
    image: np.ndarray,
    method: str = "auto",
    key_color: tuple[int, int, int] | None = None,
    tolerance: float = 32.0,
    feather: float = 0.0,
    iterations: int = 3,
    connected: bool = True,
) -> np.ndarray:
    """Make the background transparent; returns (H, W, 4) RGBA.

    Args:
        image: (H, W, 3|4) uint8.
        method: ``auto`` — keep the image's own alpha when it has transparency, otherwise
            colour key + GrabCut; ``key`` — colour key only (fast, exact on flat
            backgrounds); ``grabcut`` — colour key refined by GrabCut even for RGBA input.
        key_color: the background colour, or None to take the median border colour.
        tolerance: 0-255, Euclidean RGB distance from the key counted as background.
        feather: 0-10 px of guided-filter smoothing of the alpha (0 = the matte as is).
        iterations: 1-10 GrabCut iterations.
        connected: only key-coloured regions connected to the image border are removed.

    An input alpha channel is respected: the result's alpha never exceeds it.

    Raises:
        ValueError: ``method="key"`` on an image whose border is not one colour and no
            ``key_color`` given (a key would be meaningless).
    """
    if method == "auto" and has_transparency(image):
        return image.copy()
    h, w = image.shape[:2]
    # Hidden colour under alpha 0 must not become the key: use the nearest visible colour.
    rgb8 = fill_transparent(image)
    rgb = rgb8.astype(np.float32)
    key = np.asarray(key_color if key_color is not None else estimate_key_color(rgb8), np.float32)
    dist = np.sqrt(((rgb - key) ** 2).sum(axis=-1)).astype(np.float32)
    border_d = np.sqrt(((_border(rgb8).astype(np.float32) - key) ** 2).sum(axis=-1))
    uniform = key_color is not None or float((border_d <= max(tolerance, 1.0)).mean()) >= 0.6
    if uniform:
        bg = dist <= tolerance
        if connected:
            bg = _connected_to_border(bg)
        fg = ~bg
        if method != "key":
            gc = np.full((h, w), cv2.GC_PR_FGD, np.uint8)
            gc[bg & (dist > 0.5 * tolerance)] = cv2.GC_PR_BGD
            gc[bg & (dist <= 0.5 * tolerance)] = cv2.GC_BGD
            # Large enclosed key-coloured areas (gaps between arm and body, between twin
            # tails) are "probably background"; small ones (eye highlights on a white
            # backdrop) stay foreground.
            gc[_large_regions(~bg & (dist <= 0.5 * tolerance), 0.0025 * h * w)] = cv2.GC_PR_BGD
            r = max(1, round(0.01 * min(h, w)))
            solid = cv2.erode(fg.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0
            gc[solid & (dist > 3.0 * tolerance)] = cv2.GC_FGD
            refined = _grabcut(rgb8, gc, iterations)
            if refined is not None:
                if refined.shape == fg.shape and min(h, w) <= _GRABCUT_MAX_SIDE:
                    fg = refined > 0.5
                else:
                    # Low-resolution GrabCut: trust it away from edges, the key near them.
                    up = refined > 0.5
                    k = np.ones((5, 5), np.uint8)
                    edge = (cv2.dilate(up.astype(np.uint8), k) > 0) & ~(cv2.erode(up.astype(np.uint8), k) > 0)
                    fg = np.where(edge, fg, up)
        alpha, rgb = _matte(rgb, key, dist, fg, tolerance)
    else:
        if method == "key":
            raise ValueError(
                "remove_background: the image border is not one colour, so there is no key to remove; "
                "pass key_color=... or use method='grabcut'"
            )
        refined = _grabcut(rgb8, None, iterations)
        alpha = np.ones((h, w), np.float32) if refined is None else refined
        # No known background colour to matte against: soften the cut along image edges.
        feather = max(feather, 1.0)
    if feather > 0:
        grey = cv2.cvtColor(rgb8, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        alpha = np.clip(guided_filter(grey, alpha, math.ceil(feather), 1e-3), 0.0, 1.0)
    a8 = to_uint8(alpha * 255.0)
    if image.shape[2] == 4:
        a8 = np.minimum(a8, image[..., 3])
    out = np.zeros((h, w, 4), np.uint8)
    out[..., :3] = to_uint8(rgb)
    out[..., 3] = a8
    out[a8 == 0, :3] = 0
    return out


def _fit_background(bg: np.ndarray, h: int, w: int) -> np.ndarray:
    """Scale ``bg`` to cover (h, w) and centre-crop; (h, w, 3) uint8. An RGBA background is
    first flattened onto white."""
    if bg.shape[2] == 4:
        a = bg[..., 3:4].astype(np.uint32)
        bg = ((bg[..., :3].astype(np.uint32) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    bh, bw = bg.shape[:2]
    if (bh, bw) != (h, w):
        s = max(h / bh, w / bw)
        nh, nw = max(h, math.ceil(bh * s)), max(w, math.ceil(bw * s))
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
        bg = cv2.resize(bg, (nw, nh), interpolation=interp)
        y, x = (nh - h) // 2, (nw - w) // 2
        bg = bg[y : y + h, x : x + w]
    return np.ascontiguousarray(bg)


@register_op(
    "clean_alpha",
    Param("solid", "int", 1, 255, help="alpha at or above which a pixel is part of the body"),
    Param("edge", "int", 0, 16, help="soft rim kept around the body, px; 0 = one per 64 px of side"),
    aliases=("clean_matte", "despeckle_alpha"),
    alpha="computed",
    group="alpha",
)
def clean_alpha(image: np.ndarray, solid: int = 128, edge: int = 0) -> np.ndarray:
    """One silhouette, opaque inside: specks of alpha away from the character removed, small
    holes filled, the body's interior at alpha 255, the antialiased rim kept.

    Generated avatars get this already (``GeneratorPipeline.clean_alpha``); the op is for images
    from elsewhere. RGB input is returned as a copy. See :func:`avatarforge.imageio.clean_alpha`.
    """
    img = check_image(image)
    return _clean_alpha(img, solid=solid, edge=edge or None)


@register_op(
    "composite",
    Param("color", "color", help="background colour"),
    Param(
        "background", "path", optional=True, accept=(np.ndarray,), help="background image (overrides color)"
    ),
    aliases=("flatten",),
    alpha="removed",
    group="alpha",
)
def composite(
    image: np.ndarray,
    color: tuple[int, int, int] = (255, 255, 255),
    background: np.ndarray | str | os.PathLike | None = None,
) -> np.ndarray:
    """Alpha-blend the image over a colour or a background image; returns opaque (H, W, 3).

    Args:
        color: the background colour (default white).
        background: an (H', W', 3|4) uint8 array or an image file; it is scaled to cover
            the image and centre-cropped. Overrides ``color``.

    ``out = (rgb * a + bg * (255 - a) + 127) // 255`` in integers (exact, deterministic).
    RGB input is returned as a copy.
    """
    h, w = image.shape[:2]
    if background is None:
        bg: np.ndarray = np.broadcast_to(np.asarray(color, np.uint8), (h, w, 3))
    else:
        if not isinstance(background, np.ndarray):
            from avatarforge.data.imagefile import ImageRejected, load_image

            try:  # the same validated decoding as every other user image
                background = np.asarray(load_image(background))
            except ImageRejected as e:
                raise ValueError(f"composite: background {os.fspath(background)}: {e}") from None
        bg = _fit_background(check_image(background, "background"), h, w)
    if image.shape[2] == 3:
        return image.copy()
    return composite_over(image, bg)
