"""Latent interpolation between seeds, written as MP4, GIF, WebP or APNG.

Paths: DCGAN-like models (and VAEs) move along the great circle between the seeds' ``z``
(*slerp*: a Gaussian latent's norm concentrates near ``sqrt(z_dim)``, and the straight line
between two samples dips through the low-density centre, giving washed-out frames).
StyleGAN moves on straight lines between the seeds' ``w`` (*lerp*: the mapping network's
``w`` space is not Gaussian, and linear paths there are the perceptually smooth ones --
StyleGAN paper, Sec. 4.1). Labels of conditional models blend from one keyframe's to the
next; InfoGAN codes are interpolated linearly.

Alpha: APNG and WebP keep 8-bit alpha, GIF keeps binary alpha (threshold 128), MP4 has no
alpha, so RGBA frames are composited onto ``background`` (white by default).

Example::

    pipe = GeneratorPipeline.from_pretrained("runs/00003-stylegan-64")
    frames = interpolate(pipe, seeds=[1, 5, 9], frames=60, loop=True)   # (60, 64, 64, C)
    save_video("morph.webp", frames, fps=24)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from avatarforge.generate.pipeline import GeneratorPipeline, Latent, composite, parse_seeds

__all__ = [
    "VIDEO_FORMATS",
    "interpolate",
    "interpolation_latents",
    "latent_path",
    "lerp",
    "save_video",
    "slerp",
]

#: Output suffix -> container written by :func:`save_video`.
VIDEO_FORMATS: dict[str, str] = {
    ".mp4": "mp4",
    ".gif": "gif",
    ".webp": "webp",
    ".png": "apng",
    ".apng": "apng",
}


def lerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Row-wise linear interpolation: ``a, b (N, ...)``, ``t (N,)`` -> ``(N, ...)``.

    Written as ``(1 - t) a + t b``, which is exact at both ends (``a + t (b - a)`` is not at
    ``t = 1``), so the first and last frames are the keyframes' images byte for byte.
    """
    w = t.to(a.dtype).view(-1, *([1] * (a.ndim - 1)))
    return (1 - w) * a + w * b


def slerp(a: Tensor, b: Tensor, t: Tensor, eps: float = 1e-7) -> Tensor:
    """Row-wise spherical interpolation (Shoemake 1985) of ``a, b (N, D)`` by ``t (N,)``.

    Follows the great circle between the rows' directions while interpolating their norms;
    (anti)parallel rows fall back to :func:`lerp`. Computed in float64; ``t=0``/``t=1``
    return ``a``/``b`` exactly.
    """
    a64, b64, t64 = a.double(), b.double(), t.double()[:, None]
    na, nb = a64.norm(dim=1, keepdim=True), b64.norm(dim=1, keepdim=True)
    cos = ((a64 / na.clamp_min(eps)) * (b64 / nb.clamp_min(eps))).sum(1, keepdim=True).clamp(-1, 1)
    omega = torch.arccos(cos)
    so = torch.sin(omega)
    degenerate = (so.abs() < 1e-6).expand_as(a64)
    out = (torch.sin((1 - t64) * omega) * a64 + torch.sin(t64 * omega) * b64) / torch.where(
        so.abs() < 1e-6, torch.ones_like(so), so
    )
    out = torch.where(degenerate, lerp(a64, b64, t64[:, 0]), out).to(a.dtype)
    out = torch.where((t == 0)[:, None], a, out)
    return torch.where((t == 1)[:, None], b, out)


def _positions(frames: int, keys: int, loop: bool) -> tuple[Tensor, Tensor]:
    """Segment index ``(F,)`` and position within it ``(F,)`` for each frame."""
    segments = keys if loop else keys - 1
    # Non-looping paths end exactly on the last keyframe; looping ones stop one step short
    # of the first, so that the animation repeats without a doubled frame.
    u = torch.arange(frames, dtype=torch.float64) * (segments / (frames if loop else max(frames - 1, 1)))
    seg = u.floor().long().clamp(max=segments - 1)
    t = (u - seg.double()).float()
    return seg, t


def interpolation_latents(
    pipe: GeneratorPipeline,
    seeds: str | Sequence[int],
    frames: int = 60,
    truncation: float = 1.0,
    attrs: Mapping[str, Any] | str | None = None,
    codes: Mapping[str, Any] | str | None = None,
    loop: bool = False,
) -> Latent:
    """The ``frames`` latents of a path through the seeds' latents (see the module docstring)."""
    seed_list = parse_seeds(seeds)
    if len(seed_list) < 2:
        raise ValueError(f"interpolation needs at least two seeds, got {seed_list}")
    if frames < 2:
        raise ValueError(f"frames must be >= 2, got {frames}")
    keys = pipe.map(pipe.latents(seed_list, attrs, codes, truncation))
    return latent_path(pipe, keys, frames, loop)


