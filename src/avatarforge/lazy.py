"""Lazy package attributes: public names imported from their submodule on first use.

Packages whose parsers the CLI builds (``avatarforge.data``, ``.train``, ``.generate``, ...)
must import without torch, so ``avatarforge --help`` starts fast; their public names load
when first touched::

    __getattr__, __dir__ = lazy_attributes(__name__, {"GANTrainer": "avatarforge.train.gan"})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str, where: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` for ``package``.

    Args:
        package: the package's ``__name__``.
        where: public name -> the module (dotted path) that defines it.

    The value is cached in the package's namespace, which also makes a function win over a
    submodule of the same name (``avatarforge.eval.evaluate`` is the function).
    """

    def __getattr__(name: str) -> Any:
        if name in where:
            value = getattr(importlib.import_module(where[name]), name)
            vars(sys.modules[package])[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return __getattr__, __dir__
