"""Training pairs for the animator, from the procedural renderer.

A pair is ``(source, controls, target)``: one identity rendered at a source expression, the
five target controls, and the same identity rendered at the target expression. Identity and
expressions come from seeds, so every pair is a pure function of ``(seed, step)``:

* :class:`PairCache` pre-renders ``identities x expressions`` images into a packed cache
  (``.npy`` files opened memory-mapped, plus ``manifest.json``) once, then draws pairs
  among the ``expressions`` renders of an identity (``K^2`` pairs per identity from ``K``
  renders). Built in parallel (``workers``), written atomically, reused when the manifest
  matches. This is the fast path on CPU: a training step costs no rendering.
* :class:`StreamingPairs` renders every batch on the fly (an endless supply of identities),
  ``prefetch`` batches ahead, in a background thread or a process pool; batches come back
  in step order whatever the workers' timing, so resume stays exact.

Both return :class:`PairBatch` from ``batch(step)``. Expression 0 of every rendered group
is :data:`~avatarforge.data.procedural.NEUTRAL_EXPRESSION` (the pose avatars from the
generators mostly have); the others come from
:func:`~avatarforge.data.procedural.random_expression`, half of them as variants of the
first half that differ only in the eyes and mouth (:func:`group_expressions`). Each image comes with its part map
(:data:`~avatarforge.data.procedural.PART_NAMES` ids), which gives the loss its face
weighting and the tests and metrics their eye and mouth regions.

Augmentations (seeded per step): horizontal flip (negates ``head_yaw`` and ``head_tilt``
of both images) and, with ``background_prob``, compositing source and target onto the
identity's drawn background (alpha becomes opaque), so the animator also works on RGB
avatars with backgrounds. The trainer may add :func:`soften_pairs` (``data.soften_prob``):
source and target taken to half size and back, seeded by the step too.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avatarforge.data.procedural import (
    NEUTRAL_EXPRESSION,
    PART_NAMES,
    random_expression,
    render,
    render_background,
    sample_attributes,
)
from avatarforge.imageio import from_uint8
from avatarforge.models.animator import CONTROL_NAMES
from avatarforge.train.schedule import derive_seed

__all__ = [
    "FACE_PARTS",
    "HELDOUT",
    "TRAIN",
    "PairBatch",
    "PairCache",
    "PairSpec",
    "StreamingPairs",
    "build_or_open_cache",
    "group_expressions",
    "identity_seed",
    "part_mask",
    "render_group",
    "soften_pairs",
]

CACHE_VERSION = 2
TRAIN, HELDOUT = "train", "heldout"
#: Parts whose pixels an expression change re-draws: the loss weights them up.
FACE_PARTS: tuple[str, ...] = ("eye_white", "iris", "eye_line", "eyebrow", "mouth")
_SPLIT_STREAM = {TRAIN: 0xA11, HELDOUT: 0xE7A1}  # disjoint identity seed streams


def identity_seed(seed: int, split: str, index: int) -> int:
    """The procedural identity seed of item ``index`` of ``split`` (train and held-out never meet)."""
    return derive_seed(seed, _SPLIT_STREAM[split], index) >> 1  # 62 bits: PCG64 takes any int


def group_expressions(seed: int, split: str, index: int, k: int) -> list[dict[str, float]]:
    """The ``k`` expressions identity ``index`` is rendered at.

    The first ``ceil(k / 2)`` are *bases*: neutral, then random expressions. The rest are
    *variants*: variant ``j`` is base ``j`` with new ``eye_open`` and ``mouth_open``. A pair
    of a base and its variant differs only in the eyes and mouth, so no warp can explain
    it away: these pairs teach the small, detailed changes, which otherwise come last
    (after the head pose, which moves many more pixels).
    """
    rng = np.random.Generator(np.random.PCG64(derive_seed(seed, _SPLIT_STREAM[split], index, 0xE)))
    n_base = (k + 1) // 2
    bases = [dict(NEUTRAL_EXPRESSION)] + [random_expression(rng) for _ in range(n_base - 1)]
    variants = []
    for j in range(k - n_base):
        fresh = random_expression(rng)
        variants.append({**bases[j], "eye_open": fresh["eye_open"], "mouth_open": fresh["mouth_open"]})
    return bases + variants


def _controls(expr: dict[str, float]) -> list[float]:
    return [float(expr[n]) for n in CONTROL_NAMES]


def render_group(
    attrs_or_seed: int | dict[str, Any], expressions: Sequence[dict[str, float]], size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One identity at several expressions, transparent background.

    Returns ``images (K, S, S, 4)`` uint8, ``parts (K, S, S)`` uint8 part ids (index into
    :data:`PART_NAMES`) and ``controls (K, 5)`` float32.
    """
    attrs = sample_attributes(attrs_or_seed) if isinstance(attrs_or_seed, int) else dict(attrs_or_seed)
    imgs, labs = [], []
    for expr in expressions:
        img, parts = render({**attrs, **NEUTRAL_EXPRESSION, **expr}, size, return_parts=True)
        lab = np.zeros((size, size), np.uint8)
        for i, name in enumerate(PART_NAMES):
            lab[parts[name]] = i
        imgs.append(img)
        labs.append(lab)
    ctrl = np.array([_controls({**NEUTRAL_EXPRESSION, **e}) for e in expressions], np.float32)
    return np.stack(imgs), np.stack(labs), ctrl


