"""Model architectures, one file each, registered by short name.

See :mod:`avatarforge.models.registry` for lookup and :class:`ConfigModule` for
``save_pretrained`` / ``from_pretrained``.
"""

from avatarforge.models.base import ConfigModule, load_pretrained
from avatarforge.models.registry import create_model, get_model_class, list_models, register_model

__all__ = [
    "ConfigModule",
    "create_model",
    "get_model_class",
    "list_models",
    "load_pretrained",
    "register_model",
]

# Importing an architecture module registers it. Added as architectures land.
from avatarforge.models import (  # noqa: F401
    adain,
    animator,
    avatar_net,
    cgan,
    cyclegan,
    dcgan,
    infogan,
    parts,
    refiner,
    stylegan,
    upscaler,
    vae,
)
