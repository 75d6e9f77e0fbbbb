"""Load trained networks back from a run directory or checkpoint (no unpickling)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from avatarforge.models.base import CONFIG_NAME, ConfigModule, load_pretrained
from avatarforge.train.checkpoint import find_checkpoint

__all__ = ["load_generator", "load_network"]

_PREFIXES = {"ema": "g_ema_", "g_ema": "g_ema_", "g": "g_", "d": "d_"}


def load_network(
    path: str | os.PathLike, which: str = "ema", device: str | torch.device = "cpu"
) -> ConfigModule:
    """One network of a checkpoint: ``which`` = ``"ema"`` (G_ema), ``"g"`` or ``"d"``.

    ``path`` may be a run directory (its latest checkpoint), its ``checkpoints`` directory,
    a ``ckpt-*`` directory or ``checkpoints/best``. Returned in eval mode without gradients.
    """
    if which not in _PREFIXES:
        raise ValueError(f"which must be one of {', '.join(_PREFIXES)}, got {which!r}")
    prefix = _PREFIXES[which]
    p = Path(path)
    ckpt = p if (p / f"{prefix}{CONFIG_NAME}").is_file() else find_checkpoint(p)
    model = load_pretrained(ckpt, prefix=prefix, map_location=device)
    return model.eval().requires_grad_(False)


def load_generator(
    run_dir_or_checkpoint: str | os.PathLike, which: str = "ema", device: str | torch.device = "cpu"
) -> ConfigModule:
    """The generator for sampling: the EMA weights by default (``which="g"`` for the raw ones).

    Example::

        G = load_generator("runs/00003-stylegan-64")
        images = G(G.sample_z(16))          # (16, C, 64, 64) in [-1, 1]
    """
    if which == "d":
        raise ValueError("load_generator loads a generator; use load_network(path, which='d')")
    return load_network(run_dir_or_checkpoint, which=which, device=device)
