"""Op chains: ``"white_balance,saturation=1.2,sharpen=0.5,upscale=2"`` -> ops applied in order.

Syntax (commas separate ops; spaces are ignored)::

    op                         every parameter at its default
    op=VALUE                   sets the op's first (main) parameter
    op(p=VALUE, q=VALUE)       named parameters
    op(VALUE, q=VALUE)         positional values, in parameter order, then named ones

Values containing commas or parentheses (``'r,g,b'`` colours, paths) are quoted with
single or double quotes: ``composite(color='0,255,0')``. Op names are case-insensitive
and ``-`` may be written for ``_``. Every op and parameter is validated when the chain is
parsed, with errors that list the valid names (and the closest match) or the valid range.

Sizes and work are known before any pixel is touched: every op declares how it changes the
image size (:data:`~avatarforge.postprocess.registry.SizeRule`), so :meth:`Chain.plan` gives
the size after each op and the pixels the chain will process, and :class:`ChainLimits`
(``Chain.apply(image, limits=...)``) refuses a chain whose output -- or any intermediate
image -- would be larger than allowed, with :class:`ChainLimitError`, before it starts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avatarforge.postprocess.alpha import check_image
from avatarforge.postprocess.registry import OpSpec, Param, get_op, list_ops

__all__ = [
    "DEFAULT_CHAIN",
    "Chain",
    "ChainLimitError",
    "ChainLimits",
    "ChainPlan",
    "Op",
    "apply_chain",
    "describe_ops",
    "parse_chain",
]

#: What ``avatarforge post`` applies when ``--ops`` is not given: a light clean-up for
#: generator output (edge-preserving denoise of GAN speckle, then crisper lines).
DEFAULT_CHAIN = "denoise=0.3,sharpen=0.5"

_ITEM = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*(?:=(.*)|\((.*)\))?\s*$", re.DOTALL)


def _split(text: str, what: str) -> list[str]:
    """Split on commas outside quotes and parentheses."""
    parts, cur, depth, quote = [], [], 0, ""
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ')' in {what}: {text!r}")
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if quote:
        raise ValueError(f"unterminated quote {quote} in {what}: {text!r}")
    if depth:
        raise ValueError(f"unbalanced '(' in {what}: {text!r}")
    parts.append("".join(cur))
    return parts


def _unquote(text: str) -> str:
    t = text.strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    return t


def _format_value(p: Param, v: Any) -> str:
    if v is None:
        return "auto" if p.kind == "color" else "none"
    if isinstance(v, bool):
        return str(v).lower()
    if p.kind == "color":
        return "#{:02x}{:02x}{:02x}".format(*v)
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (int, str)):
        s = str(v)
        return f"'{s}'" if re.search(r"[,()\s'\"=]", s) else s
    return f"<{type(v).__name__}>"  # an in-memory object (e.g. a loaded model)


@dataclass(frozen=True)
class Op:
    """One step of a chain: an op spec and its validated parameters (defaults omitted)."""

    spec: OpSpec
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, name: str, **params: Any) -> Op:
        """``Op.create("saturation", factor=1.2)``: validated like the parser does."""
        spec = get_op(name)
        return cls(spec, spec.validate(params))

    @property
    def name(self) -> str:
        return self.spec.name

    def with_params(self, **params: Any) -> Op:
        """A copy with some parameters replaced (validated)."""
        return Op(self.spec, {**self.params, **self.spec.validate(params)})

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.spec.func(image, **self.params)

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """``(width, height)`` this op gives an input of ``size`` (no pixels needed)."""
        return self.spec.output_size(size, self.params)

    def __str__(self) -> str:
        if not self.params:
            return self.spec.name
        args = ", ".join(f"{k}={_format_value(self.spec.param(k), v)}" for k, v in self.params.items())
        return f"{self.spec.name}({args})"


def _parse_item(item: str) -> Op:
    m = _ITEM.match(item)
    if not m:
        raise ValueError(
            f"cannot parse {item.strip()!r}; write an op as 'name', 'name=value' or 'name(param=value, ...)'"
        )
    spec = get_op(m.group(1))
    params: dict[str, Any] = {}
    if m.group(2) is not None:
        if not spec.params:
            raise ValueError(f"{spec.name} takes no parameters, got {item.strip()!r}")
        p = spec.params[0]
        value = _unquote(m.group(2))
        key, eq, rest = value.partition("=")
        if eq and re.fullmatch(r"\s*[A-Za-z_]\w*\s*", key) and key.strip() in {q.name for q in spec.params}:
            # 'cel_shade=levels=4': a named parameter written the shorthand way.
            raise ValueError(
                f"{spec.name}: write a named parameter as {spec.name}({key.strip()}={rest.strip()}); "
                f"'{spec.name}=VALUE' sets its first parameter, {p.name!r}"
            )
        params[p.name] = p.convert(value, spec.name)
    elif m.group(3) is not None and m.group(3).strip():
        named = False
        for i, arg in enumerate(_split(m.group(3), f"the parameters of {spec.name}")):
            key, eq, val = arg.partition("=")
            if eq and re.fullmatch(r"\s*[A-Za-z_]\w*\s*", key):
                p = spec.param(key.strip())
                named = True
            else:
                if named:
                    raise ValueError(
                        f"{spec.name}: a positional value follows a named one in {item.strip()!r}"
                    )
                if i >= len(spec.params):
                    raise ValueError(
                        f"{spec.name} takes {len(spec.params)} parameters, got more in {item.strip()!r}"
                    )
                p, val = spec.params[i], arg
            if p.name in params:
                raise ValueError(f"{spec.name}: parameter {p.name!r} given twice")
            params[p.name] = p.convert(_unquote(val), spec.name)
    return Op(spec, params)


def parse_chain(text: str) -> list[Op]:
    """Parse chain text into validated :class:`Op` s (empty text -> no ops).

    Raises:
        ValueError: unknown op or parameter (listing the valid ones, with the closest
            match), a value out of range (naming op, parameter and range), bad syntax.
    """
    if not isinstance(text, str):
        raise TypeError(f"a chain is text such as 'saturation=1.2,sharpen=0.5', got {type(text).__name__}")
    return [_parse_item(item) for item in _split(text, "the chain") if item.strip()]


class ChainLimitError(ValueError):
    """A chain that would exceed a :class:`ChainLimits` bound (raised before any work)."""


@dataclass(frozen=True)
class ChainLimits:
    """Bounds on what one chain may do, checked by :meth:`Chain.check` before any work.

    Attributes:
        max_side: most pixels per side of the output and of every intermediate image.
        max_work: most pixels processed: each op counts the larger of its input and output
            pixel count, so the figure tracks the time and memory a chain needs.
        max_ops: most ops in the chain.
        names: where each bound comes from, quoted in the error message (e.g.
            ``{"max_side": "the server's max_output_side"}``) so people know what to change.
    """

    max_side: int | None = None
    max_work: int | None = None
    max_ops: int | None = None
    names: Mapping[str, str] = field(default_factory=dict)

    def _from(self, key: str) -> str:
        name = self.names.get(key)
        return f" ({name})" if name else ""


@dataclass(frozen=True)
class ChainPlan:
    """What a chain does to an image size, computed without pixels (:meth:`Chain.plan`).

    Attributes:
        sizes: ``(width, height)`` of the input, then after each op.
        work: pixels processed (each op counts the larger of its input and output).
    """

    sizes: tuple[tuple[int, int], ...]
    work: int

    @property
    def output_size(self) -> tuple[int, int]:
        """``(width, height)`` of the chain's result."""
        return self.sizes[-1]

    @property
    def largest_side(self) -> int:
        """The longest side of any image the chain makes (input included)."""
        return max(max(s) for s in self.sizes)


