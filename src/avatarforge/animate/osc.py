"""Open Sound Control 1.0: a strict packet parser and an encoder (no dependencies).

OSC is what the VMC protocol (:mod:`avatarforge.animate.drivers`) sends over UDP. A packet
is a *message* or a *bundle*:

* message: address pattern (OSC-string starting with ``/``), type tag string (OSC-string
  starting with ``,``), then one argument per tag;
* bundle: the OSC-string ``#bundle``, a 64-bit NTP time tag, then elements, each an int32
  size (a multiple of 4) followed by that many bytes holding a message or a bundle
  (bundles nest).

Encodings (big-endian): ``i`` int32, ``f`` float32, ``s`` OSC-string, ``b`` blob (int32
size, bytes, zero padding), ``T``/``F``/``N`` (true, false, nil: no bytes), ``d`` float64,
``h`` int64. An OSC-string is its bytes, a terminating NUL and 0-3 more NULs so the total
is a multiple of 4 (a string whose length is a multiple of 4 gets four NULs).

The parser is strict, because a network listener must never guess: missing terminators,
non-zero padding, truncated arguments, unknown type tags, bundle element sizes that are
not multiples of 4 or overrun the packet, and trailing bytes all raise :class:`OSCError`
naming the offset. Messages without a type tag string (pre-1.0 senders) are accepted as
having no arguments, as the specification suggests.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "IMMEDIATELY",
    "OSCBundle",
    "OSCError",
    "OSCMessage",
    "encode_bundle",
    "encode_message",
    "iter_messages",
    "parse_packet",
]

#: The special time tag "execute immediately".
IMMEDIATELY = 1
_BUNDLE_TAG = b"#bundle\x00"
_MAX_DEPTH = 16  # nested bundles deeper than this are refused (stack safety on hostile input)


class OSCError(ValueError):
    """A malformed OSC packet; the message names what is wrong and where."""


@dataclass(frozen=True)
class OSCMessage:
    """One OSC message: ``address`` (e.g. ``/VMC/Ext/Blend/Val``), ``args`` and their type ``tags``."""

    address: str
    args: tuple[Any, ...] = ()
    tags: str = ""


@dataclass(frozen=True)
class OSCBundle:
    """A bundle: a 64-bit NTP ``timetag`` and its ``elements`` (messages and bundles)."""

    timetag: int = IMMEDIATELY
    elements: tuple[OSCMessage | OSCBundle, ...] = field(default_factory=tuple)


Packet = OSCMessage | OSCBundle


# =============================================================================== parsing
#: Fixed-size big-endian argument type tags: struct format and name.
_NUMBER_TAGS: dict[str, tuple[str, str]] = {
    "i": (">i", "int32"),
    "f": (">f", "float32"),
    "d": (">d", "float64"),
    "h": (">q", "int64"),
}


def _read_string(data: bytes, pos: int, what: str) -> tuple[str, int]:
    end = data.find(b"\x00", pos)
    if end < 0:
        raise OSCError(f"{what} at offset {pos} has no NUL terminator")
    padded = (end - pos) // 4 * 4 + 4  # string + 1-4 NULs, a multiple of 4
    stop = pos + padded
    if stop > len(data):
        raise OSCError(f"{what} at offset {pos} is missing its padding (needs {stop - len(data)} more bytes)")
    if data[end:stop].strip(b"\x00"):
        raise OSCError(f"{what} at offset {pos} has non-zero padding bytes")
    try:
        text = data[pos:end].decode("utf-8")
    except UnicodeDecodeError as e:
        raise OSCError(f"{what} at offset {pos} is not valid UTF-8") from e
    return text, stop


def _read(data: bytes, pos: int, n: int, what: str) -> tuple[bytes, int]:
    if pos + n > len(data):
        raise OSCError(f"{what} at offset {pos} is truncated (needs {n} bytes, {len(data) - pos} left)")
    return data[pos : pos + n], pos + n


def _parse_message(data: bytes) -> OSCMessage:
    address, pos = _read_string(data, 0, "address pattern")
    if not address.startswith("/"):
        raise OSCError(f"address pattern {address!r} must start with '/'")
    if pos == len(data):
        return OSCMessage(address)  # no type tag string: an old-style message without arguments
    tags, pos = _read_string(data, pos, "type tag string")
    if not tags.startswith(","):
        raise OSCError(f"type tag string {tags!r} at offset {pos} must start with ','")
    args: list[Any] = []
    for tag in tags[1:]:
        if tag in _NUMBER_TAGS:
            fmt, what = _NUMBER_TAGS[tag]
            raw, pos = _read(data, pos, struct.calcsize(fmt), f"{what} argument")
            args.append(struct.unpack(fmt, raw)[0])
        elif tag == "s":
            text, pos = _read_string(data, pos, "string argument")
            args.append(text)
        elif tag == "b":
            raw, pos = _read(data, pos, 4, "blob size")
            (n,) = struct.unpack(">i", raw)
            if n < 0:
                raise OSCError(f"blob at offset {pos - 4} has a negative size {n}")
            blob, pos = _read(data, pos, n, "blob")
            pad = -n % 4
            padding, pos = _read(data, pos, pad, "blob padding")
            if padding.strip(b"\x00"):
                raise OSCError(f"blob padding at offset {pos - pad} is not zero")
            args.append(bytes(blob))
        elif tag == "T":
            args.append(True)
        elif tag == "F":
            args.append(False)
        elif tag == "N":
            args.append(None)
        else:
            raise OSCError(f"unsupported type tag {tag!r} in {tags!r} (supported: i f s b T F N d h)")
    if pos != len(data):
        raise OSCError(f"message {address} has {len(data) - pos} unexpected trailing bytes at offset {pos}")
    return OSCMessage(address, tuple(args), tags[1:])


def _parse(data: bytes, depth: int) -> Packet:
    if len(data) % 4:
        raise OSCError(f"packet size {len(data)} is not a multiple of 4")
    if not data:
        raise OSCError("empty packet")
    if data.startswith(b"#"):
        if depth >= _MAX_DEPTH:
            raise OSCError(f"bundles nested deeper than {_MAX_DEPTH}")
        if not data.startswith(_BUNDLE_TAG):
            raise OSCError("a packet starting with '#' must be a '#bundle'")
        raw, pos = _read(data, len(_BUNDLE_TAG), 8, "bundle time tag")
        (timetag,) = struct.unpack(">Q", raw)
        elements: list[Packet] = []
        while pos < len(data):
            raw, pos = _read(data, pos, 4, "bundle element size")
            (n,) = struct.unpack(">i", raw)
            if n <= 0 or n % 4:
                raise OSCError(
                    f"bundle element at offset {pos - 4} has size {n}, not a positive multiple of 4"
                )
            body, pos = _read(data, pos, n, "bundle element")
            try:
                elements.append(_parse(body, depth + 1))
            except OSCError as e:
                raise OSCError(f"in bundle element at offset {pos - n}: {e}") from None
        return OSCBundle(timetag, tuple(elements))
    return _parse_message(data)


def parse_packet(data: bytes) -> Packet:
    """Parse one OSC packet (a UDP datagram) into an :class:`OSCMessage` or :class:`OSCBundle`.

    Raises:
        OSCError: the packet is malformed (see the module docstring).
    """
    return _parse(bytes(data), 0)


def iter_messages(packet: Packet) -> Iterator[OSCMessage]:
    """Every message of a packet in order, bundles flattened depth-first."""
    if isinstance(packet, OSCMessage):
        yield packet
    else:
        for el in packet.elements:
            yield from iter_messages(el)


# =============================================================================== encoding
def _pad_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    if b"\x00" in raw:
        raise ValueError("OSC strings cannot contain NUL characters")
    return raw + b"\x00" * (4 - len(raw) % 4)


def _infer_tag(v: Any) -> str:
    if v is True:
        return "T"
    if v is False:
        return "F"
    if v is None:
        return "N"
    if isinstance(v, int):
        return "i" if -(2**31) <= v < 2**31 else "h"
    if isinstance(v, float):
        return "f"
    if isinstance(v, str):
        return "s"
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "b"
    raise TypeError(f"cannot encode {type(v).__name__} {v!r} as an OSC argument")


def encode_message(address: str, *args: Any, tags: str | None = None) -> bytes:
    """Encode one message. Tags are inferred from the Python types (int -> ``i`` or ``h``,
    float -> ``f``, str -> ``s``, bytes -> ``b``, True/False/None -> ``T``/``F``/``N``)
    unless ``tags`` (without the leading comma, e.g. ``"sd"``) is given."""
    if not address.startswith("/"):
        raise ValueError(f"OSC address {address!r} must start with '/'")
    tags = "".join(_infer_tag(a) for a in args) if tags is None else tags
    if len(tags) != len(args):
        raise ValueError(f"{len(tags)} type tags for {len(args)} arguments")
    out = [_pad_string(address), _pad_string("," + tags)]
    for tag, v in zip(tags, args):
        if tag == "i":
            out.append(struct.pack(">i", int(v)))
        elif tag == "f":
            out.append(struct.pack(">f", float(v)))
        elif tag == "d":
            out.append(struct.pack(">d", float(v)))
        elif tag == "h":
            out.append(struct.pack(">q", int(v)))
        elif tag == "s":
            out.append(_pad_string(str(v)))
        elif tag == "b":
            blob = bytes(v)
            out.append(struct.pack(">i", len(blob)) + blob + b"\x00" * (-len(blob) % 4))
        elif tag in "TFN":
            pass
        else:
            raise ValueError(f"unsupported type tag {tag!r} (supported: i f s b T F N d h)")
    return b"".join(out)


def encode_bundle(elements: Sequence[bytes | OSCMessage | OSCBundle], timetag: int = IMMEDIATELY) -> bytes:
    """Encode a bundle of already-encoded packets (bytes) or message/bundle objects."""
    out = [_BUNDLE_TAG, struct.pack(">Q", timetag)]
    for el in elements:
        if isinstance(el, OSCMessage):
            body = encode_message(el.address, *el.args, tags=el.tags or None)
        elif isinstance(el, OSCBundle):
            body = encode_bundle(el.elements, el.timetag)
        else:
            body = bytes(el)
        if len(body) % 4:
            raise ValueError(f"bundle element of {len(body)} bytes is not a multiple of 4")
        out.append(struct.pack(">i", len(body)) + body)
    return b"".join(out)
