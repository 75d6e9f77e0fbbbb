"""Parsing and applying op chains."""

from __future__ import annotations

import numpy as np
import pytest

from avatarforge.postprocess import (
    DEFAULT_CHAIN,
    Chain,
    Op,
    apply_chain,
    denoise,
    describe_ops,
    list_ops,
    parse_chain,
    saturation,
    unsharp_mask,
    upscale,
    white_balance,
)


def test_valid_chain_applies_in_order(avatar):
    out = apply_chain(avatar, "white_balance,saturation=1.2,sharpen=0.5,upscale=2")
    manual = upscale(unsharp_mask(saturation(white_balance(avatar), 1.2), 0.5), 2)
    assert np.array_equal(out, manual)
    # Order matters: the same ops reversed give another image.
    rev = apply_chain(avatar, "upscale=2,sharpen=0.5,saturation=1.2,white_balance")
    assert rev.shape == out.shape and not np.array_equal(rev, out)


def test_syntax_forms_are_equivalent():
    a = Chain.parse("denoise(strength=0.4, method=guided)")
    b = Chain.parse("denoise(0.4, guided)")
    c = Chain.parse("  Denoise ( 0.4 , method = 'guided' ) ,")
    assert a == b == c and len(a) == 1
    assert a.ops[0].params == {"strength": 0.4, "method": "guided"}
    assert Chain.parse("sharpen=0.5") == Chain.parse("unsharp-mask(amount=0.5)")  # alias + dash
    assert parse_chain("") == [] and parse_chain(" , ") == []


def test_quoted_values_may_contain_commas(avatar):
    chain = Chain.parse("composite(color='0,255,0')")
    assert chain.ops[0].params["color"] == (0, 255, 0)
    assert np.array_equal(chain(avatar), apply_chain(avatar, "composite=#00ff00"))


def test_canonical_text_round_trips():
    chain = Chain.parse(
        "cel(3, outline=2, outline_color=red), hue=-90, remove_bg(key_color=auto, connected=no)"
    )
    assert Chain.parse(str(chain)) == chain
    assert str(chain).startswith("cel_shade(levels=3, outline=2, outline_color=#ff0000)")


def test_bad_op_name_lists_valid_ops_and_suggests():
    with pytest.raises(ValueError) as ei:
        parse_chain("white_balance,satration=1.2")
    msg = str(ei.value)
    assert "unknown operation 'satration'" in msg and "did you mean 'saturation'" in msg
    for name in list_ops():
        assert name in msg


@pytest.mark.parametrize(
    "text, parts",
    [
        ("saturation=9", ["saturation", "'factor'", "from 0 to 4", "'9'"]),
        ("upscale=5", ["upscale", "'factor'", "one of 2, 3, 4"]),
        ("sharpen(threshold=1.5)", ["sharpen", "'threshold'", "integer from 0 to 255"]),
        (
            "denoise(method=bilaterl)",
            ["denoise", "'method'", "bilateral, edge_preserving, guided", "did you mean 'bilateral'"],
        ),
        (
            "denoise(strenght=1)",
            ["denoise", "unknown parameter 'strenght'", "did you mean 'strength'", "strength, method"],
        ),
        ("cel_shade(smooth=maybe)", ["cel_shade", "'smooth'", "true or false"]),
        ("hue=abc", ["hue", "'degrees'", "-360 to 360"]),
        ("denoise(0.5, guided, 3)", ["denoise takes 2 parameters"]),
        ("denoise(method=guided, 0.5)", ["positional value follows"]),
        ("denoise(0.5, strength=0.2)", ["given twice"]),
        ("sharpen(amount=1", ["unbalanced '('"]),
        ("composite(color='0,0,0)", ["unterminated quote"]),
        ("sharpen 0.5", ["cannot parse"]),
    ],
)
def test_bad_values_name_op_parameter_and_range(text, parts):
    with pytest.raises(ValueError) as ei:
        parse_chain(text)
    for p in parts:
        assert p in str(ei.value), (p, str(ei.value))


def test_op_objects(avatar):
    op = Op.create("saturation", factor=0.0)
    assert str(op) == "saturation(factor=0)"
    grey = op(avatar)
    assert np.abs(grey[..., 0].astype(int) - grey[..., 1]).max() <= 1
    assert op.with_params(factor=2.0).params == {"factor": 2.0}
    with pytest.raises(ValueError, match="from 0 to 4"):
        op.with_params(factor=-1)
    assert np.array_equal(apply_chain(avatar, [op]), grey)


def test_default_chain_and_listing(avatar):
    out = apply_chain(avatar, DEFAULT_CHAIN)
    assert out.shape == avatar.shape and np.array_equal(out[..., 3], avatar[..., 3])
    assert np.array_equal(out, unsharp_mask(denoise(avatar, 0.3), 0.5))
    text = describe_ops()
    for name in list_ops():
        assert f"\n{name}(" in f"\n{text}"
    assert "a number from 0 to 4" in text


