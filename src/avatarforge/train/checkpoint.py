"""Writing training checkpoints (safetensors + JSON, atomically) and restoring training state.

The layout of a run on disk, finding, verifying and loading checkpoints belong to
:mod:`avatarforge.runs` (re-exported here: :func:`find_checkpoint`,
:func:`find_intact_checkpoint`, :func:`verify_checkpoint`, :func:`list_checkpoints`, ...);
this module writes them and reads back the whole training state for resume.

A checkpoint is built in a hidden temporary sibling directory and renamed into place, so a
``ckpt-*`` directory is always complete; then ``checkpoints/latest`` (a one-line text file
naming it) is replaced atomically. A crash at any point leaves the previous checkpoint and
pointer usable, and :func:`find_checkpoint` falls back to scanning if ``latest`` is stale.
The manifest (size and sha256 of every file) is written last; resume uses
:func:`find_intact_checkpoint`, which skips damaged checkpoints with a
:class:`CheckpointWarning`.

Nothing here calls ``torch.load``/``pickle``: a checkpoint from an untrusted source can at
worst hold wrong numbers, never run code.

The same in-memory form (:class:`Snapshot`) is used for the NaN guard's last-good copy, so
restoring from memory and from disk is one code path.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save

from avatarforge.fileio import (
    atomic_directory,
    atomic_write_json,
    atomic_write_text,
    atomic_writer,
    file_sha256,
    remove_stale_temp,
)
from avatarforge.models.base import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    ModelFileError,
    read_safetensors_header,
)
from avatarforge.runs import (
    BEST_NAME,
    CKPT_PREFIX,
    FORMAT_NAME,
    FORMAT_VERSION,
    LATEST_NAME,
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    STATE_JSON,
    STATE_TENSORS,
    CheckpointError,
    CheckpointWarning,
    _read_json,
    _read_pointer,
    checkpoint_step,
    find_checkpoint,
    find_intact_checkpoint,
    list_checkpoints,
    verify_checkpoint,
)

__all__ = [
    "CKPT_PREFIX",
    "FORMAT_NAME",
    "LATEST_NAME",
    "MANIFEST_NAME",
    "STATE_JSON",
    "STATE_TENSORS",
    "CheckpointError",
    "CheckpointWarning",
    "Snapshot",
    "capture_rng",
    "checkpoint_step",
    "find_checkpoint",
    "find_intact_checkpoint",
    "list_checkpoints",
    "load_snapshot",
    "optimizer_state",
    "prune_checkpoints",
    "restore_optimizer",
    "restore_rng",
    "save_best",
    "save_checkpoint",
    "verify_checkpoint",
    "write_manifest",
]


@dataclass
class Snapshot:
    """The full training state in memory: model weights, state tensors, JSON metadata.

    ``models`` maps a prefix (``"g"``, ``"g_ema"``, ``"d"``) to a state dict; ``tensors``
    holds optimizer and RNG tensors; ``meta`` is JSON-serialisable.
    """

    models: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))


def _cpu_copy(t: torch.Tensor) -> torch.Tensor:
    # Always a copy: a snapshot must not alias live parameters that keep training.
    return t.detach().to("cpu", copy=True).contiguous()


# --------------------------------------------------------------------------- optimizer state
def optimizer_state(opt: torch.optim.Optimizer, name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``opt.state_dict()`` into tensors (``optim/<name>/<param>/<key>``) and JSON meta."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim/{name}/{pid}/{k}"] = _cpu_copy(v)
            else:
                scalars.setdefault(str(pid), {})[k] = v
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def restore_optimizer(
    opt: torch.optim.Optimizer, name: str, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
) -> None:
    """Inverse of :func:`optimizer_state`."""
    prefix = f"optim/{name}/"
    state: dict[int, dict[str, Any]] = {}
    for key, t in tensors.items():
        if key.startswith(prefix):
            pid, k = key[len(prefix) :].split("/", 1)
            state.setdefault(int(pid), {})[k] = t.clone()
    for pid, st in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(st)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g and isinstance(g["betas"], list):
            g["betas"] = tuple(g["betas"])  # Adam checks the type of betas in some versions
        groups.append(g)
    opt.load_state_dict({"state": state, "param_groups": groups})


# --------------------------------------------------------------------------- RNG state
def capture_rng(generators: Mapping[str, torch.Generator]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """States of every random number generator a training run may touch.

    The trainer's own ``torch.Generator`` objects (``generators``), the global torch CPU RNG,
    every CUDA device's RNG, NumPy's and Python's global RNGs.
    """
    tensors = {f"rng/{name}": _cpu_copy(g.get_state()) for name, g in generators.items()}
    tensors["rng/torch_cpu"] = _cpu_copy(torch.get_rng_state())
    meta: dict[str, Any] = {"generators": sorted(generators)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = torch.cuda.get_rng_state_all()
        for i, s in enumerate(cuda):
            tensors[f"rng/cuda/{i}"] = _cpu_copy(s)
        meta["cuda_devices"] = len(cuda)
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
    meta["numpy"] = [kind, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)]
    version, internal, gauss_next = random.getstate()
    meta["python"] = [version, list(internal), gauss_next]
    return tensors, meta


def restore_rng(
    generators: Mapping[str, torch.Generator], tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
) -> None:
    """Inverse of :func:`capture_rng`. Raises KeyError naming a generator the state lacks."""
    for name, g in generators.items():
        key = f"rng/{name}"
        if key not in tensors:
            raise KeyError(
                f"checkpoint has no RNG state for {name!r} (it has: {', '.join(meta.get('generators', []))})"
            )
        g.set_state(tensors[key].clone())
    torch.set_rng_state(tensors["rng/torch_cpu"].clone())
    n_cuda = int(meta.get("cuda_devices", 0))
    if n_cuda and torch.cuda.is_available() and torch.cuda.device_count() == n_cuda:
        torch.cuda.set_rng_state_all([tensors[f"rng/cuda/{i}"].clone() for i in range(n_cuda)])
    if "numpy" in meta:
        kind, keys, pos, has_gauss, cached = meta["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "python" in meta:
        version, internal, gauss_next = meta["python"]
        random.setstate((version, tuple(internal), gauss_next))


# --------------------------------------------------------------------------- disk format
def save_checkpoint(
    root: str | os.PathLike,
    step: int,
    *,
    models: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``root/ckpt-SSSSSSSS/`` atomically, then point ``root/latest`` at it.

    Args:
        root: the ``checkpoints`` directory of a run.
        step: optimizer steps taken (names the directory).
        models: prefix -> :class:`~avatarforge.models.base.ConfigModule`, written with
            ``save_pretrained(prefix=prefix + "_")``.
        tensors: training-state tensors (optimizer moments, RNG states, ...).
        meta: JSON-serialisable training state.
    """
    root = Path(root)
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        **dict(meta or {}),
        "step": int(step),
        # Says a manifest was written, so a checkpoint that lost it is not taken for an old one.
        "manifest": MANIFEST_NAME,
    }
    path = root / f"{CKPT_PREFIX}{int(step):08d}"
    with atomic_directory(path, overwrite=True) as tmp:
        for prefix, module in models.items():
            module.save_pretrained(tmp, prefix=f"{prefix}_")
        with atomic_writer(tmp / STATE_TENSORS) as f:
            f.write(save({k: v.contiguous() for k, v in (tensors or {}).items()}))
        atomic_write_json(tmp / STATE_JSON, meta)
        # The manifest goes last and hashes what is on disk, not what was meant to be written.
        write_manifest(tmp)
    atomic_write_text(root / LATEST_NAME, path.name + "\n")
    return path


