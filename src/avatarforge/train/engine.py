"""The one training engine: :class:`Trainer` runs every model family's training.

The GANs (:mod:`.gan`), the VAEs (:mod:`.vae`), CycleGAN
(:mod:`avatarforge.style.train_cyclegan`) and the expression animator
(:mod:`avatarforge.animate.trainer`) are subclasses; :func:`avatarforge.train.train` picks the
one for a config. The engine runs everything around a family's step, the same way for all:

* set-up: process group and device, speed settings, the run directory (resolved config,
  ``samples/``), resume from a checkpoint;
* the loop (:meth:`Trainer._loop`): one ``train_step`` per batch, progress bar, and at the
  scheduled points (``log.*``) the loss log, the NaN/Inf guard, checkpoints, sample grids and
  evaluation, in that order; it stops on ``kimg``, ``minutes`` or SIGINT/SIGTERM (after
  writing a checkpoint and naming the resume command);
* checkpoints every ``log.checkpoint_every_kimg`` and every ``log.checkpoint_every_minutes``
  of wall time (so a crash early in a long interval loses minutes, not the run), with the
  complete training state (every optimizer, every random generator of every rank, counters,
  the partly filled loss-logging window), so a resumed run is bit-identical to an
  uninterrupted one on CPU and logs the same losses;
* resume from the newest intact checkpoint (damaged ones are skipped with a warning, see
  :func:`~avatarforge.train.checkpoint.find_intact_checkpoint`), after removing what killed
  writes left behind (``.*.tmp`` files, ``.*.partial`` directories);
* the NaN guard: roll back to the last good checkpoint, halve the learning rates, give up
  after ``max_nan_events``;
* ``metrics.jsonl`` and the ``checkpoints/best/`` copy kept by ``log.best_metric``.

A family writes only what differs between families, each in one method:

* :meth:`Trainer._build`: its data, models, optimizers, random streams and the fixed inputs of
  its pictures; it registers what the engine handles for it in ``networks``, ``trainable``,
  ``optimizers`` and ``gens``;
* :meth:`Trainer._batches`: where batches come from (default: the packed data set);
* :meth:`Trainer.train_step`: one optimisation step;
* :meth:`Trainer.save_samples`: its pictures;
* :meth:`Trainer._evaluate`: built-in metrics (default: none);
* :meth:`Trainer._log_fields`: schedule values for the log (learning rates, ramps);
* :meth:`Trainer._extra_state` / :meth:`Trainer._load_extra_state`: what else a checkpoint holds.

Everything else a family differs in is data: the class attributes ``ACC_KEYS``,
``BAR_KEYS``, ``BUILTIN_METRICS``, ``COMMAND``, ``DISTRIBUTED``, ``RUN_NAME``, ``DATA_PATHS``
and ``NEXT_STEP``. There are no other hooks, so the engine's loop and a family's step each
read top to bottom.
"""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from avatarforge.config import ConfigError, TrainConfig, to_dict, to_yaml
from avatarforge.device import amp_dtype, apply_perf_settings, resolve_device
from avatarforge.fileio import atomic_write_json, atomic_write_text, remove_stale_temp
from avatarforge.train import distributed as D_
from avatarforge.train.checkpoint import (
    CheckpointError,
    Snapshot,
    capture_rng,
    find_intact_checkpoint,
    load_snapshot,
    optimizer_state,
    prune_checkpoints,
    restore_optimizer,
    restore_rng,
    save_best,
    save_checkpoint,
)
from avatarforge.train.ema import ema_beta, update_ema
from avatarforge.train.guard import NaNEvents, StopSignal, all_finite, nonfinite_names
from avatarforge.train.metrics_log import MetricsLog, require_tensorboard, truncate_metrics
from avatarforge.train.rundir import allocate_run_dir
from avatarforge.train.schedule import crossed, derive_seed

__all__ = ["Optimizer", "Trainer", "condition_labels"]


def condition_labels(cfg: TrainConfig, schema: Any) -> list[str]:
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


def _run_dir_of(resume: Path) -> Path:
    """The run directory ``--resume`` points into: a run, its ``checkpoints`` or one checkpoint."""
    if (resume / "checkpoints").is_dir():
        return resume
    if resume.name == "checkpoints":
        return resume.parent
    return resume.parent.parent


