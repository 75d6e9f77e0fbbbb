"""Latent tokens: an image's exact latent as one opaque, URL-safe string.

Every generated image in an API response carries its token, so a client can come back with
it ("variations of this one", "edit this one", "animate this one") without the server
keeping any per-client state. A token is ``base64url(zlib(JSON))`` of
:meth:`Latent.to_json` plus the first 16 hex digits of the model's sha256 (a latent only
means something for the model that made it).

Decoding treats the token as hostile input: bounded size before and after decompression,
only ``float32``/``int64`` arrays, shapes checked against the model, finite values, labels in
range. Nothing is unpickled.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from typing import Any

import numpy as np
import torch

from avatarforge.generate.pipeline import Latent

__all__ = ["MAX_TOKEN_CHARS", "LatentTokenError", "decode_latent", "encode_latent"]

#: Longest accepted token (a 1024 px StyleGAN's ws are ~60 KB as a token).
MAX_TOKEN_CHARS = 262_144
_MAX_JSON_BYTES = 1_048_576
_DTYPES = {"float32": np.float32, "int64": np.int64}


class LatentTokenError(ValueError):
    """A token that is malformed, too large, or made by another model."""


def encode_latent(latent: Latent, model_sha256: str) -> str:
    """The token of a one-image ``latent`` (CPU tensors)."""
    doc = {"v": 1, "model": model_sha256[:16], "latent": latent.detach().to_json()}
    raw = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(zlib.compress(raw, 6)).decode("ascii").rstrip("=")


def _array(d: Any, name: str) -> torch.Tensor:
    if not isinstance(d, dict) or not isinstance(d.get("data"), str):
        raise LatentTokenError(f"latent field {name!r} is malformed")
    dtype = _DTYPES.get(d.get("dtype"))  # type: ignore[arg-type]
    shape = d.get("shape")
    if dtype is None or not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise LatentTokenError(f"latent field {name!r} has a bad dtype or shape")
    try:
        buf = base64.b64decode(d["data"], validate=True)
    except (binascii.Error, ValueError):
        raise LatentTokenError(f"latent field {name!r} is not valid base64") from None
    if len(buf) != int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize:
        raise LatentTokenError(f"latent field {name!r}: data does not match its shape {shape}")
    arr = np.frombuffer(buf, dtype=dtype).reshape(shape).copy()
    if dtype == np.float32 and not np.isfinite(arr).all():
        raise LatentTokenError(f"latent field {name!r} holds NaN or infinity")
    return torch.from_numpy(arr)


def decode_latent(token: str, pipe: Any) -> Latent:
    """The one-image :class:`Latent` of ``token``, checked against ``pipe``'s model.

    Raises:
        LatentTokenError: (a ValueError) naming what is wrong.
    """
    if not isinstance(token, str) or not token:
        raise LatentTokenError("the latent token is empty")
    if len(token) > MAX_TOKEN_CHARS:
        raise LatentTokenError(f"the latent token is longer than {MAX_TOKEN_CHARS} characters")
    try:
        packed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        dec = zlib.decompressobj()
        raw = dec.decompress(packed, _MAX_JSON_BYTES)
        if dec.unconsumed_tail or not dec.eof:
            raise LatentTokenError("the latent token is truncated or too large once decompressed")
        doc = json.loads(raw)
    except LatentTokenError:
        raise
    except (binascii.Error, ValueError, zlib.error, UnicodeDecodeError):
        raise LatentTokenError(
            "not a latent token (use the 'latent' string of an earlier response)"
        ) from None
    if not isinstance(doc, dict) or doc.get("v") != 1 or not isinstance(doc.get("latent"), dict):
        raise LatentTokenError("not a latent token (use the 'latent' string of an earlier response)")
    if doc.get("model") != pipe.model_sha256[:16]:
        raise LatentTokenError("the latent token was made by another model; generate it again with this one")
    d = doc["latent"]
    fields = {k: _array(d[k], k) for k in Latent._TENSORS if k in d}
    trunc = d.get("truncation", 1.0)
    if isinstance(trunc, bool) or not isinstance(trunc, (int, float)) or not np.isfinite(trunc):
        raise LatentTokenError("latent field 'truncation' must be a finite number")
    if "z" not in fields:
        raise LatentTokenError("latent field 'z' is missing")
    lat = Latent(truncation=float(trunc), **fields)
    _check_shapes(lat, pipe)
    return lat


def _check_shapes(lat: Latent, pipe: Any) -> None:
    def want(name: str, t: torch.Tensor | None, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        if t is not None and (tuple(t.shape) != shape or t.dtype != dtype):
            raise LatentTokenError(
                f"latent field {name!r} has shape {list(t.shape)}, this model needs {list(shape)}"
            )

    want("z", lat.z, (1, pipe.z_dim), torch.float32)
    dims = pipe.label_dims
    for name in ("labels", "labels_to"):
        t = getattr(lat, name)
        if dims:
            want(name, t, (1, len(dims)), torch.long)
            # index k is the "unknown" class every label embedding has (k + 1 rows)
            if t is not None and any(not 0 <= int(v) <= k for v, k in zip(t[0].tolist(), dims)):
                raise LatentTokenError(f"latent field {name!r} holds a class index out of range")
        elif t is not None:
            raise LatentTokenError(f"latent field {name!r} is set but this model is unconditional")
    if dims and lat.labels is None:
        raise LatentTokenError("latent field 'labels' is missing (this model is conditional)")
    want("label_t", lat.label_t, (1,), torch.float32)
    if pipe.has_codes:
        from avatarforge.generate.conditioning import code_columns

        want("codes", lat.codes, (1, code_columns(pipe.code_dims).width), torch.float32)
    elif lat.codes is not None:
        raise LatentTokenError("latent field 'codes' is set but this model has no latent codes")
    if lat.ws is not None:
        if not pipe.is_stylegan:
            raise LatentTokenError("latent field 'ws' is set but this model is not a StyleGAN")
        want("ws", lat.ws, (1, pipe.num_ws, int(pipe.G.w_dim)), torch.float32)
    want("noise_seeds", lat.noise_seeds, (1,), torch.long)
