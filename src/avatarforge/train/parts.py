"""Training the part segmenter: :class:`PartsTrainer`, one family of the training engine.

One step, top to bottom (:meth:`PartsTrainer.train_step`)::

    batch = batches.batch(step)        (degraded whole avatars, their part maps at out_scale x)
    logits = G(batch.x)
    loss = CE(logits, batch.parts, weight=class weights)   (eyes, brows and mouth count)
    EMA of G

Batches are a pure function of ``(seed, step)`` (:mod:`avatarforge.data.part_pairs`) and the
step draws no other random numbers, so a stopped and resumed run is bit-identical to an
uninterrupted one on CPU. Everything around the step is the engine's
(:class:`~avatarforge.train.engine.Trainer`): ``runs/NNNNN-parts-<size>/``, checkpoints with
``g`` and ``g_ema`` (:func:`avatarforge.runs.load_segmenter` loads ``g_ema``), resume, the NaN
guard and ``metrics.jsonl``. Held-out evaluation (:func:`part_metrics`) runs every
``log.metric_every_kimg`` and at the end: per-part IoU and the face-found rate
(:func:`~avatarforge.models.parts.face_found`) on held-out renders.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avatarforge.config import ConfigError
from avatarforge.data.part_pairs import HELDOUT, TRAIN, PartBatch, PartBatches, build_part_pool
from avatarforge.data.procedural.schema import PART_NAMES
from avatarforge.data.refine_pairs import Degradation
from avatarforge.device import autocast
from avatarforge.imageio import make_grid, save_image
from avatarforge.models.parts import PartSegmenter, color_parts, face_found, predict_part_map
from avatarforge.train.checkpoint import Snapshot
from avatarforge.train.engine import Trainer
from avatarforge.train.schedule import seeded_init

__all__ = ["PART_CLASS_WEIGHTS", "SMALL_PARTS", "PartsTrainer", "part_metrics"]

#: Cross-entropy weight of each part (PART_NAMES order): about the square root of the inverse
#: pixel frequency relative to skin, measured on 200 renders at 128 px (eye_white 0.14 % of the
#: pixels, iris 1.0 %, eye_line 0.39 %, eyebrow 0.13 %, mouth 0.10 %, hair_tie 0.11 %).
PART_CLASS_WEIGHTS: tuple[float, ...] = (0.4, 1.0, 0.6, 7.6, 2.8, 4.5, 7.9, 8.9, 0.7, 2.1, 8.7)

#: The parts a rig animates (eyes, brows, mouth): their mean IoU is ``miou_face``.
SMALL_PARTS = ("eye_white", "iris", "eye_line", "eyebrow", "mouth")


def part_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Compare ``(N, S, S)`` predicted part maps with the true ones.

    Returns ``iou_<part>`` for every part in :data:`PART_NAMES` (intersection over union over
    all maps; NaN for a part in neither), ``miou`` (their mean), ``miou_face`` (the mean over
    :data:`SMALL_PARTS`), ``acc`` (pixel accuracy), ``face_truth`` (the fraction of true maps
    with an open-eyed face, :func:`face_found`), ``face_found`` (of those, the fraction whose
    predicted map has one too) and ``face_false`` (of the others, the fraction where a face is
    predicted anyway).
    """
    if pred.shape != true.shape:
        raise ValueError(f"predicted {pred.shape} and true {true.shape} part maps differ in shape")
    out: dict[str, float] = {"acc": float((pred == true).mean())}
    ious = {}
    for i, name in enumerate(PART_NAMES):
        p, t = pred == i, true == i
        union = int((p | t).sum())
        ious[name] = float((p & t).sum() / union) if union else float("nan")
        out[f"iou_{name}"] = ious[name]
    out["miou"] = float(np.nanmean(list(ious.values())))
    out["miou_face"] = float(np.nanmean([ious[n] for n in SMALL_PARTS]))
    has = np.array([face_found(t) for t in true])
    got = np.array([face_found(p) for p in pred])
    out["face_truth"] = float(has.mean())
    out["face_found"] = float(got[has].mean()) if has.any() else float("nan")
    out["face_false"] = float(got[~has].mean()) if (~has).any() else 0.0
    return out


