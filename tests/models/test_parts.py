"""The part segmenter network: shapes, the uint8 helper, files, part-map helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatarforge.data.procedural import PART_NAMES, render, sample_attributes
from avatarforge.data.procedural.schema import PART_IDS
from avatarforge.models import load_pretrained
from avatarforge.models.parts import PartSegmenter, color_parts, face_found, predict_part_map


@pytest.mark.parametrize("out_scale", [1, 2])
@pytest.mark.parametrize("channels", [3, 4])
def test_shapes(out_scale, channels):
    torch.manual_seed(0)
    m = PartSegmenter(channels=channels, widths=[8, 8], out_scale=out_scale)
    y = m(torch.rand(2, channels, 16, 16) * 2 - 1)
    assert y.shape == (2, 11, 16 * out_scale, 16 * out_scale)
    with pytest.raises(ValueError, match="multiple of 4"):
        m(torch.zeros(1, channels, 18, 18))


def test_bad_arguments():
    for kw, msg in [
        ({"channels": 2}, "channels must be 3"),
        ({"out_scale": 4}, "out_scale must be 1 or 2"),
        ({"part_classes": 5}, "part_classes must be 11"),
        ({"widths": [8]}, "widths needs at least 2"),
    ]:
        with pytest.raises(ValueError, match=msg):
            PartSegmenter(**kw)


def test_predict_part_map_shapes_chunks_and_determinism():
    torch.manual_seed(1)
    m = PartSegmenter(widths=[8, 8], out_scale=2).eval()
    with torch.no_grad():
        m.head.bias.normal_(0, 1)  # a "trained" head: not every pixel the same class
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 16, 16, 4), dtype=np.uint8)
    a = predict_part_map(m, imgs, 64, chunk=2)
    assert a.shape == (5, 64, 64) and a.dtype == np.uint8 and a.max() < len(PART_NAMES)
    assert np.array_equal(a, predict_part_map(m, imgs, 64, chunk=16))  # chunking changes nothing
    assert np.array_equal(a, predict_part_map(m, imgs, 64))  # deterministic
    assert predict_part_map(m, imgs).shape == (5, 32, 32)  # default: the model's output size
    assert predict_part_map(m, imgs[..., :3], 48).shape == (5, 48, 48)  # RGB: taken as opaque
    assert predict_part_map(m, imgs[:0], 64).shape == (0, 64, 64)
    with pytest.raises(ValueError, match="uint8"):
        predict_part_map(m, imgs.astype(np.float32), 64)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(2)
    m = PartSegmenter(widths=[8, 12, 16], out_scale=1).eval()
    m.save_pretrained(tmp_path / "s")
    m2 = load_pretrained(tmp_path / "s").eval()
    assert isinstance(m2, PartSegmenter) and m2.config["widths"] == [8, 12, 16]
    x = torch.rand(1, 4, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))


def test_face_found_and_colours():
    attrs = {**sample_attributes(3), "eye_open": 1.0, "mouth_open": 0.5, "head_yaw": 0.0, "head_tilt": 0.0}
    _, masks = render(attrs, 64, return_parts=True)
    lab = np.zeros((64, 64), np.uint8)
    for i, name in enumerate(PART_NAMES):
        lab[masks[name]] = i
    assert face_found(lab)
    no_mouth = np.where(lab == PART_IDS["mouth"], PART_IDS["skin"], lab)
    assert not face_found(no_mouth)
    one_eye = lab.copy()
    cols = np.arange(64)[None, :].repeat(64, 0)
    one_eye[(cols >= 32) & np.isin(lab, [PART_IDS["eye_white"], PART_IDS["iris"]])] = PART_IDS["skin"]
    assert not face_found(one_eye, mid_x=32)
    assert not face_found(np.zeros((64, 64), np.uint8))
    c = color_parts(lab[None])
    assert c.shape == (1, 64, 64, 3) and c.dtype == np.uint8
