"""Operation registry: every post-processing op with its typed, range-checked parameters.

Each public op function is declared with :func:`register_op`, which

- records an :class:`OpSpec` under a short name (what ``--ops "saturation=1.2"`` refers to),
- reads each parameter's default from the function signature (one source of truth), and
- wraps the function so that a Python call validates the image and every parameter exactly
  as the chain parser does, with the same error messages, and
- records how the op changes the image size (a :data:`SizeRule`; ops without one keep the
  size), so a chain's output size -- and every intermediate one -- is known before any
  pixel is touched (:meth:`avatarforge.postprocess.chain.Chain.plan`).

The ranges therefore live in one place, next to the function they constrain, and the chain
parser (:mod:`avatarforge.postprocess.chain`), the CLI's ``--list-ops`` and the docs all
read them from here.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from avatarforge.data.imagefile import parse_color
from avatarforge.postprocess.alpha import check_image

__all__ = [
    "GROUPS",
    "OPS",
    "OpSpec",
    "Param",
    "SizeRule",
    "closest",
    "get_op",
    "list_ops",
    "register_op",
    "scale_by",
]

#: Op groups, in the order ops are listed (``--list-ops``, docs, error messages).
GROUPS = ("color", "detail", "size", "alpha")

_KINDS = ("float", "int", "bool", "choice", "color", "path")

#: How an op changes the image size: ``rule((width, height), params) -> (width, height)``,
#: where ``params`` holds every parameter (defaults filled in). Pure arithmetic: it must not
#: look at pixels, so limits can be checked before any work.
SizeRule = Callable[[tuple[int, int], Mapping[str, Any]], tuple[int, int]]


def scale_by(param: str) -> SizeRule:
    """A :data:`SizeRule`: both sides multiplied by the integer parameter ``param``."""

    def rule(size: tuple[int, int], params: Mapping[str, Any]) -> tuple[int, int]:
        k = int(params[param])
        return size[0] * k, size[1] * k

    rule.__doc__ = f"both sides times {param}"
    return rule


#: Size rules of ops whose module does not pass ``size=`` to :func:`register_op` itself
#: (applied by name at registration; an explicit ``size=`` wins).
_SIZE_RULES: dict[str, SizeRule] = {"upscale": scale_by("factor")}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def closest(word: str, options: Sequence[str]) -> str:
    """``" (did you mean 'x'?)"`` for the nearest option, or ``""`` when none is close."""
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _num(v: float) -> str:
    return f"{v:g}"


@dataclass(frozen=True)
class Param:
    """One parameter of an op.

    Attributes:
        name: keyword name in the Python function and in the chain syntax.
        kind: ``float``, ``int``, ``bool``, ``choice``, ``color`` or ``path``.
        lo, hi: inclusive range of ``float`` / ``int`` parameters.
        choices: valid values of ``choice`` (and allowed integers of an ``int`` when given).
        optional: ``color``/``path`` may be None (written ``auto`` / ``none`` in a chain).
        accept: Python types passed through unchanged (e.g. an already loaded model).
        help: one line for ``--list-ops`` and the docs.
        default: filled from the function signature by :func:`register_op`.
    """

    name: str
    kind: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[Any, ...] = ()
    optional: bool = False
    accept: tuple[type, ...] = ()
    help: str = ""
    default: Any = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"parameter kind must be one of {_KINDS}, got {self.kind!r}")

    def describe(self) -> str:
        """What a valid value looks like, e.g. ``"a number from 0 to 4"``."""
        if self.kind == "float":
            return f"a number from {_num(self.lo)} to {_num(self.hi)}"  # type: ignore[arg-type]
        if self.kind == "int":
            if self.choices:
                return "one of " + ", ".join(str(c) for c in self.choices)
            return f"an integer from {int(self.lo)} to {int(self.hi)}"  # type: ignore[arg-type]
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(str(c) for c in self.choices)
        if self.kind == "color":
            extra = " or 'auto'" if self.optional else ""
            return f"a colour ('#rrggbb', a name such as 'white', or 'r,g,b'){extra}"
        return "a file or folder path" + (" or 'none'" if self.optional else "")

    def _error(self, op: str, got: Any) -> ValueError:
        return ValueError(f"{op}: parameter {self.name!r} must be {self.describe()}, got {got!r}")

    def convert(self, text: str, op: str) -> Any:
        """Chain text -> a validated Python value."""
        t = text.strip()
        if self.kind == "float":
            try:
                return self.validate(float(t), op)
            except ValueError:
                raise self._error(op, text) from None
        if self.kind == "int":
            try:
                v: int = int(t)
            except ValueError:
                # "2.0" is an integer written as a float: accept it, reject "2.5".
                try:
                    f = float(t)
                except ValueError:
                    raise self._error(op, text) from None
                if not f.is_integer():
                    raise self._error(op, text) from None
                v = int(f)
            try:
                return self.validate(v, op)
            except ValueError:
                raise self._error(op, text) from None
        if self.kind == "bool":
            low = t.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise self._error(op, text)
        if self.kind == "choice":
            return self.validate(t.lower(), op)
        if self.kind == "color":
            if self.optional and t.lower() in ("auto", "none", ""):
                return None
            return self.validate(t, op)
        # path
        if self.optional and t.lower() in ("none", ""):
            return None
        return self.validate(t, op)

    def validate(self, value: Any, op: str) -> Any:
        """A Python value -> the validated value (raises ValueError naming op, parameter, range)."""
        if self.accept and isinstance(value, self.accept):
            return value
        if self.kind in ("float", "int"):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise self._error(op, value)
            if self.kind == "int":
                if isinstance(value, (float, np.floating)) and not float(value).is_integer():
                    raise self._error(op, value)
                v: int | float = int(value)
                if self.choices:
                    if v not in self.choices:
                        raise self._error(op, value)
                    return v
            else:
                v = float(value)
                if not math.isfinite(v):
                    raise self._error(op, value)
            if not (self.lo <= v <= self.hi):  # type: ignore[operator]
                raise self._error(op, value)
            return v
        if self.kind == "bool":
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            raise self._error(op, value)
        if self.kind == "choice":
            if isinstance(value, str) and value.lower() in self.choices:
                return value.lower()
            hint = closest(str(value), [str(c) for c in self.choices])
            raise ValueError(f"{op}: parameter {self.name!r} must be {self.describe()}, got {value!r}{hint}")
        if self.kind == "color":
            if value is None and self.optional:
                return None
            if isinstance(value, str):
                try:
                    return parse_color(value)
                except ValueError:
                    raise self._error(op, value) from None
            try:
                rgb = tuple(int(c) for c in value)
            except (TypeError, ValueError):
                raise self._error(op, value) from None
            if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
                raise self._error(op, value)
            return rgb
        # path
        if value is None or (isinstance(value, str) and value == ""):
            if self.optional:
                return None
            raise self._error(op, value)
        if not isinstance(value, (str, os.PathLike)):
            raise self._error(op, value)
        path = os.fspath(value)
        if not os.path.exists(path):
            raise ValueError(f"{op}: parameter {self.name!r}: no such file or folder: {path}")
        return path


@dataclass(frozen=True)
class OpSpec:
    """A registered op: its name, validated function and parameters.

    Attributes:
        name: the chain name (``"sharpen"``).
        func: the public, validating function (``unsharp_mask``).
        params: parameters in signature order; the first is the one ``name=value`` sets.
        aliases: other accepted chain names.
        alpha: what happens to alpha: ``"kept"`` (bit-exact), ``"resampled"``, ``"computed"``
            (background removal) or ``"removed"`` (compositing returns RGB).
        group: one of :data:`GROUPS`.
        summary: first line of the function's docstring.
        size: how the op changes the image size (:data:`SizeRule`); ``None``: it keeps it.
    """

    name: str
    func: Callable[..., np.ndarray]
    params: tuple[Param, ...]
    aliases: tuple[str, ...] = ()
    alpha: str = "kept"
    group: str = "color"
    summary: str = ""
    size: SizeRule | None = field(default=None, repr=False, compare=False)
    _by_name: dict[str, Param] = field(default_factory=dict, repr=False, compare=False)

    def param(self, name: str) -> Param:
        """The parameter called ``name`` (raises ValueError listing the valid ones)."""
        try:
            return self._by_name[name]
        except KeyError:
            valid = ", ".join(p.name for p in self.params) or "(none)"
            hint = closest(name, list(self._by_name))
            raise ValueError(
                f"{self.name}: unknown parameter {name!r}{hint}; valid parameters: {valid}"
            ) from None

    def validate(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Validate keyword values (Python types); unknown names raise ValueError."""
        return {k: self.param(k).validate(v, self.name) for k, v in kwargs.items()}

    def defaults(self) -> dict[str, Any]:
        """Every parameter's default value, by name."""
        return {p.name: p.default for p in self.params}

    def output_size(self, size: tuple[int, int], params: Mapping[str, Any] | None = None) -> tuple[int, int]:
        """``(width, height)`` of this op's output for an input of ``size`` and ``params``
        (validated values; missing ones take their defaults), computed without any pixels."""
        if self.size is None:
            return int(size[0]), int(size[1])
        w, h = self.size((int(size[0]), int(size[1])), {**self.defaults(), **(params or {})})
        return int(w), int(h)

    def signature(self) -> str:
        """``"sharpen(amount=0.5, radius=1, threshold=0)"`` for listings."""
        parts = []
        for p in self.params:
            d = p.default
            if isinstance(d, tuple) and p.kind == "color":
                d = "#{:02x}{:02x}{:02x}".format(*d)
            elif d is None:
                d = "auto" if p.kind == "color" else "none"
            elif isinstance(d, bool):
                d = str(d).lower()
            elif isinstance(d, float):
                d = _num(d)
            parts.append(f"{p.name}={d}")
        return f"{self.name}({', '.join(parts)})"


