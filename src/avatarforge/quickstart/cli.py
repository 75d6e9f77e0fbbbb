"""``avatarforge quickstart`` (and its alias ``avatarforge demo``): thin wrapper over
:func:`avatarforge.quickstart.run_quickstart`."""

from __future__ import annotations

import argparse
import sys

# Ctrl-C / SIGTERM during training (checkpoint saved; rerun to resume) exits 130, the shell
# convention for SIGINT; re-exported here, where it always was.
from avatarforge.errors import EXIT_INTERRUPTED, EXIT_OK

__all__ = ["EXIT_INTERRUPTED", "add_quickstart_arguments", "quickstart_main"]


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of minutes > 0 (e.g. 10), got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0 (the total time budget, e.g. 10), got {text!r}")
    return value


def add_quickstart_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the quickstart flags to ``p``."""
    p.description = (
        "Render a built-in procedural avatar data set, train a conditional generator for the time "
        "budget, train the 512-px refiner, evaluate, train the 64-px expression animator, and write "
        "sample/attribute grids, 512-px avatars, an interpolation GIF, a transparent 512-px animated "
        "avatar (the live rig), metrics.json and a self-contained report.html into OUT. Interrupt any time; rerun the same command to resume. "
        "See docs/quickstart.md."
    )
    p.add_argument(
        "--minutes",
        type=_minutes,
        default=10.0,
        help="total time budget in minutes (default 10): 55%% generator training, 20%% refiner, 8%% part "
        "segmenter, 5%% animator, the rest data/evaluation/outputs; rerun with more to train further",
    )
    p.add_argument("--out", default="runs/quickstart", help="output directory (default runs/quickstart)")
    p.add_argument(
        "--model",
        choices=["auto", "stylegan", "cgan"],
        default="auto",
        help="generator: stylegan (conditional StyleGAN2-style), cgan (narrow conditional DCGAN, much "
        "faster on a CPU), auto (default): stylegan with CUDA, cgan on a CPU",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="seeds data, training and samples (default 0)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: 1 on a CPU, which measured far faster than 2 when the machine is busy)",
    )
    p.add_argument(
        "--images", type=int, default=5000, help="procedural avatars in the data set (default 5000)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or stage lines")
    p.set_defaults(func=quickstart_main)
    return p


def quickstart_main(a: argparse.Namespace) -> int:
    """Run the quickstart from parsed arguments; returns the exit code."""
    from avatarforge.quickstart.pipeline import QuickstartInterrupted, run_quickstart

    try:
        run_quickstart(
            a.out,
            minutes=a.minutes,
            device=a.device,
            seed=a.seed,
            progress=not a.quiet,
            model=a.model,
            threads=a.threads,
            n_images=a.images,
        )
    except QuickstartInterrupted as e:
        print(f"avatarforge quickstart: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(
            "\navatarforge quickstart: interrupted; finished stages are kept. Rerun the same command to resume.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return EXIT_OK
