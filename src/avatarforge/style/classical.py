"""Weight-free style transfer: colour statistics transfer and histogram matching.

Both work on ``(H, W, 3|4)`` uint8 arrays (straight alpha, see :mod:`avatarforge.imageio`)
and change only the RGB of the content image:

- :func:`colour_transfer` is Reinhard et al. (2001), "Color Transfer between Images": shift
  and scale every channel of the content so that its mean and standard deviation equal the
  style image's, in a perceptual colour space (CIE L*a*b* through OpenCV, the usual
  stand-in for Reinhard's l-alpha-beta: both decorrelate lightness from the two opponent
  colour axes, so per-channel statistics are meaningful).
- :func:`histogram_match` maps every channel through the content CDF and the inverse style
  CDF, so the output's per-channel distribution equals the style's (not only its first two
  moments), in RGB or Lab.

Alpha: only visible pixels contribute to the statistics, each weighted by its opacity
(``alpha / 255``; fully transparent pixels weigh 0, so the black that ``data prepare``
stores under them never drags a mean down). The output alpha is the content alpha, byte for
byte, and fully transparent pixels keep the content's RGB (usually ``(0, 0, 0, 0)``) so
invisible pixels never change. ``strength`` in ``[0, 1]`` blends linearly from the content
(0) to the full transfer (1) in the working colour space.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

__all__ = [
    "SPACES",
    "as_image_array",
    "colour_transfer",
    "histogram_match",
    "lab_to_rgb",
    "merge_alpha",
    "rgb_to_lab",
    "split_alpha",
    "weighted_mean_std",
]

SPACES = ("rgb", "lab")

# Below this standard deviation (Lab units or RGB levels) a channel is treated as flat: its
# values are shifted to the style mean but not scaled (a 1/std gain would amplify noise).
_FLAT_STD = 1e-3


# ----------------------------------------------------------------------------- array helpers
def as_image_array(image: Any, name: str = "image") -> np.ndarray:
    """An ``(H, W, 3|4)`` uint8 array from an array or a Pillow image (grey becomes RGB).

    Raises:
        ValueError: naming ``name`` and what was given.
    """
    if hasattr(image, "mode") and hasattr(image, "convert"):  # a PIL image
        image = np.asarray(
            image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
        )
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 (H, W, 3|4), got {a.dtype} {a.shape}")
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{name} must be an (H, W, 3) RGB or (H, W, 4) RGBA array, got shape {a.shape}")
    return a


def split_alpha(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``(H, W, C)`` uint8 -> ``(rgb (H, W, 3) uint8, alpha (H, W) uint8 or None for RGB)``."""
    if image.shape[2] == 4:
        return image[..., :3], image[..., 3]
    return image, None


def merge_alpha(rgb: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Put new RGB under the content's alpha: same channels as ``content``, alpha copied exactly.

    Fully transparent content pixels keep the content's RGB, so invisible pixels (and the
    canonical ``(0, 0, 0, 0)`` of prepared data) are unchanged.
    """
    rgb = np.asarray(rgb, dtype=np.uint8)
    if content.shape[2] == 3:
        return np.ascontiguousarray(rgb)
    out = content.copy()
    visible = content[..., 3] > 0
    out[visible, :3] = rgb[visible]
    return out


def _weights(alpha: np.ndarray | None, shape: tuple[int, int], name: str) -> np.ndarray:
    """Per-pixel statistic weights ``alpha / 255`` (all ones for RGB); raises when nothing is visible."""
    if alpha is None:
        return np.ones(shape, np.float64)
    w = alpha.astype(np.float64) / 255.0
    if not np.any(alpha):
        raise ValueError(f"the {name} image is fully transparent: no visible pixels to take colours from")
    return w


def weighted_mean_std(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel weighted mean and standard deviation.

    Args:
        values: (H, W, C) float.
        weights: (H, W) non-negative, not all zero.

    Returns:
        (C,) means and (C,) standard deviations (float64).
    """
    v = values.reshape(-1, values.shape[-1]).astype(np.float64)  # (N, C)
    w = weights.reshape(-1)
    total = w.sum()
    mean = (w @ v) / total
    var = (w @ np.square(v - mean)) / total
    return mean, np.sqrt(np.maximum(var, 0.0))


