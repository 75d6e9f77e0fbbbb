"""The in-training evaluation hook a training config asks for: :func:`metric_fn_from_config`.

Training (:mod:`avatarforge.train`) sits below evaluation and takes the hook as a callable
(``metric_fn``); whoever starts a run composes the two: the ``avatarforge train`` command,
the quickstart, or a Python caller of :func:`avatarforge.train.train`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from avatarforge.config import ConfigError

__all__ = ["metric_fn_from_config"]


def metric_fn_from_config(config: Any) -> Callable[[Any], dict[str, float]] | None:
    """The metric hook ``log.metrics`` asks for, or None when it is empty (or the family's
    config has no such key).

    Metrics are computed on ``log.metric_images`` samples of the EMA generator against the
    run's data set, every ``log.metric_every_kimg`` and at the end, appended to
    ``metrics.jsonl``; ``log.best_metric`` keeps ``checkpoints/best/`` by one of them.

    Raises:
        ConfigError: an unknown metric name (the message lists the valid ones).
    """
    names = list(getattr(config.log, "metrics", None) or [])
    if not names:
        return None
    from avatarforge.eval.evaluate import make_metric_fn
    from avatarforge.eval.metrics import list_metrics

    unknown = [m for m in names if m not in list_metrics()]
    if unknown:
        raise ConfigError(f"log.metrics: unknown {unknown}; valid metrics: {', '.join(list_metrics())}")
    return make_metric_fn(
        metrics=names, num_images=config.log.metric_images, extractor=config.log.metric_extractor
    )
