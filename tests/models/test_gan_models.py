"""GAN families dcgan / cgan / infogan: the shared interface, shapes, gradients, persistence.

Models are tiny (base 8, max 32 channels, 32 px) so the whole file runs in seconds on CPU.
"""

from __future__ import annotations

import math

import pytest
import torch

from avatarforge.models import create_model, list_models, load_pretrained
from avatarforge.models.gan_api import (
    VALID_RESOLUTIONS,
    GANDiscriminator,
    GANGenerator,
    sample_codes,
    sample_inputs,
    sample_z,
)
from avatarforge.models.infogan import mutual_information_loss
from avatarforge.models.layers import LabelEmbedding, MinibatchStdDev, ProjectionHead

# Outcome depends on trained weights / float rounding: rerun by `make test-numerics-fp32`.
pytestmark = pytest.mark.numerics

FAMILIES = ["dcgan", "cgan", "infogan"]
TINY = {"base_channels": 8, "max_channels": 32}
LABEL_DIMS = [3, 5]
CODE_DIMS = {"categorical": [4], "continuous": 2}
# Each row mixes known classes with the "unknown" index (== num_classes).
LABELS = torch.tensor([[0, 0], [3, 5], [1, 2], [2, 4]])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The models are tiny: intra-op threads only add OpenMP sync overhead, which explodes
    # on a busy shared box. Restored afterwards so other test modules are unaffected.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def build(name: str, conditional: bool, channels: int = 3, spectral_norm: bool = False, resolution: int = 32):
    """Tiny generator + discriminator of a family, built through the registry like the trainer does."""
    label_dims = LABEL_DIMS if conditional else []
    gkw = {"code_dims": CODE_DIMS} if name == "infogan" else {}
    G = create_model(
        name,
        "generator",
        resolution=resolution,
        channels=channels,
        z_dim=16,
        label_dims=label_dims,
        **TINY,
        **gkw,
    )
    dkw = {"code_dims": G.code_dims} if name == "infogan" else {}
    D = create_model(
        name,
        "discriminator",
        resolution=resolution,
        channels=channels,
        label_dims=label_dims,
        spectral_norm=spectral_norm,
        **TINY,
        **dkw,
    )
    return G, D


def inputs(G, n: int = 4, seed: int = 0) -> dict:
    kw = sample_inputs(G, n, generator=torch.Generator().manual_seed(seed))
    if G.label_dims:
        kw["labels"] = LABELS[:n]
    return kw


# cgan is always conditional. RGBA cases also switch spectral norm on so both D variants are
# covered without doubling the matrix.
CASES = [
    pytest.param(
        name, cond, ch, id=f"{name}-{'cond' if cond else 'uncond'}-{'rgba-sn' if ch == 4 else 'rgb'}"
    )
    for name in FAMILIES
    for cond in ((True,) if name == "cgan" else (False, True))
    for ch in (3, 4)
]


def test_families_registered_with_both_roles():
    for name in FAMILIES:
        assert name in list_models("generator")
        assert name in list_models("discriminator")


@pytest.mark.parametrize(("name", "conditional", "channels"), CASES)
def test_forward_backward_all_params_get_finite_nonzero_grads(name, conditional, channels):
    G, D = build(name, conditional, channels, spectral_norm=channels == 4)
    assert isinstance(G, GANGenerator) and isinstance(D, GANDiscriminator)
    assert (G.resolution, G.channels, G.z_dim, G.label_dims) == (
        32,
        channels,
        16,
        LABEL_DIMS if conditional else [],
    )
    kw = inputs(G)
    x = G(**kw)  # (B, C, H, W)
    assert x.shape == (4, channels, 32, 32)
    assert torch.isfinite(x).all() and x.abs().max() <= 1.0
    if name == "infogan":
        logits, cat_logits, mean, logstd = D(x, kw.get("labels"), return_q=True)
        assert [t.shape for t in cat_logits] == [(4, 4)] and mean.shape == logstd.shape == (4, 2)
        loss = logits.mean() + mutual_information_loss((cat_logits, mean, logstd), kw["codes"], G.code_dims)
    else:
        logits = D(x, kw.get("labels"))
        loss = logits.mean()
    assert logits.shape == (4,) and torch.isfinite(logits).all()
    loss.backward()
    for model in (G, D):
        for pname, p in model.named_parameters():
            assert p.grad is not None, f"{type(model).__name__}.{pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{type(model).__name__}.{pname} has non-finite grad"
            assert p.grad.abs().sum() > 0, f"{type(model).__name__}.{pname} has an all-zero grad"