#: name -> spec, in registration order (see :func:`list_ops` for the listing order).
OPS: dict[str, OpSpec] = {}
_ALIASES: dict[str, str] = {}


def register_op(
    name: str,
    *params: Param,
    aliases: Sequence[str] = (),
    alpha: str = "kept",
    group: str = "color",
    size: SizeRule | None = None,
) -> Callable[[Callable[..., np.ndarray]], Callable[..., np.ndarray]]:
    """Decorator: register ``func(image, **params)`` as op ``name`` and return a validating
    wrapper with the same signature.

    Every parameter of ``func`` after ``image`` must be described by a :class:`Param` (same
    order); its default is taken from the signature. An op that changes the image size must
    say how with ``size`` (a :data:`SizeRule`, e.g. :func:`scale_by`); the ``"size"`` group
    cannot be registered without one, so a new resizing op cannot slip past the output-size
    limits of chains.
    """

    if group not in GROUPS:
        raise ValueError(f"op group must be one of {GROUPS}, got {group!r}")
    size = size if size is not None else _SIZE_RULES.get(name)
    if group == "size" and size is None:
        raise TypeError(f"op {name!r} is in the 'size' group but declares no size rule (size=...)")

    def deco(func: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        sig = inspect.signature(func)
        names = list(sig.parameters)[1:]
        if names != [p.name for p in params]:
            raise TypeError(f"op {name!r}: Param list {[p.name for p in params]} != signature {names}")
        full = tuple(replace(p, default=sig.parameters[p.name].default) for p in params)
        by_name = {p.name: p for p in full}

        @functools.wraps(func)
        def wrapper(image: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
            bound = sig.bind(image, *args, **kwargs)
            check_image(image)
            for k, v in list(bound.arguments.items())[1:]:
                bound.arguments[k] = by_name[k].validate(v, name)
            return func(*bound.args, **bound.kwargs)

        doc = inspect.getdoc(func) or ""
        spec = OpSpec(
            name=name,
            func=wrapper,
            params=full,
            aliases=tuple(aliases),
            alpha=alpha,
            group=group,
            summary=" ".join(doc.split("\n\n")[0].split()).replace("``", ""),
            size=size,
            _by_name=by_name,
        )
        for key in (name, *aliases):
            if key in OPS or key in _ALIASES:
                raise ValueError(f"op name {key!r} is registered twice")
        OPS[name] = spec
        for a in aliases:
            _ALIASES[a] = name
        wrapper.op_spec = spec  # type: ignore[attr-defined]
        return wrapper

    return deco


def _ensure_loaded() -> None:
    # Importing the package imports every op module, which registers its ops.
    import avatarforge.postprocess  # noqa: F401


def list_ops() -> list[str]:
    """Registered op names: by group (:data:`GROUPS`), then in registration order."""
    _ensure_loaded()
    return sorted(OPS, key=lambda n: GROUPS.index(OPS[n].group))


def get_op(name: str) -> OpSpec:
    """The spec of op ``name`` (or an alias); unknown names raise ValueError listing the
    valid ones with the closest match."""
    _ensure_loaded()
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key in OPS:
        return OPS[key]
    hint = closest(key, [*OPS, *_ALIASES])
    raise ValueError(f"unknown operation {name!r}{hint}; valid operations: {', '.join(list_ops())}")
