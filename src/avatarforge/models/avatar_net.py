"""The avatar attribute network: a small multi-head CNN that recognises the procedural
renderer's attributes; its embedding is the ``avatar`` feature vector (FID_avatar, KID,
precision/recall) and its heads give attribute accuracy. Trained and cached by
:mod:`avatarforge.eval.avatar_net`.

Network (64x64 RGB in ``[-1, 1]``; other sizes are resized with antialiasing)::

    Conv 4x4/2  3 -> w          (B, w, 32, 32)    } each Conv + BatchNorm + ReLU
    Conv 3x3/2  w -> 2w         (B, 2w, 16, 16)
    Conv 3x3/2  2w -> 4w        (B, 4w, 8, 8)
    Conv 3x3/2  4w -> 8w        (B, 8w, 4, 4)
    flatten -> Linear -> ReLU   (B, embed_dim)     <- the feature vector (x feature_scale)
    Linear                      (B, sum(classes) + continuous)   one head per attribute

The trunk ends in a flattened 4x4 map rather than global pooling because the attributes
live at known places (the iris is a few pixels at fixed positions); a pooled trunk learns
the eye colour several times more slowly. Measured on 2 cores, four strided convolutions
learned the attributes as well as a deeper trunk with stride-1 layers at 60% of the cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avatarforge.models.base import ConfigModule
from avatarforge.models.registry import register_model

__all__ = ["AvatarAttributeNet"]


def _conv(cin: int, cout: int, k: int, stride: int) -> list[nn.Module]:
    pad = 1
    return [nn.Conv2d(cin, cout, k, stride, pad, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _schema_defaults() -> tuple[list[str], list[list[str]], list[str]]:
    from avatarforge.data.procedural import SCHEMA

    cats = SCHEMA.categorical
    return [f.name for f in cats], [list(f.values) for f in cats], [f.name for f in SCHEMA.continuous]


@register_model("avatar_attributes", role="extractor")
class AvatarAttributeNet(ConfigModule):
    """Multi-head attribute CNN (see the module docstring for the layout).

    Args:
        size: input side.
        width: first-layer channels.
        embed_dim: embedding (feature) size.
        categorical_names, categorical_values: the classified attributes and their classes
            (default: every categorical attribute of the procedural schema).
        continuous_names: the regressed attributes (default: the expression controls).
    """

    def __init__(
        self,
        size: int = 64,
        width: int = 32,
        embed_dim: int = 256,
        categorical_names: Sequence[str] | None = None,
        categorical_values: Sequence[Sequence[str]] | None = None,
        continuous_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        d_names, d_values, d_cont = _schema_defaults()
        self.categorical_names = list(categorical_names) if categorical_names is not None else d_names
        self.categorical_values = (
            [list(v) for v in categorical_values] if categorical_values is not None else d_values
        )
        self.continuous_names = list(continuous_names) if continuous_names is not None else d_cont
        if len(self.categorical_names) != len(self.categorical_values):
            raise ValueError("categorical_values must list the classes of each categorical attribute")
        if size % 16:
            raise ValueError(f"size must be a multiple of 16, got {size}")
        self.size = size
        self.embed_dim = embed_dim
        w = width
        self.trunk = nn.Sequential(
            *_conv(3, w, 4, 2),  # (B, w, S/2, S/2)
            *_conv(w, 2 * w, 3, 2),  # (B, 2w, S/4, S/4)
            *_conv(2 * w, 4 * w, 3, 2),  # (B, 4w, S/8, S/8)
            *_conv(4 * w, 8 * w, 3, 2),  # (B, 8w, S/16, S/16)
            nn.Flatten(),
        )
        side = size // 16
        self.embed = nn.Sequential(nn.Linear(8 * w * side * side, embed_dim), nn.ReLU(inplace=True))
        self.num_classes = [len(v) for v in self.categorical_values]
        self.heads = nn.Linear(embed_dim, sum(self.num_classes) + len(self.continuous_names))
        # Set after training to 1 / RMS of the embedding on held-out avatars, so features
        # have unit RMS: the cubic KID kernel (x.y/D + 1)^3 then sees values of order 1, as
        # with Inception features, instead of thousands.
        self.register_buffer("feature_scale", torch.ones(()))

    def prepare(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [-1, 1] -> ``(B, 3, size, size)`` (antialiased resize if needed)."""
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True
            )
        return x

    def embedding(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [-1, 1] -> ``(B, embed_dim)``: the feature vector."""
        return self.embed(self.trunk(self.prepare(x)))

    def features(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [-1, 1] -> ``(B, embed_dim)`` scaled embedding (the FID features)."""
        return self.embedding(x) * self.feature_scale

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, 3, H, W)`` in [-1, 1] -> ``(embedding (B, E), head outputs (B, sum K + C))``."""
        e = self.embedding(x)
        return e, self.heads(e)

    def split_heads(self, out: Tensor) -> tuple[list[Tensor], Tensor]:
        """Head outputs -> ``([logits (B, K_i) per categorical attribute], continuous (B, C))``."""
        logits = list(torch.split(out[:, : sum(self.num_classes)], self.num_classes, dim=1))
        return logits, out[:, sum(self.num_classes) :]
