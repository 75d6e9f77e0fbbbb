"""The live rig (avatarforge.animate.rig) on renderer avatars, whose part maps are exact.

Every live control must change the picture where it should (locality) and about as much as
the renderer changes its own avatar for the same control (size of effect): the rig is what
a generated avatar is animated with, and the renderer is the reference.
"""

from __future__ import annotations

import numpy as np
import pytest

from avatarforge.animate.rig import AvatarRig, RigError, check_live_controls
from avatarforge.data.procedural import render, sample_attributes
from avatarforge.data.procedural.schema import LIVE_CONTROLS, NEUTRAL_EXPRESSION, PART_IDS, PART_NAMES

SIZE = 256


def _labels(parts: dict[str, np.ndarray]) -> np.ndarray:
    lab = np.zeros(next(iter(parts.values())).shape, np.uint8)
    for i, name in enumerate(PART_NAMES):
        lab[parts[name]] = i
    return lab


@pytest.fixture(scope="module")
def rigged():
    attrs = {**sample_attributes(7), **NEUTRAL_EXPRESSION}
    img, parts = render(attrs, SIZE, return_parts=True)
    lab = _labels(parts)
    return attrs, img, lab, AvatarRig.from_parts(img, lab)


def _changed(a: np.ndarray, b: np.ndarray, thr: int = 24) -> np.ndarray:
    return np.abs(a.astype(int) - b.astype(int)).max(axis=-1) > thr


def _box(mask: np.ndarray, pad: int) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    out = np.zeros_like(mask)
    out[max(ys.min() - pad, 0) : ys.max() + pad + 1, max(xs.min() - pad, 0) : xs.max() + pad + 1] = True
    return out


def test_rest_pose_reproduces_the_avatar(rigged):
    _, img, _, rig = rigged
    frame = rig.render({})
    assert frame.shape == img.shape and frame.dtype == np.uint8
    diff = np.abs(frame.astype(int) - img.astype(int)).max(axis=-1)
    assert diff.mean() < 1.0
    assert (diff > 24).mean() < 0.005  # 0.22 % measured: the anti-aliased rims of removed parts


