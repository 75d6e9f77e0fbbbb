"""What a model's labels and latent codes mean, and turning user requests into tensors.

A conditional generator only knows ``label_dims`` (class counts). The *names* of the labels
and of their classes come from the training run:

1. a VAE stores them in its own config (``label_names`` / ``label_values``);
2. a GAN checkpoint's ``training_state.json`` has ``label_schema`` (the label fields, if
   the trainer saved them) or else ``label_names`` plus the data set path, whose
   ``labels.json`` gives the classes;
3. a run directory's ``config.json`` gives the data set path and ``data.condition_on``.

When none of that can be read (a checkpoint copied without its data set), labels are
addressed by index (``label0=3``), and error messages say so.

Requests look like the CLI's: ``{"hair_color": "pink"}`` (class name, index, or
``"unknown"`` for the model's "unknown" row) and codes ``{"c0": 0.8, "cat0": 3}``
(InfoGAN continuous code 0 set to 0.8; categorical code 0 set to class 3).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "UNKNOWN",
    "CodeColumns",
    "LabelInfo",
    "apply_codes",
    "code_columns",
    "encode_attrs",
    "encode_codes",
    "labels_tensor",
    "model_labels",
    "parse_assignments",
]

#: Attribute value that selects the "unknown" class (the data set's NaN) of a label.
UNKNOWN = "unknown"


@dataclass(frozen=True)
class LabelInfo:
    """Names of a conditional model's labels and of their classes.

    Attributes:
        names: one name per label column (``label_dims`` order).
        values: class names per label (``values[i][k]``); an empty list where unknown.
        dims: classes per label (the model's ``label_dims``).
        source: where the names were read from (for error messages).
    """

    names: tuple[str, ...] = ()
    values: tuple[tuple[str, ...], ...] = ()
    dims: tuple[int, ...] = ()
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"names": list(self.names), "values": [list(v) for v in self.values], "dims": list(self.dims)}

    def index(self, name: str) -> int:
        """Column of label ``name``; ``ValueError`` listing the valid names otherwise."""
        if name in self.names:
            return self.names.index(name)
        if not self.names:
            raise ValueError(f"this model is unconditional; it takes no attributes (got {name!r})")
        raise ValueError(f"unknown attribute {name!r}; this model is conditioned on: {', '.join(self.names)}")

    def class_index(self, i: int, value: Any) -> int:
        """Class index of ``value`` (name, index or :data:`UNKNOWN`) for label column ``i``."""
        k = self.dims[i]
        vals = self.values[i]
        if isinstance(value, bool):
            raise ValueError(f"attribute {self.names[i]!r}: {value!r} is not a class")
        if isinstance(value, int):
            if not 0 <= value <= k:
                raise ValueError(
                    f"attribute {self.names[i]!r}: index {value} out of range 0..{k - 1} ({k} = unknown)"
                )
            return value
        text = str(value).strip()
        if text == UNKNOWN:
            return k
        if text in vals:
            return vals.index(text)
        if text.isdigit():
            return self.class_index(i, int(text))
        valid = (
            ", ".join(vals) if vals else f"class indices 0..{k - 1} (class names unavailable: {self.source})"
        )
        raise ValueError(f"attribute {self.names[i]!r}: unknown value {text!r}; valid values: {valid}")

    def class_name(self, i: int, index: int) -> str:
        """Name of class ``index`` of label ``i`` (its index as text when names are unknown)."""
        if index == self.dims[i]:
            return UNKNOWN
        vals = self.values[i]
        return vals[index] if index < len(vals) else str(index)

    def decode(self, row: Sequence[int]) -> dict[str, str]:
        """One row of label indices -> ``{name: class name}``."""
        return {n: self.class_name(i, int(v)) for i, (n, v) in enumerate(zip(self.names, row))}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None


def _schema_values(data_path: str | None, names: Sequence[str]) -> dict[str, tuple[str, ...]] | None:
    """Class names of ``names`` from a packed data set's ``labels.json`` (None if unreadable)."""
    if not data_path:
        return None
    fields = _read_json(Path(data_path) / "labels.json")
    if not isinstance(fields, list):
        return None
    by_name = {f.get("name"): tuple(f.get("values", ())) for f in fields if isinstance(f, dict)}
    return {n: by_name[n] for n in names if n in by_name}


def _categorical_names(data_path: str | None) -> list[str] | None:
    fields = _read_json(Path(data_path) / "labels.json") if data_path else None
    if not isinstance(fields, list):
        return None
    return [f["name"] for f in fields if isinstance(f, dict) and f.get("kind") == "categorical"]


def model_labels(G: Any, path: str | os.PathLike | None = None, checkpoint: Path | None = None) -> LabelInfo:
    """The :class:`LabelInfo` of generator ``G`` loaded from ``path`` (run dir or checkpoint).

    See the module docstring for where names come from. Unconditional models give an empty
    ``LabelInfo``.
    """
    dims = tuple(int(k) for k in getattr(G, "label_dims", []) or [])
    if not dims:
        return LabelInfo(source="unconditional")
    names: list[str] | None = None
    values: dict[str, tuple[str, ...]] = {}
    source = ""
    # 1. The model itself (VAE).
    if getattr(G, "label_names", None):
        names = list(G.label_names)
        values = {n: tuple(v) for n, v in zip(names, getattr(G, "label_values", []) or [])}
        source = "model config"
    state = _read_json(checkpoint / "training_state.json") if checkpoint is not None else None
    run_cfg = None
    if path is not None:
        p = Path(path)
        for cand in (p / "config.json", p.parent / "config.json", p.parent.parent / "config.json"):
            if cand.is_file():
                run_cfg = _read_json(cand)
                break
    data_path = None
    if state:
        data_path = (state.get("data") or {}).get("path") or (state.get("config") or {}).get("data", {}).get(
            "path"
        )
    if not data_path and run_cfg:
        data_path = (run_cfg.get("data") or {}).get("path")
    # 2. A label schema saved with the checkpoint (preferred: survives moving the data set).
    if names is None and state and isinstance(state.get("label_schema"), list):
        fields = [f for f in state["label_schema"] if isinstance(f, dict)]
        names = [str(f["name"]) for f in fields]
        values = {str(f["name"]): tuple(f.get("values", ())) for f in fields}
        source = "checkpoint label_schema"
    if names is None and state and state.get("label_names") is not None:
        names = list(state["label_names"])
        source = "checkpoint label_names"
    if names is None and run_cfg is not None:
        cond = (run_cfg.get("data") or {}).get("condition_on")
        names = list(cond) if cond is not None else _categorical_names(data_path)
        source = "run config.json"
    if names is not None and not values:
        found = _schema_values(data_path, names)
        if found:
            values = found
            source += f" + {Path(str(data_path)) / 'labels.json'}"
        else:
            source += f" (data set labels.json not readable at {data_path})"
    if names is None or len(names) != len(dims):
        names = [f"label{i}" for i in range(len(dims))]
        values = {}
        source = "no label names found with the model"
    vals = tuple(values.get(n, ()) if len(values.get(n, ())) == k else () for n, k in zip(names, dims))
    return LabelInfo(tuple(names), vals, dims, source)


def parse_assignments(text: str | Mapping[str, Any] | None, what: str = "--attrs") -> dict[str, str]:
    """``"hair_color=pink,eye_color=blue"`` -> ``{"hair_color": "pink", "eye_color": "blue"}``.

    A mapping is returned as a dict of strings; ``None``/``""`` give ``{}``.
    """
    if text is None:
        return {}
    if isinstance(text, Mapping):
        return {str(k): str(v) for k, v in text.items()}
    out: dict[str, str] = {}
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise ValueError(f"{what} item {item!r} must look like name=value")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def encode_attrs(info: LabelInfo, attrs: Mapping[str, Any] | None) -> list[int | None]:
    """Requested attributes -> one class index per label column (``None`` = not requested).

    Raises:
        ValueError: an unknown attribute name or value (the message lists the valid ones).
    """
    row: list[int | None] = [None] * len(info.dims)
    for name, value in (attrs or {}).items():
        i = info.index(name)
        row[i] = info.class_index(i, value)
    return row


@dataclass(frozen=True)
class CodeColumns:
    """Where each InfoGAN code lives in the ``codes`` tensor."""

    categorical: tuple[tuple[int, int], ...] = ()  # (start column, classes) per categorical code
    continuous: tuple[int, ...] = ()  # column per continuous code
    width: int = 0
    names: tuple[str, ...] = field(default=())  # "cat0", ..., "c0", ...


def code_columns(code_dims: Mapping[str, Any] | None) -> CodeColumns:
    """Column layout of ``codes`` for ``code_dims`` (one-hot blocks, then continuous values)."""
    cats = list((code_dims or {}).get("categorical", []))
    n_cont = int((code_dims or {}).get("continuous", 0))
    starts, col = [], 0
    for k in cats:
        starts.append((col, int(k)))
        col += int(k)
    cont = tuple(range(col, col + n_cont))
    names = tuple(f"cat{i}" for i in range(len(cats))) + tuple(f"c{j}" for j in range(n_cont))
    return CodeColumns(tuple(starts), cont, col + n_cont, names)


def encode_codes(code_dims: Mapping[str, Any] | None, codes: Mapping[str, Any] | None) -> dict[str, float]:
    """Validate ``{"c0": 0.8, "cat1": 3}`` against ``code_dims``; returns name -> number.

    Raises:
        ValueError: a model without codes, an unknown code name, or a bad value (the message
            lists the valid names and ranges).
    """
    if not codes:
        return {}
    cols = code_columns(code_dims)
    if not cols.width:
        raise ValueError("this model has no latent codes (only InfoGAN models do); drop --codes")
    out: dict[str, float] = {}
    for name, value in codes.items():
        if name not in cols.names:
            raise ValueError(
                f"unknown code {name!r}; this model's codes: {', '.join(cols.names)} "
                "(cN = continuous code N, usually in [-1, 1]; catN = categorical code N, a class index)"
            )
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"code {name}: {value!r} is not a number") from None
        if name.startswith("cat"):
            k = cols.categorical[int(name[3:])][1]
            if v != int(v) or not 0 <= v < k:
                raise ValueError(f"code {name}: class index must be an integer 0..{k - 1}, got {value!r}")
        out[name] = v
    return out


def apply_codes(codes: Tensor, code_dims: Mapping[str, Any] | None, values: Mapping[str, float]) -> Tensor:
    """``codes (N, W)`` with the entries named in ``values`` overwritten (a new tensor)."""
    if not values:
        return codes
    cols = code_columns(code_dims)
    codes = codes.clone()
    for name, v in values.items():
        if name.startswith("cat"):
            start, k = cols.categorical[int(name[3:])]
            codes[:, start : start + k] = 0.0
            codes[:, start + int(v)] = 1.0
        else:
            codes[:, cols.continuous[int(name[1:])]] = float(v)
    return codes


def labels_tensor(rows: Sequence[Sequence[int]]) -> Tensor:
    """Rows of class indices -> ``(N, L)`` int64 tensor."""
    return torch.tensor([list(r) for r in rows], dtype=torch.long)
