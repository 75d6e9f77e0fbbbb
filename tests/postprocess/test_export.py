"""Sprite sheets with atlases, APNG / WebP / GIF animations."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from avatarforge.data.procedural import render_expressions
from avatarforge.postprocess import (
    load_animation,
    load_sprite_sheet,
    save_animation,
    save_sprite_sheet,
    sprite_sheet,
)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """Five distinct talking frames (RGBA, soft alpha edges)."""
    return list(render_expressions(2, [{"mouth_open": m} for m in (0.0, 0.25, 0.5, 0.75, 1.0)], 48))


def test_sprite_sheet_round_trip(tmp_path, frames):
    mixed = [*frames, frames[0][:40, :30, :3].copy()]  # a smaller RGB frame too
    names = [f"talk_{i}" for i in range(len(mixed))]
    png, js = save_sprite_sheet(tmp_path / "sheet.png", mixed, columns=4, padding=2, names=names)
    atlas = json.loads(js.read_text())
    assert atlas["meta"]["image"] == "sheet.png" and atlas["meta"]["columns"] == 4
    sheet = np.asarray(Image.open(png))
    assert sheet.shape == (atlas["meta"]["size"]["h"], atlas["meta"]["size"]["w"], 4)
    assert sheet.shape == (2 * 48 + 3 * 2, 4 * 48 + 5 * 2, 4)
    back = load_sprite_sheet(js)
    assert list(back) == names
    for name, f in zip(names[:-1], frames):
        assert np.array_equal(back[name], f)
    small = back[names[-1]]
    assert small.shape == (40, 30, 4)
    assert np.array_equal(small[..., :3], mixed[-1]) and (small[..., 3] == 255).all()
    # Padding and unused cells are transparent.
    assert (sheet[:2, :, 3] == 0).all() and (sheet[52:, 102:, 3] == 0).all()


def test_sprite_sheet_checks_its_arguments(frames):
    with pytest.raises(ValueError, match="unique"):
        sprite_sheet(frames[:2], names=["a", "a"])
    with pytest.raises(ValueError, match="no frames"):
        sprite_sheet([])
    with pytest.raises(ValueError, match="2 names for 3"):
        sprite_sheet(frames[:3], names=["a", "b"])
    sheet, atlas = sprite_sheet(frames)  # default near-square grid
    assert atlas["meta"]["columns"] == 3 and sheet.shape == (96, 144, 4)


def test_apng_round_trip_keeps_frames_and_alpha(tmp_path, frames):
    path = save_animation(tmp_path / "talk.png", frames, fps=10)
    with Image.open(path) as im:
        assert im.format == "PNG" and getattr(im, "n_frames", 1) == len(frames)
    back, durations = load_animation(path)
    assert len(back) == len(frames) and durations == [100] * len(frames)
    for b, f in zip(back, frames):
        assert np.array_equal(b, f)  # lossless, 8-bit alpha, no accumulation between frames


def test_webp_keeps_soft_alpha(tmp_path, frames):
    back, _ = load_animation(save_animation(tmp_path / "talk.webp", frames, fps=12))
    assert len(back) == len(frames)
    soft = (back[0][..., 3] > 0) & (back[0][..., 3] < 255)
    assert soft.any() and np.array_equal(back[2][..., 3], frames[2][..., 3])


def test_gif_alpha_is_binary(tmp_path, frames):
    back, _ = load_animation(save_animation(tmp_path / "talk.gif", frames, fps=12, alpha_threshold=128))
    assert len(back) == len(frames)
    for b, f in zip(back, frames):
        assert set(np.unique(b[..., 3])) <= {0, 255}
        assert np.array_equal(b[..., 3] == 255, f[..., 3] >= 128)
        vis = b[..., 3] == 255
        assert np.abs(b[vis, :3].astype(int) - f[vis, :3]).mean() < 6  # palette error is small


def test_animation_checks_its_arguments(tmp_path, frames):
    with pytest.raises(ValueError, match="same size"):
        save_animation(tmp_path / "a.png", [frames[0], frames[1][:40]])
    with pytest.raises(ValueError, match="format"):
        save_animation(tmp_path / "a.mp4", frames)
    with pytest.raises(ValueError, match="fps"):
        save_animation(tmp_path / "a.png", frames, fps=0)
    assert not list(tmp_path.iterdir())  # nothing half-written
