"""Loading packed data sets for training: a memory-mapped ``Dataset``, sharding, fast batches.

Two ways to read a packed data set (see :mod:`avatarforge.data.packed` for the format):

- :class:`PackedDataset` is a regular ``torch.utils.data.Dataset``: ``ds[i]`` gives
  ``(image, labels)``, and it works with ``DataLoader`` (any ``num_workers``; the memory map
  is opened lazily in each process, and the object pickles without its pixels). Its
  ``__getitems__`` lets a ``DataLoader`` with auto-batching fetch a whole batch at once.
- :meth:`PackedDataset.batches` is the fast path for training: whole batches are gathered
  from the memory map with one NumPy fancy index and converted with a few tensor ops, with
  no per-item Python work and no worker processes.

Order is a pure function of ``(seed, epoch, rank, world_size)`` (:func:`shard_indices`), so
the fast path, :class:`ShardedSampler` and a resumed run all see the same items in the same
order. For distributed training each rank gets an equal share: the shuffled order is
*padded* by repeating its first few items up to a multiple of ``world_size`` (like
``DistributedSampler``'s default), so every item is seen every epoch and all ranks run the
same number of steps; at most ``world_size - 1`` items are seen twice per epoch. Pass
``drop_last=True`` to :func:`shard_indices` / :class:`ShardedSampler` to drop the remainder
instead (strictly disjoint shards, a few items skipped per epoch).
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Iterator, Sequence, Sized
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from avatarforge.data.packed import LabelSchema, PackedFormatError, read_manifest, read_schema
from avatarforge.imageio import composite_over

__all__ = [
    "PackedDataset",
    "ShardedSampler",
    "infinite_batches",
    "label_indices",
    "shard_indices",
]

# The RNG is keyed by this constant too, so shuffles do not coincide with other seeded streams
# (model init, augmentation) that users seed with the same small integers.
_SHUFFLE_KEY = 0x5EED_DA7A


def _check_shard(rank: int, world_size: int) -> None:
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1} for world_size {world_size}, got {rank}")


def _per_rank(n: int, world_size: int, drop_last: bool) -> int:
    return n // world_size if drop_last else math.ceil(n / world_size)


def shard_indices(
    n: int,
    *,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    shuffle: bool = True,
    drop_last: bool = False,
) -> np.ndarray:
    """The item indices rank ``rank`` of ``world_size`` visits in epoch ``epoch``, in order.

    The order is a pure function of the arguments (for a given NumPy version): the
    permutation comes from a NumPy ``Generator`` keyed by ``(seed, epoch)``. Rank ``r`` takes
    every ``world_size``-th item of it starting at ``r``, so the ranks' shards are disjoint
    and together cover all ``n`` items.

    Args:
        n: number of items.
        seed: non-negative shuffle seed (the same on every rank).
        epoch: non-negative epoch number; each epoch has a different order.
        rank, world_size: this process's place in distributed training.
        shuffle: False keeps the natural order ``0..n-1`` (evaluation).
        drop_last: False (default) pads the order by repeating its first items up to a
            multiple of ``world_size`` (every item seen, up to ``world_size - 1`` twice);
            True drops the last ``n % world_size`` items instead (strictly disjoint).

    Returns:
        (ceil(n / world_size),) or, with ``drop_last``, (n // world_size,) int64 indices.
    """
    _check_shard(rank, world_size)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if shuffle:
        if seed < 0 or epoch < 0:
            raise ValueError(f"seed and epoch must be >= 0, got seed={seed} epoch={epoch}")
        order = np.random.default_rng([_SHUFFLE_KEY, int(seed), int(epoch)]).permutation(n)
    else:
        order = np.arange(n, dtype=np.int64)
    total = _per_rank(n, world_size, drop_last) * world_size
    if total > n:
        # np.resize repeats cyclically, which also works when the padding exceeds n (n < world_size).
        order = np.resize(order, total)
    return np.ascontiguousarray(order[rank:total:world_size], dtype=np.int64)


class ShardedSampler(Sampler[int]):
    """A deterministic ``DistributedSampler``: yields :func:`shard_indices` for the epoch.

    Use with ``DataLoader(ds, batch_size=..., sampler=ShardedSampler(ds, rank, world))`` and
    call :meth:`set_epoch` before each epoch. :meth:`PackedDataset.batches` (the fast path)
    visits the same indices in the same order for the same arguments.
    """

    def __init__(
        self,
        data: int | Sized,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        *,
        drop_last: bool = False,
    ) -> None:
        _check_shard(rank, world_size)
        self.n = int(data) if isinstance(data, int) else len(data)
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next ``iter()`` yields."""
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        """This epoch's indices as an int64 array."""
        return shard_indices(
            self.n,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world_size=self.world_size,
            shuffle=self.shuffle,
            drop_last=self.drop_last,
        )

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return _per_rank(self.n, self.world_size, self.drop_last)


def _uint8_to_float(u8: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(B, H, W, C) uint8 -> (B, C, H, W) float32 in [-1, 1] (0 -> -1, 255 -> 1 exactly)."""
    x = u8.permute(0, 3, 1, 2)  # (B, C, H, W) view, channels_last strides
    # For a contiguous result, transposing the uint8 first and converting contiguously is
    # ~30% cheaper on CPU than one transposing float conversion (4x fewer bytes shuffled).
    x = x.float() if channels_last else x.contiguous().float()
    # Division by 127.5 (exact in float32) rather than multiplication by its rounded inverse,
    # so the mapping is bit-identical to imageio.from_uint8 and 255 lands exactly on 1.0.
    return x.div_(127.5).sub_(1.0)


class PackedDataset(Dataset):
    """A packed data set directory as a map-style ``Dataset`` of ``(image, labels)``.

    Args:
        path: the data set directory (``images.npy``, ``labels.npy``, ``labels.json``,
            ``manifest.json``).
        channels: None keeps the stored channels; 3 from an RGBA set composites the images
            onto a white background (anime art is usually drawn on white; alpha is
            straight, so transparent pixels become white); 4 from an RGB set adds an opaque
            alpha channel.

    Attributes:
        path, manifest (the parsed ``manifest.json``), schema (:class:`LabelSchema`),
        size (image side in pixels), channels (channels returned), stored_channels,
        labels ((N, A) float32, NaN = unknown; held in memory).

    Raises:
        PackedFormatError: the directory is not a valid packed data set (the message says how
            to fix it).
        ValueError: ``channels`` is not None, 3 or 4.
    """

    def __init__(self, path: str | os.PathLike, *, channels: int | None = None) -> None:
        self.path = Path(path)
        self.manifest: dict[str, Any] = read_manifest(self.path)
        try:
            self.schema: LabelSchema = read_schema(self.path)
        except (ValueError, KeyError, TypeError) as e:
            raise PackedFormatError(
                f"{self.path / 'labels.json'} is not a valid label schema ({e}); re-create the data set"
            ) from e
        try:
            self.size = int(self.manifest["size"])
            self.stored_channels = int(self.manifest["channels"])
            count = int(self.manifest["count"])
        except (KeyError, TypeError, ValueError) as e:
            raise PackedFormatError(
                f"{self.path / 'manifest.json'} lacks a valid size/channels/count ({e}); re-create the data set"
            ) from e
        if channels not in (None, 3, 4):
            raise ValueError(f"channels must be None (as stored), 3 (RGB) or 4 (RGBA), got {channels!r}")
        self.channels = self.stored_channels if channels is None else int(channels)

        images = self._open_images()
        expected = (count, self.size, self.size, self.stored_channels)
        if images.dtype != np.uint8 or tuple(images.shape) != expected:
            raise PackedFormatError(
                f"{self.path / 'images.npy'} holds {images.dtype} {tuple(images.shape)} but the manifest says "
                f"uint8 {expected}; the data set is damaged or was written incompletely, re-create it"
            )
        self._images: np.ndarray | None = images
        labels = np.load(self.path / "labels.npy")
        if labels.ndim != 2 or labels.shape != (count, len(self.schema)):
            raise PackedFormatError(
                f"{self.path / 'labels.npy'} has shape {labels.shape}, expected {(count, len(self.schema))} "
                "(count x label fields); re-create the data set"
            )
        self.labels: np.ndarray = np.ascontiguousarray(labels, dtype=np.float32)

    # -- memory map -----------------------------------------------------------------------

    def _open_images(self) -> np.ndarray:
        try:
            return np.load(self.path / "images.npy", mmap_mode="r")
        except (ValueError, OSError) as e:
            raise PackedFormatError(
                f"cannot read {self.path / 'images.npy'} ({e}); re-create the data set"
            ) from e

    @property
    def images(self) -> np.ndarray:
        """The (N, H, W, C_stored) uint8 memory map (opened on first use in each process)."""
        if self._images is None:
            self._images = self._open_images()
        return self._images

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers (spawn) and multiprocessing pickle the data set: send the path,
        # not the pixels; each process maps the file itself.
        state = self.__dict__.copy()
        state["_images"] = None
        return state

    # -- item access ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (
            f"PackedDataset({str(self.path)!r}, n={len(self)}, size={self.size}, channels={self.channels}, "
            f"labels={self.schema.names})"
        )

    def images_uint8(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
        """Images at ``indices`` as a (B, H, W, C) uint8 array, in the requested order.

        The memory map is read in sorted index order (sequential access is much faster on
        disk-backed maps than random access), and the rows are put back in request order.
        Negative indices count from the end, as in NumPy.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"index out of range for a data set of {n} items")
        idx = np.where(idx < 0, idx + n, idx)
        mm = self.images
        if idx.size == 0:
            out = np.empty((0, self.size, self.size, self.stored_channels), np.uint8)
        elif idx.size > 1 and idx[-1] - idx[0] == idx.size - 1 and np.all(np.diff(idx) == 1):
            out = np.array(mm[idx[0] : idx[-1] + 1])  # a contiguous run: one slice copy
        else:
            order = np.argsort(idx, kind="stable")
            gathered = mm[idx[order]]  # (B, H, W, C) read in ascending file order
            out = np.empty_like(gathered)
            out[order] = gathered  # back to request order
        return self._convert_channels(out)

    def _convert_channels(self, u8: np.ndarray) -> np.ndarray:
        if self.channels == self.stored_channels:
            return u8
        if self.stored_channels == 4:  # RGBA -> RGB on white
            return composite_over(u8)  # on white
        alpha = np.full((*u8.shape[:-1], 1), 255, np.uint8)  # RGB -> opaque RGBA
        return np.concatenate([u8, alpha], axis=-1)

    def _load(
        self, indices: np.ndarray, device: torch.device | str | None = None, channels_last: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (B, C, H, W) float32 in [-1, 1], labels (B, A) float32) on ``device``."""
        u8 = torch.from_numpy(self.images_uint8(indices))  # (B, H, W, C) uint8
        labels = torch.from_numpy(self.labels[indices])  # (B, A), a copy
        device = torch.device(device) if device is not None else None
        if device is not None and device.type != "cpu":
            # Ship uint8 (4x fewer bytes than float32) from pinned memory and convert on the device.
            pin = device.type == "cuda"
            if pin:
                u8, labels = u8.pin_memory(), labels.pin_memory()
            u8 = u8.to(device, non_blocking=pin)
            labels = labels.to(device, non_blocking=pin)
        return _uint8_to_float(u8, channels_last), labels

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image (C, H, W) float32 in [-1, 1], labels (A,) float32 with NaN = unknown)``."""
        i = operator.index(i)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a data set of {n} items")
        x, y = self._load(np.array([i], dtype=np.int64))
        return x[0], y[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Batched fetch used by ``DataLoader`` auto-batching: one gather for the whole batch.

        Returns per-item ``(image, labels)`` pairs (views into one batch tensor) so any
        ``collate_fn``, including the default one, still works.
        """
        x, y = self._load(np.asarray(indices, dtype=np.int64))
        return list(zip(x.unbind(0), y.unbind(0)))

    # -- the fast path --------------------------------------------------------------------

    def steps_per_epoch(self, batch_size: int, world_size: int = 1, drop_last: bool = True) -> int:
        """Batches per epoch on each rank (the same on every rank)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        per_rank = _per_rank(len(self), world_size, drop_last=False)
        return per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)

    def batches(
        self,
        batch_size: int,
        *,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
        drop_last: bool = True,
        device: torch.device | str | None = None,
        channels_last: bool = False,
        shuffle: bool = True,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of batches for this rank: the fast training path.

        Yields ``(images (B, C, H, W) float32 in [-1, 1], labels (B, A) float32)`` on
        ``device`` (CPU by default; on CUDA the uint8 pixels are copied from pinned memory
        and converted on the GPU). The order is :func:`shard_indices` of
        ``(seed, epoch, rank, world_size)`` cut into consecutive batches, so it is
        reproducible and matches ``DataLoader(ds, batch_size, sampler=ShardedSampler(...))``.

        Args:
            batch_size: items per batch (per rank).
            start_batch: skip this many batches (exact mid-epoch resume without reading them).
            drop_last: drop the final incomplete batch (default; keeps shapes static).
            channels_last: return images in ``torch.channels_last`` memory format (cheaper to
                produce on CPU, and faster for convolutions on recent GPUs).
            shuffle: False visits the items in file order (evaluation).
        """
        steps = self.steps_per_epoch(batch_size, world_size, drop_last)
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        order = shard_indices(
            len(self), seed=seed, epoch=epoch, rank=rank, world_size=world_size, shuffle=shuffle
        )
        for b in range(start_batch, steps):
            yield self._load(order[b * batch_size : (b + 1) * batch_size], device, channels_last)


def infinite_batches(
    dataset: PackedDataset,
    batch_size: int,
    *,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    start_step: int = 0,
    device: torch.device | str | None = None,
    channels_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches forever, epoch after epoch (incomplete final batches are dropped).

    Global step ``k`` is batch ``b`` of epoch ``e`` with ``(e, b) = divmod(k, steps_per_epoch)``,
    so a run resumed with ``start_step=k`` continues exactly where it stopped.

    Raises:
        ValueError: the data set has fewer items per rank than ``batch_size``.
    """
    steps = dataset.steps_per_epoch(batch_size, world_size, drop_last=True)
    if steps == 0:
        raise ValueError(
            f"the data set has {len(dataset)} items, fewer than one batch of {batch_size} per rank "
            f"(world_size {world_size}); use a smaller batch size or a larger data set"
        )
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    epoch, batch = divmod(start_step, steps)
    while True:
        yield from dataset.batches(
            batch_size,
            seed=seed,
            epoch=epoch,
            rank=rank,
            world_size=world_size,
            start_batch=batch,
            device=device,
            channels_last=channels_last,
        )
        epoch, batch = epoch + 1, 0


def label_indices(labels: torch.Tensor, schema: LabelSchema, names: Sequence[str]) -> torch.Tensor:
    """Class indices of the named categorical labels, with unknown as an extra class.

    Args:
        labels: (B, A) float labels as stored (categorical = class index, NaN = unknown).
        schema: the data set's schema (column ``i`` is ``schema.fields[i]``).
        names: categorical label names to extract.

    Returns:
        (B, len(names)) int64 on ``labels.device``; an unknown (NaN) value of field ``f``
        becomes ``f.num_classes`` so a conditional model can embed "unknown" as its own class
        (embedding tables need ``num_classes + 1`` rows).

    Raises:
        KeyError: a name is not in the schema. ValueError: a named label is continuous.
    """
    cols, unknown = [], []
    for name in names:
        f = schema[name]
        if f.kind != "categorical":
            raise ValueError(f"label {name!r} is continuous; label_indices takes categorical labels only")
        cols.append(schema.index(name))
        unknown.append(float(f.num_classes))
    if not cols:
        return torch.zeros((labels.shape[0], 0), dtype=torch.long, device=labels.device)
    sel = labels[:, cols]  # (B, K)
    fill = torch.tensor(unknown, dtype=sel.dtype, device=sel.device).expand_as(sel)
    return torch.where(torch.isnan(sel), fill, sel).long()
