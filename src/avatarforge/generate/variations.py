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

*Refine steps* (:func:`refine_step`, the studio's pick-and-refine, after Waifu Labs) vary one
aspect of a pick and keep its identity: ``"palette"`` (colours), ``"details"`` (hair style,
eye shape, accessories, fine structure) or ``"pose"`` (pose and expression). A conditional
model re-draws the classes of that step's attributes (:func:`attribute_groups`: colour
attributes for the palette, the other categorical ones for details; ``keep`` pins some);
StyleGAN also moves that step's band of style vectors (:func:`style_bands`: fine, middle,
coarse) toward random ones; other families move ``z`` (the pose step fully, details by half,
the palette by a third: they have no layer split, so the labels carry the palette).

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

__all__ = ["REFINE_STEPS", "attribute_groups", "refine_step", "style_bands", "style_mix", "variations"]

#: The refine steps, in the studio's order (after the first pick).
REFINE_STEPS = ("palette", "details", "pose")
#: Words that make an attribute a colour (the palette step's attributes).
_COLOUR_WORDS = ("color", "colour", "tone", "background")
#: ``z`` move of each refine step for families without style layers, as a fraction of ``strength``.
_Z_SHARE = {"palette": 1 / 3, "details": 0.5, "pose": 1.0}


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


def attribute_groups(pipe: GeneratorPipeline) -> dict[str, list[str]]:
    """The attributes each refine step re-draws: ``{"palette": [...], "details": [...], "pose": []}``.

    Colour attributes (names with ``color``/``colour``/``tone``/``background``: hair, eye,
    skin, outfit colour, background) are the palette; the other attributes with at least two
    classes are details (hair style, bangs, eye shape, brows, mouth, blush, accessory, outfit
    style). Pose and expression live in the latent, not in labels.
    """
    info = pipe.labels
    out: dict[str, list[str]] = {"palette": [], "details": [], "pose": []}
    for i, name in enumerate(info.names):
        if i >= len(info.dims) or int(info.dims[i]) < 2:
            continue
        group = "palette" if any(w in name.lower() for w in _COLOUR_WORDS) else "details"
        out[group].append(name)
    return out


def style_bands(num_ws: int) -> dict[str, list[int]]:
    """StyleGAN style indices per refine step: ``pose`` the coarse ones (4-8 px: pose, face
    shape, hair silhouette), ``details`` the middle ones, ``palette`` the fine ones (colours;
    Karras et al. 2019 Sec. 3.1). Style ``i`` drives the ``2 ** (2 + ceil(i / 2))`` px block,
    so the coarse band is styles 0-2 and the rest is split in half (at least one each)."""
    if num_ws < 3:
        raise ValueError(f"style bands need at least 3 style vectors, got num_ws={num_ws}")
    coarse = min(3, num_ws - 2)
    mid = coarse + max(1, (num_ws - coarse) // 2)
    return {
        "pose": list(range(coarse)),
        "details": list(range(coarse, mid)),
        "palette": list(range(mid, num_ws)),
    }


def refine_step(
    pipe: GeneratorPipeline,
    source: Latent,
    step: str,
    n: int = 8,
    strength: float = 0.3,
    seed: int = 0,
    *,
    keep: Sequence[str] = (),
    noise_mode: str = "const",
    rgba: bool | None = None,
    background: str | Sequence[int] | None = None,
    size: int | None = None,
) -> GenerationResult:
    """``n`` variations of ``source`` (one latent) that vary only ``step``'s aspect.

    Args:
        step: ``"palette"``, ``"details"`` or ``"pose"`` (:data:`REFINE_STEPS`).
        strength: 0 (the source) .. 1: how far the latent part moves, and the chance that each
            of the step's attributes gets another class (each variation changes at least one
            when the step has attributes).
        seed: seeds the random classes and latents (the same seed gives the same grid).
        keep: attributes never re-drawn (the studio's pinned dropdowns).
        size: output size, one of ``pipe.sizes``.

    Each item of the result says what changed (``changed``: ``{attribute: class}``).
    """
    from avatarforge.generate.directions import move_to_classes

    if step not in REFINE_STEPS:
        raise ValueError(f"step must be one of {', '.join(REFINE_STEPS)}, got {step!r}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if len(source) < 1:
        raise ValueError("the source latent is empty")
    size = pipe.check_size(size)
    src = pipe.map(source[0])
    info = pipe.labels
    names = [a for a in attribute_groups(pipe)[step] if a not in set(keep)] if src.labels is not None else []
    g = torch.Generator().manual_seed(int(seed) * 7919 + REFINE_STEPS.index(step))
    rows: list[Latent] = []
    changed: list[dict[str, str]] = []
    for _ in range(n):
        moves: dict[str, str] = {}
        if names:
            flips = torch.rand(len(names), generator=g) < float(strength)
            if not bool(flips.any()):
                flips[int(torch.randint(len(names), (1,), generator=g))] = True
            for name, flip in zip(names, flips.tolist()):
                col = info.index(name)
                k = int(info.dims[col])
                cur = int(src.labels[0, col])  # type: ignore[index]
                new = (cur + 1 + int(torch.randint(k - 1, (1,), generator=g))) % k  # another class
                if flip:
                    moves[name] = info.class_name(col, new)
        rows.append(move_to_classes(pipe, src, moves) if moves else src)
        changed.append(moves)
    lat = Latent.cat(rows)
    rand = pipe.random_latents(n, int(seed) * 7919 + 17 + REFINE_STEPS.index(step), like=src)
    rand = pipe.map(replace(rand, labels=lat.labels, labels_to=lat.labels_to))
    if pipe.is_stylegan:
        assert lat.ws is not None and rand.ws is not None
        band = style_bands(pipe.num_ws)[step]
        ws = lat.ws.clone()
        ws[:, band] = lerp(lat.ws[:, band], rand.ws[:, band], torch.full((n,), float(strength)))
        lat = replace(lat, ws=ws)
    else:
        t = torch.full((n,), float(strength) * _Z_SHARE[step])
        lat = replace(lat, z=slerp(lat.z, rand.z, t))
    images = pipe.render(lat, noise_mode, rgba, background, size=size)
    params = pipe.record_params(
        "variation",
        step=step,
        strength=float(strength),
        variation_seed=int(seed),
        truncation=src.truncation,
        noise_mode=noise_mode,
        rgba=rgba,
        background=background,
        source="latent",
    )
    if size != pipe.resolution:
        params["size"] = size
    items = [{"index": i, "changed": changed[i], **pipe.describe(lat[i])} for i in range(n)]
    return GenerationResult(images, lat, params, items, store_latent=True)
