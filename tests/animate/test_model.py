"""The animator network: registry, save/load, the prepare/render split, controls handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatarforge.data.procedural import render_avatar
from avatarforge.models.animator import (
    CONTROL_NAMES,
    NEUTRAL_CONTROLS,
    AnimatorDiscriminator,
    ExpressionAnimator,
    FrozenAnimator,
    controls_tensor,
    controls_to_dict,
    image_to_tensor,
    tensor_to_image,
)
from avatarforge.models.base import load_pretrained
from avatarforge.models.registry import get_model_class


def test_registry_shapes_and_round_trip(tmp_path):
    import avatarforge.models.animator  # noqa: F401 - registers the classes

    assert get_model_class("animator", "generator") is ExpressionAnimator
    assert get_model_class("animator", "discriminator") is AnimatorDiscriminator
    g = ExpressionAnimator(resolution=32, widths=(4, 8, 8, 16), ctrl_hidden=16)
    d = AnimatorDiscriminator(width=8)
    x = torch.rand(3, 4, 32, 32) * 2 - 1
    c = torch.rand(3, 5)
    y = g(x, c)
    assert y.shape == (3, 4, 32, 32) and y.abs().max() <= 1
    assert d(x, y, c).shape == (3, 1, 4, 4)
    g.save_pretrained(tmp_path)
    g2 = load_pretrained(tmp_path)
    assert isinstance(g2, ExpressionAnimator) and g2.config == g.config
    assert torch.equal(g2(x, c), y)
    with pytest.raises(ValueError, match="multiple of 8"):
        ExpressionAnimator(resolution=36)


def test_untrained_animator_copies_its_input():
    """The flow starts at zero and the mask near zero: an untrained animator is the identity
    baseline, so training only has to learn the changes."""
    g = ExpressionAnimator(resolution=32)
    avatar = render_avatar(3, 32)
    out = g.animate(avatar, {"eye_open": 0.0, "head_yaw": 1.0})
    assert np.abs(out.astype(int) - avatar.astype(int)).mean() < 6  # < 2.5% of the range


def test_prepare_once_render_many_matches_forward():
    torch.manual_seed(1)
    g = ExpressionAnimator(resolution=32).eval()
    for p in g.parameters():  # wake every branch up (zero-initialised layers included)
        p.data.add_(torch.randn_like(p) * 0.05)
    avatar = render_avatar(7, 32)
    state = g.prepare(avatar)
    ctrls = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.5, -0.5, 0.3]])
    many = g.render(state, ctrls)  # one avatar, two expressions
    assert many.shape == (2, 4, 32, 32)
    with torch.no_grad():
        ref = g(image_to_tensor(avatar, 32).expand(2, -1, -1, -1), ctrls).clamp(-1, 1)
    assert torch.allclose(many, ref, atol=1e-5)
    one = g.render(
        state, {"mouth_open": 1.0, "smile": 0.5, "head_yaw": -0.5, "head_tilt": 0.3, "eye_open": 0.0}
    )
    assert torch.allclose(one[0], many[1], atol=1e-5)
    frozen = FrozenAnimator(g)  # the TorchScript-frozen decoder renders the same frames
    assert torch.allclose(frozen.render(state, ctrls), many, atol=1e-5)
    assert torch.allclose(frozen.render(frozen.prepare(avatar), ctrls[1]), many[1:], atol=1e-5)
    img = g.render_image(state, NEUTRAL_CONTROLS)
    assert img.shape == (32, 32, 4) and img.dtype == np.uint8
    assert (img[img[..., 3] == 0, :3] == 0).all()  # invisible pixels are black, as the renderer's


def test_controls_and_images():
    t = controls_tensor({"eye_open": 2.0, "smile": -3.0})
    assert t.tolist() == [[1.0, 0.0, -1.0, 0.0, 0.0]]  # clamped, neutral defaults
    assert controls_tensor([0.5] * 5, batch=3).shape == (3, 5)
    assert controls_to_dict(np.array([0, 1, 0, 0, 0]))["mouth_open"] == 1.0
    with pytest.raises(ValueError, match="unknown controls"):
        controls_tensor({"blink": 1.0})
    with pytest.raises(ValueError, match="5 values"):
        controls_tensor([1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        controls_tensor([float("nan")] * 5)
    assert list(CONTROL_NAMES) == ["eye_open", "mouth_open", "smile", "head_yaw", "head_tilt"]
    rgba = render_avatar(2, 64)
    x = image_to_tensor(rgba, 32)
    assert x.shape == (1, 4, 32, 32)
    # Resizing in premultiplied alpha: fully transparent areas stay transparent black.
    back = tensor_to_image(x)
    assert back[0, 0].tolist() == [0, 0, 0, 0]
    rgb = image_to_tensor(rgba[..., :3])
    assert bool((rgb[:, 3] == 1).all())
    assert np.array_equal(tensor_to_image(image_to_tensor(rgba)), rgba)  # exact round trip at full size
    with pytest.raises(ValueError, match="uint8"):
        image_to_tensor(rgba.astype(np.float32))


def test_decoder_cost_grows_with_size():
    g = ExpressionAnimator(resolution=128)
    mflop = g.decoder_flops() / 1e6
    assert 20 < mflop < 120  # the per-frame budget the benchmark is designed around
    assert g.decoder_flops(256) == pytest.approx(4 * g.decoder_flops(128), rel=0.01)


def test_frames_have_clean_alpha():
    """Frames handed to viewers (render_image) have one silhouette and an opaque interior,
    even when the avatar they animate carries stray semi-transparent specks."""
    from avatarforge.data.procedural import render_avatar
    from avatarforge.eval.alpha import opaque_interior_fraction, stray_alpha_pixels

    torch.manual_seed(0)
    g = ExpressionAnimator(resolution=32).eval()
    avatar = render_avatar(5, 32).copy()
    avatar[1, 1] = (200, 200, 200, 60)  # a speck far from the character
    avatar[2, 30] = (10, 10, 10, 120)
    assert stray_alpha_pixels(avatar[None])[0] >= 2
    img = g.render_image(g.prepare(avatar), NEUTRAL_CONTROLS)
    assert stray_alpha_pixels(img[None])[0] == 0
    assert opaque_interior_fraction(img[None])[0] >= 0.99
