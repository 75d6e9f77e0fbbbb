"""The refiner's configuration: :class:`RefinerConfig` and :func:`build_refiner_config`.

Its own dataclass tree (``avatarforge train src/avatarforge/configs/refiner-512px.yaml
key=value ...`` addresses it), built with the generic machinery of :mod:`avatarforge.config`.
Importing it does not import torch; it registers the ``refiner`` training family
(:func:`avatarforge.train.train` picks :class:`~avatarforge.train.refiner.RefinerTrainer`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from avatarforge.config import (
    ConfigError,
    RunSettings,
    check_all,
    shipped_config,
)
from avatarforge.train.families import register_family
from avatarforge.train.family_config import (
    EMAConfig,
    GanAdamConfig,
    MetricLogConfig,
    config_builder,
    family_checks,
)

__all__ = [
    "REFINER_PRESETS",
    "RefinerConfig",
    "RefinerDataConfig",
    "RefinerDegradeConfig",
    "RefinerEMAConfig",
    "RefinerLogConfig",
    "RefinerLossConfig",
    "RefinerModelConfig",
    "RefinerOptimConfig",
    "build_refiner_config",
    "refiner_preset",
]

#: Shipped refiner configs (in ``avatarforge/configs``): ``refiner-512px.yaml`` (built-in
#: renderer, 64 -> 512) and ``refiner-96px.yaml`` (a packed 96-px data set, 48 -> 96).
REFINER_PRESETS = ("refiner-512px.yaml", "refiner-96px.yaml")


@dataclass
class RefinerModelConfig:
    """Network sizes (see :class:`~avatarforge.models.refiner.Refiner`)."""

    name: str = "refiner"  # the registry name (only "refiner"): how a config file names the family
    width: int = 48  # channels of the residual blocks at the input resolution
    blocks: int = 6
    up_widths: list[int] = field(default_factory=list)  # per x2 stage; [] = halve width each stage
    part_head: bool = True  # predict the renderer's part map (built-in data only)
    head: str = "residual"  # or "select" (a learned choice among input neighbours; see docs/refiner.md)
    d_width: int = 32  # discriminator
    d_layers: int = 3


@dataclass
class RefinerDegradeConfig:
    """What the low-resolution inputs go through (:class:`~avatarforge.data.refine_pairs.Degradation`)."""

    enabled: bool = True
    blur_prob: float = 0.5
    blur: float = 0.7
    noise_prob: float = 0.5
    noise: float = 0.03
    blocky_prob: float = 0.3
    blocky: float = 0.03
    color: float = 0.03
    specks_prob: float = 0.5
    specks: float = 0.02
    alpha_dip: float = 0.05

    def checks(self) -> list[tuple[bool, str]]:
        """Validation checks (``check_all`` items) of these fields."""
        probs = (self.blur_prob, self.noise_prob, self.blocky_prob, self.specks_prob)
        amounts = (self.blur, self.noise, self.blocky, self.color, self.specks, self.alpha_dip)
        return [
            (all(0 <= p <= 1 for p in probs), "data.degrade.*_prob must be in [0, 1]"),
            (min(amounts) >= 0 and self.alpha_dip < 1, "data.degrade amounts must be >= 0 (alpha_dip < 1)"),
        ]


@dataclass
class RefinerDataConfig:
    """Where pairs come from (:mod:`avatarforge.data.refine_pairs`)."""

    source: str = ""  # "" = the built-in renderer; else a packed data set directory
    size: int = 512  # target (output) size of a whole avatar
    scale: int = 8  # 2, 4 or 8: the input is size / scale
    crop: int = 128  # target crop side used in training (a multiple of scale, <= size)
    pool: int = 256  # built-in: identities rendered at `size` (cached under cache_dir)
    heldout: int = (
        8  # held-out avatars for samples and evaluation (built-in: rendered; packed: the last ones)
    )
    cache_dir: str = ""  # cache root; "" = $AVATARFORGE_CACHE or ~/.cache/avatarforge
    workers: int = 0  # render processes for the pool; 0 = in this process
    flip: bool = True
    degrade: RefinerDegradeConfig = field(default_factory=RefinerDegradeConfig)


@dataclass
class RefinerLossConfig:
    """Loss weights ([-1, 1] units; images compared in premultiplied alpha)."""

    l1_weight: float = 1.0  # L1 on premultiplied RGBA
    straight_weight: float = 0.1  # L1 on straight colour (keeps the colour under faint alpha sane)
    edge_weight: float = 1.0  # L1 between the image gradients (finite differences) of output and target
    part_weight: float = 0.1  # cross-entropy of the part map (built-in data)
    adv_weight: float = 0.01  # hinge adversarial weight after the ramp; 0 = no discriminator
    adv_start_kimg: float = 2.0
    adv_ramp_kimg: float = 2.0


@dataclass
class RefinerOptimConfig(GanAdamConfig):
    lr: float = 1e-3
    d_lr: float = 4e-4


@dataclass
class RefinerEMAConfig(EMAConfig):
    kimg: float = 0.5  # half-life in thousands of crops


@dataclass
class RefinerLogConfig(MetricLogConfig):
    every_steps: int = 25
    sample_every_kimg: float = 2.0  # (input upscaled, refined, target) grid; 0 = only at the end
    num_samples: int = 3
    checkpoint_every_kimg: float = 5.0


@dataclass
class _RefinerSections:
    model: RefinerModelConfig = field(default_factory=RefinerModelConfig)
    data: RefinerDataConfig = field(default_factory=RefinerDataConfig)
    loss: RefinerLossConfig = field(default_factory=RefinerLossConfig)
    optim: RefinerOptimConfig = field(default_factory=RefinerOptimConfig)
    ema: RefinerEMAConfig = field(default_factory=RefinerEMAConfig)
    log: RefinerLogConfig = field(default_factory=RefinerLogConfig)


@dataclass
class RefinerConfig(RunSettings, _RefinerSections):
    """Everything a refiner run needs (``key=value`` overrides address these)."""

    batch_size: int = 8
    kimg: float | None = None
    minutes: float | None = 3.0
    desc: str = ""  # run directory suffix; default refiner-<size>

    def validate(self) -> RefinerConfig:
        """Check ranges the types cannot express; returns self. Raises ConfigError naming the field."""
        d, m, lo = self.data, self.model, self.loss
        if m.name != "refiner":
            raise ConfigError(
                f"model.name: {m.name!r} is not a refiner; a refiner config has model.name=refiner"
            )
        if m.head not in ("select", "residual"):
            raise ConfigError(f"model.head: {m.head!r} is not a refiner head; use select or residual")
        if d.scale not in (2, 4, 8):
            raise ConfigError(f"data.scale: {d.scale} is not supported; use 2, 4 or 8")
        if d.size % d.scale:
            low, high = d.size // d.scale * d.scale, (d.size // d.scale + 1) * d.scale
            raise ConfigError(
                f"data.size: {d.size} is not a multiple of data.scale={d.scale}; use {low or high} or {high}"
            )
        if d.crop % d.scale or not d.scale * 4 <= d.crop <= d.size:
            raise ConfigError(
                f"data.crop: {d.crop} must be a multiple of data.scale={d.scale} from {d.scale * 4} to "
                f"data.size={d.size} (e.g. data.crop={min(d.size, d.scale * 16)})"
            )
        stages = int(math.log2(d.scale))
        checks = [
            *family_checks(self, "refiner"),
            (
                32 <= d.size <= 512,
                f"data.size: {d.size} is out of range; the target size must be 32 to 512",
            ),
            (d.pool >= 1 and d.heldout >= 1, "data.pool and data.heldout must be >= 1"),
            (d.workers >= 0, "data.workers must be >= 0"),
            (
                not m.up_widths or (len(m.up_widths) == stages and min(m.up_widths) >= 1),
                f"model.up_widths: needs {stages} positive widths for data.scale={d.scale} (or [] for the default)",
            ),
            (
                m.width >= 1 and m.blocks >= 0 and m.d_width >= 1 and m.d_layers >= 1,
                "model sizes must be >= 1",
            ),
            (
                min(lo.l1_weight, lo.straight_weight, lo.edge_weight, lo.part_weight, lo.adv_weight) >= 0,
                "loss weights must be >= 0",
            ),
            (
                lo.adv_start_kimg >= 0 and lo.adv_ramp_kimg >= 0,
                "loss.adv_start_kimg/adv_ramp_kimg must be >= 0",
            ),
        ]
        check_all(checks + d.degrade.checks())
        return self


def refiner_preset(name: str = "refiner-512px.yaml") -> Path:
    """The path of a shipped refiner config (:data:`REFINER_PRESETS`)."""
    return shipped_config(name, REFINER_PRESETS, "refiner")


#: Defaults < ``config_file`` (YAML, e.g. a run's ``config.yaml``) < ``cli`` dict < ``key=value``.
build_refiner_config = config_builder(RefinerConfig, "build_refiner_config")


def _trainer() -> type:
    from avatarforge.train.refiner import RefinerTrainer

    return RefinerTrainer


register_family("refiner", RefinerConfig, _trainer)
