"""The animator on the training engine: what it gains from :class:`~avatarforge.train.engine.Trainer`.

Resume from the newest intact checkpoint (a damaged newest one is skipped), bit-identical to
an uninterrupted run with the same ``metrics.jsonl`` lines (the open logging window is
checkpointed), stale temporary files removed on resume, wall-time checkpoints, and
checkpoints written by the animator's own loop before it ran on the engine still resume.
Runs are counted in steps of the micro config of :mod:`tests.animate.test_train` (batch 8:
0.008 kimg a step), never in seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from avatarforge.animate.cli import animate_main, build_parser
from avatarforge.animate.trainer import AnimatorTrainer
from avatarforge.train.checkpoint import (
    CheckpointWarning,
    checkpoint_step,
    list_checkpoints,
    verify_checkpoint,
    write_manifest,
)
from avatarforge.train.metrics_log import read_metrics
from tests.animate.test_train import _config

# Outcome depends on trained weights / float rounding: rerun by `make test-numerics-fp32`.
pytestmark = pytest.mark.numerics

STEP_KIMG = 0.008
#: A checkpoint every 2 steps, a metrics line every 3 (so checkpoints fall inside logging
#: windows), the softening augmentation on, D trained from the first step (MICRO).
ENGINE = [
    "log.every_steps=3",
    "log.sample_every_kimg=0",
    "log.checkpoint_every_kimg=0.016",
    "log.checkpoint_every_minutes=0",
    "log.keep_last=10",
    "data.soften_prob=0.5",
]
CLOCK_FIELDS = {"time_s", "img_per_s", "mem_gb"}  # wall-clock measurements, not training state


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """8 steps in one go: checkpoints 2, 4, 6, 8; metrics lines 3, 6, 8."""
    return AnimatorTrainer(_config(tmp_path_factory.mktemp("ref"), f"kimg={8 * STEP_KIMG}", *ENGINE)).fit()


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
    """The same run stopped after 6 steps (checkpoints 2, 4, 6): the template tests damage."""
    return AnimatorTrainer(_config(tmp_path_factory.mktemp("stop"), f"kimg={6 * STEP_KIMG}", *ENGINE)).fit()


@pytest.fixture
def run(stopped, tmp_path) -> Path:
    """A private copy of the stopped run."""
    return Path(shutil.copytree(stopped, tmp_path / stopped.name))


def _ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"ckpt-{step:08d}"


def _resume(run: Path, kimg: float = 8 * STEP_KIMG) -> int:
    return animate_main(build_parser().parse_args(["train", "--resume", str(run), "--kimg", str(kimg)]))


def _tensors(ckpt: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt / f"{name}.safetensors"))


def _train_lines(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in CLOCK_FIELDS} for r in read_metrics(run, kind="train")]


def _assert_same_training(run: Path, reference: Path, step: int = 8, lines: bool = True) -> None:
    """Every tensor of checkpoint ``step`` (weights, Adam moments, RNG states, the logging
    window) matches the uninterrupted run, and (``lines``) so does every metrics line."""
    for name in ("g_model", "g_ema_model", "d_model", "training_state"):
        ta, tb = _tensors(_ckpt(run, step), name), _tensors(_ckpt(reference, step), name)
        assert ta.keys() == tb.keys(), name
        for k in ta:
            assert torch.equal(ta[k], tb[k]), f"{name}/{k} differs from the uninterrupted run"
    if lines:
        assert _train_lines(run) == _train_lines(reference)


def test_resume_falls_back_past_a_damaged_newest_checkpoint(run, reference, capsys):
    """ckpt-6 truncated: resume warns, continues from ckpt-4 (inside the logging window of
    steps 4-6) and ends bit-identical to the uninterrupted run, logging the same losses."""
    weights = _ckpt(run, 6) / "g_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    stale = run / "checkpoints" / ".latest.abcd1234.tmp"  # a killed write's leftover
    stale.write_text("half")
    with pytest.warns(CheckpointWarning, match=r"skipping damaged checkpoint ckpt-00000006: .*g_model"):
        assert _resume(run) == 0
    out = capsys.readouterr().out
    assert f"resumed from {_ckpt(run, 4)} at step 4" in out
    assert "removed 1 leftover(s) of interrupted writes: .latest.abcd1234.tmp" in out
    assert not stale.exists()
    _assert_same_training(run, reference)
    assert [r["step"] for r in _train_lines(run)] == [3, 6, 8]
    verify_checkpoint(_ckpt(run, 6))  # the damaged checkpoint was rewritten by the resumed run
    meta = json.loads((_ckpt(run, 8) / "training_state.json").read_text())
    assert meta["resolution"] == 32 and meta["step"] == 8 and meta["world_size"] == 1


def test_checkpoint_holds_the_open_logging_window(stopped):
    """ckpt-4: the line at step 3 closed the window, so it holds step 4's losses, once each."""
    meta = json.loads((_ckpt(stopped, 4) / "training_state.json").read_text())
    window = meta["log_window"]["0"]
    assert window["mse"] == window["loss_g"] == window["loss_d"] == 1
    assert _tensors(_ckpt(stopped, 4), "training_state")["acc/mse"] > 0


def _as_pre_engine(ckpt: Path) -> None:
    """Rewrite a checkpoint in the layout the animator's own loop wrote before it ran on the
    engine: one process's RNG states not keyed by rank, no logging window, no world size."""
    meta = json.loads((ckpt / "training_state.json").read_text())
    meta["rng"] = meta["rng"]["0"]
    for key in ("log_window", "world_size", "best_metric", "best_value"):
        del meta[key]
    (ckpt / "training_state.json").write_text(json.dumps(meta, indent=2) + "\n")
    tensors = _tensors(ckpt, "training_state")
    save_file(
        {k: v for k, v in tensors.items() if not k.startswith("acc/")},
        str(ckpt / "training_state.safetensors"),
    )
    write_manifest(ckpt)


def test_a_checkpoint_from_before_the_engine_resumes(run, reference, recwarn):
    _as_pre_engine(_ckpt(run, 6))
    assert _resume(run) == 0
    assert not [w for w in recwarn if "re-seeded" in str(w.message)]  # its RNG states were found
    # Bit-identical training; only the logging window of steps 4-6 was not in that checkpoint.
    for name in ("g_model", "g_ema_model", "d_model"):
        ta, tb = _tensors(_ckpt(run, 8), name), _tensors(_ckpt(reference, 8), name)
        assert all(torch.equal(ta[k], tb[k]) for k in tb), name
    ta, tb = _tensors(_ckpt(run, 8), "training_state"), _tensors(_ckpt(reference, 8), "training_state")
    assert ta.keys() == tb.keys()
    assert all(torch.equal(ta[k], tb[k]) for k in tb if not k.startswith("acc/"))


def test_checkpoints_by_wall_time(tmp_path):
    """On a clock that advances 25 s per step: a checkpoint every 60 s (steps 3, 6) and the
    final one (step 7), although ``log.checkpoint_every_kimg`` is off."""
    over = [*ENGINE, "log.checkpoint_every_kimg=0", "log.checkpoint_every_minutes=1"]
    trainer = AnimatorTrainer(_config(tmp_path, f"kimg={7 * STEP_KIMG}", *over))
    trainer.clock = lambda: 1000.0 + 25.0 * trainer.step
    run = trainer.fit()
    assert [checkpoint_step(p) for p in list_checkpoints(run / "checkpoints")] == [3, 6, 7]
