"""``avatarforge animate``: render an APNG/WebP/video from a run or an ONNX file, export ONNX, errors."""

from __future__ import annotations

import wave

import cv2
import numpy as np
import pytest
from PIL import Image

from avatarforge.animate.cli import animate_main, build_parser
from avatarforge.data.procedural import render_avatar
from avatarforge.postprocess.export import load_animation


def _run(*argv: str) -> int:
    return animate_main(build_parser().parse_args(list(argv)))


def _speech(path, seconds=1.0, rate=8000):
    t = np.arange(int(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * 200 * t) * ((t % 0.5) < 0.25)  # 4 bursts of 0.25 s
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((x * 32767).astype("<i2").tobytes())
    return path


def test_render_apng_with_alpha_from_an_image_and_audio(trained, tmp_path, capsys):
    _, run = trained
    avatar = tmp_path / "me.png"
    Image.fromarray(render_avatar(1234, 64), "RGBA").save(avatar)
    out = tmp_path / "out" / "avatar.png"
    code = _run(
        str(run),
        "--avatar",
        str(avatar),
        "--audio",
        str(_speech(tmp_path / "s.wav")),
        "--out",
        str(out),
        "--fps",
        "20",
    )
    assert code == 0, capsys.readouterr().err
    frames, durations = load_animation(out)
    assert len(frames) == 20 and set(durations) == {50}  # the audio's length at 20 fps
    assert frames[0].shape == (32, 32, 4)  # the animator's resolution
    alpha = np.stack(frames)[..., 3]
    assert (alpha == 0).mean() > 0.2 and (alpha == 255).mean() > 0.2  # transparent background kept
    assert 0 < ((alpha > 0) & (alpha < 255)).mean() < 0.2  # and soft edges
    assert len({f.tobytes() for f in frames}) > 5  # it moves
    assert "wrote" in capsys.readouterr().out


def test_render_seed_script_webp_size_and_video(trained, tmp_path, capsys):
    _, run = trained
    webp = tmp_path / "a.webp"
    assert (
        _run(
            str(run),
            "--avatar",
            "77",
            "--script",
            "blink,talk,look",
            "--seconds",
            "0.5",
            "--size",
            "48",
            "--out",
            str(webp),
        )
        == 0
    )
    frames, _ = load_animation(webp)
    assert len(frames) == 15 and frames[0].shape == (48, 48, 4) and frames[0][0, 0, 3] == 0
    video = tmp_path / "a.webm"
    code = _run(
        str(run), "--avatar", "77", "--seconds", "0.4", "--background", "#00ff00", "--out", str(video)
    )
    assert code == 0
    assert "no alpha channel" in capsys.readouterr().err
    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape[:2] == (32, 32)
    assert frame[0, 0, 1] > 200 and frame[0, 0, 0] < 60  # BGR: the corner is the green background


def test_export_onnx_then_render_with_onnxruntime(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    _, run = trained
    onnx_path = tmp_path / "anim.onnx"
    assert _run("export-onnx", str(run), str(onnx_path)) == 0
    assert (tmp_path / "anim.prepare.onnx").is_file()
    gif = tmp_path / "a.gif"
    assert _run(str(onnx_path), "--avatar", "5", "--seconds", "0.3", "--out", str(gif)) == 0
    frames, _ = load_animation(gif)
    assert len(frames) == 9 and set(np.unique(frames[0][..., 3])) <= {0, 255}  # GIF: binary alpha


def test_user_errors_exit_2(trained, tmp_path, capsys):
    _, run = trained
    assert _run(str(run), "--avatar", "5", "--out", str(tmp_path / "a.bmp")) == 2
    assert "unknown format" in capsys.readouterr().err
    assert _run(str(run), "--avatar", "not-a-file.png", "--out", str(tmp_path / "a.png")) == 2
    assert "neither an image file nor an integer seed" in capsys.readouterr().err
    assert _run(str(tmp_path / "nope"), "--avatar", "5", "--out", str(tmp_path / "a.png")) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert _run(str(run), "--avatar", "5", "--script", "dance", "--out", str(tmp_path / "a.png")) == 2
    assert "unknown script action" in capsys.readouterr().err
