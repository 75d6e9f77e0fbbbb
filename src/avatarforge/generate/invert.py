"""Inversion: find the latent of a user's image, so it can be edited with the sliders.

1. **Initialisation.** A VAE has an encoder: its posterior mean is the starting latent.
   A GAN has none (and a separate VAE's latent space means nothing to a GAN), so the start
   is the best of ``candidates`` random latents by pixel error -- for StyleGAN also the
   average ``w``.
2. **Optimisation** of the latent with Adam on losses that need no trained network:
   pixels (L1 by default, or MSE) plus ``1 - MS-SSIM`` (multi-scale structural similarity,
   Wang et al. 2003). StyleGAN optimises ``w+`` (one ``w`` per layer: much more expressive
   than a single ``w``, the usual choice for editing real images, Abdal et al. 2019);
   ``space="w"`` keeps one shared ``w``; other families optimise ``z``. The learning rate
   ramps up over the first 5 % of the steps and down (cosine) over the last 25 %, like
   StyleGAN2's projector.
3. The result reports PSNR and SSIM of the reconstruction (rendered exactly as the
   pipeline renders, uint8) against the target.

Example::

    pipe = GeneratorPipeline.from_pretrained("runs/00003-stylegan-64")
    res = invert(pipe, "me.png", steps=300)
    print(res.psnr)                                    # dB
    res.as_result().save("out/")                       # PNG with the latent in its metadata
    strip = slide(pipe, res.latent, sefa_directions(pipe)[0])
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avatarforge.generate.pipeline import GenerationResult, GeneratorPipeline, Latent

__all__ = ["InversionResult", "invert", "load_target", "ms_ssim"]

# MS-SSIM scale weights (Wang, Simoncelli & Bovik 2003), finest scale first.
_MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gauss(window: int, sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    x = torch.arange(window, device=device, dtype=dtype) - (window - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ms_ssim(
    x: Tensor, y: Tensor, data_range: float = 2.0, window: int = 7, sigma: float = 1.5, max_scales: int = 5
) -> Tensor:
    """Differentiable multi-scale SSIM per image ``(B,)`` for ``(B, C, H, W)`` images.

    As many scales (halving by 2x2 average pooling) as keep the image at least ``window``
    pixels wide, at most ``max_scales``; the standard scale weights, renormalised when
    fewer scales fit (a 32 px image gets 3 with the default 7-pixel window). Contrast-
    structure terms are clamped at 0 before the weighted product (as common
    implementations do) so the gradient stays defined.
    """
    if x.shape != y.shape:
        raise ValueError(f"images must have equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    side = min(x.shape[-2:])
    scales = 0
    while scales < max_scales and side >= window:
        scales += 1
        side //= 2
    if scales == 0:
        raise ValueError(f"MS-SSIM needs images of at least {window} pixels, got {tuple(x.shape[-2:])}")
    weights = torch.tensor(_MS_WEIGHTS[:scales], device=x.device, dtype=x.dtype)
    weights = weights / weights.sum()
    c = x.shape[1]
    g = _gauss(window, sigma, x.device, x.dtype)
    gh, gv = g.view(1, 1, 1, -1).expand(c, 1, 1, window), g.view(1, 1, -1, 1).expand(c, 1, window, 1)

    def filt(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, gh, groups=c), gv, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    terms = []
    for s in range(scales):
        mu_x, mu_y = filt(x), filt(y)
        sxx = filt(x * x) - mu_x**2
        syy = filt(y * y) - mu_y**2
        sxy = filt(x * y) - mu_x * mu_y
        cs = ((2 * sxy + c2) / (sxx + syy + c2)).flatten(1).mean(1)
        if s == scales - 1:
            lum = ((2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)).flatten(1).mean(1)
            terms.append(F.relu(cs * lum))
        else:
            terms.append(F.relu(cs))
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    stack = torch.stack(terms, 1).clamp_min(1e-8)  # (B, scales)
    return torch.exp((stack.log() * weights).sum(1))


def load_target(
    pipe: GeneratorPipeline, target: str | os.PathLike | np.ndarray | Tensor, fit: str = "crop"
) -> Tensor:
    """The target as ``(1, C, R, R)`` float in [-1, 1] at the model's size and channels.

    Files are decoded and resized like ``avatarforge data prepare`` does (centre crop, or
    ``fit="pad"``); RGBA into an RGB model is composited onto white, RGB into RGBA gets an
    opaque alpha. Arrays and tensors must already have the model's resolution.
    """
    from avatarforge.generate import vae_ops

    if isinstance(target, (str, os.PathLike)):
        target = vae_ops.load_images([target], pipe.G, fit=fit)
    x = vae_ops.to_model_input(pipe.G, target)
    if x.shape[0] != 1:
        raise ValueError(f"invert takes one image, got {x.shape[0]}")
    return x.detach().cpu()


@dataclass
class InversionResult:
    """What :func:`invert` found.

    Attributes:
        latent: the latent (StyleGAN: ``ws`` = w+, else ``z``) -- edit it with the sliders.
        image: the reconstruction ``(H, W, C)`` uint8, rendered as the pipeline renders.
        target: the target ``(H, W, C)`` uint8.
        psnr, ssim: of ``image`` vs ``target`` (dB; SSIM from :func:`avatarforge.eval.metrics.ssim`).
        init_psnr: PSNR of the starting point (how much the optimisation gained).
        losses: the loss after every step.
        params: settings (space, steps, lr, init, ...).
    """

    latent: Latent
    image: np.ndarray
    target: np.ndarray
    psnr: float
    ssim: float
    init_psnr: float
    losses: list[float] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def as_result(self, pipe: GeneratorPipeline) -> GenerationResult:
        """A one-image :class:`GenerationResult` (kind ``invert``) that saves with its latent."""
        params = pipe.record_params(
            "invert", noise_mode="const", rgba=None, psnr=self.psnr, ssim=self.ssim, **self.params
        )
        return GenerationResult(
            self.image[None], self.latent, params, [pipe.describe(self.latent)], store_latent=True
        )


def _lr_at(step: int, steps: int, lr: float) -> float:
    t = step / max(steps, 1)
    ramp_down = min(1.0, (1.0 - t) / 0.25)
    ramp_down = 0.5 - 0.5 * math.cos(ramp_down * math.pi)
    ramp_up = min(1.0, t / 0.05) if t < 0.05 else 1.0
    return lr * ramp_down * max(ramp_up, 0.05)


def _pixel_loss(kind: str) -> Callable[[Tensor, Tensor], Tensor]:
    if kind == "l1":
        return lambda a, b: (a - b).abs().flatten(1).mean(1)
    if kind == "mse":
        return lambda a, b: (a - b).pow(2).flatten(1).mean(1)
    raise ValueError(f"pixel loss must be 'l1' or 'mse', got {kind!r}")


@torch.no_grad()
def _best_of(
    pipe: GeneratorPipeline, target: Tensor, candidates: int, seed: int, attrs: Mapping[str, Any] | None
) -> Latent:
    """The random latent (or, StyleGAN, the average w) whose image is nearest the target (MSE)."""
    from avatarforge.generate.conditioning import encode_attrs

    lat = pipe.random_latents(candidates, seed)
    if attrs and lat.labels is not None:
        row = encode_attrs(pipe.labels, attrs)
        labels = lat.labels.clone()
        for i, v in enumerate(row):
            if v is not None:
                labels[:, i] = v
        lat = replace(lat, labels=labels)
    lat = pipe.map(lat)
    if pipe.is_stylegan:
        assert lat.ws is not None
        avg = replace(
            lat[0], ws=pipe.G.mapping.w_avg.detach().float().cpu().expand(1, pipe.num_ws, -1).clone()
        )
        lat = Latent.cat([lat, avg])
    imgs = pipe.render_float(lat)
    err = (imgs - target).pow(2).flatten(1).mean(1)
    return lat[int(err.argmin())]


def invert(
    pipe: GeneratorPipeline,
    target: str | os.PathLike | np.ndarray | Tensor,
    *,
    steps: int = 300,
    space: str = "auto",
    lr: float = 0.1,
    init: str = "auto",
    candidates: int = 64,
    seed: int = 0,
    pixel_loss: str = "l1",
    ms_ssim_weight: float = 1.0,
    attrs: Mapping[str, Any] | None = None,
    fit: str = "crop",
    callback: Callable[[int, float], None] | None = None,
) -> InversionResult:
    """Find a latent whose image matches ``target`` (see the module docstring).

    Args:
        target: image file, uint8 ``(H, W, C)`` array or float ``(1, C, H, W)`` tensor.
        steps: optimisation steps (0 = initialisation only).
        space: ``"auto"`` (StyleGAN ``w+``, else ``z``), ``"w+"``, ``"w"`` or ``"z"``.
        lr: Adam's peak learning rate.
        init: ``"auto"`` (VAE: its encoder; GAN: best of random), ``"encoder"``, ``"random"``.
        candidates: random latents tried for the initialisation.
        seed: seeds the candidates.
        pixel_loss: ``"l1"`` or ``"mse"``; ``ms_ssim_weight`` scales ``1 - MS-SSIM``.
        attrs: fixed labels for a conditional model (default: those of the best candidate).
        callback: called with ``(step, loss)`` after every step.
    """
    from avatarforge.eval.metrics import psnr as psnr_fn
    from avatarforge.eval.metrics import ssim as ssim_fn
    from avatarforge.generate.conditioning import encode_attrs
    from avatarforge.imageio import to_uint8

    x = load_target(pipe, target, fit=fit)
    target_u8 = to_uint8(x)[0]
    if space == "auto":
        space = "w+" if pipe.is_stylegan else "z"
    if space not in ("w+", "w", "z"):
        raise ValueError(f"space must be auto, w+, w or z; got {space!r}")
    if space in ("w+", "w") and not pipe.is_stylegan:
        raise ValueError(f"space {space!r} needs a StyleGAN; this {pipe.family} is inverted in 'z'")
    if init == "auto":
        init = "encoder" if pipe.vae is not None else "random"
    if init == "encoder":
        if pipe.vae is None:
            raise ValueError("init='encoder' needs a VAE model (GANs have no encoder); use init='random'")
        row = encode_attrs(pipe.labels, attrs) if pipe.label_dims else []
        labels = (
            torch.tensor([[k if v is None else v for v, k in zip(row, pipe.label_dims)]], dtype=torch.long)
            if pipe.label_dims
            else None
        )
        with torch.no_grad():
            mu, _ = pipe.vae.encode(x.to(pipe.device), None if labels is None else labels.to(pipe.device))
        start = Latent(z=mu.float().cpu(), labels=labels)
    elif init == "random":
        start = _best_of(pipe, x, candidates, seed, attrs)
    else:
        raise ValueError(f"init must be auto, encoder or random; got {init!r}")

    pix = _pixel_loss(pixel_loss)
    xt = x.to(pipe.device)
    if space == "z":
        # StyleGAN in z: optimise z, map every step.
        var = start.z.clone().to(pipe.device).requires_grad_(True)
        fixed = replace(start, ws=None)

        def make(v: Tensor) -> Latent:
            return replace(fixed, z=v)
    else:
        assert start.ws is not None
        w0 = start.ws.to(pipe.device)
        var = (w0.clone() if space == "w+" else w0[:, :1].clone()).requires_grad_(True)

        def make(v: Tensor) -> Latent:
            return replace(start, ws=v if space == "w+" else v.expand(-1, pipe.num_ws, -1))

    # Clamped as the uint8 output is: an untrained StyleGAN's linear output strays far outside.
    start_psnr = float(psnr_fn(pipe.render_float(start).clamp(-1, 1), x)[0])
    opt = torch.optim.Adam([var], lr=lr, betas=(0.9, 0.999))
    losses: list[float] = []
    best_val, best_var = math.inf, var.detach().clone()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, lr)
        img = pipe.synthesize(make(var))
        loss = pix(img, xt).mean()
        if ms_ssim_weight:
            loss = loss + ms_ssim_weight * (1 - ms_ssim(img, xt)).mean()
        val = float(loss.detach())
        losses.append(val)
        if val < best_val:  # the loss of the latent before this step's update
            best_val, best_var = val, var.detach().clone()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if callback is not None:
            callback(step, val)
    latent = make(best_var).detach()
    # Never return something worse than the start (possible with a too-high lr).
    if not steps or float(psnr_fn(pipe.render_float(latent).clamp(-1, 1), x)[0]) < start_psnr:
        latent = start.detach()
    # Both reported PSNRs are of what the pipeline hands out (uint8, alpha cleaned), as the user sees.
    init_psnr = float(psnr_fn(pipe.render(start.detach())[0][None], target_u8[None])[0])
    if pipe.is_stylegan:
        latent = pipe.map(latent)
    image = pipe.render(latent)[0]
    p = float(psnr_fn(image[None], target_u8[None])[0])
    s = float(ssim_fn(image[None], target_u8[None])[0]) if min(image.shape[:2]) >= 11 else float("nan")
    params = {
        "space": space,
        "steps": steps,
        "lr": lr,
        "init": init,
        "candidates": candidates,
        "seed": seed,
        "pixel_loss": pixel_loss,
        "ms_ssim_weight": ms_ssim_weight,
    }
    return InversionResult(latent, image, target_u8, p, s, init_psnr, losses, params)
