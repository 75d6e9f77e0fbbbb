"""Weight-free style transfer: Reinhard colour statistics and histogram matching."""

from __future__ import annotations

import numpy as np
import pytest

from avatarforge.style.classical import colour_transfer, histogram_match, lab_to_rgb, rgb_to_lab
from tests.style.conftest import lab_distance, lab_stats, warm_texture


def _visible(img: np.ndarray) -> np.ndarray:
    return img[..., 3] > 0


def test_colour_transfer_matches_lab_statistics_and_keeps_alpha(avatar64, texture64):
    out = colour_transfer(avatar64, texture64)
    assert out.shape == avatar64.shape and out.dtype == np.uint8
    assert np.array_equal(out[..., 3], avatar64[..., 3])
    # Invisible pixels are untouched (prepared data keeps them at (0, 0, 0, 0)).
    hidden = avatar64[..., 3] == 0
    assert np.array_equal(out[hidden], avatar64[hidden])
    (m_out, s_out), (m_sty, s_sty) = lab_stats(out), lab_stats(texture64)
    # Means match up to the uint8 rounding and sRGB gamut clipping.
    assert np.abs(m_out - m_sty).max() < 1.5, (m_out, m_sty)
    assert np.abs(s_out - s_sty).max() < 2.0, (s_out, s_sty)
    assert lab_distance(avatar64, texture64) > 30  # the test is not trivial


def test_colour_transfer_strength_interpolates(avatar64, texture64):
    same = colour_transfer(avatar64, texture64, strength=0.0)
    assert np.abs(same.astype(int) - avatar64.astype(int)).max() <= 1  # Lab round trip only
    d0 = lab_distance(avatar64, texture64)
    d_half = lab_distance(colour_transfer(avatar64, texture64, strength=0.5), texture64)
    d_full = lab_distance(colour_transfer(avatar64, texture64, strength=1.0), texture64)
    assert d_full < d_half < d0
    assert d_half == pytest.approx(d0 / 2, rel=0.15)  # linear in the strength
    with pytest.raises(ValueError, match="strength"):
        colour_transfer(avatar64, texture64, strength=1.5)


def test_statistics_ignore_transparent_pixels(avatar64, texture64):
    """Garbage under alpha = 0, in the content or the style, must not change anything visible."""
    dirty = avatar64.copy()
    dirty[avatar64[..., 3] == 0, :3] = (0, 255, 0)
    style = np.concatenate([texture64, np.full((64, 64, 1), 255, np.uint8)], axis=2)
    style[:, :16, 3] = 0
    dirty_style = style.copy()
    dirty_style[:, :16, :3] = (0, 0, 255)
    for fn in (colour_transfer, histogram_match):
        ref = fn(avatar64, style)
        out = fn(dirty, dirty_style)
        vis = _visible(avatar64)
        assert np.array_equal(out[vis], ref[vis]), fn.__name__
        assert np.array_equal(out[..., 3], avatar64[..., 3])
        assert np.array_equal(out[~vis], dirty[~vis])  # invisible pixels keep the content's RGB


def _cdf(values: np.ndarray) -> np.ndarray:
    hist = np.bincount(values.reshape(-1), minlength=256).astype(np.float64)
    return np.cumsum(hist) / hist.sum()


def test_histogram_matching_gives_matching_cdfs():
    rng = np.random.default_rng(0)
    # Content: smooth, low-contrast, many distinct values; style: a skewed, high-contrast mix.
    yy, xx = np.mgrid[:96, :96]
    content = np.stack([60 + xx, 80 + yy // 2, 100 + (xx + yy) // 4], axis=2).astype(np.uint8)
    content = np.clip(content + rng.integers(0, 8, content.shape), 0, 255).astype(np.uint8)
    style = np.stack(
        [rng.beta(5, 1.5, (80, 80)) * 255, rng.beta(0.7, 0.7, (80, 80)) * 255, rng.gamma(2, 20, (80, 80))],
        axis=2,
    )
    style = np.clip(style, 0, 255).astype(np.uint8)
    out = histogram_match(content, style)
    assert out.shape == content.shape
    for ch in range(3):
        gap = np.abs(_cdf(out[..., ch]) - _cdf(style[..., ch])).max()
        before = np.abs(_cdf(content[..., ch]) - _cdf(style[..., ch])).max()
        # Matching is exact up to the content's own quantisation (a value's pixels all map
        # to one output value): with ~100 distinct levels per channel that is < 2.5%.
        assert gap < 0.025, (ch, gap)
        assert before > 0.3


def test_histogram_matching_identity_alpha_and_lab(avatar64, texture64):
    assert np.array_equal(histogram_match(avatar64, avatar64), avatar64)  # self-match is the identity
    for space in ("rgb", "lab"):
        out = histogram_match(avatar64, texture64, space=space)
        assert np.array_equal(out[..., 3], avatar64[..., 3])
        assert lab_distance(out, texture64) < 0.25 * lab_distance(avatar64, texture64), space
    with pytest.raises(ValueError, match="space"):
        histogram_match(avatar64, texture64, space="hsv")


def test_rgb_inputs_and_errors(texture64):
    content = warm_texture(40, 56)[:, :, ::-1].copy()  # RGB, not square
    out = colour_transfer(content, texture64)
    assert out.shape == (40, 56, 3)
    clear = np.zeros((8, 8, 4), np.uint8)
    with pytest.raises(ValueError, match="fully transparent"):
        colour_transfer(content, clear)
    with pytest.raises(ValueError, match="uint8"):
        colour_transfer(content.astype(np.float32), texture64)
    # The Lab helpers round-trip 8-bit colours within one level (OpenCV's float Lab uses
    # tabulated curves, so a few colours come back off by one).
    grid = np.stack(np.meshgrid(*[np.arange(0, 256, 15, dtype=np.uint8)] * 3), axis=-1).reshape(-1, 1, 3)
    assert np.abs(lab_to_rgb(rgb_to_lab(grid)).astype(int) - grid).max() <= 1
