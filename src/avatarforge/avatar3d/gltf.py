"""A small glTF 2.0 binary (GLB) writer and reader, enough for the avatar models (numpy only).

:class:`GltfBuilder` packs numpy arrays into one binary buffer (each buffer view 4-byte
aligned, accessors with the ``min``/``max`` the spec asks for), embeds PNG images and writes a
GLB: a 12-byte header, the JSON chunk (padded with spaces) and the BIN chunk (padded with
zeros). :func:`read_glb` and :func:`accessor_array` read such a file back (sparse accessors
included), for the tests and the software rasteriser.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

__all__ = ["GltfBuilder", "accessor_array", "read_glb"]

GLB_MAGIC = 0x46546C67  # "glTF"
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942

#: numpy dtype -> glTF componentType
COMPONENT = {
    np.dtype(np.int8): 5120,
    np.dtype(np.uint8): 5121,
    np.dtype(np.int16): 5122,
    np.dtype(np.uint16): 5123,
    np.dtype(np.uint32): 5125,
    np.dtype(np.float32): 5126,
}
DTYPE = {v: k for k, v in COMPONENT.items()}
TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4", 16: "MAT4"}
WIDTH = {v: k for k, v in TYPES.items()}

ARRAY_BUFFER = 34962
ELEMENT_ARRAY_BUFFER = 34963


class GltfBuilder:
    """Collects the JSON and the binary buffer of one glTF asset."""

    def __init__(self, generator: str = "AvatarForge") -> None:
        self.json: dict[str, Any] = {
            "asset": {"version": "2.0", "generator": generator},
            "buffers": [],
            "bufferViews": [],
            "accessors": [],
        }
        self._chunks: list[bytes] = []
        self._length = 0

    def _list(self, key: str) -> list[Any]:
        return self.json.setdefault(key, [])

    def add(self, key: str, obj: dict[str, Any]) -> int:
        """Append ``obj`` to the top-level array ``key``; returns its index."""
        items = self._list(key)
        items.append(obj)
        return len(items) - 1

    def buffer_view(self, data: bytes, target: int | None = None, stride: int | None = None) -> int:
        """A buffer view over ``data`` (appended to the buffer, 4-byte aligned)."""
        pad = (-self._length) % 4
        if pad:
            self._chunks.append(b"\0" * pad)
            self._length += pad
        view: dict[str, Any] = {"buffer": 0, "byteOffset": self._length, "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        if stride is not None:
            view["byteStride"] = stride
        self._chunks.append(data)
        self._length += len(data)
        return self.add("bufferViews", view)

    def accessor(
        self,
        array: np.ndarray,
        *,
        target: int | None = None,
        min_max: bool = False,
        normalized: bool = False,
    ) -> int:
        """An accessor (and its buffer view) for a ``(count,)`` or ``(count, k)`` array."""
        a = np.ascontiguousarray(array)
        if a.dtype not in COMPONENT:
            raise TypeError(f"glTF has no component type for {a.dtype}")
        width = 1 if a.ndim == 1 else int(np.prod(a.shape[1:]))
        view = self.buffer_view(a.tobytes(), target)
        acc: dict[str, Any] = {
            "bufferView": view,
            "componentType": COMPONENT[a.dtype],
            "count": int(a.shape[0]),
            "type": TYPES[width],
        }
        if normalized:
            acc["normalized"] = True
        if min_max:
            flat = a.reshape(a.shape[0], width)
            cast = float if a.dtype.kind == "f" else int
            acc["min"] = [cast(v) for v in flat.min(axis=0)]
            acc["max"] = [cast(v) for v in flat.max(axis=0)]
        return self.add("accessors", acc)

    def sparse_vec3(self, count: int, idx: np.ndarray, values: np.ndarray) -> int:
        """A FLOAT VEC3 accessor of ``count`` zeros except ``values`` at ``idx`` (morph targets)."""
        idx = np.ascontiguousarray(idx, dtype=np.uint32)
        values = np.ascontiguousarray(values, dtype=np.float32).reshape(-1, 3)
        full_min = np.minimum(values.min(axis=0), 0.0) if len(values) else np.zeros(3)
        full_max = np.maximum(values.max(axis=0), 0.0) if len(values) else np.zeros(3)
        acc: dict[str, Any] = {
            "componentType": 5126,
            "count": int(count),
            "type": "VEC3",
            "min": [float(v) for v in full_min],
            "max": [float(v) for v in full_max],
        }
        if len(idx):
            acc["sparse"] = {
                "count": len(idx),
                "indices": {"bufferView": self.buffer_view(idx.tobytes()), "componentType": 5125},
                "values": {"bufferView": self.buffer_view(values.tobytes())},
            }
        return self.add("accessors", acc)

    def image_png(self, png: bytes, name: str | None = None) -> int:
        """Embed PNG bytes as an image (in a buffer view); returns the image index."""
        img: dict[str, Any] = {"bufferView": self.buffer_view(png), "mimeType": "image/png"}
        if name:
            img["name"] = name
        return self.add("images", img)

    def glb(self) -> bytes:
        """The finished GLB bytes."""
        binary = b"".join(self._chunks)
        binary += b"\0" * ((-len(binary)) % 4)
        self.json["buffers"] = [{"byteLength": len(binary)}]
        text = json.dumps(self.json, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        text += b" " * ((-len(text)) % 4)
        total = 12 + 8 + len(text) + 8 + len(binary)
        return b"".join(
            [
                struct.pack("<III", GLB_MAGIC, 2, total),
                struct.pack("<II", len(text), CHUNK_JSON),
                text,
                struct.pack("<II", len(binary), CHUNK_BIN),
                binary,
            ]
        )


def read_glb(data: bytes) -> tuple[dict[str, Any], bytes]:
    """``(json, binary chunk)`` of GLB bytes.

    Raises:
        ValueError: not a GLB version 2 file, or its chunks are damaged.
    """
    if len(data) < 20:
        raise ValueError("not a GLB file (too short)")
    magic, version, total = struct.unpack_from("<III", data, 0)
    if magic != GLB_MAGIC or version != 2:
        raise ValueError("not a glTF 2.0 binary (GLB) file")
    if total > len(data):
        raise ValueError(f"GLB file is truncated ({len(data)} of {total} bytes)")
    n, kind = struct.unpack_from("<II", data, 12)
    if kind != CHUNK_JSON:
        raise ValueError("GLB file does not start with a JSON chunk")
    doc = json.loads(data[20 : 20 + n].decode("utf-8"))
    binary = b""
    off = 20 + n
    if off + 8 <= total:
        m, kind = struct.unpack_from("<II", data, off)
        if kind == CHUNK_BIN:
            binary = data[off + 8 : off + 8 + m]
    return doc, binary


def _view_bytes(doc: dict[str, Any], binary: bytes, view: int) -> tuple[bytes, int | None]:
    bv = doc["bufferViews"][view]
    start = bv.get("byteOffset", 0)
    return binary[start : start + bv["byteLength"]], bv.get("byteStride")


def accessor_array(doc: dict[str, Any], binary: bytes, index: int) -> np.ndarray:
    """The data of accessor ``index`` as a ``(count, width)`` array (``(count,)`` for scalars);
    sparse substitutions applied; normalized integers stay integers."""
    acc = doc["accessors"][index]
    dtype = DTYPE[acc["componentType"]]
    width = WIDTH[acc["type"]]
    count = acc["count"]
    if "bufferView" in acc:
        raw, stride = _view_bytes(doc, binary, acc["bufferView"])
        off = acc.get("byteOffset", 0)
        item = dtype.itemsize * width
        if stride and stride != item:
            rows = [
                np.frombuffer(raw, dtype, width, off + i * stride) for i in range(count)
            ]  # pragma: no cover - we never write strided views
            out = np.stack(rows)
        else:
            out = np.frombuffer(raw, dtype, count * width, off).reshape(count, width).copy()
    else:
        out = np.zeros((count, width), dtype)
    sp = acc.get("sparse")
    if sp:
        ib, _ = _view_bytes(doc, binary, sp["indices"]["bufferView"])
        idx = np.frombuffer(
            ib, DTYPE[sp["indices"]["componentType"]], sp["count"], sp["indices"].get("byteOffset", 0)
        )
        vb, _ = _view_bytes(doc, binary, sp["values"]["bufferView"])
        vals = np.frombuffer(vb, dtype, sp["count"] * width, sp["values"].get("byteOffset", 0))
        out[idx.astype(np.int64)] = vals.reshape(-1, width)
    return out[:, 0] if width == 1 else out
