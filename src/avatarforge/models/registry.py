"""Short names -> model classes.

Models are looked up by a short name and a role (``"generator"``, ``"discriminator"``,
``"encoder"``, ...). User input (CLI flags, configs, checkpoint JSON) only ever selects
from this table: no dotted import paths are instantiated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["create_model", "get_model_class", "list_models", "register_model", "registered_models"]

_REGISTRY: dict[tuple[str, str], type] = {}
T = TypeVar("T", bound=type)


def register_model(name: str, role: str = "generator") -> Callable[[T], T]:
    """Class decorator: register ``cls`` as ``(name, role)`` and stamp the name on the class."""

    def deco(cls: T) -> T:
        key = (name, role)
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise ValueError(f"model {name!r} ({role}) is already registered to {_REGISTRY[key].__name__}")
        _REGISTRY[key] = cls
        cls.registry_name = name  # type: ignore[attr-defined]
        cls.registry_role = role  # type: ignore[attr-defined]
        return cls

    return deco


def _ensure_loaded() -> None:
    # Importing the package registers every built-in architecture: each lives in its own
    # file under avatarforge.models, which avatarforge/models/__init__.py imports.
    import avatarforge.models  # noqa: F401


def list_models(role: str | None = None) -> list[str]:
    """Registered short names (optionally only those having ``role``), sorted."""
    _ensure_loaded()
    return sorted({n for (n, r) in _REGISTRY if role is None or r == role})


def registered_models() -> list[tuple[str, str, type]]:
    """Every ``(name, role, class)`` in the registry, sorted by name then role."""
    _ensure_loaded()
    return sorted(((n, r, c) for (n, r), c in _REGISTRY.items()), key=lambda t: (t[0], t[1]))


def get_model_class(name: str, role: str = "generator") -> type:
    """The class registered as ``(name, role)``.

    Raises:
        KeyError: naming the valid choices.
    """
    _ensure_loaded()
    try:
        return _REGISTRY[(name, role)]
    except KeyError:
        valid = ", ".join(list_models(role)) or "(none)"
        raise KeyError(f"unknown model {name!r} with role {role!r}; available: {valid}") from None


def create_model(name: str, role: str = "generator", **kwargs):
    """Instantiate the registered class with constructor keyword arguments."""
    return get_model_class(name, role)(**kwargs)
