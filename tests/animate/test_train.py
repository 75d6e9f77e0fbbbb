"""The animator trainer: run directory, checkpoints, exact resume, NaN roll-back, signals."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from avatarforge.animate.cli import animate_main, build_parser
from avatarforge.animate.config import build_animator_config
from avatarforge.animate.loading import load_animator
from avatarforge.animate.trainer import AnimatorTrainer
from avatarforge.config import ConfigError
from avatarforge.models.animator import ExpressionAnimator
from avatarforge.train.checkpoint import find_checkpoint
from avatarforge.train.metrics_log import read_metrics
from tests.conftest import fit_through_nan_event

# Outcome depends on trained weights / float rounding: rerun by `make test-numerics-fp32`.
pytestmark = pytest.mark.numerics

#: A very small animator and data set: a step takes a few milliseconds.
MICRO = [
    "data.size=32",
    "data.identities=6",
    "data.expressions=3",
    "data.heldout_identities=2",
    "log.eval_identities=1",
    "log.num_samples=2",
    "log.progress=false",
    "perf.num_threads=1",
    "model.widths=[4,8,8,16]",
    "model.ctrl_hidden=16",
    "model.d_width=8",
    "batch_size=8",
    "loss.adv_start_kimg=0",  # the discriminator trains from the first step (its state is resumed too)
    "loss.adv_ramp_kimg=0",
    "loss.change_weight=2",
    "data.background_prob=0.5",
]


def _config(tmp, *overrides):
    return build_animator_config(
        cli={"runs_dir": str(tmp / "runs"), "data": {"cache_dir": str(tmp.parent / "micro-cache")}},
        overrides=[*MICRO, *overrides],
    )


def test_resume_is_bit_identical(tmp_path):
    """6 steps in one go == 3 steps, stop, resume through the CLI, 3 more."""
    # soften_prob: the softening augmentation draws from the step's own seed, so resume stays exact
    opts = [
        "log.every_steps=2",
        "log.sample_every_kimg=0",
        "log.checkpoint_every_kimg=0",
        "data.soften_prob=0.5",
    ]
    full = AnimatorTrainer(_config(tmp_path / "full", "kimg=0.048", *opts)).fit()
    half = AnimatorTrainer(_config(tmp_path / "half", "kimg=0.024", *opts)).fit()
    args = build_parser().parse_args(["train", "--resume", str(half), "--kimg", "0.048"])
    assert animate_main(args) == 0
    ca, cb = find_checkpoint(full), find_checkpoint(half)
    assert ca.name == cb.name == "ckpt-00000006"
    for prefix in ("g", "g_ema", "d"):
        wa = load_file(str(ca / f"{prefix}_model.safetensors"))
        wb = load_file(str(cb / f"{prefix}_model.safetensors"))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), prefix
    sa = load_file(str(ca / "training_state.safetensors"))
    sb = load_file(str(cb / "training_state.safetensors"))
    assert any(k.startswith("optim/d/") for k in sa)  # D was trained and its Adam state saved
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [r["step"] for r in read_metrics(half, kind="train")] == [2, 3, 4, 6]
    assert [r["step"] for r in read_metrics(half, kind="metric")] == [3, 6]
    meta = json.loads((cb / "training_state.json").read_text())
    assert meta["resolution"] == 32 and meta["nimg"] == 48
    grid = (half / "samples" / "pairs_000000.png").is_file()
    assert grid and (half / "config.yaml").is_file()
    g = load_animator(half)
    assert isinstance(g, ExpressionAnimator) and not g.training
    assert torch.equal(g.head.weight, load_file(str(cb / "g_ema_model.safetensors"))["head.weight"])


def test_nan_roll_back_and_signal_stop(tmp_path):
    cfg = _config(tmp_path, "kimg=1", "log.every_steps=1", "log.sample_every_kimg=0")

    trainer, run = fit_through_nan_event(AnimatorTrainer, cfg, lambda t: t.G.head.weight)
    assert trainer.opt_g.param_groups[0]["lr"] == pytest.approx(cfg.optim.lr / 2)  # halved after the event
    assert all(torch.isfinite(p).all() for p in trainer.G.parameters())
    assert read_metrics(run, kind="metric") == []  # no evaluation after a signal: time may be short


def test_config_errors_and_dry_run(tmp_path, capsys):
    with pytest.raises(ConfigError, match="multiple of 8"):
        _config(tmp_path, "data.size=60")
    with pytest.raises(ConfigError, match="unknown config key"):
        _config(tmp_path, "loss.mouth_wieght=3")
    args = build_parser().parse_args(
        ["train", "--size", "48", "--minutes", "2", "optim.lr=5e-4", "--dry-run"]
    )
    assert animate_main(args) == 0
    out = capsys.readouterr().out
    assert "size: 48" in out and "lr: 0.0005" in out and "minutes: 2.0" in out
    args = build_parser().parse_args(["train", "--dry-run", "batch_size=0"])
    assert animate_main(args) == 2
    assert "batch_size must be >= 1" in capsys.readouterr().err


def test_train_animator_budget_resume_and_new_runs(tmp_path):
    from avatarforge.animate.quick import find_animator_run, train_animator

    extra = [*MICRO, f"data.cache_dir={tmp_path / 'cache'}"]
    runs = tmp_path / "runs"
    run = train_animator(runs, size=32, minutes=0.03, progress=False, overrides=extra)
    assert run.parent == runs and run.name.endswith("-animator-32")
    first = int(find_checkpoint(run).name.split("-")[-1])
    assert first > 0 and read_metrics(run, kind="metric")  # trained, checkpointed, evaluated
    assert find_animator_run(runs, 32) == run and find_animator_run(runs, 64) is None
    # resume=True continues the newest run of that size, given the runs dir or the run itself
    assert train_animator(runs, size=32, minutes=0.03, progress=False, overrides=extra) == run
    assert train_animator(run, size=32, minutes=0.03, progress=False, overrides=extra) == run
    steps = [m["step"] for m in read_metrics(run, kind="metric")]
    assert steps[0] == first and steps == sorted(steps) and len(set(steps)) == 3
    assert isinstance(load_animator(run), ExpressionAnimator)
    # resume=False starts a new run next to it
    other = train_animator(run, size=32, minutes=0.03, resume=False, progress=False, overrides=extra)
    assert other != run and other.parent == runs
    with pytest.raises(ConfigError, match="trained at 32 px"):
        train_animator(run, size=48, minutes=0.1, progress=False)
    with pytest.raises(ConfigError, match="minutes"):
        train_animator(runs, minutes=0)
    with pytest.raises(ConfigError, match="size"):
        train_animator(runs, size=30, minutes=1)


def test_soften_pairs_is_seeded_and_keeps_transparency():
    import torch.nn.functional as F

    from avatarforge.animate.pairs import PairBatch, soften_pairs
    from avatarforge.data.procedural import render_avatar

    imgs = torch.stack(
        [torch.from_numpy(render_avatar(s, 32)).permute(2, 0, 1).float() / 127.5 - 1 for s in range(8)]
    )
    parts = torch.zeros(8, 32, 32, dtype=torch.uint8)
    ctrl = torch.zeros(8, 5)
    b = PairBatch(imgs, imgs.flip(0), ctrl, ctrl, parts, parts)
    assert soften_pairs(b, 0.0, 1) is b
    a1, a2 = soften_pairs(b, 0.5, 7), soften_pairs(b, 0.5, 7)
    assert torch.equal(a1.source, a2.source) and torch.equal(a1.target, a2.target)  # a function of the seed
    changed = (a1.source != b.source).flatten(1).any(1)
    assert 0 < int(changed.sum()) < 8  # about half the pairs
    assert torch.equal(changed, (a1.target != b.target).flatten(1).any(1))  # source and target alike
    soft = soften_pairs(b, 1.0, 0).source
    alpha = (b.source[:, 3] + 1) / 2

    # Soft, not shifted: at 1/4 resolution (premultiplied) it is the original.
    def pm(x):
        u = (x + 1) / 2
        return torch.cat([u[:, :3] * u[:, 3:], u[:, 3:]], 1)

    def low_err(x):
        return float((F.avg_pool2d(pm(x), 4) - F.avg_pool2d(pm(b.source), 4)).abs().mean())

    assert low_err(soft) < 0.5 * low_err(b.source.roll(2, -1))  # closer than a 2-px shift
    # Edges get softer: less high-frequency energy than the original.
    hf = lambda x: (x[..., 1:] - x[..., :-1]).abs().mean()  # noqa: E731
    assert hf(soft) < 0.8 * hf(b.source)
    # Transparent pixels far from the character stay transparent (premultiplied resampling).
    far = F.max_pool2d(alpha[:, None], 7, stride=1, padding=3)[:, 0] == 0
    assert bool((soft[:, 3][far] == -1).all())
    assert torch.equal(b.source, imgs) and torch.equal(b.target, imgs.flip(0))  # not modified in place
