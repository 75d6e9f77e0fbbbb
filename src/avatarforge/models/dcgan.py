"""DCGAN (Radford, Metz & Chintala 2016), the classic all-convolutional GAN.

Generator::

    z (B, z_dim[+labels]) -> view (B, in, 1, 1)
    ConvT(4, 1, 0)   -> (B, C0, 4, 4)      + BN + ReLU
    ConvT(4, 2, 1)   -> (B, C1, 8, 8)      + BN + ReLU     } log2(resolution / 4) - 1 blocks
    ...
    ConvT(4, 2, 1)   -> (B, channels, resolution, resolution) + tanh

Every stride-2 ``ConvTranspose2d(k=4, s=2, p=1)`` exactly doubles the side, so
``log2(resolution / 4)`` of them turn the 4x4 seed into exactly ``resolution`` pixels (a
fixed-depth listing cannot: e.g. two stride-2 layers from 7x7 give 28, not 128).

Discriminator mirrors it: ``Conv(4, 2, 1)`` halvings (BN on all but the first, LeakyReLU
0.2) down to 4x4, then a 4x4 valid conv to one logit. Widths follow the paper: ngf = ndf =
64 at 64 px gives 512 -> 256 -> 128 -> 64 in G and 64 -> 128 -> 256 -> 512 in D;
``max_channels`` caps the widths at large resolutions.

Both accept ``label_dims`` (see :mod:`avatarforge.models.gan_api`): G then concatenates a
learned embedding of the labels to ``z`` and D adds a projection term. ``cgan`` and
``infogan`` reuse the builders below.

Speed notes (a benchmark trains this at 64 px, batch 64): convs followed by BN have no
bias (BN's shift makes it redundant), activations are in place, and nothing in the path
breaks ``channels_last`` -- call ``model.to(memory_format=torch.channels_last)`` and feed
channels-last images to get NHWC kernels end to end.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from avatarforge.models import gan_api
from avatarforge.models.base import ConfigModule
from avatarforge.models.layers import LabelEmbedding, ProjectionHead, apply_spectral_norm_
from avatarforge.models.registry import register_model

__all__ = [
    "Blur",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "ImageStatsHead",
    "build_discriminator_trunk",
    "build_generator_net",
    "discriminator_widths",
    "generator_widths",
    "init_weights_",
]


# ---------------------------------------------------------------------------- shared builders
def _num_stages(resolution: int) -> int:
    # Stride-2 (up|down)samplings between 4x4 and the image.
    return int(math.log2(gan_api.check_resolution(resolution) // 4))


def generator_widths(resolution: int, base_channels: int, max_channels: int) -> list[int]:
    """Channels of G's feature maps at 4x4, 8x8, ..., resolution/2 (halving toward the image)."""
    n = _num_stages(resolution)
    return [min(max_channels, base_channels * 2 ** (n - 1 - i)) for i in range(n)]


def discriminator_widths(resolution: int, base_channels: int, max_channels: int) -> list[int]:
    """Channels of D's feature maps at resolution/2, ..., 4x4 (doubling away from the image)."""
    return [min(max_channels, base_channels * 2**i) for i in range(_num_stages(resolution))]


def init_weights_(module: nn.Module) -> None:
    """DCGAN paper init, for ``model.apply``: conv/linear ~ N(0, 0.02), BN gain ~ N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build_generator_net(
    in_dim: int, resolution: int, channels: int, base_channels: int, max_channels: int
) -> nn.Sequential:
    """DCGAN generator body: ``(B, in_dim, 1, 1) -> (B, channels, resolution, resolution)``, tanh."""
    widths = generator_widths(resolution, base_channels, max_channels)
    # A 4x4 transposed conv on the 1x1 input is the paper's "project and reshape"; unlike a
    # Linear + view it keeps the weight's memory format (channels_last) for the next layers.
    layers: list[nn.Module] = [
        nn.ConvTranspose2d(in_dim, widths[0], 4, 1, 0, bias=False),  # (B, C0, 4, 4)
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(inplace=True),
    ]
    for c_in, c_out in itertools.pairwise(widths):
        layers += [
            nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),  # side x2
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        ]
    layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]  # (B, C, H, W)
    return nn.Sequential(*layers)


class Blur(nn.Module):
    """Depthwise ``[1, 2, 1] x [1, 2, 1] / 16`` low-pass, same size (replicated edges).

    Before a stride-2 convolution it removes the frequencies the stride would fold onto
    others (aliasing), as StyleGAN2's discriminator does before each downsampling: without
    it, some fine patterns are invisible to D and a generator can draw them freely.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.channels = channels
        kernel = (k[:, None] * k[None, :] / 16).expand(channels, 1, 3, 3).clone()
        self.register_buffer("kernel", kernel, persistent=False)  # a constant: not in checkpoints

    def forward(self, x: Tensor) -> Tensor:
        x = nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
        return nn.functional.conv2d(x, self.kernel.to(x.dtype), groups=self.channels)


