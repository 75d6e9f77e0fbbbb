"""The packed data set format: one directory, memory-mappable pixels, labels, a manifest.

Layout (documented for users in ``docs/data.md``)::

    DATASET/
      images.npy      (N, H, W, C) uint8, C = 3 (RGB) or 4 (RGBA, straight alpha)
      labels.npy      (N, A) float32; categorical labels hold the value's index, NaN = unknown
      labels.json     the label schema: [{"name", "kind": "categorical"|"continuous", ...}]
      manifest.json   format name and version, size, channels, count, per-item source and
                      content hash, preparation options, tool version
      (report.json, preview.png, ... optional extra files written by the producer)

``images.npy`` is a plain NumPy ``.npy`` file so ``np.load(..., mmap_mode="r")`` opens it
without reading it into memory. :class:`PackedWriter` streams items into it one at a time
(so ingest of a large folder never holds the whole data set in RAM) and patches the header
with the final count when it is finalised.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avatarforge import __version__
from avatarforge.fileio import atomic_directory, atomic_write_json

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "LabelField",
    "LabelSchema",
    "PackedFormatError",
    "PackedWriter",
    "pixel_hash",
    "read_manifest",
    "read_schema",
]

FORMAT_NAME = "avatarforge-packed"
FORMAT_VERSION = 1
# Room reserved for the .npy header so the final count can be patched in place.
_HEADER_BYTES = 256


class PackedFormatError(ValueError):
    """The directory is not a valid packed data set (missing file, wrong version, ...)."""


def pixel_hash(image: np.ndarray) -> str:
    """Content hash of decoded pixels (shape and bytes), independent of the file encoding."""
    h = hashlib.sha256()
    h.update(repr(tuple(image.shape)).encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class LabelField:
    """One attribute: categorical (``values`` names the classes) or continuous (``range``)."""

    name: str
    kind: str  # "categorical" | "continuous"
    values: tuple[str, ...] = ()
    range: tuple[float, float] = (0.0, 1.0)
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("categorical", "continuous"):
            raise ValueError(
                f"label field {self.name!r}: kind must be 'categorical' or 'continuous', got {self.kind!r}"
            )
        if self.kind == "categorical" and not self.values:
            raise ValueError(
                f"label field {self.name!r}: a categorical field needs a non-empty 'values' list"
            )

    @property
    def num_classes(self) -> int:
        return len(self.values)

    def encode(self, value: Any) -> float:
        """Map a user value (class name, index or number) to the stored float; None -> NaN."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return float("nan")
        if self.kind == "categorical":
            if isinstance(value, str):
                if value not in self.values:
                    raise ValueError(
                        f"label {self.name!r}: unknown value {value!r}; valid values: {', '.join(self.values)}"
                    )
                return float(self.values.index(value))
            idx = int(value)
            if not 0 <= idx < len(self.values):
                raise ValueError(f"label {self.name!r}: index {idx} out of range 0..{len(self.values) - 1}")
            return float(idx)
        return float(value)

    def decode(self, stored: float) -> Any:
        """Inverse of :meth:`encode`: NaN -> None, categorical index -> class name."""
        if math.isnan(stored):
            return None
        if self.kind == "categorical":
            return self.values[int(stored)]
        return float(stored)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "categorical":
            d["values"] = list(self.values)
        else:
            d["range"] = list(self.range)
        if self.description:
            d["description"] = self.description
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LabelField:
        return cls(
            name=str(d["name"]),
            kind=str(d["kind"]),
            values=tuple(d.get("values", ())),
            range=tuple(d.get("range", (0.0, 1.0))),  # type: ignore[arg-type]
            description=str(d.get("description", "")),
        )


