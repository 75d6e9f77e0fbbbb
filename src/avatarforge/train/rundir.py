"""Run directories ``runs/NNNNN-<desc>/``, numbered without races.

Two trainings started at the same moment (two shells, a job array) must never get the same
number. The number is picked and the directory created while holding an exclusive lock on
``runs/.lock`` (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows); the OS drops the
lock if the process dies, so a crash never leaves a stale lock behind. The final
``mkdir(exist_ok=False)`` is a second guard: if it fails, the next number is tried.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

__all__ = ["allocate_run_dir", "run_number", "sanitize_desc"]

_RUN_RE = re.compile(r"^(\d{5,})-")


def sanitize_desc(desc: str) -> str:
    """A run description safe in a directory name: ``[A-Za-z0-9._-]``, at most 64 characters."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", desc.strip()).strip("-.")
    return s[:64] or "run"


def run_number(path: str | os.PathLike) -> int | None:
    """The ``NNNNN`` of a run directory name, or None if it is not one."""
    m = _RUN_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def allocate_run_dir(runs_dir: str | os.PathLike, desc: str) -> Path:
    """Create and return ``runs_dir/NNNNN-desc`` with ``NNNNN`` one above the highest in use."""
    runs = Path(runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    desc = sanitize_desc(desc)
    with _locked(runs / ".lock"):
        used = [n for p in runs.iterdir() if (n := run_number(p)) is not None]
        n = max(used, default=-1) + 1
        while True:
            path = runs / f"{n:05d}-{desc}"
            try:
                path.mkdir()
                return path
            except FileExistsError:
                n += 1
