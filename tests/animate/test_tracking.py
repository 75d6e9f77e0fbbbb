"""Tracking inputs (ARKit mapping, iFacialMocap, VMC perfect sync, the One-Euro filter), the
layered mixer (idle < tracking < manual < animation < expression, with fades) and bad input:
malformed packets, NaN/inf, out-of-range values and a 10,000 packets/s flood over loopback."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from avatarforge.animate.drivers import IdleDriver, ManualDriver, VMCDriver, vmc_to_controls
from avatarforge.animate.expressions import (
    EXPRESSIONS,
    PRIORITIES,
    AnimationPlayer,
    ExpressionState,
    Layer,
    Mixer,
)
from avatarforge.animate.loop import FrameLoop
from avatarforge.animate.osc import encode_bundle, encode_message
from avatarforge.animate.tracking import (
    ARKIT_NAMES,
    IFacialMocapDriver,
    OneEuroFilter,
    TrackerInput,
    VMCSender,
    arkit_to_live,
    controls_to_vmc,
    parse_ifacialmocap,
)
from avatarforge.data.procedural.schema import LIVE_CONTROLS


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _ifm(blend: dict[str, float], head=(0.0, 0.0, 0.0), v2: bool = True) -> bytes:
    sep = "&" if v2 else "-"
    items = [
        f"{k[:-4] + '_L' if k.endswith('Left') else k[:-5] + '_R' if k.endswith('Right') else k}{sep}{round(v * 100)}"
        for k, v in blend.items()
    ]
    items.append("=head#" + ",".join(f"{x:.4f}" for x in (*head, 0.1, -0.2, -0.6)))
    items += ["rightEye#6.0,2.0,0.0", "leftEye#6.0,2.0,0.0", ""]
    return "|".join(items).encode()


# ----------------------------------------------------------------------------- ARKit mapping
def test_arkit_mapping_covers_the_live_controls():
    assert len(ARKIT_NAMES) == len(set(ARKIT_NAMES)) == 52
    neutral = arkit_to_live(dict.fromkeys(ARKIT_NAMES, 0.0), (0, 0, 0))
    assert set(neutral) == set(LIVE_CONTROLS) - {"body_sway", "breath"}
    assert neutral["eye_open_l"] == neutral["eye_open_r"] == 1.0 and neutral["mouth_open"] == 0.0
    wink = arkit_to_live({"eyeBlinkLeft": 0.95, "eyeBlinkRight": 0.05})
    assert wink == {"eye_open_l": 0.0, "eye_open_r": 1.0}  # the user's left eye is the character's left
    a = arkit_to_live({"jawOpen": 0.7})
    assert a["mouth_open"] == 1.0 and a["vowel_a"] == pytest.approx(1.0) and a["vowel_o"] == 0.0
    o = arkit_to_live({"jawOpen": 0.35, "mouthFunnel": 0.8})
    assert max(("vowel_a", "vowel_i", "vowel_u", "vowel_e", "vowel_o"), key=o.get) == "vowel_o"
    u = arkit_to_live({"jawOpen": 0.0, "mouthPucker": 0.9})
    assert max(("vowel_a", "vowel_i", "vowel_u", "vowel_e", "vowel_o"), key=u.get) == "vowel_u"
    i = arkit_to_live({"jawOpen": 0.02, "mouthStretchLeft": 0.6, "mouthStretchRight": 0.6})
    assert max(("vowel_a", "vowel_i", "vowel_u", "vowel_e", "vowel_o"), key=i.get) == "vowel_i"
    assert sum(v for k, v in o.items() if k.startswith("vowel")) <= 1.0 + 1e-9
    s = arkit_to_live({"mouthSmileLeft": 0.8, "mouthSmileRight": 0.6, "browInnerUp": 0.6})
    assert s["smile"] == pytest.approx(0.98) and s["brow_y"] == pytest.approx(0.9)
    g = arkit_to_live(
        {"eyeLookOutLeft": 0.5, "eyeLookInRight": 0.5, "eyeLookUpLeft": 0.3, "eyeLookUpRight": 0.3}
    )
    assert g["gaze_x"] == pytest.approx(0.8) and g["gaze_y"] == pytest.approx(0.48)
    h = arkit_to_live({}, (45.0, -10.0, 5.0))
    assert h == pytest.approx({"head_yaw": 1.0, "head_pitch": -0.5, "head_tilt": 0.5})  # clamped
    assert arkit_to_live({}, (15.0, 0.0, 5.0), mirror=True) == pytest.approx(
        {"head_yaw": -0.5, "head_pitch": 0.0, "head_tilt": -0.5}
    )
    # bad values are ignored, out-of-range ones clamped
    bad = arkit_to_live({"jawOpen": float("nan"), "eyeBlinkLeft": 7, "mouthSmileLeft": "x"}, (math.inf, 0, 0))
    assert bad == {"eye_open_l": 0.0}


def test_vmc_perfect_sync_maps_arkit_names():
    c = vmc_to_controls(
        {"eyeBlinkLeft": 1.0, "eyeBlinkRight": 0.0, "jawOpen": 0.6, "browDownLeft": 1, "browDownRight": 1}
    )
    assert c["eye_open_l"] == 0.0 and c["eye_open_r"] == 1.0
    assert c["mouth_open"] == 1.0 and c["brow_y"] == -1.0 and c["vowel_a"] > 0.9


# ----------------------------------------------------------------------------- iFacialMocap
def test_ifacialmocap_parser_both_versions_and_bad_packets():
    blend = {"eyeBlinkLeft": 1.0, "jawOpen": 0.5, "mouthSmileRight": 0.25}
    for v2 in (True, False):
        b, head = parse_ifacialmocap(_ifm(blend, (10.0, -20.0, 5.0), v2=v2))
        assert b == pytest.approx(blend)
        assert head == pytest.approx((-20.0, -10.0, 5.0))  # (yaw = ry, pitch = -rx, roll = rz)
    b, _ = parse_ifacialmocap(b"hapihapi-0|mouthClose-10|=head#0,0,0,0,0,0|")
    assert b == {"mouthClose": pytest.approx(0.1)}  # unknown names skipped
    for bad in (b"\xff\xfe", b"", b"|||", b"jawOpen", b"jawOpen&abc", b"jawOpen&nan", b"=head#1,2",
                b"=head#inf,0,0,0,0,0", b"=head#a,b,c"):  # fmt: skip
        with pytest.raises(ValueError):
            parse_ifacialmocap(bad)


def _send_flood(port: int, seconds: float, rate: int, payloads: list[bytes]) -> subprocess.Popen:
    """Another process sends ``rate`` datagrams a second (like a real phone or a hostile host)."""
    code = f"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payloads = {payloads!r}
t0 = time.perf_counter(); n = 0
while time.perf_counter() - t0 < {seconds}:
    for _ in range(100):
        s.sendto(payloads[n % len(payloads)], ("127.0.0.1", {port})); n += 1
    ahead = n / {rate} - (time.perf_counter() - t0)
    if ahead > 0:
        time.sleep(ahead)
print(n)
"""
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_ifacialmocap_over_loopback_with_bad_packets_and_a_flood():
    drv = IFacialMocapDriver("127.0.0.1", 0, stale_after=0.5)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(_ifm({"eyeBlinkLeft": 1.0, "jawOpen": 0.6}, (0.0, 15.0, 0.0)), ("127.0.0.1", drv.port))
            assert drv.wait(lambda d: d.stats.parsed >= 1, 5)
            c = drv.update(0.0)
            assert c["eye_open_l"] == 0.0 and c["mouth_open"] == 1.0 and c["head_yaw"] == pytest.approx(0.5)
            for bad in (b"garbage", b"jawOpen&nan|", b"\xff" * 40, b"=head#1e999,0,0,0,0,0|"):
                s.sendto(bad, ("127.0.0.1", drv.port))
                time.sleep(0.01)
            assert drv.wait(lambda d: d.stats.errors >= 4, 5), drv.stats
            assert drv.update(0.0)["eye_open_l"] == 0.0  # the bad packets changed nothing
        time.sleep(0.6)
        assert drv.update(0.0) == {}  # stale: the face is lost, the mixer fades to idle

        # 10,000 packets/s for 2 s (good and bad mixed) while a frame loop runs at 30 fps
        loop = FrameLoop(
            lambda c: np.zeros((1, 1, 4), np.uint8), [Mixer([IdleDriver(0)], [Layer(drv)])], fps=30
        )
        good = _ifm({"jawOpen": 0.3}, (0.0, 0.0, 4.0))
        flood = _send_flood(drv.port, 2.0, 10_000, [good, b"bad|packet", good + b"x&inf|"])
        t0 = time.perf_counter()
        frames = list(loop.run(seconds=2.0))
        elapsed = time.perf_counter() - t0
        sent = int(flood.communicate(timeout=30)[0])
        assert sent > 15_000
        assert len(frames) == 60 and elapsed < 2.4  # the loop kept its rate
        assert loop.stats.late <= 6, loop.stats.summary()
        st = drv.stats
        assert st.packets + st.coalesced >= 0 and st.packets > 1000  # received (the kernel may drop some)
        assert st.coalesced > st.packets / 2  # most of a burst is never parsed
        assert st.errors > 5 and st.parsed > 50
        assert all(math.isfinite(v) for f in frames for v in f.controls.values())
    finally:
        drv.close()


