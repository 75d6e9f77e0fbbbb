"""Look inside a packed data set: a summary for humans and a grid of samples."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from avatarforge.data.packed import read_manifest, read_schema
from avatarforge.imageio import make_grid, save_image

__all__ = ["dataset_summary", "format_summary", "save_dataset_grid"]


def dataset_summary(path: str | os.PathLike) -> dict[str, Any]:
    """Counts, geometry, producer, options and per-label value histograms of a data set."""
    path = Path(path)
    manifest = read_manifest(path)
    schema = read_schema(path)
    labels = np.load(path / "labels.npy", mmap_mode="r")
    label_stats: dict[str, Any] = {}
    for i, field in enumerate(schema):
        col = np.asarray(labels[:, i], dtype=np.float32)
        known = col[~np.isnan(col)]
        if field.kind == "categorical":
            counts = Counter(field.values[int(v)] for v in known)
            label_stats[field.name] = {"known": int(known.size), "counts": dict(counts.most_common())}
        else:
            label_stats[field.name] = {
                "known": int(known.size),
                "min": float(known.min()) if known.size else None,
                "max": float(known.max()) if known.size else None,
                "mean": float(known.mean()) if known.size else None,
            }
    return {
        "path": str(path),
        "count": manifest["count"],
        "size": manifest["size"],
        "channels": manifest["channels"],
        "mode": manifest.get("mode"),
        "producer": manifest.get("producer", ""),
        "tool_version": manifest.get("tool_version"),
        "created": manifest.get("created"),
        "options": manifest.get("options", {}),
        "labels": label_stats,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable text for :func:`dataset_summary`."""
    lines = [
        f"data set   {summary['path']}",
        f"images     {summary['count']} x {summary['size']}x{summary['size']} {summary['mode']}",
        f"producer   {summary['producer'] or '-'} (avatarforge {summary['tool_version']}, {summary['created']})",
    ]
    if summary["options"]:
        lines.append("options    " + ", ".join(f"{k}={v}" for k, v in summary["options"].items()))
    if summary["labels"]:
        lines.append("labels")
        for name, st in summary["labels"].items():
            if "counts" in st:
                top = ", ".join(f"{k} {v}" for k, v in list(st["counts"].items())[:6])
                more = " ..." if len(st["counts"]) > 6 else ""
                lines.append(f"  {name:<18} {st['known']} known: {top}{more}")
            elif st["known"]:
                lines.append(
                    f"  {name:<18} {st['known']} known: {st['min']:.2f}..{st['max']:.2f} (mean {st['mean']:.2f})"
                )
            else:
                lines.append(f"  {name:<18} 0 known")
    else:
        lines.append("labels     (none)")
    return "\n".join(lines)


def save_dataset_grid(
    path: str | os.PathLike, out: str | os.PathLike, n: int = 64, seed: int | None = 0, checker: bool = True
) -> Path:
    """Write a PNG grid of ``n`` images (random with ``seed``; the first ``n`` when seed is None)."""
    path = Path(path)
    manifest = read_manifest(path)
    images = np.load(path / "images.npy", mmap_mode="r")
    count = manifest["count"]
    if count == 0:
        raise ValueError(f"{path} holds no images")
    n = min(n, count)
    idx = (
        np.arange(n) if seed is None else np.sort(np.random.default_rng(seed).choice(count, n, replace=False))
    )
    grid = make_grid(np.asarray(images[idx]), alpha_backdrop="checker" if checker else "keep")
    return save_image(out, grid)
