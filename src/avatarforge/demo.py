"""A preview of the built-in data set: render procedural avatars and write a sample grid.

``make demo`` and ``avatarforge demo`` now run the full quickstart
(:func:`avatarforge.quickstart.run_quickstart`: data, training, evaluation, animation,
report). :func:`run_demo` remains for a quick look at the data alone; ``avatarforge demo
--n N --size S`` still calls it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from avatarforge.data.builtin import build_builtin_dataset
from avatarforge.data.inspect import dataset_summary, format_summary, save_dataset_grid

__all__ = ["run_demo"]


def run_demo(
    out: str | os.PathLike = "runs/demo", n: int = 2000, size: int = 64, progress: bool = True
) -> Path:
    """Render ``n`` procedural avatars into ``OUT/data`` and write ``OUT/samples.png``.

    Safe to rerun: an existing data set with the same options is reused.
    """
    out = Path(out)
    data = out / "data"
    t0 = time.time()
    summary = dataset_summary(data) if (data / "manifest.json").exists() else None
    if summary is None or summary["count"] != n or summary["size"] != size:
        build_builtin_dataset(data, n, size, seed=0, overwrite=True, progress=progress)
        summary = dataset_summary(data)
    grid = save_dataset_grid(data, out / "samples.png", n=64, seed=0)
    print(format_summary(summary))
    print(f"\nsample grid: {grid}\ndata set:    {data}\ndone in {time.time() - t0:.1f}s")
    return out
