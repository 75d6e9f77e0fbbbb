"""Load trained networks back from a run directory or checkpoint (no unpickling).

A network's files are checked before anything is built from them: its ``config.json``
against the checkpoint's manifest (when the checkpoint has one), the config against the
model's constructor and the weights against the config (sizes, shapes, sha256; see
:func:`avatarforge.models.base.load_pretrained`). A damaged file raises a one-line
:class:`~avatarforge.models.base.ModelFileError` naming it; when the checkpoint was found from
a run directory, the message also names the newest intact checkpoint to pass instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from avatarforge.models.base import CONFIG_NAME, WEIGHTS_NAME, ConfigModule, ModelFileError, load_pretrained
from avatarforge.train.checkpoint import (
    MANIFEST_NAME,
    CheckpointError,
    checkpoint_step,
    find_checkpoint,
    verify_checkpoint,
)

__all__ = ["is_vae_checkpoint", "load_generator", "load_network", "load_vae"]

_PREFIXES = {"ema": "g_ema_", "g_ema": "g_ema_", "g": "g_", "d": "d_"}
_VAE_PREFIXES = {"ema": "vae_ema_", "vae_ema": "vae_ema_", "vae": "vae_", "raw": "vae_"}


def _checkpoint_dir(path: str | os.PathLike, prefix: str) -> Path:
    """``path`` itself if it holds ``{prefix}config.json`` (e.g. ``checkpoints/best``), else
    its latest checkpoint."""
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
    """One network of a GAN checkpoint: ``which`` = ``"ema"`` (G_ema), ``"g"`` or ``"d"``.

    ``path`` may be a run directory (its latest checkpoint), its ``checkpoints`` directory,
    a ``ckpt-*`` directory or ``checkpoints/best``. Returned in eval mode without gradients.
    """
    if which not in _PREFIXES:
        raise ValueError(f"which must be one of {', '.join(_PREFIXES)}, got {which!r}")
    prefix = _PREFIXES[which]
    model = _load_checked(path, _checkpoint_dir(path, prefix), prefix, device)
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
    ckpt = _checkpoint_dir(run_dir_or_checkpoint, "vae_")
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
    trained weights when the run kept no EMA.

    Example::

        G = load_generator("runs/00003-stylegan-64")
        images = G(G.sample_z(16))          # (16, C, 64, 64) in [-1, 1]
    """
    if which == "d":
        raise ValueError("load_generator loads a generator; use load_network(path, which='d')")
    if is_vae_checkpoint(run_dir_or_checkpoint):
        vae = load_vae(run_dir_or_checkpoint, which="auto" if which == "ema" else "vae", device=device)
        return vae.decoder
    return load_network(run_dir_or_checkpoint, which=which, device=device)
