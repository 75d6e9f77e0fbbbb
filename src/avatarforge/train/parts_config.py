"""The part segmenter's configuration: :class:`PartsConfig` and :func:`build_parts_config`.

Its own dataclass tree (``avatarforge train src/avatarforge/configs/parts-64px.yaml
key=value ...`` addresses it), built with the generic machinery of :mod:`avatarforge.config`.
Importing it does not import torch; it registers the ``parts`` training family
(:func:`avatarforge.train.train` picks :class:`~avatarforge.train.parts.PartsTrainer`).
"""

from __future__ import annotations

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
    AdamConfig,
    EMAConfig,
    MetricLogConfig,
    config_builder,
    family_checks,
)
from avatarforge.train.refiner_config import RefinerDegradeConfig

__all__ = [
    "PARTS_PRESETS",
    "PartsConfig",
    "PartsDataConfig",
    "PartsDegradeConfig",
    "PartsEMAConfig",
    "PartsLogConfig",
    "PartsLossConfig",
    "PartsModelConfig",
    "PartsOptimConfig",
    "build_parts_config",
    "parts_preset",
]

#: Shipped part-segmenter configs (in ``avatarforge/configs``).
PARTS_PRESETS = ("parts-64px.yaml",)

_N_PARTS = 11  # len(PART_NAMES); not imported, so that importing a config stays light


@dataclass
class PartsModelConfig:
    """Network sizes (see :class:`~avatarforge.models.parts.PartSegmenter`)."""

    name: str = "parts"  # the registry name (only "parts"): how a config file names the family
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])  # channels per U-Net level
    out_scale: int = 2  # 1: part logits at the input size; 2: at twice it (finer mouth and eyes)


@dataclass
class PartsDegradeConfig(RefinerDegradeConfig):
    """GAN-like damage to the inputs, as the refiner's (:class:`~avatarforge.data.refine_pairs.Degradation`),
    with stronger colour shifts: the segmenter must not key on exact colours."""

    color: float = 0.05


@dataclass
class PartsDataConfig:
    """Where training avatars come from (:mod:`avatarforge.data.part_pairs`)."""

    size: int = 64  # input size (the generator's); part maps are size * model.out_scale
    pool: int = 4000  # random identities rendered for training (cached under cache_dir)
    heldout: int = 256  # held-out identities for evaluation and samples
    cache_dir: str = ""  # cache root; "" = $AVATARFORGE_CACHE or ~/.cache/avatarforge
    workers: int = 2  # render processes for the pools; 0 = in this process
    flip: bool = True
    shift: int = 2  # largest random shift in input pixels
    degrade: PartsDegradeConfig = field(default_factory=PartsDegradeConfig)


@dataclass
class PartsLossConfig:
    # Cross-entropy weight per part (PART_NAMES order); [] = PART_CLASS_WEIGHTS (about the
    # square root of the inverse pixel frequency: the eyes, brows and mouth count).
    class_weights: list[float] = field(default_factory=list)


@dataclass
class PartsOptimConfig(AdamConfig):
    lr: float = 3e-3


@dataclass
class PartsEMAConfig(EMAConfig):
    kimg: float = 1.0  # half-life in thousands of avatars; 0 = no averaging (g_ema = g)
    rampup: float | None = 0.05


@dataclass
class PartsLogConfig(MetricLogConfig):
    every_steps: int = 25
    sample_every_kimg: float = 0.0  # (input, predicted, true) grid; 0 = only at the end
    checkpoint_every_kimg: float = 10.0


@dataclass
class _PartsSections:
    model: PartsModelConfig = field(default_factory=PartsModelConfig)
    data: PartsDataConfig = field(default_factory=PartsDataConfig)
    loss: PartsLossConfig = field(default_factory=PartsLossConfig)
    optim: PartsOptimConfig = field(default_factory=PartsOptimConfig)
    ema: PartsEMAConfig = field(default_factory=PartsEMAConfig)
    log: PartsLogConfig = field(default_factory=PartsLogConfig)


@dataclass
class PartsConfig(RunSettings, _PartsSections):
    """Everything a part-segmenter run needs (``key=value`` overrides address these)."""

    batch_size: int = 16
    kimg: float | None = None
    minutes: float | None = 1.0
    desc: str = ""  # run directory suffix; default parts-<size>

    def validate(self) -> PartsConfig:
        """Check ranges the types cannot express; returns self. Raises ConfigError naming the field."""
        d, m, lo, lg = self.data, self.model, self.loss, self.log
        if m.name != "parts":
            raise ConfigError(
                f"model.name: {m.name!r} is not the part segmenter; a part-segmenter config has model.name=parts"
            )
        if m.out_scale not in (1, 2):
            raise ConfigError(f"model.out_scale: {m.out_scale} is not supported; use 1 or 2")
        if len(m.widths) < 2 or min(m.widths) < 1:
            raise ConfigError(
                f"model.widths: {list(m.widths)} needs at least 2 positive widths, one per U-Net level "
                "(e.g. model.widths=[16,32,64])"
            )
        mult = 2 ** len(m.widths)
        if d.size % mult or not 16 <= d.size <= 256:
            fit = max(mult, d.size // mult * mult)
            raise ConfigError(
                f"data.size: {d.size} must be from 16 to 256 and a multiple of {mult} "
                f"(2 ** len(model.widths)); use data.size={fit}"
            )
        if lo.class_weights and (len(lo.class_weights) != _N_PARTS or min(lo.class_weights) < 0):
            raise ConfigError(
                f"loss.class_weights: needs {_N_PARTS} weights >= 0, one per part (PART_NAMES order), "
                f"got {len(lo.class_weights)}; or [] for the default"
            )
        checks = [
            *family_checks(self, "part-segmenter"),
            (d.pool >= 1, f"data.pool: {d.pool} must be >= 1 (identities rendered for training, e.g. 4000)"),
            (d.heldout >= 1, f"data.heldout: {d.heldout} must be >= 1 (held-out identities, e.g. 256)"),
            (d.workers >= 0, "data.workers must be >= 0 (0 = render in this process)"),
            (0 <= d.shift <= d.size // 8, f"data.shift must be from 0 to {d.size // 8} (data.size / 8)"),
            (lg.sample_every_kimg >= 0 and lg.metric_every_kimg >= 0, "log.*_every_kimg must be >= 0"),
        ]
        check_all(checks + d.degrade.checks())
        return self


def parts_preset(name: str = "parts-64px.yaml") -> Path:
    """The path of a shipped part-segmenter config (:data:`PARTS_PRESETS`)."""
    return shipped_config(name, PARTS_PRESETS, "part-segmenter")


#: Defaults < ``config_file`` (YAML, e.g. a run's ``config.yaml``) < ``cli`` dict < ``key=value``.
build_parts_config = config_builder(PartsConfig, "build_parts_config")


def _trainer() -> type:
    from avatarforge.train.parts import PartsTrainer

    return PartsTrainer


register_family("parts", PartsConfig, _trainer)
