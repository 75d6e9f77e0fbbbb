"""Loading a trained expression animator: :func:`load_animator` (runs on disk are read by
:mod:`avatarforge.runs`; this adds exported ``.onnx`` animators)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from avatarforge import runs

__all__ = ["load_animator"]


def load_animator(
    path: str | os.PathLike,
    which: str = "ema",
    device: str | torch.device = "cpu",
    *,
    threads: int | None = None,
) -> Any:
    """The animator of a run directory, a checkpoint, a ``save_pretrained`` directory, a
    quickstart output folder, or an exported ``.onnx`` file.

    Args:
        path: run directory (its latest checkpoint), ``checkpoints`` dir, ``ckpt-*`` dir, a
            directory holding ``config.json`` + ``model.safetensors`` of an animator, a
            quickstart output folder (its animator run), or the render graph ``NAME.onnx``
            written by ``avatarforge animate export-onnx``.
        which: ``"ema"`` (the averaged weights; default) or ``"g"`` (the raw ones); ignored for ``.onnx``.
        device: torch device (``.onnx`` files run on onnxruntime's CPU provider).
        threads: ``.onnx`` only: onnxruntime intra-op threads (None: its default).

    Returns an :class:`~avatarforge.models.animator.ExpressionAnimator` in eval mode without
    gradients, or for ``.onnx`` an :class:`~avatarforge.animate.onnx_export.OnnxAnimator`
    (same ``prepare`` / ``render_image`` / ``resolution`` API). Nothing is unpickled.
    """
    if which not in ("ema", "g"):
        raise ValueError(f"which must be 'ema' or 'g', got {which!r}")
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        from avatarforge.animate.onnx_export import OnnxAnimator

        return OnnxAnimator(p, threads=threads)
    return runs.load_animator(p, which=which, device=device)
