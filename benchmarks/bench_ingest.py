"""Ingest throughput: ``prepare_dataset`` on 96-px JPEG faces -> 64-px RGBA data set.

Target: >= 1,000 images/s end to end (scan, decode, resize, hashes, write) with the default
worker count (one per core). Uses the shared anime-faces folder when present, else generated
96-px JPEGs (noted in the result). Files are in the page cache after the first repeat, so this
measures the pipeline, not the disk.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from avatarforge.data.prepare import prepare_dataset
from benchmarks.common import Result, best_rate, shared_faces

TARGET = 1000.0


def _generated(folder: Path, n: int) -> list[Path]:
    """n smooth random 96-px JPEGs (face-sized stand-ins), seeded."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        p = folder / f"{i:05d}.jpg"
        Image.fromarray(small).resize((96, 96), Image.Resampling.BICUBIC).save(p, "JPEG", quality=90)
        paths.append(p)
    return paths


def run(quick: bool = False) -> list[Result]:
    n = 1000 if quick else 4000
    with tempfile.TemporaryDirectory(prefix="bench_ingest.") as tmp:
        tmp_path = Path(tmp)
        faces = shared_faces()
        if faces is not None:
            files = sorted(faces.glob("*.jpg"))[:n]
            data_note = f"{len(files)} shared anime-faces-96 JPEGs"
        else:
            src = tmp_path / "src"
            src.mkdir()
            files = _generated(src, n)
            data_note = f"{len(files)} generated 96-px JPEGs (shared faces absent)"
        out = tmp_path / "ds"

        def ingest(workers: int | None, dedupe: str = "exact") -> int:
            report = prepare_dataset(
                files, out, 64, dedupe=dedupe, workers=workers, overwrite=True, progress=False
            )
            return report.kept + len(report.duplicates) + len(report.skipped)

        repeats = 2 if quick else 3
        rate = best_rate(lambda: ingest(None), repeats=repeats, min_seconds=0.5)
        near = best_rate(lambda: ingest(None, "near"), repeats=repeats, min_seconds=0.5)
        single = best_rate(lambda: ingest(1), repeats=repeats, min_seconds=0.5)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return [
        Result(
            "ingest 96px JPEG -> 64px (default workers)",
            rate,
            "images/s",
            target=TARGET,
            notes=f"{data_note}; {cores} cores; end to end incl. scan, pool start, write",
            extra={"files": len(files), "cores": cores},
        ),
        Result("ingest with --dedupe near", near, "images/s", notes="adds the perceptual hash + index"),
        Result("ingest, 1 process", single, "images/s", notes="workers=1: per-core throughput"),
    ]


if __name__ == "__main__":
    for r in run(quick=True):
        print(f"{r.name}: {r.value:,.0f} {r.unit} (target {r.target})")