@pytest.mark.parametrize(
    ("controls", "region", "min_changed"),
    [
        ({"eye_open_l": 0.0}, "eye_l", 0.15),
        ({"eye_open_r": 0.0}, "eye_r", 0.15),
        ({"gaze_x": 1.0}, "eyes", 0.05),
        ({"gaze_y": 1.0}, "eyes", 0.03),
        ({"mouth_open": 1.0}, "mouth", 0.05),
        ({"vowel_a": 1.0}, "mouth", 0.05),
        ({"vowel_i": 1.0}, "mouth", 0.03),
        ({"vowel_u": 1.0}, "mouth", 0.02),
        ({"vowel_e": 1.0}, "mouth", 0.03),
        ({"vowel_o": 1.0}, "mouth", 0.03),
        ({"smile": 1.0}, "face", 0.002),
        ({"smile": -1.0}, "mouth", 0.004),
        ({"brow_y": 1.0}, "brows", 0.03),
        ({"brow_y": -1.0}, "brows", 0.03),
    ],
)
def test_face_controls_change_only_their_region(rigged, controls, region, min_changed):
    _, _img, lab, rig = rigged
    mid = SIZE // 2
    eye = (lab == PART_IDS["eye_white"]) | (lab == PART_IDS["iris"]) | (lab == PART_IDS["eye_line"])
    cols = np.arange(SIZE)[None, :]
    regions = {
        "eye_l": _box(eye & (cols >= mid), 3),  # the character's left eye is on the image right
        "eye_r": _box(eye & (cols < mid), 3),
        "eyes": _box(eye, 3),
        "mouth": _box(lab == PART_IDS["mouth"], SIZE // 16),
        "brows": _box(lab == PART_IDS["eyebrow"], SIZE // 24),
    }
    regions["face"] = regions["eyes"] | regions["mouth"] | regions["brows"]
    where = regions[region]
    changed = _changed(rig.render({}), rig.render(controls))
    assert changed.any(), f"{controls} changed nothing"
    assert not (changed & ~where).any(), f"{controls} changed pixels outside the {region}"
    assert changed[where].mean() >= min_changed


def test_wink_closes_one_eye_only_and_leaves_no_iris(rigged):
    _, img, lab, rig = rigged
    iris = lab == PART_IDS["iris"]
    right_half = np.arange(SIZE)[None, :] >= SIZE // 2
    iris_l = iris & right_half
    iris_colour = np.median(img[iris_l][:, :3].astype(float), axis=0)
    box = _box(iris_l, 4)

    def iris_like(frame: np.ndarray) -> int:
        d = np.abs(frame[..., :3].astype(float) - iris_colour).sum(axis=-1)
        return int(((d < 40) & box).sum())

    open_ = iris_like(rig.render({}))
    closed = rig.render({"eye_open_l": 0.0})
    assert iris_like(closed) < 0.1 * open_  # the "iris ghost" bound
    # the other eye is untouched
    assert not _changed(rig.render({}), closed)[:, : SIZE // 2].any()


@pytest.mark.parametrize(
    "controls",
    [{"head_tilt": 1.0}, {"head_yaw": 1.0}, {"head_pitch": 1.0}, {"body_sway": 1.0}, {"breath": 1.0}],
)
def test_pose_controls_move_the_silhouette(rigged, controls):
    _, _, _, rig = rigged
    rest, moved = rig.render({}), rig.render(controls)
    alpha_changed = (np.abs(rest[..., 3].astype(int) - moved[..., 3].astype(int)) > 128).mean()
    assert alpha_changed > 0.005, controls
    # the bottom rows (the body's cut edge) stay where they are (but for a few slanted edge
    # pixels), except for sway
    if "body_sway" not in controls:
        assert _changed(rest[-4:], moved[-4:]).mean() < 0.01


@pytest.mark.parametrize(
    ("controls", "target"),
    [({"eye_open": 0.0}, 0.8), ({"mouth_open": 1.0}, 0.8), ({"smile": 1.0}, 0.6)],
)
def test_effect_size_close_to_the_renderers(rigged, controls, target):
    """The issue's ratios: the rig's effect over the renderer's effect on the same avatar."""
    attrs, img, _, rig = rigged
    renderer = _changed(img, render({**attrs, **controls}, SIZE)).mean()
    ours = _changed(rig.render({}), rig.render(controls)).mean()
    assert ours >= target * renderer, (ours, renderer)


def test_controls_are_validated():
    assert check_live_controls({"eye_open": 0.3})["eye_open_l"] == 0.3
    assert set(check_live_controls(None)) == set(LIVE_CONTROLS)
    with pytest.raises(RigError, match="unknown live control 'blink'"):
        check_live_controls({"blink": 1})
    with pytest.raises(RigError, match=r"'gaze_x' must be in \[-1.0, 1.0\]"):
        check_live_controls({"gaze_x": 3})
    with pytest.raises(RigError, match="'mouth_open' must be a number"):
        check_live_controls({"mouth_open": "wide"})


def test_bad_inputs_name_the_problem(rigged):
    _, img, lab, _ = rigged
    with pytest.raises(RigError, match="RGBA"):
        AvatarRig.from_parts(img[..., :3].copy(), lab)
    with pytest.raises(RigError, match="same square size"):
        AvatarRig.from_parts(img, lab[:-1])
    with pytest.raises(RigError, match="no eyes"):
        AvatarRig.from_parts(img, np.zeros_like(lab))


def test_closed_eyes_in_the_picture_are_reported():
    attrs = {**sample_attributes(3), **NEUTRAL_EXPRESSION, "eye_open": 0.0}
    img, parts = render(attrs, SIZE, return_parts=True)
    rig = AvatarRig.from_parts(img, _labels(parts))
    assert not rig.eyes
    assert any("closed in the picture" in w for w in rig.warnings)
    rig.render({"eye_open": 1.0, "mouth_open": 1.0})  # still animates what it has


def test_page_copy_has_every_layer(rigged):
    _, _, _, rig = rigged
    js = rig.to_json()
    assert js["format"] == "avatarforge-rig" and js["size"] == SIZE
    assert js["plate"].startswith("data:image/png;base64,")
    assert set(js["eyes"]) == {"l", "r"}
    for e in js["eyes"].values():
        assert len(e["top"]) == len(e["bottom"]) == len(e["closed"]) == e["w"]
    assert set(js["controls"]) == set(LIVE_CONTROLS)


def test_a_part_map_without_a_face_gives_a_pose_only_rig(rigged):
    _, img, lab, _ = rigged
    rig = AvatarRig.from_parts(img, np.zeros_like(lab), require_face=False)
    assert not rig.eyes and rig.mouth is None and "whole avatar only" in rig.warnings[0]
    assert np.array_equal(rig.render({"eye_open": 0.0, "mouth_open": 1.0}), img)  # nothing to move there
    assert _changed(rig.render({}), rig.render({"head_tilt": 1.0})).mean() > 0.01
    assert rig.to_json()["mouth"] is None
