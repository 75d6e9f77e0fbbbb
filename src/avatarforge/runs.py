"""One trained run on disk: its layout, finding and checking its checkpoints, loading its networks.

Everything that reads a run lives here; ``train/`` writes runs (and restores training state
from them), every other part of AvatarForge reads them through this module.

Paths a user may hand a command (:func:`resolve_run`)::

    runs/00003-stylegan-64                 a run directory: its latest checkpoint
    runs/00003-stylegan-64/checkpoints     the same
    .../checkpoints/ckpt-00001234          one checkpoint (also checkpoints/best)
    runs/quickstart                        a quickstart output folder: its generator run, or
                                           its animator run where an animator is wanted
    DIR with config.json + model.safetensors   a network saved with save_pretrained
    RUN:SEED                               sample SEED of RUN's generator (:func:`split_run_seed`)

Layout of one checkpoint (``run/checkpoints/ckpt-SSSSSSSS/``, ``S`` = optimizer step)::

    g_config.json       g_model.safetensors        generator         (ConfigModule.save_pretrained)
    g_ema_config.json   g_ema_model.safetensors    EMA generator
    d_config.json       d_model.safetensors        discriminator
    training_state.safetensors   every tensor of the training state (optimizer moments, RNG states)
    training_state.json          everything else (step, counters, configuration, ...)
    manifest.json                size and sha256 of every file above; written last

The prefix of each network is its role (:data:`ROLE_PREFIXES`): GAN runs and the expression
animator's hold ``g_``, ``g_ema_``, ``d_``; VAE runs ``vae_`` (and ``vae_ema_``); CycleGAN runs
``g_ab_``, ``g_ba_``, ``d_a_``, ``d_b_``. ``checkpoints/latest`` is a one-line text file naming
the newest checkpoint; :func:`find_checkpoint` falls back to scanning if it is stale.

Checking: :func:`verify_checkpoint` checks files against the manifest (checkpoints written
before manifests existed are checked by parsing every file's header instead), and every
loader here checks a network's config against the manifest before
:func:`~avatarforge.models.base.load_pretrained` checks its weights. A damaged or malformed
file raises a one-line :class:`CheckpointError` /
:class:`~avatarforge.models.base.ModelFileError` (``ValueError`` s) naming it; a path that holds
no run raises :class:`FileNotFoundError` saying what to pass instead.

Nothing here calls ``torch.load``/``pickle``: a run from an untrusted source can at worst hold
wrong numbers, never run code.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from avatarforge.fileio import file_sha256
from avatarforge.models.base import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    ConfigModule,
    ModelFileError,
    load_pretrained,
    read_safetensors_header,
)

__all__ = [
    "BEST_NAME",
    "CKPT_PREFIX",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "LATEST_NAME",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "QUICKSTART_MANIFEST",
    "QUICKSTART_STATE",
    "ROLE_PREFIXES",
    "STATE_JSON",
    "STATE_TENSORS",
    "WHAT_TO_PASS",
    "CheckpointError",
    "CheckpointWarning",
    "checkpoint_for",
    "checkpoint_step",
    "find_checkpoint",
    "find_intact_checkpoint",
    "is_saved_model",
    "is_vae_checkpoint",
    "list_checkpoints",
    "load_animator",
    "load_generator",
    "load_model",
    "load_network",
    "load_refiner",
    "load_segmenter",
    "load_vae",
    "quickstart_runs",
    "read_training_state",
    "resolve_run",
    "split_run_seed",
    "verify_checkpoint",
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

#: Written by ``avatarforge quickstart`` into its output folder: ``{"generator_run": ...,
#: "animator_run": ...}``, paths relative to that folder (when it has finished).
QUICKSTART_MANIFEST = "quickstart.json"
#: The quickstart's resume state; its ``runs`` name the run of each training stage so far.
QUICKSTART_STATE = "quickstart-state.json"

#: File prefix of each network a checkpoint can hold, by role (``which`` of the loaders).
ROLE_PREFIXES: dict[str, str] = {
    "ema": "g_ema_",  # EMA generator (GAN, expression animator)
    "g_ema": "g_ema_",
    "g": "g_",  # trained generator
    "d": "d_",  # discriminator
    "vae": "vae_",
    "vae_ema": "vae_ema_",
    "g_ab": "g_ab_",  # CycleGAN: A -> B, B -> A, and the two discriminators
    "g_ba": "g_ba_",
    "d_a": "d_a_",
    "d_b": "d_b_",
}
_VAE_PREFIXES = {"ema": "vae_ema_", "vae_ema": "vae_ema_", "vae": "vae_", "raw": "vae_"}

#: What a command that reads a run accepts (the end of every "not a run" message).
WHAT_TO_PASS = (
    "pass a run directory of avatarforge train (e.g. runs/00000-stylegan-64), one of its "
    "checkpoints (checkpoints/ckpt-*, checkpoints/best), or a quickstart output folder"
)


class CheckpointError(ModelFileError):
    """A checkpoint file is missing, damaged or inconsistent; the one-line message names it.

    A :class:`~avatarforge.models.base.ModelFileError`, hence a ``ValueError``.
    """


class CheckpointWarning(UserWarning):
    """A checkpoint was passed over while looking for one to resume from (the message says why)."""


# --------------------------------------------------------------------------- finding checkpoints
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
        f"no checkpoint in {p} (looked for {root}/{LATEST_NAME} and {root}/{CKPT_PREFIX}*/{STATE_JSON}); "
        + WHAT_TO_PASS
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


def read_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """``training_state.json`` of ``path``'s checkpoint (resolved as in :func:`find_checkpoint`).

    Raises:
        FileNotFoundError: no checkpoint.
        CheckpointError: the file is damaged (not JSON, or not an object).
    """
    f = find_checkpoint(path) / STATE_JSON
    meta = _read_json(f)
    if not isinstance(meta, dict):
        raise CheckpointError(f"{f}: damaged (not a JSON object)")
    return meta


# --------------------------------------------------------------------------- which path is which
def split_run_seed(spec: str) -> tuple[str, int] | None:
    """``("RUN", SEED)`` for ``"RUN:SEED"`` (SEED an integer), else None.

    Only the syntax is checked; resolve ``RUN`` with :func:`resolve_run`.
    """
    run, sep, seed = str(spec).rpartition(":")
    if sep and run and re.fullmatch(r"\d+", seed.strip()):
        return run, int(seed)
    return None


def quickstart_runs(folder: str | os.PathLike) -> dict[str, Path] | None:
    """``{"generator": run, "animator": run, "refiner": run, "parts": run}`` of a quickstart output
    folder (the runs it has; ``parts`` from ``parts_run``), None if it is not one.

    A finished quickstart names its runs in ``quickstart.json``; an unfinished one in the
    ``runs`` of its resume state (only the stages trained so far).

    Raises:
        ValueError: ``quickstart.json`` is not valid JSON or has no ``generator_run``.
    """
    root = Path(folder)
    qs = root / QUICKSTART_MANIFEST
    if qs.is_file():
        try:
            meta = json.loads(qs.read_text("utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{qs} is not valid JSON ({e}); re-run 'avatarforge quickstart'") from e
        if not isinstance(meta, dict) or not isinstance(meta.get("generator_run"), str):
            raise ValueError(f"{qs} must hold a string 'generator_run' (path relative to {root})")
        found = {"generator": root / meta["generator_run"]}
        for role in ("animator", "refiner", "parts"):
            if isinstance(meta.get(f"{role}_run"), str):
                found[role] = root / meta[f"{role}_run"]
        return found
    state = root / QUICKSTART_STATE
    if state.is_file():
        try:
            runs = json.loads(state.read_text("utf-8")).get("runs") or {}
        except (OSError, ValueError, AttributeError):
            runs = {}
        return {
            name: root / rec["run"]
            for name, rec in (runs.items() if isinstance(runs, dict) else ())
            if isinstance(rec, dict) and isinstance(rec.get("run"), str)
        }
    return None


def resolve_run(path: str | os.PathLike, role: str = "generator") -> Path:
    """The run (or checkpoint, or saved network) a user-given path means, for ``role``.

    A quickstart output folder resolves to its ``role`` run (``"generator"`` or
    ``"animator"``); any other existing path is returned as it is (the loaders resolve run
    and checkpoint directories further, see :func:`find_checkpoint`).

    Raises:
        FileNotFoundError: ``path`` does not exist, or is a quickstart folder without a
            ``role`` run yet; the message says what to pass instead.
        ValueError: a damaged ``quickstart.json``.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist; {WHAT_TO_PASS}")
    runs = quickstart_runs(p)
    if runs is None:
        return p
    if role not in runs:
        raise FileNotFoundError(
            f"{p} is a quickstart folder without a {role} run yet (finish it: avatarforge quickstart "
            f"--out {p}), or pass a {role} run directory"
        )
    return runs[role]


