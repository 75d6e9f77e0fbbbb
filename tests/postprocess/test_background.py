"""Background removal and compositing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from avatarforge.data.procedural import render_avatar
from avatarforge.postprocess import composite, estimate_key_color, remove_background

GREEN = (0, 177, 64)  # a chroma-key green


def on_color(rgba: np.ndarray, color) -> np.ndarray:
    a = rgba[..., 3:4].astype(float) / 255
    return np.rint(rgba[..., :3] * a + np.asarray(color, float) * (1 - a)).astype(np.uint8)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def scenes():
    """(true RGBA, composited RGB) for a few avatars on solid colours, 96 px."""
    out = []
    for seed, color in [(0, GREEN), (4, GREEN), (1, (188, 222, 255)), (5, (255, 255, 255))]:
        rgba = render_avatar(seed, 96)
        out.append((rgba, on_color(rgba, color), color))
    return out


def test_key_color_is_estimated_from_the_border(scenes):
    for _, rgb, color in scenes:
        assert np.abs(np.subtract(estimate_key_color(rgb), color)).max() <= 1


@pytest.mark.parametrize("method", ["auto", "grabcut"])
def test_removal_recovers_the_avatar(scenes, method):
    for truth, rgb, _ in scenes:
        out = remove_background(rgb, method=method)
        assert out.shape == (96, 96, 4) and out.dtype == np.uint8
        a, ta = out[..., 3], truth[..., 3]
        assert iou(a >= 128, ta >= 128) > 0.9
        assert (a[ta == 0] == 0).mean() > 0.99  # pure key colour -> alpha exactly 0
        soft = (a > 0) & (a < 255)
        assert soft.sum() > 20, "edges must be soft, not a hard cut-out"
        assert np.abs(a.astype(int) - ta).mean() < 6


def test_key_removes_border_connected_background_and_decontaminates_edges(scenes):
    truth, rgb, _color = scenes[0]
    out = remove_background(rgb, method="key")
    assert iou(out[..., 3] >= 128, truth[..., 3] >= 128) > 0.9
    # Edge pixels got their green share removed: visible colours are no greener than the
    # avatar's own colours near the edge.
    edge = (out[..., 3] > 40) & (out[..., 3] < 215)
    g_excess = out[..., 1].astype(int) - np.maximum(out[..., 0], out[..., 2]).astype(int)
    naive = rgb[..., 1].astype(int) - np.maximum(rgb[..., 0], rgb[..., 2]).astype(int)
    assert g_excess[edge].mean() < naive[edge].mean() - 20


def test_pure_key_background_becomes_fully_transparent():
    img = np.zeros((40, 40, 3), np.uint8)
    img[...] = GREEN
    img[10:30, 12:28] = (230, 80, 90)
    out = remove_background(img)
    assert (out[:8, :, 3] == 0).all() and (out[:8, :, :3] == 0).all()
    assert (out[12:28, 14:26, 3] == 255).all()
    assert np.array_equal(out[15, 15, :3], [230, 80, 90])


def test_connected_keeps_key_coloured_holes_inside_the_subject():
    img = np.full((40, 40, 3), 255, np.uint8)
    img[8:32, 8:32] = (40, 40, 160)
    img[16:24, 16:24] = 255  # a white patch *inside* the subject (e.g. a shirt)
    kept = remove_background(img, method="key")
    assert (kept[17:23, 17:23, 3] == 255).all()
    holed = remove_background(img, method="key", connected=False)
    assert (holed[17:23, 17:23, 3] == 0).all()


def test_real_alpha_is_kept(avatar):
    out = remove_background(avatar)
    assert np.array_equal(out, avatar)


def test_explicit_method_never_exceeds_the_input_alpha(avatar):
    out = remove_background(avatar, method="key", key_color=(0, 0, 0))
    assert (out[..., 3] <= avatar[..., 3]).all()


def test_non_uniform_border_key_needs_a_colour_but_grabcut_works():
    yy, xx = np.mgrid[:64, :64]
    img = np.stack([xx * 4, yy * 4, 255 - xx * 2], axis=2).clip(0, 255).astype(np.uint8)  # gradient
    img[20:44, 20:44] = (250, 250, 30)
    with pytest.raises(ValueError, match="not one colour"):
        remove_background(img, method="key")
    out = remove_background(img)
    assert out[32, 32, 3] > 200 and out[2, 2, 3] < 50


def test_feather_softens_the_edge():
    img = np.zeros((48, 48, 3), np.uint8)
    img[...] = GREEN
    img[12:36, 12:36] = (200, 40, 60)
    hard = remove_background(img, method="key")
    soft = remove_background(img, method="key", feather=3)
    count = lambda o: int(((o[..., 3] > 0) & (o[..., 3] < 255)).sum())  # noqa: E731
    assert count(soft) > count(hard)


def test_composite_on_colour_matches_manual_alpha_blend(avatar):
    out = composite(avatar, (20, 200, 90))
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - on_color(avatar, (20, 200, 90)).astype(int)).max() <= 1
    assert np.array_equal(composite(avatar, "#14c85a"), out)


def test_composite_on_image_scales_to_cover(avatar, tmp_path):
    bg = np.zeros((32, 48, 3), np.uint8)
    bg[:, :24] = (255, 0, 0)
    bg[:, 24:] = (0, 0, 255)
    out = composite(avatar, background=bg)
    assert out.shape == (64, 64, 3)
    clear = avatar[..., 3] == 0
    assert (out[clear & (np.arange(64) < 20)[None, :]] == (255, 0, 0)).all()
    assert (out[clear & (np.arange(64) > 44)[None, :]] == (0, 0, 255)).all()
    path = tmp_path / "bg.png"
    Image.fromarray(bg).save(path)
    assert np.array_equal(composite(avatar, background=path), out)
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"bad\.png: not_an_image"):
        composite(avatar, background=tmp_path / "bad.png")


def test_composite_of_rgb_is_a_copy(avatar_rgb):
    out = composite(avatar_rgb, (0, 0, 0))
    assert np.array_equal(out, avatar_rgb) and out is not avatar_rgb