def test_vmc_flood_and_nan_never_stop_the_listener():
    drv = VMCDriver("127.0.0.1", 0, stale_after=1.0)
    try:
        ok = encode_bundle([encode_message("/VMC/Ext/Blend/Val", "jawOpen", 0.8, tags="sf"),
                            encode_message("/VMC/Ext/Blend/Apply")])  # fmt: skip
        nan = encode_bundle([encode_message("/VMC/Ext/Blend/Val", "Joy", float("nan"), tags="sf"),
                             encode_message("/VMC/Ext/Bone/Pos", "Head", 0.0, 0.0, 0.0, math.inf, 0.0, 0.0, 1.0, tags="sfffffff"),
                             encode_message("/VMC/Ext/Blend/Apply")])  # fmt: skip
        flood = _send_flood(drv.port, 1.5, 10_000, [ok, nan, b"not osc!"])
        flood.communicate(timeout=30)
        assert drv.wait(lambda d: d.errors > 10 and d.dropped_values > 10, 5), drv.stats()
        c = drv.update(0.0)
        assert c["mouth_open"] == 1.0 and all(math.isfinite(v) for v in c.values())
        assert drv._thread.is_alive() and drv.coalesced > 0
    finally:
        drv.close()


def test_vmc_sender_round_trips_through_the_receiver():
    drv = VMCDriver("127.0.0.1", 0)
    send = VMCSender("127.0.0.1", drv.port, max_rate=1000)
    try:
        want = {"eye_open_l": 0.2, "eye_open_r": 1.0, "smile": 0.5, "vowel_o": 0.6,
                "head_yaw": 0.4, "head_pitch": -0.3, "head_tilt": 0.2}  # fmt: skip
        assert send.send(want)
        assert drv.wait(lambda d: "head_pitch" in d.update(0.0), 5)
        got = drv.update(0.0)
        for k, v in want.items():
            assert got[k] == pytest.approx(v, abs=1e-4), k
        assert not send.send(want) or send.sent == 2  # rate-limited (1 ms) or sent
        blend, q = controls_to_vmc({"mouth_open": 0.7})
        assert blend["A"] == pytest.approx(0.7) and q == pytest.approx((0, 0, 0, 1))
    finally:
        send.close()
        drv.close()


