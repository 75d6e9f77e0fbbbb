"""Training pairs for the refiner: (degraded low-resolution crop, high-resolution crop[, part map]).

Two sources, one interface (:class:`RefinePairs`, ``batch(step, batch_size) -> RefineBatch``):

* the built-in renderer (:func:`build_render_pool`): ``n`` random identities, each at a
  random expression, rendered at the target size with their part maps, cached as ``.npy``
  files under the cache directory (``refiner-pool/``; a 512-px render costs ~0.1 s, so a pool
  of a few hundred is built once and reused by every run with the same settings);
* any packed data set (:class:`~avatarforge.data.dataset.PackedDataset`) whose images are at
  least the target size (larger ones are area-resized to it): downsampled pairs, no part maps.

A pair is a crop of ``crop`` x ``crop`` target pixels, aligned to the ``scale`` grid, and its
area downsample (in premultiplied alpha, as a good generator's 64-px output looks), then
:func:`degrade`: blur, noise, JPEG-like blocky noise, small colour shifts and GAN-like alpha
damage (faint specks outside the silhouette, body alpha a little below opaque), so the
refiner learns to clean generator artefacts instead of copying them. Everything is a pure
function of ``(seed, step)``: a resumed run sees the same stream as an uninterrupted one.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avatarforge.fileio import atomic_directory, atomic_write_json, default_cache_dir, file_lock
from avatarforge.imageio import from_uint8

__all__ = [
    "POOL_VERSION",
    "Degradation",
    "RefineBatch",
    "RefinePairs",
    "RenderPool",
    "area_downsample",
    "build_render_pool",
    "cached_render_pool",
    "degrade",
    "part_label_map",
    "pool_seed",
    "split_seed",
    "stream_seed",
]

POOL_VERSION = 1
TRAIN, HELDOUT = "train", "heldout"
_SPLIT_STREAM = {TRAIN: 0x5EF1, HELDOUT: 0x4E1D}


def stream_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (one random stream per ``(seed, purpose, step)``)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(1, np.uint64)
    return int(state[0]) & 0x7FFFFFFFFFFFFFFF


def split_seed(seed: int, split: str, index: int, streams: Mapping[str, int]) -> int:
    """The procedural identity seed of item ``index`` of a pool's ``split``, drawn from the
    stream ``streams[split]`` (one stream per split: train and held-out never meet)."""
    if split not in streams:
        raise ValueError(f"split must be {TRAIN!r} or {HELDOUT!r}, got {split!r}")
    return stream_seed(seed, streams[split], index) >> 2


def pool_seed(seed: int, split: str, index: int) -> int:
    """The procedural identity seed of pool item ``index`` (train and held-out never meet)."""
    return split_seed(seed, split, index, _SPLIT_STREAM)


# =============================================================================== the render pool
@dataclass
class RenderPool:
    """Rendered avatars: ``images (N, S, S, 4)`` uint8 straight-alpha RGBA, ``parts (N, S, S)`` uint8 ids."""

    images: np.ndarray
    parts: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])


def part_label_map(masks: dict[str, np.ndarray], size: int) -> np.ndarray:
    """``(size, size)`` uint8 part ids (:data:`~avatarforge.data.procedural.PART_NAMES` order)
    from the renderer's per-part masks (a later part wins where masks overlap)."""
    from avatarforge.data.procedural import PART_NAMES

    lab = np.zeros((size, size), np.uint8)
    for i, name in enumerate(PART_NAMES):
        lab[masks[name]] = i
    return lab


