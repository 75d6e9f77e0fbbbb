"""Shared pieces for benchmarks: result rows, timing, the shared anime-faces data set.

Every ``benchmarks/bench_*.py`` module exposes ``run(quick: bool) -> list[Result]``;
``benchmarks/run.py`` collects them, writes ``benchmarks/results/<module>.json`` and the
Markdown table ``benchmarks/REPORT.md``. Targets are compared in the same run (ratios)
where a comparison is the point, because the machine is noisy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
QUICK_RESULTS = RESULTS / "quick"  # --quick runs: never overwrite a full run's figures
SHARED_FACES = ROOT.parent / "shared" / "data" / "anime-faces-96"


@dataclass
class Result:
    """One measured figure. ``target`` is the figure it must reach; ``higher_is_better``
    tells which side of the target passes."""

    name: str
    value: float
    unit: str
    target: float | None = None
    higher_is_better: bool = True
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        return d


def best_rate(fn: Callable[[], int], repeats: int = 3, min_seconds: float = 0.5) -> float:
    """Items per second of ``fn`` (which returns how many items it processed): best of
    ``repeats`` runs, each repeated until it lasts ``min_seconds``."""
    best = 0.0
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            n += fn()
            dt = time.perf_counter() - t0
            if dt >= min_seconds:
                break
        best = max(best, n / dt)
    return best


def shared_faces() -> Path | None:
    """The shared real anime-faces folder, or None when it is absent (benchmarks skip)."""
    return SHARED_FACES if SHARED_FACES.is_dir() else None
