"""How clean a transparent avatar's alpha is: what a viewer sees as grey specks or a see-through body.

Both measures follow the stream-ready issue's definitions, on ``(N, H, W, 4)`` uint8 RGBA:

- :func:`stray_alpha_pixels`: pixels with ``alpha > 0`` outside the largest 8-connected region
  of ``alpha > 0`` (specks around the character);
- :func:`opaque_interior_fraction`: of the silhouette's interior (``alpha >= 128`` eroded by
  2 px), the share with ``alpha == 255`` (a body at 249-254 lets the stream show through).
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["alpha_report", "opaque_interior_fraction", "stray_alpha_pixels"]

_3X3 = np.ones((3, 3), np.uint8)


def _batch(images: np.ndarray) -> np.ndarray:
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 4:
        raise ValueError(f"expected RGBA images (N, H, W, 4), got shape {a.shape}")
    return a


def stray_alpha_pixels(images: np.ndarray) -> np.ndarray:
    """``(N,)`` count of ``alpha > 0`` pixels outside the largest 8-connected ``alpha > 0`` region."""
    out = []
    for img in _batch(images):
        mask = (img[..., 3] > 0).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        areas = stats[1:, cv2.CC_STAT_AREA]
        out.append(int(areas.sum() - areas.max()) if n > 1 else 0)
    return np.asarray(out, np.int64)


def opaque_interior_fraction(images: np.ndarray, erode: int = 2) -> np.ndarray:
    """``(N,)`` share of the interior (``alpha >= 128`` eroded ``erode`` px) at ``alpha == 255``
    (NaN for an image with no interior)."""
    out = []
    for img in _batch(images):
        a = img[..., 3]
        interior = cv2.erode((a >= 128).astype(np.uint8), _3X3, iterations=erode).astype(bool)
        out.append(float((a[interior] == 255).mean()) if interior.any() else float("nan"))
    return np.asarray(out, np.float64)


def alpha_report(images: np.ndarray) -> dict[str, float]:
    """Mean and max stray pixels per image and the mean opaque-interior share (a JSON-able dict)."""
    stray = stray_alpha_pixels(images)
    interior = opaque_interior_fraction(images)
    return {
        "images": len(stray),
        "stray_pixels_mean": float(stray.mean()),
        "stray_pixels_max": int(stray.max()),
        "images_with_strays": int((stray > 0).sum()),
        "opaque_interior_mean": float(np.nanmean(interior)) if np.isfinite(interior).any() else float("nan"),
        "opaque_interior_min": float(np.nanmin(interior)) if np.isfinite(interior).any() else float("nan"),
    }
