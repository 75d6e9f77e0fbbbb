"""Training checkpoints: safetensors + JSON, written atomically, loaded without unpickling.

Layout of one checkpoint (``run/checkpoints/ckpt-SSSSSSSS/``, ``S`` = optimizer step)::

    g_config.json       g_model.safetensors        generator         (ConfigModule.save_pretrained)
    g_ema_config.json   g_ema_model.safetensors    EMA generator
    d_config.json       d_model.safetensors        discriminator
    training_state.safetensors   every tensor of the training state: optimizer moments
                                 (``optim/<name>/<param>/<key>``) and RNG states (``rng/<name>``)
    training_state.json          everything else: step and counters, optimizer hyper-parameters,
                                 numpy/python RNG states, learning-rate scale, data position, ...
    manifest.json                size and sha256 of every file above; written last

A checkpoint is built in a hidden temporary sibling directory and renamed into place, so a
``ckpt-*`` directory is always complete; then ``checkpoints/latest`` (a one-line text file
naming it) is replaced atomically. A crash at any point leaves the previous checkpoint and
pointer usable, and :func:`find_checkpoint` falls back to scanning if ``latest`` is stale.

What a crash cannot do, a disk can: files are truncated or flipped after the fact.
:func:`verify_checkpoint` checks every file against the manifest (checkpoints written before
manifests existed are checked by parsing every file's header instead), and
:func:`find_intact_checkpoint` (what resume uses) skips damaged checkpoints, newest first, with a
:class:`CheckpointWarning` naming the file and the problem. Every damaged or malformed file
raises :class:`CheckpointError`, a ``ValueError`` with a one-line message naming the file.

Nothing here calls ``torch.load``/``pickle``: a checkpoint from an untrusted source can at
worst hold wrong numbers, never run code.

The same in-memory form (:class:`Snapshot`) is used for the NaN guard's last-good copy, so
restoring from memory and from disk is one code path.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import warnings
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

FORMAT_NAME = "avatarforge-checkpoint"
FORMAT_VERSION = 1
CKPT_PREFIX = "ckpt-"
LATEST_NAME = "latest"
BEST_NAME = "best"
STATE_JSON = "training_state.json"
STATE_TENSORS = "training_state.safetensors"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "avatarforge-checkpoint-manifest"
_CKPT_RE = re.compile(r"^ckpt-(\d+)$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class CheckpointError(ModelFileError):
    """A checkpoint file is missing, damaged or inconsistent; the one-line message names it.

    A :class:`~avatarforge.models.base.ModelFileError`, hence a ``ValueError``.
    """


class CheckpointWarning(UserWarning):
    """A checkpoint was passed over while looking for one to resume from (the message says why)."""


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
def checkpoint_step(path: str | os.PathLike) -> int | None:
    """``S`` of a ``ckpt-SSSSSSSS`` directory name, else None."""
    m = _CKPT_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Complete ``ckpt-*`` directories under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if checkpoint_step(p) is not None and (p / STATE_JSON).is_file()]
    return sorted(found, key=lambda p: checkpoint_step(p) or 0)


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


def _is_checkpoint_file(name: str) -> bool:
    return name in (STATE_JSON, STATE_TENSORS) or name.endswith((f"_{CONFIG_NAME}", f"_{WEIGHTS_NAME}"))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: damaged, not valid JSON ({e})") from None


def _read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    doc = _read_json(path)
    files = doc.get("files") if isinstance(doc, dict) else None
    if (
        not isinstance(doc, dict)
        or doc.get("format") != MANIFEST_FORMAT
        or doc.get("version") != 1
        or not isinstance(files, dict)
    ):
        raise CheckpointError(f"{path}: damaged (not a checkpoint manifest)")
    for name, rec in files.items():
        ok = (
            isinstance(rec, dict)
            and "/" not in name
            and "\\" not in name
            and name not in ("", ".", "..")
            and type(rec.get("size")) is int
            and isinstance(rec.get("sha256"), str)
            and _SHA256_RE.match(rec["sha256"])
        )
        if not ok:
            raise CheckpointError(f"{path}: damaged (entry {name!r}: {json.dumps(rec)[:120]})")
    return files


def verify_checkpoint(path: str | os.PathLike, files: Iterable[str] | None = None) -> None:
    """Check a checkpoint directory's files before anything is loaded from it.

    With a manifest: every listed file exists with the recorded size and sha256, and no
    checkpoint file is missing from it. Without one (checkpoints written before manifests):
    every JSON file parses and every safetensors header fits its file, which catches
    truncation but not a flipped bit inside tensor data. ``files`` restricts the check to
    those names (e.g. one network's config).

    Raises:
        CheckpointError: naming the first damaged or missing file and what is wrong with it.
    """
    ckpt = Path(path)
    if not ckpt.is_dir():
        raise CheckpointError(f"{ckpt}: missing (not a checkpoint directory)")
    manifest = ckpt / MANIFEST_NAME
    if manifest.is_file():
        listed = _read_manifest(manifest)
        if files is None:
            if STATE_JSON not in listed:
                raise CheckpointError(f"{manifest}: damaged (does not list {STATE_JSON})")
            unlisted = sorted(
                f.name for f in ckpt.iterdir() if _is_checkpoint_file(f.name) and f.name not in listed
            )
            if unlisted:
                raise CheckpointError(
                    f"{ckpt / unlisted[0]}: not in {MANIFEST_NAME} (added after the checkpoint was written)"
                )
            names = sorted(listed)
        else:
            names = list(files)
        for name in names:  # sizes first: a truncated file is found without hashing anything
            f = ckpt / name
            if name not in listed:
                raise CheckpointError(f"{f}: not in {MANIFEST_NAME}")
            if not f.is_file():
                raise CheckpointError(f"{f}: missing (listed in {MANIFEST_NAME})")
            size = f.stat().st_size
            if size != listed[name]["size"]:
                raise CheckpointError(
                    f"{f}: {size} bytes, {MANIFEST_NAME} records {listed[name]['size']} (truncated or damaged)"
                )
        for name in names:
            if file_sha256(ckpt / name) != listed[name]["sha256"]:
                raise CheckpointError(f"{ckpt / name}: damaged (sha256 differs from {MANIFEST_NAME})")
        return

    state = _read_json(ckpt / STATE_JSON) if files is None or STATE_JSON in files else None
    if state is not None:
        if not isinstance(state, dict) or state.get("format") != FORMAT_NAME:
            raise CheckpointError(f"{ckpt / STATE_JSON}: not an AvatarForge checkpoint's training state")
        if state.get("manifest"):
            raise CheckpointError(f"{manifest}: missing (this checkpoint was written with one)")
    present = sorted(f.name for f in ckpt.iterdir() if f.is_file())
    names = present if files is None else list(files)
    for name in names:
        f = ckpt / name
        if not f.is_file():
            raise CheckpointError(f"{f}: missing")
        if name.endswith(".json"):
            _read_json(f)
        elif name.endswith(".safetensors"):
            try:
                read_safetensors_header(f)
            except ModelFileError as e:
                raise CheckpointError(str(e)) from None
    if files is None:
        need = [STATE_TENSORS] + [
            n[: -len(CONFIG_NAME)] + WEIGHTS_NAME for n in present if n.endswith(f"_{CONFIG_NAME}")
        ]
        for name in need:
            if name not in present:
                raise CheckpointError(f"{ckpt / name}: missing")


def find_checkpoint(path: str | os.PathLike) -> Path:
    """Resolve a run directory, a ``checkpoints`` directory or a checkpoint to a checkpoint.

    A run or checkpoints directory resolves to its latest complete checkpoint (via the
    ``latest`` pointer, falling back to the highest-numbered ``ckpt-*``).

    Raises:
        FileNotFoundError: naming what was looked for.
    """
    p = Path(path)
    if (p / STATE_JSON).is_file():
        return p
    root = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    name = _read_pointer(root)
    if name and (root / name / STATE_JSON).is_file():
        return root / name
    found = list_checkpoints(root)
    if found:
        return found[-1]
    raise FileNotFoundError(
        f"no checkpoint in {p} (looked for {root}/{LATEST_NAME} and {root}/{CKPT_PREFIX}*/{STATE_JSON})"
    )


def _read_pointer(root: Path) -> str | None:
    """The checkpoint name ``root/latest`` holds, or None if it is missing or unreadable."""
    try:
        name = (root / LATEST_NAME).read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name if checkpoint_step(name) is not None else None


def find_intact_checkpoint(path: str | os.PathLike, *, warn: bool = True) -> Path:
    """The checkpoint to resume from: like :func:`find_checkpoint`, but verified.

    A checkpoint directory (``ckpt-*``, ``best``) is verified and returned, or rejected. A run
    or ``checkpoints`` directory resolves to its newest intact checkpoint: the one ``latest``
    names, else (damaged) the next older ones; a :class:`CheckpointWarning` names each
    damaged checkpoint passed over and why. Checkpoints newer than the one ``latest`` names
    (a write cut between the rename and the pointer update, or those of a run resumed from an
    older checkpoint) are not used, with a warning.

    Raises:
        CheckpointError: the named checkpoint, or every candidate, is damaged.
        FileNotFoundError: no checkpoint at all.
    """
    p = Path(path)
    if (p / STATE_JSON).is_file() or (p / MANIFEST_NAME).is_file() or checkpoint_step(p) is not None:
        verify_checkpoint(p)
        return p
    root = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    found = sorted(
        (
            d
            for d in (root.iterdir() if root.is_dir() else [])
            if d.is_dir() and checkpoint_step(d) is not None
        ),
        key=lambda d: checkpoint_step(d) or 0,
        reverse=True,
    )
    if not found:
        raise FileNotFoundError(f"no checkpoint in {p} (looked for {root}/{CKPT_PREFIX}*)")
    name = _read_pointer(root)
    if name and (root / name).is_dir():
        top = checkpoint_step(name) or 0
        newer = [d.name for d in found if (checkpoint_step(d) or 0) > top]
        if newer and warn:
            warnings.warn(
                f"{root / LATEST_NAME} names {name}, but {', '.join(newer)} {'is' if len(newer) == 1 else 'are'} newer "
                "(a checkpoint write cut before the pointer update, or a run resumed from an older checkpoint); "
                f"using {name} (pass a checkpoint directory to --resume to choose another)",
                CheckpointWarning,
                stacklevel=2,
            )
        found = [d for d in found if (checkpoint_step(d) or 0) <= top]
    problems = []
    for ckpt in found:
        try:
            verify_checkpoint(ckpt)
        except CheckpointError as e:
            problems.append(str(e))
            if warn:
                warnings.warn(
                    f"skipping damaged checkpoint {ckpt.name}: {e}", CheckpointWarning, stacklevel=2
                )
            continue
        return ckpt
    raise CheckpointError(f"no intact checkpoint in {root}: {'; '.join(problems)}")


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
