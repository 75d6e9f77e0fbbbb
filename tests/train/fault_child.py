"""Tiny runs for the fault-injection tests, and the child process that dies inside a checkpoint.

``tiny_config`` is shared by :mod:`tests.train.test_faults` and the child, so both train the
same run: a dcgan with 8 base channels and z_dim 16 (small files), batch 8, a checkpoint every
2 steps (``ckpt-00000002``, ``-4``, ``-6``, ...), a metrics line every 3 steps, no wall-time
checkpoints (the tests count steps, never seconds).

The child (``python -m tests.train.fault_child DATA RUNS MODE [ARG]``) trains to 8 steps and
is cut during the third checkpoint (step 6):

* ``kill-weights-half``: SIGKILL half-way through writing ``g_model.safetensors``;
* ``kill-before-rename``: SIGKILL after the manifest, before the directory is renamed into place;
* ``kill-before-latest``: SIGKILL after the rename, before ``latest`` names the checkpoint;
* ``kill-latest-half``: SIGKILL half-way through writing ``latest``;
* ``fsize BYTES``: from step 5 no file may grow past BYTES (``RLIMIT_FSIZE`` with SIGXFSZ
  ignored, so writes fail with EFBIG as on a full disk) and the trainer raises.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TINY = ["model.z_dim=16", "model.g_kwargs.base_channels=8", "model.d_kwargs.base_channels=8"]
STEP_KIMG = 0.008  # batch 8: one step is 0.008 kimg


def tiny_config(data: Path, runs: Path, *overrides: str) -> Any:
    """The fault tests' tiny dcgan config (see the module docstring); ``overrides`` last."""
    from avatarforge.config import build_train_config

    base = [
        "batch_size=8",
        f"runs_dir={runs}",
        "log.sample_every_kimg=0",
        "log.checkpoint_every_kimg=0.016",
        "log.checkpoint_every_minutes=0",
        "log.keep_last=10",
        "log.every_steps=3",
        "log.progress=false",
        "log.num_samples=4",
        "perf.num_threads=1",
    ]
    return build_train_config(
        cli={"model": {"name": "dcgan"}, "data": {"path": str(data)}}, overrides=[*base, *TINY, *overrides]
    )


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # not reached


class _HalfThenDie:
    """A file object that writes half of what it is given, flushes it to disk, and dies."""

    def __init__(self, f: Any) -> None:
        self._f = f

    def write(self, data: bytes) -> int:
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        os.fsync(self._f.fileno())
        _die()
        return 0


def _install(mode: str) -> None:
    """Patch the writers so that the third checkpoint write dies at ``mode``'s point."""
    import avatarforge.models.base as base
    import avatarforge.train.checkpoint as ck
    from avatarforge import fileio

    count = {"n": 0}

    def third() -> bool:
        count["n"] += 1
        return count["n"] == 3

    if mode == "kill-weights-half":
        real_writer = base.atomic_writer

        @contextlib.contextmanager
        def writer(path: Any, mode: str = "wb") -> Iterator[Any]:
            with real_writer(path, mode) as f:
                yield _HalfThenDie(f) if Path(path).name == "g_model.safetensors" and third() else f

        base.atomic_writer = writer  # type: ignore[assignment]
    elif mode == "kill-before-rename":
        real_manifest = ck.write_manifest

        def manifest(directory: Any) -> Path:
            out = real_manifest(directory)
            if third():
                _die()
            return out

        ck.write_manifest = manifest  # type: ignore[assignment]
    elif mode in ("kill-before-latest", "kill-latest-half"):
        real_text = ck.atomic_write_text

        def text(path: Any, content: str) -> Path:
            if third():
                if mode == "kill-before-latest":
                    _die()
                with fileio.atomic_writer(path) as f:
                    _HalfThenDie(f).write(content.encode())
            return real_text(path, content)

        ck.atomic_write_text = text  # type: ignore[assignment]
    else:
        raise SystemExit(f"unknown mode {mode!r}")


def _limit_file_size(limit: int) -> Any:
    import resource

    def hook(trainer: Any) -> None:
        if trainer.step == 5:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
            _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))

    return hook


def main(argv: list[str]) -> None:
    from avatarforge.train.gan import GANTrainer

    data, runs, mode = Path(argv[0]), Path(argv[1]), argv[2]
    hook = None
    if mode == "fsize":
        hook = _limit_file_size(int(argv[3]))
    else:
        _install(mode)
    GANTrainer(tiny_config(data, runs, f"kimg={8 * STEP_KIMG}"), step_hook=hook).fit()


if __name__ == "__main__":
    main(sys.argv[1:])
