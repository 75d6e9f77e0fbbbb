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

Everything around the step is the shared machinery of :class:`~avatarforge.train.engine.Trainer`
(the same as the GAN loop's), built from the generic modules: run directory (:mod:`.rundir`), checkpoints (:mod:`.checkpoint`: one
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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from avatarforge.config import ConfigError, TrainConfig
from avatarforge.device import autocast
from avatarforge.imageio import from_uint8, make_grid, save_image
from avatarforge.train import distributed as D_
from avatarforge.train.checkpoint import Snapshot
from avatarforge.train.ema import ema_beta, update_ema
from avatarforge.train.engine import Optimizer, Trainer
from avatarforge.train.guard import TrainingDiverged
from avatarforge.train.schedule import derive_seed, make_generator

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
class VAETrainer(Trainer):
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

    The loop, checkpoints, resume, signals and the NaN guard are
    :class:`~avatarforge.train.engine.Trainer`'s; this class holds the model, the step and
    the pictures.
    """

    ACC_KEYS = ("loss", "recon", "kl", "mse")
    BAR_KEYS = ("recon", "kl")
    BUILTIN_METRICS = EVAL_METRICS
    DISTRIBUTED = True
    DATA_PATHS = ("path",)

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
    def _build(self) -> None:
        """Data, the model (and its EMA copy), the optimizer, random streams and the grids' inputs."""
        cfg = self.cfg
        if cfg.data.augment.strip():
            raise ConfigError(
                "data.augment is the GANs' discriminator augmentation; the VAE trainer does not use it "
                '(set data.augment="")'
            )
        self._open_packed_data()
        schema = self.dataset.schema
        label_values = [list(schema[n].values) for n in self.label_names]
        vae = build_vae(cfg, self.resolution, self.channels, self.label_dims, self.label_names, label_values)
        self.vae = vae.to(self.device).train()
        if self.channels_last:
            self.vae.to(memory_format=torch.channels_last)
        D_.broadcast_module(self.vae, self.dist)  # identical initialisation on every rank
        self.vae_ema = copy.deepcopy(self.vae).eval().requires_grad_(False) if cfg.ema.enabled else None
        torch.manual_seed(derive_seed(cfg.seed, self.dist.rank, 0x610B))  # anything on the global RNG

        # optim.g_lr is the VAE's lr (scaled down after NaN events)
        betas = (float(cfg.optim.betas[0]), float(cfg.optim.betas[1]))
        self.opt = torch.optim.Adam(self.vae.parameters(), lr=cfg.optim.g_lr, betas=betas, eps=cfg.optim.eps)
        scaler = torch.amp.GradScaler("cuda") if self.amp is torch.float16 else None
        self.opt_state = Optimizer(self.opt, cfg.optim.g_lr, scaler)
        self.optimizers = {"vae": self.opt_state}
        self.networks = {"vae": self.vae}
        if self.vae_ema is not None:
            self.networks["vae_ema"] = self.vae_ema
        self.trainable = {"vae": self.vae}

        # randomness: one generator per stream, per rank, all checkpointed
        r = self.dist.rank
        self.gens = {
            "reparam": make_generator(self.device, cfg.seed, r, 1),
            "label_dropout": make_generator(self.device, cfg.seed, r, 2),
        }
        self._fixed = self._fixed_inputs()

    def _load_extra_state(self, snap: Snapshot, *, counters: bool) -> None:
        if "vae_ema" not in snap.models and self.vae_ema is not None and "vae" in snap.models:
            # Resuming a run trained without EMA with ema.enabled=true: start the EMA from the weights.
            snap.models["vae_ema"] = snap.models["vae"]

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

        self._optimize(self.opt, loss, self.vae, self.opt_state.scaler)
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

    # ================================================================== logging
    def _log_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"lr": self.opt.param_groups[0]["lr"], "kl_weight": self.current_kl_weight()}
        if self.vae_ema is not None:
            fields["ema_beta"] = self.current_ema_beta()
        return fields

    def _extra_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors, meta = super()._extra_state()
        return tensors, {**meta, "kl_weight": self.current_kl_weight()}

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
        their reconstructions), ``samples/fakes_KKKKKK.png`` (prior samples) and once per run
        ``samples/reals.png`` (the originals); rank 0."""
        if not self.is_main:
            return []
        k = self.nimg // 1000
        cols = self._grid_cols
        orig, rec = self._fixed["x"], self.reconstruct_fixed()
        samples = self.run_dir / "samples"
        if not (samples / "reals.png").exists():
            save_image(samples / "reals.png", make_grid(orig, nrow=cols, alpha_backdrop="checker"))
        pairs = torch.cat(
            [torch.cat([orig[s : s + cols], rec[s : s + cols]]) for s in range(0, len(orig), cols)]
        )
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

    def _evaluate(self) -> dict[str, Any]:
        return self.evaluate()
