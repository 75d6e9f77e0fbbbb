"""The refiner: a learned x2/x4/x8 second stage that turns a 64-px avatar into a crisp large one.

:class:`Refiner` does most of its work at the input resolution (residual blocks), then doubles
the size ``log2(scale)`` times with pixel-shuffle stages of decreasing width. Its output is
added to a bilinear upscale of the input and the last layer starts at zero, so an untrained
refiner is plain bilinear interpolation. An optional part head predicts the procedural
renderer's part map (:data:`~avatarforge.data.procedural.PART_NAMES`) at the output size
(computed at half the output size, upsampled). :class:`RefinerDiscriminator` is a small
spectral-norm PatchGAN on output crops (training only).

:func:`refine_images` and :func:`predict_parts` are the uint8 front doors (``(N, h, w, C)``
straight-alpha RGBA or RGB in, ``(N, H, W, C)`` / ``(N, H, W)`` out), batch-chunked,
deterministic, without gradients. Training lives in :mod:`avatarforge.train.refiner`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avatarforge.data.procedural.schema import PART_NAMES
from avatarforge.imageio import network_input
from avatarforge.models.base import ConfigModule
from avatarforge.models.registry import register_model

__all__ = [
    "REFINER_SCALES",
    "Refiner",
    "RefinerDiscriminator",
    "predict_parts",
    "refine_images",
    "refiner_flops",
]

#: The upscaling factors a refiner supports.
REFINER_SCALES = (2, 4, 8)


class _ResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(width, width, 3, padding=1)
        self.c2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.c2(F.leaky_relu(self.c1(x), 0.2))


@register_model("refiner", role="refiner")
class Refiner(ConfigModule):
    """Upscale ``scale`` x with learned detail on top of bilinear interpolation.

    Args:
        scale: 2, 4 or 8.
        channels: 4 (straight-alpha RGBA) or 3 (RGB).
        width: channels of the residual blocks at the input resolution.
        blocks: residual blocks at the input resolution.
        up_widths: channels after each x2 stage (``log2(scale)`` values; empty = halve
            ``width`` at each stage, at least 8).
        part_classes: 0 (no part head) or ``len(PART_NAMES)`` (11).
        head: ``"select"``: every output pixel is a learned mix of the input's 3x3 neighbours
            (premultiplied, a softmax per output pixel) plus a small learned residual - flat
            colours stay flat and edges become a choice of side, not a blur, which is what
            cel-shaded avatars need and what an x8 regression learns only slowly;
            ``"residual"``: bilinear upscale plus a learned residual.
    """

    def __init__(
        self,
        scale: int = 8,
        channels: int = 4,
        width: int = 48,
        blocks: int = 6,
        up_widths: list[int] | None = None,
        part_classes: int = len(PART_NAMES),
        head: str = "residual",
    ) -> None:
        super().__init__()
        if scale not in REFINER_SCALES:
            raise ValueError(f"scale must be one of {REFINER_SCALES}, got {scale}")
        if channels not in (3, 4):
            raise ValueError(f"channels must be 3 (RGB) or 4 (RGBA), got {channels}")
        if part_classes not in (0, len(PART_NAMES)):
            raise ValueError(f"part_classes must be 0 or {len(PART_NAMES)} (PART_NAMES), got {part_classes}")
        if head not in ("select", "residual"):
            raise ValueError(f"head must be 'select' or 'residual', got {head!r}")
        self.head_kind = head
        stages = int(math.log2(scale))
        if not up_widths:
            up_widths = [max(width >> (i + 1), 8) for i in range(stages)]
        if len(up_widths) != stages or min(up_widths) < 1 or width < 1 or blocks < 0:
            raise ValueError(
                f"up_widths needs {stages} positive values for scale {scale} (got {up_widths}); "
                "width must be >= 1 and blocks >= 0"
            )
        self.scale, self.channels, self.part_classes = int(scale), int(channels), int(part_classes)
        self.head = nn.Conv2d(channels, width, 3, padding=1)
        self.body = nn.Sequential(*[_ResBlock(width) for _ in range(blocks)])
        self.body_out = nn.Conv2d(width, width, 3, padding=1)
        ups = []
        w_in = width
        for w in up_widths:
            ups.append(nn.Conv2d(w_in, w * 4, 3, padding=1))
            w_in = w
        self.ups = nn.ModuleList(ups)
        self.shuffle = nn.PixelShuffle(2)
        self.tail = nn.Conv2d(w_in, channels, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)
        if head == "select":
            # Logits over the 3x3 input neighbours of each output pixel; at init the centre
            # wins (nearest-neighbour upscaling), training moves edges to where they belong.
            self.select = nn.Conv2d(w_in, 9, 3, padding=1)
            nn.init.normal_(self.select.weight, std=1e-3)
            with torch.no_grad():
                self.select.bias.zero_()
                self.select.bias[4] = 3.0
        # The part head reads the features one x2 stage before the output (half the output size).
        part_in = up_widths[-2] if stages >= 2 else width
        self.parts = nn.Conv2d(part_in, part_classes, 3, padding=1) if part_classes else None

    def _features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(output-size features, features at half the output size)."""
        f = F.leaky_relu(self.head(x), 0.2)
        f = f + self.body_out(self.body(f))
        half = f
        for up in self.ups:
            half = f
            f = F.leaky_relu(self.shuffle(up(f)), 0.2)
        return f, half

    def forward_with_parts(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(image, part_logits)``: ``(B, C, h s, w s)`` in [-1, 1] and ``(B, P, h s, w s)``
        logits (None without a part head)."""
        f, half = self._features(x)
        img = self._image(x, f)
        logits = None
        if self.parts is not None:
            logits = F.interpolate(
                self.parts(half), size=img.shape[-2:], mode="bilinear", align_corners=False
            )
        return img, logits

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, h, w)`` in [-1, 1] -> ``(B, C, h s, w s)`` in [-1, 1]."""
        f, _ = self._features(x)
        return self._image(x, f)

    def _image(self, x: Tensor, f: Tensor) -> Tensor:
        if self.head_kind == "residual":
            base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
            return (base + self.tail(f)).clamp(-1, 1)
        B, C, h, w = x.shape
        s = self.scale
        y = (x + 1.0) * 0.5  # [0, 1]
        if C == 4:  # mix in premultiplied alpha: transparent neighbours carry no colour
            y = torch.cat([y[:, :3] * y[:, 3:], y[:, 3:]], dim=1)
        nb = F.unfold(F.pad(y, (1, 1, 1, 1), mode="replicate"), 3).view(B, C, 9, h, w)  # (B, C, 9, h, w)
        weights = torch.softmax(self.select(f), dim=1).view(B, 9, h, s, w, s)  # (B, 9, h, s, w, s)
        # out[b, c, i*s+u, j*s+v] = sum_k weights[b, k, i, u, j, v] * nb[b, c, k, i, j]
        out = torch.einsum("bkiujv,bckij->bciujv", weights, nb).reshape(B, C, h * s, w * s)
        out = out + 0.25 * torch.tanh(self.tail(f))  # what a mix cannot make (thin dark lines)
        if C == 4:
            a = out[:, 3:].clamp(0.0, 1.0)
            rgb = out[:, :3] / a.clamp_min(1e-3)
            out = torch.cat([torch.where(a > 1e-3, rgb, torch.zeros_like(rgb)), a], dim=1)
        return out.clamp(0.0, 1.0) * 2.0 - 1.0


@register_model("refiner", role="discriminator")
class RefinerDiscriminator(ConfigModule):
    """A PatchGAN (spectral norm, LeakyReLU) on ``(B, C, H, W)`` crops in [-1, 1]; returns
    ``(B, 1, H / 2^layers, W / 2^layers)`` logits."""

    def __init__(self, channels: int = 4, width: int = 32, layers: int = 3) -> None:
        super().__init__()
        sn = nn.utils.spectral_norm
        mods: list[nn.Module] = []
        c = channels
        for i in range(layers):
            w = width * min(2**i, 4)
            mods += [sn(nn.Conv2d(c, w, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            c = w
        mods += [sn(nn.Conv2d(c, c, 3, padding=1)), nn.LeakyReLU(0.2), sn(nn.Conv2d(c, 1, 3, padding=1))]
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


# ------------------------------------------------------------------------------------ uint8 helpers
def _to_uint8(y: Tensor) -> np.ndarray:
    out = y.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if out.shape[-1] == 4:
        out[out[..., 3] == 0, :3] = 0  # straight alpha: no colour where nothing is drawn
    return out


def refine_images(model: Refiner, images: np.ndarray, *, chunk: int = 8) -> np.ndarray:
    """``(N, h, w, C)`` uint8 (straight-alpha RGBA or RGB) -> ``(N, h s, w s, model.channels)`` uint8."""
    outs = []
    device = next(model.parameters()).device
    with torch.no_grad():
        x = network_input(images, model.channels)
        for s in range(0, x.shape[0], chunk):
            outs.append(_to_uint8(model(x[s : s + chunk].to(device)).float().cpu()))
    return np.concatenate(outs) if outs else np.zeros((0,), np.uint8)


def predict_parts(model: Refiner, images: np.ndarray, *, chunk: int = 8) -> np.ndarray:
    """``(N, h, w, C)`` uint8 -> ``(N, h s, w s)`` uint8 part ids (index into ``PART_NAMES``)."""
    if model.parts is None:
        raise ValueError("this refiner has no part head (part_classes=0)")
    outs = []
    device = next(model.parameters()).device
    with torch.no_grad():
        x = network_input(images, model.channels)
        for s in range(0, x.shape[0], chunk):
            _, logits = model.forward_with_parts(x[s : s + chunk].to(device))
            assert logits is not None
            outs.append(logits.argmax(1).to(torch.uint8).cpu().numpy())
    return np.concatenate(outs)


def refiner_flops(model: Refiner, size: int = 64) -> int:
    """Multiply-accumulates of one ``forward`` on a ``size`` x ``size`` input (convolutions only)."""
    macs = 0
    hooks = []

    def hook(m: nn.Conv2d, _inp: tuple, out: Tensor) -> None:
        nonlocal macs
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        macs += out.numel() // out.shape[0] * k

    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m is not model.parts:
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.zeros(1, model.channels, size, size, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    return macs
