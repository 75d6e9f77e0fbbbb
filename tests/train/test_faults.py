"""Fault injection: damaged checkpoints, full disks, kill -9 inside checkpoint writes, stale
temporary files, wall-time checkpoints and the losses logged after a resume.

Every scenario ends the same way: the run resumes from the newest intact checkpoint and ends
bit-identical to an uninterrupted run (weights, optimizer moments, RNG states, the open
logging window) with the same ``metrics.jsonl`` lines (wall-clock fields aside). Runs are the
tiny seeded config of :mod:`tests.train.fault_child`; lengths are counted in steps, never in
seconds (the wall-time trigger runs on an injected clock).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import avatarforge.models.base as base
import avatarforge.train.checkpoint as ck
from avatarforge import fileio
from avatarforge.config import ConfigError
from avatarforge.models.base import ModelFileError
from avatarforge.train.checkpoint import (
    MANIFEST_NAME,
    CheckpointError,
    CheckpointWarning,
    find_intact_checkpoint,
    load_snapshot,
    verify_checkpoint,
)
from avatarforge.train.cli import build_parser, train_main
from avatarforge.train.gan import GANTrainer
from avatarforge.train.loading import load_generator, load_network
from avatarforge.train.metrics_log import read_metrics
from tests.train.fault_child import STEP_KIMG, tiny_config

ROOT = Path(__file__).resolve().parents[2]
CLOCK_FIELDS = {"time_s", "img_per_s", "mem_gb"}  # wall-clock measurements, not training state
CKPT_FILES = [
    "g_config.json",
    "g_model.safetensors",
    "g_ema_config.json",
    "g_ema_model.safetensors",
    "d_config.json",
    "d_model.safetensors",
    "training_state.json",
    "training_state.safetensors",
    MANIFEST_NAME,
]


@pytest.fixture(scope="module")
def data(blobs) -> Path:
    return blobs


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    """8 steps in one go: checkpoints 2, 4, 6, 8; metrics lines 3, 6, 8."""
    return GANTrainer(tiny_config(data, tmp_path_factory.mktemp("ref"), f"kimg={8 * STEP_KIMG}")).fit()


@pytest.fixture(scope="module")
def stopped(data, tmp_path_factory) -> Path:
    """The same run stopped after 6 steps (checkpoints 2, 4, 6): the template the tests damage."""
    return GANTrainer(tiny_config(data, tmp_path_factory.mktemp("stopped"), f"kimg={6 * STEP_KIMG}")).fit()


@pytest.fixture
def run(stopped, tmp_path) -> Path:
    """A private copy of the stopped run."""
    return Path(shutil.copytree(stopped, tmp_path / stopped.name))


def _ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"ckpt-{step:08d}"


def _truncate(path: Path, size: int | None = None) -> None:
    os.truncate(path, path.stat().st_size // 2 if size is None else size)


def _flip(path: Path, pos: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[pos] ^= 1 << bit
    path.write_bytes(bytes(data))


def _damage(path: Path, kind: str) -> None:
    size = path.stat().st_size
    if kind == "truncate-half":
        _truncate(path)
    elif kind == "truncate-empty":
        _truncate(path, 0)
    elif kind == "truncate-last-byte":
        _truncate(path, size - 1)
    elif kind == "flip-head":
        _flip(path, 3, 2)
    elif kind == "flip-middle":
        _flip(path, size // 2, 5)
    elif kind == "flip-last":
        _flip(path, size - 1, 0)
    else:
        raise ValueError(kind)


def _resume(run: Path, kimg: float = 8 * STEP_KIMG, target: Path | None = None) -> int:
    return train_main(build_parser().parse_args(["--resume", str(target or run), "--kimg", str(kimg)]))


def _cli_error(capsys) -> str:
    """The CLI's error line (after its "resuming ..." note); asserts there is no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("avatarforge train: error: "), err
    return last


def _train_lines(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in CLOCK_FIELDS} for r in read_metrics(run, kind="train")]


