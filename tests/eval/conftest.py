"""Fixtures for the evaluation tests.

Every test runs with ``AVATARFORGE_CACHE`` pointing at one session-wide temporary directory,
so nothing touches ``~/.cache`` and the avatar attribute net (trained on first use, about a
minute on 2 cores) is trained once per session and shared.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from avatarforge.eval.extractors import FeatureExtractor, register_extractor
from tests.conftest import TRAIN_SEED


@pytest.fixture(scope="session")
def eval_cache(tmp_path_factory) -> Path:
    """The session's cache directory (also set as $AVATARFORGE_CACHE for every eval test)."""
    return tmp_path_factory.mktemp("avatarforge-cache")


@pytest.fixture(autouse=True)
def _cache_env(eval_cache, monkeypatch):
    monkeypatch.setenv("AVATARFORGE_CACHE", str(eval_cache))
    # One intra-op thread: on a shared 2-core machine a second OpenMP thread waiting for a
    # busy core makes these small tensor ops several times slower, not faster.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def avatar_extractor(eval_cache):
    """The default-recipe avatar extractor, trained once into the session cache.

    Set ``AVATARFORGE_TEST_AVATAR_CACHE=DIR`` to keep the trained net in DIR between test
    sessions (it is keyed by the recipe hash; bump ``AvatarNetRecipe.version`` when changing
    the training code, or the old net is reused).
    """
    from avatarforge.eval.avatar_net import DEFAULT_RECIPE, AvatarExtractor

    root = os.environ.get("AVATARFORGE_TEST_AVATAR_CACHE") or eval_cache
    recipe = dataclasses.replace(DEFAULT_RECIPE, seed=TRAIN_SEED) if TRAIN_SEED else None
    ext = AvatarExtractor(cache_dir=root, recipe=recipe)
    print(
        f"\navatar net report: {ext.report.get('accuracy')} "
        f"eye_color_eyes_open={ext.report.get('eye_color_eyes_open')} "
        f"train_s={ext.report.get('train_seconds')} render_s={ext.report.get('render_seconds')}"
    )
    return ext


class TinyExtractor(FeatureExtractor):
    """A cheap, weight-free extractor for flow tests: 4x4 average-pooled colours (48-d)."""

    name = "tiny"
    feature_dim = 48
    input_size = 0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) * 4.0


@register_extractor("tiny")
def _make_tiny(weights=None, device="cpu", **kwargs) -> FeatureExtractor:
    return TinyExtractor().to(device)


def procedural_images(n: int, size: int = 64, seed: int = 0, **fixed) -> np.ndarray:
    """(n, size, size, 3) uint8 procedural avatars on their backgrounds."""
    from avatarforge.data import procedural as P

    return np.stack(
        [P.render(P.sample_attributes(seed + i, **fixed), size, background=True) for i in range(n)]
    )
