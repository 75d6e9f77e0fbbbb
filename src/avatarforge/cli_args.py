"""The flags every training command shares: ``avatarforge train``, ``style train`` and
``animate train`` stop, resume and name their runs the same way.

Each command adds its own flags around these (in the order its help lists them) and turns
the shared ones into the ``cli`` layer of its config with :func:`run_settings`. Building a
parser imports nothing heavy; :func:`resumed_config` looks the run up when a command runs.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

__all__ = [
    "OVERRIDE_RE",
    "add_device_argument",
    "add_resume_arguments",
    "add_run_dir_arguments",
    "add_stop_arguments",
    "config_file",
    "resumed_config",
    "run_settings",
]

#: A ``KEY=VALUE`` config override among positional arguments.
OVERRIDE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*=")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device`` of a command that runs networks outside a training run (default ``auto``)."""
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda")


def add_stop_arguments(parser: argparse.ArgumentParser, counted: str) -> None:
    """``--minutes M`` and ``--kimg K`` (stop after K thousand ``counted``, e.g. ``images``)."""
    parser.add_argument("--minutes", type=float, metavar="M", help="stop after M minutes (this session)")
    parser.add_argument("--kimg", type=float, metavar="K", help=f"stop after K thousand {counted}")


def add_resume_arguments(parser: argparse.ArgumentParser) -> None:
    """``--resume RUN`` and ``--config FILE.yaml``."""
    parser.add_argument("--resume", metavar="RUN", help="continue a run (its config and latest checkpoint)")
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML config file")


def add_run_dir_arguments(
    parser: argparse.ArgumentParser, desc_default: str, device_help: str = "default: auto"
) -> None:
    """``--device``, ``--runs-dir``, ``--desc`` (default ``desc_default``) and ``--dry-run``."""
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help=device_help)
    parser.add_argument("--runs-dir", metavar="DIR", help="where run directories are created (default: runs)")
    parser.add_argument("--desc", metavar="TEXT", help=f"run directory suffix (default: {desc_default})")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config (YAML) and exit")


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys the shared flags set: ``minutes``, ``kimg``, ``device``, ``runs_dir``
    and ``desc`` where given."""
    cli: dict[str, Any] = {}
    if args.minutes is not None:
        cli["minutes"] = args.minutes
    if args.kimg is not None:
        cli["kimg"] = args.kimg
    for key in ("device", "runs_dir", "desc"):
        if getattr(args, key, None):
            cli[key] = getattr(args, key)
    return cli


def config_file(args: argparse.Namespace) -> str | Path | None:
    """The config file a training command starts from: ``--config``, else with ``--resume`` the
    resumed run's saved ``config.yaml`` (None when neither)."""
    return resumed_config(args.resume, args.config)[1] if args.resume else args.config


def resumed_config(resume: str, config_file: str | Path | None) -> tuple[Path, str | Path | None]:
    """``(run directory, config file)`` for ``--resume RUN``: ``config_file`` when given, else
    the run's saved ``config.yaml`` (None when it has none)."""
    from avatarforge.runs import find_checkpoint

    run_dir = find_checkpoint(resume).parent.parent
    saved = run_dir / "config.yaml"
    if config_file is None and saved.is_file():
        config_file = saved
    return run_dir, config_file