def build_discriminator_trunk(
    resolution: int,
    channels: int,
    base_channels: int,
    max_channels: int,
    batch_norm: bool = True,
    antialias: bool = False,
    stem_channels: int = 0,
) -> tuple[nn.Sequential, int]:
    """DCGAN discriminator body ``(B, channels, H, W) -> (B, C_last, 4, 4)``; returns (trunk, C_last).

    ``batch_norm=False`` (used with spectral norm) drops BN and gives the convs a bias instead.
    ``antialias=True`` puts a :class:`Blur` before every stride-2 convolution.
    ``stem_channels > 0`` starts with a stride-1 3x3 convolution of that width at full
    resolution (un-normalised, like the paper's input layer).
    """
    widths = discriminator_widths(resolution, base_channels, max_channels)
    layers: list[nn.Module] = []
    c_in = channels
    if stem_channels > 0:
        # Why: a low-pass before the first stride removes the finest patterns (the Nyquist
        # checkerboard entirely) from what D sees, so G is free to draw them. A full-resolution
        # conv first turns them into features the blur and stride then keep (as StyleGAN2's
        # D does with its fromRGB layer at full resolution).
        layers.append(nn.Conv2d(c_in, stem_channels, 3, 1, 1, bias=not batch_norm))  # (B, S, H, W)
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        c_in = stem_channels
    for i, c_out in enumerate(widths):
        use_bn = batch_norm and i > 0  # the paper leaves the input layer un-normalised
        if antialias:
            layers.append(Blur(c_in))
        # Classic DCGAN has no conv biases at all; without BN (spectral-norm mode) they return.
        layers.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=not batch_norm))  # side /2
        if use_bn:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        c_in = c_out
    return nn.Sequential(*layers), c_in