def _render_one(args: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    from avatarforge.data.procedural import random_expression, render, sample_attributes

    ident, size = args
    attrs = sample_attributes(ident)
    expr = random_expression(np.random.default_rng(ident))
    img, parts = render({**attrs, **expr}, size, return_parts=True)
    return img, part_label_map(parts, size)


def cached_render_pool(
    entry: Path,
    manifest: dict[str, Any],
    render_one: Callable[[Any], tuple[np.ndarray, np.ndarray]],
    jobs: list[Any],
    *,
    workers: int = 0,
    cache: bool = True,
    announce: str = "",
    on_rendered: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(images, parts)`` of a pool of renders: memory-mapped from the cache ``entry`` when
    it is complete, else ``render_one(job)`` for every job (in ``workers`` processes when > 0)
    and, with ``cache``, written to ``entry`` with ``manifest`` (the refiner's and the part
    segmenter's pools).

    ``announce`` is printed before rendering (when not empty); ``on_rendered(count)`` is
    called after each render in this process (progress lines).
    """
    if cache and (entry / "manifest.json").is_file():
        return np.load(entry / "images.npy", mmap_mode="r"), np.load(entry / "parts.npy", mmap_mode="r")
    n = len(jobs)
    if announce:
        print(announce, flush=True)
    if workers > 0 and n > 1:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with cf.ProcessPoolExecutor(workers, mp_context=ctx) as ex:
            results = list(ex.map(render_one, jobs, chunksize=max(1, n // (8 * workers))))
    else:
        results = []
        for job in jobs:
            results.append(render_one(job))
            if on_rendered is not None:
                on_rendered(len(results))
    images, parts = np.stack([r[0] for r in results]), np.stack([r[1] for r in results])
    if cache:
        # Another process may be rendering the same pool: the first to finish writes it.
        with file_lock(entry.parent / f".{entry.name}.lock"):
            if not (entry / "manifest.json").is_file():
                with atomic_directory(entry, overwrite=True) as tmp:
                    np.save(tmp / "images.npy", images)
                    np.save(tmp / "parts.npy", parts)
                    atomic_write_json(tmp / "manifest.json", manifest)
    return images, parts


def build_render_pool(
    n: int,
    size: int,
    seed: int,
    *,
    split: str = TRAIN,
    cache_dir: str | Path | None = None,
    workers: int = 0,
    progress: bool = False,
    cache: bool = True,
) -> RenderPool:
    """``n`` identities at random expressions rendered at ``size``, from the cache when there.

    ``cache_dir``: cache root (default ``$AVATARFORGE_CACHE`` or ``~/.cache/avatarforge``);
    ``cache=False`` renders in memory only. ``workers`` > 0 renders in that many processes.
    """
    key = f"v{POOL_VERSION}-{split}-{size}px-n{n}-seed{seed}"

    def tick(done: int) -> None:
        if progress and done % 64 == 0:
            print(f"rendered {done}/{n} refiner pool avatars at {size}px", flush=True)

    return RenderPool(
        *cached_render_pool(
            Path(cache_dir or default_cache_dir()) / "refiner-pool" / key,
            {"n": n, "size": size, "seed": seed, "split": split},
            _render_one,
            [(pool_seed(seed, split, i), size) for i in range(n)],
            workers=workers,
            cache=cache,
            on_rendered=tick,
        )
    )


# =============================================================================== degradations
@dataclass(frozen=True)
class Degradation:
    """What :func:`degrade` does to a low-resolution input (each with its probability).

    Units: colours and alpha in [0, 1]; blur sigma in input pixels.
    """

    blur_prob: float = 0.5
    blur: float = 0.7  # largest Gaussian sigma
    noise_prob: float = 0.5
    noise: float = 0.03  # largest per-pixel noise std
    blocky_prob: float = 0.3
    blocky: float = 0.03  # largest std of 4x4-block noise (JPEG-like)
    color: float = 0.03  # largest per-channel gain / offset change
    specks_prob: float = 0.5
    specks: float = 0.02  # largest fraction of transparent pixels given faint alpha
    alpha_dip: float = 0.05  # largest drop of opaque alpha (GAN bodies at 243-254)

    def as_dict(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in self.__dataclass_fields__}

    @classmethod
    def from_settings(cls, settings: Any) -> Degradation | None:
        """The degradation a config's ``data.degrade`` section describes (the fields of the same
        names), or None when its ``enabled`` is off."""
        if not settings.enabled:
            return None
        return cls(**{k: getattr(settings, k) for k in cls.__dataclass_fields__})


def _gauss_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Per-image Gaussian blur (``sigma`` (B,), 0 = none), 5x5 separable, replicate borders."""
    r = torch.arange(-2, 3, dtype=x.dtype, device=x.device)
    s = sigma.clamp_min(1e-3)[:, None]
    k = torch.exp(-(r[None] ** 2) / (2 * s**2))
    k = k / k.sum(1, keepdim=True)  # (B, 5); sigma -> 0 gives the identity kernel
    b, c, h, w = x.shape
    xp = F.pad(x, (2, 2, 2, 2), mode="replicate").reshape(1, b * c, h + 4, w + 4)
    kh = k.repeat_interleave(c, 0)[:, None, None, :]
    kv = k.repeat_interleave(c, 0)[:, None, :, None]
    y = F.conv2d(F.conv2d(xp, kh, groups=b * c), kv, groups=b * c)
    return y.reshape(b, c, h, w)


def degrade(x: Tensor, cfg: Degradation, gen: torch.Generator) -> Tensor:
    """Degrade ``(B, C, h, w)`` straight-alpha images in [-1, 1] (C = 4: RGBA, 3: RGB).

    Draws the same random numbers whatever the settings (a seeded stream stays aligned).
    """
    b, c, h, w = x.shape
    dev = x.device

    def u(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=gen, device=dev)

    def n(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen, device=dev)

    img = x.add(1).mul(0.5)  # [0, 1]
    rgb, alpha = img[:, :3], (img[:, 3:4] if c == 4 else None)
    # Blur (premultiplied, so transparent black does not bleed into the rim).
    pick, amount = u(4, b), u(4, b)
    sigma = torch.where(pick[0] < cfg.blur_prob, amount[0] * cfg.blur, torch.zeros(b, device=dev))
    if alpha is not None:
        pm = _gauss_blur(torch.cat([rgb * alpha, alpha], 1), sigma)
        alpha = pm[:, 3:4]
        rgb = torch.where(alpha > 1e-4, pm[:, :3] / alpha.clamp_min(1e-4), torch.zeros_like(pm[:, :3]))
    else:
        rgb = _gauss_blur(rgb, sigma)
    # Colour: per-channel gain and offset.
    gain = 1 + (u(b, 3, 1, 1) * 2 - 1) * cfg.color
    offset = (u(b, 3, 1, 1) * 2 - 1) * cfg.color
    rgb = rgb * gain + offset
    # Noise and blocky (JPEG-like) noise.
    std = torch.where(pick[1] < cfg.noise_prob, amount[1] * cfg.noise, torch.zeros(b, device=dev))
    rgb = rgb + n(b, 3, h, w) * std[:, None, None, None]
    bstd = torch.where(pick[2] < cfg.blocky_prob, amount[2] * cfg.blocky, torch.zeros(b, device=dev))
    blocks = n(b, 3, (h + 3) // 4, (w + 3) // 4)
    blocks = blocks.repeat_interleave(4, 2).repeat_interleave(4, 3)[:, :, :h, :w]
    rgb = rgb + blocks * bstd[:, None, None, None]
    rgb = rgb.clamp(0, 1)
    if alpha is not None:
        # GAN-like alpha: faint specks where nothing is drawn, the body a little transparent.
        frac = torch.where(pick[3] < cfg.specks_prob, amount[3] * cfg.specks, torch.zeros(b, device=dev))
        where = (u(b, 1, h, w) < frac[:, None, None, None]) & (alpha < 0.02)
        speck_alpha = u(b, 1, h, w) * 0.35
        speck_rgb = u(b, 3, h, w)
        alpha = torch.where(where, speck_alpha, alpha)
        rgb = torch.where(where.expand_as(rgb), speck_rgb, rgb)
        dip = u(b, 1, 1, 1) * cfg.alpha_dip
        wobble = u(b, 1, h, w) * 0.5 + 0.5
        alpha = torch.where(alpha > 0.98, alpha - dip * wobble, alpha)
        rgb = torch.where(alpha > 0, rgb, torch.zeros_like(rgb))
        img = torch.cat([rgb, alpha], 1)
    else:
        img = rgb
    return img.mul(2).sub(1)


# =============================================================================== pairs
def area_downsample(x: Tensor, factor: int) -> Tensor:
    """``(B, C, H, W)`` straight-alpha images in [-1, 1] -> ``/ factor`` by area averaging in
    premultiplied alpha (C = 4) or plainly (C = 3)."""
    if factor == 1:
        return x
    img = x.add(1).mul(0.5)
    if img.shape[1] == 4:
        a = img[:, 3:4]
        pm = F.avg_pool2d(torch.cat([img[:, :3] * a, a], 1), factor)
        a = pm[:, 3:4]
        rgb = torch.where(a > 1e-6, pm[:, :3] / a.clamp_min(1e-6), torch.zeros_like(pm[:, :3]))
        img = torch.cat([rgb.clamp(0, 1), a], 1)
    else:
        img = F.avg_pool2d(img, factor)
    return img.mul(2).sub(1)


@dataclass
class RefineBatch:
    """``lr (B, C, c/s, c/s)`` degraded inputs, ``hr (B, C, c, c)`` targets, both in [-1, 1];
    ``parts (B, c, c)`` int64 part ids or None (packed data sets)."""

    lr: Tensor
    hr: Tensor
    parts: Tensor | None

    def to(self, device: torch.device | str) -> RefineBatch:
        return RefineBatch(
            self.lr.to(device), self.hr.to(device), None if self.parts is None else self.parts.to(device)
        )


class RefinePairs:
    """Pairs from a :class:`RenderPool` or a packed data set's images.

    Args:
        images: ``(N, S, S, C)`` uint8 (a pool's images or a packed data set's memory map;
            ``S`` = the target size).
        parts: ``(N, S, S)`` uint8 part ids or None.
        scale: 2, 4 or 8; ``crop``: target crop side (a multiple of ``scale``, <= S).
        seed: the stream's seed; ``degradation``: what :func:`degrade` does (None = nothing).
        indices: which items of ``images`` to draw from (default all).
        flip: random horizontal flips.
        foreground: fraction of crops centred on a pixel of the character (RGBA only).
    """

    def __init__(
        self,
        images: np.ndarray,
        parts: np.ndarray | None,
        *,
        scale: int,
        crop: int,
        seed: int,
        degradation: Degradation | None = None,
        indices: np.ndarray | None = None,
        flip: bool = True,
        foreground: float = 0.8,
    ) -> None:
        size = int(images.shape[1])
        if crop % scale or crop > size or size % scale:
            raise ValueError(f"crop {crop} and size {size} must be multiples of scale {scale}, crop <= size")
        self.images, self.parts = images, parts
        self.scale, self.crop, self.seed = int(scale), int(crop), int(seed)
        self.degradation = degradation
        self.indices = np.arange(images.shape[0]) if indices is None else np.asarray(indices)
        self.flip, self.foreground = flip, float(foreground)
        self.channels = int(images.shape[-1])
        self._fg: dict[int, np.ndarray] = {}  # low-res foreground pixel lists, per item (lazy)

    def _foreground(self, i: int) -> np.ndarray:
        if i not in self._fg:
            s = self.scale
            a = np.asarray(self.images[i, ::s, ::s, 3]) if self.channels == 4 else None
            self._fg[i] = np.argwhere(a > 0) if a is not None else np.zeros((0, 2), np.int64)
        return self._fg[i]

    def batch(self, step: int, batch_size: int) -> RefineBatch:
        """The batch of ``step``: a pure function of ``(seed, step)``."""
        rng = np.random.Generator(np.random.PCG64(stream_seed(self.seed, 0xC12, step)))
        s, c = self.scale, self.crop
        size = int(self.images.shape[1])
        cl, n_lr = c // s, size // s
        picks = self.indices[rng.integers(0, len(self.indices), batch_size)]
        u = rng.random((3, batch_size))
        hr, parts = [], []
        for j, i in enumerate(picks):
            fg = self._foreground(int(i))
            if len(fg) and u[0, j] < self.foreground:
                cy, cx = fg[int(u[1, j] * len(fg)) % len(fg)]
                y0 = int(np.clip(cy - cl // 2 + rng.integers(-cl // 4, cl // 4 + 1), 0, n_lr - cl))
                x0 = int(np.clip(cx - cl // 2 + rng.integers(-cl // 4, cl // 4 + 1), 0, n_lr - cl))
            else:
                y0, x0 = (int(v) for v in rng.integers(0, n_lr - cl + 1, 2))
            sl = (int(i), slice(y0 * s, y0 * s + c), slice(x0 * s, x0 * s + c))
            img = np.asarray(self.images[sl])
            lab = np.asarray(self.parts[sl]) if self.parts is not None else None
            if self.flip and u[2, j] < 0.5:
                img = img[:, ::-1]
                lab = lab[:, ::-1] if lab is not None else None
            hr.append(img)
            if lab is not None:
                parts.append(lab)
        hr_t = from_uint8(np.stack(hr))
        lr = area_downsample(hr_t, s)
        if self.degradation is not None:
            gen = torch.Generator().manual_seed(stream_seed(self.seed, 0xDE6, step))
            lr = degrade(lr, self.degradation, gen)
        parts_t = torch.from_numpy(np.ascontiguousarray(np.stack(parts))).long() if parts else None
        return RefineBatch(lr, hr_t, parts_t)