class Optimizer:
    """An optimizer the trainer owns: its base learning rate (scaled after NaN events) and
    its fp16 gradient scaler (None unless CUDA fp16 autocast)."""

    def __init__(self, opt: torch.optim.Optimizer, base_lr: float, scaler: Any = None) -> None:
        self.opt, self.base_lr, self.scaler = opt, float(base_lr), scaler


class Trainer:
    """Base of every family's trainer (see the module docstring).

    Args:
        config: the family's resolved configuration (a :class:`~avatarforge.config.TrainConfig`,
            :class:`~avatarforge.animate.config.AnimatorConfig` or
            :class:`~avatarforge.style.train_cyclegan.CycleGANConfig`). The engine reads
            ``seed``, ``batch_size``, ``kimg``, ``minutes``, ``device``, ``runs_dir``, ``desc``,
            ``max_nan_events``, ``perf`` and ``log`` (``every_steps``, ``sample_every_kimg``,
            ``checkpoint_every_kimg``, ``checkpoint_every_minutes``, ``keep_last``,
            ``progress``; ``metric_every_kimg``, ``best_metric``, ``tensorboard`` where the
            family has them).
        resume: a run directory or checkpoint to continue from (in that run directory).
        metric_fn: optional evaluation hook ``metric_fn(trainer) -> {name: value}``, run on
            rank 0 every ``log.metric_every_kimg`` and at the end, next to the family's
            built-in metrics; ``log.best_metric`` names the one ``checkpoints/best/`` follows.
        step_hook: optional ``step_hook(trainer)`` called after every step.
        dataset: an already opened :class:`~avatarforge.data.dataset.PackedDataset`
            (default: open ``config.data.path``; families on packed data sets only).

    Attributes:
        clock: the monotonic clock (seconds) behind ``minutes``, ``time_s`` and
            ``log.checkpoint_every_minutes``; tests replace it to exercise those without
            waiting. Nothing that changes the training reads it.
        networks: what a checkpoint holds, ``{prefix: module}`` (``<prefix>_model.safetensors``);
            set by :meth:`_build`, as are ``trainable`` (the networks being optimised, by the
            name NaN reports use), ``optimizers`` (every :class:`Optimizer`, by checkpoint
            name) and ``gens`` (every random stream, one generator each).
        resources: a :class:`contextlib.ExitStack` closed with the run (e.g. pair-rendering
            workers a family starts in :meth:`_build`).
    """

    #: Per-step statistics ``train_step`` returns (accumulated, averaged per log interval).
    ACC_KEYS: ClassVar[tuple[str, ...]] = ()
    #: The accumulated statistics shown in the progress bar.
    BAR_KEYS: ClassVar[tuple[str, ...]] = ()
    #: Names of the built-in metrics (:meth:`_evaluate`), for ``log.best_metric`` checks.
    BUILTIN_METRICS: ClassVar[tuple[str, ...]] = ()
    #: The command that trains the family (named in "resume with: ..." lines).
    COMMAND: ClassVar[str] = "avatarforge train"
    #: True: the family trains on several processes under torchrun (the GAN and VAE trainers);
    #: False: in a single process (torchrun is refused before any work).
    DISTRIBUTED: ClassVar[bool] = False
    #: Run directories are ``NNNNN-<RUN_NAME>-<resolution>`` unless ``desc`` is set ("" = ``model.name``).
    RUN_NAME: ClassVar[str] = ""
    #: ``data.*`` keys holding paths: written absolute into the run's config, so a resume
    #: from another working directory finds the data (none: the built-in renderer's families).
    DATA_PATHS: ClassVar[tuple[str, ...]] = ()
    #: A line printed when training ends, ``{run}`` = the run directory ("" = none).
    NEXT_STEP: ClassVar[str] = ""

    def __init__(
        self,
        config: Any,
        *,
        resume: str | os.PathLike | None = None,
        metric_fn: Callable[[Any], Mapping[str, float]] | None = None,
        step_hook: Callable[[Any], None] | None = None,
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
        self.clock: Callable[[], float] = time.monotonic
        self.resumed_from: Path | None = None  # the checkpoint actually used (resume)
        self.networks: dict[str, nn.Module] = {}
        self.trainable: dict[str, nn.Module] = {}
        self.optimizers: dict[str, Optimizer] = {}
        self.gens: dict[str, torch.Generator] = {}
        self.resources = contextlib.ExitStack()

    # ================================================================== public API
    def fit(self) -> Path:
        """Train until ``kimg``/``minutes``/a signal; returns the run directory.

        Raises:
            TrainingDiverged: NaN/Inf kept coming back (``max_nan_events``).
            OSError: a checkpoint could not be written (e.g. a full disk).
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
        """Release what the run holds: the metrics file, the process group and the family's
        ``resources`` (idempotent)."""
        self.resources.close()
        if hasattr(self, "metrics"):
            self.metrics.close()
        if hasattr(self, "dist"):
            D_.cleanup_distributed(self.dist)

    # ================================================================== what a family writes
    def _build(self) -> None:
        """Open the data and set ``resolution``; build the models, optimizers, random streams
        and the pictures' fixed inputs; register ``networks``, ``trainable``, ``optimizers``
        and ``gens``. Runs on every rank with the global RNG freshly seeded (identical
        initialisation everywhere); raise ConfigError for settings the family cannot use."""
        raise NotImplementedError

    def _register_ema_networks(
        self,
        G: nn.Module,
        D: nn.Module | None = None,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        """For :meth:`_build` of a family with an EMA generator and Adam (``optim.lr`` for G,
        ``optim.d_lr`` for D, ``optim.betas``; the animator, refiner and part segmenter):
        move ``G`` (and ``D``) to the device in training mode, make ``G_ema``, ``opt_g``
        (``opt_d``) and register them as ``networks``, ``trainable`` and ``optimizers``."""
        o = self.cfg.optim
        self.G = G.to(self.device, memory_format=memory_format).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.networks = {"g": self.G, "g_ema": self.G_ema}
        self.trainable = {"G": self.G}
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=o.lr, betas=tuple(o.betas))
        self.optimizers = {"g": Optimizer(self.opt_g, o.lr)}
        if D is not None:
            self.D = D.to(self.device, memory_format=memory_format).train()
            self.networks["d"] = self.D
            self.trainable["D"] = self.D
            self.opt_d = torch.optim.Adam(self.D.parameters(), lr=o.d_lr, betas=tuple(o.betas))
            self.optimizers["d"] = Optimizer(self.opt_d, o.d_lr)

    def _update_g_ema(self) -> None:
        """End of a step of a :meth:`_register_ema_networks` family: ``G_ema`` moves toward ``G``
        with the half-life ``ema.kimg`` (0: a copy), capped early on by ``ema.rampup``."""
        cfg, e = self.cfg, self.cfg.ema
        update_ema(self.G_ema, self.G, ema_beta(cfg.batch_size, self.nimg + cfg.batch_size, e.kimg, e.rampup))

    def _batches(self) -> Iterator[tuple[Any, ...]]:
        """Batches from ``self.step`` on, each the arguments of one :meth:`train_step`.

        Default: ``(reals, labels)`` of the packed data set, this rank's share, in an order
        that is a pure function of ``(seed, step)`` (so resume is exact).
        """
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

    def train_step(self, *batch: Any) -> dict[str, Tensor]:
        """One optimisation step on a batch; returns detached statistics (``ACC_KEYS``)."""
        raise NotImplementedError

    def save_samples(self) -> Any:
        """Write this point's pictures into ``samples/`` (rank 0)."""
        raise NotImplementedError

    def _evaluate(self) -> dict[str, Any]:
        """Built-in metrics at evaluation points (rank 0), as logged; default none."""
        return {}

    def _held_out_results(
        self, res: Mapping[str, Any], summary: str, unlogged: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """For :meth:`_evaluate` of a family with held-out metrics ``res``: keep them as
        ``last_eval``, print ``summary`` and return what is logged: ``eval_<name>``, numbers
        to 6 decimals, without the names in ``unlogged``."""
        self.last_eval = res
        self._print(summary)

        def rounded(v: Any) -> Any:
            return round(v, 6) if isinstance(v, numbers.Real) and not isinstance(v, bool) else v

        return {f"eval_{k}": rounded(v) for k, v in res.items() if k not in unlogged}

    def _log_fields(self) -> dict[str, Any]:
        """Extra fields of each ``metrics.jsonl`` training record (learning rates, schedules)."""
        return {}

    def _extra_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """``(tensors, meta)`` a checkpoint holds besides what the engine saves (e.g. an image
        pool). Default: where the packed data came from and the conditioning labels."""
        meta = {
            "data": {"seed": self.cfg.seed, "next_step": self.step, "path": str(self.cfg.data.path)},
            "label_names": self.label_names,
        }
        return {}, meta

    def _load_extra_state(self, snap: Snapshot, *, counters: bool) -> None:
        """Before a snapshot is loaded: restore and check what :meth:`_extra_state` saved, and
        fill in what older snapshots lack. ``counters`` is True on resume, False on a NaN
        roll-back."""

    def _open_packed_data(self) -> None:
        """For families on packed data sets (called by their :meth:`_build`): open
        ``data.path`` (unless a ``dataset`` was given) and set ``resolution``, ``channels``,
        ``label_names`` and ``label_dims`` (the conditioning labels)."""
        cfg = self.cfg
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
        self.label_names = condition_labels(cfg, self.dataset.schema)
        self.label_dims = [self.dataset.schema[n].num_classes for n in self.label_names]

    # ================================================================== set-up
    def setup(self) -> None:
        """Build everything: process group, device, data, models, optimizers, run dir, resume."""
        cfg = self.cfg
        if self._log_option("tensorboard", False):
            require_tensorboard()  # fail before any work (and before a run directory exists)
        if not self.DISTRIBUTED and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError(f"{self.COMMAND} runs in a single process; start it without torchrun")
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

        # -- data, models, optimizers, random streams: identical initialisation on every rank
        torch.manual_seed(derive_seed(cfg.seed, 0x1417))
        self._build()

        # -- counters
        self.nan = NaNEvents(cfg.max_nan_events)
        self.best_value: float | None = None
        self.elapsed_before = 0.0  # training seconds of earlier sessions (resume)
        self.last_ckpt: Path | None = None
        self.start_snapshot: Snapshot | None = None
        self._reset_accumulators()

        # -- run directory, resume
        self._setup_run_dir()
        if self.resume_from is not None:
            ckpt = self.resumed_from
            assert ckpt is not None
            # Rank 0 verified it in _setup_run_dir; hashing it again on every rank is waste.
            snap = load_snapshot(ckpt, verify=False)
            try:
                self._restore(snap, counters=True)
            except (RuntimeError, KeyError, IndexError, TypeError) as e:
                # Intact files that do not fit this run (e.g. a model override on resume).
                msg = " ".join(str(e).split())
                raise CheckpointError(f"{ckpt}: does not fit this run's models ({msg[:300]})") from None
            self.last_ckpt = ckpt
            self._print(f"resumed from {ckpt} at step {self.step} ({self.nimg / 1000:.3f} kimg)")
        else:
            # NaN guard fallback until the first checkpoint exists.
            self.start_snapshot = self._capture(gather=False, with_models=True)
        if self.is_main:
            truncate_metrics(self.run_dir, self.step)  # drop lines of work about to be redone
        self.metrics = MetricsLog(
            self.run_dir, tensorboard=self._log_option("tensorboard", False), enabled=self.is_main
        )
        best = self._log_option("best_metric", "")
        if best and best not in self.BUILTIN_METRICS and self.metric_fn is None and self.is_main:
            builtin = f" ({', '.join(self.BUILTIN_METRICS)})" if self.BUILTIN_METRICS else ""
            warnings.warn(
                f"log.best_metric={best!r} is not a built-in metric{builtin} and no metric hook was "
                "given; no best/ checkpoint is kept",
                stacklevel=2,
            )

    def _setup_run_dir(self) -> None:
        """Rank 0 creates the run directory, or on resume picks the newest intact checkpoint
        and cleans up after interrupted writes; every rank learns both."""
        run_dir: Path | None = None
        ckpt: Path | None = None
        error: Exception | None = None
        if self.is_main:
            try:
                run_dir, ckpt = self._prepare_run_dir()
            except (CheckpointError, FileNotFoundError) as e:
                error = e
        # Rank 0's failure travels with the broadcast, so no rank waits for a run that is not coming.
        got = D_.broadcast_object(
            (str(run_dir) if run_dir else None, str(ckpt) if ckpt else None, str(error) if error else None),
            self.dist,
        )
        if error is not None:
            raise error
        if got[2] is not None:
            raise RuntimeError(f"rank 0 could not set up the run: {got[2]}")
        self.run_dir = Path(got[0])
        self.resumed_from = Path(got[1]) if got[1] else None
        self.ckpt_root = self.run_dir / "checkpoints"

    def _prepare_run_dir(self) -> tuple[Path, Path | None]:
        """(run directory, checkpoint to resume from or None); rank 0 only."""
        cfg = self.cfg
        ckpt: Path | None = None
        if self.resume_from is not None:
            # Clean up first: undoing a checkpoint swap that was cut between its two renames
            # can bring back the newest checkpoint.
            guess = _run_dir_of(self.resume_from)
            left = [
                p for d in (guess, guess / "checkpoints", guess / "samples") for p in remove_stale_temp(d)
            ]
            if left:
                names = ", ".join(p.name for p in left)
                self._print(f"removed {len(left)} leftover(s) of interrupted writes: {names}")
            # Warns about (and skips) damaged checkpoints; raises if none is intact.
            ckpt = find_intact_checkpoint(self.resume_from)
            run_dir = ckpt.parent.parent  # run/checkpoints/<ckpt>
        else:
            run_dir = allocate_run_dir(
                cfg.runs_dir, cfg.desc or f"{self.RUN_NAME or cfg.model.name}-{self.resolution}"
            )
        saved = self._saved_config()
        atomic_write_text(run_dir / "config.yaml", to_yaml(saved))
        atomic_write_json(run_dir / "config.json", saved)
        (run_dir / "samples").mkdir(exist_ok=True)
        return run_dir, ckpt

    def _saved_config(self) -> dict[str, Any]:
        """The resolved config as written into the run directory (``DATA_PATHS`` made absolute)."""
        saved = to_dict(self.cfg)
        for key in self.DATA_PATHS:
            if saved["data"][key]:
                saved["data"][key] = str(Path(saved["data"][key]).resolve())
        return saved

    # ================================================================== the loop
    def _loop(self) -> None:
        cfg = self.cfg
        if self._kimg_done():
            self._print(f"already trained to {cfg.kimg} kimg (step {self.step}); raise --kimg to continue")
            return
        from tqdm.auto import tqdm

        self._t_start = self._t_ckpt = self.clock()
        self._t_log, self._nimg_log = time.perf_counter(), self.nimg
        self._time_ckpt_agreed = False
        # The loss accumulators were set in setup (restored from the checkpoint on resume):
        # the logging window that a crash interrupted continues where it was.
        batches = self._batches()
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
        evaluates = bool(self.BUILTIN_METRICS) or self.metric_fn is not None
        try:
            while True:
                stats = self.train_step(*next(batches))
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
                scheduled = self.step % cfg.log.every_steps == 0
                if scheduled or stop:
                    # An unscheduled (stop) line does not close the window: a resumed run
                    # then logs the same scheduled lines as an uninterrupted one.
                    healthy, agreed_stop = self._log_step(reset=scheduled)
                    if not healthy:
                        batches = self._recover("losses or weights")
                        continue
                    stop = stop or agreed_stop
                # ... and before anything is written from the weights.
                due_sample = crossed(prev_nimg, self.nimg, cfg.log.sample_every_kimg)
                due_metric = evaluates and crossed(
                    prev_nimg, self.nimg, self._log_option("metric_every_kimg", 0.0)
                )
                due_ckpt = (
                    crossed(prev_nimg, self.nimg, cfg.log.checkpoint_every_kimg) or self._ckpt_time_due()
                )
                if (due_sample or due_metric or due_ckpt or stop) and not self._weights_finite():
                    batches = self._recover("weights")
                    continue
                # Checkpoint first: after a signal the process may have little time left.
                if due_ckpt or stop:
                    self.save_checkpoint()
                if due_sample or stop:
                    self.save_samples()
                final_metric = evaluates and stop is not None and not stop.startswith("signal")
                if due_metric or final_metric:
                    self.run_metrics()
                if stop:
                    self.stopped_by = stop
                    break
        finally:
            self.bar.close()
        self._final_message()

    # ================================================================== stopping
    def _kimg_done(self) -> bool:
        return self.cfg.kimg is not None and self.nimg >= self.cfg.kimg * 1000

    def _local_stop_reason(self) -> str | None:
        if self.stop.requested:
            return f"signal:{self.stop.signal_name}"
        if self.cfg.minutes is not None and self.clock() - self._t_start >= self.cfg.minutes * 60:
            return "time"
        return None

    def _local_ckpt_time_due(self) -> bool:
        every = 60.0 * self.cfg.log.checkpoint_every_minutes  # 0 = off
        return every > 0 and self.clock() - self._t_ckpt >= every

    def _ckpt_time_due(self) -> bool:
        """Whether a checkpoint is due by wall time. Under torch.distributed the ranks' clocks
        differ, so rank 0's verdict travels with the next log step's all-reduce."""
        if not self.dist.enabled:
            return self._local_ckpt_time_due()
        due, self._time_ckpt_agreed = self._time_ckpt_agreed, False
        return due

    def _final_message(self) -> None:
        reason = self.stopped_by or ""
        where = f"step {self.step} ({self.nimg / 1000:.3f} kimg)"
        ckpt = f"checkpoint: {self.last_ckpt}" if self.last_ckpt else "no checkpoint"
        resume = f"{self.COMMAND} --resume {self.run_dir}"
        if reason.startswith("signal"):
            self._print(f"stopped by {reason.split(':', 1)[1]} at {where}; {ckpt}\nresume with: {resume}")
        elif reason == "time":
            self._print(
                f"time limit ({self.cfg.minutes} min) reached at {where}; {ckpt}\nresume with: {resume}"
            )
        else:
            self._print(f"done: {where}; {ckpt}; samples in {self.run_dir / 'samples'}")
        if self.NEXT_STEP:
            self._print(self.NEXT_STEP.format(run=self.run_dir))

    # ================================================================== logging and the NaN guard
    def _reset_accumulators(self) -> None:
        self._acc = {k: torch.zeros((), device=self.device) for k in self.ACC_KEYS}
        self._acc_n = dict.fromkeys(self.ACC_KEYS, 0)

    def _accumulate(self, stats: Mapping[str, Tensor]) -> None:
        for k, v in stats.items():
            self._acc[k] += v.float()
            self._acc_n[k] += 1

    def _log_step(self, reset: bool = True) -> tuple[bool, str | None]:
        """Read the accumulated losses (the only per-interval host sync), check them, log.

        ``reset=False`` (a line written because training stops between scheduled lines)
        keeps the window open, so the next scheduled line still covers the whole interval.
        Returns ``(healthy, stop_reason)``; under torch.distributed both are agreed by all
        ranks through one small all-reduce, as is whether a checkpoint is due by wall time.
        """
        keys = list(self._acc)
        local_stop = self._local_stop_reason() if self.dist.enabled else None
        flags = [
            float(local_stop is not None and local_stop.startswith("signal")),
            float(local_stop == "time"),
            float(self.dist.enabled and self.is_main and self._local_ckpt_time_due()),
        ]
        vec = torch.stack([self._acc[k] for k in keys] + [torch.tensor(f, device=self.device) for f in flags])
        D_.all_reduce_sum(vec, self.dist)
        values = vec.tolist()
        n_ranks = self.dist.world_size
        losses = {k: values[i] / n_ranks / self._acc_n[k] for i, k in enumerate(keys) if self._acc_n[k]}
        stop = "signal:SIGTERM" if values[len(keys)] > 0 else ("time" if values[len(keys) + 1] > 0 else None)
        self._time_ckpt_agreed = values[len(keys) + 2] > 0
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
            "time_s": round(self.elapsed_before + self.clock() - self._t_start, 3),
            "img_per_s": round(rate, 2),
            **self._log_fields(),
            **{k: round(v, 6) for k, v in losses.items()},
        }
        if self.device.type == "cuda":
            record["mem_gb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 3)
        self.metrics.append(record)
        self.bar.set_postfix({k: f"{losses[k]:.3g}" for k in self.BAR_KEYS if k in losses}, refresh=False)
        if reset:
            self._reset_accumulators()
        return True, stop

    def _weights_finite(self) -> bool:
        return all_finite([p for m in self.networks.values() for p in m.parameters()])

    def _recover(self, what: str) -> Iterator[tuple[Tensor, Tensor]]:
        """Roll back to the last good checkpoint (or the start), scale the learning rates down;
        returns a new batch iterator. Raises TrainingDiverged on the ``max_nan_events``-th event.
        """
        bad = nonfinite_names(
            [(f"{name}.{n}", p) for name, m in self.trainable.items() for n, p in m.named_parameters()]
        )
        what = f"{what}{': ' + ', '.join(bad) if bad else ''}"
        bad_step = self.step
        self.metrics.append(
            {"kind": "event", "event": "nonfinite", "step": bad_step, "kimg": self.nimg / 1000, "what": what}
        )
        self.nan.record(what, bad_step)  # warns, or raises TrainingDiverged
        snap = load_snapshot(self.last_ckpt) if self.last_ckpt is not None else self.start_snapshot
        assert snap is not None
        self._restore(snap, counters=False)  # also applies the new lr scale and the log window
        self.bar.reset(total=self.bar.total)
        self.bar.update(self.nimg)
        self._print(
            f"non-finite values at step {bad_step}: restored step {self.step}, "
            f"learning rate x{self.nan.lr_scale:g}"
        )
        return self._batches()

    def _optimize(
        self, opt: torch.optim.Optimizer, loss: Tensor, module: nn.Module | None = None, scaler: Any = None
    ) -> None:
        """One step of ``opt`` on ``loss``: clear the gradients, backpropagate (through the fp16
        ``scaler`` when there is one), average ``module``'s gradients over the processes (when
        given, for the trainers that run distributed), step."""
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        if module is not None:
            D_.all_reduce_grads(module.parameters(), self.dist)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()

    def _set_lr(self, scale: float) -> None:
        for o in self.optimizers.values():
            for group in o.opt.param_groups:
                group["lr"] = o.base_lr * scale

    # ================================================================== evaluation
    def run_metrics(self) -> dict[str, Any]:
        """Built-in metrics + the metric hook (rank 0); log; keep ``checkpoints/best/``."""
        results: dict[str, Any] = {}
        if self.is_main:
            results = self._evaluate()
            if self.metric_fn is not None:
                # The hook may draw random numbers (it must not shift the training's streams)
                # and switch modules between train and eval mode (put back afterwards).
                modes = [(m, m.training) for net in self.networks.values() for m in net.modules()]
                devices = [self.device.index or 0] if self.device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices):
                    results.update({k: float(v) for k, v in dict(self.metric_fn(self)).items()})
                for m, training in modes:
                    m.training = training
        results = D_.broadcast_object(results, self.dist)
        self.metrics.append(
            {"kind": "metric", "step": self.step, "kimg": round(self.nimg / 1000, 6), **results}
        )
        name = self._log_option("best_metric", "")
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
    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/ckpt-SSSSSSSS`` (rank 0 writes; every rank must call this).

        Raises:
            OSError: the write failed (e.g. a full disk). Nothing half-written is left under a
                checkpoint's name and the previous checkpoint stays the newest; under
                torch.distributed the other ranks raise a RuntimeError instead of waiting.
        """
        snap = self._capture(gather=True, with_models=False)
        path, error = None, None
        if self.is_main:
            try:
                path = save_checkpoint(
                    self.ckpt_root, self.step, models=self.networks, tensors=snap.tensors, meta=snap.meta
                )
                prune_checkpoints(self.ckpt_root, self.cfg.log.keep_last)
            except OSError as e:
                error = e
                self._print(
                    f"could not write the checkpoint of step {self.step}: {e}; the newest complete checkpoint is "
                    f"{self.last_ckpt or '(none)'}; resume with: {self.COMMAND} --resume {self.run_dir}"
                )
        # Broadcasting the path doubles as a barrier: no rank runs ahead of the write.
        got, failed = D_.broadcast_object(
            (str(path) if path else None, str(error) if error else None), self.dist
        )
        if error is not None:
            raise error
        if failed is not None:
            raise RuntimeError(f"rank 0 could not write the checkpoint of step {self.step}: {failed}")
        self.last_ckpt = Path(got) if got else None
        self.start_snapshot = None  # the checkpoint replaces the in-memory fallback
        self._t_ckpt = self.clock()
        return self.last_ckpt

    def _capture(self, *, gather: bool, with_models: bool) -> Snapshot:
        """The training state as a :class:`Snapshot`.

        ``gather=True`` (checkpoints) collects every rank's RNG states on rank 0; an
        in-memory snapshot keeps only this rank's.
        """
        tensors: dict[str, Tensor] = {}
        meta: dict[str, Any] = {"optimizers": {}, "rng": {}}
        scalers = {}
        for name, o in self.optimizers.items():
            t, m = optimizer_state(o.opt, name)
            tensors.update(t)
            meta["optimizers"][name] = m
            if o.scaler is not None:
                scalers[name] = o.scaler.state_dict()
        if scalers:
            meta["scalers"] = scalers
        rng = capture_rng(self.gens)
        # The open logging window (loss sums and counts since the last scheduled line) is
        # state too: without it a resumed run logs different means than an uninterrupted one.
        window = (
            {f"acc/{k}": v.detach().to("cpu", copy=True) for k, v in self._acc.items()},
            dict(self._acc_n),
        )
        per_rank = D_.gather_objects((rng, window), self.dist) if gather else None
        if per_rank is None:  # in-memory snapshot, or a non-zero rank's share of a checkpoint
            per_rank = {self.dist.rank: (rng, window)}
        else:
            per_rank = dict(enumerate(per_rank))
        meta["log_window"] = {}
        for r, ((t, m), (acc, counts)) in per_rank.items():
            prefix = "" if r == 0 else f"rank{r}/"
            tensors.update({prefix + k: v for k, v in t.items()})
            tensors.update({prefix + k: v for k, v in acc.items()})
            meta["rng"][str(r)] = m
            meta["log_window"][str(r)] = counts
        extra_tensors, extra_meta = self._extra_state()
        tensors.update(extra_tensors)
        meta.update(
            {
                "step": self.step,
                "nimg": self.nimg,
                "kimg": self.nimg / 1000,
                "nan_events": self.nan.count,
                "lr_scale": self.nan.lr_scale,
                "best_metric": self._log_option("best_metric", ""),
                "best_value": self.best_value,
                "elapsed_s": self.elapsed_before
                + (self.clock() - self._t_start if hasattr(self, "_t_start") else 0),
                "world_size": self.dist.world_size,
                "batch_size": self.cfg.batch_size,
                **extra_meta,
                "config": to_dict(self.cfg),
            }
        )
        models: dict[str, dict[str, Tensor]] = {}
        if with_models:
            for prefix, m in self.networks.items():
                models[prefix] = {k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()}
        return Snapshot(models=models, tensors=tensors, meta=meta)

    def _restore(self, snap: Snapshot, *, counters: bool) -> None:
        """Load a snapshot into the live objects.

        ``counters=True`` (resume) also restores the NaN-event count, best metric and elapsed
        time; a NaN roll-back keeps the current ones.
        """
        meta = snap.meta
        self._load_extra_state(snap, counters=counters)
        for prefix, m in self.networks.items():
            if prefix not in snap.models:
                raise ValueError(
                    f"checkpoint {meta.get('path', '(memory)')} has no {prefix}_model.safetensors"
                )
            m.load_state_dict(snap.models[prefix], strict=True)
        for name, o in self.optimizers.items():
            restore_optimizer(o.opt, name, snap.tensors, meta["optimizers"][name])
            if o.scaler is not None and name in meta.get("scalers", {}):
                o.scaler.load_state_dict(meta["scalers"][name])
        self.step = int(meta["step"])
        self.nimg = int(meta.get("nimg", self.step * self.cfg.batch_size))
        rank = self.dist.rank
        prefix = "" if rank == 0 else f"rank{rank}/"
        self._reset_accumulators()
        window = meta.get("log_window", {}).get(str(rank))  # absent in older checkpoints
        if window is not None:
            for k in self.ACC_KEYS:
                if f"{prefix}acc/{k}" in snap.tensors:
                    self._acc[k] = snap.tensors[f"{prefix}acc/{k}"].to(self.device, torch.float32).clone()
                    self._acc_n[k] = int(window.get(k, 0))
        rng_meta = meta.get("rng", {}).get(str(rank))
        if rng_meta is not None:
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
    def _log_option(self, name: str, default: Any) -> Any:
        """A ``log.*`` setting that not every family's config has (evaluation, TensorBoard)."""
        return getattr(self.cfg.log, name, default)

    def _chunks(self, *tensors: Tensor | None, chunk: int = 32) -> Iterator[list[Tensor | None]]:
        """Fixed inputs in chunks of ``chunk``, on the device (None stays None)."""
        n = next(t for t in tensors if t is not None).shape[0]
        for s in range(0, n, chunk):
            yield [t[s : s + chunk].to(self.device) if t is not None else None for t in tensors]

    def _print(self, msg: str) -> None:
        if not self.is_main:
            return
        bar = getattr(self, "bar", None)
        if bar is not None and not bar.disable:
            bar.write(msg)
        else:
            print(msg, flush=True)
