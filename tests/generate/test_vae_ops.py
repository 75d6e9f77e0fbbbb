"""The VAE API (avatarforge.generate.vae_ops) and the ``avatarforge vae`` CLI.

Most tests use a VAE trained for a few steps (the API's plumbing does not need a good
model). The attribute-arithmetic tests (slow) train a small VAE on procedural avatars long
enough to learn hair colour (~25 s) and check that adding the "-> blonde" direction makes
held-out avatars blonde, read from the pixels of the hair region and by
avatarforge.eval's avatar attribute classifier (trained on first use, ~1 min).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from avatarforge.config import build_train_config
from avatarforge.data import procedural as P
from avatarforge.data.builtin import build_builtin_dataset
from avatarforge.data.dataset import PackedDataset
from avatarforge.data.packed import LabelSchema, PackedWriter
from avatarforge.generate import vae_ops as V
from avatarforge.generate.vae_cli import add_vae_arguments, vae_main
from avatarforge.imageio import save_image, to_uint8
from avatarforge.train.loading import load_vae
from avatarforge.train.vae import VAETrainer
from tests.conftest import make_packed

# Outcome depends on trained weights / float rounding: rerun by `make test-numerics-fp32`.
pytestmark = pytest.mark.numerics

QUIET = ["log.progress=false", "perf.num_threads=1", "log.num_samples=4", "log.sample_every_kimg=0"]
TINY = ["model.kwargs.base_channels=8", "model.kwargs.max_channels=32", "model.z_dim=16"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _train(model: str, data: Path, runs: Path, *overrides: str) -> Path:
    cfg = build_train_config(
        cli={"model": {"name": model}, "data": {"path": str(data)}},
        overrides=[f"runs_dir={runs}", *QUIET, *TINY, *overrides],
    )
    return VAETrainer(cfg).fit()


@pytest.fixture(scope="module")
def avatars(tmp_path_factory) -> Path:
    """32 procedural RGBA avatars at 32 px."""
    return build_builtin_dataset(
        tmp_path_factory.mktemp("ops") / "avatars", 32, 32, workers=1, progress=False
    )


@pytest.fixture(scope="module")
def run(avatars, tmp_path_factory) -> Path:
    """An RGBA vae trained for 20 steps."""
    return _train("vae", avatars, tmp_path_factory.mktemp("runs"), "batch_size=16", "kimg=0.32")


@pytest.fixture(scope="module")
def crun(tmp_path_factory) -> Path:
    """An RGB cvae (label "color": red/green/blue) trained for a few steps."""
    data = make_packed(tmp_path_factory.mktemp("ops") / "blobs", n=16, size=32)
    return _train("cvae", data, tmp_path_factory.mktemp("runs"), "batch_size=8", "kimg=0.032")


@pytest.fixture(scope="module")
def vae(run):
    return load_vae(run)


@pytest.fixture(scope="module")
def images(avatars) -> np.ndarray:
    return PackedDataset(avatars).images_uint8(np.arange(4))  # (4, 32, 32, 4) uint8


# ----------------------------------------------------------------------------- encode / decode
def test_encode_accepts_uint8_lists_and_float_tensors(vae, images):
    mu = V.encode(vae, images)
    assert mu.shape == (4, 16) and mu.dtype == torch.float32
    # One (H, W, C) image. Only close, not equal: matrix-multiply kernels block the work
    # differently for different batch sizes, which changes the last bits.
    assert torch.allclose(V.encode(vae, images[0]), mu[:1], atol=1e-5)
    assert torch.equal(V.encode(vae, list(images)), mu)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1  # (B, C, H, W) in [-1, 1]
    assert torch.allclose(V.encode(vae, x), mu, atol=1e-6)
    mu2, logvar = V.encode(vae, images, return_logvar=True)
    assert torch.equal(mu2, mu) and logvar.shape == (4, 16)
    # RGB into an RGBA model: an opaque alpha channel is added.
    rgb = images[..., :3]
    opaque = np.concatenate([rgb, np.full((4, 32, 32, 1), 255, np.uint8)], -1)
    assert torch.equal(V.encode(vae, rgb), V.encode(vae, opaque))


def test_bad_inputs_are_rejected_with_clear_messages(vae, images):
    with pytest.raises(ValueError, match="resize them first"):
        V.encode(vae, np.zeros((1, 16, 16, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        V.encode(vae, images.astype(np.float32))
    with pytest.raises(ValueError, match="channels"):
        V.encode(vae, np.zeros((1, 32, 32, 2), np.uint8))
    with pytest.raises(ValueError, match=r"\(N, 16\)"):
        V.decode(vae, torch.zeros(2, 8))


def test_decode_reconstruct_and_sample(vae, images):
    mu = V.encode(vae, images)
    out = V.decode(vae, mu)
    assert out.shape == (4, 32, 32, 4) and out.dtype == np.uint8
    assert np.array_equal(V.reconstruct(vae, images), out)
    t = V.decode(vae, mu, as_uint8=False)
    assert t.shape == (4, 4, 32, 32) and np.array_equal(to_uint8(t), out)
    one = V.decode(vae, mu[0].numpy(), as_uint8=False)  # one latent, as NumPy
    assert one.shape == (1, 4, 32, 32) and torch.allclose(one[0], t[0], atol=1e-5)
    s1, s2 = V.sample(vae, 5, seed=3), V.sample(vae, 5, seed=3)
    assert s1.shape == (5, 32, 32, 4) and np.array_equal(s1, s2)
    assert not np.array_equal(s1, V.sample(vae, 5, seed=4))
    cold = V.sample(vae, 3, seed=3, temperature=0.0)  # z = 0 for every sample
    assert np.array_equal(cold[0], cold[1]) and np.array_equal(cold[0], V.decode(vae, torch.zeros(1, 16))[0])


# ----------------------------------------------------------------------------- interpolation
def test_slerp_and_lerp():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    t = torch.linspace(0, 1, 5)
    s = V.slerp(a, b, t)
    assert torch.allclose(s[0], a) and torch.allclose(s[-1], b, atol=1e-6)
    assert torch.allclose(s[2], (a + b) * (0.5**0.5), atol=1e-6)  # 45 degrees: sin(pi/4) / sin(pi/2)
    u = V.slerp(a, a * 3, t)  # parallel: falls back to a straight line
    assert torch.allclose(u, V.lerp(a, a * 3, t))
    assert torch.allclose(V.lerp(a, b, t)[1], 0.75 * a + 0.25 * b)
    # Equal norms stay on the sphere (a straight line would dip towards the origin).
    c = torch.tensor([0.0, 1.0])
    assert torch.allclose(V.slerp(a, c, t).norm(dim=1), torch.ones(5), atol=1e-6)


@pytest.mark.parametrize("mode", ["slerp", "lerp"])
def test_interpolation_endpoints_reproduce_the_decoded_inputs(vae, images, mode):
    frames = V.interpolate(vae, images[0], images[1], frames=7, mode=mode)
    assert frames.shape == (7, 32, 32, 4) and frames.dtype == np.uint8
    mu_a, mu_b = V.encode(vae, images[0]), V.encode(vae, images[1])
    assert np.array_equal(frames[0], V.decode(vae, mu_a)[0])
    assert np.array_equal(frames[-1], V.decode(vae, mu_b)[0])
    t = V.interpolate(vae, images[0], images[1], frames=7, mode=mode, as_uint8=False)
    assert torch.equal(t[0], V.decode(vae, mu_a, as_uint8=False)[0])  # exact in float too
    assert torch.equal(t[-1], V.decode(vae, mu_b, as_uint8=False)[0])
    assert not np.array_equal(frames[3], frames[0])
    with pytest.raises(ValueError, match="mode"):
        V.interpolate(vae, images[0], images[1], mode="cubic")


def test_conditional_interpolation_blends_labels_and_keeps_exact_endpoints(crun):
    cvae = load_vae(crun)
    img = np.zeros((2, 32, 32, 3), np.uint8)
    img[1, 8:24, 8:24, 1] = 255
    frames = V.interpolate(
        cvae, img[0], img[1], frames=5, labels_a={"color": "red"}, labels_b={"color": "green"}
    )
    mu_a = V.encode(cvae, img[:1], {"color": "red"})
    mu_b = V.encode(cvae, img[1:], {"color": "green"})
    assert np.array_equal(frames[0], V.decode(cvae, mu_a, {"color": "red"})[0])
    assert np.array_equal(frames[-1], V.decode(cvae, mu_b, {"color": "green"})[0])


# ----------------------------------------------------------------------------- labels
def test_label_forms_for_conditional_models(crun):
    cvae = load_vae(crun)
    assert cvae.label_names == ["color"] and cvae.label_values == [["red", "green", "blue"]]
    by_name = V.label_tensor(cvae, {"color": "blue"}, 3)
    assert by_name.tolist() == [[2], [2], [2]]
    assert V.label_tensor(cvae, {"color": 1}, 1).tolist() == [[1]]
    assert V.label_tensor(cvae, None, 2).tolist() == [[3], [3]]  # unknown
    assert V.label_tensor(cvae, [{"color": "red"}, {}], 2).tolist() == [[0], [3]]
    assert V.label_tensor(cvae, torch.tensor([[1], [2]]), 2).tolist() == [[1], [2]]
    with pytest.raises(ValueError, match="valid values: red, green, blue"):
        V.label_tensor(cvae, {"color": "purple"}, 1)
    with pytest.raises(ValueError, match="no label 'hair'"):
        V.label_tensor(cvae, {"hair": "red"}, 1)
    img = np.zeros((1, 32, 32, 3), np.uint8)
    red, green = (
        V.reconstruct(cvae, img, {"color": "red"}),
        V.relabel(cvae, img, {"color": "red"}, {"color": "green"}),
    )
    assert not np.array_equal(red, green)
    assert np.array_equal(V.relabel(cvae, img, {"color": "red"}, {"color": "green"}, strength=0.0), red)
    assert np.array_equal(V.decode(cvae, V.encode(cvae, img, {"color": "red"}), {"color": "green"}), green)


# ----------------------------------------------------------------------------- attribute vectors
def test_attribute_vector_is_the_difference_of_group_means(vae, avatars):
    ds = PackedDataset(avatars)
    col = ds.labels[:, ds.schema.index("accessory")]
    none, glasses = np.flatnonzero(col == 0), np.flatnonzero(col == 1)
    assert len(none) and len(glasses)
    d = V.attribute_vector(vae, avatars, "accessory", "none", "glasses")
    expected = V.encode(vae, ds.images_uint8(glasses)).mean(0) - V.encode(vae, ds.images_uint8(none)).mean(0)
    assert torch.allclose(d, expected, atol=1e-5)
    others = np.flatnonzero(col != 1)  # "*": every other known value
    d_any = V.attribute_vector(vae, avatars, "accessory", "*", "glasses")
    expected = V.encode(vae, ds.images_uint8(glasses)).mean(0) - V.encode(vae, ds.images_uint8(others)).mean(
        0
    )
    assert torch.allclose(d_any, expected, atol=1e-5)
    imgs = ds.images_uint8(none[:2])
    assert np.array_equal(V.apply_attribute(vae, imgs, d, strength=0.0), V.reconstruct(vae, imgs))
    assert not np.array_equal(V.apply_attribute(vae, imgs, d, strength=3.0), V.reconstruct(vae, imgs))
    with pytest.raises(ValueError, match="valid values"):
        V.attribute_vector(vae, avatars, "accessory", "none", "crown")
    with pytest.raises(ValueError, match="no label"):
        V.attribute_vector(vae, avatars, "hat", "none", "glasses")
    with pytest.raises(ValueError, match="continuous"):
        V.attribute_vector(vae, avatars, "smile", "none", "glasses")


SIZE = 32


def _on_white(rgba: np.ndarray) -> np.ndarray:
    a = rgba[..., 3:4] / 255.0
    return (rgba[..., :3] * a + 255 * (1 - a)).round().astype(np.uint8)


@pytest.fixture(scope="module")
def hair_vae(tmp_path_factory):
    """A small VAE trained on 600 avatars (no accessories, which can cover hair, on white)
    labelled by hair colour: 600 steps of 16 at 32 px, long enough to learn the colours."""
    root = tmp_path_factory.mktemp("hair")
    ds = root / "avatars"
    with PackedWriter(ds, size=SIZE, channels=3, schema=LabelSchema((P.SCHEMA["hair_color"],))) as w:
        for i in range(600):
            attrs = P.sample_attributes(i, accessory="none")
            w.add(_on_white(P.render(attrs, SIZE)), labels={"hair_color": attrs["hair_color"]})
    run = _train(
        "vae",
        ds,
        root / "runs",
        "batch_size=16",
        "kimg=9.6",
        "model.kwargs.base_channels=16",
        "model.kwargs.max_channels=64",
        "model.z_dim=32",
        "loss.kl_warmup_kimg=2",
        "log.checkpoint_every_kimg=0",
    )
    return load_vae(run), ds


@pytest.mark.slow  # ~25 s: rendering 600 avatars and 600 training steps
def test_adding_the_blonde_direction_makes_held_out_avatars_blonde(hair_vae):
    """Latent arithmetic: mu(image) + (mean mu(blonde) - mean mu(other colours)).

    The hair colour is read from pixels (the nearest named hair colour of the median pixel
    in the region where held-out avatars have hair, see tests/train/test_conditioning.py).
    """
    vae, ds = hair_vae
    held, region = [], np.zeros((SIZE, SIZE))
    for i in range(100_000, 100_300):  # seeds never used for training
        attrs = P.sample_attributes(i, accessory="none")
        img, parts = P.render(attrs, SIZE, return_parts=True)
        region += parts["hair"]
        if attrs["hair_color"] != "blonde" and len(held) < 80:
            held.append(_on_white(img))
    region = region / 300 > 0.6
    held = np.stack(held)
    blonde = np.array(P.HAIR_COLORS["blonde"], np.float64)

    def hair(images):
        return np.stack([np.median(im[region], axis=0) for im in images])  # (N, 3)

    def blonde_share(images):
        return np.mean([P.nearest_color(c, P.HAIR_COLORS) == "blonde" for c in hair(images)])

    def distance(images):
        return float(np.linalg.norm(hair(images) - blonde, axis=1).mean())

    direction = V.attribute_vector(vae, ds, "hair_color", "*", "blonde")
    plain = V.reconstruct(vae, held)
    edited = V.apply_attribute(vae, held, direction, strength=1.0)
    away = V.apply_attribute(vae, held, direction, strength=-1.0)
    # The model learned hair colour at all: reconstructions keep most held-out colours.
    kept = np.mean([P.nearest_color(a, P.HAIR_COLORS) == P.nearest_color(b, P.HAIR_COLORS)
                    for a, b in zip(hair(plain), hair(held))])  # fmt: skip
    print(
        f"hair colour kept by reconstruction {kept:.2f}; blonde share {blonde_share(plain):.2f} -> "
        f"{blonde_share(edited):.2f} (control, direction subtracted: {blonde_share(away):.2f}); mean RGB "
        f"distance to blonde {distance(plain):.0f} -> {distance(edited):.0f} (control {distance(away):.0f})"
    )
    assert kept >= 0.6
    assert blonde_share(edited) >= blonde_share(plain) + 0.15
    assert distance(edited) < 0.75 * distance(plain)
    assert distance(away) > distance(edited) and blonde_share(away) <= blonde_share(plain) + 0.02


@pytest.mark.slow  # the avatar attribute net trains on first use (~1 min on 2 cores)
def test_adding_the_blonde_direction_raises_the_classifiers_blonde_probability(hair_vae, tmp_path_factory):
    """The same edit judged by avatarforge.eval's avatar attribute classifier."""
    from avatarforge.eval.avatar_net import AvatarExtractor

    vae, ds = hair_vae
    held = np.stack(
        [
            _on_white(P.render(attrs, SIZE))
            for attrs in (P.sample_attributes(i, accessory="none") for i in range(100_000, 100_300))
            if attrs["hair_color"] != "blonde"
        ][:80]
    )
    ext = AvatarExtractor(cache_dir=tmp_path_factory.mktemp("avatarforge-cache"))
    col = ext.class_names("hair_color").index("blonde")

    def p_blonde(images: np.ndarray) -> float:
        return float(ext.attribute_predictions(images, include_continuous=False)["hair_color"][:, col].mean())

    direction = V.attribute_vector(vae, ds, "hair_color", "*", "blonde")
    plain = V.reconstruct(vae, held)
    edited = V.apply_attribute(vae, held, direction, strength=1.0)
    away = V.apply_attribute(vae, held, direction, strength=-1.0)
    p_held, p_plain, p_edit, p_away = p_blonde(held), p_blonde(plain), p_blonde(edited), p_blonde(away)
    print(
        f"classifier P(blonde): originals {p_held:.3f}, reconstructions {p_plain:.3f}, "
        f"+direction {p_edit:.3f}, -direction {p_away:.3f}"
    )
    assert p_edit > p_plain + 0.1 and p_edit > 2 * p_plain
    assert p_away <= p_plain + 0.02


