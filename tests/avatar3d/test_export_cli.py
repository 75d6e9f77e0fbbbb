"""``avatarforge export vrm``: the command, PNG + part-map input, and bad input (a clear
error, exit code 2, nothing written)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from avatarforge.avatar3d.source import Avatar3DError


def _write_avatar(tmp_path, size=128, seed=2):
    from avatarforge.avatar3d.source import load_avatar

    src = load_avatar(f"procedural:{seed}", size=size)
    img = tmp_path / "me.png"
    Image.fromarray(src.image).save(img)
    Image.fromarray(src.parts, "L").save(tmp_path / "me.parts.png")
    return img, src


def test_cli_writes_vrm0_from_a_png_and_its_part_map(tmp_path, capsys):
    from avatarforge.avatar3d.raster import load_scene
    from avatarforge.cli import main

    img, _ = _write_avatar(tmp_path)
    out = tmp_path / "out" / "me.vrm"
    rc = main(["export", "vrm", str(img), str(out), "--format", "vrm0", "--author", "Ada", "--name", "Me"])
    assert rc == 0 and out.is_file()
    assert "wrote" in capsys.readouterr().out
    scene = load_scene(out)
    assert scene.vrm0 and "blink" in scene.expressions
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp files left


def _bad(args, capsys, *, match):
    from avatarforge.cli import main

    with pytest.raises(SystemExit) as e:
        main(["export", "vrm", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert match in err, err


def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys):
    img, src = _write_avatar(tmp_path)
    out = tmp_path / "x.vrm"
    wide = tmp_path / "wide.png"
    Image.fromarray(np.zeros((128, 160, 4), np.uint8)).save(wide)
    _bad([str(wide), str(out)], capsys, match="square")
    tiny = tmp_path / "tiny.png"
    Image.fromarray(src.image[::4, ::4]).save(tiny)
    Image.fromarray(src.parts[::4, ::4], "L").save(tmp_path / "tiny.parts.png")
    _bad([str(tiny), str(out)], capsys, match="too small")
    rgb = tmp_path / "rgb.png"
    Image.fromarray(src.image[..., :3]).save(rgb)
    Image.fromarray(src.parts, "L").save(tmp_path / "rgb.parts.png")
    _bad([str(rgb), str(out)], capsys, match="no transparency")
    lone = tmp_path / "lone.png"
    Image.fromarray(src.image).save(lone)
    _bad([str(lone), str(out)], capsys, match="no part map")
    _bad(["procedural:1", str(img / "x.vrm")], capsys, match="cannot write")  # parent is a file
    _bad(["procedural:1", "/proc/avatar.vrm"], capsys, match="cannot write")
    _bad(["procedural:1", str(out), "--texture-size", "300"], capsys, match="power of two")
    _bad(["run-that-is-not-here:3", str(out)], capsys, match="RUN:SEED")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_faceless_avatar(tmp_path):
    from avatarforge.avatar3d.build import build_model
    from avatarforge.avatar3d.source import AvatarSource

    img = np.zeros((96, 96, 4), np.uint8)
    img[20:80, 20:80] = 200
    parts = np.zeros((96, 96), np.uint8)
    parts[20:80, 20:80] = 1
    with pytest.raises(Avatar3DError, match="no eyes"):
        build_model(AvatarSource(img, parts, "blob", "blob.png"))


def test_run_seed_and_quickstart_folders_go_through_the_rig_sources(tmp_path, monkeypatch):
    """RUN:SEED and a quickstart folder (its live avatar's seed) take their picture and part map
    from the run's refiner and part segmenter, the same source the live rig uses."""
    import json

    import avatarforge.animate.rig_sources as rs
    from avatarforge.avatar3d.source import load_avatar

    calls = []

    def fake_layers(spec, size, generator=None):
        calls.append((spec, size))
        return rs.procedural_layers(3, size)

    monkeypatch.setattr(rs, "layers_for", fake_layers)
    src = load_avatar("runs/some-run:7", size=128)
    assert calls[-1] == ("runs/some-run:7", 128) and src.image.shape == (128, 128, 4)
    folder = tmp_path / "qs"
    folder.mkdir()
    (folder / "quickstart.json").write_text(json.dumps({"generator_run": "runs/g", "avatar_seed": 5}))
    load_avatar(str(folder), size=128)
    assert calls[-1] == (f"{folder}:5", 128)


def test_an_image_without_a_part_map_gets_one_from_a_segmenter(tmp_path, monkeypatch):
    """--segmenter (or the segmenter a generated PNG's metadata names) predicts the part map of
    an image that has none: at the segmenter's 64-px input, mapped back to the image's size."""
    import torch
    from PIL import Image

    import avatarforge.models.parts as parts_mod
    from avatarforge.animate.rig_sources import procedural_layers
    from avatarforge.avatar3d.source import Avatar3DError, load_avatar
    from avatarforge.models.parts import PartSegmenter

    img, labels = procedural_layers(3, 256)
    path = tmp_path / "me.png"
    Image.fromarray(img).save(path)
    torch.manual_seed(0)
    PartSegmenter(widths=[8, 16]).save_pretrained(tmp_path / "seg")
    seen = {}

    def fake_predict(model, images, size=None, **kw):  # the renderer's own map stands in for a trained one
        seen["input"], seen["size"] = images.shape, size
        return labels[None].copy()

    monkeypatch.setattr(parts_mod, "predict_part_map", fake_predict)
    src = load_avatar(path, segmenter=tmp_path / "seg")
    assert seen == {"input": (1, 64, 64, 4), "size": 256}
    assert np.array_equal(src.parts, labels) and src.image.shape == (256, 256, 4)
    with pytest.raises(Avatar3DError, match="--segmenter"):
        load_avatar(path, segmenter=tmp_path / "nothing-here")
