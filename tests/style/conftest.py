"""Shared fixtures for the style tests: small images and tiny packed data sets.

Every test here runs on CPU with one intra-op thread (the box is shared; more threads make
these tiny convolutions slower, not faster).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avatarforge.data.packed import PackedWriter
from avatarforge.data.procedural import render_avatar
from avatarforge.style.classical import rgb_to_lab, split_alpha, weighted_mean_std


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def lab_stats(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Alpha-weighted Lab mean and std of an (H, W, 3|4) uint8 image."""
    rgb, a = split_alpha(image)
    w = np.ones(rgb.shape[:2]) if a is None else a / 255.0
    return weighted_mean_std(rgb_to_lab(rgb), w)


def lab_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Euclidean distance between the Lab means of two images (visible pixels)."""
    return float(np.linalg.norm(lab_stats(x)[0] - lab_stats(y)[0]))


def warm_texture(h: int = 64, w: int = 64) -> np.ndarray:
    """(H, W, 3) an orange/red striped texture, far from the avatars' colours in Lab."""
    yy, xx = np.mgrid[:h, :w]
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.clip(200 + 40 * np.sin(xx / 3.0), 0, 255)
    img[..., 1] = np.clip(90 + 50 * np.sin(yy / 5.0), 0, 255)
    img[..., 2] = 40
    return img


@pytest.fixture(scope="session")
def avatar64() -> np.ndarray:
    """(64, 64, 4) a procedural avatar: RGBA with transparent background and soft edges."""
    return render_avatar(3, 64)


@pytest.fixture(scope="session")
def texture64() -> np.ndarray:
    return warm_texture()


def make_domain_sets(root: Path, n: int = 8, size: int = 32) -> tuple[Path, Path]:
    """Two packed RGBA sets: procedural avatars (A) and the same avatars recoloured (B: R,G,B -> B,R,G)."""
    with (
        PackedWriter(root / "a", size=size, channels=4) as wa,
        PackedWriter(root / "b", size=size, channels=4) as wb,
    ):
        for i in range(n):
            img = render_avatar(i, size)
            wa.add(img, source=f"a{i}.png")
            rec = img.copy()
            rec[..., :3] = img[..., [2, 0, 1]]
            wb.add(rec, source=f"b{i}.png")
    return root / "a", root / "b"


@pytest.fixture(scope="session")
def domain_sets(tmp_path_factory) -> tuple[Path, Path]:
    return make_domain_sets(tmp_path_factory.mktemp("domains"))
