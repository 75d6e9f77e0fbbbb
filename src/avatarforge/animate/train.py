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

The configuration is its own dataclass tree (:class:`AnimatorConfig`), built with the
generic machinery of :mod:`avatarforge.config` (YAML files, ``key=value`` overrides, typed
errors).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avatarforge.animate.pairs import (
    FACE_PARTS,
    HELDOUT,
    TRAIN,
    PairBatch,
    PairCache,
    PairSpec,
    StreamingPairs,
    build_or_open_cache,
    part_mask,
)
from avatarforge.config import (
    ConfigError,
    PerfConfig,
    check_all,
    layered_config,
    to_dict,
    to_yaml,
)
from avatarforge.fileio import atomic_write_json, atomic_write_text
from avatarforge.imageio import make_grid, save_image
from avatarforge.models.animator import AnimatorDiscriminator, ExpressionAnimator
from avatarforge.models.base import load_pretrained
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

__all__ = [
    "AnimatorConfig",
    "AnimatorDataConfig",
    "AnimatorEMAConfig",
    "AnimatorLogConfig",
    "AnimatorLossConfig",
    "AnimatorModelConfig",
    "AnimatorOptimConfig",
    "AnimatorTrainer",
    "TrainingDiverged",
    "build_animator_config",
    "find_animator_run",
    "load_animator",
    "train_animator",
]

_PREFIXES = ("g", "g_ema", "d")


# =============================================================================== config
@dataclass
class AnimatorModelConfig:
    """Network sizes (see :mod:`avatarforge.models.animator`)."""

    widths: tuple[int, int, int, int] = (8, 16, 32, 64)  # channels at 1, 1/2, 1/4, 1/8 resolution
    ctrl_hidden: int = 64
    enc_blocks: int = 2
    max_flow: float = 0.25  # largest warp, in grid units ([-1, 1] spans the image)
    d_width: int = 32  # discriminator
    d_layers: int = 3


@dataclass
class AnimatorDataConfig:
    """Where pairs come from (:mod:`avatarforge.animate.pairs`)."""

    size: int = 64  # training resolution = the animator's resolution
    mode: Literal["cache", "stream"] = "cache"  # pre-rendered pairs, or rendered on the fly
    identities: int = 2000  # cache: training identities
    expressions: int = 6  # renders per identity (expression 0 is neutral)
    heldout_identities: int = 24  # evaluation identities (never trained on)
    cache_dir: str = ""  # cache root; "" = $AVATARFORGE_CACHE or ~/.cache/avatarforge
    workers: int = 0  # render processes (cache building, streaming); 0 = in this process / a thread
    prefetch: int = 4  # stream: batches rendered ahead
    flip: bool = True  # random horizontal flips (yaw and tilt negated)
    background_prob: float = 0.2  # pairs composited on their drawn background (RGB avatars)
    soften_prob: float = 0.0  # pairs (source and target alike) taken to half size and back: soft avatars


@dataclass
class AnimatorLossConfig:
    """Loss weights."""

    mse_weight: float = 1.0  # squared error, [-1, 1] units (see weighted_recon: why not L1 alone)
    l1_weight: float = 0.03  # absolute error, [-1, 1] units
    face_weight: float = 4.0  # extra pixel weight on eyes, brows and mouth (of source or target)
    mouth_weight: float = 16.0  # extra pixel weight on the mouth on top of face_weight (it is tiny)
    change_weight: float = 2.0  # extra pixel weight where source and target differ
    face_dilate: int = 1  # pixels the face and mouth weighting reach past the parts
    flow_tv: float = 0.01  # total variation of the flow (smooth warps)
    adv_weight: float = 0.02  # adversarial weight after the ramp; 0 = no discriminator
    adv_start_kimg: float = 50.0  # the adversarial term starts here ...
    adv_ramp_kimg: float = 20.0  # ... and ramps up linearly over this many kimg
    gan: Literal["hinge", "lsgan"] = "hinge"