def is_saved_model(path: str | os.PathLike) -> bool:
    """True if ``path`` is a directory written by ``save_pretrained`` (``config.json`` +
    ``model.safetensors``), not a run."""
    p = Path(path)
    return (p / CONFIG_NAME).is_file() and (p / WEIGHTS_NAME).is_file() and not (p / "checkpoints").is_dir()


# --------------------------------------------------------------------------- loading networks
def checkpoint_for(path: str | os.PathLike, prefix: str) -> Path:
    """``path`` itself if it holds ``{prefix}config.json`` (e.g. ``checkpoints/best``), else
    its latest checkpoint (:func:`find_checkpoint`)."""
    p = Path(path)
    return p if (p / f"{prefix}{CONFIG_NAME}").is_file() else find_checkpoint(p)


def _load_checked(
    path: str | os.PathLike, ckpt: Path, prefix: str, device: str | torch.device
) -> ConfigModule:
    """``load_pretrained(ckpt, prefix)`` after checking the network's config against the
    checkpoint's manifest; a damaged file's error names an intact checkpoint to use instead."""
    try:
        if (ckpt / MANIFEST_NAME).is_file():
            # The weights are checked by load_pretrained against the sha256 in the config,
            # so only the config itself needs the manifest (and hashing the weights twice is waste).
            verify_checkpoint(ckpt, files=[f"{prefix}{CONFIG_NAME}"])
        return load_pretrained(ckpt, prefix=prefix, map_location=device)
    except ModelFileError as e:
        hint = _intact_hint(Path(path), ckpt, prefix)
        if not hint:
            raise
        raise type(e)(f"{e}{hint}") from None


