"""Base class for every AvatarForge network: captured config, save/load as safetensors.

A subclass only writes ``__init__`` with keyword arguments of JSON-friendly types; those
arguments are recorded in ``self.config`` automatically, so ``save_pretrained`` can write
``config.json`` + ``model.safetensors`` and ``from_pretrained`` can rebuild the exact
network (looked up by its registry name, never by an import path from the file).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import nn

from avatarforge import __version__
from avatarforge.fileio import atomic_write_json, atomic_writer

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "ConfigModule", "load_pretrained"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(f"model config values must be JSON types, got {type(v).__name__}: {v!r}")


class ConfigModule(nn.Module):
    """``nn.Module`` that records its constructor arguments in ``self.config``.

    Subclasses are registered with :func:`avatarforge.models.registry.register_model` so that
    ``from_pretrained`` can find them by short name.
    """

    registry_name: str = ""
    registry_role: str = ""
    config: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        init = cls.__dict__["__init__"]
        sig = inspect.signature(init)

        @functools.wraps(init)
        def wrapped(self, *args: Any, **kw: Any) -> None:
            # Only the outermost __init__ records (subclass calling super().__init__ must not
            # overwrite the config with the parent's narrower argument list).
            outer = not getattr(self, "_recording_config", False)
            if outer:
                bound = sig.bind(self, *args, **kw)
                bound.apply_defaults()
                cfg = {k: _jsonable(v) for k, v in list(bound.arguments.items())[1:] if k != "kwargs"}
                object.__setattr__(self, "_recording_config", True)
            try:
                init(self, *args, **kw)
            finally:
                if outer:
                    object.__setattr__(self, "_recording_config", False)
            if outer:
                self.config = cfg

        cls.__init__ = wrapped  # type: ignore[method-assign]

    # ------------------------------------------------------------------ persistence
    def config_dict(self) -> dict[str, Any]:
        """What ``config.json`` holds: registry name/role, constructor arguments, version."""
        return {
            "model": self.registry_name,
            "role": self.registry_role,
            "config": dict(self.config),
            "avatarforge_version": __version__,
        }

    def save_pretrained(self, directory: str | os.PathLike, prefix: str = "") -> Path:
        """Write ``{prefix}config.json`` and ``{prefix}model.safetensors`` atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()}
        with atomic_writer(directory / f"{prefix}{WEIGHTS_NAME}") as f:
            f.write(save(state))
        atomic_write_json(directory / f"{prefix}{CONFIG_NAME}", self.config_dict())
        return directory

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, prefix: str = "", map_location: str | torch.device = "cpu"
    ) -> ConfigModule:
        """Rebuild a saved model. Called on a subclass, checks the file holds that class."""
        model = load_pretrained(directory, prefix=prefix, map_location=map_location)
        if cls is not ConfigModule and not isinstance(model, cls):
            raise TypeError(f"{directory} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def load_pretrained(
    directory: str | os.PathLike, prefix: str = "", map_location: str | torch.device = "cpu"
) -> ConfigModule:
    """Load any registered model saved with :meth:`ConfigModule.save_pretrained`."""
    from avatarforge.models.registry import get_model_class

    directory = Path(directory)
    cfg_path = directory / f"{prefix}{CONFIG_NAME}"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no {cfg_path.name} in {directory}; is this a saved AvatarForge model?")
    meta = json.loads(cfg_path.read_text("utf-8"))
    cls = get_model_class(meta["model"], meta.get("role", "generator"))
    model = cls(**meta["config"])
    state = load_file(str(directory / f"{prefix}{WEIGHTS_NAME}"), device=str(map_location))
    model.load_state_dict(state, strict=True)
    return model.to(map_location)
