"""The trained tiny animator (32 px, ~12 kimg): held-out error, region locality, identity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avatarforge.animate.metrics import identity_consistency
from avatarforge.animate.pairs import HELDOUT, identity_seed, part_mask, render_group
from avatarforge.data.procedural import NEUTRAL_EXPRESSION
from avatarforge.train.metrics_log import read_metrics

# Outcome depends on trained weights / float rounding: rerun by `make test-numerics-fp32`.
pytestmark = pytest.mark.numerics

EYES = ("eye_white", "iris", "eye_line")

# Every threshold below is set from the spread measured by tools/numerics_spread.py
# (docs/testing.md): bf16 and fp32/avx2 kernels, training seeds 0-3, 1 thread and a loaded core.
# "measured a..b" in a comment is that range.


def test_held_out_error_is_far_below_copying_the_source(trained, record_number):
    trainer, run = trained
    m = trainer.last_eval
    for k in ("ratio", "face_ratio", "identity_l1", "identity_psnr"):
        record_number(k, m[k])
    record_number("eye_err_rel", m["eye_err"] / m["eye_err_baseline"])
    record_number("mouth_err_rel", m["mouth_err"] / m["mouth_err_baseline"])
    # The copy baseline is 1 for every ratio.
    assert m["ratio"] <= 0.6, m  # measured 0.41..0.49
    assert m["face_ratio"] <= 0.8, m  # measured 0.59..0.63
    assert m["eye_err"] <= 0.8 * m["eye_err_baseline"], m  # eyes open and close: 0.26..0.59
    assert m["mouth_err"] <= 0.75 * m["mouth_err_baseline"], m  # the mouth too: 0.16..0.51
    assert m["identity_l1"] < 0.03 and m["identity_psnr"] > 22, m  # 0.014..0.018, 25.9..28.0 dB
    logged = read_metrics(run, kind="metric")[-1]
    assert logged["eval_ratio"] == pytest.approx(m["ratio"], abs=1e-5)
    train = read_metrics(run, kind="train")
    assert train[-1]["mse"] < 0.6 * train[0]["mse"]


def _region_change(g, controls: dict[str, float], parts: tuple[str, ...], n: int = 8) -> tuple[float, float]:
    """Over ``n`` held-out identities: the fraction of visibly changed pixels inside the part
    region (dilated 2 px), and mean change inside / mean change outside."""
    s = g.resolution
    fracs, contrast = [], []
    for i in range(n):
        target = {**NEUTRAL_EXPRESSION, **controls}
        imgs, labs, _ = render_group(identity_seed(0, HELDOUT, 500 + i), [NEUTRAL_EXPRESSION, target], s)
        region = part_mask(torch.from_numpy(labs), parts).any(0).float()[None, None]
        region = F.max_pool2d(region, 5, stride=1, padding=2)[0, 0] > 0
        state = g.prepare(imgs[0])
        delta = (g.render(state, target) - g.render(state, NEUTRAL_EXPRESSION)).abs().sum(1)[
            0
        ] / 2  # [0, 1] units
        visible = delta > 0.15
        fracs.append(float(visible[region].sum() / visible.sum().clamp_min(1)))
        contrast.append(float(delta[region].mean() / delta[~region].mean().clamp_min(1e-6)))
    return float(np.mean(fracs)), float(np.median(contrast))


def test_controls_change_the_expected_regions(trained, record_number):
    g = trained[0].G_ema
    eye_in, eye_con = _region_change(g, {"eye_open": 0.0}, EYES)
    mouth_in, mouth_con = _region_change(g, {"mouth_open": 1.0}, ("mouth",))
    # Turning the head moves the face, not only the eyes: most changes are outside them.
    yaw_in, _ = _region_change(g, {"head_yaw": 1.0}, EYES)
    for k, v in dict(eye_inside=eye_in, eye_contrast=eye_con, mouth_inside=mouth_in,
                     mouth_contrast=mouth_con, yaw_inside_eyes=yaw_in).items():  # fmt: skip
        record_number(k, v)
    assert eye_in > 0.7 and eye_con > 8, (eye_in, eye_con)  # measured 0.92..0.99, 29..48
    assert mouth_in > 0.6 and mouth_con > 8, (mouth_in, mouth_con)  # 0.76..1.00, 14..37
    assert yaw_in < 0.6  # 0.35..0.41


def test_identity_round_trip_on_held_out_avatars(trained, record_number):
    g = trained[0].G_ema
    neutral = []
    for i in range(4):
        imgs, _, _ = render_group(identity_seed(0, HELDOUT, 900 + i), [NEUTRAL_EXPRESSION], g.resolution)
        neutral.append(torch.from_numpy(imgs[0]).permute(2, 0, 1).float() / 127.5 - 1)
    res = identity_consistency(
        g, torch.stack(neutral), [{"eye_open": 0.0}, {"mouth_open": 1.0}, {"head_yaw": 0.8}]
    )
    for k in ("self_l1", "identity_l1", "identity_psnr"):
        record_number(k, res[k])
    # measured: self_l1 0.003..0.005, identity_l1 0.012..0.014, identity_psnr 28.2..29.4 dB
    assert res["self_l1"] < 0.01  # asked for the expression it has, the animator leaves it alone
    assert res["identity_l1"] < 0.03 and res["identity_psnr"] > 22, res


def test_generator_avatars_keep_identity_and_change_expression(trained, cgan_avatars, record_number):
    """On a generator's samples (no ground truth): the round trip stays far closer to the
    avatar than another avatar is, and closing the eyes visibly changes the eyes and little
    else (the copy baseline changes nothing: effect ratio 0, locality undefined)."""
    from avatarforge.animate.metrics import avatar_metrics, layout_regions

    g = trained[0].G_ema
    images, _run = cgan_avatars
    regions = layout_regions(g.resolution, identities=16)
    assert regions.eye_effect > 0.15 and regions.mouth_effect > 0.1  # the renderer's own change
    m = avatar_metrics(g, images, regions=regions)
    # Procedural avatars through the same measure: the mouth opens too.
    proc = np.stack(
        [render_group(identity_seed(0, HELDOUT, 700 + i), [NEUTRAL_EXPRESSION], 32)[0][0] for i in range(8)]
    )
    mp = avatar_metrics(g, proc, regions=regions)
    for k in ("identity_ratio", "eye_effect_ratio", "eye_locality", "mouth_locality"):
        record_number(f"gen_{k}", m[k])
    record_number("proc_mouth_effect_ratio", mp["mouth_effect_ratio"])
    record_number("proc_eye_effect_ratio", mp["eye_effect_ratio"])
    assert m["identity_ratio"] < 0.4, m  # measured 0.14..0.23
    # How far the eyes close on these blurry 160-step cgan avatars depends on both networks'
    # training trajectories: measured 0.18..0.84 of the renderer's effect (an Intel Xeon with
    # AMX: 0.47). The floor asserts a clear, local effect; its size on real generator avatars is
    # a benchmark figure (the stream-ready issue), not a unit-test threshold.
    assert m["eye_effect_ratio"] > 0.1 and m["eye_locality"] > 8, m  # locality 20..38
    # The 160-step cgan draws no clear mouth, so the mouth is only checked to change in its
    # region more than elsewhere (its openness is measured in the benchmark, longer cgan).
    assert m["mouth_locality"] > 1.5, m  # measured 2.8..27
    # Procedural avatars through the same measure: the mouth opens and the eyes close.
    assert mp["mouth_effect_ratio"] > 0.25 and mp["eye_effect_ratio"] > 0.35, mp  # 0.38..0.54, 0.58..0.88
    with pytest.raises(ValueError, match="at least 2"):
        avatar_metrics(g, images[:1], regions=regions)
