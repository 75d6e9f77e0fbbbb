"""Training the refiner: :class:`RefinerTrainer`, one family of the training engine.

One step, top to bottom (:meth:`RefinerTrainer.train_step`)::

    batch = pairs.batch(step)                  (degraded low-res crop, target crop[, part map])
    G step (D frozen):  out, logits = G.forward_with_parts(lr)
                        loss_G = l1_weight       * |pm(out) - pm(hr)|               (premultiplied RGBA)
                               + straight_weight * alpha_hr |rgb(out) - rgb(hr)|
                               + edge_weight     * |grad pm(out) - grad pm(hr)|     (finite differences)
                               + part_weight     * CE(logits, part map)            (built-in data)
                               + adv_weight(kimg) * hinge_g(D(pm(out)))
    D step:             loss_D = hinge_d(D(pm(hr)), D(pm(out)))   (once the adversarial term is on)
    EMA of G

Pairs are a pure function of ``(seed, step)`` (:mod:`avatarforge.data.refine_pairs`) and the
step draws no other random numbers, so a stopped and resumed run is bit-identical to an
uninterrupted one on CPU. Everything around the step is the engine's
(:class:`~avatarforge.train.engine.Trainer`): ``runs/NNNNN-refiner-<size>/``, checkpoints with
``g``, ``g_ema`` and ``d`` (:func:`avatarforge.runs.load_refiner` loads ``g_ema``), resume,
the NaN guard and ``metrics.jsonl``. Held-out evaluation (:func:`refiner_metrics`) runs every
``log.metric_every_kimg`` and at the end: PSNR against the target, the same for bicubic
interpolation, sharpness (mean gradient inside the silhouette relative to the target's) and
part-map accuracy.
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
from avatarforge.data.refine_pairs import (
    HELDOUT,
    TRAIN,
    Degradation,
    RefineBatch,
    RefinePairs,
    area_downsample,
    build_render_pool,
)
from avatarforge.device import autocast
from avatarforge.imageio import make_grid, save_image
from avatarforge.models.refiner import Refiner, RefinerDiscriminator, predict_parts, refine_images
from avatarforge.train.checkpoint import Snapshot
from avatarforge.train.engine import Trainer
from avatarforge.train.schedule import delayed_ramp, seeded_init

__all__ = ["PART_CLASS_WEIGHTS", "RefinerTrainer", "downsample_u8", "refiner_metrics", "sharpness"]

#: Cross-entropy weight of each part (PART_NAMES order). The parts a rig animates (eyes, brows,
#: mouth) cover well under 1 % of an avatar each: unweighted, a short run learns to predict
#: background, skin, hair and outfit only and finds no face to rig (measured: 3.3 kimg, no
#: eye pixel predicted). Weights about the square root of the inverse frequency.
PART_CLASS_WEIGHTS: tuple[float, ...] = (1.0, 1.0, 1.0, 6.0, 4.0, 6.0, 8.0, 10.0, 1.0, 2.0, 3.0)


# ------------------------------------------------------------------------------------ metrics
def _premult01(u8: np.ndarray) -> np.ndarray:
    x = u8.astype(np.float32) / 255.0
    if x.shape[-1] == 4:
        x = np.concatenate([x[..., :3] * x[..., 3:4], x[..., 3:4]], -1)
    return x


def sharpness(images: np.ndarray, mask: np.ndarray) -> float:
    """Mean gradient magnitude (|dx| + |dy| of premultiplied colour in [0, 1]) inside ``mask``.

    ``images`` ``(N, H, W, C)`` uint8, ``mask`` ``(N, H, W)`` bool."""
    x = _premult01(images)[..., :3]
    g = np.zeros(x.shape[:-1], np.float32)
    g[:, :, :-1] += np.abs(np.diff(x, axis=2)).sum(-1)
    g[:, :-1, :] += np.abs(np.diff(x, axis=1)).sum(-1)
    return float(g[mask].mean()) if mask.any() else 0.0


def refiner_metrics(
    pred: np.ndarray,
    target: np.ndarray,
    parts_pred: np.ndarray | None = None,
    parts: np.ndarray | None = None,
) -> dict[str, float]:
    """Compare ``(N, H, W, C)`` uint8 outputs with their targets.

    Returns ``psnr`` (dB, premultiplied RGBA in [0, 1]), ``sharpness`` (the outputs' mean
    gradient inside the target's silhouette over the target's; 1 = as crisp) and, with part
    maps, ``part_acc`` (all pixels) and ``part_acc_fg`` (the character's pixels).
    """
    p, t = _premult01(pred), _premult01(target)
    mse = float(np.mean((p - t) ** 2))
    out = {"psnr": 10 * np.log10(1.0 / max(mse, 1e-12))}
    mask = target[..., 3] >= 128 if target.shape[-1] == 4 else np.ones(target.shape[:3], bool)
    out["sharpness"] = sharpness(pred, mask) / max(sharpness(target, mask), 1e-9)
    if parts_pred is not None and parts is not None:
        out["part_acc"] = float((parts_pred == parts).mean())
        fg = parts > 0
        out["part_acc_fg"] = float((parts_pred[fg] == parts[fg]).mean()) if fg.any() else 0.0
    return {k: float(v) for k, v in out.items()}


def downsample_u8(images: np.ndarray, factor: int) -> np.ndarray:
    """``(N, H, W, C)`` uint8 -> ``/ factor`` by area averaging in premultiplied alpha (what a good
    generator's low-resolution output looks like)."""
    x = torch.from_numpy(np.array(images, dtype=np.uint8)).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    y = area_downsample(x, factor)
    return y.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


class _ResizedImages:
    """A packed data set's images area-resized to ``size`` on access (item by item)."""

    def __init__(self, images: np.ndarray, size: int) -> None:
        self.src, self.size = images, size
        self.shape = (images.shape[0], size, size, images.shape[-1])
        self._last: tuple[int, np.ndarray] | None = None

    def _item(self, i: int) -> np.ndarray:
        if self._last is None or self._last[0] != i:
            from PIL import Image

            arr = np.asarray(self.src[i])
            mode = "RGBA" if arr.shape[-1] == 4 else "RGB"
            img = Image.fromarray(arr, mode).resize((self.size, self.size), Image.Resampling.BOX)
            self._last = (i, np.asarray(img))
        return self._last[1]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            return self._item(int(key[0]))[key[1:]]
        if isinstance(key, (int, np.integer)):
            return self._item(int(key))
        return np.stack([self._item(int(i)) for i in np.arange(self.shape[0])[key]])


def _pm(x: Tensor) -> Tensor:
    """Straight RGBA in [-1, 1] -> premultiplied RGBA in [-1, 1] (RGB passes through)."""
    if x.shape[1] != 4:
        return x
    a = x[:, 3:4].add(1).mul(0.5)
    return torch.cat([(x[:, :3].add(1).mul(0.5) * a).mul(2).sub(1), x[:, 3:4]], 1)


def _grads(x: Tensor) -> tuple[Tensor, Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


class RefinerTrainer(Trainer):
    """Train a :class:`~avatarforge.models.refiner.Refiner` (see the module docstring).

    Attributes useful to hooks: ``G``, ``G_ema``, ``D``, ``pairs``, ``heldout_images``
    (``(n, S, S, C)`` uint8 targets), ``heldout_parts``, ``last_eval``.
    """

    ACC_KEYS = ("l1", "straight", "edge", "part_ce", "adv_g", "loss_g", "loss_d")
    BAR_KEYS = ("l1", "edge", "loss_d")
    BUILTIN_METRICS = tuple(
        f"eval_{k}"
        for k in ("psnr", "psnr_bicubic", "sharpness", "sharpness_bicubic", "part_acc", "part_acc_fg")
    )
    COMMAND = "avatarforge train"
    RUN_NAME = "refiner"
    DATA_PATHS = ("source",)
    NEXT_STEP = "load it with: avatarforge.runs.load_refiner('{run}')"

    # ------------------------------------------------------------------ set-up
    def _build(self) -> None:
        cfg, d, m = self.cfg, self.cfg.data, self.cfg.model
        self.resolution = d.size
        self.last_eval: dict[str, Any] = {}
        if d.source:
            from avatarforge.data.dataset import PackedDataset

            ds = PackedDataset(d.source)
            if ds.size < d.size:
                fit = ds.size // d.scale * d.scale
                raise ConfigError(
                    f"data.source: the data set's images are {ds.size}px, smaller than data.size={d.size}; "
                    f"use data.size={fit} (and data.crop <= {fit}) or a data set of at least {d.size}px"
                )
            if len(ds) <= d.heldout:
                raise ConfigError(
                    f"data.heldout: {d.heldout} held-out images leave none of the {len(ds)} in {d.source} to train on"
                )
            images: Any = ds.images if ds.size == d.size else _ResizedImages(ds.images, d.size)
            parts = None
            n = len(ds)
            train_idx, held_idx = np.arange(n - d.heldout), np.arange(n - d.heldout, n)
            self.heldout_images = np.stack([np.asarray(images[int(i)]) for i in held_idx])
            self.heldout_parts = None
        else:
            pool = build_render_pool(
                d.pool, d.size, cfg.seed, split=TRAIN, cache_dir=d.cache_dir or None,
                workers=d.workers, progress=cfg.log.progress,
            )  # fmt: skip
            held = build_render_pool(
                d.heldout, d.size, cfg.seed, split=HELDOUT, cache_dir=d.cache_dir or None, workers=d.workers
            )
            images, parts, train_idx = pool.images, pool.parts, None
            self.heldout_images = np.asarray(held.images)
            self.heldout_parts = np.asarray(held.parts)
        channels = int(images.shape[-1])
        degradation = Degradation.from_settings(d.degrade)
        self.pairs = RefinePairs(
            images, parts, scale=d.scale, crop=d.crop, seed=cfg.seed, degradation=degradation,
            indices=train_idx, flip=d.flip,
        )  # fmt: skip
        part_classes = 11 if (m.part_head and parts is not None) else 0

        with seeded_init(cfg.seed, 0x5EF1):
            G = Refiner(
                scale=d.scale, channels=channels, width=m.width, blocks=m.blocks,
                up_widths=list(m.up_widths), part_classes=part_classes, head=m.head,
            )  # fmt: skip
            D = RefinerDiscriminator(channels=channels, width=m.d_width, layers=m.d_layers)
        self._register_ema_networks(G, D)
        self.gens = {}  # pairs and degradations come from (seed, step)

    # ------------------------------------------------------------------ data
    def _batches(self) -> Iterator[tuple[RefineBatch]]:
        while True:
            yield (self.pairs.batch(self.step, self.cfg.batch_size).to(self.device),)

    # ------------------------------------------------------------------ one step
    def adv_weight(self) -> float:
        """0 until ``loss.adv_start_kimg``, then a linear ramp to ``loss.adv_weight``."""
        lo = self.cfg.loss
        return delayed_ramp(self.nimg / 1000, lo.adv_weight, lo.adv_start_kimg, lo.adv_ramp_kimg)

    def _part_weights(self, device: torch.device) -> Tensor:
        return torch.tensor(PART_CLASS_WEIGHTS, dtype=torch.float32, device=device)

    def train_step(self, batch: RefineBatch) -> dict[str, Tensor]:
        lo = self.cfg.loss
        adv = self.adv_weight()
        self.D.requires_grad_(False)
        with autocast(self.device, self.amp):
            out, logits = self.G.forward_with_parts(batch.lr)
            out = out.float()
            p_out, p_hr = _pm(out), _pm(batch.hr)
            l1 = (p_out - p_hr).abs().mean()
            if out.shape[1] == 4:
                w = batch.hr[:, 3:4].add(1).mul(0.5)
                straight = ((out[:, :3] - batch.hr[:, :3]).abs() * w).mean()
            else:
                straight = torch.zeros((), device=out.device)
            gx_o, gy_o = _grads(p_out)
            gx_t, gy_t = _grads(p_hr)
            edge = (gx_o - gx_t).abs().mean() + (gy_o - gy_t).abs().mean()
            loss = lo.l1_weight * l1 + lo.straight_weight * straight + lo.edge_weight * edge
            stats = {"l1": l1.detach(), "straight": straight.detach(), "edge": edge.detach()}
            if logits is not None and batch.parts is not None and lo.part_weight > 0:
                ce = F.cross_entropy(logits.float(), batch.parts, weight=self._part_weights(logits.device))
                loss = loss + lo.part_weight * ce
                stats["part_ce"] = ce.detach()
            if adv > 0:
                adv_g = -self.D(p_out).float().mean()
                loss = loss + adv * adv_g
                stats["adv_g"] = adv_g.detach()
        stats["loss_g"] = loss.detach()
        self._optimize(self.opt_g, loss)
        self.D.requires_grad_(True)
        if adv > 0:
            with autocast(self.device, self.amp):
                real = self.D(p_hr).float()
                fake = self.D(p_out.detach()).float()
                loss_d = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
            stats["loss_d"] = loss_d.detach()
            self._optimize(self.opt_d, loss_d)
        self._update_g_ema()
        return stats

    def _log_fields(self) -> dict[str, Any]:
        return {"lr": self.opt_g.param_groups[0]["lr"], "adv_weight": self.adv_weight()}

    # ------------------------------------------------------------------ samples and evaluation
    def heldout_inputs(self) -> np.ndarray:
        """The held-out targets area-downsampled by ``data.scale`` (clean inputs)."""
        return downsample_u8(self.heldout_images, self.cfg.data.scale)

    def bicubic(self, lr: np.ndarray) -> np.ndarray:
        """``(n, s, s, C)`` uint8 inputs upscaled by ``data.scale`` with bicubic interpolation
        (the baseline of samples and evaluation), as uint8."""
        x = torch.from_numpy(lr).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        up = F.interpolate(x, scale_factor=self.cfg.data.scale, mode="bicubic", align_corners=False)
        return up.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    def save_samples(self) -> Path:
        """``samples/refine_KKKKKK.png``: rows bicubic upscale of the input, refined (EMA), target."""
        assert self.run_dir is not None
        n = min(self.cfg.log.num_samples, len(self.heldout_images))
        target = self.heldout_images[:n]
        lr = self.heldout_inputs()[:n]
        up_u8 = self.bicubic(lr)
        refined = refine_images(self.G_ema, lr)
        grid = make_grid(np.concatenate([up_u8, refined, target]), nrow=n, alpha_backdrop="checker")
        return save_image(self.run_dir / "samples" / f"refine_{self.nimg // 1000:06d}.png", grid)

    def evaluate(self) -> dict[str, float]:
        """:func:`refiner_metrics` of the EMA refiner and of bicubic interpolation on the held-out set."""
        lr = self.heldout_inputs()
        pred = refine_images(self.G_ema, lr)
        parts_pred = predict_parts(self.G_ema, lr) if self.G_ema.parts is not None else None
        res = refiner_metrics(pred, self.heldout_images, parts_pred, self.heldout_parts)
        up_u8 = self.bicubic(lr)
        base = refiner_metrics(up_u8, self.heldout_images)
        res["psnr_bicubic"], res["sharpness_bicubic"] = base["psnr"], base["sharpness"]
        return res

    def _evaluate(self) -> dict[str, Any]:
        res = self.evaluate()
        summary = (
            f"held-out: PSNR {res['psnr']:.2f} dB (bicubic {res['psnr_bicubic']:.2f}), sharpness "
            f"{res['sharpness']:.2f} x the target's (bicubic {res['sharpness_bicubic']:.2f})"
            + (f", part accuracy {res['part_acc']:.3f}" if "part_acc" in res else "")
        )
        return self._held_out_results(res, summary)

    # ------------------------------------------------------------------ checkpoints
    def _extra_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        cfg = self.cfg
        return {}, {
            "resolution": self.resolution,
            "scale": cfg.data.scale,
            "data": {"seed": cfg.seed, "next_step": self.step, "source": str(cfg.data.source)},
        }

    def _load_extra_state(self, snap: Snapshot, *, counters: bool) -> None:
        meta = snap.meta
        if counters and int(meta.get("scale", self.cfg.data.scale)) != self.cfg.data.scale:
            raise ConfigError(
                f"data.scale: the checkpoint was trained at x{meta.get('scale')}, this config says x{self.cfg.data.scale}"
            )
        if counters and int(meta.get("resolution", self.resolution)) != self.resolution:
            raise ConfigError(
                f"data.size: the checkpoint was trained at {meta.get('resolution')} px, this config says {self.resolution}"
            )
