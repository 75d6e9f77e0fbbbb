"""Generation parameters stored inside the image files: writing and reading the record.

PNG files get an ``iTXt`` chunk ``avatarforge`` holding a JSON record (compressed), plus a
readable ``Description`` and ``Software``. Lossless WebP files carry the same JSON inside
an XMP packet. The record holds every parameter (``kind``, ``seed``, ``truncation``,
``attrs``, ``codes``, ``noise_mode``, ``batch_size``, ``rgba``, ``background``, ...), the
model's identity (``model.sha256`` = sha256 of its ``.safetensors`` file, plus its path and
family) and, for images that no seed describes (variations, style mixes, edits,
inversions), the exact latent as base64 float32.

Making an image again from its record needs a model: that is :mod:`.regenerate`, above
:mod:`.pipeline`; this module knows only files and JSON, so the pipeline can save through it.

Example::

    from avatarforge.generate.metadata import read_metadata

    rec = read_metadata("out/seed0007.png")            # {"kind": "generate", "seed": 7, ...}
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, unescape

import numpy as np
from PIL import Image, PngImagePlugin

from avatarforge.fileio import atomic_write_bytes

__all__ = [
    "METADATA_KEY",
    "describe_record",
    "read_metadata",
    "save_with_metadata",
]

#: PNG text key (and XMP element) holding the JSON record.
METADATA_KEY = "avatarforge"
_XMP_RE = re.compile(r"<avatarforge:generation>(.*?)</avatarforge:generation>", re.S)


def describe_record(record: Mapping[str, Any]) -> str:
    """One readable line summarising a record (the PNG ``Description``)."""
    parts = [str(record.get("kind", "image"))]
    for key in ("seed", "truncation", "strength", "crossover", "amount", "noise_mode"):
        if record.get(key) is not None:
            parts.append(f"{key}={record[key]}")
    if record.get("attrs"):
        parts.append("attrs=" + ",".join(f"{k}:{v}" for k, v in record["attrs"].items()))
    if record.get("codes"):
        parts.append("codes=" + ",".join(f"{k}:{v:.4g}" for k, v in record["codes"].items()))
    model = record.get("model") or {}
    parts.append(f"model={model.get('family', '?')} sha256:{str(model.get('sha256', ''))[:16]}")
    return " ".join(parts)


def _xmp_packet(text: str) -> bytes:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:avatarforge="https://github.com/avatarforge/ns/1.0/">'
        f"<avatarforge:generation>{escape(text)}</avatarforge:generation>"
        '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="r"?>'
    ).encode()


def save_with_metadata(path: str | os.PathLike, image: np.ndarray, record: Mapping[str, Any]) -> Path:
    """Write ``image`` ((H, W, 3|4) uint8) as PNG or lossless WebP (by suffix) with ``record``.

    Deterministic: the same pixels and record give the same file bytes.
    """
    from avatarforge import __version__

    path = Path(path)
    arr = np.ascontiguousarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3|4) uint8 image, got {arr.dtype} {arr.shape}")
    pil = Image.fromarray(arr, "RGBA" if arr.shape[2] == 4 else "RGB")
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    buf = io.BytesIO()
    suffix = path.suffix.lower()
    if suffix == ".png":
        info = PngImagePlugin.PngInfo()
        info.add_itxt(METADATA_KEY, text, zip=True)
        info.add_text("Description", describe_record(record))
        info.add_text("Software", f"avatarforge {__version__}")
        pil.save(buf, format="PNG", pnginfo=info, compress_level=6)
    elif suffix == ".webp":
        pil.save(buf, format="WEBP", lossless=True, exact=True, quality=100, method=4, xmp=_xmp_packet(text))
    else:
        raise ValueError(f"metadata is written to .png or .webp files, got {path.name!r}")
    return atomic_write_bytes(path, buf.getvalue())


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON record of an image written by :func:`save_with_metadata`.

    Raises:
        ValueError: the file holds no AvatarForge record (e.g. it was re-saved by an editor
            that drops metadata).
    """
    with Image.open(path) as im:
        info = dict(im.info)
        text = getattr(im, "text", {}) or {}
    raw = text.get(METADATA_KEY) or info.get(METADATA_KEY)
    if raw is None and info.get("xmp"):
        xmp = info["xmp"]
        xmp = xmp.decode("utf-8", "replace") if isinstance(xmp, bytes) else str(xmp)
        m = _XMP_RE.search(xmp)
        raw = unescape(m.group(1)) if m else None
    if raw is None:
        raise ValueError(
            f"{path} has no avatarforge generation metadata (was it written by avatarforge generate, "
            "and not re-saved by another program?)"
        )
    return json.loads(raw)
