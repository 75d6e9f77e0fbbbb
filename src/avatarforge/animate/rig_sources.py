"""Where a rig's picture and part map come from: the renderer, a generator run, an image.

A rig (:class:`~avatarforge.animate.rig.AvatarRig`) needs a high-resolution RGBA avatar and
its part map. The built-in renderer draws both exactly; a generated avatar gets both from
the pipeline's refiner (its part head, trained on the renderer's part maps); a user's image
gets its part map the same way, from a refiner, after being brought to the generator's size.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from avatarforge.animate.rig import AvatarRig, RigError

__all__ = ["layers_for", "procedural_layers", "rig_for"]


def procedural_layers(seed: int, size: int, **attrs: Any) -> tuple[np.ndarray, np.ndarray]:
    """The renderer's avatar ``seed`` at rest (neutral expression) and its part-id map."""
    from avatarforge.data.procedural import NEUTRAL_EXPRESSION, render, sample_attributes
    from avatarforge.data.procedural.schema import PART_NAMES

    image, parts = render(
        {**sample_attributes(int(seed), **attrs), **NEUTRAL_EXPRESSION}, size, return_parts=True
    )
    labels = np.zeros((size, size), np.uint8)
    for i, name in enumerate(PART_NAMES):
        labels[parts[name]] = i
    return image, labels  # type: ignore[return-value]


def _pipeline(run: str | Path) -> Any:
    from avatarforge.generate import GeneratorPipeline

    try:
        return GeneratorPipeline.from_pretrained(run)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise RigError(f"cannot load a generator from {run}: {e}") from None


def layers_for(spec: str, size: int, generator: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(RGBA image, part map)`` at ``size`` for an avatar spec.

    ``spec``: an integer (a renderer avatar), ``GEN_RUN:SEED`` (sample ``SEED`` of a generator
    run or quickstart folder whose pipeline has a refiner), or an image file (its part map
    predicted by ``generator``'s refiner).

    Raises:
        RigError: what is missing and how to get it (a refiner, a generator run).
    """
    spec = str(spec).strip()
    if re.fullmatch(r"\d+", spec):
        return procedural_layers(int(spec), size)
    p = Path(spec)
    if not p.is_file():
        run, sep, seed = spec.rpartition(":")
        if sep and run and re.fullmatch(r"\d+", seed.strip()):
            pipe = _pipeline(run)
            _check(pipe, size, run)
            images, parts = pipe.render_layers(pipe.latents([int(seed)]), size)
            return images[0], parts[0]
        raise RigError(
            f"avatar {spec!r} is neither an integer (a built-in avatar), GEN_RUN:SEED, nor an image file"
        )
    if generator is None:
        raise RigError(
            f"{p.name}: an image needs a part map for the rig; give a generator run with a refiner "
            "(e.g. a quickstart folder) to predict it, or animate a built-in avatar (an integer) or GEN_RUN:SEED"
        )
    from PIL import Image

    from avatarforge.data.imagefile import ImageRejected, load_image

    try:
        img = load_image(p).convert("RGBA")
    except ImageRejected as e:
        raise RigError(f"{p}: {e.message}") from None
    pipe = _pipeline(generator)
    _check(pipe, size, str(generator))
    small = np.asarray(img.resize((pipe.resolution, pipe.resolution), Image.Resampling.BOX))
    images, parts = pipe.layers_of(small[None], size)
    return images[0], parts[0]


def _check(pipe: Any, size: int, run: str) -> None:
    if not pipe.has_layers:
        raise RigError(
            f"{run} has no refiner with a part head, which a rig needs: train one (avatarforge train "
            "src/avatarforge/configs/refiner-512px.yaml) or use a quickstart folder"
        )
    try:
        pipe.check_size(size)
    except ValueError as e:
        raise RigError(str(e)) from None


def rig_for(spec: str, size: int, generator: str | Path | None = None) -> AvatarRig:
    """:meth:`AvatarRig.from_parts` of :func:`layers_for`."""
    return AvatarRig.from_parts(*layers_for(spec, size, generator))
