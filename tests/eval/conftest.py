"""Fixtures for the evaluation tests.

Every test runs with ``AVATARFORGE_CACHE`` pointing at one session-wide temporary directory
(``eval_cache``, tests/conftest.py), so nothing touches ``~/.cache``; the avatar attribute
net (``avatar_extractor``, tests/conftest.py: trained on first use, about a minute on 2
cores) is trained once per session and shared with the other test directories.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatarforge.eval.extractors import FeatureExtractor, register_extractor


@pytest.fixture(autouse=True)
def _cache_env(eval_cache, monkeypatch):
    monkeypatch.setenv("AVATARFORGE_CACHE", str(eval_cache))
    # One intra-op thread: on a shared 2-core machine a second OpenMP thread waiting for a
    # busy core makes these small tensor ops several times slower, not faster.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
