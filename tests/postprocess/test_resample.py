"""Upscaling (Lanczos in premultiplied alpha + halo-free sharpening) and the learned SR model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatarforge.postprocess import SRNet, apply_chain, load_sr_model, train_sr, upscale
from tests.postprocess.conftest import square_on_hidden


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_upscale_multiplies_the_size(factor, avatar, avatar_rgb):
    assert upscale(avatar, factor).shape == (64 * factor, 64 * factor, 4)
    assert upscale(avatar_rgb, factor).shape == (64 * factor, 64 * factor, 3)


@pytest.mark.parametrize("sharpen", [0.0, 0.5, 2.0])
def test_upscale_does_not_bleed_hidden_colour(sharpen):
    """A red opaque square on transparent pixels whose hidden RGB is green: no green (and
    no darkening) may appear at the upscaled edges."""
    img = square_on_hidden(color=(255, 0, 0), hidden=(0, 255, 0))
    out = upscale(img, 4, sharpen=sharpen)
    vis = out[..., 3] > 0
    assert vis.sum() > (16 * 4) ** 2  # the soft edge grew outward a little
    assert out[vis, 1].max() == 0 and out[vis, 2].max() == 0
    assert out[vis, 0].min() >= 254  # colour stays red up to the faintest edge pixel
    soft = (out[..., 3] > 0) & (out[..., 3] < 255)
    assert soft.any(), "alpha is resampled, so the edge is antialiased"


def test_upscale_preserves_flat_colour_and_alpha_values():
    img = np.zeros((16, 16, 4), np.uint8)
    img[...] = (30, 120, 200, 128)
    out = upscale(img, 2)
    assert np.abs(out.astype(int) - (30, 120, 200, 128)).max() <= 1


def test_halo_free_sharpening_does_not_overshoot(avatar_rgb):
    """Clamped sharpening steepens edges but stays inside the local value range."""
    soft, sharp = upscale(avatar_rgb, 2, sharpen=0.0), upscale(avatar_rgb, 2, sharpen=2.0)
    g = lambda im: im.astype(float).mean(axis=2)  # noqa: E731
    grad = lambda im: np.abs(np.diff(g(im), axis=1)).mean()  # noqa: E731
    assert grad(sharp) > grad(soft)
    from scipy import ndimage

    lo = ndimage.minimum_filter(soft.astype(int), size=(3, 3, 1))
    hi = ndimage.maximum_filter(soft.astype(int), size=(3, 3, 1))
    assert (sharp >= lo - 1).all() and (sharp <= hi + 1).all()


@pytest.fixture
def one_thread():
    # Tiny convolutions are far slower with several threads on a busy machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_sr_training_reduces_loss_and_round_trips(tmp_path, one_thread, avatar):
    r = train_sr(
        tmp_path / "sr",
        steps=150,
        batch_size=8,
        patch=12,
        n_images=6,
        image_size=48,
        features=8,
        lr=3e-3,
        seed=3,
    )
    assert len(r.losses) == 150
    assert r.val_after < r.val_before
    assert np.mean(r.losses[-30:]) < np.mean(r.losses[:30])
    model = load_sr_model(tmp_path / "sr")
    assert isinstance(model, SRNet) and model.scale == 2
    for a, b in zip(model.state_dict().values(), r.model.state_dict().values()):
        assert torch.equal(a, b)
    small = avatar[::2, ::2].copy()
    by_path = upscale(small, 2, model=tmp_path / "sr")
    assert np.array_equal(by_path, upscale(small, 2, model=r.model))
    assert by_path.shape == (64, 64, 4)
    # A x2 model makes x4 by running twice; x3 is impossible.
    assert upscale(small, 4, model=model, sharpen=0.0).shape == (128, 128, 4)
    with pytest.raises(ValueError, match="x2"):
        upscale(small, 3, model=model)
    # The chain can name the model folder.
    out = apply_chain(small, f"upscale(factor=2, sharpen=0, model='{tmp_path / 'sr'}')")
    assert np.array_equal(out, upscale(small, 2, sharpen=0.0, model=model))


def test_sr_model_ignores_hidden_colour(one_thread):
    torch.manual_seed(0)
    model = SRNet(scale=2, features=8).eval()
    a = upscale(square_on_hidden(hidden=(0, 255, 0)), 2, model=model, sharpen=0.0)
    b = upscale(square_on_hidden(hidden=(0, 0, 0)), 2, model=model, sharpen=0.0)
    assert np.array_equal(a, b)
    assert a[:4, :4, 3].max() == 0  # far from the square stays transparent


def test_load_sr_model_explains_a_wrong_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_sr"):
        load_sr_model(tmp_path)


def test_train_sr_validates_sizes():
    with pytest.raises(ValueError, match="multiple of scale"):
        train_sr(None, scale=3, image_size=64, steps=1)
