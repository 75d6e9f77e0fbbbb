"""Smoke tests for the training benchmarks' pieces: the FLOP counter, the matmul rate, the
reference DCGAN loop and the trainer-step FLOP count, each on tiny inputs (a few seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from benchmarks.flops import count_flops, matmul_rate, trainer_step_flops
from benchmarks.reference_dcgan import train_reference
from PIL import Image
from torch import nn


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_count_flops_conv_forward_and_backward_masks():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    x = torch.randn(2, 3, 8, 8)
    fwd = 2 * (2 * 8 * 8 * 8) * (3 * 3 * 3)  # 2 FLOPs per MAC, per output element
    total, by_op = count_flops(lambda: conv(x))
    assert total == fwd and by_op == {"convolution": fwd}
    # Weight gradient only (input does not require grad): one more forward's worth.
    total, by_op = count_flops(lambda: conv(x).sum().backward())
    assert by_op["convolution_backward"] == fwd
    # Frozen weights, input requires grad: the input gradient only.
    conv.requires_grad_(False)
    xg = x.clone().requires_grad_(True)
    total, by_op = count_flops(lambda: conv(xg).sum().backward())
    assert by_op["convolution_backward"] == fwd


def test_count_flops_transposed_conv_matches_a_hand_count():
    """A DCGAN generator layer (ConvTranspose2d k4 s2 p1): every input pixel scatters a
    C_out x 4 x 4 patch, so MACs = B * C_in * H_in * W_in * C_out * 16 (= B * H_out * W_out *
    C_out * C_in * 4: each output sees 2 x 2 taps per input channel); backward (input and
    weight gradients) is twice the forward."""
    conv = nn.ConvTranspose2d(8, 4, 4, 2, 1, bias=False)
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    fwd = 2 * (2 * 8 * 5 * 5) * (4 * 4 * 4)
    assert fwd == 2 * (2 * 10 * 10 * 4) * (8 * 2 * 2)
    total, by_op = count_flops(lambda: conv(x).sum().backward())
    assert by_op == {"convolution": fwd, "convolution_backward": 2 * fwd} and total == 3 * fwd


def test_matmul_rate_is_positive():
    assert matmul_rate(n=64, repeats=2) > 0


def test_reference_loop_runs_one_step(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"{i}.jpg")
    rate = train_reference(tmp_path, steps=1, batch_size=4, workers=0, warmup=0)
    assert rate > 0


def test_trainer_step_flops_counts_one_generator_forward(tmp_path):
    """A tiny dcgan step: G runs forward once (fakes reused for the G step), D is frozen in the
    G step (no weight-gradient FLOPs), so the count matches the layer-by-layer sum."""
    from avatarforge.config import build_train_config
    from avatarforge.train.gan import GANTrainer
    from tests.conftest import make_packed

    data = make_packed(tmp_path / "data", n=8, size=32, labelled=False)
    cfg = build_train_config(
        cli={"model": {"name": "dcgan"}, "data": {"path": str(data)}},
        overrides=[
            f"runs_dir={tmp_path / 'runs'}",
            "batch_size=4",
            "model.kwargs.base_channels=4",
            "perf.amp=off",
            "perf.num_threads=1",
            "log.progress=false",
        ],
    )
    tr = GANTrainer(cfg)
    tr.setup()
    reals, labels = next(tr._batches())
    _, by_op = trainer_step_flops(tr, reals, labels)
    # G and D forward FLOPs of one batch, counted separately.
    with torch.no_grad():
        g_fwd, _ = count_flops(lambda: tr.G(tr.G.sample_z(4)))
        d_fwd, _ = count_flops(lambda: tr.D(reals))
    assert by_op["convolution"] == g_fwd + 3 * d_fwd  # G once; D on fakes, reals, fakes again
    # Backward: D weights+inputs on 2 batches (minus the first layer's input gradient), D
    # inputs for the G step, G weights+inputs (minus G's 1x1 input): between 4 and 6 D-forwards
    # plus up to 2 G-forwards.
    assert 4 * d_fwd < by_op["convolution_backward"] <= 5 * d_fwd + 2 * g_fwd


def test_quality_worker_trains_to_a_cpu_budget_and_samples_gan_and_vae(tmp_path):
    """bench_quality's pieces on a tiny data set: the CPU-budgeted worker (GAN and VAE),
    its record of the CPU time used, seeded sampling from either kind of run, the grid."""
    import json

    from benchmarks.bench_quality import sample, side_by_side, train_for_cpu

    from tests.conftest import make_packed

    data = make_packed(tmp_path / "data", n=8, size=32, labelled=False)
    grids = {}
    for model, extra in (
        ("dcgan", ["model.kwargs.base_channels=4"]),
        ("vae", ["model.kwargs.base_channels=4"]),
    ):
        run_dir = train_for_cpu(model, data, tmp_path / model, 0.003, ["batch_size=4", *extra])
        used = json.loads((run_dir / "cpu_budget.json").read_text())
        assert used["stopped_by"] in ("cpu-budget", "time") and used["cpu_s"] > 0
        x = sample(run_dir, 5, seed=1)
        assert x.shape == (5, 3, 32, 32) and float(x.abs().max()) <= 1.0
        assert torch.equal(x, sample(run_dir, 5, seed=1))  # same seed, same images
        assert not torch.equal(x, sample(run_dir, 5, seed=2))
        grids[model] = np.zeros((34, 34, 3), np.uint8)
    path = side_by_side(grids, tmp_path / "grid.png", {"dcgan": "dcgan", "vae": "vae"})
    w, h = Image.open(path).size
    assert w == 2 * 34 + 3 * 16 and h > 34


def test_avatar_fid_is_zero_for_the_reference_and_grows_with_a_shift():
    from benchmarks.bench_quality import AvatarFID

    from avatarforge.eval.extractors import FeatureExtractor

    class MeanColours(FeatureExtractor):  # a cheap stand-in for the avatar net
        name = "mean-colours"
        identity = "mean-colours"
        feature_dim = 12
        input_size = 32

        def features(self, x):
            return nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)  # (B, 12)

    rng = np.random.default_rng(0)
    reals = rng.integers(0, 200, (64, 32, 32, 3), dtype=np.uint8)
    fid = AvatarFID(reals, extractor=MeanColours())
    assert fid(reals) == pytest.approx(0.0, abs=1e-4)
    assert fid(reals + 40) > fid(reals + 10) > 0.01


def test_quality_progress_figure_pairs_snapshots_at_equal_cpu_time(tmp_path):
    from benchmarks.bench_quality import progress_figure

    from avatarforge.imageio import make_grid

    # Two fake runs: "slow" trains 10 images per CPU-second, "fast" 20, so at slow's 10 kimg
    # fast is at 20 kimg. Each snapshot's grid is one flat grey level that encodes its kimg.
    def run(name: str, kimgs: list[int]) -> Path:
        d = tmp_path / name / "samples"
        d.mkdir(parents=True)
        for k in kimgs:
            x = torch.full((16, 3, 8, 8), k / 100 - 1)  # in [-1, 1]
            Image.fromarray(make_grid(x, nrow=4)).save(d / f"fakes_{k:06d}.png")
        return d.parent

    runs = {"fast": run("fast", [10, 20, 30, 40, 41]), "slow": run("slow", [10, 20, 21])}
    path = progress_figure(runs, {"fast": 20.0, "slow": 10.0}, "slow", tmp_path / "p.png", tiles=2, tile_px=8)
    im = np.asarray(Image.open(path).convert("L")).astype(int)
    side = 2 + 2 * (8 + 2)
    # slow's columns: 10 and 21 (20 is dropped: the end-of-run grid follows it closely).
    assert im.shape[1] == 70 + 2 * (side + 10)
    top, gap = 14, 10

    def cell_level(row: int, col: int) -> int:
        y = row * (side + top + gap) + top + 2
        x = 70 + col * (side + gap) + 2
        return int(im[y + 3, x + 3])

    expect = {("fast", 0): 20, ("fast", 1): 41, ("slow", 0): 10, ("slow", 1): 21}
    for (model, col), k in expect.items():
        row = list(runs).index(model)
        assert abs(cell_level(row, col) - round((k / 100) * 127.5)) <= 2, (model, col)
