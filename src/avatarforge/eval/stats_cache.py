"""Cache of reference features and statistics, keyed by content hash and extractor.

Extracting Inception features of a 50k-image reference set takes far longer than the
metric itself, and the reference rarely changes, so its features (and their mean and
covariance) are stored once per ``(content hash of the images, extractor identity,
settings)``:

- the content hash comes from the source (:attr:`avatarforge.eval.sources.ImageSource.content_hash`:
  the packed data set's per-item pixel hashes, a folder's sorted ``(path, size, mtime)``),
  so an edited data set is never matched with stale statistics;
- the extractor identity includes a hash of its weights (``inception:<sha256 prefix>``,
  ``avatar:<sha256 prefix>``), so other weights never reuse these features.

Location: ``$AVATARFORGE_CACHE`` if set, else ``~/.cache/avatarforge``; statistics live in
``stats/<key>.npz`` with a ``stats/<key>.json`` description next to it. Files are written
atomically; deleting the directory is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avatarforge.fileio import atomic_write_json, atomic_writer, default_cache_dir, file_lock

__all__ = [
    "FeatureSet",
    "StatsCache",
    "cache_key",
]

# Bump when the stored format or the feature pipeline changes in a way that alters numbers.
_FORMAT_VERSION = 1


def cache_key(content_hash: str, extractor_identity: str, settings: Mapping[str, Any] | None = None) -> str:
    """Stable key (hex) of a source's content, an extractor and extraction settings."""
    payload = {
        "format": _FORMAT_VERSION,
        "content": content_hash,
        "extractor": extractor_identity,
        "settings": dict(settings or {}),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


@dataclass
class FeatureSet:
    """Features of a set of images, with their statistics computed once, in float64.

    Attributes:
        features: ``(N, D)`` float32.
        meta: where they came from (source description, extractor, count, cache key).
    """

    features: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    _mu: np.ndarray | None = None
    _sigma: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def mu(self) -> np.ndarray:
        """``(D,)`` float64 mean."""
        if self._mu is None:
            self._mu = self.features.astype(np.float64).mean(0)
        return self._mu

    @property
    def sigma(self) -> np.ndarray:
        """``(D, D)`` float64 covariance (unbiased, ``N - 1``), as the standard FID uses."""
        if self._sigma is None:
            f = self.features.astype(np.float64)
            self._sigma = np.cov(f, rowvar=False) if len(f) > 1 else np.zeros((f.shape[1], f.shape[1]))
        return self._sigma


class StatsCache:
    """Reference features on disk under ``root/stats`` (``root`` default :func:`default_cache_dir`)."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.dir = self.root / "stats"

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.npz"

    def load(self, key: str) -> FeatureSet | None:
        """The cached entry, or None when absent or unreadable (then it is recomputed)."""
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                feats = np.array(z["features"])
                mu = np.array(z["mu"])
                sigma = np.array(z["sigma"])
            meta_path = p.with_suffix(".json")
            meta = json.loads(meta_path.read_text("utf-8")) if meta_path.is_file() else {}
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            return None
        meta["cache"] = {"key": key, "hit": True, "path": str(p)}
        return FeatureSet(feats, meta, mu, sigma)

    def save(self, key: str, fs: FeatureSet) -> Path:
        """Store ``fs`` (features, mu, sigma + a JSON description) atomically."""
        p = self.path(key)
        with atomic_writer(p) as f:
            np.savez(f, features=fs.features.astype(np.float32), mu=fs.mu, sigma=fs.sigma)
        atomic_write_json(p.with_suffix(".json"), {k: v for k, v in fs.meta.items() if k != "cache"})
        return p

    def get_or_compute(self, key: str, compute: Callable[[], FeatureSet]) -> FeatureSet:
        """The cached entry for ``key``, computing (under a lock) and storing it when missing."""
        fs = self.load(key)
        if fs is not None:
            return fs
        with file_lock(self.dir / f"{key}.lock"):
            fs = self.load(key)  # another process may have written it while we waited
            if fs is not None:
                return fs
            fs = compute()
            self.save(key, fs)
        fs.meta["cache"] = {"key": key, "hit": False, "path": str(self.path(key))}
        return fs
