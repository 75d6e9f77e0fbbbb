"""Base class for every AvatarForge network: captured config, save/load as safetensors.

A subclass only writes ``__init__`` with keyword arguments of JSON-friendly types; those
arguments are recorded in ``self.config`` automatically, so ``save_pretrained`` can write
``config.json`` + ``model.safetensors`` and ``from_pretrained`` can rebuild the exact
network (looked up by its registry name, never by an import path from the file).

Loading treats the files as untrusted input. Before any weight is allocated the config is
checked against the constructor's signature, the network is built on the ``meta`` device
(shapes without memory) and its tensor names and shapes are compared with the weights
file's header, so a config asking for a 40 GB network or a file that is not safetensors
fails fast. ``config.json`` records the size and sha256 of the weights file it was written
with, so a truncated or bit-flipped file is caught too. Every such problem raises
:class:`ModelFileError` (a ``ValueError``) with a one-line message naming the file.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import itertools
import json
import math
import os
import struct
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import torch
from safetensors.torch import load_file, save
from torch import nn

from avatarforge import __version__
from avatarforge.fileio import atomic_write_json, atomic_writer, file_sha256

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "ConfigModule",
    "ModelFileError",
    "TensorInfo",
    "UnknownModelError",
    "load_pretrained",
    "read_safetensors_header",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class ModelFileError(ValueError):
    """A saved model's files are missing, damaged, or do not describe a model we can build.

    The message is one line and starts with the offending file. A ``ValueError``, so the
    command-line front ends, which report ``ValueError`` as a one-line error, do so here too.
    """

    def __str__(self) -> str:
        # Plain message even for subclasses that are also KeyErrors (which would quote it).
        return Exception.__str__(self)


class UnknownModelError(ModelFileError, KeyError):
    """The config names a model this AvatarForge does not have (a ``KeyError`` as well, as the
    registry's own error is)."""


# Bytes per element of each safetensors dtype.
_DTYPE_SIZES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
_MAX_HEADER = 100 * 2**20  # safetensors refuses larger headers too
# Room for buffers a network keeps out of its state dict (blur kernels, ...): a model built
# from a config may need at most this much beyond twice its weights file.
_BUILD_SLACK_BYTES = 256 * 2**20


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a safetensors header: dtype name (``"F32"``), shape, byte range in the data."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def read_safetensors_header(path: str | os.PathLike) -> dict[str, TensorInfo]:
    """The tensors a safetensors file declares, checked against the file's size; no data is read.

    Checks that the 8-byte header length and the JSON header fit the file, every entry has a
    known dtype, a shape of non-negative integers and a byte range matching it, and the byte
    ranges tile the data exactly (a truncated file or trailing bytes fail).

    Raises:
        ModelFileError: naming ``path`` and the first problem found.
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise ModelFileError(
                f"{path}: not a safetensors file ({size} bytes, shorter than its 8-byte header length)"
            )
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, _MAX_HEADER):
            raise ModelFileError(
                f"{path}: not a safetensors file, or truncated (its first 8 bytes give a {n}-byte header; "
                f"the file has {size} bytes)"
            )
        raw = f.read(n)
    header = _json_object(
        lambda: raw.decode("utf-8"),
        f"{path}: damaged safetensors header",
        f"{path}: damaged safetensors header (not a JSON object)",
    )
    data_len = size - 8 - n
    out: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            ok = (
                dtype in _DTYPE_SIZES
                and isinstance(shape, list)
                and all(type(d) is int and d >= 0 for d in shape)
                and type(begin) is int
                and type(end) is int
                and 0 <= begin <= end
            )
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ModelFileError(
                f"{path}: damaged safetensors header (entry {name!r}: {json.dumps(entry)[:120]})"
            )
        if end - begin != math.prod(shape) * _DTYPE_SIZES[dtype]:
            raise ModelFileError(
                f"{path}: damaged safetensors header (tensor {name!r} {dtype}{shape} does not fill bytes {begin}-{end})"
            )
        out[name] = TensorInfo(dtype, tuple(shape), begin, end)
    pos = 0
    for name, t in sorted(out.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if t.begin != pos:
            raise ModelFileError(
                f"{path}: damaged safetensors header (tensor {name!r} does not start at byte {pos})"
            )
        pos = t.end
    if pos != data_len:
        what = "truncated" if pos > data_len else "trailing bytes"
        raise ModelFileError(
            f"{path}: {what}: the header describes {pos} bytes of tensor data, the file holds {data_len}"
        )
    return out


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(f"model config values must be JSON types, got {type(v).__name__}: {v!r}")


class ConfigModule(nn.Module):
    """``nn.Module`` that records its constructor arguments in ``self.config``.

    Subclasses are registered with :func:`avatarforge.models.registry.register_model` so that
    ``from_pretrained`` can find them by short name.
    """

    registry_name: str = ""
    registry_role: str = ""
    config: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        init = cls.__dict__["__init__"]
        sig = inspect.signature(init)

        @functools.wraps(init)
        def wrapped(self, *args: Any, **kw: Any) -> None:
            # Only the outermost __init__ records (subclass calling super().__init__ must not
            # overwrite the config with the parent's narrower argument list).
            outer = not getattr(self, "_recording_config", False)
            if outer:
                bound = sig.bind(self, *args, **kw)
                bound.apply_defaults()
                cfg = {k: _jsonable(v) for k, v in list(bound.arguments.items())[1:] if k != "kwargs"}
                object.__setattr__(self, "_recording_config", True)
            try:
                init(self, *args, **kw)
            finally:
                if outer:
                    object.__setattr__(self, "_recording_config", False)
            if outer:
                self.config = cfg

        cls.__init__ = wrapped  # type: ignore[method-assign]

    # ------------------------------------------------------------------ persistence
    def config_dict(self) -> dict[str, Any]:
        """What ``config.json`` holds: registry name/role, constructor arguments, version."""
        return {
            "model": self.registry_name,
            "role": self.registry_role,
            "config": dict(self.config),
            "avatarforge_version": __version__,
        }

    def save_pretrained(self, directory: str | os.PathLike, prefix: str = "") -> Path:
        """Write ``{prefix}model.safetensors`` and then ``{prefix}config.json`` atomically.

        The config records the weights file's size and sha256 (``"weights"``), which
        :func:`load_pretrained` checks, so a damaged or mismatched weights file is reported
        instead of loaded.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()}
        data = save(state)
        weights = directory / f"{prefix}{WEIGHTS_NAME}"
        with atomic_writer(weights) as f:
            f.write(data)
        record = {"file": weights.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        atomic_write_json(directory / f"{prefix}{CONFIG_NAME}", {**self.config_dict(), "weights": record})
        return directory

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, prefix: str = "", map_location: str | torch.device = "cpu"
    ) -> ConfigModule:
        """Rebuild a saved model. Called on a subclass, checks the file holds that class."""
        model = load_pretrained(directory, prefix=prefix, map_location=map_location)
        if cls is not ConfigModule and not isinstance(model, cls):
            raise TypeError(f"{directory} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def load_pretrained(
    directory: str | os.PathLike, prefix: str = "", map_location: str | torch.device = "cpu"
) -> ConfigModule:
    """Load any registered model saved with :meth:`ConfigModule.save_pretrained`.

    Nothing is allocated for the weights until the config has been checked against the
    model's constructor and the weights file's header against the shapes that config makes
    (see the module docstring).

    Raises:
        FileNotFoundError: ``directory`` holds no ``{prefix}config.json``.
        ModelFileError: the config or weights file is damaged, inconsistent, or names a model
            or constructor argument this version does not have (one line, naming the file);
            :class:`UnknownModelError` (also a ``KeyError``) for an unknown model name.
    """
    from avatarforge.models.registry import get_model_class

    directory = Path(directory)
    cfg_path = directory / f"{prefix}{CONFIG_NAME}"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no {cfg_path.name} in {directory}; is this a saved AvatarForge model?")
    meta = _read_model_config(cfg_path)
    try:
        cls = get_model_class(meta["model"], meta.get("role", "generator"))
    except KeyError as e:
        raise UnknownModelError(f"{cfg_path}: {e.args[0] if e.args else e}") from None
    config = meta["config"]
    _check_arguments(cls, config, cfg_path)

    weights = directory / f"{prefix}{WEIGHTS_NAME}"
    if not weights.is_file():
        raise ModelFileError(f"{weights}: missing (the weights that {cfg_path.name} describes)")
    record = meta.get("weights")
    if record is not None:
        size = weights.stat().st_size
        if size != record["size"]:
            raise ModelFileError(
                f"{weights}: {size} bytes, but {cfg_path.name} records {record['size']} (truncated or replaced)"
            )
    header = read_safetensors_header(weights)
    _check_shapes(cls, config, header, cfg_path, weights)
    if record is not None and file_sha256(weights) != record["sha256"]:
        raise ModelFileError(
            f"{weights}: sha256 differs from the one {cfg_path.name} records (damaged or replaced)"
        )

    try:
        state = load_file(str(weights), device=str(map_location))
    except Exception as e:  # safetensors raises its own error type for malformed files
        raise ModelFileError(f"{weights}: unreadable ({_one_line(e)})") from None
    model = cls(**config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelFileError(
            f"{weights}: does not fit the model in {cfg_path.name} ({_one_line(e)})"
        ) from None
    return model.to(map_location)


def _json_object(read: Callable[[], str], invalid: str, not_object: str) -> dict[str, Any]:
    """The JSON object in the text ``read()`` returns (untrusted input); a
    :class:`ModelFileError` ``INVALID (the parser's reason)`` for text that does not decode or
    parse, ``not_object`` for JSON that is no object."""
    try:
        value = json.loads(read())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{invalid} ({e})") from None
    if not isinstance(value, dict):
        raise ModelFileError(not_object)
    return value


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _read_model_config(cfg_path: Path) -> dict[str, Any]:
    """``config.json`` parsed and its structure checked (untrusted input)."""
    meta = _json_object(
        lambda: cfg_path.read_text("utf-8"),
        f"{cfg_path}: not valid JSON",
        f"{cfg_path}: not a model config (a JSON object with 'model' and 'config')",
    )
    if not isinstance(meta.get("model"), str) or not isinstance(meta.get("role", "generator"), str):
        raise ModelFileError(f"{cfg_path}: not a model config ('model' and 'role' must be strings)")
    if not isinstance(meta.get("config"), dict):
        raise ModelFileError(
            f"{cfg_path}: not a model config ('config' must be an object of constructor arguments)"
        )
    record = meta.get("weights")
    if record is not None and not (
        isinstance(record, dict)
        and type(record.get("size")) is int
        and isinstance(record.get("sha256"), str)
        and len(record["sha256"]) == 64
    ):
        raise ModelFileError(f"{cfg_path}: damaged 'weights' record ({json.dumps(record)[:120]})")
    return meta


def _check_arguments(cls: type, config: Mapping[str, Any], cfg_path: Path) -> None:
    """Reject constructor arguments the class does not take, lacks, or of the wrong JSON type."""
    init = inspect.unwrap(cls.__init__)
    params = list(inspect.signature(init).parameters.values())[1:]
    named = {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    name = getattr(cls, "registry_name", "") or cls.__name__
    if not any(p.kind == p.VAR_KEYWORD for p in params):
        unknown = [k for k in config if k not in named]
        if unknown:
            raise ModelFileError(
                f"{cfg_path}: {name!r} takes no argument {unknown[0]!r} (it takes: {', '.join(named) or 'none'})"
            )
    missing = [k for k, p in named.items() if p.default is inspect.Parameter.empty and k not in config]
    if missing:
        raise ModelFileError(f"{cfg_path}: {name!r} needs argument {missing[0]!r}, which the config lacks")
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # annotations that do not resolve: leave the types to the constructor
        hints = {}
    for k, v in config.items():
        if k in hints and _type_ok(v, hints[k]) is False:
            raise ModelFileError(
                f"{cfg_path}: argument {k!r} of {name!r} must be {_type_label(hints[k])}, got {json.dumps(v)[:80]}"
            )


def _type_ok(v: Any, tp: Any) -> bool | None:
    """Whether JSON value ``v`` fits annotation ``tp`` (None: cannot tell, let it through)."""
    if tp is Any or tp is object:
        return True
    if tp is type(None):
        return v is None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Union or origin is types.UnionType:
        results = [_type_ok(v, a) for a in args]
        return any(r is not False for r in results)
    if origin is Literal:
        return v in args
    if tp is bool:
        return isinstance(v, bool)
    if tp is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if tp is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if tp is str:
        return isinstance(v, str)
    if tp in (list, tuple) or origin in (list, tuple, Sequence):
        if not isinstance(v, list):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(v):
                return False
            checks = [_type_ok(x, a) for x, a in zip(v, args)]
        else:
            checks = [_type_ok(x, args[0]) for x in v] if args else []
        return not any(c is False for c in checks)
    if tp is dict or origin in (dict, Mapping):
        return isinstance(v, dict)
    return None


def _type_label(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_shapes(
    cls: type, config: Mapping[str, Any], header: Mapping[str, TensorInfo], cfg_path: Path, weights: Path
) -> None:
    """Build the model on the meta device and compare its state dict with the file's header.

    The meta build costs no memory, so a config asking for an enormous network is rejected
    here instead of allocating it.
    """
    name = getattr(cls, "registry_name", "") or cls.__name__
    try:
        with torch.device("meta"):
            model = cls(**config)
    except Exception as e:  # anything the constructor rejects in an untrusted config
        raise ModelFileError(
            f"{cfg_path}: does not build a {name!r} model ({type(e).__name__}: {_one_line(e)})"
        ) from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in header]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelFileError(
            f"{weights}: lacks tensor {missing[0]!r}{more} that the model in {cfg_path.name} has"
        )
    extra = [k for k in header if k not in expected]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise ModelFileError(
            f"{weights}: holds tensor {extra[0]!r}{more} that the model in {cfg_path.name} does not have"
        )
    for k, shape in expected.items():
        if header[k].shape != shape:
            raise ModelFileError(
                f"{weights}: tensor {k!r} has shape {list(header[k].shape)}, the model in {cfg_path.name} {list(shape)}"
            )
    need = sum(t.numel() * t.element_size() for t in itertools.chain(model.parameters(), model.buffers()))
    have = sum(t.end - t.begin for t in header.values())
    if need > 2 * have + _BUILD_SLACK_BYTES:
        raise ModelFileError(
            f"{cfg_path}: the model it describes needs {need / 2**30:.1f} GiB, its weights file holds "
            f"{have / 2**20:.1f} MiB; refusing to build it"
        )