# ----------------------------------------------------------------------------- One-Euro
def test_one_euro_removes_jitter_at_rest_and_follows_fast_moves():
    rng = np.random.default_rng(0)
    t = np.arange(0, 4, 1 / 30)
    signal = np.where(t < 2, 0.0, 0.8)  # still, then a fast move
    noisy = signal + rng.normal(0, 0.03, t.shape)
    f = OneEuroFilter(min_cutoff=0.5, beta=1.0)
    out = np.array([f(x, ti) for x, ti in zip(noisy, t)])
    still = (t > 0.5) & (t < 2)
    assert out[still].std() < 0.5 * noisy[still].std()  # jitter halved at least
    after = np.flatnonzero(t >= 2)[6]  # 0.2 s after the move
    assert out[after] > 0.7  # little lag on a fast move
    slow = OneEuroFilter(min_cutoff=0.5, beta=0.0)
    lagging = np.array([slow(x, ti) for x, ti in zip(noisy, t)])
    assert lagging[after] < out[after]  # beta is what removes the lag
    with pytest.raises(ValueError, match="min_cutoff"):
        OneEuroFilter(min_cutoff=0)


# ----------------------------------------------------------------------------- mixer
def _run(mixer: Mixer, seconds: float, fps: float = 60, t0: float = 0.0, each=None) -> list[dict[str, float]]:
    out = []
    for i in range(round(seconds * fps)):
        t = t0 + i / fps
        if each is not None:
            each(t)
        out.append(mixer.update(t))
    return out


def test_tracking_fades_in_and_back_to_idle_without_a_pop():
    clock = Clock()
    tracker = TrackerInput(stale_after=0.5, clock=clock)
    idle = IdleDriver(seed=1)
    mixer = Mixer([idle], [Layer(tracker, "webcam", PRIORITIES["tracking"], fade_in=0.3, fade_out=0.6)])
    fps = 60

    def feed(t: float) -> None:
        clock.now = 100.0 + t
        if 1.0 <= t < 3.0:
            tracker.put(
                {"head_yaw": 0.9, "mouth_open": 0.8, "eye_open_l": 1.0, "eye_open_r": 1.0}, seq=int(t * fps)
            )

    frames = _run(mixer, 5.0, fps, each=feed)
    yaw = np.array([f["head_yaw"] for f in frames])
    # no pop at 1.0 s nor when the face is lost: a 0.93 step spread over the 0.3 s fade
    assert np.abs(np.diff(yaw)).max() < 0.1
    assert yaw[int(2.0 * fps)] == pytest.approx(0.9)  # tracking drives it fully
    assert abs(yaw[int(4.5 * fps)] - idle.update(4.5)["head_yaw"]) < 1e-9  # idle again
    assert tracker.seq == int(2.99 * fps) and "webcam" not in mixer.active
    # while tracked, the idle blinks are overridden; breathing (not tracked) goes on
    assert min(f["eye_open_l"] for f in frames[int(1.4 * fps) : int(3 * fps)]) == 1.0
    assert np.ptp([f["breath"] for f in frames[int(1.4 * fps) : int(3 * fps)]]) > 0.3
    # the tracker's values are clamped and NaN dropped, counted
    assert tracker.put({"head_yaw": 4, "smile": float("nan"), "bogus": 1}) == {"head_yaw": 1.0}
    assert tracker.stats.clamped == 1 and tracker.stats.dropped_values == 2


