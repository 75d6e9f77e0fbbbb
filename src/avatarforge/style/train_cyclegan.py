"""Unpaired image-to-image translation (CycleGAN) between two packed data sets.

``CycleGANTrainer(config).fit() -> run_dir`` trains two generators (``G_ab``: A -> B,
``G_ba``: B -> A) and two PatchGAN discriminators (``D_a``, ``D_b``). One step, top to
bottom (:meth:`CycleGANTrainer.train_step`)::

    G step (D frozen):  fake_b = G_ab(a), rec_a = G_ba(fake_b); fake_a = G_ba(b), rec_b = G_ab(fake_a)
                        loss_G = gan(D_b(fake_b)) + gan(D_a(fake_a))
                               + cycle * (|rec_a - a| + |rec_b - b|)
                               + identity * cycle * (|G_ab(b) - b| + |G_ba(a) - a|)
    D step:             loss_D = 0.5 * [gan_real(D_a(a)) + gan_fake(D_a(pool_a(fake_a)))] + (same for D_b)

with LSGAN (default, as in the paper) or hinge losses, L1 cycle weight 10, identity weight
0.5 x cycle, and a 50-image history pool of fakes for D (Shrivastava et al. 2017).

Everything around the step is the shared trainer machinery
(:class:`avatarforge.train.engine.Trainer`, see docs/training.md): the run directory ``runs/NNNNN-cyclegan-<res>/`` (:mod:`avatarforge.train.rundir`),
safetensors + JSON checkpoints holding the four networks, both Adam states, every RNG and
the two image pools (:mod:`avatarforge.train.checkpoint`), exact resume, the SIGINT/SIGTERM
guard and the NaN/Inf roll-back (:mod:`avatarforge.train.guard`), ``metrics.jsonl``
(:mod:`avatarforge.train.metrics_log`) and sample grids of fixed images A -> B -> A and
B -> A -> B. Every random number (flips, pool decisions) comes from a checkpointed
``torch.Generator`` and the data order is a pure function of ``(seed, step)``, so on CPU a
stopped and resumed run is bit-identical to an uninterrupted one.

The configuration is its own dataclass tree (:class:`CycleGANConfig`) built with the
generic machinery of :mod:`avatarforge.config` (``key=value`` overrides, typed errors).
RGBA data sets are composited onto white for training (the networks are RGB);
:func:`translate_image` puts the input's alpha back on the output.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avatarforge.config import ConfigError, RunSettings, check_all
from avatarforge.device import autocast
from avatarforge.imageio import make_grid, save_image
from avatarforge.models.cyclegan import CycleGANGenerator, PatchDiscriminator
from avatarforge.train.checkpoint import Snapshot
from avatarforge.train.engine import Optimizer, Trainer
from avatarforge.train.families import register_family
from avatarforge.train.family_config import (
    AdamConfig,
    CheckpointLog,
    SampleLog,
    config_builder,
    family_checks,
)
from avatarforge.train.guard import TrainingDiverged
from avatarforge.train.schedule import derive_seed, make_generator, seeded_init

__all__ = [
    "CycleDataConfig",
    "CycleGANConfig",
    "CycleGANTrainer",
    "CycleLogConfig",
    "CycleLossConfig",
    "CycleModelConfig",
    "CycleOptimConfig",
    "ImagePool",
    "TrainingDiverged",
    "build_cyclegan_config",
    "load_translator",
    "translate_image",
]

_MODEL_PREFIXES = ("g_ab", "g_ba", "d_a", "d_b")
DIRECTIONS = ("a2b", "b2a")


# =============================================================================== config
@dataclass
class CycleModelConfig:
    """Network sizes (see :mod:`avatarforge.models.cyclegan`)."""

    ngf: int = 32  # generator base width (paper: 64)
    n_blocks: int = 6  # residual blocks (paper: 9 at 256 px)
    n_downsampling: int = 2
    upsample: Literal["nearest", "transpose"] = "nearest"
    ndf: int = 32  # discriminator base width (paper: 64)
    d_layers: int = 3  # PatchGAN stride-2 layers (3: 70x70 patches)
    norm: Literal["instance", "none"] = "instance"


@dataclass
class CycleDataConfig:
    """The two packed data sets."""

    a: str = ""  # domain A (e.g. procedural avatars)
    b: str = ""  # domain B (e.g. real anime faces from `avatarforge data prepare`)
    resolution: int | None = None  # training size; None = data set A's (B is resized to it)
    flip: bool = True  # random horizontal flips (seeded, part of the checkpointed state)


@dataclass
class CycleOptimConfig(AdamConfig):
    """Adam for both generators (one optimizer) and both discriminators (another)."""

    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    decay_start_kimg: float | None = None  # linear decay of the lr to 0 from here to `kimg`; null = constant


@dataclass
class CycleLossConfig:
    """Loss kinds and weights (paper values by default)."""

    gan: Literal["lsgan", "hinge"] = "lsgan"
    cycle: float = 10.0  # L1 cycle-consistency weight (lambda)
    identity: float = 0.5  # identity weight as a fraction of `cycle` (0 = off)
    pool_size: int = 50  # history of generated images shown to D; 0 = off


@dataclass
class CycleLogConfig(CheckpointLog, SampleLog):
    """Logging, samples and checkpoints."""

    sample_every_kimg: float = 2.0  # sample grid; 0 = only at the end
    num_samples: int = 8  # images per direction in a grid


@dataclass
class _CycleSections:
    model: CycleModelConfig = field(default_factory=CycleModelConfig)
    data: CycleDataConfig = field(default_factory=CycleDataConfig)
    optim: CycleOptimConfig = field(default_factory=CycleOptimConfig)
    loss: CycleLossConfig = field(default_factory=CycleLossConfig)
    log: CycleLogConfig = field(default_factory=CycleLogConfig)


@dataclass
class CycleGANConfig(RunSettings, _CycleSections):
    """Everything ``avatarforge style train`` needs (``key=value`` overrides address these)."""

    batch_size: int = 4  # images of each domain per step (paper: 1)
    kimg: float | None = 20.0  # stop after this many thousand images per domain; null = no limit
    desc: str = ""  # run directory suffix; default cyclegan-<resolution>

    def validate(self) -> CycleGANConfig:
        """Check ranges the types cannot express; returns self. Raises ConfigError."""
        o, lo = self.optim, self.loss
        checks = [
            *family_checks(self, "CycleGAN"),
            (
                o.decay_start_kimg is None or (self.kimg is not None and 0 <= o.decay_start_kimg < self.kimg),
                "optim.decay_start_kimg needs kimg set and must be in [0, kimg)",
            ),
            (lo.cycle >= 0 and lo.identity >= 0, "loss.cycle and loss.identity must be >= 0"),
            (lo.pool_size >= 0, "loss.pool_size must be >= 0"),
            (self.model.ngf >= 1 and self.model.ndf >= 1, "model.ngf and model.ndf must be >= 1"),
            (self.model.n_blocks >= 0 and self.model.n_downsampling >= 0, "model sizes must be >= 0"),
            (self.model.d_layers >= 1, "model.d_layers must be >= 1"),
            (self.data.resolution is None or self.data.resolution >= 8, "data.resolution must be >= 8"),
        ]
        check_all(checks)
        return self


#: Defaults < ``config_file`` (YAML, e.g. a run's ``config.yaml``) < ``cli`` dict < ``key=value``.
build_cyclegan_config = config_builder(CycleGANConfig, "build_cyclegan_config")


# =============================================================================== image pool
class ImagePool:
    """History of generated images (Shrivastava et al. 2017), deterministic given its generator.

    While not full, every query image is stored and returned. When full, each image is,
    with probability 1/2, swapped with a random stored one (the stored image is returned),
    else returned as is. D therefore sees a mix of current and older fakes, which damps
    oscillations between G and D.
    """

    def __init__(
        self,
        size: int,
        generator: torch.Generator,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        self.size = int(size)
        self.generator = generator  # a CPU generator: decisions are made on the host
        # Output layout is fixed, so D's kernels (and their rounding) never depend on whether
        # the stored images came from this session or from a checkpoint.
        self.memory_format = memory_format
        self.images: list[Tensor] = []

    def query(self, images: Tensor) -> Tensor:
        """(B, C, H, W) detached fakes -> (B, C, H, W) images for D."""
        if self.size == 0:
            return images
        out = []
        for img in images.detach():
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
                continue
            u = float(torch.rand((), generator=self.generator))
            if u < 0.5:
                j = int(torch.randint(self.size, (), generator=self.generator))
                out.append(self.images[j].clone())
                self.images[j] = img.clone()
            else:
                out.append(img)
        return torch.stack(out).contiguous(memory_format=self.memory_format)

    def state(self) -> Tensor | None:
        """(N, C, H, W) stored images (CPU), or None when empty."""
        if not self.images:
            return None
        return torch.stack([t.detach().to("cpu", copy=True) for t in self.images])

    def load(self, images: Tensor | None, device: torch.device) -> None:
        """Replace the stored images with ``images`` (N, C, H, W) (or empty for None)."""
        self.images = [] if images is None else [t.to(device, copy=True) for t in images]


# =============================================================================== losses
def gan_d_loss(real_logits: Tensor, fake_logits: Tensor, kind: str) -> Tensor:
    """Discriminator loss, halved as in CycleGAN (D learns at half G's rate)."""
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    if kind == "lsgan":
        return 0.5 * ((real_logits - 1).square().mean() + fake_logits.square().mean())
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def gan_g_loss(fake_logits: Tensor, kind: str) -> Tensor:
    """Generator adversarial loss."""
    fake_logits = fake_logits.float()
    if kind == "lsgan":
        return (fake_logits - 1).square().mean()
    return -fake_logits.mean()


# =============================================================================== the trainer
StepHook = Callable[["CycleGANTrainer"], None]


class CycleGANTrainer(Trainer):
    """Train CycleGAN between ``config.data.a`` and ``config.data.b``.

    Args:
        config: the resolved configuration (:func:`build_cyclegan_config`).
        resume: a run directory or checkpoint to continue (training continues in that run).
        step_hook: ``step_hook(trainer)`` after every step (tests inject faults with it).
        metric_fn: see :class:`~avatarforge.train.engine.Trainer` (CycleGAN has no built-in metrics).

    Attributes useful to hooks: ``G_ab``, ``G_ba``, ``D_a``, ``D_b``, ``step``, ``nimg``,
    ``run_dir``, ``cfg``, ``stop`` (``trainer.stop.request()`` stops after the step).

    The loop, checkpoints, resume, signals and the NaN guard are
    :class:`~avatarforge.train.engine.Trainer`'s (one process; no evaluation); this class
    holds the two domains, the four networks, the step, the image pools and the grids.
    """

    ACC_KEYS = ("loss_g", "loss_d", "adv_g", "cycle", "identity")
    BAR_KEYS = ("loss_g", "loss_d", "cycle")
    COMMAND = "avatarforge style train"
    RUN_NAME = "cyclegan"
    DATA_PATHS = ("a", "b")
    NEXT_STEP = "apply with: avatarforge style apply {run} IMAGES... --out DIR"

    # ------------------------------------------------------------------ set-up
    def _build(self) -> None:
        """The two domains, the four networks, both optimizers, random streams, the image
        pools and the grids' fixed images."""
        from avatarforge.data.dataset import PackedDataset

        cfg = self.cfg
        for key in ("a", "b"):
            if not getattr(cfg.data, key):
                raise ConfigError(f"data.{key} is empty: give two packed data sets (style train A B)")
        # RGB networks: RGBA sets are composited onto white, as anime art usually is.
        self.ds_a = PackedDataset(cfg.data.a, channels=3)
        self.ds_b = PackedDataset(cfg.data.b, channels=3)
        self.dataset = self.ds_a
        self.resolution = int(cfg.data.resolution or self.ds_a.size)
        self.channels, self.label_names, self.label_dims = 3, [], []
        multiple = 2**cfg.model.n_downsampling
        if self.resolution % multiple:
            raise ConfigError(
                f"the resolution ({self.resolution}) must be a multiple of {multiple} (2^model.n_downsampling)"
            )
        for name, ds in (("A", self.ds_a), ("B", self.ds_b)):
            if len(ds) < cfg.batch_size:
                raise ConfigError(
                    f"data set {name} ({ds.path}) has {len(ds)} images, fewer than batch_size={cfg.batch_size}"
                )

        self.memory_format = torch.channels_last if cfg.perf.channels_last else torch.contiguous_format
        # Models seeded on a forked global RNG: nothing in the step draws from the global
        # RNG, but user hooks might.
        m = cfg.model
        with seeded_init(cfg.seed, 0xC7C1E):
            g_kw = {
                "channels": 3,
                "ngf": m.ngf,
                "n_blocks": m.n_blocks,
                "n_downsampling": m.n_downsampling,
                "norm": m.norm,
                "upsample": m.upsample,
            }
            d_kw = {"channels": 3, "ndf": m.ndf, "n_layers": m.d_layers, "norm": m.norm}
            nets = [
                CycleGANGenerator(**g_kw),
                CycleGANGenerator(**g_kw),
                PatchDiscriminator(**d_kw),
                PatchDiscriminator(**d_kw),
            ]
        for net in nets:
            net.to(self.device, memory_format=self.memory_format).train()
        self.G_ab, self.G_ba, self.D_a, self.D_b = nets
        self.networks = dict(zip(_MODEL_PREFIXES, nets))
        self.trainable = self.networks
        betas = (float(cfg.optim.betas[0]), float(cfg.optim.betas[1]))
        g_params = [*self.G_ab.parameters(), *self.G_ba.parameters()]
        d_params = [*self.D_a.parameters(), *self.D_b.parameters()]
        self.opt_g = torch.optim.Adam(g_params, lr=cfg.optim.lr, betas=betas)
        self.opt_d = torch.optim.Adam(d_params, lr=cfg.optim.lr, betas=betas)
        self.optimizers = {"g": Optimizer(self.opt_g, cfg.optim.lr), "d": Optimizer(self.opt_d, cfg.optim.lr)}

        # every random stream a checkpointed generator
        self.gens = {
            "augment": make_generator(self.device, cfg.seed, 1),
            "pool": make_generator(torch.device("cpu"), cfg.seed, 2),
        }
        self.pool_a = ImagePool(cfg.loss.pool_size, self.gens["pool"], self.memory_format)
        self.pool_b = ImagePool(cfg.loss.pool_size, self.gens["pool"], self.memory_format)
        # The grids' fixed inputs (every grid starts with its real images: no reals.png).
        self._fixed = {"a": self._first_images(self.ds_a), "b": self._first_images(self.ds_b)}

    # ------------------------------------------------------------------ data
    def _prepare(self, x: Tensor) -> Tensor:
        """A batch from a data set -> the training resolution, memory format, device."""
        x = x.to(self.device, non_blocking=True)
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(
                x,
                size=(self.resolution, self.resolution),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        return x.contiguous(memory_format=self.memory_format)

    def _batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        """Pairs of (A batch, B batch) from ``self.step`` on; each domain has its own order."""
        from avatarforge.data.dataset import infinite_batches

        cfg = self.cfg
        it_a = infinite_batches(
            self.ds_a, cfg.batch_size, seed=derive_seed(cfg.seed, 0xA), start_step=self.step
        )
        it_b = infinite_batches(
            self.ds_b, cfg.batch_size, seed=derive_seed(cfg.seed, 0xB), start_step=self.step
        )
        for (a, _), (b, _) in zip(it_a, it_b):
            yield self._prepare(a), self._prepare(b)

    def _flip(self, x: Tensor) -> Tensor:
        if not self.cfg.data.flip:
            return x
        flip = torch.rand(x.shape[0], generator=self.gens["augment"], device=x.device) < 0.5
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)

    def _first_images(self, ds: Any) -> Tensor:
        """The first ``log.num_samples`` images of a data set (the grids' fixed inputs)."""
        n = min(self.cfg.log.num_samples, len(ds))
        return self._prepare(torch.stack([ds[i][0] for i in range(n)]))  # (n, 3, H, W) in [-1, 1]

    # ------------------------------------------------------------------ one step
    def train_step(self, real_a: Tensor, real_b: Tensor) -> dict[str, Tensor]:
        """One generator step (both G) and one discriminator step (both D). Returns detached losses."""
        cfg = self.cfg
        kind = cfg.loss.gan
        lam_c = cfg.loss.cycle
        lam_i = cfg.loss.identity * cfg.loss.cycle
        self._schedule_lr()  # the decay schedule moves every step
        a, b = self._flip(real_a), self._flip(real_b)

        # -- generators: D frozen (its weight gradients would be thrown away)
        self.D_a.requires_grad_(False)
        self.D_b.requires_grad_(False)
        with self._autocast():
            fake_b = self.G_ab(a)
            fake_a = self.G_ba(b)
            rec_a = self.G_ba(fake_b)
            rec_b = self.G_ab(fake_a)
            adv = gan_g_loss(self.D_b(fake_b), kind) + gan_g_loss(self.D_a(fake_a), kind)
            cycle = F.l1_loss(rec_a.float(), a.float()) + F.l1_loss(rec_b.float(), b.float())
            loss_g = adv + lam_c * cycle
            stats = {"adv_g": adv.detach(), "cycle": cycle.detach()}
            if lam_i > 0:
                idt = F.l1_loss(self.G_ab(b).float(), b.float()) + F.l1_loss(self.G_ba(a).float(), a.float())
                loss_g = loss_g + lam_i * idt
                stats["identity"] = idt.detach()
        stats["loss_g"] = loss_g.detach()
        self._optimize(self.opt_g, loss_g)
        self.D_a.requires_grad_(True)
        self.D_b.requires_grad_(True)

        # -- discriminators: reals vs. (pooled) detached fakes
        pooled_a = self.pool_a.query(fake_a.detach())
        pooled_b = self.pool_b.query(fake_b.detach())
        with self._autocast():
            loss_da = gan_d_loss(self.D_a(a), self.D_a(pooled_a), kind)
            loss_db = gan_d_loss(self.D_b(b), self.D_b(pooled_b), kind)
            loss_d = loss_da + loss_db
        stats["loss_d"] = loss_d.detach()
        self._optimize(self.opt_d, loss_d)
        return stats

    def _autocast(self) -> Any:
        return autocast(self.device, self.amp)

    def _lr(self, scale: float) -> float:
        """The learning rate now: base x ``scale`` (the NaN-event scale) x linear decay."""
        o = self.cfg.optim
        lr = o.lr * scale
        if o.decay_start_kimg is not None and self.cfg.kimg is not None:
            kimg = self.nimg / 1000
            span = self.cfg.kimg - o.decay_start_kimg
            lr *= min(1.0, max(0.0, 1.0 - (kimg - o.decay_start_kimg) / span))
        return lr

    def _schedule_lr(self) -> None:
        lr = self._lr(self.nan.lr_scale)
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr

    def _log_fields(self) -> dict[str, Any]:
        return {"lr": self.opt_g.param_groups[0]["lr"]}

    # ------------------------------------------------------------------ samples
    @torch.no_grad()
    def translate_fixed(self) -> Tensor:
        """(6n, 3, H, W) rows: a, G_ab(a), G_ba(G_ab(a)), b, G_ba(b), G_ab(G_ba(b)) (CPU, [-1, 1])."""
        a, b = self._fixed["a"], self._fixed["b"]
        fake_b, fake_a = self.G_ab(a), self.G_ba(b)
        rec_a, rec_b = self.G_ba(fake_b), self.G_ab(fake_a)
        return torch.cat([t.float().cpu() for t in (a, fake_b, rec_a, b, fake_a, rec_b)])

    def save_samples(self) -> Path:
        """Write ``samples/cycle_KKKKKK.png`` (KKKKKK = kimg): A -> B -> A rows, then B -> A -> B."""
        assert self.run_dir is not None
        rows = self.translate_fixed()
        n = min(self._fixed["a"].shape[0], self._fixed["b"].shape[0])
        if self._fixed["a"].shape[0] != self._fixed["b"].shape[0]:  # keep whole rows
            na = self._fixed["a"].shape[0]
            nb = self._fixed["b"].shape[0]
            rows = torch.cat(
                [rows[i * na : i * na + n] for i in range(3)]
                + [rows[3 * na + i * nb : 3 * na + i * nb + n] for i in range(3)]
            )
        grid = make_grid(rows, nrow=n)
        return save_image(self.run_dir / "samples" / f"cycle_{self.nimg // 1000:06d}.png", grid)

    # ------------------------------------------------------------------ checkpoints: the pools
    def _extra_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        pools = {name: pool.state() for name, pool in (("a", self.pool_a), ("b", self.pool_b))}
        tensors = {f"pool/{name}": s.contiguous() for name, s in pools.items() if s is not None}
        meta = {
            "pools": {name: 0 if s is None else int(s.shape[0]) for name, s in pools.items()},
            "resolution": self.resolution,
            "data": {"a": str(self.cfg.data.a), "b": str(self.cfg.data.b), "seed": self.cfg.seed},
        }
        return tensors, meta

    def _load_extra_state(self, snap: Snapshot, *, counters: bool) -> None:
        meta = snap.meta
        if counters and int(meta.get("resolution", self.resolution)) != self.resolution:
            raise ConfigError(
                f"the checkpoint was trained at {meta.get('resolution')} px, this config says {self.resolution}"
            )
        for name, pool in (("a", self.pool_a), ("b", self.pool_b)):
            pool.load(snap.tensors.get(f"pool/{name}"), self.device)


# CycleGAN is a family of the training engine: avatarforge.train.train(config) trains it.
register_family("cyclegan", CycleGANConfig, lambda: CycleGANTrainer)


# =============================================================================== applying a model
def load_translator(
    path: str | os.PathLike, direction: str = "a2b", device: str | torch.device = "cpu"
) -> CycleGANGenerator:
    """The generator for ``direction`` (``"a2b"`` = G_ab, ``"b2a"`` = G_ba) of a run or checkpoint.

    ``path`` may be a run directory (its latest checkpoint), its ``checkpoints`` directory or
    a ``ckpt-*`` directory. Returned in eval mode without gradients. Nothing is unpickled.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    from avatarforge.runs import load_network

    model = load_network(path, which="g_ab" if direction == "a2b" else "g_ba", device=device)
    if not isinstance(model, CycleGANGenerator):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a CycleGAN generator")
    return model


def checkpoint_resolution(path: str | os.PathLike) -> int | None:
    """The training resolution recorded in a run's latest checkpoint (None if unknown)."""
    from avatarforge.runs import read_training_state

    meta = read_training_state(path)
    res = meta.get("resolution")
    return int(res) if res else None


@torch.no_grad()
def translate_image(
    generator: CycleGANGenerator,
    image: np.ndarray,
    size: int | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Translate one (H, W, 3|4) uint8 image; returns the same shape with the input's alpha.

    RGBA input is composited onto white (what the network was trained on), translated at a
    working size whose longer side is ``size`` (default: the image's own; sides rounded to
    the generator's stride), resized back, and the input's alpha is put back exactly
    (fully transparent pixels keep their RGB).
    """
    from avatarforge.style.classical import as_image_array, merge_alpha, split_alpha
    from avatarforge.style.neural import _resize, _working_size

    image = as_image_array(image)
    rgb8, a8 = split_alpha(image)
    rgb = torch.from_numpy(np.array(rgb8, copy=True)).permute(2, 0, 1)[None].float() / 255.0
    if a8 is not None:
        a = torch.from_numpy(np.array(a8, copy=True))[None, None].float() / 255.0
        rgb = rgb * a + (1.0 - a)  # straight alpha over white
    h, w = rgb.shape[-2:]
    target = _working_size(h, w, size, generator.multiple)
    x = _resize(rgb, target).clamp(0, 1).mul(2).sub(1).to(device)
    y = generator(x).float().cpu()
    y = _resize(y, (h, w)).clamp(-1, 1)
    u8 = y.add(1).mul(127.5).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    return merge_alpha(u8, image)
