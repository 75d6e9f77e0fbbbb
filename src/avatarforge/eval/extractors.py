"""Feature extractors for the distribution metrics: a small interface and a registry.

An extractor turns images into one feature vector each::

    ext = get_extractor("inception", weights="pt_inception-2015-12-05-6726825d.pth")
    feats = ext(images)              # (B, H, W, 3) uint8 -> (B, 2048) float32 (CPU tensor)

Built-in names:

- ``inception``: the Inception-v3 of the standard FID (pool3, 2048-d); needs the user's
  weight file (:mod:`avatarforge.eval.inception`).
- ``avatar``: a small CNN trained by AvatarForge on procedural avatars, 256-d
  (:mod:`avatarforge.eval.avatar_net`); no download, trained and cached on first use.

Add your own (e.g. CLIP or DINO with weights you have) with :func:`register_extractor`::

    @register_extractor("myclip")
    def _make(weights=None, device="cpu", **kw):
        return MyClipExtractor(weights, device)

The accepted image formats are those of :func:`to_unit_float`: uint8 ``(B, H, W, C)``
(NumPy or torch; C = 1, 3 or 4) or float ``(B, C, H, W)`` in ``[-1, 1]`` (what AvatarForge
generators output). RGBA is composited onto white, like ``PackedDataset(channels=3)``.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "FeatureExtractor",
    "ImageBatch",
    "file_sha256",
    "get_extractor",
    "list_extractors",
    "register_extractor",
    "resolve_device",
    "to_unit_float",
]

#: What extractors (and metrics) accept as a batch of images.
ImageBatch = np.ndarray | torch.Tensor


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> CUDA if available else CPU; otherwise ``torch.device(device)``.

    Raises:
        ValueError: CUDA was asked for but is not available (names the fix).
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available; use --device cpu")
    return dev


def to_unit_float(images: ImageBatch, device: str | torch.device | None = None) -> torch.Tensor:
    """Any supported image batch -> ``(B, 3, H, W)`` float32 in ``[0, 1]`` on ``device``.

    Accepts uint8 ``(B, H, W, C)`` or ``(H, W, C)`` arrays/tensors (C = 1, 3, 4) and float
    ``(B, C, H, W)`` tensors/arrays in ``[-1, 1]`` (clamped). Alpha is composited onto white.
    uint8 is divided by 255 exactly as ``torchvision.transforms.ToTensor`` does, so features
    of uint8 inputs match reference implementations that load images that way.

    Raises:
        ValueError: an unsupported dtype or shape (the message says what is accepted).
    """
    t = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"images must be a NumPy array or torch tensor, got {type(images).__name__}")
    dev = torch.device(device) if device is not None else t.device
    if t.dtype == torch.uint8:
        if t.ndim == 3:
            t = t[None]
        if t.ndim != 4 or t.shape[-1] not in (1, 3, 4):
            raise ValueError(f"uint8 images must be (B, H, W, C) with C in 1, 3, 4; got {tuple(t.shape)}")
        # Ship uint8 (4x fewer bytes) to the device, convert there.
        x = t.to(dev, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)  # (B, C, H, W)
    elif t.dtype.is_floating_point:
        if t.ndim == 3:
            t = t[None]
        if t.ndim != 4 or t.shape[1] not in (1, 3, 4):
            raise ValueError(
                f"float images must be (B, C, H, W) in [-1, 1] with C in 1, 3, 4; got {tuple(t.shape)}"
            )
        x = t.to(dev, torch.float32).clamp(-1, 1).add(1).mul(0.5)
    else:
        raise ValueError(f"images must be uint8 (B, H, W, C) or float (B, C, H, W) in [-1, 1], got {t.dtype}")
    c = x.shape[1]
    if c == 4:
        rgb, a = x[:, :3], x[:, 3:4]
        x = rgb * a + (1.0 - a)  # straight alpha over white
    elif c == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous()


_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (memoised per path, size and mtime within the process)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


class FeatureExtractor(ABC):
    """A network mapping images to feature vectors.

    Attributes:
        name: registry name (``"inception"``, ``"avatar"``, ...).
        feature_dim: length D of each feature vector.
        input_size: side the network resizes every input to.
        device: where it runs.
    """

    name: str = ""
    feature_dim: int = 0
    input_size: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def identity(self) -> str:
        """Name plus a weights hash: two extractors with equal identity give equal features.

        Reference statistics are cached under it; override when weights can differ.
        """
        return self.name

    @abstractmethod
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` float32 in ``[0, 1]`` on ``self.device`` -> ``(B, D)`` features."""

    def to(self, device: str | torch.device) -> FeatureExtractor:
        """Move to ``device`` (returns self)."""
        self.device = torch.device(device)
        return self

    @torch.no_grad()
    def __call__(self, images: ImageBatch) -> torch.Tensor:
        """Images (see :func:`to_unit_float`) -> ``(B, D)`` float32 features on the CPU."""
        x = to_unit_float(images, self.device)
        return self.features(x).float().cpu()

    def info(self) -> dict[str, Any]:
        """Settings recorded in evaluation results."""
        return {"name": self.name, "identity": self.identity, "feature_dim": self.feature_dim,
                "input_size": self.input_size}  # fmt: skip


ExtractorFactory = Callable[..., FeatureExtractor]
_REGISTRY: dict[str, ExtractorFactory] = {}


def register_extractor(name: str) -> Callable[[ExtractorFactory], ExtractorFactory]:
    """Decorator: register ``factory(weights=None, device="cpu", **kwargs) -> FeatureExtractor``."""

    def deco(factory: ExtractorFactory) -> ExtractorFactory:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"feature extractor {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return deco


def list_extractors() -> list[str]:
    """Registered extractor names, sorted."""
    return sorted(_REGISTRY)


def get_extractor(
    name: str,
    *,
    weights: str | os.PathLike | None = None,
    device: str | torch.device | None = "cpu",
    **kwargs: Any,
) -> FeatureExtractor:
    """Build the extractor registered as ``name`` on ``device`` (``"auto"`` allowed).

    Raises:
        KeyError: unknown name (lists the registered ones).
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown feature extractor {name!r}; available: {', '.join(list_extractors())}")
    return _REGISTRY[name](weights=weights, device=resolve_device(device), **kwargs)


# ----------------------------------------------------------------------------- built-ins
# Factories import their modules lazily so listing extractors stays cheap.
@register_extractor("inception")
def _make_inception(weights=None, device="cpu", **kwargs: Any) -> FeatureExtractor:
    from avatarforge.eval.inception import InceptionExtractor

    return InceptionExtractor(weights=weights, device=device, **kwargs)


@register_extractor("avatar")
def _make_avatar(weights=None, device="cpu", **kwargs: Any) -> FeatureExtractor:
    from avatarforge.eval.avatar_net import AvatarExtractor

    return AvatarExtractor(weights=weights, device=device, **kwargs)