class PartsTrainer(Trainer):
    """Train a :class:`~avatarforge.models.parts.PartSegmenter` (see the module docstring).

    Attributes useful to hooks: ``G``, ``G_ema``, ``batches``, ``heldout_images``
    (``(n, S, S, 4)`` uint8), ``heldout_parts`` (``(n, T, T)``), ``last_eval``.
    """

    ACC_KEYS = ("ce", "acc")
    BAR_KEYS = ("ce", "acc")
    BUILTIN_METRICS = tuple(
        f"eval_{k}"
        for k in ("acc", "miou", "miou_face", "face_found", "face_false", *(f"iou_{n}" for n in PART_NAMES))
    )
    COMMAND = "avatarforge train"
    RUN_NAME = "parts"
    NEXT_STEP = "load it with: avatarforge.runs.load_segmenter('{run}')"

    # ------------------------------------------------------------------ set-up
    def _build(self) -> None:
        cfg, d, m = self.cfg, self.cfg.data, self.cfg.model
        self.resolution = d.size
        self.last_eval: dict[str, Any] = {}
        pool = build_part_pool(
            d.pool, d.size, cfg.seed, target_scale=m.out_scale, split=TRAIN,
            cache_dir=d.cache_dir or None, workers=d.workers, progress=cfg.log.progress,
        )  # fmt: skip
        held = build_part_pool(
            d.heldout, d.size, cfg.seed, target_scale=m.out_scale, split=HELDOUT,
            cache_dir=d.cache_dir or None, workers=d.workers,
        )  # fmt: skip
        self.heldout_images = np.asarray(held.images)
        self.heldout_parts = np.asarray(held.parts)
        degradation = Degradation.from_settings(d.degrade)
        self.batches = PartBatches(
            pool.images, pool.parts, seed=cfg.seed, degradation=degradation, flip=d.flip, shift=d.shift
        )
        with seeded_init(cfg.seed, 0x9A27):
            G = PartSegmenter(channels=4, widths=list(m.widths), out_scale=m.out_scale)
        self._register_ema_networks(
            G, memory_format=torch.channels_last if self.channels_last else torch.contiguous_format
        )
        self.gens = {}  # batches and degradations come from (seed, step)
        weights = list(cfg.loss.class_weights) or list(PART_CLASS_WEIGHTS)
        self.class_weights = torch.tensor(weights, dtype=torch.float32, device=self.device)

    # ------------------------------------------------------------------ data
    def _batches(self) -> Iterator[tuple[PartBatch]]:
        while True:
            yield (self.batches.batch(self.step, self.cfg.batch_size).to(self.device),)

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: PartBatch) -> dict[str, Tensor]:
        x = batch.x.contiguous(memory_format=torch.channels_last) if self.channels_last else batch.x
        with autocast(self.device, self.amp):
            logits = self.G(x).float()
        ce = F.cross_entropy(logits, batch.parts, weight=self.class_weights)
        acc = (logits.detach().argmax(1) == batch.parts).float().mean()
        self._optimize(self.opt_g, ce)
        self._update_g_ema()
        return {"ce": ce.detach(), "acc": acc}

    def _log_fields(self) -> dict[str, Any]:
        return {"lr": self.opt_g.param_groups[0]["lr"]}

    # ------------------------------------------------------------------ samples and evaluation
    def save_samples(self) -> Path:
        """``samples/parts_KKKKKK.png``: rows input (nearest-upscaled), predicted (EMA) and true part maps."""
        assert self.run_dir is not None
        n = min(self.cfg.log.num_samples, len(self.heldout_images))
        imgs, true = self.heldout_images[:n], self.heldout_parts[:n]
        t = true.shape[-1] // imgs.shape[1]
        big = imgs.repeat(t, 1).repeat(t, 2)
        a = big[..., 3:4].astype(np.float32) / 255.0
        shown = (big[..., :3] * a + 255 * (1 - a)).round().astype(np.uint8)
        pred = predict_part_map(self.G_ema, imgs)
        grid = make_grid(np.concatenate([shown, color_parts(pred), color_parts(true)]), nrow=n)
        return save_image(self.run_dir / "samples" / f"parts_{self.nimg // 1000:06d}.png", grid)

    def evaluate(self) -> dict[str, float]:
        """:func:`part_metrics` of the EMA segmenter on the held-out renders (at the map size)."""
        return part_metrics(predict_part_map(self.G_ema, self.heldout_images), self.heldout_parts)

    def _evaluate(self) -> dict[str, Any]:
        res = self.evaluate()
        summary = (
            f"held-out: mIoU {res['miou']:.3f} (eyes/brows/mouth {res['miou_face']:.3f}), face found "
            f"{res['face_found']:.3f} of {res['face_truth']:.2f} with open eyes"
        )
        return self._held_out_results(res, summary, unlogged=("face_truth",))

    # ------------------------------------------------------------------ checkpoints
    def _extra_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        cfg = self.cfg
        return {}, {
            "resolution": self.resolution,
            "out_scale": cfg.model.out_scale,
            "data": {"seed": cfg.seed, "next_step": self.step, "pool": cfg.data.pool},
        }

    def _load_extra_state(self, snap: Snapshot, *, counters: bool) -> None:
        meta = snap.meta
        if counters and int(meta.get("resolution", self.resolution)) != self.resolution:
            raise ConfigError(
                f"data.size: the checkpoint was trained at {meta.get('resolution')} px, this config says {self.resolution}"
            )
        if counters and int(meta.get("out_scale", self.cfg.model.out_scale)) != self.cfg.model.out_scale:
            raise ConfigError(
                f"model.out_scale: the checkpoint predicts at x{meta.get('out_scale')}, "
                f"this config says x{self.cfg.model.out_scale}"
            )
