"""Shared fixtures for the animator tests: one thread, tiny pair caches, one trained animator."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from avatarforge.animate.config import build_animator_config
from avatarforge.animate.trainer import AnimatorTrainer
from tests.conftest import TRAIN_SEED

#: The tiny animator every quality test shares: 32 px, trained for a fixed number of pairs
#: (not a fixed time) so its numbers are the same on a busy and an idle machine. 24 kimg, not 12:
#: at 12 kimg whether the (tiny) mouth was learned depended on the training trajectory (held-out
#: mouth error 0.18-0.92 of copying over seeds 0-3 and two CPUs); at 24 it is 0.16-0.51.
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
    "kimg=24",
    f"seed={TRAIN_SEED}",
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
    """The tiny animator (about 60-90 s on a busy 2-core box): ``(trainer, run_dir)``."""
    tmp = tmp_path_factory.mktemp("animator")
    t0 = time.monotonic()
    trainer = AnimatorTrainer(tiny_config(tmp))
    run = trainer.fit()
    trainer.train_seconds = time.monotonic() - t0  # type: ignore[attr-defined]
    return trainer, run


@pytest.fixture(scope="session")
def cgan_avatars(tmp_path_factory):
    """Avatars from a project generator: 16 samples of a cgan trained briefly (160 steps,
    ~10 s on one thread) at 32 px on procedural avatars on white (the generation tests'
    recipe). Blurry and far from renderer output: the point is the domain shift.
    Returns ``(images (16, 32, 32, 3) uint8, run_dir)``."""
    import numpy as np

    from avatarforge.config import build_train_config
    from avatarforge.data import procedural as P
    from avatarforge.data.packed import LabelSchema, PackedWriter
    from avatarforge.generate import GeneratorPipeline
    from avatarforge.train.gan import GANTrainer

    tmp = tmp_path_factory.mktemp("animate-gen")
    with PackedWriter(tmp / "data", size=32, channels=3, schema=LabelSchema((P.SCHEMA["hair_color"],))) as w:
        for i in range(400):
            attrs = P.sample_attributes(i, accessory="none")
            rgba = P.render(attrs, 32)
            a = rgba[..., 3:4] / 255.0
            on_white = (rgba[..., :3] * a + 255 * (1 - a)).round().astype(np.uint8)
            w.add(on_white, labels={"hair_color": attrs["hair_color"]})
    cfg = build_train_config(
        cli={"model": {"name": "cgan"}, "data": {"path": str(tmp / "data")}},
        overrides=[
            "batch_size=32", "kimg=5.12", f"runs_dir={tmp / 'runs'}", f"seed={TRAIN_SEED}",
            "log.sample_every_kimg=0", "log.checkpoint_every_kimg=0", "log.progress=false",
            "perf.num_threads=1", "model.g_kwargs.base_channels=16", "model.d_kwargs.base_channels=16",
            "optim.g_lr=1e-3", "optim.d_lr=1e-3",
        ],
    )  # fmt: skip
    threads = torch.get_num_threads()
    try:
        run = GANTrainer(cfg).fit()
    finally:
        torch.set_num_threads(threads)
    pipe = GeneratorPipeline.from_pretrained(run)
    return pipe.render(pipe.latents(list(range(16)))), run
