"""The ``vae`` / ``cvae`` models: shapes at every size, conditioning, gradients, persistence.

Models are tiny (base 8, max 32 channels) so the file runs in a few seconds on one thread.
"""

from __future__ import annotations

import json

import pytest
import torch

from avatarforge.models import create_model, list_models, load_pretrained
from avatarforge.models.gan_api import VALID_RESOLUTIONS, GANGenerator
from avatarforge.models.vae import CVAE, VAE, vae_widths

TINY = {"base_channels": 8, "max_channels": 32}
LABEL_DIMS = [3, 5]
LABELS = torch.tensor([[0, 0], [3, 5], [1, 2], [2, 4]])  # includes "unknown" (== num_classes)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def build(conditional: bool, resolution: int = 32, channels: int = 3, **kw) -> VAE:
    name = "cvae" if conditional else "vae"
    args = {"label_dims": LABEL_DIMS if conditional else [], **TINY, **kw}
    return create_model(name, "vae", resolution=resolution, channels=channels, z_dim=16, **args)


def test_registered_under_role_vae():
    assert {"vae", "cvae"} <= set(list_models("vae"))
    assert "vae" not in list_models("generator")  # the GAN trainer never picks it up


@pytest.mark.parametrize("resolution", VALID_RESOLUTIONS)
@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("conditional", [False, True])
def test_shapes_at_every_size(resolution, channels, conditional):
    vae = build(conditional, resolution, channels)
    x = torch.rand(1, channels, resolution, resolution) * 2 - 1
    y = LABELS[1:2] if conditional else None
    mu, logvar = vae.encode(x, y)
    assert mu.shape == logvar.shape == (1, 16)
    out = vae.decode(mu, y)
    assert out.shape == (1, channels, resolution, resolution)
    assert out.abs().max() <= 1  # tanh
    # Stride-2 blocks: log2(resolution / 4) of them, on each side.
    n = len(vae_widths(resolution, 8, 32))
    assert 2**n * 4 == resolution
    assert sum(isinstance(m, torch.nn.Conv2d) for m in vae.encoder.trunk) == n
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in vae.decoder.net) == n


@pytest.mark.parametrize("conditional", [False, True])
def test_backward_gives_finite_gradients_everywhere(conditional):
    vae = build(conditional, channels=4)
    x = torch.rand(4, 4, 32, 32) * 2 - 1
    y = LABELS if conditional else None
    x_hat, mu, logvar = vae(x, y, generator=torch.Generator().manual_seed(0))
    loss = (x_hat - x).square().sum() + 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum()
    loss.backward()
    for name, p in vae.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in vae.decoder.embed.parameters()) if conditional else True


def test_reparameterize_uses_only_the_given_generator():
    mu, logvar = torch.zeros(3, 16), torch.zeros(3, 16)
    a = VAE.reparameterize(mu, logvar, torch.Generator().manual_seed(5))
    torch.manual_seed(123)  # the global RNG must not matter
    b = VAE.reparameterize(mu, logvar, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.std() > 0.5
    # z = mu + sigma * eps
    c = VAE.reparameterize(
        mu + 2, logvar + 2 * torch.log(torch.tensor(3.0)), torch.Generator().manual_seed(5)
    )
    assert torch.allclose(c, 2 + 3 * a, atol=1e-6)
    vae = build(False)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    r1, _, _ = vae(x, generator=torch.Generator().manual_seed(1))
    r2, _, _ = vae(x, generator=torch.Generator().manual_seed(1))
    r3, mu, _ = vae(x, sample=False)
    assert torch.equal(r1, r2) and not torch.equal(r1, r3)
    assert torch.equal(r3, vae.decode(mu))


def test_encoder_is_batch_independent():
    """GroupNorm: encoding an image alone gives what it gets inside a batch (no running stats)."""
    vae = build(False).train()
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    mu_batch, _ = vae.encode(x)
    mu_one, _ = vae.encode(x[2:3])
    assert torch.allclose(mu_batch[2:3], mu_one, atol=1e-6)
    assert not list(vae.buffers())  # nothing to synchronise across processes


def test_conditioning_changes_the_decoding_and_unknown_is_a_class():
    vae = build(True)
    z = torch.randn(1, 16).expand(4, -1)
    out = vae.decode(z, LABELS)
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[0], out[2])
    with pytest.raises(ValueError, match="pass labels"):
        vae.decode(z)
    with pytest.raises(ValueError, match="shape"):
        vae.decode(z, LABELS[:, :1])
    with pytest.raises(IndexError):
        vae.decode(z[:1], torch.tensor([[4, 0]]))  # 3 classes + unknown = indices 0..3


def test_cvae_requires_labels_and_vae_may_take_them():
    with pytest.raises(ValueError, match="label-conditional"):
        create_model("cvae", "vae", resolution=32, z_dim=8, **TINY)
    assert build(False, label_dims=[4]).conditional  # a vae told about labels conditions on them
    with pytest.raises(ValueError, match="resolution"):
        build(False, resolution=48)
    with pytest.raises(ValueError, match="norm"):
        build(False, norm="batch")
    with pytest.raises(ValueError, match="label_names"):
        build(True, label_names=["only_one"])


def test_decoder_follows_the_generator_interface():
    vae = build(True)
    G = vae.decoder
    assert isinstance(G, GANGenerator)
    assert (G.resolution, G.channels, G.z_dim, G.label_dims) == (32, 3, 16, LABEL_DIMS)
    z = G.sample_z(4, generator=torch.Generator().manual_seed(0))
    assert G(z, labels=LABELS).shape == (4, 3, 32, 32)
    assert torch.allclose(G(z, labels=LABELS, truncation_psi=0.5), G(z * 0.5, labels=LABELS))
    with pytest.raises(ValueError, match="codes"):
        G(z, labels=LABELS, codes=torch.zeros(4, 2))


@pytest.mark.parametrize("conditional", [False, True])
def test_save_load_round_trip_is_identical(tmp_path, conditional):
    names = (
        {"label_names": ["a", "b"], "label_values": [["x", "y", "z"], list("pqrst")]} if conditional else {}
    )
    vae = build(conditional, channels=4, **names)
    vae.save_pretrained(tmp_path, prefix="vae_")
    meta = json.loads((tmp_path / "vae_config.json").read_text())
    assert meta["model"] == ("cvae" if conditional else "vae") and meta["role"] == "vae"
    loaded = load_pretrained(tmp_path, prefix="vae_")
    assert type(loaded) is (CVAE if conditional else VAE)
    assert loaded.config == vae.config
    sd, sd2 = vae.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    x = torch.rand(4, 4, 32, 32) * 2 - 1
    y = LABELS if conditional else None
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for a, b in zip(vae(x, y, generator=g1), loaded(x, y, generator=g2)):
        assert torch.equal(a, b)
    if conditional:
        assert loaded.label_names == ["a", "b"] and loaded.label_values[1] == list("pqrst")


def test_channels_last_gives_the_same_result():
    vae = build(False)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    ref, mu, _ = vae(x, sample=False)
    vae.to(memory_format=torch.channels_last)
    out, mu2, _ = vae(x.contiguous(memory_format=torch.channels_last), sample=False)
    assert torch.allclose(ref, out, atol=1e-5) and torch.allclose(mu, mu2, atol=1e-5)
