"""The config sections the engine's families share: optimiser, EMA and log sections, their
checks, and the builder of a family's config.

The animator (:mod:`avatarforge.animate.config`), the refiner
(:mod:`avatarforge.train.refiner_config`), the part segmenter
(:mod:`avatarforge.train.parts_config`) and CycleGAN (:mod:`avatarforge.style.train_cyclegan`)
each have a config tree of their own (their ``model``, ``data`` and ``loss`` sections differ),
but the rest is one idea with per-family defaults: a family subclasses the section here and
re-declares the defaults it differs in. Keys and defaults are those the families had, and
so are the messages (``ema.kimg`` now says what 0 means everywhere); a family's ``validate``
checks :func:`family_checks` and then its own ranges.

Key order: a section whose family adds a key in the middle is built from two parts,
``class XLogConfig(CheckpointLog, _XHead)``; a dataclass takes its bases' fields in reverse
order of the bases, so the head's keys come first and :class:`CheckpointLog`'s last, the
order every saved ``config.yaml`` has (the same rule as :class:`~avatarforge.config.RunSettings`).

Importing it does not import torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from avatarforge.config import budget_checks, checkpoint_minutes_check, layered_config

__all__ = [
    "AdamConfig",
    "CheckpointLog",
    "EMAConfig",
    "GanAdamConfig",
    "MetricLog",
    "MetricLogConfig",
    "SampleLog",
    "config_builder",
    "family_checks",
]

T = TypeVar("T")


@dataclass
class AdamConfig:
    """Adam for a family with one network to optimise."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)

    def checks(self) -> list[tuple[bool, str]]:
        """Validation checks (``check_all`` items) of these fields."""
        return [
            (self.lr > 0, "optim.lr must be > 0"),
            (all(0 <= b < 1 for b in self.betas), "optim.betas must be in [0, 1)"),
        ]


@dataclass
class GanAdamConfig:
    """Adam for G (``lr``) and D (``d_lr``)."""

    lr: float = 1e-3
    d_lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)

    def checks(self) -> list[tuple[bool, str]]:
        """Validation checks (``check_all`` items) of these fields."""
        return [
            (self.lr > 0 and self.d_lr > 0, "optim.lr and optim.d_lr must be > 0"),
            (all(0 <= b < 1 for b in self.betas), "optim.betas must be in [0, 1)"),
        ]


@dataclass
class EMAConfig:
    """EMA of the trained network's weights (what samples, evaluation and export use)."""

    kimg: float = 1.0  # half-life in thousands of training examples; 0 = no averaging
    rampup: float | None = 0.1  # early on, half-life <= rampup x examples seen; None = no ramp-up

    def checks(self) -> list[tuple[bool, str]]:
        """Validation checks (``check_all`` items) of these fields."""
        return [(self.kimg >= 0, "ema.kimg must be >= 0 (0 = no averaging)")]


@dataclass
class SampleLog:
    """The head of a log section: metrics lines and sample grids."""

    every_steps: int = 50  # metrics.jsonl line, NaN/Inf check
    sample_every_kimg: float = 10.0  # sample grid; 0 = only at the end
    num_samples: int = 8  # examples in a grid


@dataclass
class CheckpointLog:
    """The tail of a log section: checkpoints and the progress bar."""

    checkpoint_every_kimg: float = 10.0  # 0 = only at the end (and on signals)
    # Also checkpoint when this many minutes of wall time passed since the last checkpoint
    # (or the start), so a crash early in a long kimg interval does not lose the run; 0 = off.
    checkpoint_every_minutes: float = 10.0
    keep_last: int = 3
    progress: bool = True


@dataclass
class MetricLog(SampleLog):
    """A log head with held-out evaluation."""

    metric_every_kimg: float = 0.0  # held-out evaluation; 0 = only at the end


@dataclass
class MetricLogConfig(CheckpointLog, MetricLog):
    """A log section with held-out evaluation (the refiner's and part segmenter's)."""


def family_checks(cfg: Any, trainer: str) -> list[tuple[bool, str]]:
    """The checks every family's ``validate`` shares, for a config with ``optim``, ``log``,
    ``perf`` and the :class:`~avatarforge.config.RunSettings` fields (and ``ema`` where it has
    one); ``trainer`` names the trainer in the message that rules out fp16."""
    lg = cfg.log
    ema = cfg.ema.checks() if hasattr(cfg, "ema") else []
    return [
        *budget_checks(cfg),
        *cfg.optim.checks(),
        *ema,
        (lg.every_steps >= 1 and lg.keep_last >= 1 and lg.num_samples >= 1, "log values must be >= 1"),
        checkpoint_minutes_check(lg.checkpoint_every_minutes),
        (cfg.max_nan_events >= 1, "max_nan_events must be >= 1"),
        # fp16 needs a loss scaler that only the GAN trainer has.
        (cfg.perf.amp != "fp16", f"perf.amp=fp16 is not supported by the {trainer} trainer; use bf16 or off"),
    ]


def config_builder(cls: type[T], name: str) -> Callable[..., T]:
    """The function ``name`` (``build_<family>_config``) of config class ``cls``: defaults <
    ``config_file`` (YAML, e.g. a run's ``config.yaml``) < ``cli`` dict < ``key=value``
    overrides, validated."""

    def build(
        *,
        config_file: str | os.PathLike | None = None,
        cli: Mapping[str, Any] | None = None,
        overrides: Sequence[str] = (),
    ) -> T:
        return layered_config(cls, config_file=config_file, cli=cli, overrides=overrides)

    # Named and placed as if written in the family's module (help(), tracebacks, the docs).
    build.__name__ = build.__qualname__ = name
    build.__module__ = cls.__module__
    build.__doc__ = (
        f"A validated :class:`{cls.__name__}`: defaults < ``config_file`` (YAML, e.g. a run's "
        "``config.yaml``) < ``cli`` dict < ``key=value`` overrides."
    )
    return build
