"""StyleGAN2-class generator and residual discriminator in pure PyTorch (no custom CUDA ops).

What is implemented, and where it comes from (Karras et al. 2020, "Analyzing and Improving the
Image Quality of StyleGAN" = *StyleGAN2*; Karras et al. 2020, "Training Generative Adversarial
Networks with Limited Data" = *StyleGAN2-ADA*, whose reference code this file mirrors):

* **Mapping network** ``z -> w``: pixel-norm of ``z`` ("normalize_2nd_moment"), an MLP of
  equalized-lr fully-connected layers with a 0.01 learning-rate multiplier, a tracked average
  ``w_avg`` (EMA with beta 0.995 during training) and the truncation trick
  ``w' = w_avg + psi * (w - w_avg)`` (optionally only for the first ``truncation_cutoff`` ws).
  Conditional models embed each categorical label (row ``num_classes`` = "unknown"), normalise the
  embedding and concatenate it to ``z`` -- the StyleGAN2-ADA conditional scheme.
* **Synthesis network**: a learned 4x4 constant, then one block per resolution with two
  *modulated/demodulated* 3x3 convolutions (StyleGAN2 Sec. 2.2: the per-sample style scales the
  weights' input channels, and each output channel is renormalised to unit expected std instead of
  using AdaIN), per-layer noise with a learned strength, and the *skip* output architecture
  (StyleGAN2 Fig. 7: every block has a 1x1 toRGB whose output is added to the upsampled image of
  the previous block). Upsampling is bilinear x2 (``align_corners=False``), which is exactly the
  separable [1, 3, 3, 1] / 4 filter StyleGAN2 uses (with edge clamping instead of zero padding).
* **Style-mixing regularisation** (StyleGAN Sec. 3.1): in training mode each sample, with
  probability ``mixing_prob``, takes ws from a second latent after a random crossover index.
* **Discriminator**: StyleGAN2's *resnet* D: fromRGB, residual blocks (two 3x3 convs + a 1x1
  skip, each downsampling by 2x2 average pooling, summed with gain sqrt(0.5)), the minibatch
  standard-deviation layer (Progressive GAN Sec. 3), a 3x3 conv, an FC layer and the output layer;
  conditional models use the StyleGAN2-ADA projection ``<out(x), cmap(c)> / sqrt(cmap_dim)``.
* **Equalized learning rate** everywhere (Progressive GAN Sec. 4.1): parameters are stored as
  N(0, 1) (divided by the lr multiplier) and scaled by ``lr_mul / sqrt(fan_in)`` at run time, so
  Adam's per-parameter step is the same for every layer. The 0.01 mapping multiplier is built into
  the layers: the trainer needs no per-parameter-group learning rates.

Default sizes (``channel_base=2048, channel_max=256, z_dim=w_dim=256, mapping_layers=4``) are
chosen for CPU training at 64 px: channels per resolution are ``min(channel_base // res,
channel_max)`` = 256 @ 4, 256 @ 8, 128 @ 16, 64 @ 32, 32 @ 64; about 3.18 M generator (0.26 M
of them in the mapping MLP) and 3.51 M discriminator parameters at 64 px. StyleGAN2's paper
configuration is ``channel_base=32768, channel_max=512, z_dim=w_dim=512, mapping_layers=8``
(StyleGAN2-ADA uses 2 mapping layers for its small-data "auto" configuration); 4 is a middle
ground that costs little here. Use ``channel_base=4096`` or more on a GPU.

Modulated convolution has two exact implementations (``modconv=``):

* ``"scaled"`` (default; StyleGAN2-ADA ``fused_modconv=False``): scale input activations by the
  styles, run one ordinary convolution with the shared weight, scale outputs by the
  demodulation coefficients. Identical maths; at 64 px, batch 32 on 2 CPU cores a G
  forward+backward takes ~0.5 s vs ~1.5-2 s for "grouped" (per-sample weight gradients are costly).
* ``"grouped"`` (StyleGAN2 Appendix B / ADA ``fused_modconv=True``): build per-sample weights and
  run a grouped convolution with ``groups=batch``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from avatarforge.models.base import ConfigModule
from avatarforge.models.gan_api import (
    EMPTY_CODE_DIMS,
    check_channels,
    check_labels,
    check_resolution,
    normalize_label_dims,
)
from avatarforge.models.layers import LabelEmbedding
from avatarforge.models.registry import register_model

__all__ = [
    "MappingNetwork",
    "MinibatchStdDev",
    "StyleGANDiscriminator",
    "StyleGANGenerator",
    "SynthesisNetwork",
    "modulated_conv2d",
]

#: Leaky-ReLU slope and the gain that restores unit variance after it (StyleGAN2 ``bias_act``).
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
NOISE_MODES = ("random", "const", "none")
MODCONV_IMPLS = ("scaled", "grouped")


# ----------------------------------------------------------------------------- helpers
def _channels(res: int, channel_base: int, channel_max: int) -> int:
    """StyleGAN2's width schedule: ``min(channel_base // res, channel_max)`` (at least 1)."""
    return max(1, min(channel_base // res, channel_max))


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Pixel norm: scale each vector to unit RMS (StyleGAN applies it to ``z`` and embeddings)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def _act_gain(activation: str, gain: float) -> float:
    """The factor a layer's output is scaled by: ``gain``, times sqrt(2) after an lrelu.

    Layers fold it into their (small) weight and bias instead of multiplying the (large)
    activations: leaky ReLU is positively homogeneous, ``lrelu(y) * g == lrelu(y * g)`` for
    ``g > 0``, so ``lrelu(conv(x, w) + b) * g == lrelu(conv(x, w * g) + b * g)``. Same
    function, one full-size multiply less forward and backward.
    """
    if gain <= 0:
        raise ValueError(f"gain must be positive, got {gain}")
    return gain * (LRELU_GAIN if activation == "lrelu" else 1.0)


def _upsample2x(x: torch.Tensor) -> torch.Tensor:
    # Bilinear x2 == separable [1,3,3,1]/4 FIR upsampling (StyleGAN2 upfirdn2d), edges clamped.
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def _randn_like_on(
    shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Standard normal on ``like``'s device/dtype, drawn from ``generator`` (on its own device)."""
    if generator is None:
        return torch.randn(shape, device=like.device, dtype=like.dtype)
    out = torch.randn(shape, generator=generator, device=generator.device)
    return out.to(device=like.device, dtype=like.dtype)


def _prepare_labels(
    labels: torch.Tensor | None, label_dims: list[int], batch: int, device: torch.device
) -> torch.Tensor | None:
    """Labels as LongTensor ``(B, len(label_dims))``, or ``None`` for an unconditional model.

    Follows :func:`avatarforge.models.gan_api.check_labels` (unconditional models ignore labels;
    shape and dtype are checked, values are not -- that would sync the device every step).
    Column ``i`` holds ``[0, label_dims[i]]``; index ``label_dims[i]`` is "unknown" (embeddings
    have ``num_classes + 1`` rows). Extensions: ``labels=None`` on a conditional model and
    negative values both mean "unknown", and ``(B,)`` is accepted for a single label head.
    """
    if not label_dims:
        return None
    unknown = torch.tensor(label_dims, device=device, dtype=torch.long)
    if labels is None:
        return unknown.expand(batch, -1)
    if labels.ndim == 1 and len(label_dims) == 1:
        labels = labels[:, None]
    labels = check_labels(labels, label_dims, batch)
    labels = labels.to(device=device, dtype=torch.long)
    return torch.where(labels < 0, unknown.expand_as(labels), labels)


# ----------------------------------------------------------------------------- equalized-lr layers
class EqualLinear(nn.Module):
    """Fully-connected layer with equalized learning rate (weights scaled at run time).

    ``weight`` is stored as ``N(0, 1) / lr_mul`` and multiplied by ``lr_mul / sqrt(in_features)``
    in ``forward``; ``lr_mul=0.01`` gives the mapping network its 100x smaller effective learning
    rate (StyleGAN Sec. C). With ``spectral=True`` the weight is spectrally normalised instead
    (the run-time gain is dropped so the layer stays 1-Lipschitz).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: str = "linear",
        spectral: bool = False,
    ) -> None:
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / (1.0 if spectral else lr_mul))
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul)) if bias else None
        self.weight_gain = 1.0 if spectral else lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul
        if spectral:
            nn.utils.parametrizations.spectral_norm(self, "weight")

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        g = _act_gain(self.activation, gain)  # folded into w and b (see _act_gain)
        w = self.weight * (self.weight_gain * g)
        b = self.bias * (self.bias_gain * g) if self.bias is not None else None
        x = F.linear(x, w, b)
        return F.leaky_relu(x, LRELU_SLOPE) if self.activation == "lrelu" else x

    def extra_repr(self) -> str:
        return f"in={self.weight.shape[1]}, out={self.weight.shape[0]}, act={self.activation}"


class EqualConv2d(nn.Module):
    """Conv layer with equalized learning rate; ``down=True`` average-pools 2x2 *before* the conv.

    StyleGAN2 blurs with [1,3,3,1] and convolves with stride 2; pooling first then convolving at
    the lower resolution is the cheap pure-PyTorch equivalent (4x fewer MACs than conv-then-pool).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        down: bool = False,
        spectral: bool = False,
    ) -> None:
        super().__init__()
        self.activation = activation
        self.down = down
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 if spectral else 1.0 / math.sqrt(in_channels * kernel_size**2)
        if spectral:
            nn.utils.parametrizations.spectral_norm(self, "weight")

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        if self.down:
            x = F.avg_pool2d(x, 2)  # (B, C, H/2, W/2)
        g = _act_gain(self.activation, gain)  # folded into w and b (see _act_gain)
        b = self.bias * g if self.bias is not None else None
        x = F.conv2d(x, self.weight * (self.weight_gain * g), b, padding=self.padding)
        return F.leaky_relu(x, LRELU_SLOPE) if self.activation == "lrelu" else x

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}->{o}, k={k}, act={self.activation}, down={self.down}"


# ----------------------------------------------------------------------------- modulated conv
def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: bool = False,
    noise: torch.Tensor | None = None,
    impl: str = "scaled",
    channels_last: bool = False,
    gain: float = 1.0,
) -> torch.Tensor:
    """StyleGAN2 modulated (and demodulated) convolution, 'same' padding.

    Args:
        x: ``(B, I, H, W)`` input activations.
        weight: ``(O, I, k, k)`` shared weight.
        styles: ``(B, I)`` per-sample input-channel scales from the affine layer.
        demodulate: divide each output channel by ``||w * s||_2`` (StyleGAN2 Eq. 3) so activations
            keep unit std without AdaIN's instance normalisation (which caused the blob artifacts).
        up: bilinear x2 upsampling before the convolution.
        noise: optional ``(B or 1, 1, H', W')`` added after demodulation (before bias/activation).
        impl: ``"scaled"`` (scale activations, shared conv, scale outputs) or ``"grouped"``
            (per-sample weights, ``groups=B`` convolution). Both compute the same function.
        channels_last: ("scaled" only) pass the weight in channels-last layout, which makes oneDNN
            run the convolutions (and everything downstream) in NHWC: ~20% faster on CPU.
        gain: multiply the result (before adding ``noise``) by this; folded into the (B, O)
            demodulation coefficients, so it costs nothing.

    Returns:
        ``(B, O, H', W')`` with ``H' = 2H`` if ``up`` else ``H``.

    Under autocast the large tensors stay in the autocast dtype: the small per-sample factors
    are computed in fp32 and cast down, never the activations up.
    """
    batch, in_ch = x.shape[:2]
    out_ch, _, kh, kw = weight.shape
    dcoefs = None
    if demodulate:
        # sum_{i,k} (w_oik * s_bi)^2 = sum_i s_bi^2 * sum_k w_oik^2, so the (B, O) demodulation
        # coefficients need no (B, O, I, k, k) tensor: one (B, I) @ (I, O) matmul, in fp32
        # even under autocast (it is tiny, and bf16 would put 0.4 % noise on every scale).
        with torch.autocast(x.device.type, enabled=False):
            wsq = weight.float().square().sum(dim=(2, 3)).t()  # (I, O)
            dcoefs = (styles.float().square() @ wsq + 1e-8).rsqrt()  # (B, O)
        if gain != 1.0:
            dcoefs = dcoefs * gain
    elif gain != 1.0:
        dcoefs = torch.full((batch, out_ch), gain, device=x.device)
    if impl == "scaled":
        if channels_last:
            weight = weight.contiguous(memory_format=torch.channels_last)
        x = x * styles.to(x.dtype)[:, :, None, None]  # modulate activations instead of weights
        if up:
            x = _upsample2x(x)  # (B, I, 2H, 2W)
        x = F.conv2d(x, weight, padding=(kh // 2, kw // 2))  # (B, O, H', W')
        if dcoefs is not None:
            d = dcoefs.to(x.dtype)[:, :, None, None]
            # One pass for demodulation and noise: noise + x * d.
            return x * d if noise is None else torch.addcmul(noise.to(x.dtype), x, d)
    elif impl == "grouped":
        w = weight[None] * styles[:, None, :, None, None]  # (B, O, I, k, k)
        if dcoefs is not None:
            w = w * dcoefs[:, :, None, None, None]
        if up:
            x = _upsample2x(x)
        h, wd = x.shape[2:]
        x = F.conv2d(
            x.reshape(1, batch * in_ch, h, wd),
            w.reshape(batch * out_ch, in_ch, kh, kw),
            padding=(kh // 2, kw // 2),
            groups=batch,
        ).reshape(batch, out_ch, h, wd)
    else:
        raise ValueError(f"modconv impl must be one of {MODCONV_IMPLS}, got {impl!r}")
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv + noise + bias + lrelu: one style-controlled layer of the generator."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        up: bool = False,
        impl: str = "scaled",
        channels_last: bool = False,
        use_noise: bool = True,
    ) -> None:
        super().__init__()
        self.up = up
        self.use_noise = use_noise
        self.impl = impl
        self.channels_last = channels_last
        self.resolution = resolution
        # Affine "A" (StyleGAN Fig. 1): w -> per-input-channel style, bias 1 so styles start at ~1.
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        if use_noise:
            # "B": per-pixel noise, one map shared by all channels, learned strength initialised to 0.
            self.noise_strength = nn.Parameter(torch.zeros([]))
            # Fixed noise for deterministic sampling (noise_mode="const"); saved with the weights.
            self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise_mode: str = "random",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        # x: (B, I, H, W), w: (B, w_dim) -> (B, O, R, R)
        styles = self.affine(w)  # (B, I)
        noise = None
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if not self.use_noise:
            pass  # built without noise inputs: every mode is "none"
        elif noise_mode == "random":
            r = self.resolution
            noise = _randn_like_on((x.shape[0], 1, r, r), x, generator) * self.noise_strength
        elif noise_mode == "const":
            noise = self.noise_const * self.noise_strength  # (R, R), broadcasts
        # The lrelu's sqrt(2) gain is folded into the demodulation, noise and bias (_act_gain).
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            up=self.up,
            noise=noise * LRELU_GAIN if noise is not None else None,
            impl=self.impl,
            channels_last=self.channels_last,
            gain=LRELU_GAIN,
        )
        bias = (self.bias * LRELU_GAIN).to(x.dtype)  # cast the bias, not the activations
        return F.leaky_relu(x + bias[:, None, None], LRELU_SLOPE)

    def extra_repr(self) -> str:
        o, i = self.weight.shape[:2]
        return f"{i}->{o}, res={self.resolution}, up={self.up}, noise={self.use_noise}"


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation to image channels (StyleGAN2 skip generator)."""

    def __init__(
        self,
        in_channels: int,
        img_channels: int,
        w_dim: int,
        impl: str = "scaled",
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.impl = impl
        self.channels_last = channels_last
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(img_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(img_channels))
        # No demodulation here, so the equalized-lr gain must be applied (ADA applies it to styles).
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain  # (B, I)
        x = modulated_conv2d(  # (B, C, H, W)
            x, self.weight, styles, demodulate=False, impl=self.impl, channels_last=self.channels_last
        )
        return x + self.bias[:, None, None]


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: [const | up-conv0], conv1, toRGB (skip arch)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        impl: str = "scaled",
        channels_last: bool = False,
        use_noise: bool = True,
    ) -> None:
        super().__init__()
        kw = {"impl": impl, "channels_last": channels_last}
        lkw = {**kw, "use_noise": use_noise}
        self.resolution = resolution
        self.is_first = resolution == 4
        if self.is_first:
            # StyleGAN: synthesis starts from a learned constant instead of from z.
            self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
            self.conv0 = None
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True, **lkw)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, **lkw)
        self.torgb = ToRGB(out_channels, img_channels, w_dim, **kw)
        self.num_conv = 1 if self.is_first else 2

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: str,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # ws: (B, num_conv + 1, w_dim); the toRGB w is shared with the next block's conv0 (ADA).
        i = 0
        if self.conv0 is None:
            x = self.const[None].expand(ws.shape[0], -1, -1, -1)  # (B, C, 4, 4)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode, generator)  # (B, C, R, R)
            i = 1
        x = self.conv1(x, ws[:, i], noise_mode, generator)
        y = self.torgb(x, ws[:, i + 1])  # (B, img_C, R, R)
        img = y if img is None else _upsample2x(img) + y
        return x, img


# ----------------------------------------------------------------------------- G subnetworks
class MappingNetwork(nn.Module):
    """``z (+ labels) -> ws (B, num_ws, w_dim)`` with w_avg tracking and truncation."""

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        num_ws: int,
        num_layers: int,
        label_dims: list[int],
        lr_mul: float = 0.01,
        w_avg_beta: float = 0.995,
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.label_dims = list(label_dims)
        self.w_avg_beta = w_avg_beta
        # StyleGAN2-ADA's ``embed`` FC layer on one-hot labels, as per-head lookup tables summed
        # (N(0, 1) rows; the scale does not matter, the result is pixel-normalised).
        self.embed = (
            LabelEmbedding(self.label_dims, w_dim, reduce="sum", init_std=None) if self.label_dims else None
        )
        in_dim = z_dim + (w_dim if self.embed is not None else 0)
        dims = [in_dim] + [w_dim] * num_layers
        self.layers = nn.ModuleList(
            EqualLinear(a, b, lr_mul=lr_mul, activation="lrelu") for a, b in itertools.pairwise(dims)
        )
        # Running mean of w (StyleGAN truncation trick centre), updated only in training mode.
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(
        self,
        z: torch.Tensor,
        labels: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_w_avg: bool = True,
    ) -> torch.Tensor:
        """Map ``z (B, z_dim)`` to ``ws (B, num_ws, w_dim)``.

        In training mode (and ``update_w_avg``) the batch-mean w is folded into ``w_avg`` with
        ``beta = w_avg_beta``. ``truncation_psi < 1`` pulls ws toward ``w_avg``; with
        ``truncation_cutoff=k`` only the first ``k`` ws (coarse layers) are truncated.
        """
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (B, {self.z_dim}), got {tuple(z.shape)}")
        x = normalize_2nd_moment(z)  # (B, z_dim)
        labels = _prepare_labels(labels, self.label_dims, z.shape[0], z.device)
        if self.embed is not None:
            y = normalize_2nd_moment(self.embed(labels).to(x.dtype))  # (B, w_dim)
            x = torch.cat([x, y], dim=1)  # ADA conditional: concat normalised z and label embedding
        for layer in self.layers:
            x = layer(x)  # (B, w_dim)
        if update_w_avg and self.training and self.w_avg_beta is not None:
            with torch.no_grad():
                self.w_avg.copy_(
                    x.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta)
                )  # fp32 running mean under bf16 autocast
        ws = x[:, None].expand(-1, self.num_ws, -1)  # (B, num_ws, w_dim)
        if truncation_psi != 1.0:
            cutoff = self.num_ws if truncation_cutoff is None else int(truncation_cutoff)
            avg = self.w_avg.to(ws.dtype)
            ws = torch.cat([avg.lerp(ws[:, :cutoff], truncation_psi), ws[:, cutoff:]], dim=1)
        return ws


class SynthesisNetwork(nn.Module):
    """``ws (B, num_ws, w_dim) -> images (B, C, R, R)`` (skip architecture, linear output)."""

    def __init__(
        self,
        w_dim: int,
        resolution: int,
        img_channels: int,
        channel_base: int,
        channel_max: int,
        impl: str = "scaled",
        channels_last: bool = False,
        noise_max_res: int | None = None,
    ) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.resolution = resolution
        log2 = int(math.log2(resolution))
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        self.blocks = nn.ModuleList()
        for res in self.block_resolutions:
            in_ch = _channels(res // 2, channel_base, channel_max) if res > 4 else 0
            out_ch = _channels(res, channel_base, channel_max)
            use_noise = noise_max_res is None or res <= noise_max_res
            self.blocks.append(
                SynthesisBlock(in_ch, out_ch, w_dim, res, img_channels, impl, channels_last, use_noise)
            )
        # StyleGAN2-ADA ws bookkeeping: each block consumes num_conv ws, and the last toRGB one
        # more -> num_ws = 2 * log2(R) - 2 (10 at 64 px).
        self.num_ws = sum(b.num_conv for b in self.blocks) + 1

    def ws_layout(self) -> list[list[tuple[str, nn.Module]]]:
        """For each ws index, the (name, layer) pairs whose affine reads it (for SeFa etc.)."""
        layout: list[list[tuple[str, nn.Module]]] = [[] for _ in range(self.num_ws)]
        idx = 0
        for b in self.blocks:
            i = idx
            if b.conv0 is not None:
                layout[i].append((f"b{b.resolution}.conv0", b.conv0))
                i += 1
            layout[i].append((f"b{b.resolution}.conv1", b.conv1))
            layout[i + 1].append((f"b{b.resolution}.torgb", b.torgb))
            idx += b.num_conv
        return layout

    def forward(
        self, ws: torch.Tensor, noise_mode: str = "const", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape (B, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        x = img = None
        idx = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, idx : idx + block.num_conv + 1], noise_mode, generator)
            idx += block.num_conv
        # (B, C, R, R), linear (no tanh), roughly in [-1, 1] once trained; NCHW-contiguous even when
        # the convolutions ran channels-last, so callers may .view() it.
        return img.contiguous()


# ----------------------------------------------------------------------------- generator
@register_model("stylegan", role="generator")
class StyleGANGenerator(ConfigModule):
    """StyleGAN2 generator: mapping network + modulated-conv synthesis network (skip outputs).

    Args:
        resolution: output size, power of two in 32..256.
        channels: 3 (RGB) or 4 (RGBA).
        z_dim: latent size.
        w_dim: intermediate latent (style) size; also the label-embedding size.
        mapping_layers: depth of the mapping MLP (StyleGAN2: 8; 4 is plenty at <=256 px).
        mapping_lr_mul: learning-rate multiplier of the mapping layers (StyleGAN: 0.01).
        channel_base, channel_max: width of resolution ``r`` is ``min(channel_base // r,
            channel_max)``; defaults keep 64 px at ~3.2 M parameters.
        label_dims: number of classes per categorical label head; ``[]`` = unconditional.
        mixing_prob: style-mixing regularisation probability in training mode (StyleGAN: 0.9).
        w_avg_beta: EMA decay of the tracked ``w_avg`` (StyleGAN: 0.995).
        modconv: ``"scaled"`` or ``"grouped"`` modulated-conv implementation (same function;
            "scaled" is ~3.5x faster for forward+backward on CPU at 64 px).
        channels_last: run the "scaled" convolutions in NHWC layout (~20% faster on CPU; values
            unaffected, images are returned NCHW-contiguous).
        noise_max_res: per-pixel noise inputs only in blocks up to this resolution (``None``:
            every block, StyleGAN2; ``0``: none, as in StyleGAN3). Layers built without noise
            have no ``noise_strength``/``noise_const`` and ignore ``noise_mode``.

    The common GAN interface: ``resolution``, ``channels``, ``z_dim``, ``label_dims``,
    ``code_dims`` (no latent codes: ``{"categorical": [], "continuous": 0}``), :meth:`sample_z`
    and :meth:`forward`. StyleGAN extras: ``mapping``, ``synthesis``, ``num_ws``, ``w_dim``,
    :meth:`mix`, :meth:`style_affine_weights`.
    """

    def __init__(
        self,
        resolution: int = 64,
        channels: int = 3,
        z_dim: int = 256,
        w_dim: int = 256,
        mapping_layers: int = 4,
        mapping_lr_mul: float = 0.01,
        channel_base: int = 2048,
        channel_max: int = 256,
        label_dims: list[int] | None = None,
        mixing_prob: float = 0.9,
        w_avg_beta: float = 0.995,
        modconv: str = "scaled",
        channels_last: bool = True,
        noise_max_res: int | None = None,
    ) -> None:
        super().__init__()
        check_resolution(resolution)
        check_channels(channels)
        if modconv not in MODCONV_IMPLS:
            raise ValueError(f"modconv must be one of {MODCONV_IMPLS}, got {modconv!r}")
        if not 0.0 <= mixing_prob <= 1.0:
            raise ValueError(f"mixing_prob must be in [0, 1], got {mixing_prob}")
        if noise_max_res is not None and (isinstance(noise_max_res, bool) or int(noise_max_res) < 0):
            raise ValueError(
                f"noise_max_res must be null (noise at every resolution) or a resolution >= 0 "
                f"(0 = no noise inputs), got {noise_max_res!r}"
            )
        label_dims = normalize_label_dims(label_dims)
        self.resolution = resolution
        self.channels = channels
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.label_dims = label_dims
        self.code_dims: dict[str, Any] = dict(EMPTY_CODE_DIMS, categorical=[])
        self.mixing_prob = float(mixing_prob)
        self.synthesis = SynthesisNetwork(
            w_dim,
            resolution,
            channels,
            channel_base,
            channel_max,
            impl=modconv,
            channels_last=channels_last,
            noise_max_res=noise_max_res,
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim,
            w_dim,
            self.num_ws,
            mapping_layers,
            label_dims,
            lr_mul=mapping_lr_mul,
            w_avg_beta=w_avg_beta,
        )

    # ------------------------------------------------------------------ common interface
    def sample_z(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """``(n, z_dim)`` standard-normal latents (drawn on ``generator``'s device, then moved)."""
        if device is None:
            device = next(self.parameters()).device
        gen_device = generator.device if generator is not None else device
        return torch.randn(n, self.z_dim, generator=generator, device=gen_device).to(device)

    def forward(
        self,
        z: torch.Tensor,
        labels: torch.Tensor | None = None,
        codes: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str | None = None,
        mixing_generator: torch.Generator | None = None,
        noise_generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Generate images ``(B, C, R, R)`` (linear output, roughly [-1, 1]).

        Args:
            z: ``(B, z_dim)`` latents.
            labels: LongTensor ``(B, len(label_dims))`` (``-1``/``num_classes`` = unknown;
                ``None`` = all unknown for conditional models). Ignored if unconditional.
            codes: must be ``None`` (StyleGAN has no InfoGAN codes).
            truncation_psi, truncation_cutoff: truncation trick (see :class:`MappingNetwork`).
            noise_mode: ``"random"`` | ``"const"`` | ``"none"``; default ``"random"`` in
                training mode, ``"const"`` in eval mode (deterministic sampling).
            mixing_generator: RNG for style mixing (second latent, crossover, probability) in
                training mode; the global RNG if ``None``.
            noise_generator: RNG for ``noise_mode="random"``; the global RNG if ``None``.
        """
        if codes is not None:
            raise ValueError("StyleGAN generator takes no latent codes (code_dims is empty); pass codes=None")
        if noise_mode is None:
            noise_mode = "random" if self.training else "const"
        ws = self.mapping(z, labels, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        if self.training and self.mixing_prob > 0:
            ws = self._style_mixing(ws, z, labels, truncation_psi, truncation_cutoff, mixing_generator)
        return self.synthesis(ws, noise_mode=noise_mode, generator=noise_generator)

    def _style_mixing(
        self,
        ws: torch.Tensor,
        z: torch.Tensor,
        labels: torch.Tensor | None,
        truncation_psi: float,
        truncation_cutoff: int | None,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Style-mixing regularisation (StyleGAN Sec. 3.1), per sample rather than per batch.

        Each sample, with probability ``mixing_prob``, uses ws of a fresh latent for the layers
        from a crossover index drawn uniformly from ``[1, num_ws)`` on; this keeps adjacent
        styles from being correlated. The second mapping pass does not update ``w_avg`` (ADA).
        """
        batch = z.shape[0]
        z2 = _randn_like_on(tuple(z.shape), z, generator)
        dev = generator.device if generator is not None else z.device
        cutoff = torch.randint(1, self.num_ws, (batch,), generator=generator, device=dev)
        do_mix = torch.rand(batch, generator=generator, device=dev) < self.mixing_prob
        cutoff = torch.where(do_mix, cutoff, torch.full_like(cutoff, self.num_ws)).to(z.device)
        ws2 = self.mapping(z2, labels, truncation_psi, truncation_cutoff, update_w_avg=False)
        layer = torch.arange(self.num_ws, device=z.device)
        take2 = (layer[None] >= cutoff[:, None])[..., None]  # (B, num_ws, 1)
        return torch.where(take2, ws2, ws)

    # ------------------------------------------------------------------ StyleGAN extras
    def mix(
        self,
        z_coarse: torch.Tensor,
        z_fine: torch.Tensor,
        crossover: int,
        labels: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        noise_mode: str = "const",
        labels_fine: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Style mixing for inference: ws ``[:crossover]`` from ``z_coarse``, the rest from ``z_fine``.

        ``crossover=0`` reproduces ``z_fine``'s image, ``crossover=num_ws`` ``z_coarse``'s. Small
        crossovers (2-4 at 64 px) take pose/shape from ``z_coarse`` and colours/detail from
        ``z_fine``. ``labels_fine`` defaults to ``labels``. ``w_avg`` is not updated.
        """
        if not 0 <= crossover <= self.num_ws:
            raise ValueError(f"crossover must be in [0, {self.num_ws}], got {crossover}")
        if labels_fine is None:
            labels_fine = labels
        wa = self.mapping(z_coarse, labels, truncation_psi, update_w_avg=False)
        wb = self.mapping(z_fine, labels_fine, truncation_psi, update_w_avg=False)
        ws = torch.cat([wa[:, :crossover], wb[:, crossover:]], dim=1)  # (B, num_ws, w_dim)
        return self.synthesis(ws, noise_mode=noise_mode)

    def style_affine_weights(self) -> list[torch.Tensor]:
        """Effective affine ("A") weights per ws index, for closed-form directions (SeFa).

        Entry ``i`` is ``(F_i, w_dim)``: the equalized-lr-scaled weights of every layer whose style
        is computed from ``ws[:, i]`` (convs, and toRGB layers), concatenated along dim 0, in
        synthesis order. Entry 0 is the first (4x4) conv's modulation. SeFa: stack the entries
        of the chosen layers, take the top eigenvectors of ``A^T A`` as directions in w space.
        """
        out = []
        for entries in self.synthesis.ws_layout():
            mats = [layer.affine.weight.detach() * layer.affine.weight_gain for _, layer in entries]
            out.append(torch.cat(mats, dim=0))
        return out

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, channels={self.channels}, num_ws={self.num_ws}"


# ----------------------------------------------------------------------------- discriminator
# Not models.layers.MinibatchStdDev (the DCGAN family's): that one shrinks the group to the
# largest divisor of the batch (a batch of 5 becomes 5 groups of 1, whose std is 0) and works
# in the input's dtype; this one keeps groups of about group_size for any batch and computes
# the statistics in fp32 under bf16 autocast. The outputs differ for such batches, so trained
# StyleGAN discriminators keep theirs. Neither has parameters or buffers: no state-dict keys.
class MinibatchStdDev(nn.Module):
    """Minibatch standard deviation layer (Progressive GAN Sec. 3; StyleGAN2 D epilogue).

    Splits the batch into groups of about ``group_size`` samples, computes each feature's std over
    the group, averages it over features/pixels (per ``num_channels`` channel split) and appends the
    result as extra constant channels, letting D detect low sample diversity. Batch sizes not
    divisible by ``group_size`` are handled by using ``ceil(B / group_size)`` balanced groups
    (sizes differ by at most one); when ``B % group_size == 0`` the grouping matches StyleGAN2's
    (sample ``n`` belongs to group ``n % (B // group_size)``).
    """

    def __init__(self, group_size: int = 4, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        f = self.num_channels
        groups = -(-b // min(self.group_size, b))  # ceil
        gid = torch.arange(b, device=x.device) % groups  # (B,)
        counts = torch.bincount(gid, minlength=groups).to(x.dtype)[:, None, None, None, None]
        y = x.reshape(b, f, c // f, h, w).float()  # (B, F, C/F, H, W)
        mean = (
            torch.zeros((groups, *y.shape[1:]), device=x.device, dtype=y.dtype).index_add_(0, gid, y) / counts
        )
        dev = (y - mean[gid]).square()
        var = torch.zeros_like(mean).index_add_(0, gid, dev) / counts  # (G, F, C/F, H, W)
        std = (var + 1e-8).sqrt().mean(dim=(2, 3, 4))  # (G, F)
        std = std[gid].to(x.dtype)[:, :, None, None].expand(-1, -1, h, w)  # (B, F, H, W)
        return torch.cat([x, std], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class DiscriminatorBlock(nn.Module):
    """StyleGAN2 'resnet' D block: conv3x3 -> down-conv3x3, plus a 1x1 down skip; sum * sqrt(.5)."""

    def __init__(self, in_channels: int, out_channels: int, spectral: bool = False) -> None:
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, activation="lrelu", spectral=spectral)
        self.conv1 = EqualConv2d(
            in_channels, out_channels, 3, activation="lrelu", down=True, spectral=spectral
        )
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, down=True, spectral=spectral)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, I, R, R) -> (B, O, R/2, R/2); the sqrt(0.5) gains keep the sum's variance at 1.
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return x + y


@register_model("stylegan", role="discriminator")
class StyleGANDiscriminator(ConfigModule):
    """StyleGAN2 residual discriminator with minibatch-stddev and optional projection conditioning.

    Args:
        resolution: input size, power of two in 32..256.
        channels: 3 (RGB) or 4 (RGBA).
        channel_base, channel_max: width at resolution ``r`` is ``min(channel_base // r,
            channel_max)`` (same schedule as the generator).
        label_dims: classes per categorical head; ``[]`` = unconditional. Conditional D maps the
            labels (embedding + ``cmap_layers`` FC layers, lr multiplier 0.01 as in ADA) to
            ``cmap (B, cmap_dim)`` and returns ``<out(x), cmap> / sqrt(cmap_dim)``.
        cmap_dim: projection size (default: the 4x4 channel count).
        cmap_layers: depth of the label mapping MLP.
        mbstd_group_size: minibatch-stddev group size (0 disables the layer).
        mbstd_num_channels: number of stddev feature channels.
        spectral_norm: spectrally normalise every conv/FC weight (replaces equalized-lr scaling).
    """

    def __init__(
        self,
        resolution: int = 64,
        channels: int = 3,
        channel_base: int = 2048,
        channel_max: int = 256,
        label_dims: list[int] | None = None,
        cmap_dim: int | None = None,
        cmap_layers: int = 2,
        mbstd_group_size: int = 4,
        mbstd_num_channels: int = 1,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        check_resolution(resolution)
        check_channels(channels)
        label_dims = normalize_label_dims(label_dims)
        self.resolution = resolution
        self.channels = channels
        self.label_dims = label_dims
        sn = bool(spectral_norm)

        def ch(r: int) -> int:
            return _channels(r, channel_base, channel_max)

        log2 = int(math.log2(resolution))
        # ResNet D (StyleGAN2 Fig. 7c): fromRGB only at the input resolution.
        self.fromrgb = EqualConv2d(channels, ch(resolution), 1, activation="lrelu", spectral=sn)
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(ch(2**i), ch(2 ** (i - 1)), spectral=sn) for i in range(log2, 2, -1)
        )
        c4 = ch(4)
        if c4 % mbstd_num_channels != 0:
            raise ValueError(f"mbstd_num_channels={mbstd_num_channels} must divide {c4}")
        self.mbstd = MinibatchStdDev(mbstd_group_size, mbstd_num_channels) if mbstd_group_size > 0 else None
        extra = mbstd_num_channels if self.mbstd is not None else 0
        self.conv = EqualConv2d(c4 + extra, c4, 3, activation="lrelu", spectral=sn)
        self.fc = EqualLinear(c4 * 16, c4, activation="lrelu", spectral=sn)
        self.cmap_dim = (cmap_dim or c4) if label_dims else 0
        self.out = EqualLinear(c4, self.cmap_dim or 1, spectral=sn)
        if label_dims:
            self.embed = LabelEmbedding(label_dims, self.cmap_dim, reduce="sum", init_std=None)
            self.cmap_layers = nn.ModuleList(
                EqualLinear(self.cmap_dim, self.cmap_dim, lr_mul=0.01, activation="lrelu")
                for _ in range(cmap_layers)
            )
        else:
            self.embed = None
            self.cmap_layers = nn.ModuleList()

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B,)`` for images ``(B, C, R, R)`` (and labels ``(B, heads)`` if conditional)."""
        if images.ndim != 4 or images.shape[1:] != (self.channels, self.resolution, self.resolution):
            raise ValueError(
                f"images must have shape (B, {self.channels}, {self.resolution}, {self.resolution}), "
                f"got {tuple(images.shape)}"
            )
        labels = _prepare_labels(labels, self.label_dims, images.shape[0], images.device)
        x = self.fromrgb(images)  # (B, C_R, R, R)
        for block in self.blocks:
            x = block(x)  # halves the resolution down to 4x4
        if self.mbstd is not None:
            x = self.mbstd(x)  # (B, C_4 + F, 4, 4)
        x = self.conv(x)  # (B, C_4, 4, 4)
        x = self.fc(x.flatten(1))  # (B, C_4)
        x = self.out(x)  # (B, cmap_dim or 1)
        if self.embed is not None:
            cmap = normalize_2nd_moment(self.embed(labels).to(x.dtype))
            for layer in self.cmap_layers:
                cmap = layer(cmap)  # (B, cmap_dim)
            # Projection discriminator (Miyato & Koyama 2018) as in StyleGAN2-ADA.
            return (x * cmap).sum(dim=1) / math.sqrt(self.cmap_dim)
        return x[:, 0]
