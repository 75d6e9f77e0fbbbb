"""The feature-extractor interface: :class:`FeatureExtractor` and the image handling it shares.

The implementations (:mod:`.inception`, :mod:`.avatar_net`) build on this module, and the
registry (:mod:`.extractors`, where users look extractors up by name) imports them lazily:
keeping the interface apart from the registry keeps those imports one-way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch

__all__ = ["FeatureExtractor", "ImageBatch", "to_unit_float"]

#: What extractors (and metrics) accept as a batch of images.
ImageBatch = np.ndarray | torch.Tensor


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
