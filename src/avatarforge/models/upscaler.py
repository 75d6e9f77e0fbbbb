"""The learned upscaler: a small sub-pixel CNN (ESPCN-like) on premultiplied RGBA.

Used by the ``upscale`` post-processing op (:mod:`avatarforge.postprocess.resample`), which
also trains it (:func:`~avatarforge.postprocess.resample.train_sr`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avatarforge.models.base import ConfigModule
from avatarforge.models.registry import register_model

__all__ = ["UPSCALE_FACTORS", "SRNet"]

#: The factors one network (and the ``upscale`` op) supports.
UPSCALE_FACTORS = (2, 3, 4)


@register_model("espcn", role="upscaler")
class SRNet(ConfigModule):
    """ESPCN-style super-resolution (Shi et al. 2016) on premultiplied RGBA in [0, 1].

    Three convolutions at low resolution, then a pixel shuffle to ``scale`` x the size; the
    network output is added to a bicubic upscale, so it only learns the missing detail and
    starts (last layer near zero) as plain bicubic.

    Args:
        scale: upscaling factor (2, 3 or 4).
        channels: image channels (4: premultiplied RGBA; opaque images get alpha 1).
        features: width of the first layer (the second has half).
    """

    def __init__(self, scale: int = 2, channels: int = 4, features: int = 32) -> None:
        super().__init__()
        if scale not in UPSCALE_FACTORS:
            raise ValueError(f"scale must be one of {UPSCALE_FACTORS}, got {scale}")
        self.scale = int(scale)
        half = max(features // 2, 4)
        # Replicate padding: zero padding would teach the net a dark frame at the borders.
        self.body = nn.Sequential(
            nn.Conv2d(channels, features, 5, padding=2, padding_mode="replicate"),
            nn.Tanh(),
            nn.Conv2d(features, half, 3, padding=1, padding_mode="replicate"),
            nn.Tanh(),
            nn.Conv2d(half, channels * scale * scale, 3, padding=1, padding_mode="replicate"),
        )
        self.shuffle = nn.PixelShuffle(scale)
        last = self.body[-1]
        nn.init.normal_(last.weight, std=1e-3)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) premultiplied in [0, 1] -> (B, C, H*scale, W*scale) (not clamped)."""
        base = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return base + self.shuffle(self.body(x))
