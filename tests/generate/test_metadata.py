"""Image metadata: every parameter and the model hash recorded; regenerating gives the same bytes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from avatarforge.generate import GeneratorPipeline, read_metadata, regenerate_from_png, style_mix, variations
from avatarforge.generate.metadata import save_with_metadata
from avatarforge.generate.regenerate import ModelMismatchError, latent_from_png


def _resave_bytes(tmp_path, path, image, record):
    return save_with_metadata(tmp_path / f"again{path.suffix}", image, record).read_bytes()


def test_png_round_trip_regenerates_the_same_bytes(cgan_pipe, tmp_path):
    out = cgan_pipe(seeds="3-6", truncation=0.7, attrs="hair_color=aqua")
    paths = out.save(tmp_path / "out")
    assert [p.name for p in paths] == ["seed0003.png", "seed0004.png", "seed0005.png", "seed0006.png"]
    rec = read_metadata(paths[2])
    assert rec["kind"] == "generate" and rec["seed"] == 5 and rec["truncation"] == 0.7
    assert rec["attrs"] == {"hair_color": "aqua"} and rec["batch_size"] == cgan_pipe.batch_size
    assert rec["model"]["sha256"] == cgan_pipe.model_sha256 and rec["model"]["family"] == "cgan"
    assert rec["noise_mode"] == "const"
    with Image.open(paths[2]) as im:
        assert np.array_equal(np.asarray(im), out.images[2])
        assert "seed=5" in im.text["Description"]
    # From the path recorded in the file, and from a pipeline object.
    image, rec2 = regenerate_from_png(paths[2])
    assert image.tobytes() == out.images[2].tobytes() and rec2 == rec
    image, _ = regenerate_from_png(paths[2], model=cgan_pipe)
    assert _resave_bytes(tmp_path, paths[2], image, rec) == paths[2].read_bytes()


def test_random_labels_and_codes_are_recorded(cgan_pipe, info_pipe, tmp_path):
    for pipe in (cgan_pipe, info_pipe):
        out = pipe(seeds="10-12")
        paths = out.save(tmp_path / pipe.family)
        for i, p in enumerate(paths):
            image, rec = regenerate_from_png(p, model=pipe)
            assert image.tobytes() == out.images[i].tobytes()
            assert ("attrs" in rec) == bool(pipe.label_dims) and ("codes" in rec) == pipe.has_codes


def test_webp_and_rgba_round_trip(sg_pipe, tmp_path):
    out = sg_pipe(seeds="1,2", truncation=0.6, noise_mode="random")
    paths = out.save(tmp_path, format="webp")
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            assert im.mode == "RGBA"
            assert np.array_equal(np.asarray(im), out.images[i])  # lossless, exact transparent RGB
        image, rec = regenerate_from_png(p, model=sg_pipe)
        assert image.tobytes() == out.images[i].tobytes() and rec["noise_mode"] == "random"
    flat = sg_pipe(seeds=[1], rgba=False, background="navy").save(tmp_path / "flat")[0]
    image, rec = regenerate_from_png(flat, model=sg_pipe)
    assert image.shape[-1] == 3 and rec["background"] == [0, 0, 128]


def test_edits_carry_their_latent(sg_pipe, tmp_path):
    var = variations(sg_pipe, sg_pipe(seeds=[5]).latent, n=3, strength=0.4, seed=2)
    mix = style_mix(sg_pipe, [1], [2, 3], crossover=3)
    for res, name in ((var, "var"), (mix, "mix")):
        for i, p in enumerate(res.save(tmp_path / name)):
            rec = read_metadata(p)
            assert "latent" in rec and rec["kind"] in ("variation", "mix")
            image, _ = regenerate_from_png(p, model=sg_pipe)
            assert image.tobytes() == res.images[i].tobytes()
    lat = latent_from_png(tmp_path / "var" / "variation0001.png", sg_pipe)
    assert np.array_equal(lat.ws.numpy(), var.latent[1].ws.numpy())


def test_other_model_is_refused(cgan_pipe, stylegan_ckpt, tmp_path):
    path = cgan_pipe(seeds=[1]).save(tmp_path)[0]
    with pytest.raises(ModelMismatchError, match=r"sha256 .* the model given .* has sha256"):
        regenerate_from_png(path, model=stylegan_ckpt)
    with pytest.raises(ModelMismatchError):
        latent_from_png(path, GeneratorPipeline.from_pretrained(stylegan_ckpt))


def test_plain_images_have_no_record(tmp_path):
    p = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(p)
    with pytest.raises(ValueError, match="no avatarforge generation metadata"):
        read_metadata(p)


def test_thread_count_is_part_of_the_recipe(sg_pipe, tmp_path):
    """StyleGAN's CPU rounding follows the thread count: it is recorded and restored."""
    import torch

    torch.set_num_threads(2)
    out = sg_pipe(seeds="1-3")
    paths = out.save(tmp_path)
    torch.set_num_threads(1)
    rec = read_metadata(paths[1])
    assert rec["threads"] == 2
    image, _ = regenerate_from_png(paths[1], model=sg_pipe)
    assert image.tobytes() == out.images[1].tobytes()
    assert torch.get_num_threads() == 1  # restored
