"""Contracts every op keeps: shapes, dtypes, alpha rules, purity, hidden-colour independence,
validation."""

from __future__ import annotations

import numpy as np
import pytest

from avatarforge.postprocess import get_op, list_ops
from tests.postprocess.conftest import with_hidden

# One non-default parameter set per op, so every op does real work in these tests.
ACTIVE = {
    "brightness": {"factor": 1.3},
    "contrast": {"factor": 1.5},
    "saturation": {"factor": 1.4},
    "hue": {"degrees": 40.0},
    "gamma": {"gamma": 1.8},
    "temperature": {"amount": 0.5},
    "white_balance": {"strength": 1.0},
    "clahe": {"clip_limit": 3.0},
    "sharpen": {"amount": 1.0},
    "denoise": {"strength": 0.6},
    "cel_shade": {"levels": 4},
    "upscale": {"factor": 2},
    "remove_background": {"method": "grabcut"},
    "composite": {"color": (0, 0, 255)},
    "clean_alpha": {"solid": 100, "edge": 1},
}


def test_every_registered_op_is_covered():
    assert set(list_ops()) == set(ACTIVE)


@pytest.mark.parametrize("name", sorted(ACTIVE))
@pytest.mark.parametrize("kind", ["rgba", "rgb"])
def test_shape_dtype_alpha_and_purity(name, kind, avatar, avatar_rgb):
    spec = get_op(name)
    img = avatar if kind == "rgba" else avatar_rgb
    before = img.copy()
    out = spec.func(img, **ACTIVE[name])
    assert out.dtype == np.uint8
    assert np.array_equal(img, before), "the input must not be modified"
    scale = 2 if name == "upscale" else 1
    channels = {"remove_background": 4, "composite": 3}.get(name, img.shape[2])
    assert out.shape == (img.shape[0] * scale, img.shape[1] * scale, channels)
    if spec.alpha == "kept" and kind == "rgba":
        assert np.array_equal(out[..., 3], img[..., 3]), "alpha must be returned bit-exact"
    # Deterministic: the same call gives the same bytes.
    assert np.array_equal(out, spec.func(img, **ACTIVE[name]))


@pytest.mark.parametrize("name", sorted(ACTIVE))
def test_hidden_colour_never_reaches_visible_pixels(name, avatar):
    """Whatever RGB sits under alpha 0 must not change any visible output pixel."""
    spec = get_op(name)
    a = spec.func(with_hidden(avatar, (0, 0, 0)), **ACTIVE[name])
    b = spec.func(with_hidden(avatar, (0, 255, 0)), **ACTIVE[name])
    if a.shape[2] == 4:
        visible = (a[..., 3] > 0) | (b[..., 3] > 0)
        assert np.array_equal(a[..., 3], b[..., 3])
    else:
        visible = np.ones(a.shape[:2], bool)
    assert np.array_equal(a[visible], b[visible])


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("brightness", {"factor": 1.0}),
        ("contrast", {"factor": 1.0}),
        ("saturation", {"factor": 1.0}),
        ("hue", {"degrees": 0.0}),
        ("hue", {"degrees": 360.0}),
        ("hue", {"degrees": -360.0}),
        ("gamma", {"gamma": 1.0}),
        ("temperature", {"amount": 0.0}),
        ("white_balance", {"strength": 0.0}),
        ("sharpen", {"amount": 0.0}),
        ("denoise", {"strength": 0.0}),
    ],
)
def test_neutral_parameters_are_identity(name, kwargs, avatar):
    assert np.array_equal(get_op(name).func(avatar, **kwargs), avatar)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((8, 8), np.uint8),
        np.zeros((8, 8, 2), np.uint8),
        np.zeros((8, 8, 3), np.float32),
        np.zeros((0, 8, 3), np.uint8),
    ],
)
def test_bad_images_are_rejected(bad):
    with pytest.raises(ValueError, match="image"):
        get_op("saturation").func(bad, 1.2)


def test_non_array_is_a_type_error():
    with pytest.raises(TypeError, match="NumPy"):
        get_op("saturation").func([[1, 2, 3]], 1.2)


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("saturation", {"factor": -0.5}, r"saturation: parameter 'factor' must be a number from 0 to 4"),
        ("saturation", {"factor": float("nan")}, "from 0 to 4"),
        ("saturation", {"factor": True}, "from 0 to 4"),
        ("sharpen", {"threshold": 2.5}, "integer from 0 to 255"),
        ("upscale", {"factor": 5}, "one of 2, 3, 4"),
        ("denoise", {"method": "median"}, "one of bilateral, edge_preserving, guided"),
        ("cel_shade", {"outline_color": (0, 0, 300)}, "colour"),
        ("composite", {"background": "/no/such/file.png"}, "no such file"),
    ],
)
def test_parameters_are_validated_in_python_calls(name, kwargs, match, avatar):
    with pytest.raises(ValueError, match=match):
        get_op(name).func(avatar, **kwargs)