def test_tracker_sampled_seq_is_the_frame_a_loop_drew_from():
    """The overlay tags each frame with ``sampled_seq`` (latency): the seq of the controls the
    mixer read, not a newer one that arrived after (nor one only peeked at by ``active``)."""
    clock = Clock()
    tracker = TrackerInput(stale_after=0.5, clock=clock)
    assert tracker.sampled_seq is None and not tracker.active
    tracker.put({"mouth_open": 0.5}, seq=1)
    assert tracker.update(0.0) == {"mouth_open": 0.5} and tracker.sampled_seq == 1
    tracker.put({"mouth_open": 0.6}, seq=2)
    assert tracker.active and tracker.sampled_seq == 1 and tracker.seq == 2
    tracker.update(0.0)
    assert tracker.sampled_seq == 2
    clock.now += 1.0  # stale: nothing read, the tag stays
    assert tracker.update(0.0) == {} and tracker.sampled_seq == 2 and not tracker.active


def test_priorities_and_expression_fades():
    clock = Clock()
    tracker = TrackerInput(clock=clock)
    manual = ManualDriver()
    anims = AnimationPlayer(clock=clock)
    expr = ExpressionState(fade_in=0.2, fade_out=0.4, clock=clock)
    layers = [
        Layer(expr, "expression", PRIORITIES["expression"]),  # given out of order: sorted by priority
        Layer(tracker, "webcam", PRIORITIES["tracking"], fade_in=0.0, fade_out=0.0),
        Layer(manual, "manual", PRIORITIES["manual"], fade_in=0.0, fade_out=0.0),
        Layer(anims, "animation", PRIORITIES["animation"]),
    ]
    mixer = Mixer([], layers)
    assert [lay.name for lay in mixer.layers] == ["webcam", "manual", "animation", "expression"]
    tracker.put({"smile": -0.5, "head_pitch": 0.2})
    assert mixer.update(0.0)["smile"] == -0.5  # tracking over idle
    manual.set(smile=0.3)
    assert mixer.update(0.01)["smile"] == 0.3  # manual over tracking
    expr.set("happy")
    clock.now += 0.1
    half = mixer.update(0.11)["smile"]
    assert 0.3 < half < 1.0  # fading in over 0.2 s
    clock.now += 0.2
    c = mixer.update(0.3)
    assert c["smile"] == 1.0 and c["eye_open_l"] == pytest.approx(0.55)  # expression on top
    anims.play("nod")
    clock.now += 0.25
    nod = mixer.update(0.55)
    assert (
        nod["head_pitch"] != pytest.approx(0.2) and nod["smile"] == 1.0
    )  # animation over tracking, under the expression
    # switching expression cross-fades; clearing fades out with its own time
    expr.set("angry", fade_in=0.5)
    clock.now += 0.25
    mid = mixer.update(0.8)["smile"]
    assert -0.8 < mid < 1.0
    clock.now += 0.5
    assert mixer.update(1.3)["smile"] == pytest.approx(-0.8) and expr.current == "angry"
    expr.clear()
    clock.now += 0.2
    assert -0.8 < mixer.update(1.5)["smile"] < 0.3
    clock.now += 0.3
    assert mixer.update(1.8)["smile"] == 0.3 and expr.current is None
    # a held-for expression ends by itself; a hotkey toggles
    expr.set("wink", hold=0.5)
    clock.now += 0.3
    assert mixer.update(2.1)["eye_open_l"] < 0.1 and mixer.update(2.1)["eye_open_r"] == 1.0
    clock.now += 1.0
    assert mixer.update(3.1)["eye_open_l"] == 1.0
    assert expr.toggle("sad") and not expr.toggle("sad")
    with pytest.raises(ValueError, match="unknown expression"):
        expr.set("dance")
    with pytest.raises(ValueError, match="hold must be a number of seconds"):
        expr.set("happy", hold=-1)
    with pytest.raises(ValueError, match="unknown animation"):
        anims.play("moonwalk")
    assert set(EXPRESSIONS) >= {"happy", "angry", "surprised", "sad", "wink"}
