"""Seeds and image counting of the training loops: derived seeds, seeded generators, kimg ticks."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["crossed", "delayed_ramp", "derive_seed", "make_generator", "seeded_init"]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (SplitMix64), so streams of nearby seeds are unrelated."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 29
    return x & 0x7FFFFFFFFFFFFFFF


def make_generator(device: torch.device, *seed_parts: int) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with :func:`derive_seed` of ``seed_parts``."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(*seed_parts))
    return g


@contextmanager
def seeded_init(*seed_parts: int) -> Iterator[None]:
    """Inside: the global CPU RNG seeded with :func:`derive_seed` of ``seed_parts``, for network
    initialisation; after: the RNG as it was, so user hooks that draw from it are not moved
    by building the models."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(*seed_parts))
        yield


def delayed_ramp(kimg: float, weight: float, start_kimg: float, ramp_kimg: float) -> float:
    """A loss weight at ``kimg``: 0 until ``start_kimg``, then a linear ramp to ``weight`` over
    ``ramp_kimg`` (at once when ``ramp_kimg <= 0``); 0 throughout when ``weight <= 0``."""
    kimg = kimg - start_kimg
    if weight <= 0 or kimg < 0:
        return 0.0
    return weight * (1.0 if ramp_kimg <= 0 else min(1.0, kimg / ramp_kimg))


def crossed(prev_nimg: int, nimg: int, every_kimg: float) -> bool:
    """True if a multiple of ``every_kimg`` thousand images lies in ``(prev_nimg, nimg]``."""
    if every_kimg <= 0:
        return False
    every = every_kimg * 1000.0
    return math.floor(nimg / every) > math.floor(prev_nimg / every)