def write_manifest(directory: str | os.PathLike) -> Path:
    """Write ``directory/manifest.json``: size and sha256 of every (non-hidden) file in it."""
    directory = Path(directory)
    files = {
        f.name: {"size": f.stat().st_size, "sha256": file_sha256(f)}
        for f in sorted(directory.iterdir())
        if f.is_file() and not f.name.startswith(".") and f.name != MANIFEST_NAME
    }
    return atomic_write_json(
        directory / MANIFEST_NAME, {"format": MANIFEST_FORMAT, "version": 1, "files": files}
    )


def load_snapshot(path: str | os.PathLike, map_location: str = "cpu", *, verify: bool = True) -> Snapshot:
    """Read a checkpoint written by :func:`save_checkpoint` (no unpickling).

    ``path`` resolves as in :func:`find_checkpoint`. With ``verify`` (the default) the
    checkpoint is checked with :func:`verify_checkpoint` first; pass False only for one that
    was just verified (resume does, after :func:`find_intact_checkpoint`).

    Raises:
        CheckpointError: a damaged, missing or malformed file (the message names it).
    """
    ckpt = find_checkpoint(path)
    if verify:
        verify_checkpoint(ckpt)
    meta = _read_json(ckpt / STATE_JSON)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{ckpt / STATE_JSON}: not an AvatarForge checkpoint (format {fmt!r})")
    try:
        version = int(meta.get("format_version", 0))
    except (TypeError, ValueError):
        raise CheckpointError(
            f"{ckpt / STATE_JSON}: damaged (format_version {meta.get('format_version')!r})"
        ) from None
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{ckpt}: checkpoint format {version} is newer than this AvatarForge")
    tensors = _load_tensors(ckpt / STATE_TENSORS, map_location)
    models: dict[str, dict[str, torch.Tensor]] = {}
    for cfg in sorted(ckpt.glob(f"*_{CONFIG_NAME}")):
        prefix = cfg.name[: -len(f"_{CONFIG_NAME}")]
        weights = ckpt / f"{prefix}_{WEIGHTS_NAME}"
        if weights.is_file():
            models[prefix] = _load_tensors(weights, map_location)
    meta["path"] = str(ckpt)
    return Snapshot(models=models, tensors=tensors, meta=meta)


