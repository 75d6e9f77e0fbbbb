"""Loader throughput: shuffled, augmented 64-px batches from a packed data set vs JPEG files.

Both sides produce the same thing: shuffled batches of 64 (B, 3, 64, 64) float32 images in
[-1, 1], horizontally flipped at random and passed through DiffAugment
(colour, translation, cutout), the input a GAN discriminator sees.

- packed: :meth:`PackedDataset.batches` (memory-mapped uint8, one gather per batch, no
  workers) + ``DiffAugment("flip,color,translation,cutout")`` on the batch.
- JPEG (the common approach): one JPEG file per image decoded with Pillow in a plain
  ``Dataset.__getitem__`` (random flip per item), ``DataLoader(batch_size=64, shuffle=True,
  num_workers=2, persistent_workers=True)``, then the same DiffAugment on the batch. The JPEGs
  are written from the packed set (quality 95) so both read identical content.

Data: the shared anime-faces-96 folder resized to 64 px when present, else 4096 synthetic
smooth images (random noise would make JPEG decoding unrealistically slow).
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from avatarforge.data.augment import DiffAugment
from avatarforge.data.dataset import PackedDataset, infinite_batches
from avatarforge.data.packed import PackedWriter
from benchmarks.common import Result, best_rate, shared_faces

SIZE = 64
BATCH = 64
TARGET = 20_000.0  # images/s on 2 CPU cores


def _synthetic(n: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Smooth random images (gradients + discs), JPEG-compressible like real art."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float32) / SIZE
    for _ in range(n):
        c0, c1 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
        t = (yy * rng.uniform(-1, 1) + xx * rng.uniform(-1, 1))[..., None]
        img = c0 + (c1 - c0) * np.clip(t + 0.5, 0, 1)
        for _ in range(3):
            cy, cx, r = rng.uniform(0, 1, 3)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 < (0.1 + 0.2 * r) ** 2
            img[disc] = rng.uniform(0, 255, 3)
        yield img.clip(0, 255).astype(np.uint8)


def _faces(folder: Path, n: int) -> Iterator[np.ndarray]:
    for p in sorted(folder.glob("*.jpg"))[:n]:
        with Image.open(p) as im:
            yield np.array(im.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC))


def build(tmp: Path, n: int) -> tuple[Path, list[Path], str]:
    """Pack ``n`` images into ``tmp/packed`` and write them as JPEGs to ``tmp/jpeg``."""
    faces = shared_faces()
    source = f"anime-faces-96 resized to {SIZE}" if faces else f"synthetic {SIZE}-px"
    items = _faces(faces, n) if faces else _synthetic(n)
    jpeg_dir = tmp / "jpeg"
    jpeg_dir.mkdir()
    files = []
    with PackedWriter(tmp / "packed", size=SIZE, channels=3, producer="bench_loader") as w:
        for i, img in enumerate(items):
            w.add(img, source=str(i))
            files.append(jpeg_dir / f"{i:05d}.jpg")
            Image.fromarray(img).save(files[-1], quality=95)
    return tmp / "packed", files, source


class JpegFolder(Dataset):
    """The common approach: decode one JPEG per item, flip at random, normalise."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        with Image.open(self.files[i]) as im:
            a = np.array(im.convert("RGB"))  # (H, W, 3) uint8
        if torch.rand(()) < 0.5:  # the per-item flip of typical torchvision pipelines
            a = a[:, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float().div(127.5).sub(1)
        return x, torch.zeros(0)


def _forever(loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yield from loader


def run(quick: bool = False) -> list[Result]:
    n = 2048 if quick else 4096
    # Best of several short runs: the machine is shared, and the best run is the one least
    # disturbed by other jobs.
    repeats, min_s = (3, 0.5) if quick else (6, 1.0)
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as d:
        packed_dir, files, source = build(Path(d), n)
        n = len(files)
        ds = PackedDataset(packed_dir)
        gen = torch.Generator().manual_seed(0)
        aug = DiffAugment("flip,color,translation,cutout")
        aug_noflip = DiffAugment("color,translation,cutout")

        fast_it = infinite_batches(ds, BATCH, seed=0)
        fast_cl_it = infinite_batches(ds, BATCH, seed=0, channels_last=True)
        load_it = infinite_batches(ds, BATCH, seed=1)

        def fast(it=fast_it) -> int:
            for x, _ in itertools.islice(it, 16):
                aug(x, generator=gen)
            return 16 * BATCH

        def load_only() -> int:
            for _ in itertools.islice(load_it, 16):
                pass
            return 16 * BATCH

        jpeg_loader = DataLoader(
            JpegFolder(files),
            batch_size=BATCH,
            shuffle=True,
            drop_last=True,
            num_workers=2,
            persistent_workers=True,
            generator=torch.Generator().manual_seed(0),
        )
        jpeg_its = [_forever(jpeg_loader)]

        def jpeg() -> int:
            for x, _ in itertools.islice(jpeg_its[0], 4):
                aug_noflip(x, generator=gen)
            return 4 * BATCH

        fast()  # warm the page cache and allocator
        threads = torch.get_num_threads()
        rates: dict[int, float] = {}
        try:
            # The benchmark machine is shared: with 2 intra-op threads an OpenMP op stalls
            # whenever another process holds a core, so measure with 1 thread as well and
            # report the better (a trainer picks its thread count the same way).
            for nt in sorted({threads, 1}, reverse=True):
                torch.set_num_threads(nt)
                rates[nt] = best_rate(fast, repeats, min_s)
            # Images per second of this thread's CPU time, 1 thread: what one dedicated core
            # does, and nearly independent of what else runs on the machine.
            torch.set_num_threads(1)
            cpu_rate = 0.0
            for _ in range(repeats):
                t0 = time.thread_time()
                done = sum(fast() for _ in range(4))
                cpu_rate = max(cpu_rate, done / (time.thread_time() - t0))
            torch.set_num_threads(threads)
            rate_fast_cl = best_rate(lambda: fast(fast_cl_it), repeats, min_s)
            rate_load = best_rate(load_only, repeats, min_s)
        finally:
            torch.set_num_threads(threads)
        jpeg()  # worker start-up is not part of the steady-state rate
        rate_jpeg = best_rate(jpeg, repeats, min_s)
        jpeg_its.clear()
        del jpeg_loader  # shut the persistent workers down before the temp dir goes

    best_nt = max(rates, key=lambda k: rates[k])
    rate_fast = rates[best_nt]
    common = {"images": n, "data": source, "batch": BATCH, "torch_threads": threads}
    by_threads = {f"threads_{k}": round(v) for k, v in rates.items()}
    return [
        Result(
            "packed batches(), shuffled + DiffAugment(flip,color,translation,cutout), 64 px",
            rate_fast,
            "images/s",
            target=TARGET,
            notes=f"{source}, batch {BATCH}, main process only, best with {best_nt} torch thread(s)",
            extra={**common, **by_threads},
        ),
        *[
            Result(
                f"same, {k} torch thread(s)",
                v,
                "images/s",
                notes="intra-op threads; the machine is shared with other jobs",
                extra=common,
            )
            for k, v in sorted(rates.items())
        ],
        Result(
            "same, per CPU-second of one thread",
            cpu_rate,
            "images/CPU-s",
            notes="1 torch thread, thread CPU time: the rate of one dedicated core, robust to other jobs",
            extra=common,
        ),
        Result(
            "same, channels_last batches",
            rate_fast_cl,
            "images/s",
            notes=f"channels_last=True, {threads} threads (cheaper conversion, slower CPU augmentation)",
            extra=common,
        ),
        Result(
            "packed batches() load only (no augmentation)",
            rate_load,
            "images/s",
            notes=f"gather + uint8->float [-1, 1], {threads} threads",
            extra=common,
        ),
        Result(
            "JPEG per item, Dataset + DataLoader(num_workers=2) + same DiffAugment",
            rate_jpeg,
            "images/s",
            notes="the common approach; Pillow decode + per-item flip in workers",
            extra=common,
        ),
        Result(
            "speed-up of packed fast path over JPEG DataLoader",
            rate_fast / rate_jpeg,
            "x",
            notes="measured in the same run",
            extra=common,
        ),
    ]


if __name__ == "__main__":
    for r in run(quick=True):
        print(f"{r.name}: {r.value:,.1f} {r.unit} (target {r.target})")
