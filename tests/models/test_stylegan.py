"""Tests for the StyleGAN2 generator / discriminator (small widths so the file runs in seconds)."""

from __future__ import annotations

import math

import pytest
import torch

from avatarforge.config import find_preset, list_presets, load_yaml
from avatarforge.models import load_pretrained
from avatarforge.models.gan_api import GANDiscriminator, GANGenerator
from avatarforge.models.registry import get_model_class
from avatarforge.models.stylegan import (
    MinibatchStdDev,
    StyleGANDiscriminator,
    StyleGANGenerator,
    modulated_conv2d,
)

# Tiny widths: 32 px -> channels 32 @ 4..16, 16 @ 32.
SMALL = {"channel_base": 512, "channel_max": 32}
SMALL_G = {**SMALL, "z_dim": 16, "w_dim": 16, "mapping_layers": 2}
LABEL_DIMS = [3, 2]


def make_g(**kw) -> StyleGANGenerator:
    torch.manual_seed(kw.pop("seed", 0))
    return StyleGANGenerator(**{"resolution": 32, **SMALL_G, **kw})


def make_d(**kw) -> StyleGANDiscriminator:
    torch.manual_seed(kw.pop("seed", 1))
    return StyleGANDiscriminator(**{"resolution": 32, **SMALL, **kw})


def rand_labels(n: int, label_dims: list[int], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(k + 1, (n,), generator=g) for k in label_dims], dim=1)


# ----------------------------------------------------------------------------- interface
def test_registry_and_protocols() -> None:
    assert get_model_class("stylegan", "generator") is StyleGANGenerator
    assert get_model_class("stylegan", "discriminator") is StyleGANDiscriminator
    G, D = make_g(), make_d()
    assert isinstance(G, GANGenerator) and isinstance(D, GANDiscriminator)
    assert G.code_dims == {"categorical": [], "continuous": 0}
    assert G.label_dims == [] and D.label_dims == []
    assert G.num_ws == 2 * int(math.log2(32)) - 2
    z = G.sample_z(3, generator=torch.Generator().manual_seed(0))
    assert z.shape == (3, 16)
    with pytest.raises(ValueError, match="codes"):
        G(z, codes=torch.zeros(3, 1))


@pytest.mark.parametrize("resolution", [16, 48, 512, 8])
def test_invalid_resolution_raises(resolution: int) -> None:
    with pytest.raises(ValueError):
        StyleGANGenerator(resolution=resolution, **SMALL_G)
    with pytest.raises(ValueError):
        StyleGANDiscriminator(resolution=resolution, **SMALL)


def test_invalid_channels_raises() -> None:
    with pytest.raises(ValueError):
        StyleGANGenerator(resolution=32, channels=1, **SMALL_G)


@pytest.mark.parametrize("resolution", [32, 64, 128, 256])
def test_generator_shapes_all_resolutions(resolution: int) -> None:
    G = StyleGANGenerator(resolution=resolution, channel_base=1024, channel_max=32, z_dim=8, w_dim=8).eval()
    with torch.no_grad():
        img = G(G.sample_z(1))
    assert img.shape == (1, 3, resolution, resolution)
    assert G.num_ws == 2 * int(math.log2(resolution)) - 2


# ----------------------------------------------------------------------------- training step
@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("conditional", [False, True])
def test_forward_backward_all_params(channels: int, conditional: bool) -> None:
    label_dims = LABEL_DIMS if conditional else []
    G = make_g(channels=channels, label_dims=label_dims).train()
    D = make_d(channels=channels, label_dims=label_dims).train()
    z = G.sample_z(4)
    labels = rand_labels(4, label_dims) if conditional else None
    img = G(z, labels)  # (B, C, H, W)
    assert img.shape == (4, channels, 32, 32)
    assert torch.isfinite(img).all()
    logits = D(img, labels)
    assert logits.shape == (4,)
    assert torch.isfinite(logits).all()
    (logits * torch.randn(4)).sum().backward()
    for name, model in (("G", G), ("D", D)):
        for pname, p in model.named_parameters():
            assert p.grad is not None, f"{name}.{pname} has no grad"
            assert torch.isfinite(p.grad).all(), f"{name}.{pname} grad not finite"
            assert p.grad.abs().sum() > 0, f"{name}.{pname} grad is zero"


def test_spectral_norm_discriminator() -> None:
    D = make_d(spectral_norm=True, label_dims=[3]).train()
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    out = D(x, torch.tensor([[0], [1], [2], [3]]))
    out.sum().backward()
    assert out.shape == (4,) and torch.isfinite(x.grad).all()
    assert D.config["spectral_norm"] is True