# ----------------------------------------------------------------------------- colour spaces
def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 sRGB -> (H, W, 3) float32 CIE L*a*b* (L in [0, 100], a/b about [-128, 127]).

    OpenCV's float path is used (not the 8-bit one, which quantises Lab to bytes).
    """
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """(H, W, 3) float CIE L*a*b* -> (H, W, 3) uint8 sRGB (out-of-gamut colours clipped)."""
    rgb = cv2.cvtColor(np.ascontiguousarray(lab, dtype=np.float32), cv2.COLOR_Lab2RGB)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def _check_strength(strength: float) -> float:
    s = float(strength)
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    return s


def _check_space(space: str) -> str:
    s = str(space).lower()
    if s not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    return s


# ----------------------------------------------------------------------------- Reinhard
def colour_transfer(content: Any, style: Any, strength: float = 1.0) -> np.ndarray:
    """Reinhard colour transfer: match the per-channel Lab mean and std of ``style``.

    Args:
        content: (H, W, 3|4) uint8 image whose colours change.
        style: (H', W', 3|4) uint8 image whose colour statistics are taken (any size).
        strength: 0 returns the content unchanged, 1 the full transfer.

    Returns:
        (H, W, C) uint8 like ``content``, with the content's alpha.

    Raises:
        ValueError: bad shapes/dtypes, strength outside [0, 1], or an image with no visible pixels.
    """
    content = as_image_array(content, "content")
    style = as_image_array(style, "style")
    strength = _check_strength(strength)
    c_rgb, c_alpha = split_alpha(content)
    s_rgb, s_alpha = split_alpha(style)
    wc = _weights(c_alpha, c_rgb.shape[:2], "content")
    ws = _weights(s_alpha, s_rgb.shape[:2], "style")
    c_lab = rgb_to_lab(c_rgb)  # (H, W, 3) float32
    s_lab = rgb_to_lab(s_rgb)
    mu_c, sd_c = weighted_mean_std(c_lab, wc)
    mu_s, sd_s = weighted_mean_std(s_lab, ws)
    gain = np.where(sd_c > _FLAT_STD, sd_s / np.maximum(sd_c, _FLAT_STD), 1.0)
    # Blending the gain and the offset with the strength is the same as blending the
    # transferred image with the content: x + s * ((x - mu_c) * g + mu_s - x).
    g = 1.0 + strength * (gain - 1.0)
    out = (c_lab - mu_c) * g + mu_c + strength * (mu_s - mu_c)
    return merge_alpha(lab_to_rgb(out), content)


# ----------------------------------------------------------------------------- histogram matching
def _quantiles(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mid-point CDF positions of sorted distinct ``values`` with weights ``counts``.

    The mid-point (half of a value's own mass) makes the mapping symmetric: matching an
    image to itself is the identity, and the largest value does not always map to the top.
    """
    cum = np.cumsum(counts)
    return (cum - 0.5 * counts) / cum[-1]


def _match_channel(src: np.ndarray, src_w: np.ndarray, ref: np.ndarray, ref_w: np.ndarray) -> np.ndarray:
    """Map ``src`` values so their weighted distribution matches ``ref``'s (one channel).

    Args:
        src: (N,) values; src_w: (N,) weights. ref: (M,) values; ref_w: (M,) weights.

    Returns:
        (N,) float64 matched values.
    """
    keep = ref_w > 0
    r_vals, r_inv = np.unique(ref[keep], return_inverse=True)
    r_cnt = np.bincount(r_inv.reshape(-1), weights=ref_w[keep])
    s_vals, s_inv = np.unique(src, return_inverse=True)
    s_cnt = np.bincount(s_inv.reshape(-1), weights=src_w, minlength=len(s_vals))
    if s_cnt.sum() <= 0:
        return src.astype(np.float64)
    # Values present only under transparent pixels get zero mass: they sit at the CDF of
    # their visible neighbours, which is where an interpolating mapping would put them.
    mapped = np.interp(_quantiles(s_vals, s_cnt), _quantiles(r_vals, r_cnt), r_vals)
    return mapped[s_inv.reshape(-1)]


def histogram_match(content: Any, style: Any, space: str = "rgb", strength: float = 1.0) -> np.ndarray:
    """Per-channel histogram (CDF) matching of ``content`` to ``style``.

    Args:
        content: (H, W, 3|4) uint8 image whose colours change.
        style: (H', W', 3|4) uint8 image whose histograms are the target.
        space: ``"rgb"`` matches R, G, B (exact up to the uint8 rounding); ``"lab"`` matches
            L*, a*, b* (keeps hue shifts coherent; results are clipped to the sRGB gamut).
        strength: 0 returns the content unchanged, 1 the full matching.

    Returns:
        (H, W, C) uint8 like ``content``, with the content's alpha.
    """
    content = as_image_array(content, "content")
    style = as_image_array(style, "style")
    space = _check_space(space)
    strength = _check_strength(strength)
    c_rgb, c_alpha = split_alpha(content)
    s_rgb, s_alpha = split_alpha(style)
    wc = _weights(c_alpha, c_rgb.shape[:2], "content").reshape(-1)
    ws = _weights(s_alpha, s_rgb.shape[:2], "style").reshape(-1)
    if space == "lab":
        c_x, s_x = rgb_to_lab(c_rgb), rgb_to_lab(s_rgb)
    else:
        c_x, s_x = c_rgb, s_rgb
    h, w = c_rgb.shape[:2]
    out = np.empty((h * w, 3), np.float64)
    for ch in range(3):
        src = c_x[..., ch].reshape(-1)
        matched = _match_channel(src, wc, s_x[..., ch].reshape(-1), ws)
        out[:, ch] = src + strength * (matched - src)
    out = out.reshape(h, w, 3)
    rgb = lab_to_rgb(out) if space == "lab" else np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return merge_alpha(rgb, content)
