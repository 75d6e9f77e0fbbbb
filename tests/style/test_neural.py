"""Neural style transfer with the random-weights CNN: Gatys, AdaIN (decoder and fallback)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatarforge.data.procedural import render_avatar
from avatarforge.style.features import RandomMultiScaleCNN
from avatarforge.style.neural import (
    AdaINDecoder,
    adain,
    adain_transfer,
    fill_transparent,
    gatys_transfer,
    gram_matrix,
    load_adain_decoder,
    masked_mean_std,
    prepare_image,
    train_adain_decoder,
)
from tests.style.conftest import lab_distance

# Outcome depends on trained weights / float rounding: rerun by `make test-numerics-fp32`.
pytestmark = pytest.mark.numerics


@pytest.fixture(scope="module")
def net() -> RandomMultiScaleCNN:
    return RandomMultiScaleCNN(seed=0)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_gatys_moves_colours_toward_the_style_and_keeps_alpha(net, avatar64, texture64, optimizer):
    losses: list[dict[str, float]] = []
    out = gatys_transfer(
        avatar64,
        texture64,
        net=net,
        steps=12,
        size=64,
        optimizer=optimizer,
        callback=lambda i, v: losses.append(v),
    )
    assert out.shape == avatar64.shape and out.dtype == np.uint8
    assert np.array_equal(out[..., 3], avatar64[..., 3])
    assert len(losses) >= 12 if optimizer == "lbfgs" else len(losses) == 12
    assert min(v["loss"] for v in losses) < 0.5 * losses[0]["loss"]
    before, after = lab_distance(avatar64, texture64), lab_distance(out, texture64)
    assert after < 0.8 * before, (before, after)


def test_adain_fallback_moves_colours_and_keeps_alpha(net, avatar64, texture64):
    out = adain_transfer(avatar64, texture64, net=net, steps=12, size=64)
    assert np.array_equal(out[..., 3], avatar64[..., 3])
    assert lab_distance(out, texture64) < 0.8 * lab_distance(avatar64, texture64)


def test_working_size_differs_from_the_content_size(net, texture64):
    """--size below the content size: processed small, returned at the content's size and alpha."""
    content = render_avatar(5, 96)[:, 8:88]  # (96, 80, 4), not square
    out = gatys_transfer(content, texture64, net=net, steps=4, size=48)
    assert out.shape == content.shape
    assert np.array_equal(out[..., 3], content[..., 3])
    hidden = content[..., 3] == 0
    assert np.array_equal(out[hidden], content[hidden])
    # Strength 0 at the native size gives the content back on opaque pixels.
    same = gatys_transfer(content, texture64, net=net, steps=2, size=None, strength=0.0)
    opaque = content[..., 3] == 255
    assert np.array_equal(same[opaque], content[opaque])


def test_fill_transparent_keeps_opaque_and_extrapolates():
    rgb = torch.zeros(1, 3, 8, 8)
    rgb[:, 0] = 1.0  # pure red where visible
    alpha = torch.zeros(1, 1, 8, 8)
    alpha[..., :, :4] = 1.0
    alpha[..., :, 4] = 0.5
    filled = fill_transparent(rgb * alpha, alpha)
    assert torch.allclose(filled[..., :4], rgb[..., :4])
    # Transparent and half-transparent pixels become red too, not black.
    assert torch.allclose(filled[:, 0, :, 4:], torch.ones(8, 4), atol=1e-5)
    assert filled[:, 1:].abs().max() < 1e-5
    x, a = prepare_image(render_avatar(1, 32), size=32)
    assert x.shape == (1, 3, 32, 32) and a.shape == (1, 1, 32, 32) and x.min() >= -1 and x.max() <= 1


def test_masked_statistics():
    g = torch.Generator().manual_seed(0)
    f = torch.rand(2, 4, 6, 6, generator=g)
    ones = torch.ones(2, 1, 6, 6)
    assert torch.allclose(gram_matrix(f, ones), gram_matrix(f), atol=1e-6)
    # A mask that hides the right half == statistics of the left half alone.
    mask = torch.zeros(2, 1, 6, 6)
    mask[..., :3] = 1
    mu, sd = masked_mean_std(f, mask)
    mu_l, sd_l = masked_mean_std(f[..., :3])
    assert torch.allclose(mu, mu_l, atol=1e-6) and torch.allclose(sd, sd_l, atol=1e-6)
    assert torch.allclose(gram_matrix(f, mask), gram_matrix(f[..., :3]), atol=1e-6)
    s = torch.rand(2, 4, 3, 5, generator=g) * 3 + 1
    t = adain(f, s)
    mu_t, sd_t = masked_mean_std(t)
    mu_s, sd_s = masked_mean_std(s)
    assert torch.allclose(mu_t, mu_s, atol=1e-5) and torch.allclose(sd_t, sd_s, atol=1e-3)


def test_adain_decoder_trains_saves_loads_and_applies(net, tmp_path, avatar64, texture64):
    content = np.stack([render_avatar(i, 32, background=True) for i in range(6)])
    style = np.stack([np.roll(np.tile(texture64[:32, :32], (1, 1, 1)), i * 5, axis=1) for i in range(4)])
    losses: list[float] = []
    decoder = train_adain_decoder(
        content,
        style,
        net=net,
        steps=30,
        batch_size=2,
        size=32,
        lr=2e-3,
        callback=lambda i, v: losses.append(v["loss"]),
    )
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert decoder.encoder == "random" and decoder.encoder_fingerprint == net.fingerprint()
    decoder.save_pretrained(tmp_path / "dec")
    loaded = load_adain_decoder(tmp_path / "dec")
    assert isinstance(loaded, AdaINDecoder)
    for k, v in decoder.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    # No --vgg / net given: the decoder rebuilds the random CNN it was trained with.
    out = adain_transfer(avatar64, texture64, decoder=loaded, size=64)
    assert out.shape == avatar64.shape and np.array_equal(out[..., 3], avatar64[..., 3])
    with pytest.raises(ValueError, match="different encoder"):
        adain_transfer(avatar64, texture64, decoder=loaded, net=RandomMultiScaleCNN(seed=1), size=64)
    with pytest.raises(FileNotFoundError, match="train-decoder"):
        load_adain_decoder(tmp_path / "nope")


def test_argument_errors(net, avatar64, texture64):
    with pytest.raises(ValueError, match="strength"):
        gatys_transfer(avatar64, texture64, net=net, steps=1, strength=2.0)
    with pytest.raises(ValueError, match="optimizer"):
        gatys_transfer(avatar64, texture64, net=net, steps=1, optimizer="sgd")
    clear = np.zeros((16, 16, 4), np.uint8)
    with pytest.raises(ValueError, match="fully transparent"):
        adain_transfer(avatar64, clear, net=net, steps=1, size=32)
