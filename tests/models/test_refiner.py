"""The refiner network: shapes, an untrained refiner is bilinear interpolation, uint8 helpers, files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avatarforge.models import load_pretrained
from avatarforge.models.refiner import (
    Refiner,
    RefinerDiscriminator,
    predict_parts,
    refine_images,
    refiner_flops,
)


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("channels", [3, 4])
def test_shapes_and_untrained_is_bilinear(scale, channels):
    torch.manual_seed(0)
    m = Refiner(scale=scale, channels=channels, width=8, blocks=1, part_classes=11).eval()
    x = torch.rand(2, channels, 8, 8) * 2 - 1
    img, logits = m.forward_with_parts(x)
    assert img.shape == (2, channels, 8 * scale, 8 * scale)
    assert logits is not None and logits.shape == (2, 11, 8 * scale, 8 * scale)
    assert torch.equal(m(x), img)
    base = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    assert torch.allclose(img, base.clamp(-1, 1), atol=1e-6)  # the last layer starts at zero


def test_no_part_head_and_bad_arguments():
    m = Refiner(scale=2, width=8, blocks=1, part_classes=0)
    assert m.forward_with_parts(torch.zeros(1, 4, 4, 4))[1] is None
    with pytest.raises(ValueError, match="no part head"):
        predict_parts(m, np.zeros((1, 4, 4, 4), np.uint8))
    for kw, msg in [
        ({"scale": 3}, "scale must be one of"),
        ({"channels": 2}, "channels must be 3"),
        ({"part_classes": 5}, "part_classes must be 0 or 11"),
        ({"scale": 4, "up_widths": [8]}, "up_widths needs 2"),
    ]:
        with pytest.raises(ValueError, match=msg):
            Refiner(**kw)


def test_uint8_helpers_are_chunked_deterministic_and_clean():
    torch.manual_seed(1)
    m = Refiner(scale=4, width=8, blocks=1).eval()
    with torch.no_grad():
        m.tail.weight.normal_(0, 0.05)  # a "trained" refiner: the residual is not zero
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 8, 8, 4), dtype=np.uint8)
    imgs[:, :2, :, 3] = 0
    a = refine_images(m, imgs, chunk=2)
    b = refine_images(m, imgs, chunk=8)
    assert a.shape == (5, 32, 32, 4) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not a[a[..., 3] == 0, :3].any()  # straight alpha: no colour where alpha is 0
    parts = predict_parts(m, imgs, chunk=3)
    assert parts.shape == (5, 32, 32) and parts.dtype == np.uint8 and parts.max() < 11
    assert np.array_equal(parts, predict_parts(m, imgs))
    rgb = refine_images(m, imgs[..., :3])  # RGB given to an RGBA refiner: taken as opaque
    assert rgb.shape == (5, 32, 32, 4)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(2)
    m = Refiner(scale=8, width=8, blocks=1, up_widths=[8, 6, 4]).eval()
    with torch.no_grad():
        m.tail.weight.normal_(0, 0.05)
    m.save_pretrained(tmp_path / "r")
    m2 = load_pretrained(tmp_path / "r")
    assert isinstance(m2, Refiner) and m2.config["up_widths"] == [8, 6, 4]
    x = torch.rand(1, 4, 6, 6) * 2 - 1
    with torch.no_grad():
        assert torch.equal(m(x), m2.eval()(x))


def test_discriminator_and_flops():
    d = RefinerDiscriminator(channels=4, width=8, layers=3)
    assert d(torch.zeros(2, 4, 32, 32)).shape == (2, 1, 4, 4)
    small = refiner_flops(Refiner(scale=8, width=8, blocks=1), 16)
    assert 0 < small < refiner_flops(Refiner(scale=8, width=16, blocks=2), 16)


def test_select_head_starts_near_nearest_neighbour_and_keeps_flat_colours():
    """The "select" head mixes each output pixel from its 3x3 input neighbours: flat colour
    stays exactly flat (a mix of equal colours), transparent pixels stay transparent."""
    torch.manual_seed(0)
    r = Refiner(scale=4, channels=4, width=8, blocks=1, part_classes=0, head="select").eval()
    x = torch.full((1, 4, 8, 8), -1.0)
    x[:, :, 2:6, 2:6] = torch.tensor([0.2, -0.4, 0.6, 1.0]).view(1, 4, 1, 1)  # an opaque square
    with torch.no_grad():
        y = r(x)
    assert y.shape == (1, 4, 32, 32)
    inner = y[0, :, 12:20, 12:20]
    assert torch.allclose(inner, x[0, :, 4:5, 4:5].expand_as(inner), atol=1e-4)
    assert float(y[0, 3, :4, :4].max()) == -1.0  # far from the square: transparent
    with pytest.raises(ValueError, match="head must be 'select' or 'residual'"):
        Refiner(head="sharp")
