"""One-call animator training within a wall-clock budget (the quickstart's): :func:`train_animator`,
and :func:`find_animator_run` to pick up the newest run of a size again."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from avatarforge.animate.config import build_animator_config
from avatarforge.animate.pairs import HELDOUT, TRAIN, PairSpec, build_or_open_cache
from avatarforge.config import ConfigError
from avatarforge.runs import find_checkpoint
from avatarforge.train.families import train

__all__ = ["QUICK_HELDOUT", "QUICK_IDENTITIES", "find_animator_run", "train_animator"]


#: Training and held-out identities :func:`train_animator` renders for budgets up to 10
#: minutes: rendering the default 2000 (x 6 expressions) takes ~70 s on 2 free cores (and
#: several minutes on a busy machine: the first recorded 4-minute run spent most of its
#: budget rendering 500), while a few minutes of training (~7 kimg = ~1.2 passes over
#: 200 identities' 30 ordered pairs, x2 with flips) do not exhaust 200 identities.
QUICK_IDENTITIES = 200
QUICK_HELDOUT = 12


def _animator_run_size(run: Path) -> int | None:
    """``data.size`` of an animator run directory (with a checkpoint), else None."""
    cfg_path = run / "config.json"
    if not (cfg_path.is_file() and (run / "checkpoints").is_dir()):
        return None
    try:
        cfg = json.loads(cfg_path.read_text("utf-8"))
        if "mouth_weight" not in cfg.get("loss", {}):  # not an animator config
            return None
        find_checkpoint(run)
        return int(cfg["data"]["size"])
    except (OSError, ValueError, KeyError, TypeError, FileNotFoundError):
        return None


def find_animator_run(runs_dir: str | os.PathLike, size: int | None = None) -> Path | None:
    """The newest animator run directory under ``runs_dir`` that has a checkpoint (of
    resolution ``size`` when given), or None."""
    from avatarforge.train.rundir import run_number

    root = Path(runs_dir)
    if not root.is_dir():
        return None
    found = []
    for run in root.iterdir():
        n = run_number(run)
        got = _animator_run_size(run) if n is not None else None
        if got is not None and (size is None or got == size):
            found.append((n, run))
    return max(found)[1] if found else None


def train_animator(
    path: str | os.PathLike = "runs",
    size: int = 64,
    minutes: float = 4.0,
    resume: bool = True,
    progress: bool = True,
    *,
    overrides: Sequence[str] = (),
    workers: int | None = None,
) -> Path:
    """Train (or keep training) an expression animator within a wall-clock budget; returns the run directory.

    The one call behind the quickstart: ``minutes`` covers everything, rendering the pair
    caches included (they are cached, so a second call trains for nearly all of it).

    Args:
        path: a runs directory (a new ``NNNNN-animator-<size>`` run is created in it, or with
            ``resume`` its newest animator run of that ``size`` continues), or an animator run
            directory (continued with ``resume``; otherwise a new run is created next to it).
        size: resolution (multiple of 8, 32-512). 64 px is the CPU-friendly choice.
        minutes: total wall-clock budget (> 0); budgets up to 10 minutes render 200 training
            and 12 held-out identities instead of 2000 and 24. See docs/animate.md ("How good
            is a short run") for the quality per kimg and what 4 minutes give.
        resume: continue the newest matching run instead of starting over.
        progress: show a progress bar and messages.
        overrides: extra ``KEY=VALUE`` config overrides (see docs/animate.md), applied last.
        workers: render processes for the pair caches (default: 2 when the machine has 2+ cores).

    Raises:
        ConfigError: a bad ``size``, ``minutes`` or override (the message names the key).
    """
    t0 = time.monotonic()
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not minutes > 0:
        raise ConfigError(f"minutes must be a number > 0, got {minutes!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 32 or size > 512 or size % 8:
        raise ConfigError(f"size must be a multiple of 8 from 32 to 512, got {size!r}")
    root = Path(path)
    run: Path | None = None
    if _animator_run_size(root) is not None:  # a run directory
        run = root if resume else None
        runs_dir = root.parent
    else:
        runs_dir = root
        run = find_animator_run(root, size) if resume else None
    if run is not None and _animator_run_size(run) != size:
        raise ConfigError(
            f"{run} was trained at {_animator_run_size(run)} px, not size={size}; pass its size or resume=False"
        )
    if workers is None:
        workers = 2 if (os.cpu_count() or 1) >= 2 else 0
    cli: dict[str, Any] = {"runs_dir": str(runs_dir), "kimg": None, "log": {"progress": bool(progress)}}
    base = [
        f"data.size={size}",
        f"data.workers={workers}",
        # One intra-op thread: measured side by side on the shared 2-core box (load ~12), 64 px
        # batch 16 trains at 117-170 pairs/s on 1 thread and 16-20 on 2 (OpenMP threads
        # spin-wait for cores other processes hold). Override with perf.num_threads=2 on an idle machine.
        "perf.num_threads=1",
        # A short run gets a checkpoint every ~1 minute of CPU training, so an interrupted
        # quickstart keeps its progress; samples at the same pace.
        "log.checkpoint_every_kimg=2",
        "log.sample_every_kimg=2",
    ]
    if minutes <= 10:
        base += [
            f"data.identities={QUICK_IDENTITIES}",
            f"data.heldout_identities={QUICK_HELDOUT}",
            f"log.eval_identities={QUICK_HELDOUT}",
        ]
    config_file = run / "config.yaml" if run is not None else None
    if run is not None:
        base = [f"data.workers={workers}", "perf.num_threads=1"]  # keep the run's data and model settings
    cfg = build_animator_config(config_file=config_file, cli=cli, overrides=[*base, "minutes=1", *overrides])
    # Render (or open) the pair caches first, so their time counts against the budget.
    d = cfg.data
    if d.mode == "cache":
        for split, n in ((HELDOUT, d.heldout_identities), (TRAIN, d.identities)):
            build_or_open_cache(
                d.cache_dir or None,
                PairSpec(size=d.size, identities=n, expressions=d.expressions, seed=cfg.seed, split=split),
                workers=d.workers,
                progress=progress,
            )
    # What is left, less a reserve for the final evaluation and checkpoint (~5% of the run).
    left = minutes - (time.monotonic() - t0) / 60
    cfg.minutes = max(0.02, left * 0.95 - 0.1)
    return train(cfg, resume=run)
