"""The built-in data set: procedural avatars rendered in parallel into a packed data set.

``avatarforge data builtin OUT --n N --size S`` calls :func:`build_builtin_dataset`. Item
``i`` is rendered from seed :func:`item_seed` ``(seed, i)``, so any item can be reproduced
on its own (``procedural.render(procedural.sample_attributes(item_seed(seed, i)), size)``)
and the output does not depend on the number of workers: chunks are rendered in worker
processes and consumed in order.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from avatarforge.data import procedural
from avatarforge.data.packed import PackedWriter

__all__ = ["ALPHA_MODES", "PREVIEW_COUNT", "build_builtin_dataset", "item_seed", "render_item"]

ALPHA_MODES = ("keep", "background")
PREVIEW_COUNT = 64
# Items per task sent to a worker: large enough that inter-process overhead is small
# next to ~3 ms of drawing per item, small enough to keep both cores busy to the end.
_CHUNK = 32
# Spacing of per-data-set seed streams; a prime so (seed, i) pairs do not collide for
# data sets below a million items.
_SEED_STRIDE = 1_000_003


def item_seed(seed: int, index: int) -> int:
    """The :func:`procedural.sample_attributes` seed of item ``index`` of a data set."""
    return seed * _SEED_STRIDE + index


def render_item(seed: int, index: int, size: int, alpha: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Render item ``index`` of the data set built with ``seed``: (image, attributes)."""
    attrs = procedural.sample_attributes(item_seed(seed, index))
    img = procedural.render(attrs, size, background=alpha == "background")
    return img, attrs  # type: ignore[return-value]


def _render_chunk(task: tuple[int, int, int, int, str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    seed, start, stop, size, alpha = task
    images, attrs = [], []
    for i in range(start, stop):
        img, a = render_item(seed, i, size, alpha)
        images.append(img)
        attrs.append(a)
    # One array per chunk pickles much faster than a list of small arrays.
    return np.stack(images), attrs


def _chunks(
    n: int, size: int, seed: int, alpha: str, workers: int
) -> Iterator[tuple[np.ndarray, list[dict[str, Any]]]]:
    tasks = [(seed, s, min(s + _CHUNK, n), size, alpha) for s in range(0, n, _CHUNK)]
    if workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            yield _render_chunk(t)
        return
    with mp.get_context().Pool(min(workers, len(tasks))) as pool:
        # imap (not imap_unordered) keeps chunk order, so the output is deterministic.
        yield from pool.imap(_render_chunk, tasks)


def build_builtin_dataset(
    out: str | os.PathLike,
    n: int,
    size: int = 64,
    *,
    seed: int = 0,
    workers: int | None = None,
    alpha: str = "keep",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Render ``n`` procedural avatars into a packed data set at ``out``.

    Args:
        out: data set directory to create (atomically: it appears only when complete).
        n: number of avatars (>= 1).
        size: image size in pixels (``procedural.MIN_SIZE`` to ``procedural.MAX_SIZE``).
        seed: data set seed; item ``i`` uses :func:`item_seed` ``(seed, i)``.
        workers: worker processes (default ``os.cpu_count()``; 1 = in this process). The
            output is identical for any value.
        alpha: ``"keep"``: RGBA character on a transparent background (RGB = 0 where
            alpha = 0); ``"background"``: RGB composited on the avatar's own background.
        overwrite: replace an existing ``out`` (otherwise ``FileExistsError``).
        progress: show a tqdm progress bar.

    Returns:
        The data set path. Besides the packed files it holds ``preview.png``, a grid of
        the first 64 images (transparency shown on a checkerboard).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if alpha not in ALPHA_MODES:
        raise ValueError(f"alpha must be one of {', '.join(ALPHA_MODES)}, got {alpha!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    size = procedural.check_size(size)
    workers = int(workers) if workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    n, seed = int(n), int(seed)
    channels = 4 if alpha == "keep" else 3
    options = {"n": n, "size": size, "seed": seed, "alpha": alpha}
    preview: list[np.ndarray] = []
    with PackedWriter(
        out,
        size=size,
        channels=channels,
        schema=procedural.SCHEMA,
        options=options,
        overwrite=overwrite,
        producer="builtin",
    ) as writer:
        bar = tqdm(total=n, desc="rendering avatars", unit="img", disable=not progress)
        index = 0
        try:
            for images, attrs in _chunks(n, size, seed, alpha, workers):
                for img, a in zip(images, attrs):
                    writer.add(img, source=f"procedural:seed={item_seed(seed, index)}", labels=a)
                    if len(preview) < PREVIEW_COUNT:
                        preview.append(img)
                    index += 1
                bar.update(len(images))
        finally:
            bar.close()
        # Imported here: imageio pulls in torch, which the render workers do not need.
        from avatarforge.imageio import make_grid, save_image

        save_image(
            writer.tmp_dir / "preview.png", make_grid(np.stack(preview), nrow=8, alpha_backdrop="checker")
        )
    return Path(out)
