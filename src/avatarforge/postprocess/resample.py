"""Upscaling x2 / x3 / x4: Lanczos in premultiplied alpha plus halo-free sharpening, or a
small learned sub-pixel CNN (ESPCN-like) trained on the project's own procedural avatars.

Default path (no weights needed):

1. premultiply RGBA, so a transparent pixel contributes nothing — whatever colour is hidden
   under alpha 0 cannot tint the resampled edge;
2. ``cv2.resize(..., INTER_LANCZOS4)`` on all four premultiplied channels (alpha is
   resampled with the same kernel, so colour and coverage stay consistent);
3. edge-aware sharpening: an unsharp mask whose result is clamped to the local 3x3
   minimum/maximum of the resampled image. Edges get steeper, but nothing overshoots, so
   no bright/dark halos appear around lines (plain unsharp masking rings on line art);
4. clamp premultiplied colour to alpha and unpremultiply.

Learned path: :class:`SRNet` predicts a residual over a bicubic upscale of the
premultiplied RGBA image; :func:`train_sr` trains it on (area-downscaled, original) pairs
of procedural avatars, :func:`load_sr_model` loads a saved one, and ``upscale(...,
model=...)`` uses it (a x2 model also serves x4 by running twice).
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from avatarforge.models.base import WEIGHTS_NAME
from avatarforge.models.upscaler import UPSCALE_FACTORS, SRNet
from avatarforge.postprocess.alpha import premultiply, unpremultiply
from avatarforge.postprocess.registry import Param, register_op

__all__ = [
    "UPSCALE_FACTORS",
    "SRNet",
    "SRTrainResult",
    "load_sr_model",
    "train_sr",
    "upscale",
]

# ----------------------------------------------------------------------------- learned model


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int) -> SRNet:
    model = SRNet.from_pretrained(path)
    model.eval()
    return model  # type: ignore[return-value]


def load_sr_model(path: str | os.PathLike) -> SRNet:
    """Load a model saved by :func:`train_sr` (a folder with ``config.json`` +
    ``model.safetensors``). Cached by path and modification time, so a chain applied to many
    images loads it once.

    Raises:
        FileNotFoundError: not a saved model folder.
        TypeError: the folder holds another kind of model.
    """
    p = Path(path)
    weights = p / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(
            f"{p} is not a saved super-resolution model (no {WEIGHTS_NAME}); train one with train_sr"
        )
    return _load_cached(str(p.resolve()), weights.stat().st_mtime_ns)


@torch.no_grad()
def _run_model(model: SRNet, p: np.ndarray) -> np.ndarray:
    """Premultiplied float32 (H, W, C) -> upscaled premultiplied float32, clamped."""
    c = p.shape[2]
    x = p if c == 4 else np.concatenate([p, np.ones_like(p[..., :1])], axis=2)
    dev = next(model.parameters()).device
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(dev)
    y = model(t).clamp_(0.0, 1.0)[0].permute(1, 2, 0).cpu().numpy()
    return y[..., :c] if c == 3 else y


# ----------------------------------------------------------------------------- upscale


def _sharpen_no_halo(p: np.ndarray, amount: float, sigma: float) -> np.ndarray:
    """Unsharp mask clamped to the 3x3 local range of ``p`` (no overshoot, no halos)."""
    blur = cv2.GaussianBlur(p, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    sharp = p + amount * (p - blur)
    k = np.ones((3, 3), np.uint8)
    return np.clip(sharp, cv2.erode(p, k), cv2.dilate(p, k))


@register_op(
    "upscale",
    Param("factor", "int", choices=UPSCALE_FACTORS, help="size multiplier"),
    Param("sharpen", "float", 0.0, 2.0, help="halo-free sharpening after resampling; 0 = none"),
    Param("model", "path", optional=True, accept=(SRNet,), help="trained SR model folder; none = Lanczos"),
    aliases=("upsample",),
    alpha="resampled",
    group="size",
)
def upscale(
    image: np.ndarray, factor: int = 2, sharpen: float = 0.5, model: SRNet | str | os.PathLike | None = None
) -> np.ndarray:
    """Enlarge ``factor`` times (2, 3 or 4), alpha resampled with the colour.

    Args:
        image: (H, W, 3|4) uint8.
        factor: 2, 3 or 4.
        sharpen: 0-2, strength of the halo-free sharpening applied after resampling.
        model: None (Lanczos, no weights needed), an :class:`SRNet` or the folder of one
            saved by :func:`train_sr`. A model trained for x2 serves x4 by running twice.

    Returns:
        (H * factor, W * factor, C) uint8.
    """
    h, w = image.shape[:2]
    p = premultiply(image)
    if model is None:
        p = cv2.resize(p, (w * factor, h * factor), interpolation=cv2.INTER_LANCZOS4)
    else:
        net = model if isinstance(model, SRNet) else load_sr_model(model)
        runs = round(math.log(factor, net.scale))
        if net.scale**runs != factor:
            raise ValueError(
                f"upscale: the model upscales x{net.scale}, which cannot make x{factor}; "
                f"use factor {net.scale} or {net.scale**2}"
            )
        for _ in range(runs):
            p = _run_model(net, p)
    if p.shape[2] == 4:
        # Lanczos rings: keep alpha in [0, 1] and colour within its alpha before sharpening.
        p[..., 3] = np.clip(p[..., 3], 0.0, 1.0)
    p = np.clip(p, 0.0, 1.0)
    if sharpen > 0.0:
        p = _sharpen_no_halo(p, float(sharpen), sigma=0.5 * factor)
    if p.shape[2] == 4:
        p[..., :3] = np.minimum(p[..., :3], p[..., 3:4])
    return unpremultiply(p)


# ----------------------------------------------------------------------------- training


@dataclass
class SRTrainResult:
    """What :func:`train_sr` returns.

    Attributes:
        model: the trained model (eval mode).
        losses: training L1 loss per step.
        val_before / val_after: L1 on a fixed held-out batch before and after training.
        val_bicubic: the same for a plain bicubic upscale (what the model must beat).
        seconds: training time.
        path: where the model was saved, or None.
    """

    model: SRNet
    losses: list[float] = field(default_factory=list)
    val_before: float = math.nan
    val_after: float = math.nan
    val_bicubic: float = math.nan
    seconds: float = 0.0
    path: Path | None = None


def _pairs(seeds: range, size: int, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(high-res, low-res) premultiplied RGBA tensors of procedural avatars; every other
    one on its drawn background (opaque), so the model sees both kinds of image."""
    from avatarforge.data.procedural import render_avatar

    hr, lr = [], []
    for i, seed in enumerate(seeds):
        img = render_avatar(seed, size, background=bool(i % 2))
        if img.shape[2] == 3:
            img = np.concatenate([img, np.full((*img.shape[:2], 1), 255, np.uint8)], axis=2)
        p = premultiply(img)
        # INTER_AREA = box averaging: what downscaling in an editor or a data pipeline does.
        small = cv2.resize(p, (size // scale, size // scale), interpolation=cv2.INTER_AREA)
        hr.append(torch.from_numpy(p.transpose(2, 0, 1).copy()))
        lr.append(torch.from_numpy(small.transpose(2, 0, 1).copy()))
    return torch.stack(hr), torch.stack(lr)


def _crops(
    hr: torch.Tensor, lr: torch.Tensor, idx: torch.Tensor, patch: int, scale: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    h = lr.shape[2]
    ys = torch.randint(0, h - patch + 1, (len(idx),), generator=g).tolist()
    xs = torch.randint(0, h - patch + 1, (len(idx),), generator=g).tolist()
    flips = torch.rand(len(idx), generator=g).lt(0.5).tolist()
    lo, hi = [], []
    for i, y, x, flip in zip(idx.tolist(), ys, xs, flips):
        a = lr[i, :, y : y + patch, x : x + patch]
        b = hr[i, :, y * scale : (y + patch) * scale, x * scale : (x + patch) * scale]
        if flip:  # faces are roughly symmetric: mirroring doubles the data for free
            a, b = a.flip(-1), b.flip(-1)
        lo.append(a)
        hi.append(b)
    return torch.stack(lo), torch.stack(hi)


def train_sr(
    out_dir: str | os.PathLike | None = None,
    *,
    scale: int = 2,
    steps: int = 2000,
    batch_size: int = 16,
    patch: int = 24,
    n_images: int = 128,
    image_size: int = 128,
    features: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
) -> SRTrainResult:
    """Train an :class:`SRNet` on procedural avatars and optionally save it.

    Pairs are made by area-downscaling ``n_images`` avatars of ``image_size`` px (seeds
    ``seed .. seed+n_images-1``, half with their background) by ``scale``; each step takes
    ``batch_size`` random ``patch`` x ``patch`` low-res crops (mirrored at random) and
    minimises the L1 error of the premultiplied RGBA output (Adam, cosine learning rate).
    Deterministic for a given seed on CPU.

    Args:
        out_dir: folder to save ``config.json`` + ``model.safetensors`` (None: don't save).
        log: called with a progress line every ~10 % of the steps (e.g. ``print``).

    Returns:
        :class:`SRTrainResult` with the model, the loss curve and held-out losses.
    """
    if scale not in UPSCALE_FACTORS:
        raise ValueError(f"scale must be one of {UPSCALE_FACTORS}, got {scale}")
    if image_size % scale or image_size // scale < patch:
        raise ValueError(
            f"image_size ({image_size}) must be a multiple of scale ({scale}) and >= patch * scale"
        )
    if steps < 1 or batch_size < 1 or n_images < 1 or patch < 4:
        raise ValueError("steps, batch_size and n_images must be >= 1 and patch >= 4")
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        model = SRNet(scale=scale, channels=4, features=features).to(device)
    hr, lrs = _pairs(range(seed, seed + n_images), image_size, scale)
    # Held out: avatars with seeds past the training ones, fixed crops.
    vhr, vlr = _pairs(range(seed + n_images, seed + n_images + 4), image_size, scale)
    vg = torch.Generator().manual_seed(seed + 1)
    vlo, vhi = _crops(vhr, vlr, torch.arange(4).repeat(2), patch, scale, vg)
    vlo, vhi = vlo.to(device), vhi.to(device)

    def val() -> float:
        model.eval()
        with torch.no_grad():
            return float(F.l1_loss(model(vlo).clamp(0, 1), vhi))

    with torch.no_grad():
        bicubic = float(F.l1_loss(F.interpolate(vlo, scale_factor=scale, mode="bicubic").clamp(0, 1), vhi))
    before = val()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.05)
    g = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    model.train()
    for step in range(steps):
        idx = torch.randint(0, n_images, (batch_size,), generator=g)
        lo, hi = _crops(hr, lrs, idx, patch, scale, g)
        loss = F.l1_loss(model(lo.to(device)), hi.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.detach().item())
        if log and (step + 1) % max(1, steps // 10) == 0:
            recent = losses[-max(1, steps // 10) :]
            log(f"step {step + 1}/{steps}: L1 {sum(recent) / len(recent):.5f}")
    after = val()
    model.eval()
    result = SRTrainResult(model, losses, before, after, bicubic, time.perf_counter() - t0)
    if out_dir is not None:
        result.path = model.save_pretrained(out_dir)
    if log:
        log(f"held-out L1: bicubic {bicubic:.5f}, model {after:.5f} ({result.seconds:.0f} s)")
    return result
