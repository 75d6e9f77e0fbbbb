"""The expression animator: avatar image + expression controls -> the same avatar, re-posed.

Two networks, registered in the model registry:

* ``("animator", "generator")`` :class:`ExpressionAnimator`: image-to-image, split in two so
  the expensive half runs once per avatar. :meth:`~ExpressionAnimator.prepare` encodes an
  avatar into an :class:`AnimatorState`; :meth:`~ExpressionAnimator.render` turns a state and
  the five controls (:data:`CONTROL_NAMES`) into a frame, once per video frame.
* ``("animator", "discriminator")`` :class:`AnimatorDiscriminator`: a small conditional
  PatchGAN that sees (source, image, control planes); the trainer gives its loss a small
  weight next to the reconstruction loss.

Generator, for resolution ``S`` and widths ``(w0, w1, w2, w3)`` (defaults 8, 16, 32, 64)::

    encode (once per avatar)                                     shapes for batch B
      src RGBA in [-1, 1]                                        (B, 4, S, S)
      conv3x3 s2 -> w1, LReLU                               e1   (B, w1, S/2, S/2)
      conv3x3 s2 -> w2, LReLU                               e2   (B, w2, S/4, S/4)
      conv3x3 s2 -> w3, LReLU, 2 x residual block           e3   (B, w3, S/8, S/8)
      global mean of e3 -> linear                           g    (B, ctrl_hidden)
    render (every frame)
      MLP([controls, g]) -> FiLM scale/shift for levels 3, 2, 1      (B, 2 (w3 + w2 + w1))
      x3 = resblock([FiLM3(e3), coords])                         (B, w3, S/8, S/8)
      x2 = LReLU(conv3x3([up2(conv1x1(x3)) + FiLM2(e2), coords]))  (B, w2, S/4, S/4)
      flow = max_flow * tanh(conv3x3(x2)) -> 2, bilinear up4     (B, 2, S, S)  in grid units
      x1 = LReLU(conv3x3([up2(conv1x1(x2)) + FiLM1(e1), coords]))  (B, w1, S/2, S/2)
      warped = grid_sample(src, identity grid + flow)            (B, 4, S, S)
      head = conv3x3([up2(conv1x1(x1)), warped]) -> 5            (B, 5, S, S)
      gen = tanh(head[:, :4]);  m = sigmoid(head[:, 4])
      frame = warped + m * (gen - warped)                        (B, 4, S, S)

Why this shape: the flow field moves whole parts (head turn parallax, roll about the neck)
without re-drawing them, so identity details survive a pose change; the residual + mask
re-draws only what a warp cannot produce (eyes closing, the inside of an open mouth), and
starts near zero (mask bias -3, flow weights 0), so an untrained animator already copies its
input (the "identity baseline") and training only has to learn the changes. Full resolution
sees one small convolution; almost all the work is at 1/8-1/4 resolution; the source
features are computed once. At 128 px the per-frame decoder is ~51 MFLOP (see
docs/animate.md for measured frame times). Coordinate planes (x, y in [-1, 1]) enter
every decoder level: a head roll is a rotation about a fixed pivot, and the eyes and mouth
sit at roughly fixed places, both easier to express with positions at hand.

Controls are given in their natural ranges (eye_open and mouth_open in [0, 1], smile,
head_yaw, head_tilt in [-1, 1], the procedural renderer's conventions) and mapped to
[-1, 1] inside the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avatarforge.models.base import ConfigModule
from avatarforge.models.registry import register_model

__all__ = [
    "CONTROL_NAMES",
    "CONTROL_RANGES",
    "NEUTRAL_CONTROLS",
    "AnimatorDiscriminator",
    "AnimatorState",
    "ControlsLike",
    "ExpressionAnimator",
    "FrameDecoder",
    "FrozenAnimator",
    "controls_tensor",
    "controls_to_dict",
    "image_to_tensor",
    "tensor_to_image",
]

#: The expression controls, in the order of a controls vector.
CONTROL_NAMES: tuple[str, ...] = ("eye_open", "mouth_open", "smile", "head_yaw", "head_tilt")
#: Valid range of each control (the procedural renderer's).
CONTROL_RANGES: dict[str, tuple[float, float]] = {
    "eye_open": (0.0, 1.0),
    "mouth_open": (0.0, 1.0),
    "smile": (-1.0, 1.0),
    "head_yaw": (-1.0, 1.0),
    "head_tilt": (-1.0, 1.0),
}
#: Eyes open, mouth closed, no smile, looking ahead.
NEUTRAL_CONTROLS: dict[str, float] = {
    "eye_open": 1.0,
    "mouth_open": 0.0,
    "smile": 0.0,
    "head_yaw": 0.0,
    "head_tilt": 0.0,
}

#: What :func:`controls_tensor` accepts: a (partial) dict, a sequence of 5 numbers, or a
#: ``(5,)`` / ``(B, 5)`` tensor.
ControlsLike = Mapping[str, float] | Sequence[float] | np.ndarray | Tensor


def controls_tensor(controls: ControlsLike, batch: int | None = None, device: Any = "cpu") -> Tensor:
    """Controls as a ``(B, 5)`` float32 tensor in :data:`CONTROL_NAMES` order, clamped to range.

    A dict may leave controls out (they are neutral) but may not name unknown ones.
    ``batch`` repeats a single controls vector ``batch`` times.

    Raises:
        ValueError: unknown control names, a wrong length, or a non-finite value.
    """
    if isinstance(controls, Mapping):
        bad = sorted(set(controls) - set(CONTROL_NAMES))
        if bad:
            raise ValueError(f"unknown controls {bad}; valid controls: {', '.join(CONTROL_NAMES)}")
        vals = [float(controls.get(n, NEUTRAL_CONTROLS[n])) for n in CONTROL_NAMES]
        t = torch.tensor(vals, dtype=torch.float32, device=device)[None]
    else:
        t = torch.as_tensor(
            np.asarray(controls, dtype=np.float32) if not torch.is_tensor(controls) else controls
        )
        t = t.to(device=device, dtype=torch.float32)
        if t.ndim == 1:
            t = t[None]
        if t.ndim != 2 or t.shape[1] != len(CONTROL_NAMES):
            raise ValueError(
                f"controls must be a dict or have {len(CONTROL_NAMES)} values ({', '.join(CONTROL_NAMES)}), "
                f"got shape {tuple(t.shape)}"
            )
    if not bool(torch.isfinite(t).all()):
        raise ValueError("controls must be finite numbers")
    lo = torch.tensor([CONTROL_RANGES[n][0] for n in CONTROL_NAMES], device=t.device)
    hi = torch.tensor([CONTROL_RANGES[n][1] for n in CONTROL_NAMES], device=t.device)
    t = torch.maximum(torch.minimum(t, hi), lo)
    if batch is not None and t.shape[0] == 1 and batch != 1:
        t = t.expand(batch, -1)
    return t


def controls_to_dict(controls: ControlsLike) -> dict[str, float]:
    """The first row of ``controls`` as ``{name: value}`` (clamped to range)."""
    t = controls_tensor(controls)
    return {n: float(v) for n, v in zip(CONTROL_NAMES, t[0].tolist())}


def image_to_tensor(image: Any, size: int | None = None) -> Tensor:
    """An avatar as ``(1, 4, S, S)`` float32 RGBA in [-1, 1] (straight alpha).

    Accepts ``(H, W, 3|4)`` uint8 arrays, PIL images and ``(B, 3|4, H, W)`` tensors in
    [-1, 1]. RGB input gets an opaque alpha channel. With ``size``, the image is resized
    (area-averaged in premultiplied alpha, so transparent pixels do not darken edges).
    """
    if torch.is_tensor(image):
        x = image.detach().float()
        if x.ndim == 3:
            x = x[None]
    else:
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3|4) uint8 image, got {arr.dtype} {arr.shape}")
        x = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)[None].float().div(127.5).sub(1)
    if x.ndim != 4 or x.shape[1] not in (3, 4):
        raise ValueError(f"expected (B, 3|4, H, W) images, got shape {tuple(x.shape)}")
    if x.shape[1] == 3:
        x = torch.cat([x, torch.ones_like(x[:, :1])], 1)
    if size is not None and (x.shape[-1] != size or x.shape[-2] != size):
        a = (x[:, 3:] + 1) / 2
        pm = torch.cat([(x[:, :3] + 1) / 2 * a, a], 1)  # premultiplied [0, 1]
        pm = F.interpolate(pm, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        a = pm[:, 3:].clamp(0, 1)
        rgb = torch.where(a > 1e-4, pm[:, :3] / a.clamp_min(1e-4), torch.zeros_like(pm[:, :3])).clamp(0, 1)
        x = torch.cat([rgb, a], 1) * 2 - 1
    return x.contiguous()


def tensor_to_image(x: Tensor, clean: bool = False) -> np.ndarray:
    """``(1, 4, H, W)`` or ``(4, H, W)`` in [-1, 1] -> ``(H, W, 4)`` uint8; RGB = 0 where alpha = 0.

    ``clean``: clean the alpha (:func:`avatarforge.imageio.clean_alpha`: one silhouette, opaque
    inside), as every frame handed to a viewer is.
    """
    if x.ndim == 4:
        x = x[0]
    u8 = x.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    out = u8.permute(1, 2, 0).contiguous().cpu().numpy()
    if out.shape[2] == 4:
        out[out[..., 3] == 0, :3] = 0  # the renderer's convention: invisible pixels are black
        if clean:
            from avatarforge.imageio import clean_alpha

            out = clean_alpha(out[None])[0]
            out[out[..., 3] == 0, :3] = 0
    return out


@dataclass
class AnimatorState:
    """An encoded avatar: what :meth:`ExpressionAnimator.render` needs, computed once.

    Attributes:
        source: ``(B, 4, S, S)`` the avatar in [-1, 1] at the animator's resolution.
        e1, e2, e3: source features at 1/2, 1/4 and 1/8 resolution.
        g: ``(B, ctrl_hidden)`` global code of the source (its pose and expression).
    """

    source: Tensor
    e1: Tensor
    e2: Tensor
    e3: Tensor
    g: Tensor

    def tensors(self) -> tuple[Tensor, ...]:
        """The state as a tuple in the order the ONNX render graph takes it."""
        return (self.source, self.e1, self.e2, self.e3, self.g)

    @property
    def batch(self) -> int:
        return int(self.source.shape[0])

    @property
    def size(self) -> int:
        return int(self.source.shape[-1])


STATE_NAMES: tuple[str, ...] = ("source", "e1", "e2", "e3", "g")


# --------------------------------------------------------------------------- blocks
def _act(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2, inplace=True)


class _ResBlock(nn.Module):
    """``x + conv(LReLU(conv(x)))`` at one resolution (no normalisation: batch-1 inference)."""

    def __init__(self, channels: int, extra_in: int = 0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels + extra_in, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        # Start as (almost) the identity so deep stacks train from step one.
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, extra: Tensor | None = None) -> Tensor:
        h = x if extra is None else torch.cat([x, extra], 1)
        return x + self.conv2(_act(self.conv1(h)))


def _film(x: Tensor, params: Tensor) -> Tensor:
    """``x * (1 + scale) + shift`` with ``params = [scale, shift]``: ``(B, 2C)``."""
    scale, shift = params.chunk(2, dim=1)
    return x * (1 + scale[:, :, None, None]) + shift[:, :, None, None]


def _coords(h: int, w: int, like: Tensor) -> Tensor:
    """``(1, 2, h, w)`` pixel-centre coordinates in [-1, 1] (x then y)."""
    ys = (torch.arange(h, device=like.device, dtype=like.dtype) + 0.5) * (2.0 / h) - 1.0
    xs = (torch.arange(w, device=like.device, dtype=like.dtype) + 0.5) * (2.0 / w) - 1.0
    return torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)])[None]


# --------------------------------------------------------------------------- the generator
@register_model("animator", "generator")
class ExpressionAnimator(ConfigModule):
    """Avatar + expression controls -> avatar with that expression (see the module docstring).

    Args:
        resolution: the image size the animator works at (avatars are resized to it).
        widths: channels at full, 1/2, 1/4 and 1/8 resolution.
        ctrl_hidden: width of the controls MLP (and of the global source code).
        enc_blocks: residual blocks at 1/8 resolution in the encoder.
        max_flow: bound on the flow, in grid units ([-1, 1] spans the image), via tanh.
    """

    def __init__(
        self,
        resolution: int = 64,
        widths: Sequence[int] = (8, 16, 32, 64),
        ctrl_hidden: int = 64,
        enc_blocks: int = 2,
        max_flow: float = 0.25,
    ) -> None:
        super().__init__()
        if resolution < 16 or resolution % 8:
            raise ValueError(f"resolution must be a multiple of 8, at least 16, got {resolution}")
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"widths must be 4 positive channel counts, got {list(widths)}")
        w0, w1, w2, w3 = (int(w) for w in widths)
        self.resolution = int(resolution)
        self.max_flow = float(max_flow)
        n = len(CONTROL_NAMES)
        # natural ranges -> [-1, 1]
        lo = torch.tensor([CONTROL_RANGES[c][0] for c in CONTROL_NAMES])
        hi = torch.tensor([CONTROL_RANGES[c][1] for c in CONTROL_NAMES])
        self.register_buffer("ctrl_scale", 2.0 / (hi - lo), persistent=False)
        self.register_buffer("ctrl_offset", -(hi + lo) / (hi - lo), persistent=False)

        # -- encoder (once per avatar)
        self.down1 = nn.Conv2d(4, w1, 3, stride=2, padding=1)
        self.down2 = nn.Conv2d(w1, w2, 3, stride=2, padding=1)
        self.down3 = nn.Conv2d(w2, w3, 3, stride=2, padding=1)
        self.enc_blocks = nn.ModuleList(_ResBlock(w3) for _ in range(enc_blocks))
        self.global_fc = nn.Linear(w3, ctrl_hidden)

        # -- controls -> FiLM parameters for levels 3, 2, 1
        self.film_sizes = (2 * w3, 2 * w2, 2 * w1)
        self.ctrl_fc1 = nn.Linear(n + ctrl_hidden, ctrl_hidden)
        self.ctrl_fc2 = nn.Linear(ctrl_hidden, sum(self.film_sizes))
        nn.init.zeros_(self.ctrl_fc2.weight)  # FiLM starts as the identity
        nn.init.zeros_(self.ctrl_fc2.bias)

        # -- decoder (every frame)
        self.dec3 = _ResBlock(w3, extra_in=2)
        self.lat3 = nn.Conv2d(w3, w2, 1)
        self.dec2 = nn.Conv2d(w2 + 2, w2, 3, padding=1)
        self.flow = nn.Conv2d(w2, 2, 3, padding=1)
        nn.init.zeros_(self.flow.weight)  # identity warp at start
        nn.init.zeros_(self.flow.bias)
        self.lat2 = nn.Conv2d(w2, w1, 1)
        self.dec1 = nn.Conv2d(w1 + 2, w1, 3, padding=1)
        self.lat1 = nn.Conv2d(w1, w0, 1)
        self.head = nn.Conv2d(w0 + 4, 5, 3, padding=1)
        with torch.no_grad():
            self.head.weight.mul_(0.1)
            self.head.bias.zero_()
            self.head.bias[4] = -3.0  # mask ~0.05: the output starts as the (warped) source

    # ------------------------------------------------------------------ the two halves
    def encode(self, source: Tensor) -> AnimatorState:
        """``(B, 4, S, S)`` source in [-1, 1] -> :class:`AnimatorState` (with gradients)."""
        e1 = _act(self.down1(source))  # (B, w1, S/2, S/2)
        e2 = _act(self.down2(e1))  # (B, w2, S/4, S/4)
        e3 = _act(self.down3(e2))  # (B, w3, S/8, S/8)
        for blk in self.enc_blocks:
            e3 = blk(e3)
        g = _act(self.global_fc(e3.mean(dim=(2, 3))))  # (B, ctrl_hidden)
        return AnimatorState(source, e1, e2, e3, g)

    def decode(
        self, source: Tensor, e1: Tensor, e2: Tensor, e3: Tensor, g: Tensor, controls: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One frame from the state tensors and ``(B, 5)`` controls (natural ranges).

        Returns ``(frame, flow, mask, gen)``: ``(B, 4, S, S)`` in [-1, 1], ``(B, 2, S, S)``
        grid offsets, ``(B, 1, S, S)`` in [0, 1] and the generated RGBA ``(B, 4, S, S)``. A state of batch 1 with ``B`` controls
        renders ``B`` frames of the one avatar.
        """
        b = controls.shape[0]
        if source.shape[0] != b:  # one avatar, several expressions
            source, e1, e2, e3, g = (t.expand(b, *t.shape[1:]) for t in (source, e1, e2, e3, g))
        c = controls * self.ctrl_scale + self.ctrl_offset
        h = _act(self.ctrl_fc1(torch.cat([c, g], 1)))
        f3, f2, f1 = self.ctrl_fc2(h).split(self.film_sizes, dim=1)

        x3 = self.dec3(_film(e3, f3), _coords(e3.shape[2], e3.shape[3], e3).expand(b, -1, -1, -1))
        x2 = F.interpolate(self.lat3(x3), scale_factor=2.0, mode="nearest") + _film(e2, f2)
        x2 = _act(self.dec2(torch.cat([x2, _coords(x2.shape[2], x2.shape[3], x2).expand(b, -1, -1, -1)], 1)))
        flow = torch.tanh(self.flow(x2)) * self.max_flow  # (B, 2, S/4, S/4)
        x1 = F.interpolate(self.lat2(x2), scale_factor=2.0, mode="nearest") + _film(e1, f1)
        x1 = _act(self.dec1(torch.cat([x1, _coords(x1.shape[2], x1.shape[3], x1).expand(b, -1, -1, -1)], 1)))

        size = source.shape[-2:]
        flow = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)  # (B, 2, S, S)
        grid = _coords(size[0], size[1], flow) + flow  # (B, 2, S, S)
        warped = F.grid_sample(
            source, grid.permute(0, 2, 3, 1), mode="bilinear", padding_mode="border", align_corners=False
        )
        up = F.interpolate(self.lat1(x1), scale_factor=2.0, mode="nearest")  # (B, w0, S, S)
        head = self.head(torch.cat([up, warped], 1))  # (B, 5, S, S)
        gen = torch.tanh(head[:, :4])
        mask = torch.sigmoid(head[:, 4:5])
        frame = warped + mask * (gen - warped)
        return frame, flow, mask, gen

    def forward(self, source: Tensor, controls: Tensor) -> Tensor:
        """Training/export entry point: ``(B, 4, S, S)`` + ``(B, 5)`` -> ``(B, 4, S, S)``."""
        st = self.encode(source)
        return self.decode(*st.tensors(), controls)[0]

    # ------------------------------------------------------------------ inference API
    @torch.inference_mode()
    def prepare(self, avatar: Any) -> AnimatorState:
        """Encode an avatar once: an ``(H, W, 3|4)`` uint8 array, a PIL image, or a
        ``(B, 3|4, H, W)`` tensor in [-1, 1]; resized to :attr:`resolution`."""
        p = next(self.parameters())
        x = image_to_tensor(avatar, self.resolution).to(p.device, p.dtype)
        return self.encode(x)

    @torch.inference_mode()
    def render(self, state: AnimatorState, controls: ControlsLike) -> Tensor:
        """One frame (or ``B`` frames for ``(B, 5)`` controls): ``(B, 4, S, S)`` in [-1, 1]."""
        c = controls_tensor(controls, device=state.source.device)
        return self.decode(*state.tensors(), c)[0].clamp_(-1, 1)

    def render_image(self, state: AnimatorState, controls: ControlsLike) -> np.ndarray:
        """One frame as an ``(S, S, 4)`` uint8 RGBA array, its alpha cleaned."""
        return tensor_to_image(self.render(state, controls), clean=True)

    def animate(self, avatar: Any, controls: ControlsLike) -> np.ndarray:
        """``render_image(prepare(avatar), controls)`` for a one-off frame."""
        return self.render_image(self.prepare(avatar), controls)

    def decoder_flops(self, size: int | None = None) -> int:
        """Approximate multiply-adds of one :meth:`render` at ``size`` (default: resolution)."""
        s = size or self.resolution
        total = 0
        for m, res in (
            (self.dec3.conv1, s // 8),
            (self.dec3.conv2, s // 8),
            (self.lat3, s // 8),
            (self.dec2, s // 4),
            (self.flow, s // 4),
            (self.lat2, s // 4),
            (self.dec1, s // 2),
            (self.lat1, s // 2),
            (self.head, s),
        ):
            k = m.kernel_size[0] * m.kernel_size[1]
            total += res * res * m.in_channels * m.out_channels * k
        return total


# --------------------------------------------------------------------------- the discriminator
@register_model("animator", "discriminator")
class AnimatorDiscriminator(ConfigModule):
    """Conditional PatchGAN: ``(source, image, controls)`` -> ``(B, 1, S/8, S/8)`` logits.

    The controls enter as 5 constant planes, the source as 4 more channels (pix2pix-style
    conditioning), so D judges "is this the source's character with these controls", not only
    "is this a plausible avatar". Spectral norm keeps it from overpowering the reconstruction term.

    Args:
        width: channels of the first layer (then 2x, 4x).
        layers: stride-2 convolutions (3: each logit sees a ~40 px patch).
    """

    def __init__(self, width: int = 32, layers: int = 3) -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        chans = [4 + 4 + len(CONTROL_NAMES)] + [width * min(2**i, 8) for i in range(layers)]
        self.convs = nn.ModuleList(
            sn(nn.Conv2d(chans[i], chans[i + 1], 4, stride=2, padding=1)) for i in range(layers)
        )
        self.out = sn(nn.Conv2d(chans[-1], 1, 3, padding=1))

    def forward(self, source: Tensor, image: Tensor, controls: Tensor) -> Tensor:
        c = (controls * 2.0 - 1.0)[:, :2]  # eye_open, mouth_open in [-1, 1]
        c = torch.cat([c, controls[:, 2:]], 1)
        planes = c[:, :, None, None].expand(-1, -1, *image.shape[-2:])
        x = torch.cat([source, image, planes], 1)
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
        return self.out(x)


# --------------------------------------------------------------------------- a faster torch path
class FrameDecoder(nn.Module):
    """One frame as a module of tensors only: ``(*state.tensors(), controls) -> (B, C, H, W)``
    in ``[-1, 1]``, the graph that TorchScript (:class:`FrozenAnimator`) and ONNX export trace."""

    def __init__(self, animator: ExpressionAnimator) -> None:
        super().__init__()
        self.animator = animator

    def forward(
        self, source: Tensor, e1: Tensor, e2: Tensor, e3: Tensor, g: Tensor, controls: Tensor
    ) -> Tensor:
        return self.animator.decode(source, e1, e2, e3, g, controls)[0].clamp(-1, 1)


class FrozenAnimator:
    """An animator whose per-frame decoder is traced and frozen with TorchScript.

    Same API as :class:`ExpressionAnimator` (``prepare``, ``render``, ``render_image``,
    ``animate``, ``resolution``) and the same numbers (up to float rounding). Freezing
    folds the constants (coordinate planes, control scaling) and removes Python overhead
    per layer; measured ~20% faster per frame at 128 px on the 2-core CPU (docs/animate.md).
    The decoder is traced on the first frame of each state shape (a few hundred ms once).
    For inference only: later changes to the animator's weights are not seen.
    """

    def __init__(self, animator: ExpressionAnimator) -> None:
        self.animator = animator.eval()
        self.resolution = animator.resolution
        self._traced: dict[tuple[Any, ...], Any] = {}

    def prepare(self, avatar: Any) -> AnimatorState:
        """Encode an avatar (eager: it runs once)."""
        return self.animator.prepare(avatar)

    @torch.inference_mode()
    def render(self, state: AnimatorState, controls: ControlsLike) -> Tensor:
        """``(B, 4, S, S)`` frames in [-1, 1], like :meth:`ExpressionAnimator.render`."""
        import warnings

        c = controls_tensor(controls, device=state.source.device)
        tensors = state.tensors()
        if state.batch != c.shape[0]:
            tensors = tuple(t.expand(c.shape[0], *t.shape[1:]).contiguous() for t in tensors)
        key = (tuple(tensors[0].shape), tensors[0].device, tensors[0].dtype)
        fn = self._traced.get(key)
        if fn is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python code
                fn = torch.jit.freeze(
                    torch.jit.trace(FrameDecoder(self.animator).eval(), (*tensors, c), check_trace=False)
                )
            self._traced[key] = fn
        return fn(*tensors, c)

    def render_image(self, state: AnimatorState, controls: ControlsLike) -> np.ndarray:
        """One frame as an ``(S, S, 4)`` uint8 RGBA array, its alpha cleaned."""
        return tensor_to_image(self.render(state, controls), clean=True)

    def animate(self, avatar: Any, controls: ControlsLike) -> np.ndarray:
        """``render_image(prepare(avatar), controls)``."""
        return self.render_image(self.prepare(avatar), controls)