@dataclass(frozen=True)
class LabelSchema:
    """An ordered list of :class:`LabelField`; column ``i`` of ``labels.npy`` is ``fields[i]``."""

    fields: tuple[LabelField, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.fields)

    def __iter__(self):
        return iter(self.fields)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def index(self, name: str) -> int:
        for i, f in enumerate(self.fields):
            if f.name == name:
                return i
        raise KeyError(
            f"no label named {name!r}; labels in this data set: {', '.join(self.names) or '(none)'}"
        )

    def __getitem__(self, name: str) -> LabelField:
        return self.fields[self.index(name)]

    @property
    def categorical(self) -> list[LabelField]:
        return [f for f in self.fields if f.kind == "categorical"]

    @property
    def continuous(self) -> list[LabelField]:
        return [f for f in self.fields if f.kind == "continuous"]

    def encode(self, labels: Mapping[str, Any] | None) -> np.ndarray:
        """A dict of label values -> one float32 row; missing keys are NaN (unknown)."""
        row = np.full(len(self.fields), np.nan, dtype=np.float32)
        if labels:
            unknown = set(labels) - set(self.names)
            if unknown:
                raise KeyError(f"labels {sorted(unknown)} are not in the schema ({', '.join(self.names)})")
            for i, f in enumerate(self.fields):
                if f.name in labels:
                    row[i] = f.encode(labels[f.name])
        return row

    def decode(self, row: Sequence[float]) -> dict[str, Any]:
        return {f.name: f.decode(float(v)) for f, v in zip(self.fields, row)}

    def to_json(self) -> list[dict[str, Any]]:
        return [f.to_json() for f in self.fields]

    @classmethod
    def from_json(cls, items: Sequence[Mapping[str, Any]]) -> LabelSchema:
        return cls(tuple(LabelField.from_json(d) for d in items))


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A version-1.0 .npy header for uint8 C-order data, padded to exactly _HEADER_BYTES."""
    d = {"descr": "|u1", "fortran_order": False, "shape": shape}
    body = repr(d).encode("latin1")
    prefix = b"\x93NUMPY\x01\x00"
    pad = _HEADER_BYTES - len(prefix) - 2 - len(body) - 1
    if pad < 0:
        raise ValueError(f"shape {shape} does not fit the reserved .npy header")
    header_len = len(body) + pad + 1
    return prefix + header_len.to_bytes(2, "little") + body + b" " * pad + b"\n"


class PackedWriter:
    """Stream images (and labels) into a new packed data set, atomically.

    Usage::

        with PackedWriter(out, size=64, channels=4, schema=schema, options={...}) as w:
            for img, src, labels in items:
                w.add(img, source=src, labels=labels)
            w.write_json("report.json", report)      # optional extra files
        # the data set appears at ``out`` only here, complete

    If the body raises, nothing appears at ``out``. An existing ``out`` is refused unless
    ``overwrite=True`` (the check happens before any work is done).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        size: int,
        channels: int,
        schema: LabelSchema | None = None,
        options: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        producer: str = "",
    ) -> None:
        if channels not in (3, 4):
            raise ValueError(f"channels must be 3 (RGB) or 4 (RGBA), got {channels}")
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        self.path = Path(path)
        self.size = int(size)
        self.channels = int(channels)
        self.schema = schema or LabelSchema()
        self.options = dict(options or {})
        self.producer = producer
        self.count = 0
        self._items: list[dict[str, Any]] = []
        self._labels: list[np.ndarray] = []
        self._extra: dict[str, Any] = {}
        if self.path.exists() and not overwrite:
            # atomic_directory checks this too, but only on __enter__; refuse at construction
            # so a caller learns before it prepares any items.
            raise FileExistsError(
                f"{self.path} already exists; pass overwrite=True (CLI: --overwrite) to replace it"
            )
        self._ctx = atomic_directory(self.path, overwrite=overwrite)
        self._tmp: Path | None = None
        self._fh = None

    def __enter__(self) -> PackedWriter:
        self._tmp = self._ctx.__enter__()
        self._fh = open(self._tmp / "images.npy", "wb")
        self._fh.write(_npy_header((0, self.size, self.size, self.channels)))
        return self

    @property
    def tmp_dir(self) -> Path:
        """The directory being built (for producers that write extra files themselves)."""
        assert self._tmp is not None, "use PackedWriter as a context manager"
        return self._tmp

    def add(
        self,
        image: np.ndarray,
        *,
        source: str = "",
        labels: Mapping[str, Any] | None = None,
        content_hash: str | None = None,
    ) -> int:
        """Append one (H, W, C) uint8 image; returns its index."""
        assert self._fh is not None, "use PackedWriter as a context manager"
        expected = (self.size, self.size, self.channels)
        if image.dtype != np.uint8 or tuple(image.shape) != expected:
            raise ValueError(
                f"image must be uint8 with shape {expected}, got {image.dtype} {tuple(image.shape)}"
            )
        image = np.ascontiguousarray(image)
        # Validate the labels before writing any pixels: a bad label raising after the write
        # would leave orphan bytes in images.npy and shift every later image if the caller
        # catches the error and carries on (ingest skips bad items).
        row = self.schema.encode(labels)
        self._fh.write(image.tobytes())
        self._labels.append(row)
        self._items.append({"source": str(source), "sha256": content_hash or pixel_hash(image)})
        self.count += 1
        return self.count - 1

    def write_json(self, name: str, obj: Any) -> None:
        """Add an extra JSON file (e.g. ``report.json``) to the data set directory."""
        self._extra[name] = obj

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if self._fh is not None:
                if exc_type is None:
                    self._fh.seek(0)
                    self._fh.write(_npy_header((self.count, self.size, self.size, self.channels)))
                    self._fh.flush()
                    os.fsync(self._fh.fileno())
                self._fh.close()
            if exc_type is None:
                self._finish()
        except BaseException:
            self._ctx.__exit__(*sys.exc_info())
            raise
        return bool(self._ctx.__exit__(exc_type, exc, tb))

    def _finish(self) -> None:
        tmp = self.tmp_dir
        labels = (
            np.stack(self._labels).astype(np.float32)
            if self._labels
            else np.zeros((0, len(self.schema)), dtype=np.float32)
        )
        np.save(tmp / "labels.npy", labels)
        atomic_write_json(tmp / "labels.json", self.schema.to_json())
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "count": self.count,
            "size": self.size,
            "channels": self.channels,
            "mode": "RGBA" if self.channels == 4 else "RGB",
            "labels": self.schema.names,
            "producer": self.producer,
            "options": self.options,
            "tool_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "items": self._items,
        }
        atomic_write_json(tmp / "manifest.json", manifest, indent=1)
        for name, obj in self._extra.items():
            atomic_write_json(tmp / name, obj)


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``manifest.json`` of a packed data set.

    Raises:
        PackedFormatError: with a message naming what is wrong and how to fix it.
    """
    path = Path(path)
    mf = path / "manifest.json"
    if not mf.is_file():
        raise PackedFormatError(
            f"{path} is not a packed data set (no manifest.json); create one with "
            "'avatarforge data prepare' or 'avatarforge data builtin'"
        )
    try:
        manifest = json.loads(mf.read_text("utf-8"))
    except json.JSONDecodeError as e:
        raise PackedFormatError(f"{mf} is not valid JSON ({e}); re-create the data set") from e
    if manifest.get("format") != FORMAT_NAME:
        raise PackedFormatError(f"{mf}: format is {manifest.get('format')!r}, expected {FORMAT_NAME!r}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise PackedFormatError(
            f"{mf}: format_version {version!r} is newer than this AvatarForge supports ({FORMAT_VERSION}); upgrade avatarforge"
        )
    for name in ("images.npy", "labels.npy", "labels.json"):
        if not (path / name).is_file():
            raise PackedFormatError(f"{path}: missing {name}; the data set is incomplete, re-create it")
    return manifest


def read_schema(path: str | os.PathLike) -> LabelSchema:
    """The label schema of a packed data set."""
    return LabelSchema.from_json(json.loads((Path(path) / "labels.json").read_text("utf-8")))
