"""Which trainer trains a config: the table of training families, :func:`make_trainer` and :func:`train`.

Every model family is a subclass of the one training engine
(:class:`~avatarforge.train.engine.Trainer`). :data:`FAMILIES` maps a family's name to its
config class and its trainer class: ``gan`` and ``vae`` share
:class:`~avatarforge.config.TrainConfig` (``model.name``'s registry role decides: models
registered as VAEs train with ``vae``), ``animator`` and ``cyclegan`` have config classes of
their own. Families above this package (the animator, CycleGAN) enter the table with
:func:`register_family` where their config class is defined, so ``avatarforge.train`` never
imports them and a config object's family is known as soon as the object exists.

The command line (``avatarforge train``, ``animate train``, ``style train``), the quickstart
and Python callers all go through :func:`train` (or :func:`make_trainer` when they need the
trainer object): nobody picks a trainer class by hand, and no class is named by user input.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avatarforge.config import ConfigError, TrainConfig

__all__ = ["FAMILIES", "Family", "family_of", "make_trainer", "register_family", "train", "trainer_class"]


@dataclass(frozen=True)
class Family:
    """A training family: its config class and how to get its trainer class.

    ``load`` imports the trainer on first use: trainers import torch, and importing a config
    (or ``avatarforge.train``) must not.
    """

    name: str
    config: type
    load: Callable[[], type]


def _gan_trainer() -> type:
    from avatarforge.train.gan import GANTrainer

    return GANTrainer


def _vae_trainer() -> type:
    from avatarforge.train.vae import VAETrainer

    return VAETrainer


#: family name -> :class:`Family`.
FAMILIES: dict[str, Family] = {
    "gan": Family("gan", TrainConfig, _gan_trainer),
    "vae": Family("vae", TrainConfig, _vae_trainer),
}


def register_family(name: str, config: type, load: Callable[[], type]) -> None:
    """Add a family whose configs are instances of ``config``; ``load()`` returns its trainer class.

    Raises:
        ValueError: ``config`` belongs to another family already.
    """
    for fam in FAMILIES.values():
        if fam.config is config and fam.name != name:
            raise ValueError(f"{config.__name__} is the config of training family {fam.name!r}, not {name!r}")
    FAMILIES[name] = Family(name, config, load)


def family_of(config: Any) -> str:
    """The name of the family that trains ``config`` (a key of :data:`FAMILIES`).

    Raises:
        ConfigError: ``config`` is no family's configuration.
    """
    if isinstance(config, TrainConfig):
        from avatarforge.models.registry import list_models

        return "vae" if config.model.name in list_models("vae") else "gan"
    for fam in FAMILIES.values():
        if fam.config is not TrainConfig and isinstance(config, fam.config):
            return fam.name
    known = ", ".join(sorted({f.config.__name__ for f in FAMILIES.values()}))
    raise ConfigError(f"{type(config).__name__} is not a training configuration ({known})")


def trainer_class(config: Any) -> type:
    """The :class:`~avatarforge.train.engine.Trainer` subclass that trains ``config``."""
    return FAMILIES[family_of(config)].load()


def make_trainer(
    config: Any,
    *,
    resume: str | os.PathLike | None = None,
    step_hook: Callable[[Any], None] | None = None,
    metric_fn: Callable[[Any], Mapping[str, float]] | None = None,
) -> Any:
    """The trainer for ``config``, set up but not started (see :func:`train` for the arguments)."""
    metrics = list(getattr(config.log, "metrics", None) or [])
    if metrics and metric_fn is None:
        # Evaluation lives above training (avatarforge.eval): the caller composes the two.
        raise ConfigError(
            f"log.metrics={metrics} needs the metric hook: pass "
            "metric_fn=avatarforge.eval.metric_fn_from_config(config)"
        )
    return trainer_class(config)(config, resume=resume, step_hook=step_hook, metric_fn=metric_fn)


def train(
    config: Any,
    *,
    resume: str | os.PathLike | None = None,
    step_hook: Callable[[Any], None] | None = None,
    metric_fn: Callable[[Any], Mapping[str, float]] | None = None,
) -> Path:
    """Train ``config`` with its family's trainer until ``kimg``/``minutes``/a signal; returns
    the run directory.

    Args:
        config: a resolved :class:`~avatarforge.config.TrainConfig` (GANs, VAEs),
            :class:`~avatarforge.animate.config.AnimatorConfig` or
            :class:`~avatarforge.style.train_cyclegan.CycleGANConfig`.
        resume: a run directory or checkpoint to continue (from its newest intact checkpoint).
        step_hook: ``step_hook(trainer)`` after every step (``trainer.stop.request()`` stops).
        metric_fn: evaluation hook ``metric_fn(trainer) -> {name: value}``, run every
            ``log.metric_every_kimg`` and at the end; required when ``log.metrics`` is set
            (:func:`avatarforge.eval.metric_fn_from_config` builds the one it names).

    Raises:
        ConfigError: a setting the family cannot use.
        TrainingDiverged: NaN/Inf kept coming back (``max_nan_events``).
        OSError: a checkpoint could not be written (e.g. a full disk).
    """
    return make_trainer(config, resume=resume, step_hook=step_hook, metric_fn=metric_fn).fit()
