"""The GAN training loop: :class:`GANTrainer` for dcgan, cgan, infogan and stylegan.

One step, top to bottom (:meth:`GANTrainer.train_step`)::

    fakes:   fakes = G(z), once per step, graph kept for the G step
    D step:  loss_D = d_loss(D(aug(reals)), D(aug(fakes.detach())))
             (+ lazy R1 on reals every r1_interval steps, + InfoGAN's MI term for the Q head)
    G step:  D (just updated) frozen; loss_G = g_loss(D(aug(fakes))) (+ InfoGAN's MI term for G)
    EMA:     G_ema <- lerp(G, G_ema, beta)

Everything around the step is the shared machinery of :class:`~avatarforge.train.engine.Trainer`,
built from generic sibling modules: the run directory
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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from avatarforge.config import ConfigError, TrainConfig
from avatarforge.device import autocast
from avatarforge.imageio import make_grid, save_image
from avatarforge.models.dcgan import reconstruction_target
from avatarforge.train import distributed as D_
from avatarforge.train.ema import ema_beta, update_ema
from avatarforge.train.engine import Optimizer, Trainer
from avatarforge.train.guard import TrainingDiverged
from avatarforge.train.losses import class_loss, d_loss, g_loss, info_loss, r1_penalty, r1_weight
from avatarforge.train.schedule import derive_seed, make_generator

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

    D is ``model.name``'s discriminator, or ``model.discriminator``'s when that is set (a
    registry short name: user input never names a class or a module path).

    ``label_dims`` is passed to models that take it (required when non-empty); an InfoGAN
    discriminator gets ``code_dims=G.code_dims`` unless ``d_kwargs`` sets it.
    """
    from avatarforge.models.registry import get_model_class

    try:
        g_cls = get_model_class(cfg.model.name, "generator")
    except KeyError as e:
        raise ConfigError(f"model.name: {e.args[0]}") from None
    d_name = cfg.model.discriminator or cfg.model.name
    try:
        d_cls = get_model_class(d_name, "discriminator")
    except KeyError as e:
        where = "model.discriminator" if cfg.model.discriminator else "model.name"
        raise ConfigError(f"{where}: {e.args[0]}") from None
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


