"""CycleGAN networks (Zhu et al. 2017): a ResNet generator and a PatchGAN discriminator.

Registered as ``("cyclegan", "generator")`` and ``("cyclegan", "discriminator")`` so a
checkpoint's ``g_ab_config.json`` names its class by short name and
:func:`avatarforge.models.load_pretrained` rebuilds it (import this module first, as
:mod:`avatarforge.style.train_cyclegan` does: it is not imported by ``avatarforge.models``
because these are translation networks, not ``avatarforge train`` GAN families).

Generator (Johnson et al. 2016's ResNet, as in CycleGAN)::

    (B, C, H, W)  reflect-pad 3, conv7x7 -> ngf, IN, ReLU
                  n_downsampling x [conv3x3 stride 2 -> 2x channels, IN, ReLU]     (H / 2^n)
                  n_blocks x residual [pad, conv3x3, IN, ReLU, pad, conv3x3, IN] + x
                  n_downsampling x [2x up, conv3x3 -> channels / 2, IN, ReLU]
                  reflect-pad 3, conv7x7 -> C, tanh                                 (B, C, H, W)

Upsampling is nearest-neighbour + conv by default (``upsample="nearest"``; Odena et al. 2016:
no checkerboard artefacts), or the paper's transposed convolution (``"transpose"``). The
paper uses ngf=64 and 9 blocks at 256 px; the defaults here (ngf=32, 6 blocks, 2
downsamplings: 2.0 M parameters in G, 0.7 M in D with ndf=32) are sized for CPU training
at 32-128 px.

Discriminator (PatchGAN, Isola et al. 2017)::

    conv4x4 s2 -> ndf, LReLU(0.2); (n_layers - 1) x [conv4x4 s2 -> 2x (<= 8 ndf), IN, LReLU];
    conv4x4 s1 -> (<= 8 ndf), IN, LReLU; conv4x4 s1 -> 1                 (B, 1, h, w) patch logits

With n_layers=3 each logit sees a 70x70 patch; at 64 px the output is 6x6, at 32 px 2x2.
"""

from __future__ import annotations

from torch import Tensor, nn

from avatarforge.models.base import ConfigModule
from avatarforge.models.registry import register_model

__all__ = ["NORMS", "UPSAMPLES", "CycleGANGenerator", "PatchDiscriminator", "init_weights_"]

NORMS = ("instance", "none")
UPSAMPLES = ("nearest", "transpose")


def _norm(kind: str, channels: int) -> nn.Module:
    # CycleGAN's instance norm has no affine parameters and no running statistics: every
    # image is normalised by its own statistics in training and at test time alike.
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    return nn.Identity()


def init_weights_(module: nn.Module) -> None:
    """CycleGAN's init, for ``model.apply``: conv weights ~ N(0, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _check(norm: str, upsample: str | None = None) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if upsample is not None and upsample not in UPSAMPLES:
        raise ValueError(f"upsample must be one of {', '.join(UPSAMPLES)}, got {upsample!r}")


class _ResBlock(nn.Module):
    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _norm(norm, channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _norm(norm, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


@register_model("cyclegan", "generator")
class CycleGANGenerator(ConfigModule):
    """CycleGAN's ResNet generator: image -> image of the same size, output in [-1, 1].

    Args:
        channels: image channels in and out (3: RGB; training composites RGBA onto white).
        ngf: channels of the first layer (doubled at each downsampling).
        n_blocks: residual blocks at the bottleneck.
        n_downsampling: stride-2 stages; input sides must be multiples of ``2 ** n_downsampling``.
        norm: ``"instance"`` or ``"none"``.
        upsample: ``"nearest"`` (upsample + conv) or ``"transpose"`` (the paper's).
        max_channels: cap on the widths.
    """

    def __init__(
        self,
        channels: int = 3,
        ngf: int = 32,
        n_blocks: int = 6,
        n_downsampling: int = 2,
        norm: str = "instance",
        upsample: str = "nearest",
        max_channels: int = 256,
    ) -> None:
        super().__init__()
        _check(norm, upsample)
        if channels < 1 or ngf < 1 or n_blocks < 0 or n_downsampling < 0:
            raise ValueError(
                f"bad generator shape: channels={channels}, ngf={ngf}, n_blocks={n_blocks}, "
                f"n_downsampling={n_downsampling}"
            )
        self.multiple = 2**n_downsampling
        widths = [min(max_channels, ngf * 2**i) for i in range(n_downsampling + 1)]
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(channels, widths[0], 7),
            _norm(norm, widths[0]),
            nn.ReLU(inplace=True),
        ]
        for i in range(n_downsampling):
            layers += [
                nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1),
                _norm(norm, widths[i + 1]),
                nn.ReLU(inplace=True),
            ]
        layers += [_ResBlock(widths[-1], norm) for _ in range(n_blocks)]
        for i in reversed(range(n_downsampling)):
            if upsample == "nearest":
                layers += [
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.ReflectionPad2d(1),
                    nn.Conv2d(widths[i + 1], widths[i], 3),
                ]
            else:
                layers.append(nn.ConvTranspose2d(widths[i + 1], widths[i], 3, 2, padding=1, output_padding=1))
            layers += [_norm(norm, widths[i]), nn.ReLU(inplace=True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(widths[0], channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(init_weights_)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, C, H, W) in [-1, 1]; H, W multiples of :attr:`multiple`."""
        if x.shape[-1] % self.multiple or x.shape[-2] % self.multiple:
            raise ValueError(
                f"image sides must be multiples of {self.multiple} for this generator, got {tuple(x.shape[-2:])}"
            )
        return self.net(x)


@register_model("cyclegan", "discriminator")
class PatchDiscriminator(ConfigModule):
    """PatchGAN: a grid of real/fake logits, one per overlapping patch.

    Args:
        channels: image channels.
        ndf: channels of the first layer (doubled per stride-2 layer, capped at 8 ndf).
        n_layers: stride-2 layers (3: 70x70 patches).
        norm: ``"instance"`` or ``"none"``.
    """

    def __init__(self, channels: int = 3, ndf: int = 32, n_layers: int = 3, norm: str = "instance") -> None:
        super().__init__()
        _check(norm)
        if channels < 1 or ndf < 1 or n_layers < 1:
            raise ValueError(f"bad discriminator shape: channels={channels}, ndf={ndf}, n_layers={n_layers}")
        layers: list[nn.Module] = [nn.Conv2d(channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        c = ndf
        for n in range(1, n_layers):
            c_next = ndf * min(2**n, 8)
            layers += [nn.Conv2d(c, c_next, 4, 2, 1), _norm(norm, c_next), nn.LeakyReLU(0.2, inplace=True)]
            c = c_next
        c_next = ndf * min(2**n_layers, 8)
        layers += [nn.Conv2d(c, c_next, 4, 1, 1), _norm(norm, c_next), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(nn.Conv2d(c_next, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        self.apply(init_weights_)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 1, h, w) logits (h = H / 2^n_layers - 2)."""
        return self.net(x)