@dataclass
class AnimatorOptimConfig:
    """Adam for G and D."""

    lr: float = 2e-3
    d_lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)


@dataclass
class AnimatorEMAConfig:
    """EMA of the generator weights (what samples, evaluation and export use)."""

    kimg: float = 2.0  # half-life in thousands of pairs
    rampup: float | None = 0.1  # half-life <= rampup x pairs seen


@dataclass
class AnimatorLogConfig:
    """Logging, samples, evaluation and checkpoints."""

    every_steps: int = 50  # metrics.jsonl line, NaN/Inf check
    sample_every_kimg: float = 10.0  # (source, target, prediction) grid; 0 = only at the end
    num_samples: int = 8  # pairs in a grid
    metric_every_kimg: float = 0.0  # held-out evaluation; 0 = only at the end
    eval_identities: int = 12  # held-out identities scored by each evaluation (<= data.heldout_identities)
    checkpoint_every_kimg: float = 20.0  # 0 = only at the end (and on signals)
    keep_last: int = 3
    progress: bool = True


@dataclass
class AnimatorConfig:
    """Everything ``avatarforge animate train`` needs (``key=value`` overrides address these)."""

    model: AnimatorModelConfig = field(default_factory=AnimatorModelConfig)
    data: AnimatorDataConfig = field(default_factory=AnimatorDataConfig)
    loss: AnimatorLossConfig = field(default_factory=AnimatorLossConfig)
    optim: AnimatorOptimConfig = field(default_factory=AnimatorOptimConfig)
    ema: AnimatorEMAConfig = field(default_factory=AnimatorEMAConfig)
    log: AnimatorLogConfig = field(default_factory=AnimatorLogConfig)
    perf: PerfConfig = field(default_factory=PerfConfig)
    seed: int = 0
    batch_size: int = 16
    kimg: float | None = 200.0  # stop after this many thousand pairs; null = no limit
    minutes: float | None = None  # stop after this many minutes (this session)
    device: str = "auto"
    runs_dir: str = "runs"
    desc: str = ""  # run directory suffix; default animator-<size>
    max_nan_events: int = 3

    def validate(self) -> AnimatorConfig:
        """Check ranges the types cannot express; returns self. Raises ConfigError."""
        d, lo, lg = self.data, self.loss, self.log
        checks = [
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.kimg is None or self.kimg > 0, "kimg must be > 0 (or null with minutes set)"),
            (self.minutes is None or self.minutes > 0, "minutes must be > 0"),
            (self.kimg is not None or self.minutes is not None, "set kimg or minutes (or both)"),
            (
                d.size >= 32 and d.size % 8 == 0 and d.size <= 512,
                "data.size must be a multiple of 8 from 32 to 512",
            ),
            (
                d.identities >= 1 and d.heldout_identities >= 1,
                "data.identities and data.heldout_identities must be >= 1",
            ),
            (d.expressions >= 2, "data.expressions must be >= 2 (pairs need two renders)"),
            (d.workers >= 0 and d.prefetch >= 1, "data.workers must be >= 0 and data.prefetch >= 1"),
            (0 <= d.background_prob <= 1, "data.background_prob must be in [0, 1]"),
            (0 <= d.soften_prob <= 1, "data.soften_prob must be in [0, 1]"),
            (
                min(
                    lo.mse_weight,
                    lo.l1_weight,
                    lo.face_weight,
                    lo.mouth_weight,
                    lo.change_weight,
                    lo.flow_tv,
                    lo.adv_weight,
                )
                >= 0,
                "loss weights must be >= 0",
            ),
            (
                lo.adv_start_kimg >= 0 and lo.adv_ramp_kimg >= 0,
                "loss.adv_start_kimg/adv_ramp_kimg must be >= 0",
            ),
            (self.optim.lr > 0 and self.optim.d_lr > 0, "optim.lr and optim.d_lr must be > 0"),
            (all(0 <= b < 1 for b in self.optim.betas), "optim.betas must be in [0, 1)"),
            (self.ema.kimg >= 0, "ema.kimg must be >= 0"),
            (min(self.model.widths) >= 1 and self.model.ctrl_hidden >= 1, "model widths must be >= 1"),
            (self.model.max_flow > 0, "model.max_flow must be > 0"),
            (lg.every_steps >= 1 and lg.keep_last >= 1 and lg.num_samples >= 1, "log values must be >= 1"),
            (lg.eval_identities >= 1, "log.eval_identities must be >= 1"),
            (self.max_nan_events >= 1, "max_nan_events must be >= 1"),
            (
                self.perf.amp != "fp16",
                "perf.amp=fp16 is not supported by the animator trainer; use bf16 or off",
            ),
        ]
        check_all(checks)
        return self


