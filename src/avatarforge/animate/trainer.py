"""Training the expression animator: :class:`AnimatorTrainer`, one family of the training engine.

One step, top to bottom (:meth:`AnimatorTrainer.train_step`)::

    batch = pairs.batch(step)                       (source, target controls, target, part maps)
    G step (D frozen):  pred, flow, mask, gen = G(source, controls)
                        loss_G = mse_weight * sum(w (pred - target)^2) / sum(w)      (RGBA, [-1, 1])
                               + l1_weight  * sum(w |pred - target|) / sum(w)
                               + loss.flow_tv * TV(flow)
                               + adv_weight(kimg) * gan_g(D(source, pred, controls))
    D step:             loss_D = gan_d(D(source, target, controls), D(source, pred, controls))
    EMA of G

The pixel weight ``w`` is 1, plus ``loss.face_weight`` on the (dilated) eyes, brows and
mouth of source and target, plus ``loss.mouth_weight`` on the mouth (a few pixels that
matter a lot), plus ``loss.change_weight`` where source and target differ. The
reconstruction is mostly squared error, not L1 alone: see
:func:`~avatarforge.animate.losses.weighted_recon` for the measurement behind that. The
adversarial term (hinge by default, spectral-norm conditional PatchGAN,
:class:`~avatarforge.models.animator.AnimatorDiscriminator`) has a small weight and starts
after ``loss.adv_start_kimg``: the reconstruction gets the shapes right and the GAN only
sharpens them, so D is not trained (nor run) before it matters.

Everything around the step is the training engine's, :class:`~avatarforge.train.engine.Trainer`
(see docs/training.md), the same as for the GANs, VAEs and CycleGAN: the run directory
``runs/NNNNN-animator-<size>/``, checkpoints with ``g``, ``g_ema`` and ``d`` and the complete
training state (written every ``log.checkpoint_every_kimg`` and every
``log.checkpoint_every_minutes``), resume from the newest intact one, the SIGINT/SIGTERM guard,
the NaN/Inf roll-back and ``metrics.jsonl``. This class holds the pair data, the networks,
the step, the sample grids of (source, target, prediction) rows of fixed held-out pairs and
the held-out evaluation. Pairs are a pure function of ``(seed, step)``
(:mod:`avatarforge.animate.pairs`) and the step draws no other random numbers, so a stopped
and resumed run is bit-identical to an uninterrupted one on CPU.

Held-out evaluation (:func:`~avatarforge.animate.metrics.evaluate_animator`) runs every
``log.metric_every_kimg`` and at the end and is logged as ``{"kind": "metric", ...}`` lines:
``eval_ratio`` (L1 in the changed region / copying the source), ``eval_identity_l1``, ...

The configuration is :class:`~avatarforge.animate.config.AnimatorConfig`, the loss terms
live in :mod:`avatarforge.animate.losses`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from avatarforge.animate.losses import flow_tv, gan_d_loss, gan_g_loss, pair_weight, weighted_recon
from avatarforge.animate.pairs import (
    HELDOUT,
    TRAIN,
    PairBatch,
    PairCache,
    PairSpec,
    StreamingPairs,
    build_or_open_cache,
    soften_pairs,
)
from avatarforge.config import ConfigError
from avatarforge.device import autocast
from avatarforge.imageio import make_grid, save_image
from avatarforge.models.animator import AnimatorDiscriminator, ExpressionAnimator
from avatarforge.train.checkpoint import Snapshot
from avatarforge.train.engine import Trainer
from avatarforge.train.guard import TrainingDiverged
from avatarforge.train.schedule import delayed_ramp, derive_seed, seeded_init

__all__ = ["AnimatorTrainer", "TrainingDiverged"]


class AnimatorTrainer(Trainer):
    """Train an :class:`~avatarforge.models.animator.ExpressionAnimator` on procedural pairs.

    Args:
        config: the resolved configuration (:func:`~avatarforge.animate.config.build_animator_config`).
        resume: a run directory or checkpoint to continue (training continues in that run).
        step_hook: ``step_hook(trainer)`` after every step (tests inject faults with it).
        metric_fn: extra evaluation next to the built-in held-out metrics (see
            :class:`~avatarforge.train.engine.Trainer`).

    Attributes useful to hooks: ``G``, ``G_ema``, ``D``, ``step``, ``nimg``, ``run_dir``,
    ``cfg``, ``stop`` (``trainer.stop.request()`` stops after the step), ``last_eval`` (the
    latest held-out metrics, unprefixed).
    """

    ACC_KEYS = ("mse", "l1", "tv", "adv_g", "loss_g", "loss_d")
    BAR_KEYS = ("l1", "loss_d")
    BUILTIN_METRICS = tuple(
        f"eval_{k}" for k in ("ratio", "face_ratio", "identity_l1", "identity_psnr", "eye_err", "mouth_err")
    )
    COMMAND = "avatarforge animate train"
    RUN_NAME = "animator"
    NEXT_STEP = "animate with: avatarforge animate {run} --avatar 42 --script idle,talk --out avatar.webp"

    # ------------------------------------------------------------------ set-up
    def _build(self) -> None:
        """Pair data (training and held-out), G, its EMA copy, D, their optimizers, the fixed
        sample pairs."""
        cfg, d = self.cfg, self.cfg.data
        self.memory_format = torch.channels_last if cfg.perf.channels_last else torch.contiguous_format
        self.resolution = d.size
        self.last_eval: dict[str, Any] = {}

        # -- data
        root = d.cache_dir or None
        spec = {"size": d.size, "expressions": d.expressions, "seed": cfg.seed}
        progress = cfg.log.progress
        self.heldout = build_or_open_cache(
            root,
            PairSpec(**spec, identities=d.heldout_identities, split=HELDOUT),
            workers=d.workers,
            progress=progress,
        )
        self.cache: PairCache | None = None
        self.stream: StreamingPairs | None = None
        if d.mode == "cache":
            self.cache = build_or_open_cache(
                root,
                PairSpec(**spec, identities=d.identities, split=TRAIN),
                workers=d.workers,
                progress=progress,
            )
        else:
            stream = StreamingPairs(
                d.size,
                cfg.batch_size,
                cfg.seed,
                expressions=d.expressions,
                workers=d.workers,
                prefetch=d.prefetch,
                flip=d.flip,
                background_prob=d.background_prob,
            )
            self.stream = self.resources.enter_context(stream)  # its workers stop with the run

        # -- models: seeded on a forked global RNG (nothing in the step draws from it)
        m = cfg.model
        with seeded_init(cfg.seed, 0xA417):
            G = ExpressionAnimator(
                resolution=d.size,
                widths=list(m.widths),
                ctrl_hidden=m.ctrl_hidden,
                enc_blocks=m.enc_blocks,
                max_flow=m.max_flow,
            )
            D = AnimatorDiscriminator(width=m.d_width, layers=m.d_layers)
        self._register_ema_networks(G, D, self.memory_format)
        self.gens = {}  # the step draws no random numbers of its own: pairs come from (seed, step)
        self._fixed = self._fixed_pairs()

    def _fixed_pairs(self) -> PairBatch:
        """``log.num_samples`` fixed held-out pairs (neutral source -> another expression)."""
        n = self.cfg.log.num_samples
        ho = self.heldout
        k = ho.images.shape[1]
        ids = np.arange(n) % len(ho)
        ti = 1 + np.arange(n) % (k - 1)
        src = torch.from_numpy(np.array(ho.images[ids, 0])).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        tgt = torch.from_numpy(np.array(ho.images[ids, ti])).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        ctrl = torch.from_numpy(np.array(ho.controls[ids, ti]))
        empty = torch.zeros(n, *src.shape[-2:], dtype=torch.uint8)
        return PairBatch(src, tgt, ctrl, ctrl, empty, empty).to(self.device, self.memory_format)

    # ------------------------------------------------------------------ data
    def _batches(self) -> Iterator[tuple[PairBatch]]:
        """The pairs of ``self.step``, step after step (each a pure function of ``(seed, step)``)."""
        cfg = self.cfg
        while True:
            step = self.step
            if self.cache is not None:
                b = self.cache.batch(
                    step,
                    cfg.batch_size,
                    cfg.seed,
                    flip=cfg.data.flip,
                    background_prob=cfg.data.background_prob,
                )
            else:
                assert self.stream is not None
                b = self.stream.batch(step)
            if cfg.data.soften_prob > 0:
                b = soften_pairs(b, cfg.data.soften_prob, derive_seed(cfg.seed, 0x50F7, step))
            yield (b.to(self.device, self.memory_format),)

    # ------------------------------------------------------------------ one step
    def adv_weight(self) -> float:
        """The adversarial weight of the next step: 0 until ``adv_start_kimg``, then a linear ramp."""
        lo = self.cfg.loss
        return delayed_ramp(self.nimg / 1000, lo.adv_weight, lo.adv_start_kimg, lo.adv_ramp_kimg)

    def train_step(self, batch: PairBatch) -> dict[str, Tensor]:
        """One generator step and (once the adversarial term is on) one discriminator step."""
        cfg = self.cfg
        adv = self.adv_weight()
        src, tgt, ctrl = batch.source, batch.target, batch.controls

        # -- generator (D frozen: its weight gradients would be thrown away)
        self.D.requires_grad_(False)
        with self._autocast():
            st = self.G.encode(src)
            pred, flow, _mask, _gen = self.G.decode(*st.tensors(), ctrl)
            lo = cfg.loss
            weight = pair_weight(
                batch,
                face_weight=lo.face_weight,
                mouth_weight=lo.mouth_weight,
                change_weight=lo.change_weight,
                dilate=lo.face_dilate,
            )
            mse, l1 = weighted_recon(pred, tgt, weight)
            tv = flow_tv(flow.float())
            loss_g = cfg.loss.mse_weight * mse + cfg.loss.l1_weight * l1 + cfg.loss.flow_tv * tv
            stats = {"mse": mse.detach(), "l1": l1.detach(), "tv": tv.detach()}
            if adv > 0:
                adv_g = gan_g_loss(self.D(src, pred, ctrl), cfg.loss.gan)
                loss_g = loss_g + adv * adv_g
                stats["adv_g"] = adv_g.detach()
        stats["loss_g"] = loss_g.detach()
        self._optimize(self.opt_g, loss_g)
        self.D.requires_grad_(True)

        # -- discriminator: real targets vs. the (detached) predictions, both given the source
        if adv > 0:
            with self._autocast():
                loss_d = gan_d_loss(self.D(src, tgt, ctrl), self.D(src, pred.detach(), ctrl), cfg.loss.gan)
            stats["loss_d"] = loss_d.detach()
            self._optimize(self.opt_d, loss_d)

        self._update_g_ema()
        return stats

    def _autocast(self) -> Any:
        return autocast(self.device, self.amp)

    def _log_fields(self) -> dict[str, Any]:
        return {"lr": self.opt_g.param_groups[0]["lr"], "adv_weight": self.adv_weight()}

    # ------------------------------------------------------------------ samples and evaluation
    @torch.no_grad()
    def predict_fixed(self) -> Tensor:
        """(3n, 4, S, S) rows: sources, targets, EMA predictions of the fixed pairs (CPU, [-1, 1])."""
        f = self._fixed
        pred = self.G_ema(f.source, f.controls).clamp(-1, 1)
        return torch.cat([t.float().cpu() for t in (f.source, f.target, pred)])

    def save_samples(self) -> Path:
        """Write ``samples/pairs_KKKKKK.png`` (KKKKKK = kimg): rows source, target, prediction."""
        assert self.run_dir is not None
        grid = make_grid(self.predict_fixed(), nrow=self._fixed.source.shape[0], alpha_backdrop="checker")
        return save_image(self.run_dir / "samples" / f"pairs_{self.nimg // 1000:06d}.png", grid)

    def evaluate(self) -> dict[str, Any]:
        """Held-out metrics of the EMA animator (:func:`~avatarforge.animate.metrics.evaluate_animator`)."""
        from avatarforge.animate.metrics import evaluate_animator

        with torch.random.fork_rng(devices=[]):
            res = evaluate_animator(self.G_ema, self.heldout, max_identities=self.cfg.log.eval_identities)
        return res

    def _evaluate(self) -> dict[str, Any]:
        """:meth:`evaluate`, kept in ``last_eval``, logged as ``eval_<name>``."""
        res = self.evaluate()
        summary = (
            f"held-out: L1 in the changed region {res['ratio']:.3f} x copying the source; "
            f"identity round trip L1 {res['identity_l1']:.4f} ({res['identity_psnr']:.1f} dB)"
        )
        return self._held_out_results(res, summary)

    # ------------------------------------------------------------------ checkpoints
    def _extra_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        cfg = self.cfg
        return {}, {
            "resolution": self.resolution,
            "data": {"seed": cfg.seed, "next_step": self.step, "mode": cfg.data.mode},
        }

    def _load_extra_state(self, snap: Snapshot, *, counters: bool) -> None:
        meta = snap.meta
        rng = meta.get("rng", {})
        if "generators" in rng:
            # Written by the animator's own loop before it ran on the engine: one process's
            # RNG states, not yet keyed by rank.
            meta["rng"] = {"0": rng}
        if counters and int(meta.get("resolution", self.resolution)) != self.resolution:
            raise ConfigError(
                f"the checkpoint was trained at {meta.get('resolution')} px, this config says {self.resolution}"
            )
