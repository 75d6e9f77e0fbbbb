"""Export frames: sprite sheets with a JSON atlas, and animations (APNG, WebP, GIF).

- **Sprite sheet**: frames on a grid in one RGBA PNG plus a JSON atlas in the common
  "JSON hash" layout (``frames -> name -> frame {x, y, w, h}``, ``meta``) that game engines
  and web libraries (Phaser, PixiJS, Godot importers) read. Frames may differ in size: each
  cell is as large as the largest frame and the atlas records every frame's own size.
- **APNG** keeps 8-bit alpha; every frame replaces the previous one (dispose to
  transparent, no blending), so semi-transparent pixels never accumulate.
- **Animated WebP** keeps 8-bit alpha too (lossless by default).
- **GIF** can only store *binary* alpha: pixels below ``alpha_threshold`` become fully
  transparent, the rest opaque, and colours are reduced to a 255-colour palette per frame.

All files are written atomically.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from avatarforge import __version__
from avatarforge.fileio import atomic_write_bytes, atomic_write_json
from avatarforge.imageio import ANIMATION_FORMATS, as_rgba_frames, load_animation, save_animation

__all__ = [
    "ANIMATION_FORMATS",
    "load_animation",
    "load_sprite_sheet",
    "save_animation",
    "save_sprite_sheet",
    "sprite_sheet",
]

# ----------------------------------------------------------------------------- sprite sheets


def sprite_sheet(
    frames: Sequence[np.ndarray],
    *,
    columns: int | None = None,
    padding: int = 0,
    names: Sequence[str] | None = None,
    image_name: str = "sprite_sheet.png",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Lay frames out on a grid; returns ``(sheet, atlas)``.

    Args:
        frames: (H, W, 3|4) uint8 arrays (RGB frames get alpha 255); sizes may differ.
        columns: frames per row (default: near-square grid).
        padding: transparent pixels around and between cells (0-64), against bleeding
            when an engine filters the texture.
        names: one unique name per frame (default ``frame_000``, ``frame_001``, ...).
        image_name: the sheet file name recorded in ``atlas["meta"]["image"]``.

    Returns:
        ``sheet``: (H, W, 4) uint8, transparent between frames. ``atlas``: a JSON-able dict,
        ``{"frames": {name: {"frame": {"x", "y", "w", "h"}, ...}}, "meta": {...}}``;
        ``meta["order"]`` lists the names in frame order.
    """
    imgs = as_rgba_frames(frames)
    n = len(imgs)
    if names is None:
        names = [f"frame_{i:03d}" for i in range(n)]
    names = [str(s) for s in names]
    if len(names) != n:
        raise ValueError(f"got {len(names)} names for {n} frames")
    if len(set(names)) != n:
        dup = sorted({s for s in names if names.count(s) > 1})
        raise ValueError(f"frame names must be unique; repeated: {', '.join(dup)}")
    if not 0 <= int(padding) <= 64:
        raise ValueError(f"padding must be from 0 to 64 pixels, got {padding}")
    cols = columns if columns is not None else math.ceil(math.sqrt(n))
    if int(cols) < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    cols = min(int(cols), n)
    rows = math.ceil(n / cols)
    cw = max(f.shape[1] for f in imgs)
    ch = max(f.shape[0] for f in imgs)
    pad = int(padding)
    sw, sh = cols * cw + (cols + 1) * pad, rows * ch + (rows + 1) * pad
    sheet = np.zeros((sh, sw, 4), np.uint8)
    entries: dict[str, Any] = {}
    for i, (f, name) in enumerate(zip(imgs, names)):
        r, c = divmod(i, cols)
        x, y = pad + c * (cw + pad), pad + r * (ch + pad)
        h, w = f.shape[:2]
        sheet[y : y + h, x : x + w] = f
        entries[name] = {
            "frame": {"x": x, "y": y, "w": w, "h": h},
            "rotated": False,
            "trimmed": False,
            "spriteSourceSize": {"x": 0, "y": 0, "w": w, "h": h},
            "sourceSize": {"w": w, "h": h},
        }
    atlas = {
        "frames": entries,
        "meta": {
            "app": "avatarforge",
            "version": __version__,
            "image": image_name,
            "format": "RGBA8888",
            "size": {"w": sw, "h": sh},
            "scale": "1",
            "columns": cols,
            "rows": rows,
            "padding": pad,
            "order": list(names),
        },
    }
    return sheet, atlas


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, "RGBA").save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def save_sprite_sheet(
    path: str | os.PathLike,
    frames: Sequence[np.ndarray],
    *,
    columns: int | None = None,
    padding: int = 0,
    names: Sequence[str] | None = None,
) -> tuple[Path, Path]:
    """Write ``path`` (PNG) and its atlas ``path`` with suffix ``.json``; returns both paths.

    See :func:`sprite_sheet` for the arguments.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"a sprite sheet is written as PNG; use a .png file name, got {path.name}")
    sheet, atlas = sprite_sheet(frames, columns=columns, padding=padding, names=names, image_name=path.name)
    json_path = path.with_suffix(".json")
    atomic_write_bytes(path, _png_bytes(sheet))
    atomic_write_json(json_path, atlas)
    return path, json_path


def load_sprite_sheet(json_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an atlas written by :func:`save_sprite_sheet` and crop every frame back out.

    Returns:
        ``{name: (h, w, 4) uint8}`` in frame order.
    """
    json_path = Path(json_path)
    atlas = json.loads(json_path.read_text("utf-8"))
    sheet = np.asarray(Image.open(json_path.parent / atlas["meta"]["image"]).convert("RGBA"))
    order = atlas["meta"].get("order") or list(atlas["frames"])
    out = {}
    for name in order:
        r = atlas["frames"][name]["frame"]
        out[name] = sheet[r["y"] : r["y"] + r["h"], r["x"] : r["x"] + r["w"]].copy()
    return out