def test_empty_chain_returns_a_copy(avatar):
    out = apply_chain(avatar, "")
    assert np.array_equal(out, avatar) and out is not avatar


# ----------------------------------------------------------------------------- sizes and limits
def _variants(spec):
    """Parameter sets of an op that may change its size: defaults, then each int/choice value."""
    out = [{}]
    for p in spec.params:
        if p.kind == "choice" or (p.kind == "int" and p.choices):
            out += [{p.name: c} for c in p.choices]
    return out


@pytest.mark.parametrize("name", list_ops())
def test_every_op_declares_its_output_size(name, avatar, avatar_rgb):
    """The size rule (what limits are checked against) must match what the op really does,
    for odd and non-square sizes too; an op that resizes without declaring it fails here."""
    from avatarforge.postprocess import get_op

    spec = get_op(name)
    for image in (avatar[:37, :50], avatar_rgb[:50, :37]):
        for params in _variants(spec):
            op = Op.create(name, **params)
            try:
                out = op(np.ascontiguousarray(image))
            except ValueError:
                continue  # e.g. a key colour that is not on the border: no image, no size
            declared = op.output_size((image.shape[1], image.shape[0]))
            assert (out.shape[1], out.shape[0]) == declared, (name, params)


def test_size_ops_must_declare_a_rule():
    from avatarforge.postprocess.registry import Param, register_op

    with pytest.raises(TypeError, match="declares no size rule"):
        register_op("crop_test_only", Param("px", "int", 0, 10), group="size")(lambda image, px=0: image)


def test_plan_gives_every_size_and_the_work_without_pixels():
    plan = Chain.parse("sharpen, upscale=4, upscale=3, denoise").plan((16, 10))
    assert plan.sizes == ((16, 10), (16, 10), (64, 40), (192, 120), (192, 120))
    assert plan.output_size == (192, 120) and plan.largest_side == 192
    assert plan.work == 160 + 64 * 40 + 192 * 120 + 192 * 120


def test_limits_refuse_before_any_work(monkeypatch, avatar):
    from avatarforge.postprocess.chain import ChainLimitError, ChainLimits

    calls = []
    chain = Chain.parse("sharpen, upscale=4, upscale=4, upscale=4, upscale=4")
    monkeypatch.setattr(Op, "__call__", lambda self, image: calls.append(self) or image)
    limits = ChainLimits(max_side=2048, names={"max_side": "the server's max_output_side"})
    with pytest.raises(ChainLimitError) as e:
        chain.apply(avatar[:16, :16], limits=limits)
    msg = str(e.value)
    assert "upscale(factor=4) (op 5 of 5)" in msg and "4096x4096" in msg and "from 1024x1024" in msg
    assert "2048 px per side (the server's max_output_side)" in msg
    assert calls == []  # refused from the plan: not one op ran
    # an intermediate image over the limit is refused even when a later op would shrink nothing
    with pytest.raises(ChainLimitError, match="op 1 of 2"):
        Chain.parse("upscale=4, sharpen").check((600, 10), ChainLimits(max_side=2048))
    with pytest.raises(ChainLimitError, match="3 ops; at most 2 are allowed"):
        Chain.parse("sharpen, sharpen, sharpen").check((8, 8), ChainLimits(max_ops=2))
    with pytest.raises(
        ChainLimitError, match=r"would process 2,048 pixels.*at most 2,000 are allowed \(budget\)"
    ):
        Chain.parse("upscale=4, sharpen").check(
            (4, 16), ChainLimits(max_work=2000, names={"max_work": "budget"})
        )
    # within the limits the chain runs as without them
    real = Chain.parse("upscale=2, sharpen")
    monkeypatch.undo()
    assert np.array_equal(real.apply(avatar, limits=limits), real.apply(avatar))


def test_an_op_lying_about_its_size_is_caught(avatar):
    from dataclasses import replace

    op = Op.create("sharpen")
    liar = Op(replace(op.spec, size=lambda size, params: (size[0] * 2, size[1] * 2)), {})
    with pytest.raises(RuntimeError, match="declares 128x128"):
        Chain([liar]).apply(avatar)


def test_listing_shows_size_rules():
    text = describe_ops()
    assert "size: both sides times factor" in text


def test_named_parameter_in_shorthand_says_how_to_write_it():
    """'cel_shade=levels=4' used to say only "got 'levels=4'"; it now shows the syntax."""
    from avatarforge.postprocess import parse_chain

    with pytest.raises(ValueError, match=r"cel_shade\(levels=4\)"):
        parse_chain("cel_shade=levels=4")
    assert str(parse_chain("cel_shade=4")[0]) == "cel_shade(levels=4)"
