"""Shared fixtures for the animator tests: one thread, tiny pair caches, one trained animator."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from avatarforge.animate.train import AnimatorTrainer, build_animator_config

#: The tiny animator every quality test shares: 32 px, trained for a fixed number of pairs
#: (not a fixed time) so its numbers are the same on a busy and an idle machine.
TINY_TRAIN = [
    "data.size=32",
    "data.identities=96",
    "data.heldout_identities=8",
    "log.eval_identities=8",
    "log.progress=false",
    "log.sample_every_kimg=0",
    "log.checkpoint_every_kimg=0",
    "perf.num_threads=1",
    "batch_size=16",
    "kimg=12",
]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_config(tmp: Path, *overrides: str, cache: Path | None = None):
    """A config whose pair caches live under ``cache`` (default ``tmp/cache``) and runs under ``tmp/runs``."""
    return build_animator_config(
        cli={"runs_dir": str(tmp / "runs"), "data": {"cache_dir": str(cache or tmp / "cache")}},
        overrides=[*TINY_TRAIN, *overrides],
    )


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> tuple[AnimatorTrainer, Path]:
    """The tiny animator (about 40 s on a busy 2-core box): ``(trainer, run_dir)``."""
    tmp = tmp_path_factory.mktemp("animator")
    t0 = time.monotonic()
    trainer = AnimatorTrainer(tiny_config(tmp))
    run = trainer.fit()
    trainer.train_seconds = time.monotonic() - t0  # type: ignore[attr-defined]
    return trainer, run
