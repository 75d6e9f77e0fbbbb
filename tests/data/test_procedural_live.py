"""The live (rig) parameter set of the procedural renderer: neutral bit-identity, locality
and size of each control's effect, validation."""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import pytest
from scipy import ndimage

from avatarforge.data import procedural as P
from avatarforge.data.procedural.attributes import resolve

NEW = {n: v for n, v in P.NEUTRAL_LIVE.items() if n not in P.EXPRESSION_ATTRIBUTES}
EYE_PARTS = ("eye_white", "iris", "eye_line")


def _hash(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _explicit_neutral(attrs: dict) -> dict:
    """``attrs`` with every new live control given explicitly at its neutral value."""
    eye = attrs.get("eye_open", 1.0)
    return {**attrs, **NEW, "eye_open_l": eye, "eye_open_r": eye}


# --------------------------------------------------------------------------- bit identity
# Hashes of renders made by the renderer BEFORE the live controls existed (commit 08a6a03,
# computed with the same _hash over image, the PART_NAMES masks and the background=True
# render). They must never change: seeded data sets and packed fingerprints depend on them.
BEFORE = {
    (0, 64): "994c15c6b17d1bbe",
    (1, 64): "be42b547e1638fbe",
    (2, 128): "319821fb86c0d811",
    (3, 128): "da4fccf1ba41aece",
    (4, 512): "ed3ac6d55595b5f8",
    (5, 512): "8f21195125b767c8",
}
EXPRS = [
    {},
    {"eye_open": 0.0, "smile": 0.8},
    {"mouth_open": 0.7, "smile": -0.5},
    {"head_yaw": 0.6, "head_tilt": -0.4},
]
BEFORE_EXPRESSIONS = {(7, 96, False): "6995123a43a2f9ae", (8, 256, True): "082f8b544b6deacc"}
BEFORE_AVATARS = ("95fee695ce281968", "e68ac1c2bb46ea30")


@pytest.mark.parametrize("explicit", [False, True], ids=["absent", "explicit-neutral"])
def test_neutral_live_controls_are_bit_identical_to_before(explicit):
    fix = _explicit_neutral if explicit else dict
    for (seed, size), want in BEFORE.items():
        a = fix(P.sample_attributes(seed))
        img, parts = P.render(a, size, return_parts=True)
        got = _hash(img, *(parts[n] for n in P.PART_NAMES), P.render(a, size, background=True))
        assert got == want, (seed, size)
    for (seed, size, bg), want in BEFORE_EXPRESSIONS.items():
        exprs = [fix(e) for e in EXPRS] if explicit else EXPRS
        assert _hash(P.render_expressions(seed, exprs, size, background=bg)) == want
    extra = {n: v for n, v in NEW.items() if not n.startswith("eye_open")} if explicit else {}
    got = (
        _hash(P.render_avatar(9, 512, hair_style="long", accessory="glasses", **extra)),
        _hash(P.render_avatar(10, 192, background=True, mouth="fang", mouth_open=0.5, **extra)),
    )
    assert got == BEFORE_AVATARS


# --------------------------------------------------------------------------- the table and validation
def test_the_live_control_table():
    names = (
        "eye_open_l", "eye_open_r", "gaze_x", "gaze_y", "mouth_open", "smile",
        "vowel_a", "vowel_i", "vowel_u", "vowel_e", "vowel_o", "brow_y",
        "head_yaw", "head_pitch", "head_tilt", "body_sway", "breath",
    )  # fmt: skip
    assert tuple(P.LIVE_CONTROLS) == names and tuple(P.NEUTRAL_LIVE) == names
    for name, (lo, hi) in P.LIVE_CONTROLS.items():
        assert lo <= P.NEUTRAL_LIVE[name] <= hi
        if name in P.SCHEMA.names:  # shared with the labels: same range, same neutral
            assert P.SCHEMA[name].range == (lo, hi) and P.NEUTRAL_EXPRESSION[name] == P.NEUTRAL_LIVE[name]
    assert P.LIVE_CONTROLS["breath"] == (0.0, 1.0) and P.LIVE_CONTROLS["gaze_y"] == (-1.0, 1.0)
    # Render-only: the label schema and the expression attributes did not grow.
    assert P.EXPRESSION_ATTRIBUTES == ("eye_open", "mouth_open", "smile", "head_yaw", "head_tilt")
    assert len(P.SCHEMA.names) == 19 and not set(NEW) & set(P.SCHEMA.names)
    # resolve fills every live control; the per-eye openings follow eye_open.
    r = resolve({**P.sample_attributes(0), "eye_open": 0.3, "gaze_x": -0.5})
    assert set(P.LIVE_CONTROLS) <= set(r) and r["gaze_x"] == -0.5 and r["breath"] == 0.0
    assert r["eye_open_l"] == r["eye_open_r"] == 0.3
    assert (
        resolve({**P.sample_attributes(0), "eye_open_r": 0.0})["eye_open_l"]
        == P.sample_attributes(0)["eye_open"]
    )


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"gaze_x": 1.5}, r"'gaze_x' must be in \[-1.0, 1.0\], got 1.5"),
        ({"breath": -0.1}, r"'breath' must be in \[0.0, 1.0\]"),
        ({"vowel_o": float("nan")}, r"'vowel_o' must be in \[0.0, 1.0\]"),
        ({"eye_open_l": "wide"}, r"'eye_open_l' must be a number in \[0.0, 1.0\]"),
        ({"head_pitch": -2}, r"'head_pitch' must be in \[-1.0, 1.0\]"),
        ({"vowel_y": 0.5}, r"unknown attribute 'vowel_y'; valid attributes: .*vowel_a"),
    ],
)
def test_invalid_live_controls_raise_naming_the_field_and_range(bad, match):
    a = P.sample_attributes(0)
    with pytest.raises(ValueError, match=match):
        P.render({**a, **bad}, 32)
    with pytest.raises(ValueError, match=match):
        resolve({**a, **bad})
    key = next(iter(bad))
    with pytest.raises(ValueError, match=match if key != "vowel_y" else r"\['vowel_y'\].*vowel_a"):
        P.render_expressions(0, [{}, bad], 32)


