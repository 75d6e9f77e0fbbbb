"""GeneratorPipeline: seeds, reproducibility, attributes/codes, truncation, output channels."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from avatarforge.generate import GeneratorPipeline, Latent, parse_seeds
from avatarforge.generate.conditioning import UNKNOWN, model_labels
from avatarforge.generate.pipeline import format_seeds, state_sha256
from tests.generate.conftest import HAIR, SIZE

# Outcome depends on trained weights / float rounding: rerun by `make test-numerics-fp32`.
pytestmark = pytest.mark.numerics


# ----------------------------------------------------------------------------- seeds
@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("1-4", [1, 2, 3, 4]),
        ("1,5,9", [1, 5, 9]),
        ("3", [3]),
        (" 1-3, 10 ", [1, 2, 3, 10]),
        (7, [7]),
        ([2, 0], [2, 0]),
    ],
)
def test_parse_seeds(spec, want):
    assert parse_seeds(spec) == want


@pytest.mark.parametrize("spec", ["", "a", "1-a", "5-2", "-3", "1.5", True])
def test_parse_seeds_rejects(spec):
    with pytest.raises(ValueError):
        parse_seeds(spec)


def test_format_seeds_round_trip():
    seeds = [0, 1, 2, 3, 7, 9, 10]
    assert format_seeds(seeds) == "0-3,7,9-10"
    assert parse_seeds(format_seeds(seeds)) == seeds


# ----------------------------------------------------------------------------- reproducibility
@pytest.mark.parametrize("which", ["cgan", "stylegan", "infogan"])
def test_same_seed_same_bytes_twice_fresh_and_alone(which, cgan_run, stylegan_ckpt, infogan_ckpt):
    path = {"cgan": cgan_run, "stylegan": stylegan_ckpt, "infogan": infogan_ckpt}[which]
    pipe = GeneratorPipeline.from_pretrained(path)
    a = pipe(seeds="0-10", truncation=0.8)
    b = pipe(seeds="0-10", truncation=0.8)
    fresh = GeneratorPipeline.from_pretrained(path)(seeds="0-10", truncation=0.8)
    assert a.images.dtype == np.uint8 and a.images.shape[:3] == (11, SIZE, SIZE)
    assert a.images.tobytes() == b.images.tobytes() == fresh.images.tobytes()
    # Image 7 alone is the same as inside a batch of 11 (fixed-size padded chunks).
    alone = pipe(seeds=[7], truncation=0.8)
    assert alone.images[0].tobytes() == a.images[7].tobytes()
    # Different seeds give different avatars.
    assert len({im.tobytes() for im in a.images}) == 11


def test_stylegan_random_noise_is_per_seed(sg_pipe):
    a = sg_pipe(seeds="3,4", noise_mode="random")
    b = sg_pipe(seeds=[4], noise_mode="random")
    const = sg_pipe(seeds=[4])
    assert a.images[1].tobytes() == b.images[0].tobytes()
    assert a.images[1].tobytes() != const.images[0].tobytes()  # the noise is visible


def test_n_means_seeds_from_zero(cgan_pipe):
    out = cgan_pipe(n=3, attrs="hair_color=red")
    assert [it["seed"] for it in out.items] == [0, 1, 2]
    with pytest.raises(ValueError, match="seeds"):
        cgan_pipe()


# ----------------------------------------------------------------------------- labels and codes
def test_label_schema_comes_from_the_run(cgan_pipe):
    info = cgan_pipe.labels
    assert info.names == ("hair_color",)
    assert info.values == (tuple(HAIR),)
    assert info.source == "checkpoint label_schema"  # saved with the model, not read from the data set


def test_attrs_fix_labels_without_shifting_the_seed_stream(cgan_pipe):
    free = cgan_pipe(seeds="0-15")
    fixed = cgan_pipe(seeds="0-15", attrs={"hair_color": "pink"})
    assert {it["attrs"]["hair_color"] for it in fixed.items} == {"pink"}
    assert len({it["attrs"]["hair_color"] for it in free.items}) > 3  # random per seed
    assert torch.equal(free.latent.z, fixed.latent.z)
    # The same label by name, by index and via the string form give the same bytes.
    by_index = cgan_pipe(seeds="0-15", attrs={"hair_color": HAIR.index("pink")})
    by_text = cgan_pipe(seeds="0-15", attrs="hair_color=pink")
    assert fixed.images.tobytes() == by_index.images.tobytes() == by_text.images.tobytes()
    unknown = cgan_pipe(seeds=[0], attrs={"hair_color": UNKNOWN})
    assert unknown.latent.labels.tolist() == [[len(HAIR)]]


def test_attr_errors_list_valid_values(cgan_pipe):
    with pytest.raises(ValueError, match=r"valid values: black, brown, blonde, .*silver"):
        cgan_pipe(seeds=[1], attrs="hair_color=teal")
    with pytest.raises(ValueError, match=r"conditioned on: hair_color"):
        cgan_pipe(seeds=[1], attrs="hair=pink")
    with pytest.raises(ValueError, match="name=value"):
        cgan_pipe(seeds=[1], attrs="pink")
    with pytest.raises(ValueError, match="no latent codes"):
        cgan_pipe(seeds=[1], codes="c0=1")


def test_label_names_without_the_data_set(cgan_run, tmp_path):
    """A checkpoint copied away from its data set still works, by class index (checkpoints
    written before the label schema was saved with them)."""
    from avatarforge.train.checkpoint import find_checkpoint

    ckpt = tmp_path / "ckpt"
    shutil.copytree(find_checkpoint(cgan_run), ckpt)
    state = json.loads((ckpt / "training_state.json").read_text())
    state.pop("label_schema")
    state["data"]["path"] = str(tmp_path / "gone")
    state["config"]["data"]["path"] = str(tmp_path / "gone")
    (ckpt / "training_state.json").write_text(json.dumps(state))
    pipe = GeneratorPipeline.from_pretrained(ckpt)
    assert pipe.labels.names == ("hair_color",) and pipe.labels.values == ((),)
    assert pipe(seeds=[0], attrs="hair_color=5").items[0]["attrs"] == {"hair_color": "5"}
    with pytest.raises(ValueError, match=r"class indices 0\.\.10"):
        pipe(seeds=[0], attrs="hair_color=pink")
    # A label schema saved with the checkpoint wins.
    state["label_schema"] = [{"name": "hair_color", "kind": "categorical", "values": HAIR}]
    (ckpt / "training_state.json").write_text(json.dumps(state))
    assert model_labels(pipe.G, ckpt, ckpt).values == (tuple(HAIR),)


def test_saved_label_schema_keeps_names_after_the_data_set_moves(cgan_run, tmp_path):
    from avatarforge.train.checkpoint import find_checkpoint

    ckpt = tmp_path / "ckpt"
    shutil.copytree(find_checkpoint(cgan_run), ckpt)
    state = json.loads((ckpt / "training_state.json").read_text())
    assert state["label_schema"][0]["values"] == HAIR
    for d in (state["data"], state["config"]["data"]):
        d["path"] = str(tmp_path / "gone")
    (ckpt / "training_state.json").write_text(json.dumps(state))
    pipe = GeneratorPipeline.from_pretrained(ckpt)
    assert pipe(seeds=[0], attrs="hair_color=pink").items[0]["attrs"] == {"hair_color": "pink"}


def test_infogan_codes(info_pipe):
    out = info_pipe(seeds="0-5", codes="c0=0.75,cat0=2")
    for it in out.items:
        assert it["codes"]["c0"] == 0.75 and it["codes"]["cat0"] == 2
    assert len({it["codes"]["c1"] for it in out.items}) == 6  # unfixed codes stay random
    free = info_pipe(seeds="0-5")
    assert torch.equal(free.latent.z, out.latent.z)
    with pytest.raises(ValueError, match=r"cat0, c0, c1"):
        info_pipe(seeds=[0], codes="c7=1")
    with pytest.raises(ValueError, match=r"0\.\.2"):
        info_pipe(seeds=[0], codes="cat0=3")


# ----------------------------------------------------------------------------- truncation
def test_truncation_zero_gives_the_average_image(sg_pipe, cgan_pipe):
    out = sg_pipe(seeds="0-5", truncation=0.0)
    assert len({im.tobytes() for im in out.images}) == 1
    w_avg = sg_pipe.G.mapping.w_avg.expand(1, sg_pipe.num_ws, -1).clone()
    avg = sg_pipe.render(Latent(z=torch.zeros(1, sg_pipe.z_dim), ws=w_avg))
    assert out.images[0].tobytes() == avg[0].tobytes()
    c = cgan_pipe(seeds="0-5", truncation=0.0, attrs="hair_color=blue")
    assert len({im.tobytes() for im in c.images}) == 1
    assert len({im.tobytes() for im in sg_pipe(seeds="0-5", truncation=0.5).images}) == 6


# ----------------------------------------------------------------------------- output, identity
def test_output_channels(sg_pipe, cgan_pipe):
    rgba = sg_pipe(seeds=[1])
    assert rgba.images.shape[-1] == 4
    flat = sg_pipe(seeds=[1], rgba=False, background="#000000")
    assert flat.images.shape[-1] == 3
    a = rgba.images[0, ..., 3:4].astype(float) / 255
    expect = np.round(rgba.images[0, ..., :3] * a).astype(int)
    assert np.abs(flat.images[0].astype(int) - expect).max() <= 1
    opaque = cgan_pipe(seeds=[1], rgba=True)
    assert opaque.images.shape[-1] == 4 and (opaque.images[..., 3] == 255).all()


def test_model_hash_is_the_file_hash(stylegan_ckpt, sg_pipe):
    import hashlib

    digest = hashlib.sha256((stylegan_ckpt / "g_ema_model.safetensors").read_bytes()).hexdigest()
    assert sg_pipe.model_sha256 == digest
    assert state_sha256(sg_pipe.G) == digest  # an in-memory model has the same identity
    assert GeneratorPipeline(sg_pipe.G).model_sha256 == digest


def test_to_device_returns_the_pipeline(stylegan_ckpt):
    pipe = GeneratorPipeline.from_pretrained(stylegan_ckpt)
    assert pipe.to("cpu") is pipe
    assert pipe.family == "stylegan" and pipe.is_stylegan and pipe.num_ws == 8


def test_latent_json_round_trip(sg_pipe):
    lat = sg_pipe(seeds="2,3").latent
    back = Latent.from_json(json.loads(json.dumps(lat.to_json())))
    for k in ("z", "ws", "noise_seeds"):
        assert torch.equal(getattr(lat, k), getattr(back, k))
    assert back.truncation == lat.truncation


def test_package_names_are_the_functions():
    """``invert``, ``interpolate``, ``variations`` are submodules too; the package keeps the functions."""
    import importlib

    import avatarforge.generate as G

    for name in ("invert", "interpolate", "variations"):
        importlib.import_module(f"avatarforge.generate.{name}")
        assert callable(getattr(G, name)), name
    assert all(hasattr(G, name) for name in G.__all__)


@pytest.mark.parametrize("family", ["dcgan", "cgan", "infogan", "stylegan", "vae", "cvae"])
def test_rgba_output_has_clean_alpha_for_every_family(family):
    """Every family's RGBA output is handed out with its alpha cleaned, without the user adding
    an op: exactly clean_alpha of the raw render (whose own guarantees tests/test_imageio.py
    checks), and with no stray alpha pixel and an opaque interior (the stream-ready measures)."""
    from avatarforge.eval.alpha import opaque_interior_fraction, stray_alpha_pixels
    from avatarforge.imageio import clean_alpha
    from avatarforge.models import create_model

    torch.manual_seed(0)
    common = {"resolution": 32, "channels": 4, "z_dim": 16}
    is_vae = family in ("vae", "cvae")
    if family == "stylegan":
        G = create_model(family, "generator", **common, w_dim=16, channel_base=256, channel_max=32)
    else:
        labels = {"label_dims": [3]} if family in ("cgan", "cvae") else {}
        G = create_model(family, "vae" if is_vae else "generator", **common, base_channels=8, **labels)
    pipe = GeneratorPipeline(G.decoder if is_vae else G, vae=G if is_vae else None)
    out = pipe(seeds="0-15").images
    pipe.clean_alpha = False
    raw = pipe(seeds="0-15").images
    assert out.shape == raw.shape == (16, 32, 32, 4)
    assert np.array_equal(out, clean_alpha(raw))
    assert (stray_alpha_pixels(out) == 0).all()
    interior = opaque_interior_fraction(out)
    assert np.isnan(interior).all() or np.nanmin(interior) == 1.0


def test_clean_alpha_on_a_speckled_generator(sg_pipe):
    """The fixture StyleGAN (untrained, visible noise) draws specks and a see-through body;
    the pipeline hands out none of them."""
    from avatarforge.eval.alpha import opaque_interior_fraction, stray_alpha_pixels

    sg_pipe.clean_alpha = False
    try:
        raw = sg_pipe(seeds="0-15").images
    finally:
        sg_pipe.clean_alpha = True
    out = sg_pipe(seeds="0-15").images
    print("raw strays", stray_alpha_pixels(raw), "interior", np.round(opaque_interior_fraction(raw), 2))
    assert stray_alpha_pixels(raw).sum() > 0 or (opaque_interior_fraction(raw) < 0.99).any()
    assert (stray_alpha_pixels(out) == 0).all()
    assert np.nanmin(opaque_interior_fraction(out)) == 1.0