def _intact_hint(asked: Path, ckpt: Path, prefix: str) -> str:
    """``"; newest intact checkpoint: ..."`` when ``ckpt`` was resolved from a run directory."""
    step = checkpoint_step(ckpt)
    if asked == ckpt or step is None:
        return ""
    try:
        for older in sorted(ckpt.parent.iterdir(), key=lambda d: checkpoint_step(d) or 0, reverse=True):
            s = checkpoint_step(older)
            if s is None or s >= step or not (older / f"{prefix}{CONFIG_NAME}").is_file():
                continue
            try:
                verify_checkpoint(older, files=[f"{prefix}{CONFIG_NAME}", f"{prefix}{WEIGHTS_NAME}"])
            except CheckpointError:
                continue
            return f"; the newest intact checkpoint is {older} (pass it instead)"
    except OSError:
        pass
    return ""


def load_network(
    path: str | os.PathLike, which: str = "ema", device: str | torch.device = "cpu"
) -> ConfigModule:
    """One network of a checkpoint by role: ``which`` = ``"ema"`` (G_ema), ``"g"``, ``"d"``, or
    any other key of :data:`ROLE_PREFIXES` (``"g_ab"`` of a CycleGAN run, ...).

    ``path`` may be a run directory (its latest checkpoint), its ``checkpoints`` directory,
    a ``ckpt-*`` directory or ``checkpoints/best``. Returned in eval mode without gradients.
    """
    if which not in ROLE_PREFIXES:
        raise ValueError(f"which must be one of {', '.join(ROLE_PREFIXES)}, got {which!r}")
    prefix = ROLE_PREFIXES[which]
    model = _load_checked(path, checkpoint_for(path, prefix), prefix, device)
    return model.eval().requires_grad_(False)


def is_vae_checkpoint(path: str | os.PathLike) -> bool:
    """True if ``path`` (run directory or checkpoint) holds a VAE (``vae_config.json``)."""
    p = Path(path)
    if (p / f"vae_{CONFIG_NAME}").is_file():
        return True
    try:
        return (find_checkpoint(p) / f"vae_{CONFIG_NAME}").is_file()
    except FileNotFoundError:
        return False


def load_vae(
    run_dir_or_checkpoint: str | os.PathLike, which: str = "auto", device: str | torch.device = "cpu"
) -> ConfigModule:
    """A trained VAE (``vae`` / ``cvae``), in eval mode without gradients.

    ``which``: ``"auto"`` (the EMA weights when the run kept them, else the trained ones),
    ``"ema"`` (required EMA) or ``"vae"`` (the trained weights). ``run_dir_or_checkpoint``
    may be a run directory, a ``ckpt-*`` directory or ``checkpoints/best``.

    Example::

        vae = load_vae("runs/00007-vae-64")
        mu, logvar = vae.encode(images)        # (B, C, 64, 64) in [-1, 1] -> 2 x (B, z_dim)
        x = vae.decode(vae.sample_z(16))       # (16, C, 64, 64) in [-1, 1]
    """
    if which != "auto" and which not in _VAE_PREFIXES:
        raise ValueError(f"which must be auto, {', '.join(_VAE_PREFIXES)}; got {which!r}")
    ckpt = checkpoint_for(run_dir_or_checkpoint, "vae_")
    if which == "auto":
        which = "ema" if (ckpt / f"vae_ema_{CONFIG_NAME}").is_file() else "vae"
    prefix = _VAE_PREFIXES[which]
    if not (ckpt / f"{prefix}{CONFIG_NAME}").is_file():
        what = "an EMA VAE (train with ema.enabled=true)" if prefix == "vae_ema_" else "a VAE"
        raise FileNotFoundError(f"{ckpt} holds no {what} ({prefix}{CONFIG_NAME})")
    model = _load_checked(run_dir_or_checkpoint, ckpt, prefix, device)
    return model.eval().requires_grad_(False)


