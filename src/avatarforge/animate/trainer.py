"""Training the expression animator: :class:`AnimatorTrainer` on the generic training pieces.

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
reconstruction is mostly squared error, not L1 alone: see :func:`weighted_recon` for the
measurement behind that. The adversarial term (hinge by default, spectral-norm conditional
PatchGAN, :class:`~avatarforge.models.animator.AnimatorDiscriminator`) has a small weight and
starts after ``loss.adv_start_kimg``: the reconstruction gets the shapes right and the GAN
only sharpens them, so D is not trained (nor run) before it matters.

Everything around the step is the machinery of :mod:`avatarforge.train` (see
docs/training.md), used the way the VAE and CycleGAN loops use it: the run directory
``runs/NNNNN-animator-<size>/`` (:mod:`~avatarforge.train.rundir`), safetensors + JSON
checkpoints with ``g``, ``g_ema`` and ``d`` (:mod:`~avatarforge.train.checkpoint`), the
SIGINT/SIGTERM guard and the NaN/Inf roll-back (:mod:`~avatarforge.train.guard`),
``metrics.jsonl`` (:mod:`~avatarforge.train.metrics_log`) and sample grids of (source,
target, prediction) rows of fixed held-out pairs. Pairs are a pure function of ``(seed,
step)`` (:mod:`avatarforge.animate.pairs`) and the step draws no other random numbers, so a
stopped and resumed run is bit-identical to an uninterrupted one on CPU.

Held-out evaluation (:func:`~avatarforge.animate.metrics.evaluate_animator`) runs every
``log.metric_every_kimg`` and at the end and is logged as ``{"kind": "metric", ...}`` lines:
``eval_ratio`` (L1 in the changed region / copying the source), ``eval_identity_l1``, ...

The configuration is :class:`~avatarforge.animate.config.AnimatorConfig`, the loss terms
live in :mod:`avatarforge.animate.losses`.
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from avatarforge.animate.config import AnimatorConfig
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
from avatarforge.config import ConfigError, to_dict, to_yaml
from avatarforge.fileio import atomic_write_json, atomic_write_text
from avatarforge.imageio import make_grid, save_image
from avatarforge.models.animator import AnimatorDiscriminator, ExpressionAnimator
from avatarforge.train.checkpoint import (
    Snapshot,
    capture_rng,
    find_checkpoint,
    load_snapshot,
    optimizer_state,
    prune_checkpoints,
    restore_optimizer,
    restore_rng,
    save_checkpoint,
)
from avatarforge.train.common import (
    amp_dtype,
    apply_perf_settings,
    autocast,
    crossed,
    derive_seed,
    resolve_device,
)
from avatarforge.train.ema import ema_beta, update_ema
from avatarforge.train.guard import NaNEvents, StopSignal, TrainingDiverged, all_finite, nonfinite_names
from avatarforge.train.metrics_log import MetricsLog, truncate_metrics
from avatarforge.train.rundir import allocate_run_dir

__all__ = ["AnimatorTrainer", "TrainingDiverged"]

_PREFIXES = ("g", "g_ema", "d")


StepHook = Callable[["AnimatorTrainer"], None]


class AnimatorTrainer:
    """Train an :class:`~avatarforge.models.animator.ExpressionAnimator` on procedural pairs.

    Args:
        config: the resolved configuration (:func:`build_animator_config`).
        resume: a run directory or checkpoint to continue (training continues in that run).
        step_hook: ``step_hook(trainer)`` after every step (tests inject faults with it).

    Attributes useful to hooks: ``G``, ``G_ema``, ``D``, ``step``, ``nimg``, ``run_dir``,
    ``cfg``, ``stop`` (``trainer.stop.request()`` stops after the step), ``last_eval``.
    """

    def __init__(
        self,
        config: AnimatorConfig,
        *,
        resume: str | os.PathLike | None = None,
        step_hook: StepHook | None = None,
    ) -> None:
        self.cfg = config.validate()
        self.resume_from = Path(resume) if resume else None
        self.step_hook = step_hook
        self.step = 0
        self.nimg = 0
        self.run_dir: Path | None = None
        self.stopped_by: str | None = None
        self.stop = StopSignal()
        self.last_eval: dict[str, Any] = {}

    # ------------------------------------------------------------------ public API
    def fit(self) -> Path:
        """Train until ``kimg`` / ``minutes`` / a signal; returns the run directory.

        Raises:
            TrainingDiverged: NaN/Inf kept coming back (``max_nan_events``).
        """
        self.setup()
        try:
            with self.stop:
                self._loop()
        finally:
            self.close()
        assert self.run_dir is not None
        return self.run_dir

    def close(self) -> None:
        """Stop pair workers and close the metrics file (idempotent)."""
        if getattr(self, "stream", None) is not None:
            self.stream.close()
            self.stream = None
        if hasattr(self, "metrics"):
            self.metrics.close()

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        """Pairs, models, optimizers, run directory; restores ``resume``."""
        cfg = self.cfg
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("avatarforge animate train runs in a single process; start it without torchrun")
        self.device = resolve_device(cfg.device)
        apply_perf_settings(cfg.perf, self.device)
        self.amp = amp_dtype(cfg.perf.amp, self.device)
        self.memory_format = torch.channels_last if cfg.perf.channels_last else torch.contiguous_format
        self.resolution = cfg.data.size

        # -- data
        d = cfg.data
        root = d.cache_dir or None
        progress = cfg.log.progress
        self.heldout = build_or_open_cache(
            root,
            PairSpec(
                size=d.size,
                identities=d.heldout_identities,
                expressions=d.expressions,
                seed=cfg.seed,
                split=HELDOUT,
            ),
            workers=d.workers,
            progress=progress,
        )
        self.cache: PairCache | None = None
        self.stream: StreamingPairs | None = None
        if d.mode == "cache":
            self.cache = build_or_open_cache(
                root,
                PairSpec(
                    size=d.size,
                    identities=d.identities,
                    expressions=d.expressions,
                    seed=cfg.seed,
                    split=TRAIN,
                ),
                workers=d.workers,
                progress=progress,
            )
        else:
            self.stream = StreamingPairs(
                d.size,
                cfg.batch_size,
                cfg.seed,
                expressions=d.expressions,
                workers=d.workers,
                prefetch=d.prefetch,
                flip=d.flip,
                background_prob=d.background_prob,
            )

        # -- models: seeded on a forked global RNG (nothing in the step draws from it)
        m = cfg.model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(cfg.seed, 0xA417))
            self.G = ExpressionAnimator(
                resolution=d.size,
                widths=list(m.widths),
                ctrl_hidden=m.ctrl_hidden,
                enc_blocks=m.enc_blocks,
                max_flow=m.max_flow,
            )
            self.D = AnimatorDiscriminator(width=m.d_width, layers=m.d_layers)
        self.G.to(self.device, memory_format=self.memory_format).train()
        self.D.to(self.device, memory_format=self.memory_format).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.optim.d_lr, betas=tuple(cfg.optim.betas))
        self.gens: dict[str, torch.Generator] = {}  # the step draws no random numbers of its own

        self.nan = NaNEvents(cfg.max_nan_events)
        self.elapsed_before = 0.0
        self.last_ckpt: Path | None = None
        self.start_snapshot: Snapshot | None = None
        self._setup_run_dir()
        if self.resume_from is not None:
            ckpt = find_checkpoint(self.resume_from)
            self._restore(load_snapshot(ckpt), counters=True)
            self.last_ckpt = ckpt
            self._print(f"resumed from {ckpt} at step {self.step} ({self.nimg / 1000:.3f} kimg)")
        else:
            self.start_snapshot = self._capture(with_models=True)
        truncate_metrics(self.run_dir, self.step)  # drop lines of work about to be redone
        self.metrics = MetricsLog(self.run_dir)
        self._fixed = self._fixed_pairs()

    def _setup_run_dir(self) -> None:
        cfg = self.cfg
        if self.resume_from is not None:
            run_dir = find_checkpoint(self.resume_from).parent.parent  # run/checkpoints/<ckpt>
        else:
            run_dir = allocate_run_dir(cfg.runs_dir, cfg.desc or f"animator-{self.resolution}")
        saved = to_dict(cfg)
        atomic_write_text(run_dir / "config.yaml", to_yaml(saved))
        atomic_write_json(run_dir / "config.json", saved)
        (run_dir / "samples").mkdir(exist_ok=True)
        self.run_dir = run_dir
        self.ckpt_root = run_dir / "checkpoints"

    # ------------------------------------------------------------------ data
    def _batch(self, step: int) -> PairBatch:
        cfg = self.cfg
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
        return b.to(self.device, self.memory_format)

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

    # ------------------------------------------------------------------ the loop
    def _kimg_done(self) -> bool:
        return self.cfg.kimg is not None and self.nimg >= self.cfg.kimg * 1000

    def _local_stop_reason(self) -> str | None:
        if self.stop.requested:
            return f"signal:{self.stop.signal_name}"
        if self.cfg.minutes is not None and time.monotonic() - self._t_start >= self.cfg.minutes * 60:
            return "time"
        return None

    def _loop(self) -> None:
        cfg = self.cfg
        self._t_start = time.monotonic()
        if self._kimg_done():
            self._print(f"already trained to {cfg.kimg} kimg (step {self.step}); raise --kimg to continue")
            return
        from tqdm.auto import tqdm

        self._t_log, self._nimg_log = time.perf_counter(), self.nimg
        self._reset_accumulators()
        self.bar = tqdm(
            total=int(cfg.kimg * 1000) if cfg.kimg else None,
            initial=self.nimg,
            unit="pair",
            unit_scale=True,
            dynamic_ncols=True,
            smoothing=0.05,
            desc=self.run_dir.name if self.run_dir else "animator",
            disable=not cfg.log.progress,
        )
        try:
            while True:
                stats = self.train_step(self._batch(self.step))
                prev_nimg = self.nimg
                self.step += 1
                self.nimg += cfg.batch_size
                self._accumulate(stats)
                self.bar.update(cfg.batch_size)
                if self.step_hook is not None:
                    self.step_hook(self)
                stop = "kimg" if self._kimg_done() else self._local_stop_reason()
                logging_due = self.step % cfg.log.every_steps == 0 or stop is not None
                if logging_due and not self._log_step():  # _log_step is the only host sync
                    self._recover("losses or weights")
                    continue
                due_sample = crossed(prev_nimg, self.nimg, cfg.log.sample_every_kimg)
                due_metric = crossed(prev_nimg, self.nimg, cfg.log.metric_every_kimg)
                due_ckpt = crossed(prev_nimg, self.nimg, cfg.log.checkpoint_every_kimg)
                if (due_sample or due_metric or due_ckpt or stop) and not self._weights_finite():
                    self._recover("weights")
                    continue
                # Checkpoint first: after a signal the process may have little time left.
                if due_ckpt or stop:
                    self.save_checkpoint()
                if due_sample or stop:
                    self.save_samples()
                if due_metric or (stop is not None and not stop.startswith("signal")):
                    self.run_metrics()
                if stop:
                    self.stopped_by = stop
                    break
        finally:
            self.bar.close()
        self._final_message()

    def adv_weight(self) -> float:
        """The adversarial weight of the next step: 0 until ``adv_start_kimg``, then a linear ramp."""
        lo = self.cfg.loss
        if lo.adv_weight <= 0:
            return 0.0
        kimg = self.nimg / 1000 - lo.adv_start_kimg
        if kimg < 0:
            return 0.0
        return lo.adv_weight * (1.0 if lo.adv_ramp_kimg <= 0 else min(1.0, kimg / lo.adv_ramp_kimg))

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
            mse, l1 = weighted_recon(pred, tgt, pair_weight(batch, cfg.loss))
            tv = flow_tv(flow.float())
            loss_g = cfg.loss.mse_weight * mse + cfg.loss.l1_weight * l1 + cfg.loss.flow_tv * tv
            stats = {"mse": mse.detach(), "l1": l1.detach(), "tv": tv.detach()}
            if adv > 0:
                adv_g = gan_g_loss(self.D(src, pred, ctrl), cfg.loss.gan)
                loss_g = loss_g + adv * adv_g
                stats["adv_g"] = adv_g.detach()
        stats["loss_g"] = loss_g.detach()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.D.requires_grad_(True)

        # -- discriminator: real targets vs. the (detached) predictions, both given the source
        if adv > 0:
            with self._autocast():
                loss_d = gan_d_loss(self.D(src, tgt, ctrl), self.D(src, pred.detach(), ctrl), cfg.loss.gan)
            stats["loss_d"] = loss_d.detach()
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()

        e = cfg.ema
        update_ema(self.G_ema, self.G, ema_beta(cfg.batch_size, self.nimg + cfg.batch_size, e.kimg, e.rampup))
        return stats

    def _autocast(self) -> Any:
        return autocast(self.device, self.amp)

    def _set_lr(self) -> None:
        scale = self.nan.lr_scale
        for opt, lr in ((self.opt_g, self.cfg.optim.lr), (self.opt_d, self.cfg.optim.d_lr)):
            for group in opt.param_groups:
                group["lr"] = lr * scale

    # ------------------------------------------------------------------ logging and the NaN guard
    def _reset_accumulators(self) -> None:
        self._acc: dict[str, Tensor] = {}
        self._acc_n: dict[str, int] = {}

    def _accumulate(self, stats: Mapping[str, Tensor]) -> None:
        # Running sums on the device: no host sync until _log_step.
        for k, v in stats.items():
            self._acc[k] = self._acc[k] + v.float() if k in self._acc else v.float().clone()
            self._acc_n[k] = self._acc_n.get(k, 0) + 1

    def _log_step(self) -> bool:
        """Read and check the accumulated losses (one host sync), log them. False on NaN/Inf."""
        keys = list(self._acc)
        values = torch.stack([self._acc[k] for k in keys]).tolist() if keys else []
        losses = {k: values[i] / self._acc_n[k] for i, k in enumerate(keys)}
        if not all(math.isfinite(v) for v in losses.values()) or not self._weights_finite():
            return False
        now = time.perf_counter()
        rate = (self.nimg - self._nimg_log) / max(now - self._t_log, 1e-9)
        self._t_log, self._nimg_log = now, self.nimg
        self.metrics.append(
            {
                "kind": "train",
                "step": self.step,
                "kimg": round(self.nimg / 1000, 6),
                "time_s": round(self.elapsed_before + time.monotonic() - self._t_start, 3),
                "pairs_per_s": round(rate, 2),
                "lr": self.opt_g.param_groups[0]["lr"],
                "adv_weight": self.adv_weight(),
                **{k: round(v, 6) for k, v in losses.items()},
            }
        )
        self.bar.set_postfix({k: f"{losses[k]:.4f}" for k in ("l1", "loss_d") if k in losses}, refresh=False)
        self._reset_accumulators()
        return True

    def _networks(self) -> tuple[nn.Module, ...]:
        return (self.G, self.G_ema, self.D)

    def _weights_finite(self) -> bool:
        return all_finite([p for net in self._networks() for p in net.parameters()])

    def _recover(self, what: str) -> None:
        """Roll back to the last checkpoint (or the start) and halve the learning rates."""
        named = [
            (f"{pre}.{n}", p)
            for pre, net in zip(_PREFIXES, self._networks())
            for n, p in net.named_parameters()
        ]
        bad = nonfinite_names(named)
        what = f"{what}{': ' + ', '.join(bad) if bad else ''}"
        bad_step = self.step
        self.metrics.append(
            {"kind": "event", "event": "nonfinite", "step": bad_step, "kimg": self.nimg / 1000, "what": what}
        )
        self.nan.record(what, bad_step)  # warns, or raises TrainingDiverged
        snap = load_snapshot(self.last_ckpt) if self.last_ckpt is not None else self.start_snapshot
        assert snap is not None
        self._restore(snap, counters=False)
        self._reset_accumulators()
        self.bar.reset(total=self.bar.total)
        self.bar.update(self.nimg)
        self._print(
            f"non-finite values at step {bad_step}: restored step {self.step}, lr x{self.nan.lr_scale:g}"
        )

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

    def run_metrics(self) -> dict[str, Any]:
        """Evaluate and log ``{"kind": "metric", "eval_<name>": ...}``."""
        res = self.evaluate()
        self.last_eval = res
        self.metrics.append(
            {
                "kind": "metric",
                "step": self.step,
                "kimg": round(self.nimg / 1000, 6),
                **{f"eval_{k}": (round(v, 6) if isinstance(v, float) else v) for k, v in res.items()},
            }
        )
        self._print(
            f"held-out: L1 in the changed region {res['ratio']:.3f} x copying the source; "
            f"identity round trip L1 {res['identity_l1']:.4f} ({res['identity_psnr']:.1f} dB)"
        )
        return res

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/ckpt-SSSSSSSS`` (``g``, ``g_ema``, ``d`` + the training state)."""
        snap = self._capture(with_models=False)
        models = dict(zip(_PREFIXES, self._networks()))
        path = save_checkpoint(self.ckpt_root, self.step, models=models, tensors=snap.tensors, meta=snap.meta)
        prune_checkpoints(self.ckpt_root, self.cfg.log.keep_last)
        self.last_ckpt = path
        self.start_snapshot = None  # the checkpoint replaces the in-memory fallback
        return path

    def _capture(self, *, with_models: bool) -> Snapshot:
        tensors: dict[str, Tensor] = {}
        meta: dict[str, Any] = {"optimizers": {}}
        for name, opt in (("g", self.opt_g), ("d", self.opt_d)):
            t, m = optimizer_state(opt, name)
            tensors.update(t)
            meta["optimizers"][name] = m
        t, rng_meta = capture_rng(self.gens)
        tensors.update(t)
        meta["rng"] = rng_meta
        meta.update(
            {
                "step": self.step,
                "nimg": self.nimg,
                "kimg": self.nimg / 1000,
                "nan_events": self.nan.count,
                "lr_scale": self.nan.lr_scale,
                "elapsed_s": self.elapsed_before
                + (time.monotonic() - self._t_start if hasattr(self, "_t_start") else 0.0),
                "batch_size": self.cfg.batch_size,
                "resolution": self.resolution,
                "data": {"seed": self.cfg.seed, "next_step": self.step, "mode": self.cfg.data.mode},
                "config": to_dict(self.cfg),
            }
        )
        models: dict[str, dict[str, Tensor]] = {}
        if with_models:
            for prefix, net in zip(_PREFIXES, self._networks()):
                models[prefix] = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
        return Snapshot(models=models, tensors=tensors, meta=meta)

    def _restore(self, snap: Snapshot, *, counters: bool) -> None:
        meta = snap.meta
        for prefix, net in zip(_PREFIXES, self._networks()):
            if prefix not in snap.models:
                raise ValueError(
                    f"checkpoint {meta.get('path', '(memory)')} has no {prefix}_model.safetensors "
                    "(is it an animator checkpoint?)"
                )
            net.load_state_dict(snap.models[prefix], strict=True)
        restore_optimizer(self.opt_g, "g", snap.tensors, meta["optimizers"]["g"])
        restore_optimizer(self.opt_d, "d", snap.tensors, meta["optimizers"]["d"])
        restore_rng(self.gens, snap.tensors, meta["rng"])
        self.step = int(meta["step"])
        self.nimg = int(meta.get("nimg", self.step * self.cfg.batch_size))
        if counters:
            self.nan.count = int(meta.get("nan_events", 0))
            self.elapsed_before = float(meta.get("elapsed_s", 0.0))
            if int(meta.get("batch_size", self.cfg.batch_size)) != self.cfg.batch_size:
                warnings.warn(
                    f"resuming with batch_size {self.cfg.batch_size}, the checkpoint used {meta.get('batch_size')}; "
                    "the pair order changes",
                    stacklevel=2,
                )
            if int(meta.get("resolution", self.resolution)) != self.resolution:
                raise ConfigError(
                    f"the checkpoint was trained at {meta.get('resolution')} px, this config says {self.resolution}"
                )
        self._set_lr()

    # ------------------------------------------------------------------ misc
    def _final_message(self) -> None:
        assert self.run_dir is not None
        how = {"kimg": "finished", "time": "stopped (--minutes)"}.get(self.stopped_by or "", "stopped")
        if self.stopped_by and self.stopped_by.startswith("signal"):
            how = f"stopped by {self.stopped_by.split(':', 1)[1]}"
        self._print(
            f"{how} at step {self.step} ({self.nimg / 1000:.3f} kimg); run directory: {self.run_dir}\n"
            f"animate with: avatarforge animate {self.run_dir} --avatar 42 --script idle,talk --out avatar.webp"
        )
        if self.stopped_by != "kimg":
            self._print(f"resume with: avatarforge animate train --resume {self.run_dir}")

    def _print(self, msg: str) -> None:
        bar = getattr(self, "bar", None)
        if bar is not None and not bar.disable:
            bar.write(msg)
        else:
            print(msg, flush=True)
