"""The part segmenter: a small U-Net that finds an avatar's parts at the generator's resolution.

:class:`PartSegmenter` reads a whole 64-px straight-alpha RGBA avatar (RGB is accepted too) and
predicts the procedural renderer's part map (:data:`~avatarforge.data.procedural.PART_NAMES`:
background, skin, hair, eye_white, iris, eye_line, eyebrow, mouth, outfit, accessory,
hair_tie) as logits, at the input size (``out_scale=1``) or at twice it (``out_scale=2``: one
learned pixel-shuffle stage, so parts a pixel or two wide at 64 px - the mouth, the whites of
the eyes, the brows - get a sub-pixel outline). The live rig
(:class:`~avatarforge.animate.rig.AvatarRig`) needs that map at 512 px:
:func:`predict_part_map` upsamples the logits bilinearly to any size and takes the argmax,
which gives smooth part outlines instead of blocky nearest-neighbour ones.

It exists because the refiner's part head (trained on 128-px crops at 512 px) learns the
small parts far too slowly; trained on whole 64-px renders (hundreds per second on a CPU),
the segmenter learns them within a minute. Training lives in :mod:`avatarforge.train.parts`;
:func:`avatarforge.runs.load_segmenter` loads a trained one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avatarforge.data.procedural.schema import PART_IDS, PART_NAMES
from avatarforge.imageio import network_input
from avatarforge.models.base import ConfigModule
from avatarforge.models.registry import register_model

__all__ = [
    "PART_COLORS",
    "PartSegmenter",
    "color_parts",
    "face_found",
    "predict_part_logits",
    "predict_part_map",
]

#: A colour per part id (PART_NAMES order), for pictures of part maps.
PART_COLORS: tuple[tuple[int, int, int], ...] = (
    (24, 24, 28),  # background
    (246, 206, 178),  # skin
    (120, 80, 200),  # hair
    (255, 255, 255),  # eye_white
    (40, 170, 255),  # iris
    (255, 40, 40),  # eye_line
    (255, 150, 0),  # eyebrow
    (0, 220, 90),  # mouth
    (60, 90, 140),  # outfit
    (230, 230, 60),  # accessory
    (255, 80, 200),  # hair_tie
)


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.LeakyReLU(0.2))


@register_model("parts", role="segmenter")
class PartSegmenter(ConfigModule):
    """``(B, C, h, w)`` straight-alpha images in [-1, 1] -> ``(B, part_classes, h s, w s)`` logits.

    Built for a CPU: the input is first folded 2x2 into channels (pixel unshuffle: nothing of
    the 64-px detail is lost, but every convolution runs at 32 px or below), then a U-Net of
    ``len(widths)`` levels (each next one at half the size, reached by a stride-2
    convolution; two 3x3 convolutions per level on the way down; on the way up a bilinear x2,
    a 1x1 projection added to the level's skip features and one 3x3 convolution), then a 1x1
    head whose ``part_classes * (2 * out_scale)^2`` channels a pixel shuffle unfolds into
    logits at ``out_scale`` x the input size.

    Args:
        channels: 4 (straight-alpha RGBA) or 3 (RGB).
        widths: channels per level (at least 2 levels; the input side must be divisible by
            ``2 ** len(widths)``).
        out_scale: 1 (logits at the input size) or 2 (at twice the input size).
        part_classes: ``len(PART_NAMES)`` (11).
    """

    def __init__(
        self,
        channels: int = 4,
        widths: list[int] | None = None,
        out_scale: int = 2,
        part_classes: int = len(PART_NAMES),
    ) -> None:
        super().__init__()
        widths = list(widths) if widths else [16, 32, 64]
        if channels not in (3, 4):
            raise ValueError(f"channels must be 3 (RGB) or 4 (RGBA), got {channels}")
        if out_scale not in (1, 2):
            raise ValueError(f"out_scale must be 1 or 2, got {out_scale}")
        if part_classes != len(PART_NAMES):
            raise ValueError(f"part_classes must be {len(PART_NAMES)} (PART_NAMES), got {part_classes}")
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"widths needs at least 2 positive values (one per level), got {widths}")
        self.channels, self.out_scale, self.part_classes = int(channels), int(out_scale), int(part_classes)
        self.widths = [int(w) for w in widths]
        self.fold = nn.PixelUnshuffle(2)
        down = []
        c = channels * 4
        for i, w in enumerate(self.widths):
            down.append(nn.Sequential(_conv(c, w, stride=1 if i == 0 else 2), _conv(w, w)))
            c = w
        self.down = nn.ModuleList(down)
        self.proj = nn.ModuleList(
            nn.Conv2d(self.widths[i], self.widths[i - 1], 1) for i in range(len(self.widths) - 1, 0, -1)
        )
        self.up = nn.ModuleList(
            _conv(self.widths[i - 1], self.widths[i - 1]) for i in range(len(self.widths) - 1, 0, -1)
        )
        self.unfold = 2 * out_scale
        self.head = nn.Conv2d(self.widths[0], part_classes * self.unfold**2, 1)
        self.shuffle = nn.PixelShuffle(self.unfold)

    @property
    def multiple(self) -> int:
        """The input side must be a multiple of this."""
        return 2 ** len(self.widths)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"the input side must be a multiple of {self.multiple}, got {h}x{w}")
        skips = []
        f = self.fold(x)
        for block in self.down:
            f = block(f)
            skips.append(f)
        for proj, block, skip in zip(self.proj, self.up, reversed(skips[:-1])):
            f = F.interpolate(proj(f), size=skip.shape[-2:], mode="bilinear", align_corners=False)
            f = block(f + skip)
        return self.shuffle(self.head(f))


# ------------------------------------------------------------------------------------ uint8 helpers
def predict_part_logits(model: PartSegmenter, images: np.ndarray, *, chunk: int = 64) -> Tensor:
    """``(N, h, w, C)`` uint8 -> ``(N, P, h s, w s)`` float32 logits on the CPU (no gradients)."""
    device = next(model.parameters()).device
    outs = []
    with torch.no_grad():
        x = network_input(images, model.channels)
        for s in range(0, x.shape[0], chunk):
            outs.append(model(x[s : s + chunk].to(device)).float().cpu())
    return torch.cat(outs) if outs else torch.zeros(0, model.part_classes, 0, 0)


def predict_part_map(
    model: PartSegmenter, images: np.ndarray, size: int | None = None, *, chunk: int = 16
) -> np.ndarray:
    """``(N, h, w, C)`` uint8 avatars -> ``(N, size, size)`` uint8 part ids (``PART_NAMES`` indices).

    The logits are upsampled bilinearly to ``size`` (default: the model's output size,
    ``out_scale`` x the input) and the argmax taken: smooth outlines at any size. Pixels the
    (upsampled) alpha leaves empty are not forced to background: that is the caller's
    choice. Deterministic, without gradients, in chunks of ``chunk`` images (the upsampled
    logits of a chunk at 512 px take ``chunk`` x 11.5 MB).
    """
    if size is not None and (isinstance(size, bool) or int(size) < 1):
        raise ValueError(f"size must be a positive integer, got {size!r}")
    device = next(model.parameters()).device
    outs = []
    with torch.no_grad():
        x = network_input(images, model.channels)
        for s in range(0, x.shape[0], chunk):
            logits = model(x[s : s + chunk].to(device)).float()
            if size is not None and tuple(logits.shape[-2:]) != (size, size):
                logits = F.interpolate(
                    logits, size=(int(size), int(size)), mode="bilinear", align_corners=False
                )
            outs.append(logits.argmax(1).to(torch.uint8).cpu().numpy())
    if not outs:
        side = size or x.shape[-1] * model.out_scale
        return np.zeros((0, side, side), np.uint8)
    return np.concatenate(outs)


# ------------------------------------------------------------------------------------ part maps
def color_parts(parts: np.ndarray) -> np.ndarray:
    """``(..., H, W)`` part ids -> ``(..., H, W, 3)`` uint8 colours (:data:`PART_COLORS`)."""
    table = np.array(PART_COLORS, np.uint8)
    return table[np.clip(np.asarray(parts), 0, len(PART_COLORS) - 1)]


def face_found(parts: np.ndarray, *, mid_x: float | None = None) -> bool:
    """Whether an ``(S, S)`` part map has a face a rig can animate: an open eye (eye_white or
    iris pixels) on each side of the face, the two eyes at least ``S / 10`` apart, and a mouth.

    ``mid_x``: the face's centre column (default: the middle of the eye pixels' extent, as
    :meth:`~avatarforge.animate.rig.AvatarRig.from_parts` finds it). At least
    ``max(1, S^2 / 4096)`` pixels per eye and for the mouth (one pixel at 64 px, 64 at 512).
    """
    p = np.asarray(parts)
    S = p.shape[-1]
    need = max(1, round(S * S / 4096))
    hole = (p == PART_IDS["eye_white"]) | (p == PART_IDS["iris"])
    feature = hole | (p == PART_IDS["eye_line"])
    if feature.sum() < 2 or (p == PART_IDS["mouth"]).sum() < need:
        return False
    xs = np.nonzero(feature)[1]
    mid = 0.5 * (xs.min() + xs.max()) if mid_x is None else float(mid_x)
    cols = np.arange(S)[None, :]
    centres = []
    for side in (cols < mid, cols >= mid):
        eye = hole & side
        if eye.sum() < need:
            return False
        centres.append(np.nonzero(eye)[1].mean())
    return bool(abs(centres[1] - centres[0]) >= S / 10)
