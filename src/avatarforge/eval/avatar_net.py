"""The ``avatar`` feature extractor: a small attribute CNN trained on procedural avatars.

Standard FID features come from an ImageNet classifier whose weights must be downloaded;
this network needs nothing: AvatarForge renders procedural avatars
(:mod:`avatarforge.data.procedural`), trains the network to recognise their attributes, and
caches the weights. It is used for

- ``FID_avatar`` / ``KID_avatar`` / precision-recall: its penultimate layer (a 256-d
  embedding) is the feature vector;
- attribute accuracy of conditional generators (:meth:`AvatarExtractor.attribute_predictions`):
  does an image generated for ``hair_color=pink`` show pink hair?

Training (:func:`train_avatar_net`) is a pure function of an :class:`AvatarNetRecipe`:
images are rendered from fixed seeds, the initialisation and the batch order come from the
recipe's seed, and nothing reads the global RNG, so the same recipe gives the same weights
(bit for bit on the same machine and thread count; different CPUs may round differently,
which is why results record the weights hash). It takes about a minute on 2 CPU cores; the
result is stored under ``<cache>/avatar_net/<recipe hash>/`` (``model.safetensors``,
``config.json``, ``report.json`` with the held-out accuracy per attribute) and reused.

The network itself (:class:`~avatarforge.models.avatar_net.AvatarAttributeNet`) lives in
:mod:`avatarforge.models.avatar_net`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avatarforge.eval.features import FeatureExtractor, ImageBatch, to_unit_float
from avatarforge.fileio import file_sha256
from avatarforge.models.avatar_net import AvatarAttributeNet
from avatarforge.models.base import CONFIG_NAME, WEIGHTS_NAME

__all__ = [
    "DEFAULT_RECIPE",
    "AvatarAttributeNet",
    "AvatarExtractor",
    "AvatarNetRecipe",
    "evaluate_avatar_net",
    "load_or_train_avatar_net",
    "render_training_set",
    "train_avatar_net",
]

REPORT_NAME = "report.json"


# ----------------------------------------------------------------------------- the recipe
@dataclass(frozen=True)
class AvatarNetRecipe:
    """Everything that determines the trained weights (hashed into the cache key).

    Attributes:
        size: input side (images of other sizes are resized to it).
        width: channels of the first conv (the trunk uses w, 2w, 4w, 8w).
        embed_dim: size of the embedding (the feature vector).
        train_images, heldout_images: procedural avatars rendered for training / evaluation.
        epochs: passes over the training images.
        batch_size, lr, weight_decay: AdamW with a one-cycle learning-rate schedule.
        eye_color_weight: loss weight of the eye-colour head (a small detail that the trunk
            otherwise learns last).
        regression_weight: weight of the expression-control regression (MSE).
        max_shift: random translation of each batch, in pixels (robustness to framing).
        white_background: fraction of images composited on plain white instead of their
            drawn background (transparent data sets are evaluated on white).
        seed: seeds the data, the initialisation and the batch order.
        version: bumped when the training code changes what a recipe produces.
    """

    size: int = 64
    width: int = 32
    embed_dim: int = 256
    train_images: int = 8000
    heldout_images: int = 1000
    epochs: float = 3.0
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    eye_color_weight: float = 4.0
    regression_weight: float = 2.0
    max_shift: int = 3
    white_background: float = 0.25
    seed: int = 0
    version: int = 2

    def hash(self) -> str:
        """16 hex digits identifying the recipe (the cache directory name)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


DEFAULT_RECIPE = AvatarNetRecipe()
# Seed streams of the rendered avatars: far from the built-in data set's item seeds
# (seed * 1_000_003 + i) for any practical data set seed.
_SEED_BASE = 7_000_000_000
_HELDOUT_OFFSET = 50_000_000
_CHUNK = 64


# ----------------------------------------------------------------------------- data
def _item_seeds(recipe: AvatarNetRecipe, split: str) -> list[int]:
    base = _SEED_BASE + recipe.seed * 100_000_000 + (_HELDOUT_OFFSET if split == "heldout" else 0)
    n = recipe.train_images if split == "train" else recipe.heldout_images
    return [base + i for i in range(n)]


