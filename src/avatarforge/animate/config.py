"""The animator's configuration: :class:`AnimatorConfig` and :func:`build_animator_config`.

Its own dataclass tree (``avatarforge animate train``'s ``key=value`` overrides address it),
built with the generic machinery of :mod:`avatarforge.config` (YAML files, overrides, typed
errors). Importing it does not import torch; it registers the ``animator`` training family
(:func:`avatarforge.train.train` picks :class:`~avatarforge.animate.trainer.AnimatorTrainer`
for an :class:`AnimatorConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from avatarforge.config import RunSettings, check_all
from avatarforge.train.families import register_family
from avatarforge.train.family_config import (
    CheckpointLog,
    EMAConfig,
    GanAdamConfig,
    MetricLog,
    config_builder,
    family_checks,
)

__all__ = [
    "AnimatorConfig",
    "AnimatorDataConfig",
    "AnimatorEMAConfig",
    "AnimatorLogConfig",
    "AnimatorLossConfig",
    "AnimatorModelConfig",
    "AnimatorOptimConfig",
    "build_animator_config",
]


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
class AnimatorOptimConfig(GanAdamConfig):
    """Adam for G and D."""

    lr: float = 2e-3
    d_lr: float = 1e-3


@dataclass
class AnimatorEMAConfig(EMAConfig):
    """EMA of the generator weights (what samples, evaluation and export use)."""

    kimg: float = 2.0  # half-life in thousands of pairs


@dataclass
class _AnimatorLogHead(MetricLog):
    eval_identities: int = 12  # held-out identities scored by each evaluation (<= data.heldout_identities)


@dataclass
class AnimatorLogConfig(CheckpointLog, _AnimatorLogHead):
    """Logging, samples, evaluation and checkpoints."""

    checkpoint_every_kimg: float = 20.0  # 0 = only at the end (and on signals)


@dataclass
class _AnimatorSections:
    model: AnimatorModelConfig = field(default_factory=AnimatorModelConfig)
    data: AnimatorDataConfig = field(default_factory=AnimatorDataConfig)
    loss: AnimatorLossConfig = field(default_factory=AnimatorLossConfig)
    optim: AnimatorOptimConfig = field(default_factory=AnimatorOptimConfig)
    ema: AnimatorEMAConfig = field(default_factory=AnimatorEMAConfig)
    log: AnimatorLogConfig = field(default_factory=AnimatorLogConfig)


@dataclass
class AnimatorConfig(RunSettings, _AnimatorSections):
    """Everything ``avatarforge animate train`` needs (``key=value`` overrides address these)."""

    batch_size: int = 16
    kimg: float | None = 200.0  # stop after this many thousand pairs; null = no limit
    desc: str = ""  # run directory suffix; default animator-<size>

    def validate(self) -> AnimatorConfig:
        """Check ranges the types cannot express; returns self. Raises ConfigError."""
        d, lo, lg = self.data, self.loss, self.log
        checks = [
            *family_checks(self, "animator"),
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
            (min(self.model.widths) >= 1 and self.model.ctrl_hidden >= 1, "model widths must be >= 1"),
            (self.model.max_flow > 0, "model.max_flow must be > 0"),
            (lg.eval_identities >= 1, "log.eval_identities must be >= 1"),
        ]
        check_all(checks)
        return self


#: Defaults < ``config_file`` (YAML, e.g. a run's ``config.yaml``) < ``cli`` dict < ``key=value``.
build_animator_config = config_builder(AnimatorConfig, "build_animator_config")


def _trainer() -> type:
    from avatarforge.animate.trainer import AnimatorTrainer

    return AnimatorTrainer


# The animator is a family of the training engine: avatarforge.train.train(config) trains it.
register_family("animator", AnimatorConfig, _trainer)
