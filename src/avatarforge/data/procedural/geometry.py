"""Curve helpers in unit coordinates: Bézier curves, ellipse arcs, variable-width strokes.

The arcs and tapers are cached (read-only arrays) because every avatar draws the same ones.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

_T_CACHE: dict[int, np.ndarray] = {}


def _t(n: int) -> np.ndarray:
    t = _T_CACHE.get(n)
    if t is None:
        t = _T_CACHE[n] = np.linspace(0.0, 1.0, n)[:, None]
    return t


def bez(p0: Sequence[float], p1: Sequence[float], p2: Sequence[float], n: int = 10) -> np.ndarray:
    """Quadratic Bézier curve, ``n`` points including both ends."""
    t = _t(n)
    u = 1.0 - t
    return u * u * np.asarray(p0) + 2.0 * u * t * np.asarray(p1) + t * t * np.asarray(p2)


def bez3(
    p0: Sequence[float], p1: Sequence[float], p2: Sequence[float], p3: Sequence[float], n: int = 12
) -> np.ndarray:
    """Cubic Bézier curve, ``n`` points including both ends."""
    t = _t(n)
    u = 1.0 - t
    return (
        u**3 * np.asarray(p0)
        + 3.0 * u * u * t * np.asarray(p1)
        + 3.0 * u * t * t * np.asarray(p2)
        + t**3 * np.asarray(p3)
    )


def ellipse(
    cx: float, cy: float, rx: float, ry: float, n: int = 28, a0: float = 0.0, a1: float | None = None
) -> np.ndarray:
    """Points on an ellipse (full when ``a1`` is None, else the arc from a0 to a1)."""
    cs = _unit_arc(n, a0, a1)
    return cs * (rx, ry) + (cx, cy)


@functools.lru_cache(maxsize=512)
def _unit_arc(n: int, a0: float, a1: float | None) -> np.ndarray:
    """(cos, sin) of ``n`` angles; cached because the same arcs are drawn for every avatar."""
    if a1 is None:
        ang = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    else:
        ang = np.linspace(a0, a1, n)
    out = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    out.flags.writeable = False
    return out


def stroke(pts: np.ndarray, widths: np.ndarray | float) -> np.ndarray:
    """The outline polygon of a variable-width line along ``pts``."""
    d = np.empty_like(pts)
    d[1:-1] = pts[2:] - pts[:-2]
    d[0] = pts[1] - pts[0]
    d[-1] = pts[-1] - pts[-2]
    norm = np.hypot(d[:, 0], d[:, 1])
    norm[norm == 0] = 1.0
    nrm = np.stack([-d[:, 1] / norm, d[:, 0] / norm], axis=1)
    w = np.asarray(widths, dtype=np.float64).reshape(-1, 1) * 0.5
    return np.concatenate([pts + nrm * w, (pts - nrm * w)[::-1]])


@functools.lru_cache(maxsize=512)
def taper(n: int, w0: float, w_mid: float, w1: float) -> np.ndarray:
    """Widths rising from ``w0`` to ``w_mid`` and falling to ``w1`` along a stroke."""
    t = np.linspace(0.0, 1.0, n)
    out = np.where(t < 0.5, w0 + (w_mid - w0) * np.sin(t * math.pi), w1 + (w_mid - w1) * np.sin(t * math.pi))
    out.flags.writeable = False
    return out


def offset(pts: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``pts`` moved by ``(dx, dy)``."""
    return pts + np.array([dx, dy])


def mirror(pts: np.ndarray) -> np.ndarray:
    """``pts`` mirrored about the vertical centre line x = 0.5."""
    out = pts.copy()
    out[:, 0] = 1.0 - out[:, 0]
    return out