def _render_chunk(task: tuple[list[int], int, float]) -> tuple[np.ndarray, np.ndarray]:
    """Render avatars from seeds: ``(images (n, S, S, 3) uint8, labels (n, A) float32)``."""
    from avatarforge.data import procedural as P

    seeds, size, white_fraction = task
    bg_cols = [P.SCHEMA.index("background_kind"), P.SCHEMA.index("background_color")]
    images, labels = [], []
    for s in seeds:
        attrs = P.sample_attributes(s)
        rgba = P.render(attrs, size).astype(np.float32)  # (S, S, 4) straight alpha
        # A per-item draw independent of the attribute stream decides the backdrop.
        white = np.random.Generator(np.random.PCG64([s, 1])).random() < white_fraction
        bg = np.full((size, size, 3), 255.0, np.float32) if white else P.render_background(attrs, size)
        a = rgba[..., 3:4] / 255.0
        images.append(np.round(rgba[..., :3] * a + bg * (1.0 - a)).astype(np.uint8))
        row = P.SCHEMA.encode(attrs)
        if white:
            row[bg_cols] = np.nan  # the drawn background is not visible: no label
        labels.append(row)
    return np.stack(images), np.stack(labels)


def render_training_set(
    recipe: AvatarNetRecipe, split: str = "train", workers: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The recipe's ``"train"`` or ``"heldout"`` avatars: ``(images (N, S, S, 3) uint8, labels (N, A))``.

    Labels follow :data:`avatarforge.data.procedural.SCHEMA` (NaN = not visible). The output
    does not depend on ``workers`` (default: up to 2 processes).
    """
    seeds = _item_seeds(recipe, split)
    tasks = [
        (seeds[i : i + _CHUNK], recipe.size, recipe.white_background) for i in range(0, len(seeds), _CHUNK)
    ]
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    if workers <= 1 or len(tasks) <= 1:
        parts = [_render_chunk(t) for t in tasks]
    else:
        with mp.get_context().Pool(min(workers, len(tasks))) as pool:
            parts = pool.map(_render_chunk, tasks)  # in order: deterministic
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# ----------------------------------------------------------------------------- training
def _cpu_seconds() -> float:
    """CPU time of this process plus its finished children (the render workers)."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _to_input(u8: Tensor) -> Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [-1, 1]."""
    return u8.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).contiguous()