def _load_tensors(path: Path, map_location: str) -> dict[str, torch.Tensor]:
    """``load_file`` with its errors turned into one-line :class:`CheckpointError` s."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        read_safetensors_header(path)  # a clear message for truncated or foreign files
        return load_file(str(path), device=map_location)
    except ModelFileError as e:
        raise CheckpointError(str(e)) from None
    except Exception as e:  # safetensors' own error type
        raise CheckpointError(f"{path}: unreadable ({' '.join(str(e).split())})") from None


def prune_checkpoints(
    root: str | os.PathLike, keep_last: int, protect: Iterable[str | os.PathLike] = ()
) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints (never ``protect``-ed ones).

    Also removes leftovers of interrupted writes (hidden ``.ckpt-*.partial`` directories,
    temporary files of dead processes such as ``.latest.<pid>.*.tmp``). Returns the removed
    paths.
    """
    root = Path(root)
    keep = {Path(p).resolve() for p in protect}
    found = list_checkpoints(root)
    name = _read_pointer(root)
    if name:
        keep.add((root / name).resolve())
    removed = []
    for p in found[: max(0, len(found) - keep_last)]:
        if p.resolve() not in keep:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    for p in root.glob(f".{CKPT_PREFIX}*.partial"):
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    removed += remove_stale_temp(root)
    return removed


def save_best(root: str | os.PathLike, ckpt: str | os.PathLike, info: Mapping[str, Any]) -> Path:
    """Make ``root/best/`` a copy of checkpoint ``ckpt`` (hard links when possible) plus ``best.json``.

    Checkpoint files are never modified in place (every write is a rename of a new file),
    so hard-linking them is safe and costs no disk space.
    """
    root, ckpt = Path(root), Path(ckpt)
    with atomic_directory(root / BEST_NAME, overwrite=True) as tmp:
        for f in ckpt.iterdir():
            if f.is_file():
                try:
                    os.link(f, tmp / f.name)
                except OSError:
                    shutil.copy2(f, tmp / f.name)
        atomic_write_json(tmp / "best.json", {**dict(info), "source": ckpt.name})
    return root / BEST_NAME