def load_generator(
    run_dir_or_checkpoint: str | os.PathLike, which: str = "ema", device: str | torch.device = "cpu"
) -> nn.Module:
    """The generator for sampling: the EMA weights by default (``which="g"`` for the raw ones).

    For a VAE run this is the VAE's decoder, which follows the same interface
    (``G(z, labels=None)``, ``G.sample_z(n)``); ``which="ema"`` then falls back to the
    trained weights when the run kept no EMA. A quickstart folder means its generator run.

    Example::

        G = load_generator("runs/00003-stylegan-64")
        images = G(G.sample_z(16))          # (16, C, 64, 64) in [-1, 1]
    """
    if which == "d":
        raise ValueError("load_generator loads a generator; use load_network(path, which='d')")
    path = resolve_run(run_dir_or_checkpoint, "generator")
    if is_vae_checkpoint(path):
        vae = load_vae(path, which="auto" if which == "ema" else "vae", device=device)
        return vae.decoder
    return load_network(path, which=which, device=device)


def load_model(
    path: str | os.PathLike,
    which: str = "ema",
    device: str | torch.device = "cpu",
    *,
    expect: type | tuple[type, ...] | None = None,
    what: str = "",
) -> ConfigModule:
    """A network saved with ``save_pretrained`` (``path`` holds ``config.json`` +
    ``model.safetensors``) or the ``which`` network of a run or checkpoint (:func:`load_network`).

    ``expect``: the class(es) the network must be; otherwise a ``ValueError`` says that
    ``path`` holds a ``<class>``, not ``what``. Returned in eval mode without gradients.
    """
    p = Path(path)
    if is_saved_model(p):
        model = load_pretrained(p, map_location=device).eval().requires_grad_(False)
    else:
        model = load_network(p, which=which, device=device)
    if expect is not None and not isinstance(model, expect):
        raise ValueError(f"{path} holds a {type(model).__name__}, not {what or expect}")
    return model


def _load_ema_family(
    path: str | os.PathLike, which: str, device: str | torch.device, family: str, expect: type, what: str
) -> ConfigModule:
    """:func:`load_model` for a family whose runs hold G and its EMA copy (``which``: ``"ema"``
    or ``"g"``); a quickstart folder stands for its ``family`` run."""
    if which not in ("ema", "g"):
        raise ValueError(f"which must be 'ema' or 'g', got {which!r}")
    return load_model(resolve_run(path, family), which, device, expect=expect, what=what)


def load_animator(
    path: str | os.PathLike, which: str = "ema", device: str | torch.device = "cpu"
) -> ConfigModule:
    """The expression animator of a run directory, a checkpoint, a ``save_pretrained``
    directory or a quickstart folder (its animator run): an
    :class:`~avatarforge.models.animator.ExpressionAnimator` in eval mode without gradients.

    ``which``: ``"ema"`` (the averaged weights; default) or ``"g"`` (the raw ones). Exported
    ``.onnx`` animators are loaded by :func:`avatarforge.animate.load_animator`.
    """
    from avatarforge.models.animator import ExpressionAnimator

    return _load_ema_family(path, which, device, "animator", ExpressionAnimator, "an expression animator")


def load_refiner(
    path: str | os.PathLike, which: str = "ema", device: str | torch.device = "cpu"
) -> ConfigModule:
    """The refiner of a run directory, a checkpoint, a ``save_pretrained`` directory or a
    quickstart folder (its refiner run): a :class:`~avatarforge.models.refiner.Refiner` in eval
    mode without gradients.

    ``which``: ``"ema"`` (the averaged weights; default) or ``"g"`` (the raw ones).

    Example::

        refiner = load_refiner("runs/00005-refiner-512")
        big = refine_images(refiner, small)   # (N, 64, 64, 4) uint8 -> (N, 512, 512, 4)
    """
    from avatarforge.models.refiner import Refiner

    return _load_ema_family(path, which, device, "refiner", Refiner, "a refiner")


def load_segmenter(
    path: str | os.PathLike, which: str = "ema", device: str | torch.device = "cpu"
) -> ConfigModule:
    """The part segmenter of a run directory, a checkpoint, a ``save_pretrained`` directory or
    a quickstart folder (its ``parts`` run): a :class:`~avatarforge.models.parts.PartSegmenter`
    in eval mode without gradients.

    ``which``: ``"ema"`` (the averaged weights; default) or ``"g"`` (the raw ones).

    Example::

        seg = load_segmenter("runs/00006-parts-64")
        parts = predict_part_map(seg, small, 512)   # (N, 64, 64, 4) uint8 -> (N, 512, 512) part ids
    """
    from avatarforge.models.parts import PartSegmenter

    return _load_ema_family(path, which, device, "parts", PartSegmenter, "a part segmenter")
