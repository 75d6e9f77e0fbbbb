"""Colour adjustments: brightness, contrast, saturation, hue, gamma, temperature, white
balance, CLAHE.

All ops change RGB only and return alpha bit-exact. Statistics that depend on the image
(the mean for contrast, channel means for white balance) are weighted by alpha, so the
hidden colour of transparent pixels never influences the result. White balance and colour
temperature work in linear light (sRGB decoded), where channel gains model a change of
illuminant; the other ops work on the stored (gamma-encoded) values as image editors do.
"""

from __future__ import annotations

import cv2
import numpy as np

from avatarforge.postprocess.alpha import fill_transparent, merge_alpha, to_uint8
from avatarforge.postprocess.registry import Param, register_op

__all__ = [
    "brightness",
    "clahe",
    "contrast",
    "gamma",
    "hue_shift",
    "saturation",
    "temperature",
    "white_balance",
]

# Rec. 601 luma weights (what Pillow's ImageEnhance and "grey" conversions use).
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# Rec. 709 / sRGB relative luminance weights, for linear-light colour.
_LUMINANCE = np.array([0.2126, 0.7152, 0.0722], np.float32)
WB_METHODS = ("gray_world", "shades_of_gray", "white_patch")


def _weights(image: np.ndarray) -> np.ndarray | None:
    """Per-pixel alpha weights in [0, 1], or None when the image is opaque or fully clear."""
    if image.shape[2] != 4:
        return None
    w = image[..., 3].astype(np.float32) / 255.0
    return w if w.sum() > 0 else None


def _lut(image: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Apply a 256-entry lookup table to RGB, keep alpha."""
    return merge_alpha(table[image[..., :3]], image)


def _srgb_to_linear(rgb8: np.ndarray) -> np.ndarray:
    x = np.arange(256, dtype=np.float64) / 255.0
    lut = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)
    return lut[rgb8]


def _linear_to_srgb8(lin: np.ndarray) -> np.ndarray:
    x = np.clip(lin, 0.0, 1.0)
    s = np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1.0 / 2.4) - 0.055)
    return to_uint8(s * 255.0)


@register_op(
    "brightness", Param("factor", "float", 0.0, 4.0, help="multiplies RGB; 1 = unchanged, 0 = black")
)
def brightness(image: np.ndarray, factor: float = 1.0) -> np.ndarray:
    """Scale RGB by ``factor`` (0-4; 1 = unchanged, 0 = black, 2 = twice as bright)."""
    table = to_uint8(np.arange(256, dtype=np.float64) * factor)
    return _lut(image, table)


@register_op("contrast", Param("factor", "float", 0.0, 4.0, help="1 = unchanged, 0 = flat grey at the mean"))
def contrast(image: np.ndarray, factor: float = 1.0) -> np.ndarray:
    """Scale RGB away from the mean luma (0-4; 1 = unchanged, 0 = flat grey).

    The mean is taken over visible pixels (alpha-weighted), as Pillow's ``ImageEnhance``
    does for opaque images.
    """
    rgb = image[..., :3].astype(np.float32)
    luma = rgb @ _LUMA
    w = _weights(image)
    mean = float(luma.mean()) if w is None else float((luma * w).sum() / w.sum())
    return merge_alpha(to_uint8(mean + factor * (rgb - mean)), image)


@register_op("saturation", Param("factor", "float", 0.0, 4.0, help="1 = unchanged, 0 = greyscale"))
def saturation(image: np.ndarray, factor: float = 1.0) -> np.ndarray:
    """Scale colourfulness about each pixel's luma (0-4; 1 = unchanged, 0 = greyscale)."""
    rgb = image[..., :3].astype(np.float32)
    luma = (rgb @ _LUMA)[..., None]
    return merge_alpha(to_uint8(luma + factor * (rgb - luma)), image)


@register_op(
    "hue",
    Param("degrees", "float", -360.0, 360.0, help="rotation of the hue circle; ±360 = unchanged"),
    aliases=("hue_shift",),
)
def hue_shift(image: np.ndarray, degrees: float = 0.0) -> np.ndarray:
    """Rotate hue by ``degrees`` (-360..360) in HSV, keeping saturation and value."""
    if degrees % 360.0 == 0.0:
        return image.copy()  # exact identity, not an HSV round trip
    rgb = image[..., :3].astype(np.float32) / 255.0
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)  # float input: H in [0, 360)
    hsv[..., 0] = np.mod(hsv[..., 0] + np.float32(degrees), 360.0)
    out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return merge_alpha(to_uint8(out * 255.0), image)


