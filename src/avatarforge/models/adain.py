"""AdaIN's decoder (Huang & Belongie 2017): encoder features -> image.

Trained and used by :mod:`avatarforge.style.neural` (``adain_transfer``,
``train_adain_decoder``) against a feature network of :mod:`avatarforge.style.features`.
"""

from __future__ import annotations

from torch import Tensor, nn

from avatarforge.models.base import ConfigModule
from avatarforge.models.registry import register_model

__all__ = ["AdaINDecoder"]


@register_model("adain", "decoder")
class AdaINDecoder(ConfigModule):
    """AdaIN's decoder: ``relu4_1`` features -> image, mirroring the encoder.

    ::

        (B, in_channels, H/8, W/8)
        per width w in widths: [conv3x3 -> w, ReLU] + extra_convs x [conv3x3 w -> w, ReLU], 2x nearest up
        conv3x3 w -> w, ReLU, conv3x3 w -> 3                          (B, 3, H, W) in about [-1, 1]

    Reflection padding everywhere and no normalisation layers, as in Huang & Belongie (2017),
    whose VGG decoder is close to ``widths=(256, 128, 64), extra_convs=1``. The decoder only
    makes sense with the encoder it was trained against: ``encoder`` (``"vgg19"`` or
    ``"random"``), ``encoder_seed`` and ``encoder_fingerprint`` (see
    :meth:`~avatarforge.style.features.FeatureNet.fingerprint`) record which, and
    :func:`adain_transfer` refuses a mismatch.
    """

    def __init__(
        self,
        in_channels: int = 512,
        widths: tuple[int, ...] | list[int] = (256, 128, 64),
        extra_convs: int = 1,
        encoder: str = "vgg19",
        encoder_seed: int = 0,
        encoder_widths: list[int] | None = None,
        encoder_fingerprint: str = "",
    ) -> None:
        super().__init__()
        if not widths or min(widths) < 1 or in_channels < 1 or extra_convs < 0:
            raise ValueError(f"bad AdaIN decoder shape: in_channels={in_channels}, widths={widths}")
        self.encoder = encoder
        self.encoder_seed = int(encoder_seed)
        self.encoder_widths = list(encoder_widths) if encoder_widths else None
        self.encoder_fingerprint = encoder_fingerprint
        layers: list[nn.Module] = []
        c = int(in_channels)
        for w in widths:
            layers += [_conv(c, int(w)), nn.ReLU(inplace=True)]
            for _ in range(extra_convs):
                layers += [_conv(int(w), int(w)), nn.ReLU(inplace=True)]
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            c = int(w)
        layers += [_conv(c, c), nn.ReLU(inplace=True), _conv(c, 3)]
        self.net = nn.Sequential(*layers)

    @property
    def scale(self) -> int:
        """Upsampling factor (the encoder layer's downsampling)."""
        return 2 ** len(self.config["widths"])

    def forward(self, feat: Tensor) -> Tensor:
        """(B, in_channels, h, w) -> (B, 3, h * scale, w * scale)."""
        return self.net(feat)


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="reflect")
