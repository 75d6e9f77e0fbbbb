"""``avatarforge style`` through ``style_main``: every transfer method, train --dry-run, user errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from avatarforge.data.procedural import render_avatar
from avatarforge.style.cli import build_parser, style_main
from avatarforge.style.features import RandomMultiScaleCNN
from avatarforge.style.neural import decoder_for
from tests.style.conftest import lab_distance, warm_texture


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    root = tmp_path_factory.mktemp("cli_images")
    content, style = render_avatar(4, 48), warm_texture(40, 40)
    Image.fromarray(content, "RGBA").save(root / "content.png")
    Image.fromarray(style, "RGB").save(root / "style.jpg", quality=95)
    return root / "content.png", root / "style.jpg", content, np.asarray(Image.open(root / "style.jpg"))


def _run(*argv: str) -> int:
    return style_main(build_parser().parse_args(list(argv)))


@pytest.mark.parametrize(
    "method,extra",
    [
        ("colour", []),
        ("color", ["--strength", "0.7"]),
        ("histogram", ["--space", "lab"]),
        ("gatys", ["--steps", "12", "--size", "48", "--quiet"]),
        ("adain", ["--steps", "12", "--size", "48", "--optimizer", "lbfgs", "--quiet"]),
    ],
)
def test_transfer_methods(images, tmp_path, method, extra, capsys):
    content_path, style_path, content, style = images
    out = tmp_path / "out.png"
    assert (
        _run("transfer", str(content_path), str(style_path), "--out", str(out), "--method", method, *extra)
        == 0
    )
    got = np.asarray(Image.open(out))
    assert got.shape == content.shape and np.array_equal(got[..., 3], content[..., 3])
    assert lab_distance(got, style) < 0.9 * lab_distance(content, style)
    assert "wrote" in capsys.readouterr().out


def test_transfer_with_a_decoder_and_jpeg_output(images, tmp_path, capsys):
    content_path, style_path, _, _ = images
    decoder = decoder_for(RandomMultiScaleCNN(seed=3), widths=(8, 8, 8))
    decoder.save_pretrained(tmp_path / "dec")
    out = tmp_path / "out.jpg"
    argv = ["transfer", str(content_path), str(style_path), "--out", str(out), "--method", "adain"]
    assert _run(*argv, "--decoder", str(tmp_path / "dec"), "--seed", "3", "--size", "48") == 0
    assert np.asarray(Image.open(out)).shape == (48, 48, 3)  # JPEG: composited on white
    assert "no transparency" in capsys.readouterr().err


def test_user_errors_exit_2(images, tmp_path, capsys):
    content_path, style_path, _, _ = images
    out = str(tmp_path / "o.png")
    assert _run("transfer", str(tmp_path / "missing.png"), str(style_path), "--out", out) == 2
    assert "content image" in capsys.readouterr().err
    assert _run("transfer", str(content_path), str(style_path), "--out", out, "--method", "gatys",
                "--vgg", str(tmp_path / "vgg19.pth")) == 2  # fmt: skip
    assert "VGG-19 weights file" in capsys.readouterr().err
    assert _run("transfer", str(content_path), str(style_path), "--out", out, "--strength", "3") == 2
    assert "strength" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["transfer", "a", "b", "--out", out, "--method", "sketch"])
    assert _run("train", "only_one_set") == 2
    assert "two data sets" in capsys.readouterr().err
    assert _run("apply", str(tmp_path / "no_run"), str(content_path), "--out", str(tmp_path)) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_train_dry_run_and_overrides(domain_sets, capsys):
    a, b = domain_sets
    argv = [
        "train",
        str(a),
        "--kimg",
        "3",
        str(b),
        "batch_size=8",
        "--loss.gan=hinge",
        "--model.ngf",
        "16",
        "--dry-run",
    ]
    assert _run(*argv) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["data"]["a"] == str(a) and cfg["data"]["b"] == str(b) and cfg["kimg"] == 3
    assert cfg["batch_size"] == 8 and cfg["loss"]["gan"] == "hinge" and cfg["model"]["ngf"] == 16
    assert cfg["loss"]["cycle"] == 10 and cfg["loss"]["identity"] == 0.5 and cfg["loss"]["pool_size"] == 50
    assert _run("train", str(a), str(b), "loss.cylce=3", "--dry-run") == 2
    assert "did you mean: loss.cycle" in capsys.readouterr().err
    assert _run("train", str(a), str(b), "loss.gan=wgan", "--dry-run") == 2
    assert "lsgan" in capsys.readouterr().err
