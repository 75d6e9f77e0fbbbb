"""Alpha handling shared by every op: validation, premultiplication, hidden-colour fill.

Images are ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA uint8 with *straight* alpha (the
AvatarForge convention, see :mod:`avatarforge.imageio`). The RGB stored under a fully
transparent pixel is invisible and often arbitrary (black, or whatever the painter left
there), so no spatial filter may let it leak into visible pixels. Two tools guarantee that:

- :func:`masked_filter` (normalised convolution): a *linear* filter applied to
  premultiplied colour and to alpha, then divided — the alpha-weighted filter, which gives
  transparent pixels zero weight. Used by blur / sharpen.
- :func:`fill_transparent`: replaces the hidden colour of transparent pixels with the
  colour of the nearest visible pixel, so *non-linear* filters (bilateral, CLAHE, edge
  detection) that cannot be normalised see only plausible colours there.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from avatarforge.imageio import check_image

__all__ = [
    "check_image",
    "fill_transparent",
    "has_transparency",
    "masked_filter",
    "merge_alpha",
    "premultiply",
    "to_uint8",
    "unpremultiply",
]


def has_transparency(image: np.ndarray) -> bool:
    """True for RGBA images with at least one alpha value below 255."""
    return image.shape[2] == 4 and bool((image[..., 3] < 255).any())


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Round and clamp a float array in 0-255 to uint8."""
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def merge_alpha(rgb: np.ndarray, image: np.ndarray) -> np.ndarray:
    """``rgb`` (H, W, 3) with ``image``'s alpha channel appended when it has one (bit-exact)."""
    if image.shape[2] == 3:
        return rgb
    out = np.empty(image.shape, np.uint8)
    out[..., :3] = rgb
    out[..., 3] = image[..., 3]
    return out


def premultiply(image: np.ndarray) -> np.ndarray:
    """uint8 RGB(A) -> float32 in [0, 1]; for RGBA the colour is multiplied by alpha."""
    x = image.astype(np.float32) * np.float32(1.0 / 255.0)
    if image.shape[2] == 4:
        x[..., :3] *= x[..., 3:4]
    return x


def unpremultiply(p: np.ndarray) -> np.ndarray:
    """Premultiplied float32 RGB(A) in [0, 1] -> straight uint8 (colour 0 where alpha is 0).

    Values are clamped first (resampling overshoots), with premultiplied colour limited to
    its alpha so the straight colour stays within 0-255.
    """
    if p.shape[2] == 3:
        return to_uint8(p * 255.0)
    a = np.clip(p[..., 3:4], 0.0, 1.0)
    a8 = np.rint(a * 255.0)
    # Divide by the exact alpha, not the stored 8-bit one: at faint edges (alpha ~ 1/255)
    # the quantised value can differ by 2x and would darken or brighten the colour.
    rgb = np.clip(p[..., :3], 0.0, a) / np.maximum(a, 1e-6) * 255.0
    out = np.empty(p.shape, np.uint8)
    out[..., :3] = to_uint8(np.where(a8 > 0, rgb, 0.0))
    out[..., 3] = a8[..., 0].astype(np.uint8)
    return out


def masked_filter(
    rgb: np.ndarray, alpha: np.ndarray | None, fn: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Alpha-weighted linear filter of straight colour (normalised convolution).

    Args:
        rgb: (H, W, 3) float32 straight colour.
        alpha: (H, W) float32 in [0, 1], or None for opaque images.
        fn: a linear, shift-invariant filter with non-negative weights on (H, W, C) arrays
            (e.g. a Gaussian blur).

    Returns:
        ``fn(rgb * alpha) / fn(alpha)``: the filtered straight colour, in which transparent
        pixels have no weight. Where no visible pixel is in reach (the filtered alpha is ~0)
        the input colour is returned.
    """
    if alpha is None:
        return fn(rgb)
    num = fn(rgb * alpha[..., None])
    den = fn(alpha)
    if den.ndim == 2:
        den = den[..., None]
    ok = den > 1e-4
    return np.where(ok, num / np.where(ok, den, 1.0), rgb)


def fill_transparent(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB copy in which every fully transparent pixel takes the colour of the
    nearest visible pixel (Euclidean distance); RGB input is returned as a copy.

    Makes non-linear spatial filters safe: whatever colour was hidden under alpha 0 is gone.
    """
    rgb = np.ascontiguousarray(image[..., :3]).copy()
    if image.shape[2] == 3:
        return rgb
    hidden = image[..., 3] == 0
    if not hidden.any() or hidden.all():
        return rgb
    # For each hidden pixel, the index of the nearest visible pixel.
    iy, ix = ndimage.distance_transform_edt(hidden, return_distances=False, return_indices=True)
    rgb[hidden] = rgb[iy[hidden], ix[hidden]]
    return rgb
