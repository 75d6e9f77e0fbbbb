"""Procedural avatar rendering speed.

- single process: ``procedural.render`` of pre-sampled attribute dicts at 64 and 256 px (RGBA,
  no part masks), avatars/s on one core;
- data set builder: ``build_builtin_dataset`` at 64 px with every core (multiprocessing),
  end to end (sampling, rendering, writing ``images.npy``/labels/manifest, preview grid),
  target 300 avatars/s on 2 cores.

The machine is shared, so figures vary from run to run; the builder figure is the best of a
few builds.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from avatarforge.data import procedural
from avatarforge.data.builtin import build_builtin_dataset
from benchmarks.common import Result, best_rate

BUILDER_TARGET = 300.0  # avatars/s at 64 px on 2 cores


def _single(size: int, n: int) -> float:
    attrs = [procedural.sample_attributes(i) for i in range(n)]
    procedural.render(attrs[0], size)  # warm caches

    def batch() -> int:
        for a in attrs:
            procedural.render(a, size)
        return len(attrs)

    return best_rate(batch, repeats=3, min_seconds=0.3)


def _builder(n: int, repeats: int) -> tuple[float, int]:
    workers = os.cpu_count() or 1
    best = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            t0 = time.perf_counter()
            build_builtin_dataset(Path(tmp) / f"ds{r}", n, 64, seed=r, workers=workers, progress=False)
            best = max(best, n / (time.perf_counter() - t0))
    return best, workers


def run(quick: bool) -> list[Result]:
    """Avatars/s single-process at 64 and 256 px, and for the parallel builder at 64 px."""
    r64 = _single(64, 100 if quick else 300)
    r256 = _single(256, 30 if quick else 100)
    n = 1500 if quick else 5000
    rb, workers = _builder(n, repeats=2 if quick else 3)
    return [
        Result("render 64 px, 1 process", r64, "avatars/s", notes="RGBA, no part masks"),
        Result("render 256 px, 1 process", r256, "avatars/s", notes="RGBA, no part masks"),
        Result(
            "builtin data set 64 px",
            rb,
            "avatars/s",
            target=BUILDER_TARGET,
            notes=f"{n} avatars, {workers} workers, end to end incl. writing; shared CPU, noisy",
            extra={"n": n, "workers": workers, "ms_per_avatar_64": 1000.0 / r64},
        ),
    ]