# ----------------------------------------------------------------------------- the CLI
def _cli(*argv: str) -> int:
    parser = add_vae_arguments(argparse.ArgumentParser(prog="avatarforge vae"))
    return vae_main(parser.parse_args(list(argv)))


@pytest.fixture(scope="module")
def files(images, tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("files")
    paths = []
    for i, im in enumerate(images[:3]):
        paths.append(save_image(d / f"face{i}.png", im))
    big = np.array(Image.fromarray(images[0]).resize((96, 96), Image.Resampling.NEAREST))
    paths.append(save_image(d / "big.png", big[..., :3]))  # RGB and 96 px: resized, alpha added
    return paths


def test_cli_encode_decode_reconstruct(run, vae, files, images, tmp_path, capsys):
    lat = tmp_path / "latents.npy"
    assert (
        _cli("encode", str(run), *map(str, files), "--out", str(lat), "--logvar", str(tmp_path / "lv.npy"))
        == 0
    )
    z = np.load(lat)
    assert z.shape == (4, 16) and z.dtype == np.float32
    loaded = V.load_images(files, vae)  # what the CLI reads (validated, resized, RGBA)
    assert loaded.shape == (4, 32, 32, 4) and (loaded[3, ..., 3] == 255).all()
    assert np.abs(loaded[:3].astype(int) - images[:3]).max() <= 1  # same pictures, alpha round trip
    assert np.allclose(z, V.encode(vae, loaded).numpy(), atol=1e-6)
    assert np.load(tmp_path / "lv.npy").shape == (4, 16)

    assert _cli("decode", str(run), str(lat), "--out", str(tmp_path / "dec")) == 0
    decoded = sorted((tmp_path / "dec").glob("*.png"))
    assert [p.name for p in decoded] == ["000000.png", "000001.png", "000002.png", "000003.png"]
    first = np.asarray(Image.open(decoded[0]))
    assert first.shape == (32, 32, 4) and np.array_equal(first, V.decode(vae, z)[0])

    assert _cli("reconstruct", str(run), *map(str, files[:2]), "--out", str(tmp_path / "rec")) == 0
    assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == ["face0.png", "face1.png"]
    rec = np.asarray(Image.open(tmp_path / "rec" / "face1.png"))
    assert np.array_equal(rec, V.reconstruct(vae, loaded[:2])[1])
    assert str(tmp_path / "rec" / "face0.png") in capsys.readouterr().out


def test_cli_sample_interpolate_edit(run, avatars, files, tmp_path):
    assert _cli("sample", str(run), "--n", "6", "--seed", "1", "--out", str(tmp_path / "grid.png")) == 0
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (2 + 2 * 34, 2 + 3 * 34, 4)  # 3 per row, 2 px padding

    a, b = str(files[0]), str(files[1])
    assert _cli("interpolate", str(run), a, b, "--frames", "5", "--out", str(tmp_path / "strip.png")) == 0
    assert np.asarray(Image.open(tmp_path / "strip.png")).shape == (36, 2 + 5 * 34, 4)
    assert (
        _cli("interpolate", str(run), a, b, "--frames", "4", "--mode", "lerp", "--out", str(tmp_path / "fr"))
        == 0
    )
    assert len(list((tmp_path / "fr").glob("*.png"))) == 4
    assert _cli("interpolate", str(run), a, b, "--frames", "6", "--out", str(tmp_path / "x.gif")) == 0
    with Image.open(tmp_path / "x.gif") as gif:
        assert gif.n_frames == 6 and gif.size == (32, 32)

    out = tmp_path / "edit.png"
    argv = ["edit", str(run), a, "--data", str(avatars), "--attribute", "accessory", "--from", "none"]
    assert _cli(*argv, "--to", "glasses", "--strength", "1.0", "--out", str(out)) == 0
    assert np.asarray(Image.open(out)).shape == (32, 32, 4)


def test_cli_edit_on_a_cvae_relabels(crun, tmp_path):
    img = save_image(tmp_path / "in.png", np.zeros((32, 32, 3), np.uint8))
    out = tmp_path / "out.png"
    argv = ["edit", str(crun), str(img), "--data", "unused", "--attribute", "color"]
    assert _cli(*argv, "--from", "red", "--to", "green", "--out", str(out)) == 0
    cvae = load_vae(crun)
    expected = V.relabel(cvae, np.asarray(Image.open(img)), {"color": "red"}, {"color": "green"})
    assert np.array_equal(np.asarray(Image.open(out)), expected[0])


def test_cli_errors_exit_2(run, files, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert _cli("encode", str(run), str(bad), "--out", str(tmp_path / "z.npy")) == 2
    assert "bad.png" in capsys.readouterr().err
    assert _cli("sample", str(tmp_path / "nothing"), "--out", str(tmp_path / "g.png")) == 2
    assert "no checkpoint" in capsys.readouterr().err
    np.save(tmp_path / "wrong.npy", np.zeros((2, 5), np.float32))
    assert _cli("decode", str(run), str(tmp_path / "wrong.npy"), "--out", str(tmp_path / "d")) == 2
    assert "(N, 16)" in capsys.readouterr().err
    assert _cli("sample", str(run), "--label", "oops", "--out", str(tmp_path / "g.png")) == 2
    assert "name=value" in capsys.readouterr().err
