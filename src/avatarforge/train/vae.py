"""The VAE training loop: :class:`VAETrainer` for the ``vae`` and ``cvae`` families.

One step, top to bottom (:meth:`VAETrainer.train_step`)::

    mu, logvar = E(x [, y]);  z = mu + exp(logvar / 2) * eps      (eps from a checkpointed generator)
    x_hat = D(z [, y])
    loss = recon(x_hat, x) + kl_weight(kimg) * KL_free_bits(mu, logvar)
    Adam step (gradients all-reduced across processes);  optional EMA of the weights

with, per image, ``recon = sum over pixels of (x_hat - x)^2`` (or ``|x_hat - x|``) in
[-1, 1] units and ``KL = sum_j KL(q(z_j | x) || N(0, 1))``, both averaged over the batch
(:func:`recon_loss`, :func:`kl_per_dim`, :func:`kl_term`, :func:`kl_weight`). The KL weight
ramps linearly from 0 to ``loss.beta`` over ``loss.kl_warmup_kimg``; free bits
(``loss.free_bits``) floor each latent dimension's batch-mean KL so the optimiser gains
nothing from collapsing a dimension below it. See docs/vae.md.

Everything around the step is the same machinery as the GAN loop (:mod:`.gan`), built from
the generic modules: run directory (:mod:`.rundir`), checkpoints (:mod:`.checkpoint`: one
``vae`` network, plus ``vae_ema`` when ``ema.enabled``), signals and the NaN guard
(:mod:`.guard`), ``metrics.jsonl`` (:mod:`.metrics_log`), data parallelism
(:mod:`.distributed`: one flattened gradient all-reduce per step) and exact resume (every
random number comes from a trainer-owned ``torch.Generator`` whose state is checkpointed;
the data order is a pure function of ``(seed, step)``).

Built-in evaluation (:meth:`VAETrainer.evaluate`) runs on a fixed set of training images
every ``log.metric_every_kimg`` and at the end: ``eval_recon``, ``eval_kl``, ``eval_loss``
(= recon + beta * KL, no warm-up or free bits), ``eval_mse`` (per value, [0, 1] pixel
units) and ``eval_psnr``; ``log.best_metric: eval_loss`` keeps ``checkpoints/best/``.
"""

from __future__ import annotations

import copy
import inspect
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from avatarforge.config import ConfigError, TrainConfig, to_dict, to_yaml
from avatarforge.fileio import atomic_write_json, atomic_write_text
from avatarforge.imageio import from_uint8, make_grid, save_image
from avatarforge.train import distributed as D_
from avatarforge.train.checkpoint import (
    Snapshot,
    capture_rng,
    find_checkpoint,
    load_snapshot,
    optimizer_state,
    prune_checkpoints,
    restore_optimizer,
    restore_rng,
    save_best,
    save_checkpoint,
)
from avatarforge.train.common import (
    amp_dtype,
    apply_perf_settings,
    autocast,
    crossed,
    derive_seed,
    make_generator,
    resolve_device,
)
from avatarforge.train.ema import ema_beta, update_ema
from avatarforge.train.gan import _condition_labels
from avatarforge.train.guard import NaNEvents, StopSignal, TrainingDiverged, all_finite, nonfinite_names
from avatarforge.train.metrics_log import MetricsLog, require_tensorboard, truncate_metrics
from avatarforge.train.rundir import allocate_run_dir

__all__ = [
    "EVAL_METRICS",
    "MetricFn",
    "StepHook",
    "TrainingDiverged",
    "VAETrainer",
    "build_vae",
    "is_vae_model",
    "kl_per_dim",
    "kl_term",
    "kl_weight",
    "recon_loss",
]

#: ``metric_fn(trainer) -> {"name": value, ...}``: extra metrics next to the built-in ones.
MetricFn = Callable[["VAETrainer"], Mapping[str, float]]
#: ``step_hook(trainer)``: called after every optimizer step (tests use it to inject faults).
StepHook = Callable[["VAETrainer"], None]

#: Names of the built-in evaluation results (usable as ``log.best_metric``).
EVAL_METRICS = ("eval_loss", "eval_recon", "eval_kl", "eval_mse", "eval_psnr")
_ACC_KEYS = ("loss", "recon", "kl", "mse")


# --------------------------------------------------------------------------- the loss, piece by piece
def recon_loss(x_hat: Tensor, x: Tensor, kind: str = "mse") -> Tensor:
    """Reconstruction loss: per-image sum over channels and pixels, mean over the batch.

    ``"mse"`` sums squared errors, i.e. the Gaussian negative log-likelihood with a fixed
    variance of 1/2 (in [-1, 1] units) up to a constant; ``"l1"`` sums absolute errors
    (Laplace likelihood). Summing over pixels rather than averaging keeps the data term on
    the scale of the log-likelihood, so ``beta = 1`` is the real ELBO.
    """
    if kind not in ("mse", "l1"):
        raise ValueError(f"recon kind must be 'mse' or 'l1', got {kind!r}")
    diff = x_hat - x  # (B, C, H, W)
    per_value = diff.square() if kind == "mse" else diff.abs()
    return per_value.sum(dim=(1, 2, 3)).mean()  # no flatten: it would copy a channels_last tensor


