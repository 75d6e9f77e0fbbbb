"""VAE training throughput: :class:`~avatarforge.train.vae.VAETrainer` at 64 px, batch 64.

The whole training loop is timed (batches from the packed data set, forward, loss,
backward, Adam, the periodic host sync), with the ``vae-64`` preset's model (z 128, widths
32 -> 256, GroupNorm). Data: 512 procedural avatars at 64 px (RGB on their backgrounds).
Timing starts after a few warm-up steps; the figure is images per second over the rest,
best of two runs. Run with torch's default thread count and with one thread (what a
shared machine gives each job).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from avatarforge.config import build_train_config
from avatarforge.data.builtin import build_builtin_dataset
from avatarforge.train.vae import VAETrainer
from benchmarks.common import Result

SIZE = 64
BATCH = 64
WARMUP = 3


def _rate(data: Path, runs: Path, steps: int, threads: int | None) -> tuple[float, int]:
    """Training images/s after ``WARMUP`` steps; returns (rate, parameter count)."""
    stamps: dict[int, float] = {}

    def hook(trainer: VAETrainer) -> None:
        if trainer.step in (WARMUP, WARMUP + steps):
            stamps[trainer.step] = time.perf_counter()

    overrides = [
        f"batch_size={BATCH}",
        f"kimg={(WARMUP + steps) * BATCH / 1000}",
        f"runs_dir={runs}",
        "log.progress=false",
        "log.sample_every_kimg=0",
        "log.checkpoint_every_kimg=0",
        "log.metric_every_kimg=0",
        f"log.every_steps={steps}",
        "log.num_samples=16",
        "device=cpu",
    ]
    if threads is not None:
        overrides.append(f"perf.num_threads={threads}")
    cfg = build_train_config(cli={"model": {"name": "vae"}, "data": {"path": str(data)}}, overrides=overrides)
    trainer = VAETrainer(cfg, step_hook=hook)
    trainer.fit()
    return steps * BATCH / (stamps[WARMUP + steps] - stamps[WARMUP]), trainer.vae.num_parameters()


def run(quick: bool) -> list[Result]:
    steps = 8 if quick else 25
    default_threads = torch.get_num_threads()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = build_builtin_dataset(
            Path(tmp) / "avatars64", 512, SIZE, alpha="background", workers=1, progress=False
        )
        try:
            for threads in (None, 1):
                rate, params = max(_rate(data, Path(tmp) / "runs", steps, threads) for _ in range(2))
                label = f"{default_threads} threads (torch default)" if threads is None else "1 thread"
                results.append(
                    Result(
                        f"VAE training 64 px, batch 64, {label}",
                        rate,
                        "img/s",
                        notes=f"vae-64 preset ({params / 1e6:.1f} M parameters), {steps} timed steps, best of 2",
                    )
                )
        finally:
            torch.set_num_threads(default_threads)
    return results
