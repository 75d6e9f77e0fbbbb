"""Where an exported avatar comes from: ``procedural:N``, or an RGBA image and its part map.

A 3D model is cut from a square RGBA avatar and its part map (the renderer's part ids,
:data:`~avatarforge.data.procedural.PART_NAMES`): the renderer draws both for
``procedural:N``; for any other image the part map is a label PNG next to it (one byte per
pixel, the part id; see :func:`load_part_map`). Generated avatars get theirs from the
refiner's part head once a run has one (``RUN:SEED`` then resolves here).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["MIN_SIZE", "Avatar3DError", "AvatarSource", "check_avatar", "load_avatar", "load_part_map"]

#: The smallest avatar a 3D model is cut from (the eyes and mouth must be a few pixels).
MIN_SIZE = 64
_PROCEDURAL = re.compile(r"^procedural:(\d{1,9})$")


class Avatar3DError(ValueError):
    """An avatar that cannot become a 3D model; the message says why and what to pass instead."""


@dataclass
class AvatarSource:
    """A square RGBA avatar, its part map and a name for the model's meta."""

    image: np.ndarray  # (S, S, 4) uint8
    parts: np.ndarray  # (S, S) uint8 part ids
    name: str
    origin: str  # what the user passed


def check_avatar(image: np.ndarray, parts: np.ndarray | None, what: str = "avatar") -> None:
    """Raise :class:`Avatar3DError` for images a model cannot be cut from.

    Needs a square ``(S, S, 4)`` uint8 image with ``S >= MIN_SIZE``, a transparent background
    (some alpha below 255: the character is cut out by its alpha) and a part map of the same
    size whose ids are part ids.
    """
    if image.ndim != 3 or image.dtype != np.uint8:
        raise Avatar3DError(f"{what}: expected an (S, S, 4) uint8 image, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if h != w:
        raise Avatar3DError(f"{what} is {w}x{h}: a 3D model needs a square avatar (crop or pad it first)")
    if h < MIN_SIZE:
        raise Avatar3DError(
            f"{what} is {w}x{h}: too small for a 3D model (at least {MIN_SIZE} px; 512 px looks best)"
        )
    if image.shape[2] != 4 or image[..., 3].min() == 255:
        raise Avatar3DError(
            f"{what} has no transparency: a 3D model needs an RGBA avatar on a transparent background "
            "(generate with --alpha/RGBA output, or remove the background first)"
        )
    if (image[..., 3] > 0).mean() < 0.02:
        raise Avatar3DError(f"{what} is (almost) fully transparent: nothing to build a model from")
    if parts is not None:
        from avatarforge.data.procedural.schema import PART_NAMES

        if parts.shape != (h, w):
            raise Avatar3DError(f"part map is {parts.shape[::-1]}, the {what} is {w}x{h}: they must match")
        if parts.size and int(parts.max()) >= len(PART_NAMES):
            raise Avatar3DError(
                f"part map has id {int(parts.max())}; part ids are 0..{len(PART_NAMES) - 1} "
                f"({', '.join(PART_NAMES)})"
            )


def load_part_map(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """A part-map PNG as an ``(S, S)`` uint8 array of part ids (an L or P image: the byte is the id)."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("L", "P", "I;16", "I"):
            raise Avatar3DError(
                f"{path}: a part map is a one-channel PNG of part ids (mode L), got mode {im.mode}"
            )
        arr = np.asarray(im).astype(np.int64)
    if arr.min() < 0 or arr.max() > 255:
        raise Avatar3DError(f"{path}: part ids out of range")
    out = arr.astype(np.uint8)
    if size is not None and out.shape != (size, size):
        raise Avatar3DError(f"{path}: the part map is {out.shape[1]}x{out.shape[0]}, expected {size}x{size}")
    return out


def load_avatar(
    spec: str | os.PathLike,
    parts: str | os.PathLike | None = None,
    size: int = 512,
    segmenter: str | os.PathLike | None = None,
) -> AvatarSource:
    """Resolve what a user passed as AVATAR.

    * ``procedural:N``: the renderer's avatar N at ``size`` px (neutral expression) and its parts;
    * an image file: RGBA, square; its part map from ``parts``, from ``NAME.parts.png``
      beside it, or predicted by a part segmenter: ``segmenter`` (a parts run or a quickstart
      folder), else the one a generated PNG's metadata names;
    * ``RUN:SEED`` or a quickstart folder: a generated avatar through the run's refiner and
      part segmenter.

    Raises:
        Avatar3DError: a bad image, a missing part map, or a kind of AVATAR not supported yet.
        FileNotFoundError: the file does not exist.
    """
    text = str(spec)
    m = _PROCEDURAL.match(text)
    if m:
        from avatarforge.animate.rig_sources import procedural_layers

        if not MIN_SIZE <= size <= 512:
            raise Avatar3DError(f"--size must be from {MIN_SIZE} to 512 for procedural avatars, got {size}")
        image, labels = procedural_layers(int(m.group(1)), size)
        return AvatarSource(image, labels, f"procedural-{m.group(1)}", text)
    path = Path(text)
    if not path.exists() or path.is_dir():
        from avatarforge.runs import quickstart_runs, split_run_seed

        run_seed = split_run_seed(text)
        if run_seed is None and path.is_dir():
            # A quickstart folder: its live avatar (the seed it rigged), else seed 0.
            if quickstart_runs(path) is None:
                raise Avatar3DError(
                    f"{path} is a folder: give RUN:SEED (a generator run or quickstart folder and a seed), "
                    "an RGBA PNG with --parts, or procedural:N"
                )
            manifest = path / "quickstart.json"
            seed = 0
            if manifest.is_file():
                import json

                seed = int(json.loads(manifest.read_text("utf-8")).get("avatar_seed") or 0)
            run_seed = (str(path), seed)
        if run_seed is not None:
            return _generated(run_seed[0], run_seed[1], size, text)
        raise FileNotFoundError(
            f"{path} does not exist; AVATAR is procedural:N, RUN:SEED or an RGBA PNG (+ --parts)"
        )
    from PIL import Image

    with Image.open(path) as im:
        has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
        image = np.asarray(im.convert("RGBA"))
    if not has_alpha:
        image = image.copy()  # an RGB file: check_avatar reports the missing alpha
    part_path = Path(parts) if parts is not None else path.with_name(path.stem + ".parts.png")
    if parts is None and not part_path.is_file():
        seg = segmenter if segmenter is not None else _segmenter_in_metadata(path)
        if seg is not None and image.shape[0] == image.shape[1]:
            labels = _predict_parts(image, seg)
            check_avatar(image, labels, str(path))
            return AvatarSource(image, labels, path.stem, text)
        check_avatar(image, None, str(path))
        raise Avatar3DError(
            f"{path} has no part map: pass --parts PARTS.png (a one-channel PNG of part ids, "
            f"or put it beside the image as {part_path.name}), --segmenter RUN (a part segmenter run "
            "or a quickstart folder predicts it), or use procedural:N"
        )
    labels = load_part_map(part_path)
    check_avatar(image, labels, str(path))
    return AvatarSource(image, labels, path.stem, text)


def _generated(run: str, seed: int, size: int, origin: str) -> AvatarSource:
    """Sample ``seed`` of a generator run (or quickstart folder) at ``size`` with its part map,
    through the run's refiner and part segmenter (:mod:`avatarforge.animate.rig_sources`)."""
    from avatarforge.animate.rig import RigError
    from avatarforge.animate.rig_sources import layers_for

    try:
        image, labels = layers_for(f"{run}:{seed}", size)
    except RigError as e:
        raise Avatar3DError(f"{origin} (RUN:SEED): {e}") from None
    check_avatar(image, labels, origin)
    return AvatarSource(image, labels, f"{Path(run).name}-{seed}", origin)


def _segmenter_in_metadata(path: Path) -> str | None:
    """The part segmenter a generated PNG's metadata names (``generate --size 512`` through a
    pipeline that had one), if it still exists."""
    try:
        from avatarforge.generate.metadata import read_metadata

        seg = ((read_metadata(path).get("model") or {}).get("segmenter") or {}).get("path")
    except (ValueError, OSError, KeyError):
        return None
    return seg if seg and Path(seg).exists() else None


def _predict_parts(image: np.ndarray, segmenter: str | os.PathLike) -> np.ndarray:
    """The part map of a square RGBA image, from a part segmenter run (or a quickstart folder's):
    the image brought to the segmenter's input size, the map predicted at the image's size."""
    from PIL import Image

    from avatarforge.models.parts import predict_part_map
    from avatarforge.runs import load_segmenter

    try:
        seg = load_segmenter(segmenter)
    except (FileNotFoundError, ValueError) as e:
        raise Avatar3DError(f"--segmenter {segmenter}: {e}") from None
    S = image.shape[0]
    size = int(getattr(seg, "in_size", 0) or 64)
    small = np.asarray(Image.fromarray(image, "RGBA").resize((size, size), Image.Resampling.BOX))
    labels = predict_part_map(seg, small[None], S)[0]
    labels[image[..., 3] == 0] = 0
    return labels.astype(np.uint8)