def kl_per_dim(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, 1))`` per sample and latent dimension: ``(B, z_dim)`` nats."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)


def kl_term(kl_dims: Tensor, free_bits: float = 0.0) -> Tensor:
    """The KL term of the loss: ``sum_j max(free_bits, mean_b KL[b, j])`` (scalar).

    With ``free_bits = 0`` it is the batch-mean total KL. With ``free_bits = lambda > 0``
    (Kingma et al. 2016, "free bits"), a dimension whose batch-mean KL is below ``lambda``
    contributes the constant ``lambda`` and no gradient: the encoder may use up to
    ``lambda`` nats per dimension for free, which discourages posterior collapse.
    """
    per_dim = kl_dims.mean(0)  # (z_dim,)
    if free_bits > 0:
        per_dim = per_dim.clamp(min=free_bits)
    return per_dim.sum()


def kl_weight(nimg: int, beta: float, warmup_kimg: float) -> float:
    """KL weight after ``nimg`` training images: ``beta * min(1, nimg / (warmup_kimg * 1000))``.

    A linear warm-up (Bowman et al. 2016) lets the decoder learn to use ``z`` before the
    KL pulls the posterior toward the prior; ``warmup_kimg = 0`` means no warm-up.
    """
    if warmup_kimg <= 0:
        return float(beta)
    return float(beta) * min(1.0, nimg / (warmup_kimg * 1000.0))


# --------------------------------------------------------------------------- model construction
def is_vae_model(name: str) -> bool:
    """True if ``name`` is registered with role ``"vae"`` (trained by :class:`VAETrainer`)."""
    from avatarforge.models.registry import list_models

    return name in list_models("vae")


def build_vae(
    cfg: TrainConfig,
    resolution: int,
    channels: int,
    label_dims: list[int],
    label_names: Sequence[str] = (),
    label_values: Sequence[Sequence[str]] = (),
) -> nn.Module:
    """Create the VAE from the registry (role ``"vae"``) with ``model.kwargs``.

    ``label_dims``/``label_names``/``label_values`` describe the conditioning labels
    (empty = unconditional; ``cvae`` requires at least one).
    """
    from avatarforge.models.registry import get_model_class

    try:
        cls = get_model_class(cfg.model.name, "vae")
    except KeyError as e:
        raise ConfigError(f"model.name: {e.args[0]}") from None
    if cfg.model.g_kwargs or cfg.model.d_kwargs:
        raise ConfigError("model.g_kwargs / model.d_kwargs are for GANs; give VAE arguments in model.kwargs")
    kw: dict[str, Any] = {
        "resolution": resolution,
        "channels": channels,
        "z_dim": cfg.model.z_dim,
        "label_dims": list(label_dims),
        "label_names": list(label_names),
        "label_values": [list(v) for v in label_values],
        **cfg.model.kwargs,
    }
    try:
        return cls(**kw)
    except TypeError as e:
        valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise ConfigError(f"model.kwargs: {e}; {cls.__name__} accepts: {', '.join(valid)}") from e
    except ValueError as e:
        raise ConfigError(f"model {cfg.model.name!r}: {e}") from e


