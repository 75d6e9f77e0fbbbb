"""The cascade in the pipeline: a generator plus a refiner hands out larger avatars.

Tiny seeded models (the quality of a trained refiner is measured by benchmarks/bench_refiner.py);
these tests check the plumbing: sizes, clean alpha at every size, part maps for rigs,
reproducibility from PNG metadata, and errors that name the fix.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatarforge.eval.alpha import opaque_interior_fraction, stray_alpha_pixels
from avatarforge.generate.regenerate import regenerate_from_png
from avatarforge.models.refiner import Refiner
from tests.serve.fixtures_studio import SIZE, tiny_pipe


def _refiner(channels: int = 4, parts: int = 11, seed: int = 0) -> Refiner:
    torch.manual_seed(seed)
    r = Refiner(scale=4, channels=channels, width=8, blocks=1, part_classes=parts).eval()
    with torch.no_grad():  # a little learned detail on top of interpolation
        r.tail.weight.normal_(0, 0.05)
    return r


@pytest.fixture
def pipe(tmp_path):
    p = tiny_pipe()
    ref = _refiner()
    ref.save_pretrained(tmp_path / "refiner")
    p.attach_refiner(tmp_path / "refiner")
    return p


def test_sizes_and_shapes(pipe):
    assert pipe.sizes == [SIZE, 2 * SIZE, 4 * SIZE]
    for size in pipe.sizes:
        res = pipe(seeds=[1, 2], size=size)
        assert res.images.shape == (2, size, size, 4)
    big = pipe(seeds=[1], size=4 * SIZE)
    assert big.params["size"] == 4 * SIZE and big.params["model"]["refiner"]["scale"] == 4


def test_alpha_is_clean_at_every_size(pipe):
    for size in pipe.sizes:
        images = pipe(n=6, size=size).images
        assert stray_alpha_pixels(images).max() == 0
        interior = opaque_interior_fraction(images)
        assert np.nanmin(interior) >= 0.99


def test_layers_for_a_rig(pipe):
    latent = pipe.latents([3, 4])
    images, parts = pipe.render_layers(latent, 4 * SIZE)
    assert images.shape == (2, 4 * SIZE, 4 * SIZE, 4) and parts.shape == (2, 4 * SIZE, 4 * SIZE)
    assert parts.dtype == np.uint8 and parts.max() < 11
    assert not parts[images[..., 3] == 0].any()  # transparent pixels are background (0)
    np.testing.assert_array_equal(images, pipe.render(latent, size=4 * SIZE))


def test_regenerated_from_png_metadata(pipe, tmp_path):
    res = pipe(seeds=[5], size=4 * SIZE)
    (path,) = res.save(tmp_path / "out")
    image, record = regenerate_from_png(path, model=tiny_pipe_with(pipe))
    assert record["size"] == 4 * SIZE
    np.testing.assert_array_equal(image, res.images[0])


def tiny_pipe_with(pipe):
    """A fresh pipeline with the same generator and no refiner: the record brings the refiner."""
    fresh = tiny_pipe()
    assert fresh.refiner is None and fresh.model_sha256 == pipe.model_sha256
    return fresh


def test_errors_name_the_fix(tmp_path):
    p = tiny_pipe()
    with pytest.raises(ValueError, match=r"has no refiner.*avatarforge train .*refiner-512px.yaml"):
        p(seeds=[1], size=512)
    with pytest.raises(ValueError, match="part maps come with the large avatar: train a refiner"):
        p.render_layers(p.latents([1]), SIZE)
    p.attach_refiner(_refiner())
    with pytest.raises(ValueError, match=r"size must be one of 32, 64, 128, got 100"):
        p(seeds=[1], size=100)
    rgb = _refiner(channels=3)
    rgb.save_pretrained(tmp_path / "rgb")
    with pytest.raises(ValueError, match="3-channel images but this generator makes 4-channel"):
        tiny_pipe().attach_refiner(tmp_path / "rgb")
    no_parts = tiny_pipe()
    no_parts.attach_refiner(_refiner(parts=0))
    with pytest.raises(ValueError, match="part maps come from a part segmenter"):
        no_parts.render_layers(no_parts.latents([1]), 4 * SIZE)


def test_a_refiner_trained_for_another_resolution_is_refused(tmp_path):
    """A refiner run records its training size (data.size / data.scale): a 64-px refiner on a
    32-px generator is an error naming the fix, not a silent wrong-size upscale."""
    import yaml

    run = tmp_path / "00000-refiner-512"
    _refiner().save_pretrained(run)
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"size": 512, "scale": 8}}))
    with pytest.raises(ValueError, match="trained on 64-px inputs but this generator makes 32-px"):
        tiny_pipe().attach_refiner(run)


def test_a_part_segmenter_gives_the_part_maps(tmp_path):
    """With a segmenter attached, layers come from it (at the generator's size, upsampled),
    even when the refiner has no part head; its hash is recorded."""
    from avatarforge.models.parts import PartSegmenter, predict_part_map

    p = tiny_pipe()
    p.attach_refiner(_refiner(parts=0))
    torch.manual_seed(1)
    seg = PartSegmenter(channels=4, widths=[8, 16], out_scale=2).eval()
    seg.save_pretrained(tmp_path / "seg")
    p.attach_segmenter(tmp_path / "seg")
    assert p.has_layers and p.model_info()["segmenter"]["sha256"]
    latent = p.latents([3])
    images, parts = p.render_layers(latent, 4 * SIZE)
    from avatarforge.imageio import to_uint8

    small = to_uint8(p.render_float(latent))  # the generator's own output, as the segmenter sees it
    want = predict_part_map(p.segmenter, small, 4 * SIZE)
    np.testing.assert_array_equal(parts, np.where(images[..., 3] == 0, 0, want))