class Chain:
    """An ordered list of ops, applied one after the other.

    >>> Chain.parse("white_balance, saturation=1.2, sharpen(amount=0.5, radius=1.5)")
    Chain('white_balance, saturation(factor=1.2), sharpen(amount=0.5, radius=1.5)')
    """

    def __init__(self, ops: Iterable[Op] = ()) -> None:
        self.ops: list[Op] = list(ops)

    @classmethod
    def parse(cls, text: str) -> Chain:
        """See :func:`parse_chain`."""
        return cls(parse_chain(text))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.apply(image)

    def plan(self, size: tuple[int, int]) -> ChainPlan:
        """Sizes after each op and the pixels processed, for a ``(width, height)`` input."""
        sizes = [(int(size[0]), int(size[1]))]
        work = 0
        for op in self.ops:
            nxt = op.output_size(sizes[-1])
            work += max(sizes[-1][0] * sizes[-1][1], nxt[0] * nxt[1])
            sizes.append(nxt)
        return ChainPlan(tuple(sizes), work)

    def check(self, size: tuple[int, int], limits: ChainLimits) -> ChainPlan:
        """:meth:`plan` for a ``(width, height)`` input, refused if it breaks ``limits``.

        Raises:
            ChainLimitError: too many ops, an image (output or intermediate) with a side
                over ``max_side`` -- naming the op, its position and the size it would make
                -- or more than ``max_work`` pixels to process; each message quotes the
                limit and where it comes from (``limits.names``).
        """
        n = len(self.ops)
        if limits.max_ops is not None and n > limits.max_ops:
            raise ChainLimitError(
                f"the chain has {n} ops; at most {limits.max_ops} are allowed{limits._from('max_ops')}"
            )
        cur = (int(size[0]), int(size[1]))
        work = 0
        sizes = [cur]
        for i, op in enumerate(self.ops, 1):
            nxt = op.output_size(cur)
            if limits.max_side is not None and max(nxt) > limits.max_side:
                # Stop at the first offender: later sizes (x4 of x4 of ...) would only grow.
                raise ChainLimitError(
                    f"{op} (op {i} of {n}) would make the image {nxt[0]}x{nxt[1]} px from "
                    f"{cur[0]}x{cur[1]}; images may be at most {limits.max_side} px per side"
                    f"{limits._from('max_side')}: drop or shrink the upscale, or send a smaller image"
                )
            work += max(cur[0] * cur[1], nxt[0] * nxt[1])
            sizes.append(nxt)
            cur = nxt
        if limits.max_work is not None and work > limits.max_work:
            raise ChainLimitError(
                f"the chain would process {work:,} pixels ({n} ops on a {size[0]}x{size[1]} image; each "
                f"op counts the larger of its input and output); at most {limits.max_work:,} are "
                f"allowed{limits._from('max_work')}: use fewer ops after upscaling, or a smaller image"
            )
        return ChainPlan(tuple(sizes), work)

    def apply(self, image: np.ndarray, *, limits: ChainLimits | None = None) -> np.ndarray:
        """Run every op in order; the input array is never modified.

        With ``limits``, the whole chain is checked (:meth:`check`) before the first op runs.

        Raises:
            ChainLimitError: the chain breaks ``limits`` (nothing was computed).
            RuntimeError: an op returned another size than it declares (a bug in that op's
                registration: its size rule would let limits be bypassed).
        """
        out = check_image(image)
        size = (int(out.shape[1]), int(out.shape[0]))
        if limits is not None:
            self.check(size, limits)
        for op in self.ops:
            expected = op.output_size(size)
            out = op(out)
            size = (int(out.shape[1]), int(out.shape[0]))
            if size != expected:
                raise RuntimeError(
                    f"op {op.name} returned a {size[0]}x{size[1]} image but declares {expected[0]}x{expected[1]}; "
                    "fix its size rule (register_op(size=...))"
                )
        return out.copy() if out is image else out

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def __len__(self) -> int:
        return len(self.ops)

    def __str__(self) -> str:
        """Canonical text; ``Chain.parse(str(chain))`` gives the same chain."""
        return ", ".join(str(op) for op in self.ops)

    def __repr__(self) -> str:
        return f"Chain({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Chain) and [(o.name, o.params) for o in self.ops] == [
            (o.name, o.params) for o in other.ops
        ]


def apply_chain(
    image: np.ndarray, ops: str | Chain | Sequence[Op], *, limits: ChainLimits | None = None
) -> np.ndarray:
    """Apply ``ops`` (chain text, a :class:`Chain` or a list of :class:`Op`) to ``image``
    (checked against ``limits`` first when given; see :meth:`Chain.apply`)."""
    chain = Chain.parse(ops) if isinstance(ops, str) else ops if isinstance(ops, Chain) else Chain(ops)
    return chain.apply(image, limits=limits)


def describe_ops() -> str:
    """A human-readable table of every op, its parameters, defaults and ranges."""
    lines = []
    for name in list_ops():
        spec = get_op(name)
        head = spec.signature()
        if spec.aliases:
            head += f"   (also: {', '.join(spec.aliases)})"
        lines.append(head)
        if spec.summary:
            lines.append(f"    {spec.summary}")
        for p in spec.params:
            lines.append(f"    {p.name}: {p.describe()}" + (f" — {p.help}" if p.help else ""))
        if spec.alpha != "kept":
            lines.append(f"    alpha: {spec.alpha}")
        if spec.size is not None:
            lines.append(f"    size: {spec.size.__doc__ or 'changed'}")
    return "\n".join(lines)