# --------------------------------------------------------------------------- the trainer
class VAETrainer:
    """Train a registered VAE family (``vae``, ``cvae``) on a packed data set.

    Args:
        config: the resolved configuration (see :func:`avatarforge.config.build_train_config`).
        resume: a run directory or checkpoint to continue from (in that run directory).
        metric_fn: optional extra evaluation ``metric_fn(trainer) -> {name: value}``, run
            on rank 0 with the built-in evaluation; ``log.best_metric`` may name either.
        step_hook: optional ``step_hook(trainer)`` called after every step.
        dataset: an already opened :class:`~avatarforge.data.dataset.PackedDataset`.

    Attributes useful to hooks: ``vae``, ``vae_ema`` (None unless ``ema.enabled``),
    ``model`` (the network samples come from), ``device``, ``dataset``, ``label_names``,
    ``step``, ``nimg``, ``run_dir``, ``cfg``, ``stop``.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        resume: str | Path | None = None,
        metric_fn: MetricFn | None = None,
        step_hook: StepHook | None = None,
        dataset: Any = None,
    ) -> None:
        self.cfg = config.validate()
        self.resume_from = Path(resume) if resume else None
        self.metric_fn = metric_fn
        self.step_hook = step_hook
        self.dataset = dataset
        self.step = 0
        self.nimg = 0
        self.run_dir: Path | None = None
        self.stopped_by: str | None = None
        self.stop = StopSignal()

    # ================================================================== public API
    def fit(self) -> Path:
        """Train until ``kimg``/``minutes``/a signal; returns the run directory.

        Raises:
            TrainingDiverged: NaN/Inf kept coming back (``max_nan_events``).
        """
        self.setup()
        try:
            with self.stop:
                self._loop()
        finally:
            self._teardown()
        assert self.run_dir is not None
        return self.run_dir

    @property
    def model(self) -> nn.Module:
        """The network samples, reconstructions and evaluation use (EMA when enabled)."""
        return self.vae_ema if self.vae_ema is not None else self.vae

    def current_kl_weight(self) -> float:
        """The KL weight of the next step (warm-up ramp up to ``loss.beta``)."""
        return kl_weight(self.nimg, self.cfg.loss.beta, self.cfg.loss.kl_warmup_kimg)

    def current_ema_beta(self) -> float:
        e = self.cfg.ema
        return ema_beta(self.cfg.batch_size, self.nimg, e.kimg, e.rampup, e.beta)

    # ================================================================== set-up
    def setup(self) -> None:
        """Build everything: process group, device, data, model, optimizer, run dir, resume."""
        cfg = self.cfg
        if cfg.log.tensorboard:
            require_tensorboard()  # fail before any work (and before a run directory exists)
        if cfg.data.augment.strip():
            raise ConfigError(
                "data.augment is the GANs' discriminator augmentation; the VAE trainer does not use it "
                '(set data.augment="")'
            )
        want_cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
        self.dist = D_.init_distributed("cuda" if want_cuda else "cpu")
        self.is_main = self.dist.is_main
        self.device = resolve_device(cfg.device, self.dist.local_rank)
        apply_perf_settings(cfg.perf, self.device)
        self.amp = amp_dtype(cfg.perf.amp, self.device)
        self.channels_last = cfg.perf.channels_last
        if cfg.batch_size % self.dist.world_size:
            raise ConfigError(
                f"batch_size {cfg.batch_size} is the global batch; it must be divisible by the number of "
                f"processes ({self.dist.world_size})"
            )
        self.batch_per_rank = cfg.batch_size // self.dist.world_size

        # -- data
        if self.dataset is None:
            from avatarforge.data.dataset import PackedDataset

            if not cfg.data.path:
                raise ConfigError("data.path is empty: pass --data DATASET (a packed data set directory)")
            self.dataset = PackedDataset(cfg.data.path)
        self.resolution = int(self.dataset.size)
        if cfg.model.resolution is not None and cfg.model.resolution != self.resolution:
            raise ConfigError(
                f"model.resolution={cfg.model.resolution} but the data set is {self.resolution}px; "
                f"re-create the data set at {cfg.model.resolution}px or drop the override"
            )
        self.channels = int(self.dataset.channels)
        schema = self.dataset.schema
        self.label_names = _condition_labels(cfg, schema)
        self.label_dims = [schema[n].num_classes for n in self.label_names]
        label_values = [list(schema[n].values) for n in self.label_names]

        # -- model: identical initialisation on every rank (and broadcast to be sure)
        torch.manual_seed(derive_seed(cfg.seed, 0x1417))
        vae = build_vae(cfg, self.resolution, self.channels, self.label_dims, self.label_names, label_values)
        self.vae = vae.to(self.device).train()
        if self.channels_last:
            self.vae.to(memory_format=torch.channels_last)
        D_.broadcast_module(self.vae, self.dist)
        self.vae_ema = copy.deepcopy(self.vae).eval().requires_grad_(False) if cfg.ema.enabled else None
        torch.manual_seed(derive_seed(cfg.seed, self.dist.rank, 0x610B))  # anything on the global RNG

        # -- optimizer (lr scaled down after NaN events, see _set_lr); optim.g_lr is the VAE's lr
        betas = (float(cfg.optim.betas[0]), float(cfg.optim.betas[1]))
        self.opt = torch.optim.Adam(self.vae.parameters(), lr=cfg.optim.g_lr, betas=betas, eps=cfg.optim.eps)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp is torch.float16 else None

        # -- randomness: one generator per stream, per rank, all checkpointed
        r = self.dist.rank
        self.gens = {
            "reparam": make_generator(self.device, cfg.seed, r, 1),
            "label_dropout": make_generator(self.device, cfg.seed, r, 2),
        }

        # -- counters
        self.nan = NaNEvents(cfg.max_nan_events)
        self.best_value: float | None = None
        self.elapsed_before = 0.0  # training seconds of earlier sessions (resume)
        self.last_ckpt: Path | None = None
        self.start_snapshot: Snapshot | None = None

        # -- run directory, resume
        self._setup_run_dir()
        if self.resume_from is not None:
            ckpt = find_checkpoint(self.resume_from)
            self._restore(load_snapshot(ckpt), counters=True)
            self.last_ckpt = ckpt
            self._print(f"resumed from {ckpt} at step {self.step} ({self.nimg / 1000:.3f} kimg)")
        else:
            # NaN guard fallback until the first checkpoint exists.
            self.start_snapshot = self._capture(gather=False, with_models=True)
        if self.is_main:
            truncate_metrics(self.run_dir, self.step)  # drop lines of work about to be redone
        self.metrics = MetricsLog(self.run_dir, tensorboard=cfg.log.tensorboard, enabled=self.is_main)
        self._fixed = self._fixed_inputs()
        best = cfg.log.best_metric
        if best and best not in EVAL_METRICS and self.metric_fn is None and self.is_main:
            warnings.warn(
                f"log.best_metric={best!r} is not a built-in metric ({', '.join(EVAL_METRICS)}) and no "
                "metric hook was given; no best/ checkpoint is kept",
                stacklevel=2,
            )

    def _setup_run_dir(self) -> None:
        cfg = self.cfg
        run_dir: Path | None = None
        if self.is_main:
            if self.resume_from is not None:
                run_dir = find_checkpoint(self.resume_from).parent.parent  # run/checkpoints/<ckpt>
            else:
                run_dir = allocate_run_dir(cfg.runs_dir, cfg.desc or f"{cfg.model.name}-{self.resolution}")
            saved = to_dict(cfg)
            if saved["data"]["path"]:
                saved["data"]["path"] = str(Path(saved["data"]["path"]).resolve())
            atomic_write_text(run_dir / "config.yaml", to_yaml(saved))
            atomic_write_json(run_dir / "config.json", saved)
            (run_dir / "samples").mkdir(exist_ok=True)
        self.run_dir = Path(D_.broadcast_object(str(run_dir) if run_dir else None, self.dist))
        self.ckpt_root = self.run_dir / "checkpoints"

    def _teardown(self) -> None:
        if hasattr(self, "metrics"):
            self.metrics.close()
        if hasattr(self, "dist"):
            D_.cleanup_distributed(self.dist)

    # ================================================================== the loop
    def _loop(self) -> None:
        cfg = self.cfg
        if self._kimg_done():
            self._print(f"already trained to {cfg.kimg} kimg (step {self.step}); raise --kimg to continue")
            return
        from tqdm.auto import tqdm

        self._t_start = time.monotonic()
        self._t_log, self._nimg_log = time.perf_counter(), self.nimg
        self._reset_accumulators()
        batches = self._batches()
        if self.is_main and not (self.run_dir / "samples" / "reals.png").exists():
            grid = make_grid(self._fixed["x"], nrow=self._grid_cols, alpha_backdrop="checker")
            save_image(self.run_dir / "samples" / "reals.png", grid)
        self.bar = tqdm(
            total=int(cfg.kimg * 1000) if cfg.kimg else None,
            initial=self.nimg,
            unit="img",
            unit_scale=True,
            dynamic_ncols=True,
            smoothing=0.05,
            desc=self.run_dir.name,
            disable=not (cfg.log.progress and self.is_main),
        )
        try:
            while True:
                reals, labels = next(batches)
                stats = self.train_step(reals, labels)
                prev_nimg = self.nimg
                self.step += 1
                self.nimg += cfg.batch_size
                self._accumulate(stats)
                self.bar.update(cfg.batch_size)
                if self.step_hook is not None:
                    self.step_hook(self)

                # Host syncs happen only here: every log.every_steps steps and at the end ...
                stop = "kimg" if self._kimg_done() else None
                if not self.dist.enabled:
                    stop = stop or self._local_stop_reason()  # ranks agree inside _log_step
                if self.step % cfg.log.every_steps == 0 or stop:
                    healthy, agreed_stop = self._log_step()
                    if not healthy:
                        batches = self._recover("losses or weights")
                        continue
                    stop = stop or agreed_stop
                # ... and before anything is written from the weights.
                due_sample = crossed(prev_nimg, self.nimg, cfg.log.sample_every_kimg)
                due_metric = crossed(prev_nimg, self.nimg, cfg.log.metric_every_kimg)
                due_ckpt = crossed(prev_nimg, self.nimg, cfg.log.checkpoint_every_kimg)
                if (due_sample or due_metric or due_ckpt or stop) and not self._weights_finite():
                    batches = self._recover("weights")
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

    # ================================================================== one step
    def train_step(self, reals: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """One Adam step on the negative (beta-weighted) ELBO of a batch. Returns detached stats."""
        cfg = self.cfg
        x = reals.to(self.device, non_blocking=True)  # (B, C, H, W) in [-1, 1]
        y = self._label_indices(labels, dropout=cfg.data.label_dropout)
        with autocast(self.device, self.amp):
            x_hat, mu, logvar = self.vae(x, y, generator=self.gens["reparam"])
        # The loss in fp32 whatever the autocast dtype: sums over 10^4 pixels lose bf16 precision.
        x_hat, mu, logvar = x_hat.float(), mu.float(), logvar.float()
        recon = recon_loss(x_hat, x, cfg.loss.recon)
        kl_dims = kl_per_dim(mu, logvar)  # (B, z_dim)
        loss = recon + self.current_kl_weight() * kl_term(kl_dims, cfg.loss.free_bits)

        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        D_.all_reduce_grads(self.vae.parameters(), self.dist)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        D_.broadcast_buffers(self.vae, self.dist)  # none in the built-in models; kept for custom ones
        if self.vae_ema is not None:
            update_ema(self.vae_ema, self.vae, self.current_ema_beta())
        with torch.no_grad():
            mse = (x_hat - x).square().mean()
        return {
            "loss": loss.detach(),
            "recon": recon.detach(),
            "kl": kl_dims.sum(1).mean().detach(),
            "mse": mse,
        }

    def _label_indices(self, labels: Tensor, dropout: float = 0.0) -> Tensor | None:
        """The batch's conditioning labels as class indices (unknown = num_classes), or None.

        ``dropout > 0`` replaces each label by "unknown" with that probability (training only).
        """
        if not self.label_names:
            return None
        from avatarforge.data.dataset import label_indices

        y = label_indices(labels, self.dataset.schema, self.label_names).to(self.device, non_blocking=True)
        if dropout > 0:
            g = self.gens["label_dropout"]
            drop = torch.rand(y.shape, generator=g, device=g.device).to(y.device) < dropout
            unknown = torch.tensor(self.label_dims, device=y.device).expand_as(y)
            y = torch.where(drop, unknown, y)
        return y

    def _batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        from avatarforge.data.dataset import infinite_batches

        return infinite_batches(
            self.dataset,
            self.batch_per_rank,
            seed=self.cfg.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            start_step=self.step,
            device=self.device,
            channels_last=self.channels_last,
        )

    # ================================================================== stopping
    def _kimg_done(self) -> bool:
        return self.cfg.kimg is not None and self.nimg >= self.cfg.kimg * 1000

    def _local_stop_reason(self) -> str | None:
        if self.stop.requested:
            return f"signal:{self.stop.signal_name}"
        if self.cfg.minutes is not None and time.monotonic() - self._t_start >= self.cfg.minutes * 60:
            return "time"
        return None

    def _final_message(self) -> None:
        reason = self.stopped_by or ""
        where = f"step {self.step} ({self.nimg / 1000:.3f} kimg)"
        ckpt = f"checkpoint: {self.last_ckpt}" if self.last_ckpt else "no checkpoint"
        resume = f"avatarforge train --resume {self.run_dir}"
        if reason.startswith("signal"):
            self._print(f"stopped by {reason.split(':', 1)[1]} at {where}; {ckpt}\nresume with: {resume}")
        elif reason == "time":
            self._print(
                f"time limit ({self.cfg.minutes} min) reached at {where}; {ckpt}\nresume with: {resume}"
            )
        else:
            self._print(f"done: {where}; {ckpt}; samples in {self.run_dir / 'samples'}")

    # ================================================================== logging and the NaN guard
    def _reset_accumulators(self) -> None:
        self._acc = {k: torch.zeros((), device=self.device) for k in _ACC_KEYS}
        self._acc_n = dict.fromkeys(_ACC_KEYS, 0)

    def _accumulate(self, stats: Mapping[str, Tensor]) -> None:
        for k, v in stats.items():
            self._acc[k] += v.float()
            self._acc_n[k] += 1

    def _log_step(self) -> tuple[bool, str | None]:
        """Read the accumulated losses (the only per-interval host sync), check them, log.

        Returns ``(healthy, stop_reason)``; under torch.distributed both are agreed by all
        ranks through one small all-reduce.
        """
        keys = list(self._acc)
        local_stop = self._local_stop_reason() if self.dist.enabled else None
        flags = [
            float(local_stop is not None and local_stop.startswith("signal")),
            float(local_stop == "time"),
        ]
        vec = torch.stack([self._acc[k] for k in keys] + [torch.tensor(f, device=self.device) for f in flags])
        D_.all_reduce_sum(vec, self.dist)
        values = vec.tolist()
        n_ranks = self.dist.world_size
        losses = {k: values[i] / n_ranks / self._acc_n[k] for i, k in enumerate(keys) if self._acc_n[k]}
        stop = "signal:SIGTERM" if values[len(keys)] > 0 else ("time" if values[len(keys) + 1] > 0 else None)
        if local_stop and local_stop.startswith("signal"):
            stop = local_stop
        if not all(math.isfinite(v) for v in losses.values()) or not self._weights_finite():
            return False, None

        now = time.perf_counter()
        rate = (self.nimg - self._nimg_log) / max(now - self._t_log, 1e-9)
        self._t_log, self._nimg_log = now, self.nimg
        record: dict[str, Any] = {
            "kind": "train",
            "step": self.step,
            "kimg": round(self.nimg / 1000, 6),
            "time_s": round(self.elapsed_before + time.monotonic() - self._t_start, 3),
            "img_per_s": round(rate, 2),
            "lr": self.opt.param_groups[0]["lr"],
            "kl_weight": self.current_kl_weight(),
            **{k: round(v, 6) for k, v in losses.items()},
        }
        if self.vae_ema is not None:
            record["ema_beta"] = self.current_ema_beta()
        if self.device.type == "cuda":
            record["mem_gb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 3)
        self.metrics.append(record)
        self.bar.set_postfix({k: f"{losses[k]:.3g}" for k in ("recon", "kl") if k in losses}, refresh=False)
        self._reset_accumulators()
        return True, stop

    def _weights_finite(self) -> bool:
        ema = list(self.vae_ema.parameters()) if self.vae_ema is not None else []
        return all_finite([*self.vae.parameters(), *ema])

    def _recover(self, what: str) -> Iterator[tuple[Tensor, Tensor]]:
        """Roll back to the last good checkpoint (or the start), halve the lr; returns new batches.

        Raises TrainingDiverged on the ``max_nan_events``-th event.
        """
        bad = nonfinite_names([(f"vae.{n}", p) for n, p in self.vae.named_parameters()])
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
            f"non-finite values at step {bad_step}: restored step {self.step}, learning rate x{self.nan.lr_scale:g}"
        )
        return self._batches()

    def _set_lr(self, scale: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.optim.g_lr * scale

    # ================================================================== samples and evaluation
    def _fixed_inputs(self) -> dict[str, Tensor | None]:
        """Fixed for the whole run: ``log.num_samples`` training images (a seeded random
        subset) with their labels, and prior latents (and labels) for the sample grid.

        Sample grid of a conditional model: each column keeps one latent and each row cycles
        through the label values, so a row shows one class (as the GAN grids do).
        """
        n = min(self.cfg.log.num_samples, len(self.dataset))
        self._grid_cols = max(1, math.ceil(math.sqrt(n)))
        rng = np.random.default_rng(derive_seed(self.cfg.seed, 0xE7A1))
        idx = np.sort(rng.choice(len(self.dataset), size=n, replace=False))
        x = from_uint8(self.dataset.images_uint8(idx))  # (n, C, H, W) in [-1, 1]
        y = self._label_indices(torch.from_numpy(self.dataset.labels[idx])) if self.label_names else None
        g = torch.Generator().manual_seed(derive_seed(self.cfg.seed, 0x5A3E))
        ns = self.cfg.log.num_samples
        if self.label_dims:
            z = self.vae.sample_z(self._grid_cols, generator=g, device="cpu")[
                torch.arange(ns) % self._grid_cols
            ]
            rows = torch.arange(ns) // self._grid_cols
            z_labels = torch.stack([rows % k for k in self.label_dims], 1).long()
        else:
            z, z_labels = self.vae.sample_z(ns, generator=g, device="cpu"), None
        return {"x": x, "y": y.cpu() if y is not None else None, "z": z, "z_labels": z_labels}

    def _chunks(self, *tensors: Tensor | None, chunk: int = 32) -> Iterator[list[Tensor | None]]:
        n = next(t for t in tensors if t is not None).shape[0]
        for s in range(0, n, chunk):
            yield [t[s : s + chunk].to(self.device) if t is not None else None for t in tensors]

    @torch.no_grad()
    def reconstruct_fixed(self, model: nn.Module | None = None) -> Tensor:
        """Reconstructions (from ``mu``) of the fixed training images, CPU float ``(n, C, H, W)``."""
        model = model if model is not None else self.model
        out = []
        for x, y in self._chunks(self._fixed["x"], self._fixed["y"]):
            mu, _ = model.encode(self._format(x), y)
            out.append(model.decode(mu, y).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def sample_fixed(self, model: nn.Module | None = None) -> Tensor:
        """Decoded fixed prior latents, CPU float ``(num_samples, C, H, W)``."""
        model = model if model is not None else self.model
        return torch.cat(
            [
                model.decode(z, y).float().cpu()
                for z, y in self._chunks(self._fixed["z"], self._fixed["z_labels"])
            ]
        )

    def _format(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def save_samples(self) -> list[Path]:
        """Write ``samples/recon_KKKKKK.png`` (rows of originals, each followed by a row of
        their reconstructions) and ``samples/fakes_KKKKKK.png`` (prior samples); rank 0."""
        if not self.is_main:
            return []
        k = self.nimg // 1000
        cols = self._grid_cols
        orig, rec = self._fixed["x"], self.reconstruct_fixed()
        pairs = torch.cat(
            [torch.cat([orig[s : s + cols], rec[s : s + cols]]) for s in range(0, len(orig), cols)]
        )
        samples = self.run_dir / "samples"
        p1 = save_image(samples / f"recon_{k:06d}.png", make_grid(pairs, nrow=cols, alpha_backdrop="checker"))
        fakes = make_grid(self.sample_fixed(), nrow=cols, alpha_backdrop="checker")
        return [p1, save_image(samples / f"fakes_{k:06d}.png", fakes)]

    @torch.no_grad()
    def evaluate(self, model: nn.Module | None = None) -> dict[str, float]:
        """The built-in metrics on the fixed training images (deterministic: uses ``mu``).

        ``eval_recon`` and ``eval_kl`` are the loss terms (per image), ``eval_loss`` =
        ``eval_recon + loss.beta * eval_kl``, ``eval_mse`` the mean squared error per value
        in [0, 1] pixel units and ``eval_psnr`` = ``10 log10(1 / eval_mse)`` dB.
        """
        model = model if model is not None else self.model
        recon = kl = sq = 0.0
        n = 0
        for x, y in self._chunks(self._fixed["x"], self._fixed["y"]):
            mu, logvar = model.encode(self._format(x), y)
            x_hat = model.decode(mu, y).float()
            b = x.shape[0]
            recon += float(recon_loss(x_hat, x, self.cfg.loss.recon)) * b
            kl += float(kl_per_dim(mu.float(), logvar.float()).sum(1).mean()) * b
            sq += float(((x_hat - x) / 2).square().mean()) * b  # [-1, 1] -> [0, 1] units
            n += b
        recon, kl, mse = recon / n, kl / n, sq / n
        return {
            "eval_loss": recon + self.cfg.loss.beta * kl,
            "eval_recon": recon,
            "eval_kl": kl,
            "eval_mse": mse,
            "eval_psnr": 10 * math.log10(1.0 / max(mse, 1e-12)),
        }

    def run_metrics(self) -> dict[str, float]:
        """Built-in evaluation + the metric hook (rank 0); log; keep ``checkpoints/best/``."""
        results: dict[str, float] = {}
        if self.is_main:
            results = self.evaluate()
            if self.metric_fn is not None:
                # The hook may draw random numbers; it must not shift the training's streams.
                devices = [self.device.index or 0] if self.device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices):
                    results.update({k: float(v) for k, v in dict(self.metric_fn(self)).items()})
        results = D_.broadcast_object(results, self.dist)
        self.metrics.append(
            {"kind": "metric", "step": self.step, "kimg": round(self.nimg / 1000, 6), **results}
        )
        name = self.cfg.log.best_metric
        if name and name in results and math.isfinite(results[name]):
            v = results[name]
            better = self.best_value is None or (
                v < self.best_value if self.cfg.log.best_mode == "min" else v > self.best_value
            )
            if better:
                self.best_value = v
                if self.last_ckpt is None or self.last_ckpt.name != f"ckpt-{self.step:08d}":
                    self.save_checkpoint()
                if self.is_main and self.last_ckpt is not None:
                    info = {"metric": name, "value": v, "mode": self.cfg.log.best_mode}
                    save_best(
                        self.ckpt_root, self.last_ckpt, {**info, "step": self.step, "kimg": self.nimg / 1000}
                    )
        return results

    # ================================================================== checkpoints
    def _networks(self) -> dict[str, nn.Module]:
        nets: dict[str, nn.Module] = {"vae": self.vae}
        if self.vae_ema is not None:
            nets["vae_ema"] = self.vae_ema
        return nets

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/ckpt-SSSSSSSS`` (rank 0 writes; every rank must call this)."""
        snap = self._capture(gather=True, with_models=False)
        path = None
        if self.is_main:
            path = save_checkpoint(
                self.ckpt_root, self.step, models=self._networks(), tensors=snap.tensors, meta=snap.meta
            )
            prune_checkpoints(self.ckpt_root, self.cfg.log.keep_last)
        # Broadcasting the path doubles as a barrier: no rank runs ahead of the write.
        got = D_.broadcast_object(str(path) if path else None, self.dist)
        self.last_ckpt = Path(got) if got else None
        self.start_snapshot = None  # the checkpoint replaces the in-memory fallback
        return self.last_ckpt

    def _capture(self, *, gather: bool, with_models: bool) -> Snapshot:
        """The training state as a :class:`Snapshot` (``gather``: every rank's RNG on rank 0)."""
        tensors, opt_meta = optimizer_state(self.opt, "vae")
        meta: dict[str, Any] = {"optimizers": {"vae": opt_meta}, "rng": {}}
        rng = capture_rng(self.gens)
        per_rank = D_.gather_objects(rng, self.dist) if gather else None
        per_rank = {self.dist.rank: rng} if per_rank is None else dict(enumerate(per_rank))
        for r, (t, m) in per_rank.items():
            prefix = "" if r == 0 else f"rank{r}/"
            tensors.update({prefix + k: v for k, v in t.items()})
            meta["rng"][str(r)] = m
        if self.scaler is not None:
            meta["scalers"] = {"vae": self.scaler.state_dict()}
        meta.update(
            {
                "step": self.step,
                "nimg": self.nimg,
                "kimg": self.nimg / 1000,
                "kl_weight": self.current_kl_weight(),
                "nan_events": self.nan.count,
                "lr_scale": self.nan.lr_scale,
                "best_metric": self.cfg.log.best_metric,
                "best_value": self.best_value,
                "elapsed_s": self.elapsed_before
                + (time.monotonic() - self._t_start if hasattr(self, "_t_start") else 0),
                "world_size": self.dist.world_size,
                "batch_size": self.cfg.batch_size,
                "data": {"seed": self.cfg.seed, "next_step": self.step, "path": str(self.cfg.data.path)},
                "label_names": self.label_names,
                "config": to_dict(self.cfg),
            }
        )
        models: dict[str, dict[str, Tensor]] = {}
        if with_models:
            for prefix, m in self._networks().items():
                models[prefix] = {k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()}
        return Snapshot(models=models, tensors=tensors, meta=meta)

    def _restore(self, snap: Snapshot, *, counters: bool) -> None:
        """Load a snapshot into the live objects (``counters``: also the NaN count, best
        metric and elapsed time, i.e. a resume rather than a NaN roll-back)."""
        meta = snap.meta
        nets = self._networks()
        if "vae_ema" not in snap.models and self.vae_ema is not None and "vae" in snap.models:
            # Resuming a run trained without EMA with ema.enabled=true: start the EMA from the weights.
            snap.models["vae_ema"] = snap.models["vae"]
        for prefix, m in nets.items():
            if prefix not in snap.models:
                raise ValueError(
                    f"checkpoint {meta.get('path', '(memory)')} has no {prefix}_model.safetensors"
                )
            m.load_state_dict(snap.models[prefix], strict=True)
        restore_optimizer(self.opt, "vae", snap.tensors, meta["optimizers"]["vae"])
        if self.scaler is not None and "scalers" in meta:
            self.scaler.load_state_dict(meta["scalers"]["vae"])
        self.step = int(meta["step"])
        self.nimg = int(meta.get("nimg", self.step * self.cfg.batch_size))
        rank = self.dist.rank
        rng_meta = meta.get("rng", {}).get(str(rank))
        if rng_meta is not None:
            prefix = "" if rank == 0 else f"rank{rank}/"
            own = {k[len(prefix) :]: v for k, v in snap.tensors.items() if k.startswith(prefix + "rng/")}
            restore_rng(self.gens, own, rng_meta)
        else:
            # Resumed with more processes than were saved: new streams, deterministic in (seed, rank, step).
            for i, g in enumerate(self.gens.values()):
                g.manual_seed(derive_seed(self.cfg.seed, rank, i + 1, self.step))
            if self.is_main:
                warnings.warn(
                    f"checkpoint was written by {meta.get('world_size')} process(es), now {self.dist.world_size}: "
                    "random streams of the new ranks are re-seeded (training continues, not bit-exactly)",
                    stacklevel=2,
                )
        if counters:
            self.nan.count = int(meta.get("nan_events", 0))
            self.best_value = meta.get("best_value")
            self.elapsed_before = float(meta.get("elapsed_s", 0.0))
            if int(meta.get("batch_size", self.cfg.batch_size)) != self.cfg.batch_size and self.is_main:
                warnings.warn(
                    f"resuming with batch_size {self.cfg.batch_size}, the checkpoint used {meta.get('batch_size')}; "
                    "the data order changes",
                    stacklevel=2,
                )
        self._set_lr(self.nan.lr_scale)

    # ================================================================== misc
    def _print(self, msg: str) -> None:
        if not self.is_main:
            return
        bar = getattr(self, "bar", None)
        if bar is not None and not bar.disable:
            bar.write(msg)
        else:
            print(msg, flush=True)
