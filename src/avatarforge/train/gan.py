"""The GAN training loop: :class:`GANTrainer` for dcgan, cgan, infogan and stylegan.

One step, top to bottom (:meth:`GANTrainer.train_step`)::

    fakes:   fakes = G(z), once per step, graph kept for the G step
    D step:  loss_D = d_loss(D(aug(reals)), D(aug(fakes.detach())))
             (+ lazy R1 on reals every r1_interval steps, + InfoGAN's MI term for the Q head)
    G step:  D (just updated) frozen; loss_G = g_loss(D(aug(fakes))) (+ InfoGAN's MI term for G)
    EMA:     G_ema <- lerp(G, G_ema, beta)

Everything around the step is generic and lives in sibling modules: the run directory
(:mod:`.rundir`), checkpoints (:mod:`.checkpoint`), EMA (:mod:`.ema`), losses
(:mod:`.losses`), signals and the NaN guard (:mod:`.guard`), ``metrics.jsonl``
(:mod:`.metrics_log`) and data parallelism (:mod:`.distributed`).

Exact resume: every random number comes from a ``torch.Generator`` owned by the trainer
(latents, augmentation, StyleGAN noise/mixing) whose state is checkpointed, and the data
order is a pure function of ``(seed, step)`` (:func:`avatarforge.data.dataset.infinite_batches`).
On CPU a run stopped and resumed ends bit-identical to an uninterrupted one.

Host syncs: losses are accumulated as tensors and read (``.item``) only every
``log.every_steps`` steps, together with the NaN/Inf check.
"""

from __future__ import annotations

import copy
import inspect
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from avatarforge.config import ConfigError, TrainConfig, to_dict, to_yaml
from avatarforge.fileio import atomic_write_json, atomic_write_text
from avatarforge.imageio import make_grid, save_image
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
from avatarforge.train.guard import NaNEvents, StopSignal, TrainingDiverged, all_finite, nonfinite_names
from avatarforge.train.losses import d_loss, g_loss, info_loss, r1_penalty, r1_weight
from avatarforge.train.metrics_log import MetricsLog, require_tensorboard, truncate_metrics
from avatarforge.train.rundir import allocate_run_dir

__all__ = ["GANTrainer", "MetricFn", "StepHook", "TrainingDiverged", "build_gan"]

#: ``metric_fn(trainer) -> {"fid": 12.3, ...}``: run every ``log.metric_every_kimg`` and at the end.
MetricFn = Callable[["GANTrainer"], Mapping[str, float]]
#: ``step_hook(trainer)``: called after every optimizer step (tests use it to inject faults).
StepHook = Callable[["GANTrainer"], None]

_MODEL_PREFIXES = ("g", "g_ema", "d")