class ImageStatsHead(nn.Module):
    """Un-normalised logit from low-dimensional image statistics: ``(B, C, H, W)`` -> ``(B,)``.

    A BatchNorm discriminator normalises each batch of features, so it cannot see a change
    that is shared by the whole batch: with no conv biases it is invariant (up to BatchNorm's
    eps) to scaling every image by the same factor. A generator with a linear output (StyleGAN) then drifts
    into clipped, saturated colours. This head sees per image, before any normalisation, the
    4x4 average-pooled colours (layout and palette), the per-channel standard deviation
    (contrast) and the mean absolute neighbour difference (high-frequency energy: speckles),
    ``C * 18`` numbers through a two-layer MLP. That is too little to judge structure, which
    stays the BatchNorm trunk's job.
    """

    def __init__(self, channels: int, hidden: int = 128) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(channels * 18, hidden), nn.LeakyReLU(0.2, inplace=True), nn.Linear(hidden, 1)
        )

    @staticmethod
    def statistics(images: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> ``(B, C * 18)``: 4x4 pooled colours, std, neighbour differences."""
        x = images.float()
        pooled = nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)  # (B, C * 16)
        std = x.flatten(2).std(dim=2)  # (B, C)
        dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(2, 3))  # (B, C)
        dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(2, 3))
        return torch.cat([pooled, std, dx + dy], dim=1)

    def forward(self, images: Tensor) -> Tensor:
        return self.mlp(self.statistics(images).to(self.mlp[0].weight.dtype)).reshape(-1)  # (B,)


class ReconDecoder(nn.Module):
    """Small decoder from D's final ``(B, feat, 4, 4)`` features to a ``(B, C, 32, 32)`` image.

    The self-supervised discriminator of FastGAN (Liu et al. 2021): D also has to reconstruct
    each real image it sees from its own last features, so those features must describe the
    whole face (where the eyes are, what they look like), not just whatever separates this
    batch of fakes from reals. Cheap: 1x1 to ``width`` channels, then three nearest-x2 +
    3x3 conv stages at widths ``width``, ``width/2``, ``width/4``.
    """

    def __init__(self, feat: int, width: int, channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(feat, width, 1), nn.LeakyReLU(0.2, inplace=True)]
        c = width
        for _ in range(3):  # 4 -> 8 -> 16 -> 32
            nxt = max(c // 2, 8)
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c, nxt, 3, 1, 1),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            c = nxt
        layers.append(nn.Conv2d(c, channels, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)  # (B, C, 32, 32)


def reconstruction_target(images: Tensor) -> Tensor:
    """What :class:`ReconDecoder` reconstructs: the images average-pooled to 32x32."""
    return nn.functional.adaptive_avg_pool2d(images.float(), 32)


def _param_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


# ---------------------------------------------------------------------------- models
@register_model("dcgan", role="generator")
class DCGANGenerator(gan_api.GeneratorMixin, ConfigModule):
    """DCGAN generator; optionally label-conditioned by concatenating label embeddings to z.

    Args:
        resolution: output side, one of 32, 64, 128, 256.
        channels: 3 (RGB) or 4 (RGBA).
        z_dim: latent size (the paper's 100).
        label_dims: classes per conditioning label; empty = unconditional.
        base_channels: width of the last hidden layer (the paper's ngf); doubles toward 4x4.
        max_channels: cap on any layer's width.
        embed_dim: per-label embedding size concatenated to z (conditional only).
    """

    def __init__(
        self,
        resolution: int = 64,
        channels: int = 3,
        z_dim: int = 100,
        label_dims: Sequence[int] = (),
        base_channels: int = 64,
        max_channels: int = 512,
        embed_dim: int = 16,
    ) -> None:
        super().__init__()
        self._init_header(resolution, channels, z_dim, gan_api.normalize_label_dims(label_dims), None)
        # N(0, 1) like z, so labels and noise start on the same scale.
        self.embed = LabelEmbedding(self.label_dims, embed_dim) if self.label_dims else None
        in_dim = z_dim + (self.embed.out_features if self.embed is not None else 0)
        self.net = build_generator_net(in_dim, resolution, channels, base_channels, max_channels)
        self.net.apply(init_weights_)

    def forward(
        self,
        z: Tensor,
        labels: Tensor | None = None,
        codes: Tensor | None = None,
        truncation_psi: float = 1.0,
    ) -> Tensor:
        """``(B, z_dim)`` -> ``(B, C, H, W)`` in [-1, 1]; ``truncation_psi`` scales z."""
        if codes is not None:
            raise ValueError(f"{type(self).__name__} takes no InfoGAN codes")
        x = gan_api.apply_truncation(z, truncation_psi)  # (B, z_dim)
        labels = gan_api.check_labels(labels, self.label_dims, z.shape[0])
        if self.embed is not None:
            x = torch.cat([x, self.embed(labels)], 1)  # (B, z_dim + L * embed_dim)
        return self.net(x[:, :, None, None])  # (B, C, H, W)


@register_model("dcgan", role="discriminator")
class DCGANDiscriminator(ConfigModule):
    """DCGAN discriminator; with ``label_dims`` it adds a projection term (conditional).

    Args:
        resolution: input side, one of 32, 64, 128, 256.
        channels: 3 (RGB) or 4 (RGBA).
        label_dims: classes per conditioning label; empty = unconditional.
        spectral_norm: spectral-normalise every weight (then BN is dropped, as in SNGAN).
        base_channels: width of the first layer (the paper's ndf); doubles per halving.
        max_channels: cap on any layer's width.
        image_stats: add :class:`ImageStatsHead`'s un-normalised logit, so the BatchNorm D also
            judges each image's colours and contrast (for generators with a linear output).
        antialias: low-pass (:class:`Blur`) before each stride-2 convolution.
        stem_channels: width of a stride-1 3x3 convolution at full resolution before the
            first stride (0 = none, the classic layout). Use it with ``antialias``, whose first
            blur otherwise hides the finest patterns from D.
        recon_channels: width of a :class:`ReconDecoder` on the last features (0 = none), for
            the trainer's self-supervised loss ``loss.d_recon``; ``forward(..., return_recon=True)``
            returns its 32 px reconstruction too.
    """

    def __init__(
        self,
        resolution: int = 64,
        channels: int = 3,
        label_dims: Sequence[int] = (),
        spectral_norm: bool = False,
        base_channels: int = 64,
        max_channels: int = 512,
        image_stats: bool = False,
        antialias: bool = False,
        stem_channels: int = 0,
        recon_channels: int = 0,
    ) -> None:
        super().__init__()
        if recon_channels < 0:
            raise ValueError(f"recon_channels must be >= 0 (0 = no decoder), got {recon_channels}")
        if stem_channels < 0:
            raise ValueError(f"stem_channels must be >= 0 (0 = no stem), got {stem_channels}")
        self.resolution = gan_api.check_resolution(resolution)
        self.channels = gan_api.check_channels(channels)
        self.label_dims = gan_api.normalize_label_dims(label_dims)
        self.trunk, feat = build_discriminator_trunk(
            resolution,
            channels,
            base_channels,
            max_channels,
            batch_norm=not spectral_norm,
            antialias=antialias,
            stem_channels=stem_channels,
        )
        self.head = nn.Conv2d(feat, 1, 4, 1, 0, bias=False)  # (B, feat, 4, 4) -> (B, 1, 1, 1)
        self.proj = ProjectionHead(feat, self.label_dims) if self.label_dims else None
        self.apply(init_weights_)
        # Built after the N(0, 0.02) init: the head keeps PyTorch's default (Kaiming-uniform)
        # init, since 0.02 on 54 standardised-ish inputs would make its logit start near zero.
        self.stats_head = ImageStatsHead(channels) if image_stats else None
        self.recon = ReconDecoder(feat, recon_channels, channels) if recon_channels else None
        if spectral_norm:
            apply_spectral_norm_(self)

    def features(self, images: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> trunk features ``(B, feat, 4, 4)``."""
        return self.trunk(images)

    def logits_from_features(self, h: Tensor, labels: Tensor | None) -> Tensor:
        """Trunk features ``(B, feat, 4, 4)`` -> logits ``(B,)`` (unconditional + projection)."""
        out = self.head(h).reshape(-1)  # (B,)
        labels = gan_api.check_labels(labels, self.label_dims, h.shape[0])
        if self.proj is not None:
            out = out + self.proj(h.sum(dim=(2, 3)), labels)  # sum-pooled (B, feat)
        return out

    def forward(
        self,
        images: Tensor,
        labels: Tensor | None = None,
        return_recon: bool = False,
        return_classes: bool = False,
    ) -> Tensor | tuple[Any, ...]:
        """``(B, C, H, W)`` images -> ``(B,)`` logits.

        With ``return_recon`` (needs ``recon_channels``) also the ``(B, C, 32, 32)``
        reconstruction from the same features; with ``return_classes`` (conditional D) also
        the projection's per-label class scores ``[(B, K_i), ...]``. Extras follow the logits
        in that order: ``(logits, recon?, classes?)``.
        """
        h = self.features(images)
        out = self.logits_from_features(h, labels)
        if self.stats_head is not None:
            out = out + self.stats_head(images)
        extras: list[Any] = []
        if return_recon:
            if self.recon is None:
                raise ValueError("return_recon=True needs a discriminator built with recon_channels > 0")
            extras.append(self.recon(h))
        if return_classes:
            if self.proj is None:
                raise ValueError("return_classes=True needs a conditional discriminator (label_dims)")
            extras.append(self.proj.class_logits(h.sum(dim=(2, 3))))
        return (out, *extras) if extras else out
