"""The CLI front ends, through their ``*_main`` functions (as ``avatarforge`` calls them)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from avatarforge.generate.cli import (
    add_generate_arguments,
    add_interpolate_arguments,
    add_personalise_arguments,
    generate_main,
    interpolate_main,
    personalise_main,
)
from avatarforge.generate.metadata import read_metadata


def _run(add, main, argv):
    parser = argparse.ArgumentParser()
    add(parser)
    return main(parser.parse_args([str(a) for a in argv]))


def gen(argv):
    return _run(add_generate_arguments, generate_main, argv)


def edit(argv):
    return _run(add_personalise_arguments, personalise_main, argv)


def test_generate_seeds_grid_and_metadata(cgan_run, tmp_path, capsys):
    out = tmp_path / "g"
    assert (
        gen(
            [
                cgan_run,
                "--seeds",
                "1-3,9",
                "--attrs",
                "hair_color=pink",
                "--grid",
                "--truncation",
                "0.8",
                "--out",
                out,
            ]
        )
        == 0
    )
    names = sorted(p.name for p in out.iterdir())
    assert names == ["grid.png", "seed0001.png", "seed0002.png", "seed0003.png", "seed0009.png"]
    rec = read_metadata(out / "seed0009.png")
    assert rec["seed"] == 9 and rec["truncation"] == 0.8 and rec["attrs"] == {"hair_color": "pink"}
    assert "wrote 5 file(s)" in capsys.readouterr().out
    # --from-png regenerates the same file, byte for byte.
    assert gen(["--from-png", out / "seed0009.png", "--out", tmp_path / "again"]) == 0
    assert (tmp_path / "again" / "seed0009.png").read_bytes() == (out / "seed0009.png").read_bytes()
    assert "identical" in capsys.readouterr().out


def test_generate_n_webp_rgba(stylegan_ckpt, tmp_path):
    assert (
        gen(
            [
                stylegan_ckpt,
                "--n",
                "2",
                "--format",
                "webp",
                "--no-rgba",
                "--background",
                "black",
                "--out",
                tmp_path,
            ]
        )
        == 0
    )
    with Image.open(tmp_path / "seed0001.webp") as im:
        assert im.mode == "RGB" and im.size == (32, 32)


def test_generate_errors_name_the_valid_values(cgan_run, stylegan_ckpt, tmp_path):
    with pytest.raises(ValueError, match=r"valid values: black, brown, blonde"):
        gen([cgan_run, "--seeds", "1", "--attrs", "hair_color=teal", "--out", tmp_path])
    with pytest.raises(ValueError, match="conditioned on: hair_color"):
        gen([cgan_run, "--seeds", "1", "--attrs", "eyes=blue", "--out", tmp_path])
    with pytest.raises(ValueError, match="cannot parse seeds"):
        gen([cgan_run, "--seeds", "1-x", "--out", tmp_path])
    with pytest.raises(ValueError, match="--out is required"):
        gen([cgan_run, "--seeds", "1"])
    with pytest.raises(ValueError, match="--n N or --seeds"):
        gen([cgan_run, "--out", tmp_path])
    with pytest.raises(FileNotFoundError, match="no such run"):
        gen([tmp_path / "nope", "--seeds", "1", "--out", tmp_path])
    with pytest.raises(SystemExit):  # argparse: --n and --seeds are exclusive
        gen([cgan_run, "--n", "2", "--seeds", "1", "--out", tmp_path])
    gen([cgan_run, "--seeds", "4", "--out", tmp_path / "c"])
    with pytest.raises(ValueError, match="model mismatch"):
        gen(["--from-png", tmp_path / "c" / "seed0004.png", stylegan_ckpt, "--out", tmp_path / "d"])


def test_interpolate(stylegan_ckpt, tmp_path):
    from avatarforge.postprocess.export import load_animation

    out = tmp_path / "morph.webp"
    assert (
        _run(
            add_interpolate_arguments,
            interpolate_main,
            [stylegan_ckpt, "--seeds", "1,5,9", "--frames", "6", "--loop", "--out", out],
        )
        == 0
    )
    frames, _ = load_animation(out)
    assert len(frames) == 6 and frames[0].shape == (32, 32, 4)
    with pytest.raises(ValueError, match=r"\.mp4, \.gif"):
        _run(
            add_interpolate_arguments,
            interpolate_main,
            [stylegan_ckpt, "--seeds", "1,2", "--out", tmp_path / "x.avi"],
        )


def test_edit_commands(stylegan_ckpt, cgan_run, tmp_path, capsys):
    v = tmp_path / "v"
    assert (
        edit(
            [
                "variations",
                stylegan_ckpt,
                "--seed",
                "3",
                "--n",
                "3",
                "--strength",
                "0.2",
                "--grid",
                "--out",
                v,
            ]
        )
        == 0
    )
    assert sorted(p.name for p in v.iterdir()) == [
        "grid.png",
        "seed0003_var0000.png",
        "seed0003_var0001.png",
        "seed0003_var0002.png",
    ]
    m = tmp_path / "m"
    assert (
        edit(["mix", stylegan_ckpt, "--coarse", "1,2", "--fine", "3-5", "--crossover", "3", "--out", m]) == 0
    )
    assert len(list(m.glob("mix*.png"))) == 6
    d = tmp_path / "d.json"
    assert edit(["directions", stylegan_ckpt, "--method", "sefa", "--k", "3", "--no-name", "--out", d]) == 0
    assert [x["id"] for x in json.loads(d.read_text())["directions"]] == ["sefa0", "sefa1", "sefa2"]
    s = tmp_path / "s"
    src = v / "seed0003_var0001.png"
    assert (
        edit(
            [
                "slide",
                stylegan_ckpt,
                "--from-png",
                src,
                "--direction",
                "sefa1",
                "--directions",
                d,
                "--amounts=-2,0,2",
                "--out",
                s,
            ]
        )
        == 0
    )
    strip = sorted(s.glob("*.png"))
    assert len(strip) == 3
    with Image.open(strip[1]) as a, Image.open(src) as b:  # amount 0 = the source
        assert np.array_equal(np.asarray(a), np.asarray(b))
    s2 = tmp_path / "s2"
    assert (
        edit(["slide", cgan_run, "--seed", "2", "--attr", "hair_color=blonde", "--steps", "3", "--out", s2])
        == 0
    )
    assert read_metadata(s2 / "seed0002_slide0002.png")["attrs_to"] == {"hair_color": "blonde"}
    with pytest.raises(ValueError, match="valid values"):
        edit(["slide", cgan_run, "--seed", "2", "--attr", "hair_color=plaid", "--out", s2])
    inv = tmp_path / "inv"
    assert (
        edit(
            [
                "invert",
                stylegan_ckpt,
                v / "seed0003_var0000.png",
                "--steps",
                "10",
                "--candidates",
                "4",
                "--out",
                inv,
            ]
        )
        == 0
    )
    assert "PSNR" in capsys.readouterr().out
    rec = read_metadata(inv / "seed0003_var0000_inverted0000.png")
    assert rec["kind"] == "invert" and rec["psnr"] > 0 and "latent" in rec
    with pytest.raises(ValueError, match="label sliders need a conditional model"):
        edit(["directions", stylegan_ckpt, "--method", "labels", "--no-name", "--out", d])
