"""Stopping cleanly: SIGINT/SIGTERM handling and the NaN/Inf guard's building blocks.

Signals only set a flag; the training loop checks it at step boundaries, writes a checkpoint
and returns normally, so a Ctrl-C or a cluster's SIGTERM before pre-emption never loses more
than the step in flight. A second Ctrl-C aborts immediately (KeyboardInterrupt) for when the
checkpoint itself hangs.

The NaN guard itself lives in the loops (it needs to know what to restore); this module
provides the finiteness checks, the event counter and the exception.
"""

from __future__ import annotations

import signal
import sys
import threading
import warnings
from collections.abc import Iterable
from types import FrameType
from typing import Any

import torch

from avatarforge.errors import EXIT_DIVERGED, CommandFailed

__all__ = ["NaNEvents", "NonFiniteWarning", "StopSignal", "TrainingDiverged", "all_finite", "nonfinite_names"]


class TrainingDiverged(CommandFailed, RuntimeError):
    """Losses or weights kept becoming NaN/Inf after restoring and lowering the learning rate.

    A :class:`~avatarforge.errors.CommandFailed` so that every command reports it the same
    way (``PROG: MESSAGE``, exit code 3); still a RuntimeError for callers that catch that.
    """

    exit_code = EXIT_DIVERGED


class NonFiniteWarning(RuntimeWarning):
    """A NaN/Inf was found and training was rolled back to the last good state."""


class StopSignal:
    """Context manager: SIGINT/SIGTERM set :attr:`requested` instead of killing the process.

    Outside the main thread (where Python cannot install handlers) it does nothing.
    """

    def __init__(self, signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM), quiet: bool = False) -> None:
        self.signals = tuple(signals)
        self.requested = False
        self.signal_name: str | None = None
        self.quiet = quiet
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: the user really wants out
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        if not self.quiet:
            print(
                f"\n{self.signal_name} received: finishing the current step and writing a checkpoint "
                "(press Ctrl-C again to abort without one)",
                file=sys.stderr,
                flush=True,
            )

    def request(self, name: str = "request") -> None:
        """Ask the loop to stop as if a signal had arrived (used by tests and hooks)."""
        self.requested = True
        self.signal_name = name

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, prev in self._previous.items():
            signal.signal(s, prev)
        self._previous.clear()


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """True if every element of every tensor is finite. One host sync for the whole list."""
    flags = [torch.isfinite(t.detach()).all() for t in tensors if t.numel()]
    if not flags:
        return True
    return bool(torch.stack(flags).all().item())


def nonfinite_names(named: Iterable[tuple[str, torch.Tensor]], limit: int = 5) -> list[str]:
    """Names of tensors holding a NaN/Inf (at most ``limit``), for the warning message."""
    out = []
    for name, t in named:
        if t.numel() and not bool(torch.isfinite(t.detach()).all()):
            out.append(name)
            if len(out) >= limit:
                break
    return out


class NaNEvents:
    """Counts NaN/Inf events; the ``max_events``-th raises :class:`TrainingDiverged`."""

    def __init__(self, max_events: int = 3, count: int = 0) -> None:
        self.max_events = max_events
        self.count = count

    @property
    def lr_scale(self) -> float:
        """Learning-rate multiplier after the events so far (halved per event)."""
        return 0.5**self.count

    def record(self, what: str, step: int) -> None:
        """Register one event at ``step``; warn, or raise when the limit is reached."""
        self.count += 1
        if self.count >= self.max_events:
            raise TrainingDiverged(
                f"training diverged: non-finite values ({what}) at step {step}, event {self.count} of "
                f"max_nan_events={self.max_events}, even after restoring the last good state and halving "
                "the learning rates each time. Lower optim.g_lr/optim.d_lr, raise loss.r1_gamma, or "
                "use perf.amp=off."
            )
        warnings.warn(
            f"non-finite values ({what}) at step {step}: restored the last good state and halved the "
            f"learning rates (x{self.lr_scale:g} of the configured values; event {self.count} of "
            f"{self.max_events - 1} allowed)",
            NonFiniteWarning,
            stacklevel=2,
        )