def part_mask(parts: Tensor | np.ndarray, names: Sequence[str]) -> Tensor:
    """Boolean mask of pixels whose part id is one of ``names`` (same shape as ``parts``)."""
    p = torch.as_tensor(np.asarray(parts)) if not torch.is_tensor(parts) else parts
    ids = torch.tensor([PART_NAMES.index(n) for n in names], dtype=p.dtype, device=p.device)
    return torch.isin(p, ids)


# =============================================================================== batches
@dataclass
class PairBatch:
    """A training batch; images ``(B, 4, S, S)`` float32 RGBA in [-1, 1].

    Attributes:
        source, target: the two renders of each identity.
        controls: ``(B, 5)`` the target's controls (what the animator is given).
        source_controls: ``(B, 5)`` the source's controls (for metrics; never a model input).
        source_parts, target_parts: ``(B, S, S)`` uint8 part ids.
    """

    source: Tensor
    target: Tensor
    controls: Tensor
    source_controls: Tensor
    source_parts: Tensor
    target_parts: Tensor

    def to(
        self, device: torch.device | str, memory_format: torch.memory_format = torch.contiguous_format
    ) -> PairBatch:
        """Move to ``device``; 4-d image tensors also to ``memory_format``."""

        def mv(t: Tensor) -> Tensor:
            t = t.to(device, non_blocking=True)
            return t.contiguous(memory_format=memory_format) if t.ndim == 4 else t

        return PairBatch(*(mv(getattr(self, f)) for f in self.__dataclass_fields__))


def assemble_batch(
    src: np.ndarray,
    tgt: np.ndarray,
    src_parts: np.ndarray,
    tgt_parts: np.ndarray,
    src_ctrl: np.ndarray,
    tgt_ctrl: np.ndarray,
    rng: np.random.Generator,
    *,
    flip: bool,
    background_prob: float,
    backgrounds: np.ndarray | None,
) -> PairBatch:
    """Numpy pair arrays -> :class:`PairBatch`, with the seeded augmentations.

    ``backgrounds``: ``(B, S, S, 3)`` uint8 per pair (only read where ``background_prob``
    picks it). Draws exactly ``2 B`` numbers from ``rng`` whatever the settings.
    """
    b = src.shape[0]
    u = rng.random((2, b))
    src, tgt = src.copy(), tgt.copy()
    src_parts, tgt_parts = src_parts.copy(), tgt_parts.copy()
    src_ctrl, tgt_ctrl = src_ctrl.astype(np.float32).copy(), tgt_ctrl.astype(np.float32).copy()
    if backgrounds is not None and background_prob > 0:
        for i in np.nonzero(u[1] < background_prob)[0]:
            for arr in (src, tgt):
                a = arr[i, ..., 3:4].astype(np.uint32)
                rgb = (
                    arr[i, ..., :3].astype(np.uint32) * a + backgrounds[i].astype(np.uint32) * (255 - a) + 127
                ) // 255
                arr[i, ..., :3] = rgb.astype(np.uint8)
                arr[i, ..., 3] = 255
    if flip:
        yaw, tilt = CONTROL_NAMES.index("head_yaw"), CONTROL_NAMES.index("head_tilt")
        f = u[0] < 0.5
        for arr in (src, tgt, src_parts, tgt_parts):
            arr[f] = arr[f][:, :, ::-1]
        for c in (src_ctrl, tgt_ctrl):
            c[f, yaw] *= -1
            c[f, tilt] *= -1
    sp, tp = torch.from_numpy(src_parts), torch.from_numpy(tgt_parts)
    return PairBatch(
        source=from_uint8(src),
        target=from_uint8(tgt),
        controls=torch.from_numpy(tgt_ctrl),
        source_controls=torch.from_numpy(src_ctrl),
        source_parts=sp,
        target_parts=tp,
    )


