"""AvatarForge: a studio for VTuber avatars built on deep generative models.

The package is organised as a pipeline: ``data`` (ingest, procedural avatars, packed data
sets) -> ``train`` -> ``eval`` -> ``generate`` -> ``postprocess`` -> ``animate``/``serve``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
