"""``metrics.jsonl``: one JSON object per line, appended as training goes; optional TensorBoard.

Every line has ``kind`` (``"train"`` for the periodic loss/speed record, ``"metric"`` for the
evaluation hook's results), ``step`` and ``kimg``. The file is opened in append mode and
flushed after every line, so ``tail -f`` works and a crash loses at most the line being
written. When a run is resumed, lines logged after the checkpoint (work that is redone) are
dropped first with :func:`truncate_metrics`, so the file never holds a step twice.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from avatarforge.errors import MissingDependencyError
from avatarforge.fileio import atomic_write_text

__all__ = [
    "METRICS_NAME",
    "MetricsLog",
    "read_metrics",
    "require_tensorboard",
    "truncate_metrics",
]

METRICS_NAME = "metrics.jsonl"


def _clean(v: Any) -> Any:
    # JSON has no NaN/Inf; write them as strings so every line stays valid JSON.
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def require_tensorboard() -> Any:
    """``SummaryWriter``, or :class:`MissingDependencyError` saying how to install it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # the tensorboard package is missing
        raise MissingDependencyError(
            "TensorBoard logging (--tensorboard / log.tensorboard=true) needs the 'tensorboard' package: "
            "pip install tensorboard  (metrics.jsonl is written either way)"
        ) from e
    return SummaryWriter


def _tensorboard_writer(log_dir: Path) -> Any:
    return require_tensorboard()(log_dir=str(log_dir))


class MetricsLog:
    """Appends records to ``run_dir/metrics.jsonl`` (and TensorBoard events when asked).

    Args:
        run_dir: the run directory.
        tensorboard: also write TensorBoard scalars to ``run_dir/tensorboard``; raises
            :class:`MissingDependencyError` at construction if the package is missing.
        enabled: False makes every call a no-op (non-zero ranks).
    """

    def __init__(self, run_dir: str | os.PathLike, tensorboard: bool = False, enabled: bool = True) -> None:
        self.path = Path(run_dir) / METRICS_NAME
        self.enabled = enabled
        self._tb = _tensorboard_writer(Path(run_dir) / "tensorboard") if (tensorboard and enabled) else None
        self._fh = open(self.path, "a", encoding="utf-8") if enabled else None  # noqa: SIM115 - closed in close()

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record; numeric fields also go to TensorBoard as ``<kind>/<name>``."""
        if self._fh is None:
            return
        self._fh.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        self._fh.flush()
        if self._tb is not None:
            kind = record.get("kind", "train")
            x = round(float(record.get("kimg", 0.0)) * 1000)  # images seen: comparable across batch sizes
            for k, v in record.items():
                if (
                    k not in ("kind", "step", "kimg")
                    and isinstance(v, (int, float))
                    and not isinstance(v, bool)
                ):
                    self._tb.add_scalar(f"{kind}/{k}", v, global_step=x)
            self._tb.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: str | os.PathLike, kind: str | None = None) -> list[dict[str, Any]]:
    """Records of a ``metrics.jsonl`` (or of a run directory's), optionally of one ``kind``.

    A torn last line (the process died mid-write) is skipped.
    """
    p = Path(path)
    if p.is_dir():
        p = p / METRICS_NAME
    out = []
    if not p.is_file():
        return out
    for line in p.read_text("utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if kind is None or rec.get("kind") == kind:
            out.append(rec)
    return out


def truncate_metrics(path: str | os.PathLike, step: int) -> int:
    """Drop records with ``step`` greater than ``step`` (atomic rewrite); returns how many."""
    p = Path(path)
    if p.is_dir():
        p = p / METRICS_NAME
    if not p.is_file():
        return 0
    kept, dropped = [], 0
    for line in p.read_text("utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if int(rec.get("step", 0)) > step:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        atomic_write_text(p, "".join(line + "\n" for line in kept))
    return dropped