def soften_pairs(batch: PairBatch, prob: float, seed: int) -> PairBatch:
    """With probability ``prob`` per pair, take source and target to half size and back
    (antialiased down, bilinear up): the softness of generator samples made at half the
    animator's resolution. A pure function of ``seed`` (the step's), so resume stays exact."""
    g = torch.Generator().manual_seed(seed)
    pick = torch.rand(batch.source.shape[0], generator=g) < prob
    if not bool(pick.any()):
        return batch
    s = batch.source.shape[-1]

    def soft(x: Tensor) -> Tensor:
        # Premultiplied alpha, so transparent pixels do not bleed black into the edges.
        a = (x[:, 3:] + 1) / 2
        pm = torch.cat([(x[:, :3] + 1) / 2 * a, a], 1)
        pm = F.interpolate(pm, size=(s // 2, s // 2), mode="bilinear", antialias=True, align_corners=False)
        pm = F.interpolate(pm, size=(s, s), mode="bilinear", align_corners=False)
        a = pm[:, 3:].clamp(0, 1)
        rgb = torch.where(a > 1e-4, pm[:, :3] / a.clamp_min(1e-4), torch.zeros_like(pm[:, :3])).clamp(0, 1)
        return torch.cat([rgb, a], 1) * 2 - 1

    src, tgt = batch.source.clone(), batch.target.clone()
    idx = pick.nonzero()[:, 0]
    src[idx], tgt[idx] = soft(src[idx].float()), soft(tgt[idx].float())
    return replace(batch, source=src, target=tgt)


# =============================================================================== the packed cache
@dataclass(frozen=True)
class PairSpec:
    """What a cache holds (hashed into nothing: compared field by field with the manifest)."""

    size: int = 64
    identities: int = 2000
    expressions: int = 6
    seed: int = 0
    split: str = TRAIN
    version: int = CACHE_VERSION


def _render_items(task: tuple[PairSpec, list[int]]) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    spec, indices = task
    out = []
    for i in indices:
        exprs = group_expressions(spec.seed, spec.split, i, spec.expressions)
        imgs, labs, ctrl = render_group(identity_seed(spec.seed, spec.split, i), exprs, spec.size)
        out.append((i, imgs, labs, ctrl))
    return out


def _pool_context() -> Any:
    # fork is fastest and fine here (workers only render with numpy/PIL); spawn elsewhere.
    return mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")


class PairCache:
    """Pre-rendered groups ``(identities, expressions)`` of one split, memory-mapped.

    Use :meth:`build` (or :func:`build_or_open_cache`) to create one and :meth:`open` to
    read one. ``batch(step, batch_size, seed)`` draws pairs as a pure function of its
    arguments.

    Attributes:
        images: ``(N, K, S, S, 4)`` uint8; ``parts``: ``(N, K, S, S)`` uint8;
        controls: ``(N, K, 5)`` float32; ``spec``: :class:`PairSpec`; ``path``.
    """

    def __init__(
        self, path: Path, spec: PairSpec, images: np.ndarray, parts: np.ndarray, controls: np.ndarray
    ):
        self.path = path
        self.spec = spec
        self.images = images
        self.parts = parts
        self.controls = controls
        self._backgrounds: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------------ files
    @classmethod
    def open(cls, path: str | os.PathLike) -> PairCache:
        """Open a cache directory written by :meth:`build`."""
        p = Path(path)
        man = p / "manifest.json"
        if not man.is_file():
            raise FileNotFoundError(f"{p} is not an animator pair cache (no manifest.json)")
        meta = json.loads(man.read_text("utf-8"))
        spec = PairSpec(**meta["spec"])
        load = lambda name: np.load(p / f"{name}.npy", mmap_mode="r")  # noqa: E731
        return cls(p, spec, load("images"), load("parts"), np.asarray(load("controls")))

    @classmethod
    def build(
        cls, path: str | os.PathLike, spec: PairSpec, *, workers: int = 0, progress: bool = False
    ) -> PairCache:
        """Render ``spec`` into ``path`` (atomically: a complete cache or none).

        ``workers`` > 1 renders in that many processes; the result is identical.
        """
        from avatarforge.fileio import atomic_directory, atomic_write_json

        path = Path(path)
        n, k, s = spec.identities, spec.expressions, spec.size
        chunks = [list(range(i, min(n, i + 16))) for i in range(0, n, 16)]
        with atomic_directory(path, overwrite=True) as tmp:
            images = np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8, (n, k, s, s, 4))
            parts = np.lib.format.open_memmap(tmp / "parts.npy", "w+", np.uint8, (n, k, s, s))
            controls = np.zeros((n, k, len(CONTROL_NAMES)), np.float32)
            tasks = [(spec, c) for c in chunks]
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=n, unit="identity", desc=f"rendering pairs ({spec.split}, {s}px)")

            def store(results: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]) -> None:
                for i, im, pa, ct in results:
                    images[i], parts[i], controls[i] = im, pa, ct
                if bar is not None:
                    bar.update(len(results))

            if workers > 1:
                with cf.ProcessPoolExecutor(workers, mp_context=_pool_context()) as ex:
                    for res in ex.map(_render_items, tasks):
                        store(res)
            else:
                for t in tasks:
                    store(_render_items(t))
            if bar is not None:
                bar.close()
            images.flush()
            parts.flush()
            np.save(tmp / "controls.npy", controls)
            atomic_write_json(
                tmp / "manifest.json",
                {
                    "format": "avatarforge-animator-pairs",
                    "spec": asdict(spec),
                    "control_names": list(CONTROL_NAMES),
                },
            )
        return cls.open(path)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    # ------------------------------------------------------------------ sampling
    def _background(self, i: int) -> np.ndarray:
        bg = self._backgrounds.get(i)
        if bg is None:
            bg = render_background(
                sample_attributes(identity_seed(self.spec.seed, self.spec.split, i)), self.spec.size
            )
            if len(self._backgrounds) < 4096:
                self._backgrounds[i] = bg
        return bg

    def batch(
        self,
        step: int,
        batch_size: int,
        seed: int,
        *,
        flip: bool = True,
        background_prob: float = 0.0,
    ) -> PairBatch:
        """Pairs for training step ``step``: a pure function of the arguments."""
        rng = np.random.Generator(np.random.PCG64(derive_seed(seed, 0xBA7C, step)))
        n, k = self.images.shape[:2]
        ids = rng.integers(0, n, batch_size)
        si = rng.integers(0, k, batch_size)
        ti = rng.integers(0, k, batch_size)
        order = np.argsort(ids, kind="stable")  # read the memmap in file order
        src = np.empty((batch_size, *self.images.shape[2:]), np.uint8)
        tgt = np.empty_like(src)
        sp = np.empty((batch_size, *self.parts.shape[2:]), np.uint8)
        tp = np.empty_like(sp)
        for j in order:
            src[j], tgt[j] = self.images[ids[j], si[j]], self.images[ids[j], ti[j]]
            sp[j], tp[j] = self.parts[ids[j], si[j]], self.parts[ids[j], ti[j]]
        bgs = np.stack([self._background(int(i)) for i in ids]) if background_prob > 0 else None
        return assemble_batch(
            src,
            tgt,
            sp,
            tp,
            self.controls[ids, si],
            self.controls[ids, ti],
            rng,
            flip=flip,
            background_prob=background_prob,
            backgrounds=bgs,
        )

    def pairs(
        self, sources: Sequence[int] | None = None, targets: Sequence[int] | None = None
    ) -> Iterator[tuple[int, int, int]]:
        """Every ``(identity, source expression, target expression)`` with source != target."""
        k = self.images.shape[1]
        for i in range(len(self)):
            for s in sources if sources is not None else range(k):
                for t in targets if targets is not None else range(k):
                    if s != t:
                        yield i, s, t


