"""Pick-and-refine: variations around a chosen avatar, and StyleGAN style mixing.

*Variations* move a chosen latent part of the way toward fresh random latents of the same
kind (same labels, codes and truncation): StyleGAN in ``w`` (linear), other families in
``z`` (spherical, so the latent keeps a typical norm). ``strength`` is the fraction of the
way: 0 gives the source itself, 1 unrelated samples, 0.2-0.4 "the same character, slightly
different".

*Style mixing* (StyleGAN, Karras et al. 2019 Sec. 3.1) takes the first ``crossover`` style
vectors -- the coarse layers: pose, face shape, hair silhouette -- from one latent and the
rest -- colours, fine detail -- from another. ``crossover=0`` is entirely the *fine* source,
``crossover=num_ws`` entirely the *coarse* one.

Example::

    pipe = GeneratorPipeline.from_pretrained("runs/00003-stylegan-64")
    liked = pipe(seeds=[42]).latent
    out = variations(pipe, liked, n=8, strength=0.3, seed=1)
    mix = style_mix(pipe, coarse=[1, 2], fine=[7, 8, 9], crossover=4)   # 2 x 3 grid
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch

from avatarforge.generate.interpolate import lerp, slerp
from avatarforge.generate.pipeline import GenerationResult, GeneratorPipeline, Latent, parse_seeds

__all__ = ["style_mix", "variations"]


def _source(
    pipe: GeneratorPipeline,
    source: Latent | int,
    truncation: float,
    attrs: Mapping[str, Any] | str | None,
    codes: Mapping[str, Any] | str | None,
) -> tuple[Latent, dict[str, Any]]:
    """One mapped latent + a description of where it came from."""
    if isinstance(source, Latent):
        if len(source) < 1:
            raise ValueError("the source latent is empty")
        return pipe.map(source[0]), {"source": "latent"}
    seed = parse_seeds(source)
    if len(seed) != 1:
        raise ValueError(f"variations start from one seed, got {seed}")
    return pipe.map(pipe.latents(seed, attrs, codes, truncation)), {"source_seed": seed[0]}


def variations(
    pipe: GeneratorPipeline,
    source: Latent | int,
    n: int = 8,
    strength: float = 0.3,
    seed: int = 0,
    *,
    truncation: float = 1.0,
    attrs: Mapping[str, Any] | str | None = None,
    codes: Mapping[str, Any] | str | None = None,
    noise_mode: str = "const",
    rgba: bool | None = None,
    background: str | Sequence[int] | None = None,
) -> GenerationResult:
    """``n`` variations of ``source`` (a :class:`Latent`, e.g. ``result.latent[i]``, or a seed).

    Args:
        strength: 0 (the source itself) .. 1 (independent samples of the same labels/codes).
        seed: seeds the random latents the variations move toward.
        truncation, attrs, codes: used when ``source`` is a seed.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1] (0 = the source, 1 = unrelated), got {strength}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    src, origin = _source(pipe, source, truncation, attrs, codes)
    rand = pipe.map(pipe.random_latents(n, seed, like=src))
    t = torch.full((n,), float(strength))
    rep = src.repeat(n)
    z = slerp(rep.z, rand.z, t)
    if pipe.is_stylegan:
        assert rep.ws is not None and rand.ws is not None
        lat = replace(rep, z=z, ws=lerp(rep.ws, rand.ws, t))
    else:
        lat = replace(rep, z=z)
    images = pipe.render(lat, noise_mode, rgba, background)
    params = pipe.record_params(
        "variation",
        strength=float(strength),
        variation_seed=int(seed),
        truncation=src.truncation,
        noise_mode=noise_mode,
        rgba=rgba,
        background=background,
        **origin,
    )
    items = [{"index": i, **pipe.describe(lat[i])} for i in range(n)]
    return GenerationResult(images, lat, params, items, store_latent=True)


def _as_latents(
    pipe: GeneratorPipeline,
    spec: Latent | str | int | Sequence[int],
    truncation: float,
    attrs: Mapping[str, Any] | str | None,
) -> tuple[Latent, list[int | None]]:
    if isinstance(spec, Latent):
        return pipe.map(spec), [None] * len(spec)
    seeds = parse_seeds(spec)
    return pipe.map(pipe.latents(seeds, attrs, None, truncation)), list(seeds)


def style_mix(
    pipe: GeneratorPipeline,
    coarse: Latent | str | int | Sequence[int],
    fine: Latent | str | int | Sequence[int],
    crossover: int,
    *,
    truncation: float = 1.0,
    attrs: Mapping[str, Any] | str | None = None,
    noise_mode: str = "const",
    rgba: bool | None = None,
    background: str | Sequence[int] | None = None,
) -> GenerationResult:
    """Every (coarse, fine) pair: ``ws[:crossover]`` from coarse, ``ws[crossover:]`` from fine.

    Returns ``len(coarse) * len(fine)`` images, row-major (one row per coarse source;
    ``result.params["cols"]`` = number of fine sources, for a grid).

    Raises:
        ValueError: the model has no per-layer w (not a StyleGAN), or ``crossover`` is
            outside ``0..num_ws``.
    """
    if not pipe.is_stylegan:
        raise ValueError(
            f"style mixing needs a StyleGAN (one style vector per layer); this is a {pipe.family}. "
            "Use variations instead"
        )
    if not 0 <= crossover <= pipe.num_ws:
        raise ValueError(f"crossover must be in 0..{pipe.num_ws} (num_ws) for this model, got {crossover}")
    ca, cseeds = _as_latents(pipe, coarse, truncation, attrs)
    fa, fseeds = _as_latents(pipe, fine, truncation, attrs)
    assert ca.ws is not None and fa.ws is not None
    rows, cols = len(ca), len(fa)
    ci = torch.arange(rows).repeat_interleave(cols)
    fi = torch.arange(cols).repeat(rows)
    ws = torch.cat([ca.ws[ci, :crossover], fa.ws[fi, crossover:]], dim=1)  # (rows*cols, num_ws, w_dim)
    # The coarse source's other fields document the result (its z, labels, noise seed).
    lat = replace(ca[ci], ws=ws)
    images = pipe.render(lat, noise_mode, rgba, background)
    params = pipe.record_params(
        "mix",
        crossover=int(crossover),
        num_ws=pipe.num_ws,
        truncation=float(truncation),
        noise_mode=noise_mode,
        rgba=rgba,
        background=background,
        rows=rows,
        cols=cols,
    )
    items = [
        {"coarse_seed": cseeds[int(c)], "fine_seed": fseeds[int(f)], **pipe.describe(lat[i])}
        for i, (c, f) in enumerate(zip(ci, fi))
    ]
    return GenerationResult(images, lat, params, items, store_latent=True)
