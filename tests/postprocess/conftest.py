"""Images shared by the post-processing tests (small, seeded, built in milliseconds)."""

from __future__ import annotations

import numpy as np
import pytest

from avatarforge.data.procedural import render_avatar


def square_on_hidden(
    color=(255, 0, 0), hidden=(0, 255, 0), size: int = 32, lo: int = 8, hi: int = 24
) -> np.ndarray:
    """An opaque square of ``color`` on fully transparent pixels whose (invisible) RGB is
    ``hidden``: the classic trap for filters that ignore alpha."""
    img = np.zeros((size, size, 4), np.uint8)
    img[..., :3] = hidden
    img[lo:hi, lo:hi, :3] = color
    img[lo:hi, lo:hi, 3] = 255
    return img


def with_hidden(image: np.ndarray, hidden=(0, 255, 0)) -> np.ndarray:
    """A copy whose fully transparent pixels carry ``hidden`` as RGB."""
    out = image.copy()
    out[out[..., 3] == 0, :3] = hidden
    return out


@pytest.fixture(scope="session")
def avatar() -> np.ndarray:
    """A 64 px procedural avatar: RGBA with antialiased (soft) edges, RGB 0 where clear."""
    img = render_avatar(7, 64)
    img.setflags(write=False)  # ops must never write into their input
    return img


@pytest.fixture(scope="session")
def avatar_rgb() -> np.ndarray:
    img = render_avatar(7, 64, background=True)
    img.setflags(write=False)
    return img