def cache_dir_for(root: str | os.PathLike, spec: PairSpec) -> Path:
    """``root/animator_pairs/<split>-<size>px-<N>x<K>-s<seed>-v<version>``."""
    name = f"{spec.split}-{spec.size}px-{spec.identities}x{spec.expressions}-s{spec.seed}-v{spec.version}"
    return Path(root) / "animator_pairs" / name


def build_or_open_cache(
    root: str | os.PathLike | None, spec: PairSpec, *, workers: int = 0, progress: bool = False
) -> PairCache:
    """The cache for ``spec`` under ``root`` (default: the AvatarForge cache directory),
    rendering it first if absent. Concurrent callers wait on a lock instead of rendering twice."""
    from avatarforge.fileio import default_cache_dir, file_lock

    path = cache_dir_for(root if root else default_cache_dir(), spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.parent / f".{path.name}.lock"):
        if (path / "manifest.json").is_file():
            cache = PairCache.open(path)
            if cache.spec == spec:
                return cache
        return PairCache.build(path, spec, workers=workers, progress=progress)


# =============================================================================== streaming
def _stream_batch(args: tuple[int, int, int, int, int, bool, float]) -> PairBatch:
    step, batch_size, size, seed, k, flip, background_prob = args
    rng = np.random.Generator(np.random.PCG64(derive_seed(seed, 0x57EA, step)))
    # One identity per pair, never seen before: item index = step * batch_size + j.
    src, tgt, sp, tp, sc, tc, bgs = [], [], [], [], [], [], []
    for j in range(batch_size):
        idx = step * batch_size + j
        exprs = group_expressions(seed, TRAIN, idx, k)
        a, b = rng.integers(0, k, 2)
        attrs = sample_attributes(identity_seed(seed, TRAIN, idx))
        imgs, labs, ctrl = render_group(attrs, [exprs[a], exprs[b]], size)
        src.append(imgs[0])
        tgt.append(imgs[1])
        sp.append(labs[0])
        tp.append(labs[1])
        sc.append(ctrl[0])
        tc.append(ctrl[1])
        bgs.append(render_background(attrs, size) if background_prob > 0 else None)
    return assemble_batch(
        np.stack(src),
        np.stack(tgt),
        np.stack(sp),
        np.stack(tp),
        np.stack(sc),
        np.stack(tc),
        rng,
        flip=flip,
        background_prob=background_prob,
        backgrounds=np.stack(bgs) if background_prob > 0 else None,
    )