def test_render_expressions_leaves_absent_live_controls_neutral():
    base = {**P.sample_attributes(3), "gaze_x": 1.0, "body_sway": -1.0, "eye_open_l": 0.0}
    plain = P.sample_attributes(3)
    frames = P.render_expressions(base, [{}, {"gaze_y": 0.5}, {"eye_open": 0.0}], 64)
    assert np.array_equal(frames[0], P.render_expressions(plain, [{}], 64)[0])
    assert np.array_equal(frames[1], P.render({**plain, **P.NEUTRAL_EXPRESSION, "gaze_y": 0.5}, 64))
    # eye_open closes both eyes when the per-eye controls are absent.
    both = P.render({**plain, **P.NEUTRAL_EXPRESSION, "eye_open_l": 0.0, "eye_open_r": 0.0}, 64)
    assert np.array_equal(frames[2], both)


# --------------------------------------------------------------------------- locality and size of effect
IDENTITIES = (11, 12, 13)  # seeds; glasses removed so that nothing covers the eyes


@functools.cache
def _render(seed: int, size: int, key: tuple = ()) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    a = {**P.sample_attributes(seed, accessory="none"), **P.NEUTRAL_EXPRESSION, **dict(key)}
    return P.render(a, size, return_parts=True)  # type: ignore[return-value]


def _pair(seed: int, size: int, **live: float):
    """(neutral image, its parts, posed image, its parts, changed-pixel mask)."""
    img0, parts0 = _render(seed, size)
    img1, parts1 = _render(seed, size, tuple(sorted(live.items())))
    return img0, parts0, img1, parts1, (img0 != img1).any(-1)


def _mask(parts: dict[str, np.ndarray], names) -> np.ndarray:
    return np.logical_or.reduce([parts[n] for n in names])


def _box(mask: np.ndarray, pad: int) -> np.ndarray:
    """The bounding box of ``mask``, grown by ``pad`` pixels, as a mask."""
    ys, xs = np.nonzero(mask)
    out = np.zeros_like(mask)
    out[max(ys.min() - pad, 0) : ys.max() + pad + 1, max(xs.min() - pad, 0) : xs.max() + pad + 1] = True
    return out