# --------------------------------------------------------------------------- the trainer
class GANTrainer(Trainer):
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

    The loop, checkpoints, resume, signals and the NaN guard are
    :class:`~avatarforge.train.engine.Trainer`'s; this class holds the models, the step and
    the sample grids.
    """

    ACC_KEYS = ("loss_g", "loss_d", "r1", "info", "d_recon", "class_d", "class_g")
    BAR_KEYS = ("loss_g", "loss_d")
    DISTRIBUTED = True
    DATA_PATHS = ("path",)

    # ================================================================== set-up
    def _build(self) -> None:
        """Data, models, optimizers, random streams, augmentation and the grids' inputs."""
        cfg = self.cfg
        self._open_packed_data()
        # -- models: identical initialisation on every rank (the engine seeded the global RNG;
        # broadcast to be sure)
        G, Dn = build_gan(cfg, self.resolution, self.channels, self.label_dims)
        self.G = G.to(self.device).train()
        self.D = Dn.to(self.device).train()
        if self.channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        D_.broadcast_module(self.G, self.dist)
        D_.broadcast_module(self.D, self.dist)
        if cfg.loss.d_recon > 0 and getattr(self.D, "recon", None) is None:
            raise ConfigError(
                f"loss.d_recon={cfg.loss.d_recon} needs a discriminator with a reconstruction "
                f"decoder: set model.d_kwargs.recon_channels (e.g. 128) on the dcgan discriminator "
                f"(model.discriminator=dcgan for stylegan), or loss.d_recon=0"
            )
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        torch.manual_seed(derive_seed(cfg.seed, self.dist.rank, 0x610B))  # anything on the global RNG
        self.code_dims = dict(getattr(self.G, "code_dims", None) or {"categorical": [], "continuous": 0})
        self.has_codes = bool(
            sum(self.code_dims.get("categorical", [])) + self.code_dims.get("continuous", 0)
        )
        self.class_loss = cfg.loss.class_weight > 0
        if self.class_loss and (
            getattr(self.D, "proj", None) is None or self.has_codes or not self.label_dims
        ):
            raise ConfigError(
                f"loss.class_weight={cfg.loss.class_weight} needs a conditional discriminator with a "
                f"projection head and no InfoGAN codes (the cgan model with labels); set loss.class_weight=0"
            )
        unknown = sorted(set(cfg.loss.class_label_weights) - set(self.label_names))
        if unknown:
            raise ConfigError(
                f"loss.class_label_weights: {', '.join(unknown)} is not a conditioning label "
                f"(data.condition_on gives {', '.join(self.label_names) or 'none'})"
            )
        self.class_label_weights = [float(cfg.loss.class_label_weights.get(n, 1.0)) for n in self.label_names]
        fwd = inspect.signature(self.G.forward).parameters
        self._g_rng_kwargs = [k for k in ("mixing_generator", "noise_generator") if k in fwd]

        # -- optimizers (lr scaled down after NaN events, see _set_lr)
        betas = (float(cfg.optim.betas[0]), float(cfg.optim.betas[1]))
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.optim.g_lr, betas=betas, eps=cfg.optim.eps)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.optim.d_lr, betas=betas, eps=cfg.optim.eps)
        fp16 = self.amp is torch.float16
        self.scaler_g = torch.amp.GradScaler("cuda") if fp16 else None
        self.scaler_d = torch.amp.GradScaler("cuda") if fp16 else None
        self.optimizers = {
            "g": Optimizer(self.opt_g, cfg.optim.g_lr, self.scaler_g),
            "d": Optimizer(self.opt_d, cfg.optim.d_lr, self.scaler_d),
        }
        self.networks = dict(zip(_MODEL_PREFIXES, (self.G, self.G_ema, self.D)))
        self.trainable = {"G": self.G, "D": self.D}

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
        self._fixed = self._fixed_inputs()

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
            real_logits, recon_err, real_classes = self._discriminate_reals(reals_in, y)
            loss_d = d_loss(real_logits, fake_logits, cfg.loss.kind)
            stats["loss_d"] = loss_d.detach()
            if recon_err is not None:
                loss_d = loss_d + cfg.loss.d_recon * recon_err
                stats["d_recon"] = recon_err.detach()
            if real_classes is not None:
                class_d = class_loss(real_classes, y, self.class_label_weights)
                loss_d = loss_d + cfg.loss.class_weight * class_d
                stats["class_d"] = class_d.detach()
            if self.has_codes:
                mi_d = info_loss(q, codes, self.code_dims)
                loss_d = loss_d + cfg.loss.info_lambda * mi_d
        if do_r1:
            r1 = r1_penalty(reals_in, real_logits)
            loss_d = loss_d + r1 * r1_weight(cfg.loss.r1_gamma, cfg.loss.r1_interval)
            stats["r1"] = r1.detach()
        self._optimize(self.opt_d, loss_d, Dn, self.scaler_d)

        # -- generator: through the updated D, which is frozen (its weight gradients would
        # be thrown away)
        Dn.requires_grad_(False)
        with self._autocast():
            fake_logits, extra = self._discriminate(
                fakes, y, with_q=self.has_codes, with_classes=self.class_loss
            )
            loss_g = g_loss(fake_logits, cfg.loss.kind)
            stats["loss_g"] = loss_g.detach()
            if self.class_loss:
                class_g = class_loss(extra, y, self.class_label_weights)
                loss_g = loss_g + cfg.loss.class_weight * class_g
                stats["class_g"] = class_g.detach()
            if self.has_codes:
                mi_g = info_loss(extra, codes, self.code_dims)
                loss_g = loss_g + cfg.loss.info_lambda * mi_g
                stats["info"] = mi_g.detach()
        self._optimize(self.opt_g, loss_g, G, self.scaler_g)
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

    def _augment(self, images: Tensor) -> Tensor:
        """DiffAugment (when configured), applied alike to reals and fakes before D."""
        if self.augment is None:
            return images
        return self.augment(images, generator=self.gens["augment"])

    def _discriminate_reals(
        self, images: Tensor, y: Tensor | None
    ) -> tuple[Tensor, Tensor | None, list[Tensor] | None]:
        """``D(aug(reals))``; with ``loss.d_recon`` the mean squared error of D's 32 px
        reconstruction of what it saw, with ``loss.class_weight`` the projection's class
        scores (each else None)."""
        images = self._augment(images)
        want_recon = self.cfg.loss.d_recon > 0
        if not want_recon and not self.class_loss:
            return self.D(images, y), None, None
        out = list(self.D(images, y, return_recon=want_recon, return_classes=self.class_loss))
        logits = out.pop(0)
        recon_err = None
        if want_recon:
            recon = out.pop(0)
            recon_err = (recon.float() - reconstruction_target(images.detach())).square().mean()
        return logits, recon_err, (out.pop(0) if self.class_loss else None)

    def _discriminate(
        self, images: Tensor, y: Tensor | None, with_q: bool = False, with_classes: bool = False
    ) -> tuple[Tensor, Any]:
        """``D(aug(images))`` -> ``(logits, extra)``: the Q head's outputs with ``with_q``, the
        projection's class scores with ``with_classes`` (never both: see ``_build``), else None."""
        images = self._augment(images)
        if with_q:
            out = self.D(images, y, return_q=True)
            return out[0], out
        if with_classes:
            return self.D(images, y, return_classes=True)
        return self.D(images, y), None

    # ================================================================== logging and checkpoints
    def _log_fields(self) -> dict[str, Any]:
        return {
            "lr_g": self.opt_g.param_groups[0]["lr"],
            "lr_d": self.opt_d.param_groups[0]["lr"],
            "ema_beta": self.current_ema_beta(),
        }

    def _extra_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors, meta = super()._extra_state()
        return tensors, {
            **meta,
            # The conditioning labels' class names travel with the checkpoint, so attribute
            # requests by name work after the data set is moved or deleted.
            "label_schema": [self.dataset.schema[n].to_json() for n in self.label_names],
            "augment": self.cfg.data.augment,
        }

    # ================================================================== samples and metrics
    def _fixed_inputs(self) -> dict[str, Tensor | None]:
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
        """Write ``samples/fakes_KKKKKK.png`` from the EMA generator, and ``samples/reals.png``
        (the first training images) once per run; rank 0."""
        if not self.is_main:
            return None
        samples = self.run_dir / "samples"
        if not (samples / "reals.png").exists():
            n = min(self.cfg.log.num_samples, len(self.dataset))
            reals = torch.stack([self.dataset[i][0] for i in range(n)])
            save_image(
                samples / "reals.png", make_grid(reals, nrow=self._grid_cols, alpha_backdrop="checker")
            )
        images = self.generate_fixed()
        grid = make_grid(images, nrow=self._grid_cols, alpha_backdrop="checker")
        return save_image(samples / f"fakes_{self.nimg // 1000:06d}.png", grid)
