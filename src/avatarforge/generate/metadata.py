"""Generation parameters stored inside the image files, and regenerating an image from them.

PNG files get an ``iTXt`` chunk ``avatarforge`` holding a JSON record (compressed), plus a
readable ``Description`` and ``Software``. Lossless WebP files carry the same JSON inside
an XMP packet. The record holds every parameter (``kind``, ``seed``, ``truncation``,
``attrs``, ``codes``, ``noise_mode``, ``batch_size``, ``rgba``, ``background``, ...), the
model's identity (``model.sha256`` = sha256 of its ``.safetensors`` file, plus its path and
family) and, for images that no seed describes (variations, style mixes, edits,
inversions), the exact latent as base64 float32.

Example::

    from avatarforge.generate.metadata import read_metadata, regenerate_from_png

    rec = read_metadata("out/seed0007.png")            # {"kind": "generate", "seed": 7, ...}
    image, rec = regenerate_from_png("out/seed0007.png")  # the model from rec["model"]["path"]
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, unescape

import numpy as np
from PIL import Image, PngImagePlugin

from avatarforge.fileio import atomic_write_bytes

__all__ = [
    "METADATA_KEY",
    "ModelMismatchError",
    "describe_record",
    "latent_from_png",
    "latent_from_record",
    "read_metadata",
    "regenerate_from_png",
    "save_with_metadata",
]

#: PNG text key (and XMP element) holding the JSON record.
METADATA_KEY = "avatarforge"
_XMP_RE = re.compile(r"<avatarforge:generation>(.*?)</avatarforge:generation>", re.S)


class ModelMismatchError(ValueError):
    """The model given is not the one an image was generated with (content hashes differ)."""


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


def _pipeline_for(record: Mapping[str, Any], model: Any, device: str) -> Any:
    from avatarforge.generate.pipeline import GeneratorPipeline

    info = record.get("model") or {}
    if model is None:
        if not info.get("path"):
            raise ValueError("the image does not record where its model was; pass the model (run directory)")
        if not Path(info["path"]).exists():
            raise FileNotFoundError(
                f"the image was made with the model at {info['path']}, which no longer exists; "
                "pass the model (run directory or checkpoint) explicitly"
            )
        model = info["path"]
    if isinstance(model, GeneratorPipeline):
        pipe = model
    else:
        pipe = GeneratorPipeline.from_pretrained(model, which=info.get("which", "ema"), device=device)
    want = info.get("sha256")
    if want and pipe.model_sha256 != want:
        raise ModelMismatchError(
            f"model mismatch: the image was generated by weights with sha256 {want[:16]}... "
            f"({info.get('family', '?')}, {info.get('path') or 'unknown path'}); the model given "
            f"({pipe.source or 'in memory'}) has sha256 {pipe.model_sha256[:16]}... -- regenerating needs the "
            "same weights file"
        )
    return pipe


@contextlib.contextmanager
def _recipe(pipe: Any, record: Mapping[str, Any]) -> Iterator[None]:
    """Run with the record's batch size and (on the CPU) thread count.

    Both are part of the recipe: CPU kernels pick code paths -- and float rounding -- by batch
    size, and split reductions by thread count.
    """
    import torch

    saved_batch, saved_threads = pipe.batch_size, torch.get_num_threads()
    pipe.batch_size = int(record.get("batch_size") or saved_batch)
    threads = record.get("threads")
    if threads and pipe.device.type == "cpu":
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        pipe.batch_size = saved_batch
        torch.set_num_threads(saved_threads)


def latent_from_record(pipe: Any, record: Mapping[str, Any]) -> Any:
    """The :class:`~avatarforge.generate.pipeline.Latent` an image record describes.

    Seeded generations are re-derived from their parameters (seed, truncation, attrs,
    codes); everything else carries its exact latent. StyleGAN latents come back mapped.
    """
    from avatarforge.generate.pipeline import Latent

    if "latent" in record:
        return pipe.map(Latent.from_json(record["latent"]))
    if record.get("kind") == "generate" and "seed" in record:
        lat = pipe.latents(
            [int(record["seed"])],
            record.get("attrs"),
            record.get("codes"),
            float(record.get("truncation", 1.0)),
        )
        return pipe.map(lat)
    raise ValueError("the record has neither a seed nor a latent to regenerate from")


def latent_from_png(path: str | os.PathLike, pipe: Any) -> Any:
    """The latent of an image file written by the generation tools, for ``pipe``'s model.

    Raises:
        ModelMismatchError: the file was made with other weights.
    """
    record = read_metadata(path)
    _pipeline_for(record, pipe, "cpu")  # hash check
    with _recipe(pipe, record):
        return latent_from_record(pipe, record)


def regenerate_from_png(
    path: str | os.PathLike, model: Any = None, device: str = "cpu"
) -> tuple[np.ndarray, dict[str, Any]]:
    """Make an image again from the record in its file; returns ``(image, record)``.

    Args:
        path: a PNG (or WebP) written by the generation tools.
        model: a run directory / checkpoint, or a :class:`GeneratorPipeline`; default: the
            path recorded in the file.
        device: where to load the model (byte identity is promised on the same platform).

    Raises:
        ModelMismatchError: the model's weights hash differs from the recorded one.
        ValueError: no record in the file.
    """
    record = read_metadata(path)
    pipe = _pipeline_for(record, model, device)
    with _recipe(pipe, record):
        latent = latent_from_record(pipe, record)
        image = pipe.render(
            latent, record.get("noise_mode", "const"), record.get("rgba"), record.get("background")
        )
    return image[0], record