@pytest.mark.parametrize(("name", "conditional", "channels"), CASES)
def test_save_load_round_trip_identical_in_eval(name, conditional, channels, tmp_path):
    G, D = build(name, conditional, channels, spectral_norm=channels == 4)
    kw = inputs(G)
    with torch.no_grad():
        D(G(**kw), kw.get("labels"))  # a train-mode pass moves BN stats / SN vectors off their init
    G.eval()
    D.eval()
    G.save_pretrained(tmp_path, prefix="G_")
    D.save_pretrained(tmp_path, prefix="D_")
    G2, D2 = load_pretrained(tmp_path, prefix="G_").eval(), load_pretrained(tmp_path, prefix="D_").eval()
    assert type(G2) is type(G) and type(D2) is type(D) and G2.config == G.config
    with torch.no_grad():
        x = G(**kw)
        assert torch.equal(x, G2(**kw))
        assert torch.equal(D(x, kw.get("labels")), D2(x, kw.get("labels")))


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("resolution", VALID_RESOLUTIONS)
def test_output_shape_exact_for_every_resolution(name, resolution):
    # Guards the classic bug of a fixed-depth listing (7x7 seed + two stride-2 layers = 28 px,
    # not the asserted 128): depth must follow the resolution.
    G, D = build(name, conditional=name == "cgan", resolution=resolution)
    G.eval()
    D.eval()
    kw = inputs(G, n=1)
    with torch.no_grad():
        x = G(**kw)
        assert x.shape == (1, 3, resolution, resolution)
        assert D(x, kw.get("labels")).shape == (1,)
    n_up = sum(isinstance(m, torch.nn.ConvTranspose2d) for m in G.modules())
    assert n_up == int(math.log2(resolution // 4)) + 1  # 4x4 projection + one per doubling


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("bad", [16, 48, 100, 512, 64.0])
def test_invalid_resolution_names_valid_sizes(name, bad):
    kw = {"label_dims": [3]} if name == "cgan" else {}
    for role in ("generator", "discriminator"):
        with pytest.raises(ValueError, match="32, 64, 128, 256"):
            create_model(name, role, resolution=bad, **kw)


def test_invalid_channels_and_missing_inputs_raise():
    with pytest.raises(ValueError, match="RGBA"):
        create_model("dcgan", "generator", resolution=32, channels=2)
    with pytest.raises(ValueError, match="label_dims"):
        create_model("cgan", "generator", resolution=32)
    with pytest.raises(ValueError, match="label_dims"):
        create_model("cgan", "discriminator", resolution=32)
    G, D = build("cgan", conditional=True)
    z = G.sample_z(2)
    with pytest.raises(ValueError, match="pass labels"):
        G(z)
    with pytest.raises(ValueError, match="pass labels"):
        D(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="shape"):
        G(z, labels=LABELS[:2, :1])
    with pytest.raises(ValueError, match="codes"):
        G(z, labels=LABELS[:2], codes=torch.zeros(2, 6))
    Gi, _ = build("infogan", conditional=False)
    with pytest.raises(ValueError, match="sample_codes"):
        Gi(Gi.sample_z(2))
    with pytest.raises(IndexError):  # beyond the "unknown" row: fails loudly, no silent read
        G(z, labels=torch.tensor([[4, 0], [0, 0]]))


def test_cgan_label_changes_output_and_unknown_label_accepted():
    G, _ = build("cgan", conditional=True)
    G.eval()
    z = G.sample_z(1, generator=torch.Generator().manual_seed(3)).expand(4, -1)
    labels = torch.tensor([[0, 1], [1, 1], [3, 1], [0, 5]])  # 3 and 5 = unknown
    with torch.no_grad():
        x = G(z, labels)
    assert torch.isfinite(x).all()
    for i in range(1, 4):  # same z, a different label in one column -> a different image
        assert (x[i] - x[0]).abs().max() > 1e-4


@pytest.mark.parametrize("name", ["dcgan", "infogan"])
def test_conditional_generators_depend_on_labels(name):
    G, _ = build(name, conditional=True)
    G.eval()
    kw = inputs(G, n=2)
    kw["z"] = kw["z"][:1].expand(2, -1)
    if "codes" in kw:
        kw["codes"] = kw["codes"][:1].expand(2, -1)
    kw["labels"] = torch.tensor([[0, 0], [1, 0]])
    with torch.no_grad():
        x = G(**kw)
    assert (x[0] - x[1]).abs().max() > 1e-4


def test_unconditional_models_ignore_labels():
    G, D = build("dcgan", conditional=False)
    G.eval()
    D.eval()
    z = G.sample_z(2)
    with torch.no_grad():
        assert torch.equal(G(z), G(z, labels=LABELS[:2]))
        assert torch.equal(D(G(z)), D(G(z), LABELS[:2]))


def test_truncation_scales_z():
    G, _ = build("dcgan", conditional=False)
    G.eval()
    z = G.sample_z(3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(G(z, truncation_psi=0.5), G(z * 0.5))
        x0 = G(z, truncation_psi=0.0)
    assert torch.allclose(x0, x0[:1].expand_as(x0))  # psi=0: every sample is the mode


@pytest.mark.parametrize("name", FAMILIES)
def test_channels_last_matches_and_is_kept(name):
    # The benchmark trains in channels_last: no layer may silently fall back to NCHW.
    G, D = build(name, conditional=True)
    G.eval()
    D.eval()
    kw = inputs(G)
    with torch.no_grad():
        x_ref = G(**kw)
        d_ref = D(x_ref, kw["labels"])
        G.to(memory_format=torch.channels_last)
        D.to(memory_format=torch.channels_last)
        x = G(**kw)
        d = D(x, kw["labels"])
    assert x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x, x_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(d, d_ref, atol=1e-4, rtol=1e-4)


def test_deterministic_given_seeds():
    torch.manual_seed(1)
    G1, D1 = build("infogan", conditional=True)
    torch.manual_seed(1)
    G2, D2 = build("infogan", conditional=True)
    kw1, kw2 = inputs(G1, seed=5), inputs(G2, seed=5)
    assert all(torch.equal(kw1[k], kw2[k]) for k in kw1)
    x1, x2 = G1(**kw1), G2(**kw2)
    assert torch.equal(x1, x2)
    assert torch.equal(D1(x1, kw1["labels"]), D2(x2, kw2["labels"]))


def test_sampling_helpers():
    gen = torch.Generator().manual_seed(0)
    z = sample_z(1000, 8, generator=gen)
    assert z.shape == (1000, 8) and abs(z.mean().item()) < 0.1 and abs(z.std().item() - 1) < 0.1
    c = sample_codes(500, {"categorical": [4, 3], "continuous": 2}, generator=gen)
    assert c.shape == (500, 9)
    assert torch.equal(c[:, :4].sum(1), torch.ones(500)) and torch.equal(c[:, 4:7].sum(1), torch.ones(500))
    assert (c[:, :4].sum(0) > 0).all()  # every category drawn
    assert c[:, 7:].min() >= -1 and c[:, 7:].max() <= 1 and c[:, 7:].min() < -0.9 and c[:, 7:].max() > 0.9
    G, _ = build("cgan", conditional=True)
    kw = sample_inputs(G, 6, generator=gen)
    assert kw["labels"].shape == (6, 2) and set(kw) == {"z", "labels"}
    assert (kw["labels"] < torch.tensor(LABEL_DIMS)).all()  # random labels are known classes


def test_mutual_information_loss_perfect_categorical_is_zero():
    dims = {"categorical": [4, 3], "continuous": 0}
    codes = sample_codes(8, dims, generator=torch.Generator().manual_seed(0))
    cat_logits = [codes[:, :4] * 50.0, codes[:, 4:] * 50.0]  # confident and right
    empty = torch.zeros(8, 0)
    assert mutual_information_loss((cat_logits, empty, empty), codes, dims).item() < 1e-6
    wrong = [(1 - codes[:, :4]) * 50.0, codes[:, 4:] * 50.0]
    assert mutual_information_loss((cat_logits, empty, empty), codes, dims) < mutual_information_loss(
        (wrong, empty, empty), codes, dims
    )
    # Continuous part: exact mean with unit std leaves the Gaussian constant 0.5*log(2*pi) per code.
    dims = {"categorical": [], "continuous": 2}
    c = sample_codes(8, dims, generator=torch.Generator().manual_seed(1))
    out = (torch.zeros(8), [], c, torch.zeros(8, 2))  # the D(..., return_q=True) 4-tuple form
    assert mutual_information_loss(out, c, dims).item() == pytest.approx(math.log(2 * math.pi), abs=1e-6)


def test_infogan_q_learns_codes_from_fixed_generator():
    # A fixed random G already makes codes visible in its output, so Q (D's trunk + Q head)
    # must be able to lower the MI loss within a few dozen steps, and the loss must also
    # reach G (it is G's incentive to keep codes recoverable).
    torch.manual_seed(0)
    G, D = build("infogan", conditional=False)
    opt = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        z, codes = G.sample_z(16, generator=gen), G.sample_codes(16, generator=gen)
        with torch.no_grad():
            x = G(z, codes=codes)
        _, *q = D(x, return_q=True)
        loss = mutual_information_loss(q, codes, G.code_dims)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    z, codes = G.sample_z(8, generator=gen), G.sample_codes(8, generator=gen)
    _, *q = D(G(z, codes=codes), return_q=True)
    mutual_information_loss(q, codes, G.code_dims).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in G.parameters())


def test_dcgan_seeded_output_matches_recorded_value():
    # Recorded once from this exact construction. It guards against accidental architecture or
    # initialisation changes (layer order, widths, init std, BN placement) that would silently
    # invalidate saved checkpoints and published samples. float64 keeps the value independent
    # of the CPU's float32 summation order. If a change is intended, re-record and say so.
    torch.manual_seed(0)
    G = create_model("dcgan", "generator", resolution=32, z_dim=16, base_channels=8, max_channels=32).double()
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        x = G(z)  # train mode: BN uses batch statistics, which makes every layer matter
    assert x.sum().item() == pytest.approx(-178.4584722312194, abs=1e-5)
    assert x.abs().sum().item() == pytest.approx(761.7468961375047, abs=1e-5)


def test_dcgan_default_64px_is_the_classic_configuration():
    G = create_model("dcgan", "generator", resolution=64)
    D = create_model("dcgan", "discriminator", resolution=64)
    widths = [m.out_channels for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert widths == [512, 256, 128, 64, 3]
    # The PyTorch DCGAN reference (ngf = ndf = 64, nz = 100, no conv biases) has exactly these.
    assert G.num_parameters() == 3_576_704
    assert D.num_parameters() == 2_765_568


# ---------------------------------------------------------------------------- layers
def test_label_embedding_and_projection_head():
    emb = LabelEmbedding([3, 5], 4)
    assert emb(LABELS).shape == (4, 8) and emb.out_features == 8
    assert LabelEmbedding([3, 5], 4, reduce="sum")(LABELS).shape == (4, 4)
    head = ProjectionHead(6, [3, 5])
    h = torch.randn(4, 6)
    assert head(h, LABELS).shape == (4,)
    # The class scores are the projection terms of every class (the "unknown" row left out):
    # a label's score for its own class is the projection term that label adds.
    scores = head.class_logits(h)
    assert [s.shape for s in scores] == [(4, 3), (4, 5)]
    one = ProjectionHead(6, [3])
    one.embed.tables[0].weight.data = head.embed.tables[0].weight.data.clone()
    y = torch.tensor([[0], [1], [2], [1]])
    assert torch.allclose(one.class_logits(h)[0].gather(1, y).squeeze(1), one(h, y), atol=1e-6)


def test_conditional_dcgan_d_returns_class_scores_with_its_extras():
    from avatarforge.models.cgan import CGANDiscriminator
    from avatarforge.models.dcgan import DCGANDiscriminator

    D = CGANDiscriminator(resolution=32, label_dims=[3, 5], base_channels=8, spectral_norm=True).eval()
    x = torch.randn(4, 3, 32, 32)
    logits, classes = D(x, LABELS, return_classes=True)
    assert torch.equal(logits, D(x, LABELS)) and [c.shape for c in classes] == [(4, 3), (4, 5)]
    Dr = DCGANDiscriminator(resolution=32, label_dims=[3, 5], base_channels=8, recon_channels=4)
    _, recon, classes = Dr(x, LABELS, return_recon=True, return_classes=True)
    assert recon.shape == (4, 3, 32, 32) and len(classes) == 2
    with pytest.raises(ValueError, match="return_classes=True needs a conditional discriminator"):
        DCGANDiscriminator(resolution=32, base_channels=8)(x, return_classes=True)


def test_minibatch_stddev_any_batch_size():
    layer = MinibatchStdDev(group_size=4)
    for b in (1, 4, 6, 7):
        x = torch.randn(b, 8, 4, 4)
        y = layer(x)
        assert y.shape == (b, 9, 4, 4) and torch.equal(y[:, :8], x) and torch.isfinite(y).all()
    y = layer(torch.ones(4, 8, 4, 4))
    assert y[:, 8].abs().max() < 1e-3  # identical samples -> ~zero std feature


def test_batchnorm_d_is_blind_to_batch_contrast_and_image_stats_head_sees_it(tmp_path):
    # The reason the head exists: a BN DCGAN D (no conv biases, leaky ReLU) gives the same
    # logits when every image of the batch is scaled by one factor, so a generator with a
    # linear output gets no signal against clipped, over-contrasted colours.
    from avatarforge.models.dcgan import DCGANDiscriminator, ImageStatsHead

    torch.manual_seed(0)
    x = torch.rand(8, 3, 32, 32) * 2 - 1
    plain = DCGANDiscriminator(32, 3).train()
    # (only up to BatchNorm's eps)
    torch.testing.assert_close(plain(3.0 * x), plain(x), rtol=0, atol=2e-3)
    D = DCGANDiscriminator(32, 3, image_stats=True).train()
    assert (D(3.0 * x) - D(x)).abs().min() > 0.02  # 10x what eps leaves of the plain D's
    # The statistics mean what they say: a flat image has its colour in every pooled cell
    # and no contrast or neighbour differences.
    flat = torch.full((1, 3, 32, 32), 0.25)
    s = ImageStatsHead.statistics(flat)
    assert s.shape == (1, 3 * 18)
    torch.testing.assert_close(s[0, :48], torch.full((48,), 0.25))
    torch.testing.assert_close(s[0, 48:], torch.zeros(6))
    stripes = torch.zeros(1, 3, 32, 32)
    stripes[..., ::2] = 1.0  # vertical stripes: horizontal neighbours differ by 1, vertical by 0
    torch.testing.assert_close(ImageStatsHead.statistics(stripes)[0, 51:], torch.ones(3))
    # Round trip: the option is part of the saved config.
    D.eval().save_pretrained(tmp_path)
    D2 = load_pretrained(tmp_path).eval()
    assert D2.stats_head is not None
    torch.testing.assert_close(D2(x), D(x), rtol=0, atol=0)
    D2(x).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in D2.stats_head.parameters())


def _board_and_images() -> tuple[torch.Tensor, torch.Tensor]:
    """A +-1 one-pixel checkerboard ``(4, 3, 32, 32)`` and 4 seeded random images in [-1, 1]."""
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    board = ((yy + xx) % 2 * 2 - 1).float().expand(4, 3, 32, 32)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return board, x


def test_antialiased_dcgan_d_filters_the_pattern_a_stride_folds(tmp_path):
    # A checkerboard is the finest pattern an image holds; a stride-2 conv folds it onto a
    # coarse one. Blur removes it (inside the border), so the antialiased D barely sees it.
    from avatarforge.models.dcgan import Blur, DCGANDiscriminator

    board, x = _board_and_images()
    blurred = Blur(3)(board)
    assert blurred.shape == board.shape
    assert blurred[..., 1:-1, 1:-1].abs().max() < 1e-6
    smooth = torch.full((1, 3, 32, 32), 0.3)
    torch.testing.assert_close(Blur(3)(smooth), smooth)  # unit gain: flat images pass

    shift = {}
    for antialias in (False, True):
        torch.manual_seed(1)
        D = DCGANDiscriminator(32, 3, antialias=antialias).eval()  # eval: fixed BN statistics
        shift[antialias] = (D(x + 0.5 * board) - D(x)).abs().mean().item()
    assert shift[True] < 0.05 * shift[False]  # measured: ~0.002 of it
    D.save_pretrained(tmp_path)
    D2 = load_pretrained(tmp_path).eval()
    assert "trunk.0.kernel" not in D2.state_dict()  # a constant, not a weight
    torch.testing.assert_close(D2(x), D(x), rtol=0, atol=0)


def test_dcgan_d_stem_lets_the_antialiased_d_see_the_finest_pattern(tmp_path):
    # The blur before the first stride zeroes a checkerboard, so the antialiased D cannot see
    # one whatever its weights are. A full-resolution stem conv (+ LeakyReLU) first turns it
    # into a rectified, smooth response that the blur keeps: here the stem is set to a
    # checker-matched filter, as training would find it.
    from avatarforge.models.dcgan import DCGANDiscriminator

    board, x = _board_and_images()
    shift = {}
    for stem in (0, 16):
        torch.manual_seed(1)
        D = DCGANDiscriminator(32, 3, antialias=True, stem_channels=stem).eval()
        if stem:
            assert D.trunk[0].weight.shape == (16, 3, 3, 3)  # stride 1: full resolution
            k = ((torch.arange(3)[:, None] + torch.arange(3)) % 2 * 2 - 1).float()
            with torch.no_grad():
                D.trunk[0].weight[:] = 0.02 * k
        shift[stem] = (D(x + 0.5 * board) - D(x)).abs().mean().item()
    assert shift[16] > 20 * shift[0]  # measured: ~80x
    D.save_pretrained(tmp_path)
    D2 = load_pretrained(tmp_path).eval()
    assert D2.config["stem_channels"] == 16
    torch.testing.assert_close(D2(x), D(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="stem_channels must be >= 0"):
        DCGANDiscriminator(32, 3, stem_channels=-1)


def test_dcgan_d_recon_decoder_learns_to_reconstruct_what_d_sees(tmp_path):
    # The self-supervised D (FastGAN): a decoder from D's last (B, feat, 4, 4) features
    # to the image at 32 px. Trained on the reconstruction loss alone, D's features come to
    # describe the images: the error falls well below the start.
    from avatarforge.models.dcgan import DCGANDiscriminator, reconstruction_target

    torch.manual_seed(0)
    D = DCGANDiscriminator(64, 3, base_channels=8, recon_channels=32)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    phases = torch.rand(16, 3, 1, 1) * 6.28
    x = torch.sin(3 * xx + phases) * torch.cos(2 * yy - phases)  # (16, 3, 64, 64), smooth
    logits, recon = D(x, return_recon=True)
    assert logits.shape == (16,) and recon.shape == (16, 3, 32, 32)
    assert reconstruction_target(x).shape == (16, 3, 32, 32)
    opt = torch.optim.Adam(D.parameters(), lr=2e-3)
    errors = []
    for _ in range(150):
        err = (D(x, return_recon=True)[1] - reconstruction_target(x)).square().mean()
        opt.zero_grad()
        err.backward()
        opt.step()
        errors.append(err.item())
    assert errors[-1] < 0.2 * errors[0]  # measured: ~0.03 of it
    D.eval().save_pretrained(tmp_path)
    D2 = load_pretrained(tmp_path).eval()
    assert D2.config["recon_channels"] == 32
    torch.testing.assert_close(D2(x, return_recon=True)[1], D(x, return_recon=True)[1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="recon_channels > 0"):
        DCGANDiscriminator(32, 3)(x[:, :, :32, :32], return_recon=True)
    with pytest.raises(ValueError, match="recon_channels must be >= 0"):
        DCGANDiscriminator(32, 3, recon_channels=-1)