def _assert_same_training(run: Path, reference: Path, step: int = 8) -> None:
    """Every tensor of checkpoint ``step`` and every metrics line match the reference run."""
    a, b = _ckpt(run, step), _ckpt(reference, step)
    for name in ("g_model", "g_ema_model", "d_model", "training_state"):
        ta, tb = load_file(str(a / f"{name}.safetensors")), load_file(str(b / f"{name}.safetensors"))
        assert ta.keys() == tb.keys(), name
        for k in ta:
            assert torch.equal(ta[k], tb[k]), f"{name}/{k} differs from the uninterrupted run"
    assert _train_lines(run) == _train_lines(reference)


def _leftovers(run: Path) -> list[str]:
    """Names of temporary files/directories of interrupted writes anywhere in the run."""
    return sorted(
        p.name for p in run.rglob(".*") if p.name.endswith((".tmp", ".partial")) or ".old-" in p.name
    )


# ----------------------------------------------------------------------------- damaged files
@pytest.mark.parametrize(
    "kind", ["truncate-half", "truncate-empty", "truncate-last-byte", "flip-head", "flip-middle", "flip-last"]
)
@pytest.mark.parametrize("name", CKPT_FILES)
def test_each_damaged_file_of_the_newest_checkpoint_is_skipped(run, name, kind):
    _damage(_ckpt(run, 6) / name, kind)
    if (name, kind) == (MANIFEST_NAME, "truncate-last-byte"):
        # Only the manifest's trailing newline went: the same JSON, every file still checked.
        assert find_intact_checkpoint(run) == _ckpt(run, 6)
        return
    with pytest.warns(CheckpointWarning, match="skipping damaged checkpoint ckpt-00000006") as rec:
        found = find_intact_checkpoint(run)
    assert found == _ckpt(run, 4)
    (w,) = [w for w in rec if issubclass(w.category, CheckpointWarning)]
    assert name in str(w.message) and "\n" not in str(w.message)
    # Loading the damaged one is a one-line error naming the file, never a half-read state.
    with pytest.raises(CheckpointError) as err:
        load_snapshot(_ckpt(run, 6))
    assert name in str(err.value) and "\n" not in str(err.value)
    assert load_snapshot(found).step == 4


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("g_model.safetensors", lambda p: _truncate(p, p.stat().st_size - 1000)),  # the case
        ("training_state.json", lambda p: _truncate(p, p.stat().st_size // 3)),
        ("training_state.safetensors", lambda p: _flip(p, p.stat().st_size // 2, 3)),
        (
            "d_config.json",
            lambda p: p.write_text(p.read_text().replace('"base_channels": 8', '"base_channels": 9')),
        ),
        (MANIFEST_NAME, lambda p: _truncate(p, 100)),
    ],
)
def test_resume_falls_back_past_a_damaged_newest_checkpoint(run, reference, name, damage, capsys):
    damage(_ckpt(run, 6) / name)
    with pytest.warns(CheckpointWarning, match=rf"ckpt-00000006: .*{name}"):
        assert _resume(run) == 0
    assert f"resumed from {_ckpt(run, 4)} at step 4" in capsys.readouterr().out
    state = json.loads((_ckpt(run, 8) / "training_state.json").read_text())
    assert state["step"] == 8
    _assert_same_training(run, reference)
    verify_checkpoint(_ckpt(run, 6))  # the damaged checkpoint was rewritten by the resumed run


def test_resume_reports_where_it_resumed_from(run, capsys):
    _truncate(_ckpt(run, 6) / "g_model.safetensors")
    with pytest.warns(CheckpointWarning):
        assert _resume(run, kimg=6 * STEP_KIMG) == 0
    assert f"resumed from {_ckpt(run, 4)} at step 4" in capsys.readouterr().out


def test_explicit_damaged_checkpoint_is_a_one_line_error(run, capsys):
    target = _ckpt(run, 6)
    _truncate(target / "g_model.safetensors", 2142)
    assert _resume(run, target=target) == 2
    err = _cli_error(capsys)
    assert str(target / "g_model.safetensors") in err and "truncated" in err
    # The older one named explicitly still works.
    assert _resume(run, kimg=6 * STEP_KIMG, target=_ckpt(run, 4)) == 0


def test_truncated_training_state_json_names_the_file(run, capsys):
    target = _ckpt(run, 6)
    # Without a manifest (an older checkpoint) the JSON parser finds it: the error names the file.
    (target / MANIFEST_NAME).unlink()
    state = json.loads((target / "training_state.json").read_text())
    del state["manifest"]
    text = json.dumps(state, indent=2)
    (target / "training_state.json").write_text(text[: len(text) // 2])
    assert _resume(run, target=target) == 2
    err = _cli_error(capsys)
    assert str(target / "training_state.json") in err and "not valid JSON" in err


def test_no_intact_checkpoint_left_is_a_clear_error(run, capsys):
    for step in (2, 4, 6):
        _truncate(_ckpt(run, step) / "d_model.safetensors")
    with pytest.warns(CheckpointWarning):
        assert _resume(run) == 2
    err = _cli_error(capsys)
    assert "no intact checkpoint" in err
    assert all(str(_ckpt(run, s) / "d_model.safetensors") in err for s in (2, 4, 6))


def test_damaged_latest_pointer_is_ignored(run, reference):
    pointer = run / "checkpoints" / "latest"
    for damage in (lambda p: p.write_bytes(b"\xff\xfe"), lambda p: _truncate(p, 0), lambda p: _flip(p, 2, 0)):
        pointer.write_text("ckpt-00000006\n")
        damage(pointer)
        assert find_intact_checkpoint(run) == _ckpt(run, 6)
    assert _resume(run) == 0
    _assert_same_training(run, reference)


def test_checkpoints_newer_than_latest_are_not_used_but_named(run):
    (run / "checkpoints" / "latest").write_text("ckpt-00000004\n")  # as if cut before the pointer update
    with pytest.warns(CheckpointWarning, match=r"names ckpt-00000004, but ckpt-00000006 is newer"):
        assert find_intact_checkpoint(run) == _ckpt(run, 4)


# ----------------------------------------------------------------------------- older checkpoints
def _make_legacy(ckpt: Path) -> None:
    """Rewrite a checkpoint as AvatarForge wrote it before manifests and weight checksums."""
    (ckpt / MANIFEST_NAME).unlink()
    state = json.loads((ckpt / "training_state.json").read_text())
    del state["manifest"]
    (ckpt / "training_state.json").write_text(json.dumps(state, indent=2) + "\n")
    for cfg in ckpt.glob("*_config.json"):
        meta = json.loads(cfg.read_text())
        del meta["weights"]
        cfg.write_text(json.dumps(meta, indent=2) + "\n")


def test_checkpoints_without_manifest_still_load_and_resume(run, reference):
    for step in (2, 4, 6):
        _make_legacy(_ckpt(run, step))
    verify_checkpoint(_ckpt(run, 6))
    G = load_generator(run)
    saved = load_file(str(_ckpt(run, 6) / "g_ema_model.safetensors"))
    assert all(torch.equal(v, saved[k]) for k, v in G.state_dict().items())
    # Parsing catches truncation (not a flipped bit inside tensor data: that needs the manifest).
    _truncate(_ckpt(run, 6) / "g_model.safetensors", 2142)
    with pytest.warns(CheckpointWarning, match=r"g_model\.safetensors: .*truncated"):
        assert _resume(run) == 0
    _assert_same_training(run, reference)


def test_checkpoint_that_lost_its_manifest_is_damaged(run):
    (_ckpt(run, 6) / MANIFEST_NAME).unlink()
    with pytest.raises(
        CheckpointError, match=r"manifest\.json: missing \(this checkpoint was written with one\)"
    ):
        verify_checkpoint(_ckpt(run, 6))


@pytest.mark.parametrize("kind", ["truncate-half", "flip-head", "truncate-last-byte"])
def test_legacy_header_damage_is_detected(run, kind):
    _make_legacy(_ckpt(run, 6))
    _damage(_ckpt(run, 6) / "training_state.safetensors", kind)
    with pytest.raises(CheckpointError, match=r"training_state\.safetensors"):
        verify_checkpoint(_ckpt(run, 6))


# ----------------------------------------------------------------------------- generation
def test_damaged_checkpoint_for_generation_is_a_one_line_error_naming_the_file(run):
    weights = _ckpt(run, 6) / "g_ema_model.safetensors"
    _flip(weights, weights.stat().st_size // 2, 1)
    with pytest.raises(ModelFileError) as err:
        load_generator(run)
    msg = str(err.value)
    assert msg.startswith(str(weights)) and "sha256" in msg and "\n" not in msg
    assert f"the newest intact checkpoint is {_ckpt(run, 4)}" in msg
    with pytest.raises(ModelFileError, match="sha256") as err:
        load_network(_ckpt(run, 6), which="ema")  # named explicitly: no hint
    assert "intact" not in str(err.value)
    # A config edited into another valid JSON is caught by the manifest.
    cfg = _ckpt(run, 6) / "g_config.json"
    cfg.write_text(cfg.read_text().replace('"embed_dim": 16', '"embed_dim": 17'))
    with pytest.raises(CheckpointError, match=r"g_config\.json: .*sha256"):
        load_network(_ckpt(run, 6), which="g")
    assert load_network(run, which="d") is not None  # D's files are intact


# ----------------------------------------------------------------------------- full disk
def _enospc_at(monkeypatch, target: str, nth: int = 3) -> None:
    """The ``nth`` atomic write of a file named ``target`` writes half its bytes, then fails
    with ENOSPC (as a full disk would)."""
    real = fileio.atomic_writer
    seen = {"n": 0}

    class Half:
        def __init__(self, f):
            self._f = f

        def write(self, data):
            self._f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    @contextlib.contextmanager
    def writer(path, mode="wb"):
        hit = False
        if Path(path).name == target:
            seen["n"] += 1
            hit = seen["n"] == nth
        with real(path, mode) as f:
            yield Half(f) if hit else f

    for module in (fileio, base, ck):
        monkeypatch.setattr(module, "atomic_writer", writer)


@pytest.mark.parametrize(
    "target",
    [
        "g_model.safetensors",
        "g_ema_config.json",
        "training_state.safetensors",
        "training_state.json",
        MANIFEST_NAME,
        "latest",
    ],
)
def test_full_disk_during_a_checkpoint_write(data, reference, tmp_path, monkeypatch, target, capsys):
    _enospc_at(monkeypatch, target)
    trainer = GANTrainer(tiny_config(data, tmp_path, f"kimg={8 * STEP_KIMG}"))
    with pytest.raises(OSError) as err:
        trainer.fit()
    monkeypatch.undo()
    assert err.value.errno == errno.ENOSPC and trainer.step == 6
    assert "could not write the checkpoint of step 6" in capsys.readouterr().out
    run = trainer.run_dir
    assert _leftovers(run) == []  # the failed write cleaned up after itself
    if target == "latest":
        verify_checkpoint(_ckpt(run, 6))  # complete, but `latest` still names ckpt-4
        assert (run / "checkpoints" / "latest").read_text().strip() == "ckpt-00000004"
    else:
        assert not _ckpt(run, 6).exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CheckpointWarning)  # "ckpt-6 is newer than latest"
        assert _resume(run) == 0
    _assert_same_training(run, reference)


# ----------------------------------------------------------------------------- other processes
def _child(data: Path, runs: Path, *mode: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # this checkout's tests
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    cmd = [sys.executable, "-m", "tests.train.fault_child", str(data), str(runs), *mode]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "mode", ["kill-weights-half", "kill-before-rename", "kill-before-latest", "kill-latest-half"]
)
def test_kill_9_inside_a_checkpoint_write(data, reference, tmp_path, mode):
    proc = _child(data, tmp_path, mode)
    assert proc.returncode == -9, proc.stderr
    (run,) = tmp_path.glob("0*")
    # What the kill left behind: a half-built checkpoint directory or half a pointer file.
    left = _leftovers(run)
    if mode in ("kill-weights-half", "kill-before-rename"):
        assert not _ckpt(run, 6).exists() and any(n.startswith(".ckpt-00000006.") for n in left), left
    elif mode == "kill-latest-half":
        assert any(n.startswith(".latest.") for n in left), left
    assert (run / "checkpoints" / "latest").read_text().strip() == "ckpt-00000004"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CheckpointWarning)  # "ckpt-6 is newer than latest"
        assert _resume(run) == 0
    assert _leftovers(run) == []
    _assert_same_training(run, reference)


def test_file_size_limit_reached_during_a_checkpoint(data, reference, tmp_path):
    """RLIMIT_FSIZE in a child process: the step-6 checkpoint's weights cannot be written."""
    proc = _child(data, tmp_path, "fsize", "20000")
    assert proc.returncode == 1 and "File too large" in proc.stderr, proc.stderr
    assert "could not write the checkpoint of step 6" in proc.stdout
    (run,) = tmp_path.glob("0*")
    assert not _ckpt(run, 6).exists() and _leftovers(run) == []
    assert _resume(run) == 0
    _assert_same_training(run, reference)


# ----------------------------------------------------------------------------- stale temp files
def test_stale_temporary_files_are_removed_on_resume(run, reference, capsys):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    ckpts = run / "checkpoints"
    stale = [
        ckpts / ".latest.abcd1234.tmp",  # written before temp names carried a pid
        ckpts / f".latest.{dead_pid}.x1y2z3w4.tmp",
        run / f".config.yaml.{dead_pid}.qwertyui.tmp",
        run / f".metrics.jsonl.{dead_pid}.asdfghjk.tmp",
    ]
    for p in stale:
        p.write_text("half")
    partial = ckpts / f".ckpt-00000008.{dead_pid}.zxcvbnm1.partial"
    partial.mkdir()
    (partial / "g_model.safetensors").write_bytes(b"torn")
    live = ckpts / f".latest.{os.getpid()}.livewrit.tmp"  # a live process's write: left alone
    live.write_text("busy")
    # A rewrite of ckpt-6 cut between its two renames: the previous copy is moved back, and
    # resume uses it (not ckpt-4).
    os.replace(_ckpt(run, 6), ckpts / f".ckpt-00000006.old-{dead_pid}")
    assert _resume(run) == 0
    assert f"resumed from {_ckpt(run, 6)} at step 6" in capsys.readouterr().out
    assert _leftovers(run) == [live.name]
    live.unlink()
    _assert_same_training(run, reference)


# ----------------------------------------------------------------------------- wall-time checkpoints
class StepClock:
    """A clock that advances ``seconds_per_step`` per optimizer step, whatever the wall time."""

    def __init__(self, trainer: GANTrainer, seconds_per_step: float) -> None:
        self.trainer, self.dt = trainer, seconds_per_step

    def __call__(self) -> float:
        return 1000.0 + self.trainer.step * self.dt


def _steps(run: Path) -> list[int]:
    return [ck.checkpoint_step(p) for p in ck.list_checkpoints(run / "checkpoints")]


def test_checkpoints_by_wall_time(data, tmp_path):
    cfg = tiny_config(
        data, tmp_path, "kimg=0.08", "log.checkpoint_every_kimg=0", "log.checkpoint_every_minutes=1"
    )
    trainer = GANTrainer(cfg)
    trainer.clock = StepClock(trainer, 25.0)  # a minute every 2.4 steps
    run = trainer.fit()
    assert _steps(run) == [3, 6, 9, 10]  # each 60 s after the last one; 10 = the end
    # A kimg checkpoint restarts the wall-time interval.
    cfg = tiny_config(
        data, tmp_path, "kimg=0.08", "log.checkpoint_every_kimg=0.032", "log.checkpoint_every_minutes=1"
    )
    trainer = GANTrainer(cfg)
    trainer.clock = StepClock(trainer, 25.0)
    assert _steps(trainer.fit()) == [3, 4, 7, 8, 10]


class Crash(Exception):
    pass


def _crash_at(step: int):
    def hook(trainer):
        if trainer.step == step:
            raise Crash(f"simulated crash at step {step}")

    return hook


def test_crash_before_the_first_kimg_checkpoint_keeps_the_run(data, tmp_path):
    """``log.checkpoint_every_kimg=50``: without the wall-time trigger a crash at step 7 leaves nothing."""
    over = ["kimg=0.08", "log.checkpoint_every_kimg=50", "log.checkpoint_every_minutes=1"]
    ref = GANTrainer(tiny_config(data, tmp_path / "ref", *over))
    ref.clock = StepClock(ref, 0.0)  # time stands still: only the final checkpoint
    ref = ref.fit()
    assert _steps(ref) == [10]
    trainer = GANTrainer(tiny_config(data, tmp_path / "crash", *over), step_hook=_crash_at(7))
    trainer.clock = StepClock(trainer, 25.0)
    with pytest.raises(Crash):
        trainer.fit()
    run = trainer.run_dir
    assert _steps(run) == [3, 6]
    assert _resume(run, kimg=0.08) == 0
    _assert_same_training(run, ref, step=10)


def test_checkpoint_every_minutes_is_validated():
    for bad in ("-1", "-0.5"):
        with pytest.raises(ConfigError, match=r"log\.checkpoint_every_minutes must be >= 0"):
            tiny_config(Path("x"), Path("y"), f"log.checkpoint_every_minutes={bad}")
    cfg = tiny_config(Path("x"), Path("y"))
    cfg.log.checkpoint_every_minutes = float("inf")  # as a YAML file's .inf could give
    with pytest.raises(ConfigError, match=r"log\.checkpoint_every_minutes must be >= 0"):
        cfg.validate()
    with pytest.raises(ConfigError, match=r"log\.checkpoint_every_minutes"):
        tiny_config(Path("x"), Path("y"), "log.checkpoint_every_minutes=soon")
    assert (
        tiny_config(Path("x"), Path("y"), "log.checkpoint_every_minutes=0").log.checkpoint_every_minutes == 0
    )


# ----------------------------------------------------------------------------- metrics after resume
def test_logged_losses_after_a_crash_match_the_uninterrupted_run(data, tmp_path):
    """The issue's 5.963 vs 5.133: a checkpoint inside a logging window (step 3 of 1-5), a crash
    at step 4; the resumed run's step-5 line must still average steps 1-5."""
    over = ["kimg=0.08", "log.every_steps=5", "log.checkpoint_every_kimg=0.024"]
    ref = GANTrainer(tiny_config(data, tmp_path / "ref", *over)).fit()
    trainer = GANTrainer(tiny_config(data, tmp_path / "crash", *over), step_hook=_crash_at(4))
    with pytest.raises(Crash):
        trainer.fit()
    run = trainer.run_dir
    assert _steps(run) == [3]
    assert _resume(run, kimg=0.08) == 0
    assert [r["step"] for r in _train_lines(run)] == [5, 10]
    _assert_same_training(run, ref, step=10)


def test_logged_losses_after_a_stop_match_the_uninterrupted_run(data, tmp_path):
    """Stopped at step 4 (a line for the partial window 1-4), resumed: the step-5 line still
    averages 1-5, as in the uninterrupted run; the stop's own line is extra."""
    over = ["log.every_steps=5", "log.checkpoint_every_kimg=0"]
    ref = GANTrainer(tiny_config(data, tmp_path / "ref", "kimg=0.08", *over)).fit()
    run = GANTrainer(tiny_config(data, tmp_path / "stop", "kimg=0.032", *over)).fit()
    assert _resume(run, kimg=0.08) == 0
    lines, expected = _train_lines(run), _train_lines(ref)
    assert [r["step"] for r in lines] == [4, 5, 10] and [r["step"] for r in expected] == [5, 10]
    assert lines[1:] == expected
    ta = load_file(str(_ckpt(run, 10) / "training_state.safetensors"))
    tb = load_file(str(_ckpt(ref, 10) / "training_state.safetensors"))
    assert all(torch.equal(ta[k], tb[k]) for k in tb) and ta.keys() == tb.keys()


def test_checkpoint_holds_the_open_logging_window(run):
    """ckpt-4: the line at step 3 closed the window, so it holds step 4's losses, once each."""
    snap = load_snapshot(_ckpt(run, 4))
    window = snap.meta["log_window"]["0"]
    assert window["loss_g"] == 1 and window["loss_d"] == 1
    assert snap.tensors["acc/loss_g"].shape == () and snap.tensors["acc/loss_d"] > 0


def test_bad_weights_in_a_state_file_do_not_load(run):
    """A safetensors file replaced by one of the wrong shapes: caught by the manifest."""
    path = _ckpt(run, 6) / "d_model.safetensors"
    save_file({"x": torch.zeros(3)}, str(path))
    with pytest.raises(CheckpointError, match=r"d_model\.safetensors"):
        load_snapshot(_ckpt(run, 6))
