"""Training data of the part segmenter: (degraded whole avatar, its part map).

:func:`build_part_pool` renders ``n`` random identities with the built-in renderer, each with
the random expression and head pose :func:`~avatarforge.data.procedural.sample_attributes`
draws for it (as the generators' training data is drawn), as ``(size, size, 4)`` RGBA and its
part map at ``size * target_scale`` (rendered at that size, so a 2x map is the renderer's own
finer outline, not an upsampled one). A 64-px render costs ~7 ms, a 128-px one ~13 ms, so a
pool of a few thousand is built once (in ``workers`` processes) and cached as ``.npy`` files
under the cache directory (``parts-pool/``), like the refiner's pool.

:class:`PartBatches` draws batches from a pool: random items, random horizontal flips (part
ids have no left and right, so the map flips with the picture), small random shifts (the
generator does not centre its avatars to the pixel), and on the input only
:func:`~avatarforge.data.refine_pairs.degrade`'s GAN-like damage (mild blur, noise, colour
shifts, faint alpha specks outside the silhouette, a slightly transparent body). A batch is
a pure function of ``(seed, step)``, so a resumed run sees the same stream as an
uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from avatarforge.data.refine_pairs import (
    HELDOUT,
    TRAIN,
    Degradation,
    cached_render_pool,
    degrade,
    part_label_map,
    split_seed,
    stream_seed,
)
from avatarforge.fileio import default_cache_dir

__all__ = [
    "HELDOUT",
    "POOL_VERSION",
    "TRAIN",
    "PartBatch",
    "PartBatches",
    "PartPool",
    "build_part_pool",
    "part_seed",
]

POOL_VERSION = 1
_SPLIT_STREAM = {TRAIN: 0x9A27, HELDOUT: 0x9A28}


def part_seed(seed: int, split: str, index: int) -> int:
    """The procedural identity seed of pool item ``index`` (train and held-out never meet)."""
    return split_seed(seed, split, index, _SPLIT_STREAM)


@dataclass
class PartPool:
    """``images (N, S, S, 4)`` uint8 straight-alpha RGBA, ``parts (N, T, T)`` uint8 part ids
    (``T = S * target_scale``)."""

    images: np.ndarray
    parts: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _render_one(args: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    from avatarforge.data.procedural import render, sample_attributes

    ident, size, t = args
    attrs = sample_attributes(ident)
    img, masks = render(attrs, size, return_parts=True)
    if t > 1:
        _, masks = render(attrs, size * t, return_parts=True)
    return img, part_label_map(masks, size * t)


def build_part_pool(
    n: int,
    size: int,
    seed: int,
    *,
    target_scale: int = 1,
    split: str = TRAIN,
    cache_dir: str | Path | None = None,
    workers: int = 0,
    progress: bool = False,
    cache: bool = True,
) -> PartPool:
    """``n`` random avatars at ``size`` with part maps at ``size * target_scale``, from the
    cache when there.

    ``cache_dir``: cache root (default ``$AVATARFORGE_CACHE`` or ``~/.cache/avatarforge``);
    ``cache=False`` renders in memory only. ``workers`` > 0 renders in that many processes.
    """
    if target_scale not in (1, 2):
        raise ValueError(f"target_scale must be 1 or 2, got {target_scale}")
    key = f"v{POOL_VERSION}-{split}-{size}px-x{target_scale}-n{n}-seed{seed}"
    announce = ""
    if progress and n >= 256:
        announce = f"rendering {n} {split} avatars at {size}px for the part segmenter (cached afterwards)"
    return PartPool(
        *cached_render_pool(
            Path(cache_dir or default_cache_dir()) / "parts-pool" / key,
            {"n": n, "size": size, "target_scale": target_scale, "seed": seed, "split": split},
            _render_one,
            [(part_seed(seed, split, i), size, target_scale) for i in range(n)],
            workers=workers,
            cache=cache,
            announce=announce,
        )
    )


@dataclass
class PartBatch:
    """``x (B, C, S, S)`` degraded inputs in [-1, 1], ``parts (B, T, T)`` int64 part ids."""

    x: Tensor
    parts: Tensor

    def to(self, device: torch.device | str) -> PartBatch:
        return PartBatch(self.x.to(device), self.parts.to(device))


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``a`` moved by ``(dy, dx)`` pixels, zero (transparent / background) where it came in."""
    if dy == 0 and dx == 0:
        return a
    out = np.zeros_like(a)
    h, w = a.shape[:2]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = a[ys, xs]
    return out


class PartBatches:
    """Batches from a :class:`PartPool` (see the module docstring).

    Args:
        images, parts: the pool's arrays (``parts`` at ``target_scale`` x the images' size).
        seed: the stream's seed; ``degradation``: what :func:`degrade` does to the inputs
            (None = nothing).
        flip: random horizontal flips; ``shift``: largest random shift in input pixels (0 = none).
    """

    def __init__(
        self,
        images: np.ndarray,
        parts: np.ndarray,
        *,
        seed: int,
        degradation: Degradation | None = None,
        flip: bool = True,
        shift: int = 2,
    ) -> None:
        size, tsize = int(images.shape[1]), int(parts.shape[1])
        if tsize % size or tsize // size not in (1, 2) or images.shape[0] != parts.shape[0]:
            raise ValueError(
                f"parts {parts.shape} must be 1 or 2 x the size of images {images.shape}, one per image"
            )
        self.images, self.parts = images, parts
        self.t = tsize // size
        self.seed, self.degradation, self.flip, self.shift = int(seed), degradation, bool(flip), int(shift)

    def batch(self, step: int, batch_size: int) -> PartBatch:
        """The batch of ``step``: a pure function of ``(seed, step)``."""
        rng = np.random.Generator(np.random.PCG64(stream_seed(self.seed, 0x9A7, step)))
        picks = rng.integers(0, self.images.shape[0], batch_size)
        flips = rng.random(batch_size) < 0.5
        shifts = rng.integers(-self.shift, self.shift + 1, (batch_size, 2))
        xs, ps = [], []
        for j, i in enumerate(picks):
            img, lab = np.asarray(self.images[int(i)]), np.asarray(self.parts[int(i)])
            if self.flip and flips[j]:
                img, lab = img[:, ::-1], lab[:, ::-1]
            dy, dx = (int(v) for v in shifts[j])
            xs.append(_shift(img, dy, dx))
            ps.append(_shift(lab, dy * self.t, dx * self.t))
        x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        if self.degradation is not None:
            gen = torch.Generator().manual_seed(stream_seed(self.seed, 0x9A8, step))
            x = degrade(x, self.degradation, gen)
        return PartBatch(x.contiguous(), torch.from_numpy(np.stack(ps)).long())