def test_r1_double_backward() -> None:
    # The trainer's R1 penalty needs create_graph through D.
    D = make_d().train()
    x = torch.randn(3, 3, 32, 32, requires_grad=True)
    (g,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    g.square().sum().backward()
    for name, p in D.named_parameters():
        if name == "out.bias":  # the output bias does not affect dD/dx: legitimately unused
            assert p.grad is None
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


# ----------------------------------------------------------------------------- persistence
def test_save_load_roundtrip(tmp_path) -> None:
    G = make_g(channels=4, label_dims=LABEL_DIMS).train()
    D = make_d(channels=4, label_dims=LABEL_DIMS).eval()
    G(G.sample_z(4), rand_labels(4, LABEL_DIMS))  # moves w_avg away from zero
    G.eval()
    assert G.mapping.w_avg.abs().sum() > 0
    G.save_pretrained(tmp_path, prefix="G_")
    D.save_pretrained(tmp_path, prefix="D_")
    G2 = load_pretrained(tmp_path, prefix="G_").eval()
    D2 = StyleGANDiscriminator.from_pretrained(tmp_path, prefix="D_").eval()
    assert isinstance(G2, StyleGANGenerator)
    torch.testing.assert_close(G2.mapping.w_avg, G.mapping.w_avg, rtol=0, atol=0)
    z, lab = G.sample_z(3, generator=torch.Generator().manual_seed(5)), rand_labels(3, LABEL_DIMS)
    with torch.no_grad():
        a = G(z, lab, truncation_psi=0.7, noise_mode="const")
        b = G2(z, lab, truncation_psi=0.7, noise_mode="const")
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(D(a, lab), D2(a, lab), rtol=0, atol=0)


# ----------------------------------------------------------------------------- truncation
def _trained_w_avg(G: StyleGANGenerator) -> None:
    G.train()
    with torch.no_grad():
        for _ in range(3):
            G.mapping(G.sample_z(8))
    G.eval()


def test_truncation() -> None:
    G = make_g()
    _trained_w_avg(G)
    z = G.sample_z(3)
    with torch.no_grad():
        avg = G(z, truncation_psi=0.0)
        torch.testing.assert_close(avg[0], avg[1])
        torch.testing.assert_close(avg[0], avg[2])
        ws_avg = G.mapping.w_avg[None, None].expand(1, G.num_ws, -1)
        torch.testing.assert_close(avg[:1], G.synthesis(ws_avg, noise_mode="const"))
        # psi = 1 is the identity; intermediate psi differs from both.
        torch.testing.assert_close(G(z, truncation_psi=1.0), G(z), rtol=0, atol=0)
        assert not torch.allclose(G(z, truncation_psi=0.5), G(z))
        # truncation_cutoff=k truncates only the first k ws.
        ws = G.mapping(z, truncation_psi=0.0, truncation_cutoff=3)
        torch.testing.assert_close(ws[:, :3], ws_avg[:, :3].expand(3, -1, -1))
        torch.testing.assert_close(ws[:, 3:], G.mapping(z)[:, 3:])


# ----------------------------------------------------------------------------- style mixing
def test_mix_swaps_coarse_and_fine() -> None:
    G = make_g(label_dims=[3]).eval()
    a, b = G.sample_z(2), G.sample_z(2)
    lab = torch.tensor([[0], [2]])
    with torch.no_grad():
        wa, wb = G.mapping(a, lab), G.mapping(b, lab)
        for k in (0, 1, 3, G.num_ws):
            ws = torch.cat([wa[:, :k], wb[:, k:]], dim=1)
            torch.testing.assert_close(G.mix(a, b, k, labels=lab), G.synthesis(ws, noise_mode="const"))
        torch.testing.assert_close(G.mix(a, b, 0, labels=lab), G(b, lab))
        torch.testing.assert_close(G.mix(a, b, G.num_ws, labels=lab), G(a, lab))
    with pytest.raises(ValueError):
        G.mix(a, b, G.num_ws + 1)


def _captured_ws(G: StyleGANGenerator, z: torch.Tensor, **kw) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    handle = G.synthesis.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    try:
        G(z, **kw)
    finally:
        handle.remove()
    return seen[0]


def test_mixing_regularisation_in_training() -> None:
    G = make_g(mixing_prob=1.0).train()
    z = G.sample_z(6)
    with torch.no_grad():
        ws = _captured_ws(G, z)
        assert not torch.allclose(ws[:, 0], ws[:, -1])
        # Every sample is mixed: the first layer keeps z's w, the last one comes from another z.
        assert ((ws[:, 0] - ws[:, -1]).abs().amax(dim=1) > 0).all()
        ws_a = _captured_ws(G, z, mixing_generator=torch.Generator().manual_seed(3))
        ws_b = _captured_ws(G, z, mixing_generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(ws_a, ws_b, rtol=0, atol=0)
        G.eval()  # no mixing in eval mode
        ws = _captured_ws(G, z)
        torch.testing.assert_close(ws[:, 0], ws[:, -1], rtol=0, atol=0)
        G2 = make_g(mixing_prob=0.0).train()
        ws = _captured_ws(G2, z)
        torch.testing.assert_close(ws[:, 0], ws[:, -1], rtol=0, atol=0)


def test_w_avg_tracks_mean_w() -> None:
    G = make_g(mixing_prob=1.0).train()
    z = G.sample_z(8)
    old = G.mapping.w_avg.clone()
    with torch.no_grad():
        mean_w = G.mapping(z, update_w_avg=False)[:, 0].mean(dim=0)
        G(z)  # the mixing pass must not update w_avg a second time
    torch.testing.assert_close(G.mapping.w_avg, 0.995 * old + 0.005 * mean_w)
    d0 = (old - mean_w).norm()
    assert (G.mapping.w_avg - mean_w).norm() < d0
    G.eval()
    before = G.mapping.w_avg.clone()
    with torch.no_grad():
        G(z)
    torch.testing.assert_close(G.mapping.w_avg, before, rtol=0, atol=0)


# ----------------------------------------------------------------------------- discriminator
@pytest.mark.parametrize("batch", [1, 3, 4, 5])
def test_minibatch_stddev_batch_sizes(batch: int) -> None:
    D = make_d(label_dims=[2]).eval()
    out = D(torch.randn(batch, 3, 32, 32), torch.zeros(batch, 1, dtype=torch.long))
    assert out.shape == (batch,) and torch.isfinite(out).all()


def test_minibatch_stddev_matches_stylegan2_grouping() -> None:
    x = torch.randn(8, 4, 3, 3)
    y = MinibatchStdDev(group_size=4, num_channels=2)(x)
    # StyleGAN2-ADA reference (batch divisible by the group size).
    g, f = 4, 2
    r = x.reshape(g, -1, f, 4 // f, 3, 3)
    r = (r - r.mean(dim=0)).square().mean(dim=0)
    r = (r + 1e-8).sqrt().mean(dim=(2, 3, 4)).reshape(-1, f, 1, 1).repeat(g, 1, 3, 3)
    torch.testing.assert_close(y, torch.cat([x, r], dim=1))
    # Non-divisible batch: balanced groups (5 -> sizes 3 and 2), shared stat within a group.
    s = MinibatchStdDev(group_size=4)(torch.randn(5, 4, 3, 3))[:, -1, 0, 0]
    assert torch.allclose(s[0], s[2]) and torch.allclose(s[0], s[4]) and torch.allclose(s[1], s[3])


# ----------------------------------------------------------------------------- conditioning / RNG
def test_labels_change_output() -> None:
    G = make_g(label_dims=[3]).eval()
    D = make_d(label_dims=[3]).eval()
    z = G.sample_z(1).expand(3, -1)
    with torch.no_grad():
        img = G(z, torch.tensor([[0], [1], [3]]))  # 3 = "unknown"
        assert not torch.allclose(img[0], img[1]) and not torch.allclose(img[0], img[2])
        torch.testing.assert_close(G(z[:1]), img[2:])  # labels=None == unknown
        logits = D(img[:1].expand(3, -1, -1, -1), torch.tensor([[0], [1], [2]]))
        assert not torch.allclose(logits[0], logits[1])
    # Unconditional models ignore labels (gan_api contract).
    G0 = make_g().eval()
    with torch.no_grad():
        torch.testing.assert_close(G0(z, torch.zeros(3, 1, dtype=torch.long)), G0(z))


def test_deterministic_with_seed() -> None:
    G = make_g().train()
    z = G.sample_z(2)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        with torch.no_grad():
            outs.append(G(z))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    with torch.no_grad():
        a = G(
            z,
            noise_generator=torch.Generator().manual_seed(1),
            mixing_generator=torch.Generator().manual_seed(2),
        )
        b = G(
            z,
            noise_generator=torch.Generator().manual_seed(1),
            mixing_generator=torch.Generator().manual_seed(2),
        )
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # Fresh models from the same seed are identical.
    torch.testing.assert_close(make_g().eval()(z), make_g().eval()(z), rtol=0, atol=0)


# ----------------------------------------------------------------------------- modconv variants
def test_modconv_impls_agree() -> None:
    x, w, s = torch.randn(3, 5, 6, 6), torch.randn(7, 5, 3, 3), torch.randn(3, 5)
    noise = torch.randn(3, 1, 12, 12)
    ref = modulated_conv2d(x, w, s, up=True, noise=noise, impl="grouped")
    torch.testing.assert_close(modulated_conv2d(x, w, s, up=True, noise=noise, impl="scaled"), ref)
    torch.testing.assert_close(modulated_conv2d(x, w, s, up=True, noise=noise, channels_last=True), ref)
    # Demodulation gives unit-norm effective weights: reference formula from StyleGAN2 Eq. 3.
    wm = w[None] * s[:, None, :, None, None]
    wd = wm * (wm.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8).rsqrt()
    manual = torch.stack([torch.nn.functional.conv2d(x[i : i + 1], wd[i], padding=1)[0] for i in range(3)])
    torch.testing.assert_close(modulated_conv2d(x, w, s), manual, rtol=1e-4, atol=1e-5)
    G1 = make_g(modconv="grouped", channels_last=False).eval()
    G2 = make_g(modconv="scaled").eval()
    G2.load_state_dict(G1.state_dict())
    z = G1.sample_z(2)
    with torch.no_grad():
        torch.testing.assert_close(G1(z), G2(z), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- extras
def test_style_affine_weights() -> None:
    G = make_g()
    mats = G.style_affine_weights()
    assert len(mats) == G.num_ws
    assert mats[0].shape == (32, 16)  # 4x4 conv1 modulation: (in_channels, w_dim)
    assert mats[1].shape == (64, 16)  # 4x4 toRGB + 8x8 conv0
    assert mats[-1].shape == (16, 16)  # last toRGB only
    assert not mats[0].requires_grad


@pytest.mark.parametrize("resolution", list_presets()["stylegan"])
def test_presets_follow_the_stylegan2_ada_recipe(resolution: int) -> None:
    """The training recipe lives in the presets (configs/stylegan-RES.yaml), not in the model:
    Adam lr 0.0025, betas (0, 0.99); lazy R1 every 16 D steps with gamma = 0.0002 * res^2 /
    batch (ADA's heuristic); generator EMA half-life 10 * batch / 32 kimg, ramp-up 0.05."""
    path, exact = find_preset("stylegan", resolution)
    assert exact and path is not None
    cfg = load_yaml(path)
    batch = cfg["batch_size"]
    assert cfg["optim"]["g_lr"] == cfg["optim"]["d_lr"] == 0.0025
    assert list(cfg["optim"]["betas"]) == [0.0, 0.99] and cfg["optim"]["eps"] == 1e-8
    assert cfg["loss"]["r1_interval"] == 16
    assert cfg["loss"]["r1_gamma"] == pytest.approx(0.0002 * resolution**2 / batch)
    assert cfg["ema"]["kimg"] == pytest.approx(10.0 * batch / 32) and cfg["ema"]["rampup"] == 0.05


def test_output_is_contiguous() -> None:
    G = make_g().eval()
    with torch.no_grad():
        assert G(G.sample_z(2)).is_contiguous()


def test_training_forward_under_bf16_autocast_keeps_w_avg_fp32():
    """GPU training defaults to bf16 autocast; the w_avg running mean must stay fp32."""
    from avatarforge.models import create_model

    G = create_model("stylegan", "generator", resolution=32)
    G.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = G(G.sample_z(4, generator=torch.Generator().manual_seed(0)))
    y.float().mean().backward()
    w_avg = G.mapping.w_avg
    assert w_avg.dtype == torch.float32 and torch.isfinite(w_avg).all() and w_avg.abs().sum() > 0
    assert torch.isfinite(y.float()).all()


@pytest.mark.parametrize("noise_max_res", [0, 8])
def test_noise_max_res_limits_noise_inputs(noise_max_res: int, tmp_path) -> None:
    G = make_g(noise_max_res=noise_max_res, mixing_prob=0.0)
    noisy = {
        b.resolution
        for b in G.synthesis.blocks
        for layer in (b.conv0, b.conv1)
        if layer is not None and hasattr(layer, "noise_strength")
    }
    assert noisy == {r for r in (4, 8) if r <= noise_max_res}
    # Give every remaining noise input a strength, so noise would show if it were drawn.
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(1.0)
    z = G.sample_z(2, generator=torch.Generator().manual_seed(0))
    G.train()
    a = G(z, noise_generator=torch.Generator().manual_seed(1))
    b = G(z, noise_generator=torch.Generator().manual_seed(2))
    if noise_max_res == 0:
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # no noise anywhere: the mode is moot
    else:
        assert (a - b).abs().max() > 1e-3  # the coarse blocks still draw noise
    with pytest.raises(ValueError, match="noise_mode"):
        G(z, noise_mode="bogus")
    G.eval()
    G.save_pretrained(tmp_path)
    G2 = load_pretrained(tmp_path).eval()  # eval: constant noise, no style mixing
    assert G2.synthesis.blocks[-1].conv1.use_noise is False
    torch.testing.assert_close(G2(z), G(z), rtol=0, atol=0)


def test_noise_max_res_rejects_bad_values() -> None:
    for bad in (-1, True):
        with pytest.raises(ValueError, match="noise_max_res"):
            make_g(noise_max_res=bad)
