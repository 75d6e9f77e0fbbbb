"""Class-conditional GAN: conditional-BN generator + projection discriminator.

Follows "cGANs with Projection Discriminator" (Miyato & Koyama 2018) on the DCGAN
backbone:

* Generator: the DCGAN generator with every BatchNorm made *conditional*: BN without its
  own affine, followed by a per-sample gain and shift looked up from the labels
  (``gain = 1 + sum_i gamma_i[y_i]``, ``shift = sum_i beta_i[y_i]``). Labels thereby steer
  every resolution, not only the input as in a plain concatenation.
* Discriminator: the DCGAN discriminator with a projection head,
  ``logit = conv4x4(h) + sum_i <embed_i(y_i), sum_pool(h)>`` (see
  :class:`avatarforge.models.layers.ProjectionHead`).

Several categorical labels are supported (``label_dims``); each has an extra "unknown"
class at index ``num_classes`` (the data set's NaN).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from avatarforge.models import gan_api
from avatarforge.models.base import ConfigModule
from avatarforge.models.dcgan import DCGANDiscriminator, generator_widths, init_weights_
from avatarforge.models.layers import LabelEmbedding
from avatarforge.models.registry import register_model

__all__ = ["CGANDiscriminator", "CGANGenerator", "ConditionalBatchNorm2d"]


def _require_labels(label_dims: Sequence[int]) -> list[int]:
    dims = gan_api.normalize_label_dims(label_dims)
    if not dims:
        raise ValueError("cgan is class-conditional: pass label_dims (classes per label), e.g. [10]")
    return dims


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without affine, then a per-sample affine supplied by the caller.

    ``forward(x (B, C, H, W), gain (B, C), shift (B, C)) -> (B, C, H, W)``.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)

    def forward(self, x: Tensor, gain: Tensor, shift: Tensor) -> Tensor:
        B, C = gain.shape
        # One fused kernel; the (B, C, 1, 1) operands broadcast, so x's memory format is kept.
        return torch.addcmul(shift.view(B, C, 1, 1), self.bn(x), gain.view(B, C, 1, 1))


@register_model("cgan", role="generator")
class CGANGenerator(gan_api.GeneratorMixin, ConfigModule):
    """Class-conditional DCGAN generator with conditional BatchNorm.

    Args:
        resolution: output side, one of 32, 64, 128, 256.
        channels: 3 (RGB) or 4 (RGBA).
        z_dim: latent size.
        label_dims: classes per conditioning label; required (non-empty).
        base_channels: width of the last hidden layer; doubles toward 4x4.
        max_channels: cap on any layer's width.
    """

    def __init__(
        self,
        resolution: int = 64,
        channels: int = 3,
        z_dim: int = 100,
        label_dims: Sequence[int] = (),
        base_channels: int = 64,
        max_channels: int = 512,
    ) -> None:
        super().__init__()
        self._init_header(resolution, channels, z_dim, _require_labels(label_dims), None)
        widths = generator_widths(resolution, base_channels, max_channels)
        self.widths = widths
        # Same layers as DCGAN, with the BN affine moved into the label lookup below.
        self.convs = nn.ModuleList(
            [nn.ConvTranspose2d(z_dim, widths[0], 4, 1, 0, bias=False)]  # (B, C0, 4, 4)
            + [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False) for a, b in itertools.pairwise(widths)]
        )
        self.norms = nn.ModuleList(ConditionalBatchNorm2d(c) for c in widths)
        self.to_rgb = nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False)  # (B, C, H, W)
        self.act = nn.ReLU(inplace=True)
        # One lookup yields the (gain, shift) of every CBN layer: a single embedding call per
        # label per forward instead of one per layer. Small N(0, 0.02) init = the DCGAN BN
        # init (gain ~ N(1, 0.02)), but already label dependent.
        self.affine = LabelEmbedding(self.label_dims, 2 * sum(widths), reduce="sum", init_std=0.02)
        self.apply(init_weights_)

    def forward(
        self,
        z: Tensor,
        labels: Tensor | None = None,
        codes: Tensor | None = None,
        truncation_psi: float = 1.0,
    ) -> Tensor:
        """``(B, z_dim)`` + ``(B, L)`` labels -> ``(B, C, H, W)`` in [-1, 1]."""
        if codes is not None:
            raise ValueError("CGANGenerator takes no InfoGAN codes")
        labels = gan_api.check_labels(labels, self.label_dims, z.shape[0])
        # (B, 2 * sum(widths)) -> per layer (B, C_l) gain deltas then (B, C_l) shifts.
        gains, shifts = self.affine(labels).split([sum(self.widths)] * 2, dim=1)
        gains = (gains + 1.0).split(self.widths, dim=1)
        shifts = shifts.split(self.widths, dim=1)
        x = gan_api.apply_truncation(z, truncation_psi)[:, :, None, None]  # (B, z_dim, 1, 1)
        for conv, norm, g, s in zip(self.convs, self.norms, gains, shifts):
            x = self.act(norm(conv(x), g, s))  # side x2 (x4 for the first)
        return torch.tanh(self.to_rgb(x))  # (B, C, H, W)


@register_model("cgan", role="discriminator")
class CGANDiscriminator(DCGANDiscriminator):
    """DCGAN discriminator with a projection head; ``label_dims`` is required.

    Same arguments as :class:`~avatarforge.models.dcgan.DCGANDiscriminator`.
    """

    def __init__(
        self,
        resolution: int = 64,
        channels: int = 3,
        label_dims: Sequence[int] = (),
        spectral_norm: bool = False,
        base_channels: int = 64,
        max_channels: int = 512,
    ) -> None:
        super().__init__(
            resolution=resolution,
            channels=channels,
            label_dims=_require_labels(label_dims),
            spectral_norm=spectral_norm,
            base_channels=base_channels,
            max_channels=max_channels,
        )
