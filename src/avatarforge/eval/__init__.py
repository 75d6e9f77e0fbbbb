"""Evaluation of generated avatars: FID, KID, precision/recall, SWD, attribute accuracy, PSNR/SSIM.

Quick start (see ``docs/evaluation.md``)::

    from avatarforge.eval import evaluate
    result = evaluate("runs/00003-stylegan-64", "data/avatars64", metrics="fid,kid,pr,swd",
                      extractor="avatar", n=5000, out="results.json")
    print(result.summary())

Command line: ``avatarforge eval SOURCE --ref REF [--metrics fid,kid,pr,swd] [--extractor avatar|inception]``.

Modules: :mod:`.evaluate` (the API and the training hook :func:`make_metric_fn`),
:mod:`.training_hook` (:func:`metric_fn_from_config`: the hook a config's ``log.metrics`` names),
:mod:`.metrics` (metric functions and registry), :mod:`.extractors` (feature-extractor
interface and registry), :mod:`.inception` (FID Inception-v3), :mod:`.avatar_net` (the
avatar attribute network), :mod:`.sources` (image sources), :mod:`.stats_cache`
(reference-statistics cache), :mod:`.cli` (the ``eval`` subcommand).
"""

from __future__ import annotations

from avatarforge.lazy import lazy_attributes

__all__ = [
    "EvalResult",
    "evaluate",
    "get_extractor",
    "list_extractors",
    "list_metrics",
    "make_metric_fn",
    "metric_fn_from_config",
    "register_extractor",
    "register_metric",
]

_LAZY = {
    "EvalResult": "avatarforge.eval.evaluate",
    "evaluate": "avatarforge.eval.evaluate",
    "make_metric_fn": "avatarforge.eval.evaluate",
    "metric_fn_from_config": "avatarforge.eval.training_hook",
    "get_extractor": "avatarforge.eval.extractors",
    "list_extractors": "avatarforge.eval.extractors",
    "register_extractor": "avatarforge.eval.extractors",
    "list_metrics": "avatarforge.eval.metrics",
    "register_metric": "avatarforge.eval.metrics",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
