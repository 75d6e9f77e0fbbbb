"""Sharpening, denoising, cel shading."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from avatarforge.postprocess import cel_shade, denoise, guided_filter, unsharp_mask
from tests.postprocess.conftest import square_on_hidden


def high_freq_energy(img: np.ndarray) -> float:
    g = img[..., :3].astype(float).mean(axis=2)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float((lap**2).mean())


def test_unsharp_mask_adds_high_frequencies(avatar_rgb):
    e0 = high_freq_energy(avatar_rgb)
    e1 = high_freq_energy(unsharp_mask(avatar_rgb, amount=0.5))
    e2 = high_freq_energy(unsharp_mask(avatar_rgb, amount=1.5))
    assert e0 < e1 < e2 and e1 > 1.3 * e0


def test_unsharp_threshold_leaves_small_differences():
    rng = np.random.default_rng(1)
    img = np.clip(128 + rng.normal(0, 2, (32, 32, 3)), 0, 255).astype(np.uint8)
    assert np.array_equal(unsharp_mask(img, amount=2.0, threshold=20), img)


def test_sharpen_at_an_alpha_edge_has_no_dark_halo():
    """A red square on hidden black: alpha-weighted blur sees only red, so the visible edge
    pixels stay pure red (a naive blur would darken them and sharpen would ring)."""
    img = square_on_hidden(color=(200, 40, 40), hidden=(0, 0, 0))
    out = unsharp_mask(img, amount=2.0, radius=2.0)
    vis = img[..., 3] > 0
    assert np.array_equal(out[vis, :3], img[vis, :3])


@pytest.mark.parametrize("method", ["bilateral", "edge_preserving", "guided"])
def test_denoise_reduces_noise_and_keeps_a_step_edge(method):
    rng = np.random.default_rng(0)
    clean = np.full((48, 48, 3), 60, np.float64)
    clean[:, 24:] = 190
    noisy = np.clip(clean + rng.normal(0, 12, clean.shape), 0, 255).astype(np.uint8)
    out = denoise(noisy, strength=0.6, method=method).astype(float)
    flat_l, flat_r = np.s_[4:44, 3:18], np.s_[4:44, 30:45]
    assert out[flat_l].std() < 0.6 * noisy[flat_l].std()
    assert out[flat_r].std() < 0.6 * noisy[flat_r].std()
    # The edge stays a step: columns two pixels either side keep their levels.
    left, right = out[:, 21].mean(), out[:, 26].mean()
    assert abs(left - 60) < 12 and abs(right - 190) < 12
    assert out[:, 23].mean() < 100 and out[:, 24].mean() > 150


def test_guided_filter_smooths_flat_and_keeps_edges():
    rng = np.random.default_rng(0)
    g = np.zeros((32, 32), np.float32)
    g[:, 16:] = 1.0
    noisy = (g + rng.normal(0, 0.05, g.shape)).astype(np.float32)
    out = guided_filter(noisy, noisy, radius=3, eps=0.01)
    assert out[:, 2:12].std() < 0.5 * noisy[:, 2:12].std()
    assert out[:, 14].mean() < 0.2 and out[:, 17].mean() > 0.8


@pytest.mark.parametrize("method", ["palette", "posterize"])
def test_cel_shading_limits_colours_and_draws_outlines(avatar, method):
    levels = 3
    out = cel_shade(avatar, levels=levels, outline=1, outline_color=(255, 0, 255), method=method)
    vis = avatar[..., 3] > 0
    colours = {tuple(c) for c in out[vis, :3]}
    assert len(colours) <= levels**3 + 1
    if method == "posterize":
        tones = {0, 128, 255}  # the evenly spaced tones for levels=3
        assert all(set(c) <= tones for c in colours - {(255, 0, 255)})
    else:
        assert len(colours) > 8  # the palette is used, not collapsed
    outline = (out[..., :3] == (255, 0, 255)).all(axis=2) & vis
    # Outline pixels cover the whole silhouette (visible pixels next to transparency).
    solid = avatar[..., 3] >= 128
    border = solid & ~ndimage.binary_erosion(solid, np.ones((3, 3)), border_value=1)
    assert border.sum() > 50 and outline[border].all()
    # ...and none when outline=0.
    plain = cel_shade(avatar, levels=levels, outline=0, method=method)
    assert not ((plain[..., :3] == (255, 0, 255)).all(axis=2) & vis).any()


def test_cel_palette_keeps_hues():
    """Palette colours come from the image: a dark skin tone does not turn olive or grey."""
    img = np.zeros((32, 32, 3), np.uint8)
    img[:, :16] = (120, 80, 60)
    img[:, 16:] = (60, 140, 90)
    out = cel_shade(img, levels=2, outline=0)
    assert np.abs(out[5, 5].astype(int) - (120, 80, 60)).max() <= 3
    assert np.abs(out[5, 25].astype(int) - (60, 140, 90)).max() <= 3


def test_cel_outline_follows_interior_edges():
    img = np.zeros((40, 40, 3), np.uint8)
    img[:, :20] = (230, 200, 180)
    img[:, 20:] = (40, 60, 160)
    out = cel_shade(img, levels=4, outline=2, smooth=False)
    black = (out == 0).all(axis=2)
    assert black[:, 18:22].any(axis=1).all()  # a line down the colour boundary
    assert not black[:, :15].any() and not black[:, 25:].any()


def test_cel_shade_palette_accepts_its_whole_levels_range(avatar):
    """levels 7-16 ask for more than a Pillow palette's 256 colours (was a 'bad number of
    colors' error for 7 and up); they get 256."""
    from avatarforge.postprocess import get_op

    spec = get_op("cel_shade")
    hi = int(next(p for p in spec.params if p.name == "levels").hi)
    for levels in (6, 7, hi):
        out = spec.func(avatar, levels=levels, method="palette")
        assert out.shape == avatar.shape
        assert len(np.unique(out[..., :3].reshape(-1, 3), axis=0)) <= 256