# --------------------------------------------------------------------------- model construction
def _accepts(fn: Any, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _construct(cls: type, kwargs: dict[str, Any], where: str) -> nn.Module:
    try:
        return cls(**kwargs)
    except TypeError as e:
        valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise ConfigError(f"{where}: {e}; {cls.__name__} accepts: {', '.join(valid)}") from e


def build_gan(
    cfg: TrainConfig, resolution: int, channels: int, label_dims: list[int]
) -> tuple[nn.Module, nn.Module]:
    """Create ``(G, D)`` from the registry: ``model.kwargs`` go to both, ``g_kwargs``/``d_kwargs`` to one.

    ``label_dims`` is passed to models that take it (required when non-empty); an InfoGAN
    discriminator gets ``code_dims=G.code_dims`` unless ``d_kwargs`` sets it.
    """
    from avatarforge.models.registry import get_model_class

    try:
        g_cls = get_model_class(cfg.model.name, "generator")
        d_cls = get_model_class(cfg.model.name, "discriminator")
    except KeyError as e:
        raise ConfigError(f"model.name: {e.args[0]}") from None
    common = {"resolution": resolution, "channels": channels, **cfg.model.kwargs}
    g_kw: dict[str, Any] = {**common, "z_dim": cfg.model.z_dim, **cfg.model.g_kwargs}
    d_kw: dict[str, Any] = {**common, **cfg.model.d_kwargs}
    for cls, kw in ((g_cls, g_kw), (d_cls, d_kw)):
        if _accepts(cls.__init__, "label_dims"):
            kw["label_dims"] = list(label_dims)
        elif label_dims:
            raise ConfigError(
                f"model {cfg.model.name!r} is unconditional but data.condition_on selects {len(label_dims)} "
                "label(s); set data.condition_on=[] or use a conditional model (cgan, stylegan)"
            )
    G = _construct(g_cls, g_kw, "model.g_kwargs / model.kwargs")
    if _accepts(d_cls.__init__, "code_dims") and "code_dims" not in d_kw:
        d_kw["code_dims"] = dict(getattr(G, "code_dims", {}))
    Dn = _construct(d_cls, d_kw, "model.d_kwargs / model.kwargs")
    return G, Dn


def _condition_labels(cfg: TrainConfig, schema: Any) -> list[str]:
    """The categorical labels to condition on (``data.condition_on``; None = all categorical)."""
    if cfg.data.condition_on is None:
        return [f.name for f in schema.categorical]
    names = list(cfg.data.condition_on)
    for n in names:
        if n not in schema.names:
            raise ConfigError(
                f"data.condition_on: the data set has no label {n!r}; its labels: {', '.join(schema.names) or '(none)'}"
            )
        if schema[n].kind != "categorical":
            cats = ", ".join(f.name for f in schema.categorical) or "(none)"
            raise ConfigError(f"data.condition_on: label {n!r} is continuous; categorical labels: {cats}")
    return names


# --------------------------------------------------------------------------- the trainer
class GANTrainer:
    """Train a registered GAN family on a packed data set.

    Args:
        config: the resolved configuration (see :func:`avatarforge.config.build_train_config`).
        resume: a run directory or checkpoint to continue from (training continues in that
            run directory).
        metric_fn: optional evaluation hook ``metric_fn(trainer) -> {name: value}``, run on
            rank 0 every ``log.metric_every_kimg`` and at the end; results go to
            ``metrics.jsonl``, and ``log.best_metric`` names the one ``checkpoints/best/``
            follows.
        step_hook: optional ``step_hook(trainer)`` called after every step.
        dataset: an already opened :class:`~avatarforge.data.dataset.PackedDataset` (default:
            open ``config.data.path``).

    Attributes useful to hooks: ``G``, ``D``, ``G_ema``, ``device``, ``dataset``,
    ``label_names``, ``step``, ``nimg``, ``run_dir``, ``cfg``, ``stop`` (call
    ``trainer.stop.request()`` to stop after the current step).
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

    # ================================================================== set-up
    def setup(self) -> None:
        """Build everything: process group, device, data, models, optimizers, run dir, resume."""
        cfg = self.cfg
        if cfg.log.tensorboard:
            require_tensorboard()  # fail before any work (and before a run directory exists)
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
        self.label_names = _condition_labels(cfg, self.dataset.schema)
        self.label_dims = [self.dataset.schema[n].num_classes for n in self.label_names]

        # -- models: identical initialisation on every rank (and broadcast to be sure)
        torch.manual_seed(derive_seed(cfg.seed, 0x1417))
        G, Dn = build_gan(cfg, self.resolution, self.channels, self.label_dims)
        self.G = G.to(self.device).train()
        self.D = Dn.to(self.device).train()
        if self.channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        D_.broadcast_module(self.G, self.dist)
        D_.broadcast_module(self.D, self.dist)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        torch.manual_seed(derive_seed(cfg.seed, self.dist.rank, 0x610B))  # anything on the global RNG
        self.code_dims = dict(getattr(self.G, "code_dims", None) or {"categorical": [], "continuous": 0})
        self.has_codes = bool(
            sum(self.code_dims.get("categorical", [])) + self.code_dims.get("continuous", 0)
        )
        fwd = inspect.signature(self.G.forward).parameters
        self._g_rng_kwargs = [k for k in ("mixing_generator", "noise_generator") if k in fwd]

        # -- optimizers (lr scaled down after NaN events, see _set_lr)
        betas = (float(cfg.optim.betas[0]), float(cfg.optim.betas[1]))
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.optim.g_lr, betas=betas, eps=cfg.optim.eps)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.optim.d_lr, betas=betas, eps=cfg.optim.eps)
        fp16 = self.amp is torch.float16
        self.scaler_g = torch.amp.GradScaler("cuda") if fp16 else None
        self.scaler_d = torch.amp.GradScaler("cuda") if fp16 else None

        # -- randomness: one generator per stream, per rank, all checkpointed
        r = self.dist.rank
        self.gens = {
            "latent": make_generator(self.device, cfg.seed, r, 1),
            "augment": make_generator(self.device, cfg.seed, r, 2),
            "g_noise": make_generator(self.device, cfg.seed, r, 3),
        }
        self.augment = None
        if cfg.data.augment.strip():
            from avatarforge.data.augment import DiffAugment

            try:
                self.augment = DiffAugment(cfg.data.augment)
            except ValueError as e:
                raise ConfigError(f"data.augment: {e}") from e

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
        self._fixed = self._fixed_sample_inputs()
        if cfg.log.best_metric and self.metric_fn is None and self.is_main:
            warnings.warn(
                f"log.best_metric={cfg.log.best_metric!r} but no metric hook was given; no best/ checkpoint is kept",
                stacklevel=2,
            )

    def _setup_run_dir(self) -> None:
        cfg = self.cfg
        run_dir: Path | None = None
        if self.is_main:
            if self.resume_from is not None:
                ckpt = find_checkpoint(self.resume_from)
                run_dir = ckpt.parent.parent  # run/checkpoints/<ckpt>
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
            self._save_reals()
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
                    # Single process: react to signals/--minutes after any step. Under
                    # torch.distributed ranks must agree, which _log_step does.
                    stop = stop or self._local_stop_reason()
                if self.step % cfg.log.every_steps == 0 or stop:
                    healthy, agreed_stop = self._log_step()
                    if not healthy:
                        batches = self._recover("losses or weights")
                        continue
                    stop = stop or agreed_stop
                # ... and before anything is written from the weights.
                due_sample = crossed(prev_nimg, self.nimg, cfg.log.sample_every_kimg)
                due_metric = self.metric_fn is not None and crossed(
                    prev_nimg, self.nimg, cfg.log.metric_every_kimg
                )
                due_ckpt = crossed(prev_nimg, self.nimg, cfg.log.checkpoint_every_kimg)
                if (due_sample or due_metric or due_ckpt or stop) and not self._weights_finite():
                    batches = self._recover("weights")
                    continue
                # Checkpoint first: after a signal the process may have little time left.
                if due_ckpt or stop:
                    self.save_checkpoint()
                if due_sample or stop:
                    self.save_samples()
                final_metric = stop is not None and not stop.startswith("signal")
                if self.metric_fn is not None and (due_metric or final_metric):
                    self.run_metrics()
                if stop:
                    self.stopped_by = stop
                    break
        finally:
            self.bar.close()
        self._final_message()

    # ================================================================== one step
    def train_step(self, reals: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """One D step and one G step on a batch, then the EMA update. Returns detached losses."""
        cfg, G, Dn = self.cfg, self.G, self.D
        reals = reals.to(self.device, non_blocking=True)
        y = self._label_indices(labels)
        batch = reals.shape[0]
        do_r1 = cfg.loss.r1_gamma > 0 and self.step % cfg.loss.r1_interval == 0
        stats: dict[str, Tensor] = {}

        # -- one batch of fakes serves both steps (as in the classic DCGAN recipe): G's graph
        # is kept for the G step, D trains on a detached view. G does not change in between.
        with self._autocast():
            z, codes = self._latents(batch)
            fakes = G(z, **self._g_inputs(y, codes))

        # -- discriminator: reals vs. detached fakes (+ lazy R1, + the Q head's MI term)
        reals_in = reals.detach().requires_grad_(do_r1)  # R1 needs d D(x) / d x
        with self._autocast():
            fake_logits, q = self._discriminate(fakes.detach(), y, with_q=self.has_codes)
            real_logits, _ = self._discriminate(reals_in, y)
            loss_d = d_loss(real_logits, fake_logits, cfg.loss.kind)
            stats["loss_d"] = loss_d.detach()
            if self.has_codes:
                mi_d = info_loss(q, codes, self.code_dims)
                loss_d = loss_d + cfg.loss.info_lambda * mi_d
        if do_r1:
            r1 = r1_penalty(reals_in, real_logits)
            loss_d = loss_d + r1 * r1_weight(cfg.loss.r1_gamma, cfg.loss.r1_interval)
            stats["r1"] = r1.detach()
        self._optimize(self.opt_d, self.scaler_d, Dn, loss_d)

        # -- generator: through the updated D, which is frozen (its weight gradients would
        # be thrown away)
        Dn.requires_grad_(False)
        with self._autocast():
            fake_logits, q = self._discriminate(fakes, y, with_q=self.has_codes)
            loss_g = g_loss(fake_logits, cfg.loss.kind)
            stats["loss_g"] = loss_g.detach()
            if self.has_codes:
                mi_g = info_loss(q, codes, self.code_dims)
                loss_g = loss_g + cfg.loss.info_lambda * mi_g
                stats["info"] = mi_g.detach()
        self._optimize(self.opt_g, self.scaler_g, G, loss_g)
        Dn.requires_grad_(True)

        # -- keep buffers (BatchNorm stats, w_avg) identical across ranks, then the EMA
        D_.broadcast_buffers(G, self.dist)
        D_.broadcast_buffers(Dn, self.dist)
        update_ema(self.G_ema, G, self.current_ema_beta())
        return stats

    def current_ema_beta(self) -> float:
        e = self.cfg.ema
        return ema_beta(self.cfg.batch_size, self.nimg, e.kimg, e.rampup, e.beta)

    # -- small pieces of the step (each one thing, in the order the step uses them)
    def _autocast(self) -> Any:
        return autocast(self.device, self.amp)

    def _label_indices(self, labels: Tensor) -> Tensor | None:
        if not self.label_names:
            return None
        from avatarforge.data.dataset import label_indices

        return label_indices(labels, self.dataset.schema, self.label_names).to(self.device, non_blocking=True)

    def _latents(self, n: int) -> tuple[Tensor, Tensor | None]:
        g = self.gens["latent"]
        z = self.G.sample_z(n, generator=g, device=self.device)
        codes = self.G.sample_codes(n, generator=g, device=self.device) if self.has_codes else None
        return z, codes

    def _g_inputs(self, y: Tensor | None, codes: Tensor | None) -> dict[str, Any]:
        kw: dict[str, Any] = {"labels": y, "codes": codes}
        for k in self._g_rng_kwargs:
            kw[k] = self.gens["g_noise"]
        return kw

    def _discriminate(self, images: Tensor, y: Tensor | None, with_q: bool = False) -> tuple[Tensor, Any]:
        """``D(aug(images))`` -> ``(logits, q_outputs or None)``."""
        if self.augment is not None:
            images = self.augment(images, generator=self.gens["augment"])
        if with_q:
            out = self.D(images, y, return_q=True)
            return out[0], out
        return self.D(images, y), None

    def _optimize(self, opt: torch.optim.Optimizer, scaler: Any, module: nn.Module, loss: Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        D_.all_reduce_grads(module.parameters(), self.dist)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()

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
        z = torch.zeros((), device=self.device)
        self._acc: dict[str, Tensor] = {
            "loss_g": z.clone(),
            "loss_d": z.clone(),
            "r1": z.clone(),
            "info": z.clone(),
        }
        self._acc_n = {"loss_g": 0, "loss_d": 0, "r1": 0, "info": 0}

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
            "lr_g": self.opt_g.param_groups[0]["lr"],
            "lr_d": self.opt_d.param_groups[0]["lr"],
            "ema_beta": self.current_ema_beta(),
            **{k: round(v, 6) for k, v in losses.items()},
        }
        if self.device.type == "cuda":
            record["mem_gb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 3)
        self.metrics.append(record)
        self.bar.set_postfix(
            {k: f"{v:.3f}" for k, v in losses.items() if k in ("loss_g", "loss_d")}, refresh=False
        )
        self._reset_accumulators()
        return True, stop

    def _weights_finite(self) -> bool:
        return all_finite([*self.G.parameters(), *self.D.parameters(), *self.G_ema.parameters()])

    def _recover(self, what: str) -> Iterator[tuple[Tensor, Tensor]]:
        """Roll back to the last good checkpoint (or the start), halve the lrs; returns new batches.

        Raises TrainingDiverged on the ``max_nan_events``-th event.
        """
        bad = nonfinite_names(
            [(f"G.{n}", p) for n, p in self.G.named_parameters()]
            + [(f"D.{n}", p) for n, p in self.D.named_parameters()]
        )
        what = f"{what}{': ' + ', '.join(bad) if bad else ''}"
        bad_step = self.step
        self.metrics.append(
            {"kind": "event", "event": "nonfinite", "step": bad_step, "kimg": self.nimg / 1000, "what": what}
        )
        self.nan.record(what, bad_step)  # warns, or raises TrainingDiverged
        snap = load_snapshot(self.last_ckpt) if self.last_ckpt is not None else self.start_snapshot
        assert snap is not None
        self._restore(snap, counters=False)
        self._set_lr(self.nan.lr_scale)
        self._reset_accumulators()
        self.bar.reset(total=self.bar.total)
        self.bar.update(self.nimg)
        self._print(
            f"non-finite values at step {bad_step}: restored step {self.step}, learning rates x{self.nan.lr_scale:g}"
        )
        return self._batches()

    def _set_lr(self, scale: float) -> None:
        for opt, base in ((self.opt_g, self.cfg.optim.g_lr), (self.opt_d, self.cfg.optim.d_lr)):
            for group in opt.param_groups:
                group["lr"] = base * scale

    # ================================================================== samples and metrics
    def _fixed_sample_inputs(self) -> dict[str, Tensor | None]:
        """Latents (and labels/codes) for the sample grids, fixed for the whole run.

        Unconditional: one latent per cell. With labels or InfoGAN codes, each column keeps
        one latent and each row cycles through the label values (or the first categorical
        code), so a row shows one class across different latents.
        """
        n = self.cfg.log.num_samples
        self._grid_cols = max(1, math.ceil(math.sqrt(n)))
        g = torch.Generator().manual_seed(derive_seed(self.cfg.seed, 0x5A3E))
        structured = bool(self.label_dims) or self.has_codes
        if structured:
            z = self.G.sample_z(self._grid_cols, generator=g, device="cpu")[torch.arange(n) % self._grid_cols]
        else:
            z = self.G.sample_z(n, generator=g, device="cpu")
        rows = torch.arange(n) // self._grid_cols
        labels = None
        if self.label_dims:
            labels = torch.stack([rows % k for k in self.label_dims], 1).long()
        codes = None
        if self.has_codes:
            parts = []
            for j, k in enumerate(self.code_dims["categorical"]):
                idx = rows % k if j == 0 else torch.zeros(n, dtype=torch.long)
                parts.append(torch.nn.functional.one_hot(idx, k).float())
            if self.code_dims["continuous"]:
                parts.append(torch.zeros(n, self.code_dims["continuous"]))
            codes = torch.cat(parts, 1)
        return {"z": z, "labels": labels, "codes": codes}

    @torch.no_grad()
    def generate_fixed(self, model: nn.Module | None = None, chunk: int = 32) -> Tensor:
        """The fixed sample batch from ``model`` (default ``G_ema``) as a CPU float tensor."""
        model = model if model is not None else self.G_ema
        f = self._fixed
        out = []
        for s in range(0, f["z"].shape[0], chunk):
            kw = {k: (v[s : s + chunk].to(self.device) if v is not None else None) for k, v in f.items()}
            out.append(model(kw["z"], labels=kw["labels"], codes=kw["codes"]).float().cpu())
        return torch.cat(out)

    def save_samples(self) -> Path | None:
        """Write ``samples/fakes_KKKKKK.png`` from the EMA generator (rank 0)."""
        if not self.is_main:
            return None
        images = self.generate_fixed()
        grid = make_grid(images, nrow=self._grid_cols, alpha_backdrop="checker")
        return save_image(self.run_dir / "samples" / f"fakes_{self.nimg // 1000:06d}.png", grid)

    def _save_reals(self) -> None:
        n = min(self.cfg.log.num_samples, len(self.dataset))
        images = torch.stack([self.dataset[i][0] for i in range(n)])
        grid = make_grid(images, nrow=self._grid_cols, alpha_backdrop="checker")
        save_image(self.run_dir / "samples" / "reals.png", grid)

    def run_metrics(self) -> dict[str, float]:
        """Run the metric hook (rank 0), log the results, keep ``checkpoints/best/`` up to date."""
        results: dict[str, float] = {}
        if self.is_main and self.metric_fn is not None:
            # The hook may draw random numbers; it must not shift the training's streams.
            devices = [self.device.index or 0] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                results = {k: float(v) for k, v in dict(self.metric_fn(self)).items()}
                self.G_ema.eval()
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
                    save_best(
                        self.ckpt_root,
                        self.last_ckpt,
                        {
                            "metric": name,
                            "value": v,
                            "mode": self.cfg.log.best_mode,
                            "step": self.step,
                            "kimg": self.nimg / 1000,
                        },
                    )
        return results

    # ================================================================== checkpoints
    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/ckpt-SSSSSSSS`` (rank 0 writes; every rank must call this)."""
        snap = self._capture(gather=True, with_models=False)
        path = None
        if self.is_main:
            models = {"g": self.G, "g_ema": self.G_ema, "d": self.D}
            path = save_checkpoint(
                self.ckpt_root, self.step, models=models, tensors=snap.tensors, meta=snap.meta
            )
            prune_checkpoints(self.ckpt_root, self.cfg.log.keep_last)
        # Broadcasting the path doubles as a barrier: no rank runs ahead of the write.
        got = D_.broadcast_object(str(path) if path else None, self.dist)
        self.last_ckpt = Path(got) if got else None
        self.start_snapshot = None  # the checkpoint replaces the in-memory fallback
        return self.last_ckpt

    def _capture(self, *, gather: bool, with_models: bool) -> Snapshot:
        """The training state as a :class:`Snapshot`.

        ``gather=True`` (checkpoints) collects every rank's RNG states on rank 0; an
        in-memory snapshot keeps only this rank's.
        """
        tensors: dict[str, Tensor] = {}
        meta: dict[str, Any] = {"optimizers": {}, "rng": {}}
        for name, opt in (("g", self.opt_g), ("d", self.opt_d)):
            t, m = optimizer_state(opt, name)
            tensors.update(t)
            meta["optimizers"][name] = m
        rng = capture_rng(self.gens)
        per_rank = D_.gather_objects(rng, self.dist) if gather else None
        if per_rank is None:  # in-memory snapshot, or a non-zero rank's share of a checkpoint
            per_rank = {self.dist.rank: rng}
        else:
            per_rank = dict(enumerate(per_rank))
        for r, (t, m) in per_rank.items():
            prefix = "" if r == 0 else f"rank{r}/"
            tensors.update({prefix + k: v for k, v in t.items()})
            meta["rng"][str(r)] = m
        if self.scaler_g is not None:
            meta["scalers"] = {"g": self.scaler_g.state_dict(), "d": self.scaler_d.state_dict()}
        meta.update(
            {
                "step": self.step,
                "nimg": self.nimg,
                "kimg": self.nimg / 1000,
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
                # The conditioning labels' class names travel with the checkpoint, so attribute
                # requests by name work after the data set is moved or deleted.
                "label_schema": [self.dataset.schema[n].to_json() for n in self.label_names],
                "augment": self.cfg.data.augment,
                "config": to_dict(self.cfg),
            }
        )
        models: dict[str, dict[str, Tensor]] = {}
        if with_models:
            for prefix, m in zip(_MODEL_PREFIXES, (self.G, self.G_ema, self.D)):
                models[prefix] = {k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()}
        return Snapshot(models=models, tensors=tensors, meta=meta)

    def _restore(self, snap: Snapshot, *, counters: bool) -> None:
        """Load a snapshot into the live objects.

        ``counters=True`` (resume) also restores the NaN-event count, best metric and elapsed
        time; a NaN roll-back keeps the current ones.
        """
        meta = snap.meta
        for prefix, m in zip(_MODEL_PREFIXES, (self.G, self.G_ema, self.D)):
            if prefix not in snap.models:
                raise ValueError(
                    f"checkpoint {meta.get('path', '(memory)')} has no {prefix}_model.safetensors"
                )
            m.load_state_dict(snap.models[prefix], strict=True)
        restore_optimizer(self.opt_g, "g", snap.tensors, meta["optimizers"]["g"])
        restore_optimizer(self.opt_d, "d", snap.tensors, meta["optimizers"]["d"])
        if self.scaler_g is not None and "scalers" in meta:
            self.scaler_g.load_state_dict(meta["scalers"]["g"])
            self.scaler_d.load_state_dict(meta["scalers"]["d"])
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
