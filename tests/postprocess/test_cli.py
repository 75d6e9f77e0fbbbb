"""``avatarforge post`` through post_main (the lead wires it into avatarforge.cli)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from avatarforge.data.procedural import render_expressions
from avatarforge.postprocess import apply_chain, load_animation, load_sprite_sheet
from avatarforge.postprocess.cli import add_post_arguments, post_main


def run(*argv: str) -> int:
    parser = add_post_arguments(argparse.ArgumentParser(prog="avatarforge post"))
    return post_main(parser.parse_args(list(argv)))


@pytest.fixture
def frames_dir(tmp_path):
    """A folder of 3 RGBA frames named so that natural order != plain string order."""
    src = tmp_path / "in"
    src.mkdir()
    frames = render_expressions(1, [{"mouth_open": m} for m in (0.0, 0.5, 1.0)], 32)
    for i, f in zip((1, 2, 10), frames):
        Image.fromarray(f).save(src / f"frame_{i}.png")
    (src / "notes.txt").write_text("not an image")
    return src, list(frames)


def test_folder_to_folder_with_sheet_and_animations(frames_dir, tmp_path, capsys):
    src, frames = frames_dir
    out = tmp_path / "out"
    ops = "saturation=1.3,sharpen=0.4"
    assert (
        run(str(src), str(out), "--ops", ops, "--sprite-sheet", "--apng", "8", "--gif", "8", "--quiet") == 0
    )
    for i, f in zip((1, 2, 10), frames):
        got = np.asarray(Image.open(out / f"frame_{i}.png"))
        assert np.array_equal(got, apply_chain(f, ops))
    sheet = load_sprite_sheet(out / "sprite_sheet.json")
    assert list(sheet) == ["frame_1", "frame_2", "frame_10"]  # natural order
    assert np.array_equal(sheet["frame_10"], apply_chain(frames[2], ops))
    anim, durations = load_animation(out / "animation.png")
    assert len(anim) == 3 and durations == [125] * 3 and anim[0].shape == (32, 32, 4)
    assert len(load_animation(out / "animation.gif")[0]) == 3
    assert "processed 3 image(s)" in capsys.readouterr().out


def test_single_file_to_file_and_upscale(frames_dir, tmp_path):
    src, _frames = frames_dir
    target = tmp_path / "big.webp"
    assert run(str(src / "frame_1.png"), str(target), "--ops", "upscale=2") == 0
    got = np.asarray(Image.open(target))
    assert got.shape == (64, 64, 4)
    # Existing outputs are protected unless --overwrite.
    with pytest.raises(FileExistsError, match="--overwrite"):
        run(str(src / "frame_1.png"), str(target), "--ops", "upscale=2")
    assert run(str(src / "frame_1.png"), str(target), "--ops", "", "--overwrite", "--quiet") == 0
    assert np.asarray(Image.open(target)).shape == (32, 32, 4)


def test_jpeg_output_is_flattened_not_stripped(frames_dir, tmp_path):
    src, _ = frames_dir
    assert run(str(src / "frame_1.png"), str(tmp_path / "o.jpg"), "--ops", "", "--quiet") == 0
    corner = np.asarray(Image.open(tmp_path / "o.jpg"))[0, 0]
    assert corner.min() > 240  # transparent corner -> white, not black


def test_bad_inputs_are_skipped_with_exit_code_1(frames_dir, tmp_path, capsys):
    src, _ = frames_dir
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    assert run(str(src), str(tmp_path / "out"), "--quiet") == 1
    err = capsys.readouterr().err
    assert "broken.png" in err
    assert len(list((tmp_path / "out").glob("*.png"))) == 3


def test_user_errors(frames_dir, tmp_path):
    src, _ = frames_dir
    with pytest.raises(ValueError, match="did you mean 'saturation'"):
        run(str(src), str(tmp_path / "o"), "--ops", "satration=2")
    with pytest.raises(ValueError, match="at least one input and an output"):
        run(str(src))
    with pytest.raises(FileNotFoundError, match="input not found"):
        run(str(tmp_path / "missing.png"), str(tmp_path / "o"))
    with pytest.raises(ValueError, match="3 inputs"):
        run(str(src), str(tmp_path / "one.png"))
    with pytest.raises(ValueError, match="--apng FPS"):
        run(str(src), str(tmp_path / "o3"), "--apng", "0")
    assert not (tmp_path / "o3").exists()  # rejected before any work
    odd = tmp_path / "odd.png"
    Image.fromarray(np.zeros((40, 40, 4), np.uint8)).save(odd)
    with pytest.raises(ValueError, match="same size"):
        run(str(src), str(odd), str(tmp_path / "o2"), "--ops", "", "--apng", "5", "--quiet")


def test_list_ops(capsys):
    assert run("--list-ops") == 0
    out = capsys.readouterr().out
    assert "saturation(factor=1)" in out and "upscale(factor=2" in out


def test_train_sr_flag(tmp_path, monkeypatch, capsys):
    import avatarforge.postprocess.resample as resample

    calls = {}

    def fake_train(out_dir, **kw):  # the real training is tested in test_resample
        calls.update(kw, out_dir=out_dir)
        model = resample.SRNet(scale=kw["scale"], features=4)
        model.save_pretrained(out_dir)
        return resample.SRTrainResult(model, [0.1], 0.1, 0.05, 0.08, 1.0, out_dir)

    monkeypatch.setattr(resample, "train_sr", fake_train)
    assert run("--train-sr", str(tmp_path / "sr"), "--sr-steps", "7", "--sr-scale", "2", "--quiet") == 0
    assert calls["steps"] == 7 and calls["scale"] == 2
    assert json.loads((tmp_path / "sr" / "config.json").read_text())["model"] == "espcn"
    with pytest.raises(FileExistsError):
        run("--train-sr", str(tmp_path / "sr"))
    # The saved model drives every 'upscale' of a chain through --sr-model.
    img = tmp_path / "a.png"
    Image.fromarray(render_expressions(1, [{}], 32)[0]).save(img)
    assert (
        run(
            str(img),
            str(tmp_path / "b.png"),
            "--ops",
            "upscale=2",
            "--sr-model",
            str(tmp_path / "sr"),
            "--quiet",
        )
        == 0
    )
    assert np.asarray(Image.open(tmp_path / "b.png")).shape == (64, 64, 4)


def test_output_side_limit_is_checked_before_any_work(frames_dir, tmp_path):
    src, _ = frames_dir  # three 32 px frames
    out = tmp_path / "o"
    with pytest.raises(ValueError) as e:
        run(str(src), str(out), "--ops", "sharpen,upscale=4", "--max-output-side", "100", "--quiet")
    msg = str(e.value)
    assert msg.startswith("--ops: ") and "frame_1.png" in msg
    assert "128x128" in msg and "at most 100 px per side (--max-output-side)" in msg
    assert not out.exists()  # refused for every input before the first was processed
    assert run(str(src), str(out), "--ops", "upscale=3", "--max-output-side", "96", "--quiet") == 0
    with pytest.raises(ValueError, match="--max-output-side must be >= 1"):
        run(str(src), str(tmp_path / "o2"), "--max-output-side", "0")


def test_default_output_side_limit_stops_runaway_upscales(frames_dir, tmp_path):
    from avatarforge.postprocess.cli import DEFAULT_MAX_OUTPUT_SIDE

    src, _ = frames_dir
    # 32 px x 4^4 = 8192 is allowed; one more x2 would be 16384 px (4 GiB of float pixels)
    ops = "upscale=4,upscale=4,upscale=4,upscale=4,upscale=2"
    with pytest.raises(ValueError, match=f"at most {DEFAULT_MAX_OUTPUT_SIDE} px per side"):
        run(str(src / "frame_1.png"), str(tmp_path / "big.png"), "--ops", ops)


def test_generate_grid_and_earlier_outputs_are_not_frames(frames_dir, tmp_path, capsys):
    """'post gen/ OUT --sprite-sheet --webp 4' on a 'generate --grid' folder used to take grid.png
    as a frame, write the sheet, then fail on the frame sizes."""
    src, _ = frames_dir
    Image.fromarray(np.zeros((80, 110, 4), np.uint8)).save(src / "grid.png")  # as generate --grid writes
    Image.fromarray(np.zeros((40, 40, 4), np.uint8)).save(src / "sprite_sheet.png")  # an earlier run's
    out = tmp_path / "out"
    assert run(str(src), str(out), "--sprite-sheet", "--webp", "4", "--quiet") == 0
    err = capsys.readouterr().err
    assert "grid.png" in err and "generate --grid" in err and "sprite_sheet.png" in err
    assert list(load_sprite_sheet(out / "sprite_sheet.json")) == ["frame_1", "frame_2", "frame_10"]
    assert len(load_animation(out / "animation.webp")[0]) == 3


def test_mixed_frame_sizes_fail_before_any_sheet_or_animation(frames_dir, tmp_path):
    src, _ = frames_dir
    Image.fromarray(np.zeros((48, 48, 4), np.uint8)).save(src / "frame_11.png")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="frame_11 is not"):
        run(str(src), str(out), "--sprite-sheet", "--webp", "4", "--quiet")
    assert not (out / "sprite_sheet.png").exists() and not (out / "animation.webp").exists()