def latent_path(pipe: GeneratorPipeline, keys: Latent, frames: int, loop: bool = False) -> Latent:
    """The ``frames`` latents of a path through ``keys`` (mapped key latents, one row each,
    e.g. ``pipe.map(Latent.cat([...]))`` of picked images): ``z`` along great circles, a
    StyleGAN's ``w`` straight, labels blended, InfoGAN codes straight. ``loop`` returns to the
    first key (the last frame is one step before it)."""
    if len(keys) < 2:
        raise ValueError(f"a path needs at least two key latents, got {len(keys)}")
    if frames < 2:
        raise ValueError(f"frames must be >= 2, got {frames}")
    seg, t = _positions(frames, len(keys), loop)
    nxt = (seg + 1) % len(keys)
    a, b = keys[seg], keys[nxt]
    out = a
    if pipe.is_stylegan:
        assert a.ws is not None and b.ws is not None
        out = replace(out, ws=lerp(a.ws, b.ws, t), z=slerp(a.z, b.z, t))
    else:
        out = replace(out, z=slerp(a.z, b.z, t))
        if a.labels is not None and b.labels is not None:
            out = replace(out, labels_to=b.labels, label_t=t.clone())
    if a.codes is not None and b.codes is not None:
        out = replace(out, codes=lerp(a.codes, b.codes, t))
    return out


def interpolate(
    pipe: GeneratorPipeline,
    seeds: str | Sequence[int],
    frames: int = 60,
    truncation: float = 1.0,
    attrs: Mapping[str, Any] | str | None = None,
    codes: Mapping[str, Any] | str | None = None,
    loop: bool = False,
    noise_mode: str = "const",
    rgba: bool | None = None,
    background: str | Sequence[int] | None = None,
) -> np.ndarray:
    """``(frames, H, W, C)`` uint8 frames through the seeds' images (first frame = first seed).

    ``loop=True`` returns to the first seed (the last frame is one step before it).
    """
    lat = interpolation_latents(pipe, seeds, frames, truncation, attrs, codes, loop)
    return pipe.render(lat, noise_mode, rgba, background)


def _write_mp4(path: Path, frames: np.ndarray, fps: float, background: Any, fourcc: str) -> Path:
    import cv2

    rgb = composite(frames, background)
    h, w = rgb.shape[1:3]
    tmp = path.with_name(f".{path.name}.partial.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), float(fps), (w, h))
    if not writer.isOpened():
        raise RuntimeError(
            f"OpenCV cannot write MP4 with fourcc {fourcc!r} here; try fourcc='mp4v' or write .webp/.gif"
        )
    try:
        for f in rgb:
            writer.write(np.ascontiguousarray(f[..., ::-1]))  # OpenCV wants BGR
    finally:
        writer.release()
    os.replace(tmp, path)
    return path


def save_video(
    path: str | os.PathLike,
    frames: np.ndarray | Sequence[np.ndarray],
    fps: float = 24.0,
    *,
    background: str | Sequence[int] | None = None,
    loop: int = 0,
    fourcc: str = "mp4v",
) -> Path:
    """Write frames as ``.mp4`` (OpenCV, ``mp4v`` codec), ``.gif``, ``.webp`` or ``.png``/``.apng``.

    Alpha: kept (8-bit) in APNG and WebP, binary in GIF; MP4 frames are composited onto
    ``background`` (default white). ``loop``: repetitions for GIF/WebP/APNG (0 = forever).
    Note that the GIF and APNG writers merge identical consecutive frames.
    """
    from avatarforge.imageio import save_animation

    path = Path(path)
    fmt = VIDEO_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"unknown video format {path.suffix!r}; use one of {', '.join(VIDEO_FORMATS)}")
    arr = np.stack([np.asarray(f) for f in frames]) if not isinstance(frames, np.ndarray) else frames
    if arr.ndim != 4 or arr.dtype != np.uint8:
        raise ValueError(f"frames must be (F, H, W, C) uint8, got {arr.dtype} {arr.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "mp4":
        return _write_mp4(path, arr, fps, background, fourcc)
    return save_animation(path, list(arr), fps=fps, loop=loop, format=fmt)