@register_op(
    "gamma", Param("gamma", "float", 0.1, 10.0, help="> 1 brightens mid-tones, < 1 darkens; 1 = unchanged")
)
def gamma(image: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """Gamma correction ``out = 255 * (in / 255) ** (1 / gamma)`` (0.1-10; > 1 brightens
    mid-tones, 1 = unchanged; black and white stay fixed)."""
    x = np.arange(256, dtype=np.float64) / 255.0
    return _lut(image, to_uint8(255.0 * np.power(x, 1.0 / gamma)))


@register_op(
    "temperature",
    Param("amount", "float", -1.0, 1.0, help="> 0 warmer (more red), < 0 cooler (more blue)"),
)
def temperature(image: np.ndarray, amount: float = 0.0) -> np.ndarray:
    """Warm (``amount`` > 0, towards orange) or cool (< 0, towards blue) the colours (-1..1).

    Channel gains in linear light, normalised to keep the luminance of grey; ``amount=1``
    is roughly a 6500 K -> 4000 K change of illuminant.
    """
    if amount == 0.0:
        return image.copy()
    gains = np.array([1.0 + 0.35 * amount, 1.0 + 0.06 * amount, 1.0 - 0.45 * amount], np.float32)
    gains /= float(gains @ _LUMINANCE)
    lin = _srgb_to_linear(image[..., :3]) * gains
    return merge_alpha(_linear_to_srgb8(lin), image)


@register_op(
    "white_balance",
    Param("strength", "float", 0.0, 1.0, help="0 = unchanged, 1 = full correction"),
    Param("method", "choice", choices=WB_METHODS, help="how the illuminant is estimated"),
)
def white_balance(image: np.ndarray, strength: float = 1.0, method: str = "shades_of_gray") -> np.ndarray:
    """Automatic white balance: estimate the illuminant colour and divide it out.

    Methods (channel statistics over visible pixels, in linear light):

    - ``gray_world``: the mean colour is assumed grey;
    - ``shades_of_gray`` (default): the 6-norm mean, more robust to large coloured areas;
    - ``white_patch``: the 99th percentile of each channel is assumed white.

    Gains are normalised to keep the luminance of grey, limited to 0.25-4, and applied with
    ``strength`` (0-1; interpolated geometrically). Large single-colour areas (a pink dress
    filling the frame) read as a colour cast; lower ``strength`` for such images.
    """
    if strength == 0.0:
        return image.copy()
    lin = _srgb_to_linear(image[..., :3])
    w = _weights(image)
    flat = lin.reshape(-1, 3)
    wf = None if w is None else w.reshape(-1)
    if wf is not None:
        keep = wf > 0
        flat, wf = flat[keep], wf[keep]
    if method == "white_patch":
        est = np.percentile(flat, 99.0, axis=0)
    else:
        p = 1.0 if method == "gray_world" else 6.0
        powered = np.power(flat.astype(np.float64), p)
        mean = powered.mean(axis=0) if wf is None else (powered * wf[:, None]).sum(0) / wf.sum()
        est = np.power(mean, 1.0 / p)
    est = np.maximum(np.asarray(est, np.float64), 1e-6)
    grey = float(est @ _LUMINANCE.astype(np.float64))
    gains = np.clip(grey / est, 0.25, 4.0) ** strength
    gains /= float(gains @ _LUMINANCE.astype(np.float64))  # the weights sum to 1
    return merge_alpha(_linear_to_srgb8(lin * gains.astype(np.float32)), image)


@register_op(
    "clahe",
    Param("clip_limit", "float", 0.1, 40.0, help="contrast limit per tile (higher = stronger)"),
    Param("tiles", "int", 1, 64, help="tiles per side of the grid"),
)
def clahe(image: np.ndarray, clip_limit: float = 2.0, tiles: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of lightness (CIE L*), keeping hue.

    Raises local contrast in flat, washed-out regions. Transparent pixels are filled with
    the nearest visible colour first so they do not distort the tile histograms.
    """
    rgb = fill_transparent(image)
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    eq = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tiles), int(tiles)))
    lab[..., 0] = eq.apply(np.ascontiguousarray(lab[..., 0]))
    out = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    if image.shape[2] == 4:
        hidden = image[..., 3] == 0
        out[hidden] = image[..., :3][hidden]  # spatial op: leave the invisible colour alone
    return merge_alpha(out, image)