def build_animator_config(
    *,
    config_file: str | os.PathLike | None = None,
    cli: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
) -> AnimatorConfig:
    """Defaults < ``config_file`` (YAML, e.g. a run's ``config.yaml``) < ``cli`` dict < ``key=value``."""
    return layered_config(AnimatorConfig, config_file=config_file, cli=cli, overrides=overrides)


# =============================================================================== losses
def weighted_recon(pred: Tensor, target: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """Pixel-weighted squared and absolute errors (RGBA, [-1, 1] units, fp32): ``(mse, l1)``
    each ``sum(w e) / sum(w)``; the caller adds ``loss.mse_weight * mse + loss.l1_weight * l1``.

    Why mostly squared error: most pixels of a pair are unchanged, so copying the source is
    a strong local optimum, and under L1 (a median) the residual branch collapses onto it
    and stays there (measured: the face-region error stuck at 1.00 x the copy baseline for
    600 steps at 32 px, eye/mouth-only pairs); the squared error's gradient grows with the error and pulls the
    eyes and mouth out of it (0.58 x after the same 600 steps). A small L1 term keeps
    colours crisp once they are right.
    """
    d = pred.float() - target.float()  # (B, 4, S, S)
    wm = weight.mean()
    return (d.square() * weight).mean() / wm, (d.abs() * weight).mean() / wm


def pair_weight(batch: PairBatch, loss: AnimatorLossConfig) -> Tensor:
    """``(B, 1, S, S)`` per-pixel loss weight: 1 + face parts + mouth + changed pixels (dilated)."""
    sp, tp = batch.source_parts, batch.target_parts
    w = torch.ones(sp.shape[0], 1, *sp.shape[1:], device=batch.source.device)
    r = loss.face_dilate

    def dilate(m: Tensor) -> Tensor:
        m = m.float()[:, None]
        return F.max_pool2d(m, 2 * r + 1, stride=1, padding=r) if r > 0 else m

    if loss.face_weight > 0:
        w = w + loss.face_weight * dilate(part_mask(sp, FACE_PARTS) | part_mask(tp, FACE_PARTS))
    if loss.mouth_weight > 0:
        w = w + loss.mouth_weight * dilate(part_mask(sp, ("mouth",)) | part_mask(tp, ("mouth",)))
    if loss.change_weight > 0:
        changed = (batch.source - batch.target).abs().amax(1) > 0.1  # 5% in [0, 1] units
        w = w + loss.change_weight * dilate(changed)
    return w


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
    return dataclasses.replace(batch, source=src, target=tgt)


def flow_tv(flow: Tensor) -> Tensor:
    """Mean absolute difference of neighbouring flow vectors (in grid units)."""
    return (flow[..., 1:, :] - flow[..., :-1, :]).abs().mean() + (flow[..., 1:] - flow[..., :-1]).abs().mean()


def gan_d_loss(real: Tensor, fake: Tensor, kind: str) -> Tensor:
    """Discriminator loss (hinge or least squares)."""
    real, fake = real.float(), fake.float()
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return 0.5 * ((real - 1).square().mean() + fake.square().mean())


def gan_g_loss(fake: Tensor, kind: str) -> Tensor:
    """Generator adversarial loss."""
    fake = fake.float()
    return -fake.mean() if kind == "hinge" else (fake - 1).square().mean()


# =============================================================================== trainer
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


# =============================================================================== loading
def load_animator(
    path: str | os.PathLike,
    which: str = "ema",
    device: str | torch.device = "cpu",
    *,
    threads: int | None = None,
) -> Any:
    """The animator of a run directory, a checkpoint, a ``save_pretrained`` directory, or an
    exported ``.onnx`` file.

    Args:
        path: run directory (its latest checkpoint), ``checkpoints`` dir, ``ckpt-*`` dir, a
            directory holding ``config.json`` + ``model.safetensors`` of an animator, or the
            render graph ``NAME.onnx`` written by ``avatarforge animate export-onnx``.
        which: ``"ema"`` (the averaged weights; default) or ``"g"`` (the raw ones); ignored for ``.onnx``.
        device: torch device (``.onnx`` files run on onnxruntime's CPU provider).
        threads: ``.onnx`` only: onnxruntime intra-op threads (None: its default).

    Returns an :class:`~avatarforge.models.animator.ExpressionAnimator` in eval mode without
    gradients, or for ``.onnx`` an :class:`~avatarforge.animate.onnx_export.OnnxAnimator`
    (same ``prepare`` / ``render_image`` / ``resolution`` API). Nothing is unpickled.
    """
    if which not in ("ema", "g"):
        raise ValueError(f"which must be 'ema' or 'g', got {which!r}")
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        from avatarforge.animate.onnx_export import OnnxAnimator

        return OnnxAnimator(p, threads=threads)
    if (
        (p / "config.json").is_file()
        and (p / "model.safetensors").is_file()
        and not (p / "checkpoints").is_dir()
    ):
        model = load_pretrained(p, map_location=device)
    else:
        ckpt = find_checkpoint(p)
        model = load_pretrained(ckpt, prefix="g_ema_" if which == "ema" else "g_", map_location=device)
    if not isinstance(model, ExpressionAnimator):
        raise ValueError(f"{path} holds a {type(model).__name__}, not an expression animator")
    return model.eval().requires_grad_(False)


# =============================================================================== one-call training
#: Training and held-out identities :func:`train_animator` renders for budgets up to 10
#: minutes: rendering the default 2000 (x 6 expressions) takes ~70 s on 2 free cores (and
#: several minutes on a busy machine: the first recorded 4-minute run spent most of its
#: budget rendering 500), while a few minutes of training (~7 kimg = ~1.2 passes over
#: 200 identities' 30 ordered pairs, x2 with flips) do not exhaust 200 identities.
QUICK_IDENTITIES = 200
QUICK_HELDOUT = 12


def _animator_run_size(run: Path) -> int | None:
    """``data.size`` of an animator run directory (with a checkpoint), else None."""
    cfg_path = run / "config.json"
    if not (cfg_path.is_file() and (run / "checkpoints").is_dir()):
        return None
    try:
        cfg = json.loads(cfg_path.read_text("utf-8"))
        if "mouth_weight" not in cfg.get("loss", {}):  # not an animator config
            return None
        find_checkpoint(run)
        return int(cfg["data"]["size"])
    except (OSError, ValueError, KeyError, TypeError, FileNotFoundError):
        return None


def find_animator_run(runs_dir: str | os.PathLike, size: int | None = None) -> Path | None:
    """The newest animator run directory under ``runs_dir`` that has a checkpoint (of
    resolution ``size`` when given), or None."""
    from avatarforge.train.rundir import run_number

    root = Path(runs_dir)
    if not root.is_dir():
        return None
    found = []
    for run in root.iterdir():
        n = run_number(run)
        got = _animator_run_size(run) if n is not None else None
        if got is not None and (size is None or got == size):
            found.append((n, run))
    return max(found)[1] if found else None


def train_animator(
    path: str | os.PathLike = "runs",
    size: int = 64,
    minutes: float = 4.0,
    resume: bool = True,
    progress: bool = True,
    *,
    overrides: Sequence[str] = (),
    workers: int | None = None,
) -> Path:
    """Train (or keep training) an expression animator within a wall-clock budget; returns the run directory.

    The one call behind the quickstart: ``minutes`` covers everything, rendering the pair
    caches included (they are cached, so a second call trains for nearly all of it).

    Args:
        path: a runs directory (a new ``NNNNN-animator-<size>`` run is created in it, or with
            ``resume`` its newest animator run of that ``size`` continues), or an animator run
            directory (continued with ``resume``; otherwise a new run is created next to it).
        size: resolution (multiple of 8, 32-512). 64 px is the CPU-friendly choice.
        minutes: total wall-clock budget (> 0); budgets up to 10 minutes render 200 training
            and 12 held-out identities instead of 2000 and 24. See docs/animate.md ("How good
            is a short run") for the quality per kimg and what 4 minutes give.
        resume: continue the newest matching run instead of starting over.
        progress: show a progress bar and messages.
        overrides: extra ``KEY=VALUE`` config overrides (see docs/animate.md), applied last.
        workers: render processes for the pair caches (default: 2 when the machine has 2+ cores).

    Raises:
        ConfigError: a bad ``size``, ``minutes`` or override (the message names the key).
    """
    t0 = time.monotonic()
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not minutes > 0:
        raise ConfigError(f"minutes must be a number > 0, got {minutes!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 32 or size > 512 or size % 8:
        raise ConfigError(f"size must be a multiple of 8 from 32 to 512, got {size!r}")
    root = Path(path)
    run: Path | None = None
    if _animator_run_size(root) is not None:  # a run directory
        run = root if resume else None
        runs_dir = root.parent
    else:
        runs_dir = root
        run = find_animator_run(root, size) if resume else None
    if run is not None and _animator_run_size(run) != size:
        raise ConfigError(
            f"{run} was trained at {_animator_run_size(run)} px, not size={size}; pass its size or resume=False"
        )
    if workers is None:
        workers = 2 if (os.cpu_count() or 1) >= 2 else 0
    cli: dict[str, Any] = {"runs_dir": str(runs_dir), "kimg": None, "log": {"progress": bool(progress)}}
    base = [
        f"data.size={size}",
        f"data.workers={workers}",
        # One intra-op thread: measured side by side on the shared 2-core box (load ~12), 64 px
        # batch 16 trains at 117-170 pairs/s on 1 thread and 16-20 on 2 (OpenMP threads
        # spin-wait for cores other processes hold). Override with perf.num_threads=2 on an idle machine.
        "perf.num_threads=1",
        # A short run gets a checkpoint every ~1 minute of CPU training, so an interrupted
        # quickstart keeps its progress; samples at the same pace.
        "log.checkpoint_every_kimg=2",
        "log.sample_every_kimg=2",
    ]
    if minutes <= 10:
        base += [
            f"data.identities={QUICK_IDENTITIES}",
            f"data.heldout_identities={QUICK_HELDOUT}",
            f"log.eval_identities={QUICK_HELDOUT}",
        ]
    config_file = run / "config.yaml" if run is not None else None
    if run is not None:
        base = [f"data.workers={workers}", "perf.num_threads=1"]  # keep the run's data and model settings
    cfg = build_animator_config(config_file=config_file, cli=cli, overrides=[*base, "minutes=1", *overrides])
    # Render (or open) the pair caches first, so their time counts against the budget.
    d = cfg.data
    if d.mode == "cache":
        for split, n in ((HELDOUT, d.heldout_identities), (TRAIN, d.identities)):
            build_or_open_cache(
                d.cache_dir or None,
                PairSpec(size=d.size, identities=n, expressions=d.expressions, seed=cfg.seed, split=split),
                workers=d.workers,
                progress=progress,
            )
    # What is left, less a reserve for the final evaluation and checkpoint (~5% of the run).
    left = minutes - (time.monotonic() - t0) / 60
    cfg.minutes = max(0.02, left * 0.95 - 0.1)
    trainer = AnimatorTrainer(cfg, resume=run)
    return trainer.fit()
