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

import os
from collections.abc import Callable
from typing import Any

import torch

from avatarforge.device import resolve_device

# The interface lives in .features (the implementations import it from there); it is part
# of this module's API too, so `from avatarforge.eval.extractors import FeatureExtractor` works.
from avatarforge.eval.features import (
    FeatureExtractor,
    ImageBatch,
    to_unit_float,
)

__all__ = [
    "FeatureExtractor",
    "ImageBatch",
    "get_extractor",
    "list_extractors",
    "register_extractor",
    "to_unit_float",
]

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
