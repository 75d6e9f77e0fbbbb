"""Shared fixtures. Tests run on CPU with small, seeded models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED_FACES = ROOT.parent / "shared" / "data" / "anime-faces-96"


@pytest.fixture(autouse=True)
def _seed_everything():
    # Tests must not depend on what ran before them.
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def shared_faces() -> Path:
    """The shared real anime-faces folder; tests using it skip cleanly when it is absent."""
    if not SHARED_FACES.is_dir():
        pytest.skip(f"shared data set not found at {SHARED_FACES} (only present beside the project checkout)")
    return SHARED_FACES


def make_packed(
    path: Path, n: int = 16, size: int = 32, channels: int = 3, seed: int = 0, labelled: bool = True
):
    """A tiny packed data set of seeded random blobs with two labels (for tests of other modules)."""
    from avatarforge.data.packed import LabelField, LabelSchema, PackedWriter

    rng = np.random.default_rng(seed)
    schema = LabelSchema(
        (LabelField("color", "categorical", ("red", "green", "blue")), LabelField("smile", "continuous"))
    )
    with PackedWriter(path, size=size, channels=channels, schema=schema) as w:
        for i in range(n):
            img = np.zeros((size, size, channels), np.uint8)
            c = i % 3
            yy, xx = np.mgrid[:size, :size]
            cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
            blob = (yy - cy) ** 2 + (xx - cx) ** 2 < (size // 4) ** 2
            img[blob, c] = 255
            if channels == 4:
                img[blob, 3] = 255
            labels = {"color": c, "smile": float(rng.random())} if labelled and i % 4 else None
            w.add(img, source=f"blob{i}.png", labels=labels)
    return path
