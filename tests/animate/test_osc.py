"""OSC 1.0 parser and encoder: every type tag, nested bundles, padding rules, malformed packets."""

from __future__ import annotations

import math
import struct

import pytest

from avatarforge.animate.osc import (
    OSCBundle,
    OSCError,
    OSCMessage,
    encode_bundle,
    encode_message,
    iter_messages,
    parse_packet,
)


def _s(text: str) -> bytes:
    """An OSC-string written out by hand: bytes, NUL, padded to a multiple of 4."""
    raw = text.encode()
    return raw + b"\x00" * (4 - len(raw) % 4)


def test_hand_crafted_message_with_every_type_tag():
    blob = b"\x01\x02\x03\x04\x05"
    packet = (
        _s("/test/all")
        + _s(",ifsbTFNdh")
        + struct.pack(">i", -7)
        + struct.pack(">f", 0.5)
        + _s("hey")  # 3 chars + 1 NUL = 4 bytes
        + struct.pack(">i", 5)
        + blob
        + b"\x00\x00\x00"  # blob padded to 8
        + struct.pack(">d", math.pi)
        + struct.pack(">q", -(2**40))
    )
    msg = parse_packet(packet)
    assert isinstance(msg, OSCMessage)
    assert msg.address == "/test/all"
    assert msg.tags == "ifsbTFNdh"
    assert msg.args == (-7, 0.5, "hey", blob, True, False, None, math.pi, -(2**40))
    assert encode_message(msg.address, *msg.args, tags=msg.tags) == packet  # byte-exact round trip


def test_string_padding_lengths():
    # A string whose length is a multiple of 4 takes 4 NULs; others 1-3.
    for text, size in (("abc", 4), ("abcd", 8), ("abcde", 8), ("", 4)):
        assert len(_s(text)) == size
        msg = parse_packet(_s("/s") + _s(",s") + _s(text))
        assert msg.args == (text,)


def test_message_without_type_tags_and_encoder_inference():
    assert parse_packet(_s("/ping")) == OSCMessage("/ping")
    data = encode_message("/m", 1, 2.5, "x", b"ab", True, False, None, 2**40)
    msg = parse_packet(data)
    assert msg.tags == "ifsbTFNh"
    assert msg.args == (1, 2.5, "x", b"ab", True, False, None, 2**40)
    assert len(data) % 4 == 0


def test_nested_bundles_flatten_in_order():
    inner = encode_bundle([encode_message("/b", 2), encode_message("/c", "three")], timetag=42)
    outer = encode_bundle([encode_message("/a", 1.0), inner, encode_message("/d")])
    pkt = parse_packet(outer)
    assert isinstance(pkt, OSCBundle) and pkt.timetag == 1
    assert isinstance(pkt.elements[1], OSCBundle) and pkt.elements[1].timetag == 42
    assert [(m.address, m.args) for m in iter_messages(pkt)] == [
        ("/a", (1.0,)),
        ("/b", (2,)),
        ("/c", ("three",)),
        ("/d", ()),
    ]
    # Objects encode too, and an empty bundle is valid.
    assert parse_packet(encode_bundle([pkt])) == OSCBundle(1, (pkt,))
    assert parse_packet(encode_bundle([])) == OSCBundle(1, ())


@pytest.mark.parametrize(
    ("packet", "match"),
    [
        (b"/ab\x00\x00\x00\x00\x00"[:7] + b"", "multiple of 4"),  # 7 bytes
        (b"/abc", "NUL terminator"),  # no terminator at all
        (b"/ab\x00" + b",i\x00\x01" + b"\x00\x00\x00\x01", "non-zero padding"),  # type tag padding
        (b"/a\x00X" + b",\x00\x00\x00", "non-zero padding"),  # address padding
        (_s("/a") + _s(",i") + b"\x00\x00", "multiple of 4"),
        (_s("/a") + _s(",i"), "truncated"),
        (_s("/a") + _s(",d") + b"\x00" * 4, "truncated"),
        (_s("/a") + _s(",s") + b"abcd", "NUL terminator"),
        (_s("/a") + _s(",b") + struct.pack(">i", 3) + b"xyz\x07", "blob padding"),
        (_s("/a") + _s(",b") + struct.pack(">i", -1), "negative size"),
        (_s("/a") + _s(",b") + struct.pack(">i", 100) + b"abcd", "truncated"),
        (_s("/a") + _s(",r") + b"\x00" * 4, "unsupported type tag"),
        (_s("/a") + _s(",") + b"\x00" * 4, "trailing bytes"),
        (_s("a") + _s(","), "must start with '/'"),
        (_s("/a") + _s("i"), "must start with ','"),
        (b"#bundl\x00\x00" + b"\x00" * 8, "#bundle"),
        (b"#bundle\x00" + b"\x00" * 4, "truncated"),
        (
            b"#bundle\x00" + b"\x00" * 8 + struct.pack(">i", 6) + b"/a\x00\x00" + b"\x00\x00\x00\x00",
            "multiple of 4",
        ),
        (b"#bundle\x00" + b"\x00" * 8 + struct.pack(">i", 64) + _s("/a"), "truncated"),
        (b"#bundle\x00" + b"\x00" * 8 + struct.pack(">i", 4) + b"/a\x00\x01", "in bundle element"),
        (b"", "empty"),
        (b"\xff\xfe\x00\x00", "UTF-8"),
    ],
)
def test_malformed_packets_raise(packet: bytes, match: str):
    with pytest.raises(OSCError, match=match):
        parse_packet(packet)


def test_deep_nesting_is_refused():
    pkt = encode_message("/x")
    for _ in range(20):
        pkt = encode_bundle([pkt])
    with pytest.raises(OSCError, match="nested deeper"):
        parse_packet(pkt)


def test_encoder_rejects_bad_input():
    with pytest.raises(ValueError, match="start with '/'"):
        encode_message("x")
    with pytest.raises(ValueError, match="type tags for"):
        encode_message("/x", 1, tags="if")
    with pytest.raises(TypeError, match="cannot encode"):
        encode_message("/x", object())
    with pytest.raises(ValueError, match="NUL"):
        encode_message("/x", "a\x00b")
