"""Fixtures the training tests share."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import make_packed


@pytest.fixture(autouse=True)
def _restore_threads():
    # Trainers set torch's thread count from perf.num_threads; put it back for the next test.
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory) -> Path:
    """16 random-blob RGB images at 32 px with a categorical and a continuous label."""
    return make_packed(tmp_path_factory.mktemp("data") / "blobs", n=16, size=32)