class StreamingPairs:
    """Pairs rendered on the fly: a new identity for every pair, ``prefetch`` batches ahead.

    ``batch(step)`` is a pure function of ``(seed, step)``; rendering happens in a
    background thread (``workers=0``) or a pool of ``workers`` processes. Call
    :meth:`close` (or use as a context manager) to stop the workers.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        *,
        expressions: int = 6,
        workers: int = 0,
        prefetch: int = 4,
        flip: bool = True,
        background_prob: float = 0.0,
    ) -> None:
        self.args = (size, seed, expressions, flip, background_prob)
        self.batch_size = batch_size
        self.prefetch = max(1, prefetch)
        self._ex: cf.Executor = (
            cf.ProcessPoolExecutor(workers, mp_context=_pool_context())
            if workers > 1
            else cf.ThreadPoolExecutor(1, thread_name_prefix="animator-pairs")
        )
        self._pending: dict[int, cf.Future[PairBatch]] = {}
        self._lock = threading.Lock()

    def _task(self, step: int) -> tuple[int, int, int, int, int, bool, float]:
        size, seed, k, flip, bgp = self.args
        return (step, self.batch_size, size, seed, k, flip, bgp)

    def batch(self, step: int) -> PairBatch:
        """The batch of ``step`` (waits for it), and queues the next ``prefetch`` steps."""
        with self._lock:
            for s in list(self._pending):
                if s < step:  # a jump backwards or forwards (NaN roll-back): drop stale work
                    self._pending.pop(s).cancel()
            for s in range(step, step + self.prefetch + 1):
                if s not in self._pending:
                    self._pending[s] = self._ex.submit(_stream_batch, self._task(s))
            fut = self._pending.pop(step)
        return fut.result()

    def close(self) -> None:
        """Cancel queued work and stop the workers."""
        with self._lock:
            for f in self._pending.values():
                f.cancel()
            self._pending.clear()
        self._ex.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> StreamingPairs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
