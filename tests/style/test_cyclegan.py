"""CycleGAN: networks, the unpaired translation trainer (loss, run dir, exact resume, guards), apply."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from avatarforge.data.procedural import render_avatar
from avatarforge.models.base import load_pretrained
from avatarforge.models.cyclegan import CycleGANGenerator, PatchDiscriminator
from avatarforge.models.registry import get_model_class
from avatarforge.style.cli import build_parser, style_main
from avatarforge.style.train_cyclegan import (
    CycleGANTrainer,
    ImagePool,
    build_cyclegan_config,
    load_translator,
    translate_image,
)
from avatarforge.train.checkpoint import find_checkpoint
from avatarforge.train.metrics_log import read_metrics
from tests.conftest import fit_through_nan_event

# Outcome depends on trained weights / float rounding: rerun by `make test-numerics-fp32`.
pytestmark = pytest.mark.numerics

TINY = [
    "model.ngf=8",
    "model.ndf=8",
    "model.n_blocks=1",
    "batch_size=2",
    "perf.num_threads=1",
    "log.progress=false",
    "log.num_samples=3",
]


def _config(a: Path, b: Path, runs: Path, *overrides: str):
    return build_cyclegan_config(
        cli={"data": {"a": str(a), "b": str(b)}, "runs_dir": str(runs)}, overrides=[*TINY, *overrides]
    )


@pytest.fixture(scope="module")
def trained_run(domain_sets, tmp_path_factory) -> Path:
    """40 steps at 32 px (batch 2): avatars <-> the same avatars with R, G, B rotated."""
    a, b = domain_sets
    cfg = _config(
        a, b, tmp_path_factory.mktemp("runs"), "kimg=0.08", "log.every_steps=10", "log.sample_every_kimg=0.04"
    )
    return CycleGANTrainer(cfg).fit()


def test_networks_shapes_registry_and_roundtrip(tmp_path):
    assert get_model_class("cyclegan", "generator") is CycleGANGenerator
    assert get_model_class("cyclegan", "discriminator") is PatchDiscriminator
    g = CycleGANGenerator(ngf=8, n_blocks=2, upsample="transpose")
    d = PatchDiscriminator(ndf=8)
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    y = g(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    assert d(x).shape == (2, 1, 2, 4)  # 70x70-patch PatchGAN: H / 8 - 2
    with pytest.raises(ValueError, match="multiples of 4"):
        g(torch.zeros(1, 3, 30, 32))
    g.save_pretrained(tmp_path, prefix="g_ab_")
    g2 = load_pretrained(tmp_path, prefix="g_ab_")
    assert isinstance(g2, CycleGANGenerator) and g2.config == g.config
    assert all(torch.equal(v, g2.state_dict()[k]) for k, v in g.state_dict().items())


def test_image_pool_is_deterministic():
    def run() -> list[torch.Tensor]:
        pool = ImagePool(3, torch.Generator().manual_seed(7))
        return [pool.query(torch.full((2, 1, 1, 1), float(i))) for i in range(6)]

    first, second = run(), run()
    assert all(torch.equal(x, y) for x, y in zip(first, second))
    assert torch.equal(first[0], torch.zeros(2, 1, 1, 1))  # not full yet: returned as is
    assert any(v < 5 for v in first[5].flatten().tolist())  # later queries return older images
    assert torch.equal(ImagePool(0, torch.Generator()).query(first[1]), first[1])


def test_cycle_loss_falls_and_run_directory(trained_run):
    assert trained_run.name == "00000-cyclegan-32"
    train = read_metrics(trained_run, kind="train")
    assert [r["step"] for r in train] == [10, 20, 30, 40]
    assert train[-1]["cycle"] < 0.7 * train[0]["cycle"], [r["cycle"] for r in train]
    for key in ("loss_g", "loss_d", "adv_g", "identity", "lr", "img_per_s"):
        assert key in train[-1]
    ckpt = find_checkpoint(trained_run)
    assert ckpt.name == "ckpt-00000040"
    for prefix in ("g_ab", "g_ba", "d_a", "d_b"):
        assert (ckpt / f"{prefix}_model.safetensors").is_file() and (ckpt / f"{prefix}_config.json").is_file()
    state = load_file(str(ckpt / "training_state.safetensors"))
    assert state["pool/a"].shape == (50, 3, 32, 32)  # 80 fakes seen, 50 kept
    assert any(k.startswith("optim/g/") for k in state) and "rng/pool" in state and "rng/augment" in state
    meta = json.loads((ckpt / "training_state.json").read_text())
    assert meta["resolution"] == 32 and meta["nimg"] == 80 and meta["pools"]["a"] == 50
    grid = np.asarray(Image.open(trained_run / "samples" / "cycle_000000.png"))
    assert grid.shape == (6 * 32 + 7 * 2, 3 * 32 + 4 * 2, 3)  # rows a, G_ab(a), rec a, b, G_ba(b), rec b
    assert (trained_run / "config.yaml").is_file()


def test_resume_is_bit_identical(domain_sets, tmp_path):
    """6 steps in one go == 3 steps, stop, resume through the CLI, 3 more (flips and a small pool)."""
    a, b = domain_sets
    opts = ["loss.pool_size=3", "log.every_steps=2", "log.sample_every_kimg=0", "log.checkpoint_every_kimg=0"]
    full = CycleGANTrainer(_config(a, b, tmp_path / "full", "kimg=0.012", *opts)).fit()
    half = CycleGANTrainer(_config(a, b, tmp_path / "half", "kimg=0.006", *opts)).fit()
    args = build_parser().parse_args(["train", "--resume", str(half), "--kimg", "0.012"])
    assert style_main(args) == 0
    ca, cb = find_checkpoint(full), find_checkpoint(half)
    assert ca.name == cb.name == "ckpt-00000006"
    for prefix in ("g_ab", "g_ba", "d_a", "d_b"):
        wa = load_file(str(ca / f"{prefix}_model.safetensors"))
        wb = load_file(str(cb / f"{prefix}_model.safetensors"))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), prefix
    sa, sb = (
        load_file(str(ca / "training_state.safetensors")),
        load_file(str(cb / "training_state.safetensors")),
    )
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)  # Adam, RNGs, pools
    assert [r["step"] for r in read_metrics(half, kind="train")] == [2, 3, 4, 6]


def test_checkpoints_by_wall_time_and_the_setting_is_checked(domain_sets, tmp_path):
    """``log.checkpoint_every_minutes`` as for ``avatarforge train``: on a clock that advances
    25 s per step, a checkpoint every 60 s (steps 3, 6) and the final one (step 7)."""
    from avatarforge.config import ConfigError
    from avatarforge.train.checkpoint import checkpoint_step, list_checkpoints

    a, b = domain_sets
    assert _config(a, b, tmp_path).log.checkpoint_every_minutes == 10.0  # TrainConfig's default
    with pytest.raises(ConfigError, match=r"log\.checkpoint_every_minutes must be >= 0"):
        _config(a, b, tmp_path, "log.checkpoint_every_minutes=-1")
    cfg = _config(a, b, tmp_path)
    cfg.log.checkpoint_every_minutes = float("inf")  # as a YAML file's .inf could give
    with pytest.raises(ConfigError, match=r"log\.checkpoint_every_minutes must be >= 0"):
        cfg.validate()
    opts = ["kimg=0.014", "log.sample_every_kimg=0", "log.checkpoint_every_kimg=0", "log.keep_last=10"]
    trainer = CycleGANTrainer(_config(a, b, tmp_path / "runs", *opts, "log.checkpoint_every_minutes=1"))
    trainer.clock = lambda: 1000.0 + 25.0 * trainer.step
    run = trainer.fit()
    assert [checkpoint_step(p) for p in list_checkpoints(run / "checkpoints")] == [3, 6, 7]


def test_nan_roll_back_and_signal_stop(domain_sets, tmp_path):
    a, b = domain_sets
    cfg = _config(a, b, tmp_path / "runs", "kimg=1", "log.every_steps=1", "log.sample_every_kimg=0")

    trainer, _ = fit_through_nan_event(CycleGANTrainer, cfg, lambda t: next(t.G_ab.parameters()))
    assert trainer.opt_g.param_groups[0]["lr"] == pytest.approx(1e-4)  # halved after the event
    assert all(torch.isfinite(p).all() for p in trainer.G_ab.parameters())


def test_style_apply_round_trip(trained_run, tmp_path):
    images = tmp_path / "in"
    (images / "sub").mkdir(parents=True)
    rgba = render_avatar(11, 48)  # not the training size
    Image.fromarray(rgba, "RGBA").save(images / "avatar.png")
    Image.fromarray(render_avatar(12, 32, background=True), "RGB").save(images / "sub" / "photo.jpg")
    (images / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    args = build_parser().parse_args(
        ["apply", str(trained_run), str(images), "--out", str(out), "--device", "cpu"]
    )
    assert style_main(args) == 1  # one unreadable input: reported, the rest translated
    got = np.asarray(Image.open(out / "avatar.png"))
    assert got.shape == rgba.shape and np.array_equal(got[..., 3], rgba[..., 3])
    assert np.asarray(Image.open(out / "photo.png")).shape == (32, 32, 3)

    G = load_translator(trained_run, "b2a")
    y = translate_image(G, rgba, size=32)
    assert y.shape == rgba.shape and np.array_equal(y[..., 3], rgba[..., 3])
    hidden = rgba[..., 3] == 0
    assert np.array_equal(y[hidden], rgba[hidden])
    with pytest.raises(ValueError, match="direction"):
        load_translator(trained_run, "sideways")
