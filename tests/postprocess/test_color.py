"""Colour ops: each one's defining property (alpha handling is in test_ops_common)."""

from __future__ import annotations

import numpy as np
import pytest

from avatarforge.postprocess import (
    brightness,
    clahe,
    contrast,
    gamma,
    hue_shift,
    saturation,
    temperature,
    white_balance,
)


def visible(img: np.ndarray) -> np.ndarray:
    """(N, 3) int RGB of the visible pixels."""
    rgb = img[..., :3].astype(np.int32)
    return rgb[img[..., 3] > 0] if img.shape[2] == 4 else rgb.reshape(-1, 3)


def test_saturation_zero_is_grey(avatar):
    out = visible(saturation(avatar, 0.0))
    assert np.abs(out - out[:, :1]).max() <= 1


def test_saturation_above_one_spreads_channels(avatar):
    spread = lambda im: np.ptp(visible(im), axis=1).mean()  # noqa: E731
    assert spread(saturation(avatar, 1.5)) > spread(avatar) * 1.2


@pytest.mark.parametrize("factor, higher", [(1.5, True), (0.5, False)])
def test_brightness_moves_the_mean(avatar, factor, higher):
    before, after = visible(avatar).mean(), visible(brightness(avatar, factor)).mean()
    assert (after > before + 5) if higher else (after < before - 5)


def test_contrast_zero_is_flat_and_two_spreads(avatar):
    flat = visible(contrast(avatar, 0.0))
    assert np.ptp(flat) <= 1  # one grey for every visible pixel
    assert visible(contrast(avatar, 2.0)).std() > visible(avatar).std() * 1.3


def test_contrast_mean_ignores_transparent_pixels(avatar):
    """The flat grey is the alpha-weighted mean of the visible pixels, whatever is hidden."""
    grey = visible(contrast(avatar, 0.0))[0, 0]
    luma = visible(avatar) @ np.array([0.299, 0.587, 0.114])
    w = avatar[..., 3][avatar[..., 3] > 0].astype(float)
    assert abs(grey - (luma * w).sum() / w.sum()) <= 0.6


def test_hue_360_identity_and_180_twice_roundtrip(avatar):
    assert np.array_equal(hue_shift(avatar, 360.0), avatar)
    back = hue_shift(hue_shift(avatar, 180.0), 180.0)
    assert np.abs(visible(back) - visible(avatar)).max() <= 2


def test_hue_120_rotates_primaries():
    img = np.zeros((1, 3, 3), np.uint8)
    img[0] = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    out = hue_shift(img, 120.0)[0]
    assert np.array_equal(out, [(0, 255, 0), (0, 0, 255), (255, 0, 0)])


def test_gamma_brightens_midtones_and_fixes_endpoints():
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)
    out = gamma(ramp, 2.2)[0, :, 0].astype(int)
    assert out[0] == 0 and out[255] == 255
    assert (out[1:255] >= np.arange(1, 255)).all() and out[128] > 170
    assert np.all(np.diff(out) >= 0)  # monotonic


def test_warm_temperature_raises_red_blue_ratio(avatar):
    ratio = lambda im: (visible(im)[:, 0].mean() + 1) / (visible(im)[:, 2].mean() + 1)  # noqa: E731
    assert ratio(temperature(avatar, 0.6)) > ratio(avatar) * 1.1
    assert ratio(temperature(avatar, -0.6)) < ratio(avatar) / 1.1


def test_white_balance_removes_a_cast_from_a_grey_card():
    rng = np.random.default_rng(0)
    base = rng.integers(60, 200, size=(48, 48, 1))  # grey card with shading
    cast = np.array([1.25, 1.0, 0.7])  # orange illuminant
    img = np.clip(base * cast + rng.normal(0, 2, (48, 48, 3)), 0, 255).astype(np.uint8)
    for method in ("gray_world", "shades_of_gray", "white_patch"):
        out = white_balance(img, method=method).astype(float)
        means = out.reshape(-1, 3).mean(0)
        assert np.ptp(means) < 4, (method, means)
        assert abs(means.mean() - img.reshape(-1, 3).mean()) < 15  # brightness roughly kept
    # Half strength removes roughly half of the cast.
    half = white_balance(img, strength=0.5).reshape(-1, 3).mean(0)
    assert 8 < half[0] - half[2] < (img[..., 0].mean() - img[..., 2].mean()) - 8


def test_white_balance_statistics_ignore_transparent_pixels():
    img = np.zeros((32, 32, 4), np.uint8)
    img[8:24, 8:24] = (180, 150, 110, 255)
    img[:8, :, :3] = (0, 0, 255)  # hidden blue, would pull a naive estimate
    out = white_balance(img, method="gray_world")
    assert np.ptp(out[16, 16, :3].astype(int)) <= 2


def test_clahe_raises_local_contrast():
    yy, xx = np.mgrid[:64, :64]
    pattern = 110 + 10 * np.sin(xx / 3.0) * np.cos(yy / 5.0) + 8 * (xx > 32)
    img = np.repeat(np.clip(pattern, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    out = clahe(img, clip_limit=3.0, tiles=4)

    def local_std(im: np.ndarray) -> float:
        g = im[..., 0].astype(float)
        return float(
            np.mean([g[y : y + 8, x : x + 8].std() for y in range(0, 64, 8) for x in range(0, 64, 8)])
        )

    assert local_std(out) > 1.5 * local_std(img)
    assert np.ptp(out.astype(int), axis=2).max() <= 2  # grey stays grey (lightness only)