def _targets(net: AvatarAttributeNet, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(B, A) schema labels -> (class indices (B, K) with -100 = unknown, continuous (B, C))."""
    from avatarforge.data.procedural import SCHEMA

    cat_cols = [SCHEMA.index(n) for n in net.categorical_names]
    cont_cols = [SCHEMA.index(n) for n in net.continuous_names]
    cat = labels[:, cat_cols]
    cat = torch.where(torch.isnan(cat), torch.full_like(cat, -100.0), cat).long()
    return cat, labels[:, cont_cols]


def _loss(net: AvatarAttributeNet, out: Tensor, cat: Tensor, cont: Tensor, recipe: AvatarNetRecipe) -> Tensor:
    logits, reg = net.split_heads(out)
    loss = out.new_zeros(())
    for i, (name, lg) in enumerate(zip(net.categorical_names, logits)):
        w = recipe.eye_color_weight if name == "eye_color" else 1.0
        if (cat[:, i] >= 0).any():
            loss = loss + w * F.cross_entropy(lg, cat[:, i], ignore_index=-100)
    known = ~torch.isnan(cont)
    if known.any():
        loss = loss + recipe.regression_weight * F.mse_loss(reg[known], cont[known])
    return loss


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one CPU thread for the block (restored afterwards).

    The result then does not depend on the caller's thread settings (reductions split
    across threads round differently), and on a busy machine it is faster: OpenMP threads
    that wait for a descheduled sibling cost more than they gain for a network this small.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_avatar_net(
    recipe: AvatarNetRecipe = DEFAULT_RECIPE, *, progress: bool = False, workers: int | None = None
) -> tuple[AvatarAttributeNet, dict[str, Any]]:
    """Train the attribute net from scratch on the CPU; returns ``(net in eval mode, report)``.

    The report holds the held-out accuracy per categorical attribute, the mean absolute
    error per expression control, timings and the recipe. Deterministic in the recipe:
    rendering is seeded, training runs on one thread, and nothing reads or changes the
    caller's global RNG state. ``workers`` render processes (default up to 2) do not change
    the result.
    """
    with _one_thread():
        return _train(recipe, progress, workers)


def _train(
    recipe: AvatarNetRecipe, progress: bool, workers: int | None
) -> tuple[AvatarAttributeNet, dict[str, Any]]:
    t0 = time.perf_counter()
    cpu0 = _cpu_seconds()
    x_train, y_train = render_training_set(recipe, "train", workers)
    x_test, y_test = render_training_set(recipe, "heldout", workers)
    t_render = time.perf_counter() - t0
    cpu_render = _cpu_seconds() - cpu0
    if progress:
        print(
            f"avatar net: rendered {len(x_train) + len(x_test)} avatars in {t_render:.1f} s", file=sys.stderr
        )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        net = AvatarAttributeNet(size=recipe.size, width=recipe.width, embed_dim=recipe.embed_dim)
    X = torch.from_numpy(x_train)  # (N, S, S, 3) uint8
    cat_all, cont_all = _targets(net, torch.from_numpy(y_train))
    n = len(X)
    steps = max(1, int(recipe.epochs * n / recipe.batch_size))
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps, pct_start=0.2)
    g = torch.Generator().manual_seed(recipe.seed + 1)
    net.train()
    t1, cpu1 = time.perf_counter(), time.process_time()
    for step in range(steps):
        idx = torch.randint(n, (recipe.batch_size,), generator=g)
        x = _to_input(X[idx])  # (B, 3, S, S)
        if recipe.max_shift:
            dy, dx = torch.randint(-recipe.max_shift, recipe.max_shift + 1, (2,), generator=g).tolist()
            x = torch.roll(x, (dy, dx), (2, 3))
        _, out = net(x)
        loss = _loss(net, out, cat_all[idx], cont_all[idx], recipe)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress and (step + 1) % max(1, steps // 5) == 0:
            print(f"avatar net: step {step + 1}/{steps} loss {loss.item():.3f}", file=sys.stderr)
    t_train, cpu_train = time.perf_counter() - t1, time.process_time() - cpu1
    net.eval().requires_grad_(False)
    report = evaluate_avatar_net(net, x_test, y_test)
    with torch.no_grad():
        emb = torch.cat(
            [
                net.embedding(_to_input(torch.from_numpy(x_test[s : s + 256])))
                for s in range(0, len(x_test), 256)
            ]
        )
        net.feature_scale.fill_(1.0 / emb.pow(2).mean().sqrt().clamp_min(1e-6))
    report.update(
        {
            "recipe": asdict(recipe),
            "recipe_hash": recipe.hash(),
            "render_seconds": round(t_render, 2),
            "train_seconds": round(t_train, 2),
            # CPU seconds: what the wall time would be on an idle machine (training uses one
            # thread; rendering is summed over the worker processes).
            "render_cpu_seconds": round(cpu_render, 2),
            "train_cpu_seconds": round(cpu_train, 2),
            "total_seconds": round(time.perf_counter() - t0, 2),
            "steps": steps,
            "torch_version": torch.__version__,
        }
    )
    return net, report


@torch.no_grad()
def evaluate_avatar_net(net: AvatarAttributeNet, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Held-out accuracy of every categorical head and MAE of every regression head.

    ``images``: (N, H, W, 3) uint8; ``labels``: (N, A) schema labels (NaN = not counted).
    ``eye_color_eyes_open`` is the eye-colour accuracy where ``eye_open >= 0.5`` (a closed
    eye hides the iris, so no classifier can be right there beyond chance).
    """
    from avatarforge.data.procedural import SCHEMA

    outs = []
    for s in range(0, len(images), 256):
        _, out = net(_to_input(torch.from_numpy(images[s : s + 256])))
        outs.append(out)
    logits, reg = net.split_heads(torch.cat(outs))
    cat, cont = _targets(net, torch.from_numpy(labels))
    acc = {}
    for i, (name, lg) in enumerate(zip(net.categorical_names, logits)):
        known = cat[:, i] >= 0
        acc[name] = round(float((lg.argmax(1)[known] == cat[known, i]).float().mean()), 4)
    mae = {
        name: round(float((reg[:, j] - cont[:, j]).abs().nanmean()), 4)
        for j, name in enumerate(net.continuous_names)
    }
    report: dict[str, Any] = {"heldout_images": len(images), "accuracy": acc, "mae": mae}
    if "eye_color" in net.categorical_names:
        i = net.categorical_names.index("eye_color")
        open_ = torch.from_numpy(labels[:, SCHEMA.index("eye_open")] >= 0.5)
        hit = logits[i].argmax(1)[open_] == cat[open_, i]
        report["eye_color_eyes_open"] = round(float(hit.float().mean()), 4)
    return report


# ----------------------------------------------------------------------------- cache
def _cache_entry(recipe: AvatarNetRecipe, cache_dir: str | os.PathLike | None) -> Path:
    from avatarforge.fileio import default_cache_dir

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "avatar_net" / recipe.hash()


def _load_entry(entry: Path) -> tuple[AvatarAttributeNet, dict[str, Any]] | None:
    if not ((entry / CONFIG_NAME).is_file() and (entry / WEIGHTS_NAME).is_file()):
        return None
    net = AvatarAttributeNet.from_pretrained(entry)
    report_path = entry / REPORT_NAME
    report = json.loads(report_path.read_text("utf-8")) if report_path.is_file() else {}
    return net.eval().requires_grad_(False), report  # type: ignore[return-value]


def load_or_train_avatar_net(
    recipe: AvatarNetRecipe = DEFAULT_RECIPE,
    cache_dir: str | os.PathLike | None = None,
    *,
    progress: bool = False,
) -> tuple[AvatarAttributeNet, dict[str, Any], Path]:
    """The trained net for ``recipe`` from the cache, training (once) if absent.

    Returns ``(net, report, cache entry directory)``. Concurrent callers wait on a lock
    instead of training twice. The report gains ``weights_sha256``.
    """
    from avatarforge.fileio import atomic_directory, atomic_write_json, file_lock

    entry = _cache_entry(recipe, cache_dir)
    loaded = _load_entry(entry)
    if loaded is None:
        with file_lock(entry.parent / f"{entry.name}.lock"):
            loaded = _load_entry(entry)
            if loaded is None:
                if progress:
                    print(
                        f"avatar net: training on procedural avatars (first use; cached in {entry})",
                        file=sys.stderr,
                    )
                net, report = train_avatar_net(recipe, progress=progress)
                with atomic_directory(entry, overwrite=True) as tmp:
                    net.save_pretrained(tmp)
                    report["weights_sha256"] = file_sha256(tmp / WEIGHTS_NAME, memoize=True)
                    atomic_write_json(tmp / REPORT_NAME, report)
                loaded = (net, report)
                if progress:
                    print(f"avatar net: held-out accuracy {report['accuracy']}", file=sys.stderr)
    net, report = loaded
    if "weights_sha256" not in report:
        report["weights_sha256"] = file_sha256(entry / WEIGHTS_NAME, memoize=True)
    return net, report, entry


# ----------------------------------------------------------------------------- extractor
class AvatarExtractor(FeatureExtractor):
    """``avatar``: the attribute net's embedding as features, plus attribute predictions.

    Args:
        weights: a directory written by ``AvatarAttributeNet.save_pretrained`` (e.g. a cache
            entry copied from another machine); default: the cached net of ``recipe``,
            trained on first use (about a minute on 2 cores).
        device: where to run.
        recipe: the training recipe (default :data:`DEFAULT_RECIPE`).
        cache_dir: cache root (default ``$AVATARFORGE_CACHE`` or ``~/.cache/avatarforge``).
        progress: print training progress to stderr.
    """

    name = "avatar"

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        recipe: AvatarNetRecipe | None = None,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = False,
    ) -> None:
        if weights is not None:
            w = Path(weights)
            if not (w / CONFIG_NAME).is_file():
                raise FileNotFoundError(
                    f"--weights {w}: the avatar extractor takes a directory holding {CONFIG_NAME} and "
                    f"{WEIGHTS_NAME} (a cache entry under <cache>/avatar_net/); omit --weights to use "
                    "(or train) the cached net"
                )
            loaded = _load_entry(w)
            assert loaded is not None
            self.net, self.report = loaded
            self.report.setdefault("weights_sha256", file_sha256(w / WEIGHTS_NAME, memoize=True))
            self.entry = w
        else:
            self.net, self.report, self.entry = load_or_train_avatar_net(
                recipe or DEFAULT_RECIPE, cache_dir, progress=progress
            )
        self.weights_sha256: str = self.report["weights_sha256"]
        self.feature_dim = self.net.embed_dim
        self.input_size = self.net.size
        self.to(device)

    @property
    def identity(self) -> str:
        return f"avatar:{self.weights_sha256[:16]}"

    def to(self, device: str | torch.device) -> AvatarExtractor:
        self.device = torch.device(device)
        self.net.to(self.device)
        return self

    def features(self, x: Tensor) -> Tensor:
        return self.net.features(x * 2 - 1)

    @torch.no_grad()
    def attribute_predictions(
        self, images: ImageBatch, include_continuous: bool = True
    ) -> dict[str, np.ndarray]:
        """Per-attribute predictions for a batch of images (any format :func:`to_unit_float` takes).

        Returns ``{categorical name: (B, K) class probabilities (float32, classes in the
        order of `categorical_values`)}`` and, with ``include_continuous``, ``{control
        name: (B,) predicted value}`` for the expression controls.
        """
        x = to_unit_float(images, self.device) * 2 - 1
        _, out = self.net(x)
        logits, reg = self.net.split_heads(out.float())
        res = {n: torch.softmax(lg, 1).cpu().numpy() for n, lg in zip(self.net.categorical_names, logits)}
        if include_continuous:
            res.update({n: reg[:, j].cpu().numpy() for j, n in enumerate(self.net.continuous_names)})
        return res

    def class_names(self, attribute: str) -> list[str]:
        """The class names of a categorical attribute, in probability-column order."""
        return self.net.categorical_values[self.net.categorical_names.index(attribute)]

    def info(self) -> dict[str, Any]:
        return {
            **super().info(),
            "weights": str(self.entry),
            "weights_sha256": self.weights_sha256,
            "recipe_hash": self.report.get("recipe_hash"),
            "heldout_accuracy": self.report.get("accuracy", {}),
        }