def _eye_boxes(parts: dict[str, np.ndarray], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of the image-left and image-right eye (eye parts, split at the middle)."""
    eyes = _mask(parts, EYE_PARTS)
    half = eyes.shape[1] // 2
    left, right = eyes.copy(), eyes.copy()
    left[:, half:] = False
    right[:, :half] = False
    return _box(left, pad), _box(right, pad)


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("seed", IDENTITIES)
def test_a_wink_closes_only_the_image_right_eye(seed):
    """eye_open_l is the character's left eye: the one on the image right (Live2D)."""
    size = 512
    _, parts0, _, parts1, changed = _pair(seed, size, eye_open_l=0.0)
    left_box, right_box = _eye_boxes(parts0, pad=8)
    assert changed[right_box].mean() >= 0.25  # a clearly visible blink
    assert not changed[left_box].any() and not changed[~right_box].any()
    assert parts0["iris"][right_box].any() and not parts1["iris"][right_box].any()
    # ... and eye_open_r the image-left one.
    _, _, _, _, changed_r = _pair(seed, size, eye_open_r=0.0)
    assert changed_r[left_box].mean() >= 0.25 and not changed_r[~left_box].any()


@pytest.mark.parametrize("seed", IDENTITIES)
def test_gaze_moves_the_irises_inside_the_eye_outline(seed):
    size = 256
    _, parts0 = _render(seed, size)
    # The eye's inside (white and iris) plus 2 px: where the lashes overlap the eye's edge.
    eye_inside = ndimage.binary_dilation(_mask(parts0, ("eye_white", "iris")), iterations=2)
    half = size // 2
    for live, direction in (
        ({"gaze_x": 1.0}, (1, 0)),
        ({"gaze_x": -1.0}, (-1, 0)),
        ({"gaze_y": 1.0}, (0, -1)),
        ({"gaze_y": -1.0}, (0, 1)),
    ):
        _, _, _, parts1, changed = _pair(seed, size, **live)
        assert changed.sum() > 0.005 * size * size, live
        assert not changed[~eye_inside].any(), live  # lashes, lids and the outline stay
        for cols in (slice(0, half), slice(half, size)):  # each eye on its own
            move = _centroid(parts1["iris"][:, cols]) - _centroid(parts0["iris"][:, cols])
            along = move @ np.array(direction)
            # Pixels at 256 px; less vertically, where the lids clip the tall iris.
            assert along >= (2.5 if direction[0] else 1.5), (live, move)
            assert abs(move @ np.array(direction[::-1])) < 0.5 * along, (live, move)


@pytest.mark.parametrize("seed", IDENTITIES)
def test_vowels_shape_only_the_mouth_and_differ(seed):
    size = 512
    shapes = {}
    for v in "aiueo":
        _, parts0, img1, parts1, changed = _pair(seed, size, **{f"vowel_{v}": 1.0})
        mouth = ndimage.binary_dilation(parts0["mouth"] | parts1["mouth"], iterations=2)
        assert changed.any() and not changed[~mouth].any(), v
        # A vowel alone opens the mouth.
        assert parts1["mouth"].sum() > 2 * parts0["mouth"].sum(), v
        ys, xs = np.nonzero(parts1["mouth"])
        white = (img1[parts1["mouth"]][:, :3].astype(int) >= 235).all(-1).sum()
        shapes[v] = {"w": np.ptp(xs) + 1, "h": np.ptp(ys) + 1, "area": len(xs), "teeth": white, "img": img1}
    for v in "aiueo":
        for u in "aiueo":
            if u < v:
                differ = (shapes[u]["img"] != shapes[v]["img"]).any(-1).sum()
                assert differ >= 100, (u, v, differ)
    s = shapes
    assert s["i"]["w"] > s["a"]["w"] > s["o"]["w"] > s["u"]["w"]  # I widest, U narrowest
    assert s["i"]["h"] < s["e"]["h"] < s["a"]["h"] and s["o"]["h"] > s["e"]["h"]  # I flat, A/O tall
    assert s["o"]["h"] > s["o"]["w"] and s["a"]["w"] > s["a"]["h"] * 0.9  # O taller than wide
    assert s["u"]["area"] == min(x["area"] for x in s.values())
    assert s["i"]["teeth"] > 50 and s["e"]["teeth"] > 20
    assert s["u"]["teeth"] == 0 and s["o"]["teeth"] == 0


def test_vowels_shape_an_open_mouth_and_blend():
    size = 256
    base = {"mouth_open": 1.0}
    open_ = _render(11, size, tuple(base.items()))[0]
    for v in "iu":
        shaped = _render(11, size, tuple(sorted({**base, f"vowel_{v}": 1.0}.items())))[0]
        assert (shaped != open_).any(-1).sum() > 50
    half = _render(11, size, (("vowel_a", 0.5),))[1]["mouth"].sum()
    full = _render(11, size, (("vowel_a", 1.0),))[1]["mouth"].sum()
    assert _render(11, size)[1]["mouth"].sum() < half < full


@pytest.mark.parametrize("seed", IDENTITIES)
def test_brow_y_moves_only_the_brows(seed):
    size = 512
    for value, sign in ((1.0, -1), (-1.0, 1)):
        _, parts0, _, parts1, changed = _pair(seed, size, brow_y=value)
        brows = ndimage.binary_dilation(parts0["eyebrow"] | parts1["eyebrow"], iterations=2)
        assert changed.sum() > 200 and not changed[~brows].any()
        dy = _centroid(parts1["eyebrow"])[1] - _centroid(parts0["eyebrow"])[1]
        assert dy * sign >= 6.0, (value, dy)  # about half the brow-to-eye gap at 512 px


@pytest.mark.parametrize("seed", IDENTITIES)
def test_head_pitch_moves_the_face_parts_not_the_body(seed):
    size = 256
    _, parts0 = _render(seed, size)
    outfit0 = parts0["outfit"]
    for value, sign in ((1.0, -1), (-1.0, 1)):
        _, _, _, parts1, changed = _pair(seed, size, head_pitch=value)
        assert changed.mean() > 0.03
        for names, least in ((EYE_PARTS, 5.0), (("mouth",), 5.0), (("eyebrow",), 3.0)):
            dy = _centroid(_mask(parts1, names))[1] - _centroid(_mask(parts0, names))[1]
            assert dy * sign >= least, (value, names, dy)
        # The face outline moves less than the features (parallax), the outfit not at all.
        body = ndimage.binary_erosion(outfit0 & parts1["outfit"], iterations=1)
        assert body.sum() > 0.1 * size * size and not changed[body].any()


@pytest.mark.parametrize("seed", IDENTITIES)
def test_body_sway_leans_the_whole_figure(seed):
    size = 256
    img0, parts0 = _render(seed, size)
    for value in (1.0, -1.0):
        _, _, img1, parts1, _ = _pair(seed, size, body_sway=value)
        a0, a1 = img0[..., 3] > 0, img1[..., 3] > 0
        dx = _centroid(a1)[0] - _centroid(a0)[0]
        assert dx * value >= 0.015 * size, dx  # the silhouette moves a few % of the width
        eyes_dx = _centroid(_mask(parts1, EYE_PARTS))[0] - _centroid(_mask(parts0, EYE_PARTS))[0]
        assert eyes_dx * value >= 0.03 * size and abs(eyes_dx) > abs(dx)  # the head leans most
        # The body still reaches the bottom of the picture.
        assert a1[-1].sum() >= a0[-1].sum() - 2


@pytest.mark.parametrize("seed", IDENTITIES)
def test_breath_raises_the_shoulders_and_head(seed):
    size = 512
    img0, parts0, img1, parts1, changed = _pair(seed, size, breath=1.0)
    a0, a1 = img0[..., 3] > 0, img1[..., 3] > 0
    top0, top1 = np.argmax(a0.any(1)), np.argmax(a1.any(1))
    assert 0.01 * size <= top0 - top1 <= 0.02 * size  # 1-2 % of the height
    dy = _centroid(_mask(parts1, EYE_PARTS))[1] - _centroid(_mask(parts0, EYE_PARTS))[1]
    assert -0.02 * size <= dy <= -0.01 * size
    assert np.array_equal(img0[-1, :, 3], img1[-1, :, 3])  # the bottom edge stays where it is
    assert changed.mean() > 0.05
