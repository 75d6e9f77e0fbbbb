"""Lazy package attributes: public names imported from their submodule on first use.

Packages whose parsers the CLI builds (``avatarforge.data``, ``.train``, ``.generate``, ...)
must import without torch, so ``avatarforge --help`` starts fast; their public names load
when first touched::

    __getattr__, __dir__ = lazy_attributes(__name__, {"GANTrainer": "avatarforge.train.gan"})
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


class _LazyPackage(types.ModuleType):
    """A package whose public names win over its submodules of the same name.

    Importing ``pkg.evaluate`` makes the import system set ``pkg.evaluate`` to the submodule,
    which would shadow the function ``evaluate`` it defines; this stores the function instead
    (import the module's other names with ``from pkg.evaluate import ...``).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        where = self.__dict__.get("_lazy_where", {})
        if isinstance(value, types.ModuleType) and where.get(name) == value.__name__ and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


def lazy_attributes(
    package: str, where: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` for ``package``.

    Args:
        package: the package's ``__name__``.
        where: public name -> the module (dotted path) that defines it.

    The value is cached in the package's namespace, and a public name always wins over a
    submodule of the same name, whichever is imported first (``avatarforge.eval.evaluate``
    is the function).
    """
    module = sys.modules[package]
    vars(module)["_lazy_where"] = dict(where)
    module.__class__ = _LazyPackage

    def __getattr__(name: str) -> Any:
        if name in where:
            # import_module: `where` is the package's own table of its public names (written in
            # its __init__), never user input; importing on first use keeps `import avatarforge.X` light.
            value = getattr(importlib.import_module(where[name]), name)
            vars(sys.modules[package])[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return __getattr__, __dir__
