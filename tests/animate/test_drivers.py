"""Drivers: audio envelope, idle blinks, scripts, manual state, VMC mapping and the UDP listener."""

from __future__ import annotations

import math
import socket
import threading
import wave
from pathlib import Path

import numpy as np
import pytest

from avatarforge.animate.drivers import (
    AudioDriver,
    IdleDriver,
    ManualDriver,
    MicrophoneDriver,
    ScriptedDriver,
    VMCDriver,
    head_angles,
    merge_targets,
    read_wav,
    vmc_to_controls,
)
from avatarforge.animate.osc import encode_bundle, encode_message
from avatarforge.errors import MissingDependencyError

RATE = 16000


def _write_wav(path: Path, samples: np.ndarray, rate: int = RATE, width: int = 2, channels: int = 1) -> Path:
    x = np.clip(samples, -1, 1)
    if channels == 2:
        x = np.stack([x, x], 1).ravel()
    if width == 1:
        raw = (x * 127 + 128).astype(np.uint8).tobytes()
    elif width == 2:
        raw = (x * 32767).astype("<i2").tobytes()
    else:  # 24-bit
        v = (x * (2**23 - 1)).astype(np.int32)
        raw = np.stack([v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF], 1).astype(np.uint8).tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)
    return path


def _bursts() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """0.5 s silence, then two 0.3 s tone bursts separated by 0.5 s silence, then 0.6 s silence."""
    segments = [(0.5, 0.0), (0.3, 0.5), (0.5, 0.0), (0.3, 0.3), (0.6, 0.0)]
    out, bursts, t = [], [], 0.0
    for dur, amp in segments:
        n = int(dur * RATE)
        ts = np.arange(n) / RATE
        out.append(amp * np.sin(2 * np.pi * 220 * ts))
        if amp:
            bursts.append((t, t + dur))
        t += dur
    return np.concatenate(out).astype(np.float32), bursts


def test_audio_driver_opens_the_mouth_during_bursts_only(tmp_path):
    samples, bursts = _bursts()
    drv = AudioDriver(_write_wav(tmp_path / "speech.wav", samples))
    assert drv.duration == pytest.approx(2.2, abs=0.02)
    mouth = lambda t: drv.update(t)["mouth_open"]  # noqa: E731
    assert max(mouth(t) for t in np.arange(0, 0.45, 0.01)) < 0.02  # silence: closed
    for start, end in bursts:
        mid = [mouth(t) for t in np.arange(start + 0.08, end - 0.02, 0.01)]
        assert min(mid) > 0.5, mid  # open while the tone lasts (both bursts, the quieter too)
        assert mouth(end + 0.4) < 0.05  # released afterwards
    assert mouth(start + 0.01) < mouth(start + 0.06)  # attack: rises over a few tens of ms
    assert mouth(100.0) == 0.0  # past the end


def test_audio_silence_and_formats(tmp_path):
    drv = AudioDriver(_write_wav(tmp_path / "silence.wav", np.zeros(RATE, np.float32)))
    assert max(drv.update(t)["mouth_open"] for t in np.arange(0, 1, 0.01)) == 0.0
    samples, _ = _bursts()
    ref, rate = read_wav(_write_wav(tmp_path / "16.wav", samples))
    assert rate == RATE and ref.shape == samples.shape
    for width, channels, tol in ((1, 1, 0.02), (3, 2, 1e-4)):
        got, _ = read_wav(
            _write_wav(tmp_path / f"{width}_{channels}.wav", samples, width=width, channels=channels)
        )
        assert np.abs(got - ref).max() < tol
    (tmp_path / "bad.wav").write_bytes(b"RIFF0000WAVEnope")
    with pytest.raises(ValueError, match="not a PCM WAV"):
        AudioDriver(tmp_path / "bad.wav")


def test_microphone_without_sounddevice_says_how_to_install():
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError):
        with pytest.raises(MissingDependencyError, match="pip install sounddevice"):
            MicrophoneDriver()
    else:  # pragma: no cover - only where sounddevice is installed
        pytest.skip("sounddevice is installed")


def test_idle_driver_blinks_and_sways_deterministically():
    ts = np.arange(0, 30, 0.01)
    a, b = IdleDriver(seed=3), IdleDriver(seed=3)
    eyes = np.array([a.update(t)["eye_open"] for t in ts])
    assert np.array_equal(eyes, [b.update(t)["eye_open"] for t in ts])
    closed = eyes < 0.1
    starts = np.flatnonzero(closed[1:] & ~closed[:-1])
    assert 5 <= len(starts) <= 15  # a blink every 2-5.5 s
    assert (eyes > 0.99).mean() > 0.9  # open most of the time
    blink_len = np.diff(np.flatnonzero(np.diff(closed.astype(int))))[::2] * 0.01
    assert blink_len.max() < 0.15  # blinks are short
    tilt = np.array([a.update(t)["head_tilt"] for t in ts])
    assert 0.1 < np.abs(tilt).max() <= 0.15 + 1e-9
    assert not np.array_equal(eyes, [IdleDriver(seed=4).update(t)["eye_open"] for t in ts])
    # the live extras: breathing, a slight body sway, occasional eye darts that come back
    vals = [IdleDriver(seed=3).update(t) for t in ts]
    breath = np.array([v["breath"] for v in vals])
    assert breath.min() >= 0 and breath.max() <= 1 and breath.max() - breath.min() > 0.8
    body = np.array([v["body_sway"] for v in vals])
    assert 0.02 < np.abs(body).max() <= 0.12 + 1e-9
    gx = np.array([v["gaze_x"] for v in vals])
    darts = np.flatnonzero((np.abs(gx[1:]) > 0.05) & (np.abs(gx[:-1]) <= 0.05))
    assert 3 <= len(darts) <= 12  # every 2.5-7 s over 30 s
    assert (np.abs(gx) < 0.01).mean() > 0.7  # the eyes rest ahead most of the time
    assert [IdleDriver(seed=3).update(t) for t in ts[:500]] == vals[:500]  # seeded
    # the blinks are the same with and without the live extras (animations stay as they were)
    assert np.array_equal(eyes, [IdleDriver(seed=3, live=False).update(t)["eye_open"] for t in ts])


def test_scripted_driver_actions():
    d = ScriptedDriver("blink,talk,smile")
    vals = [d.update(t) for t in np.arange(0, 10, 0.02)]
    assert {"eye_open", "mouth_open", "smile"} <= set(vals[0])
    mouth = np.array([v["mouth_open"] for v in vals])
    assert mouth.max() > 0.5 and (mouth < 0.05).mean() > 0.1  # opens and closes
    assert ScriptedDriver(["look"]).update(1.25)["head_yaw"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="unknown script action"):
        ScriptedDriver("blink,dance")


def test_manual_driver_is_thread_safe_and_merges_last():
    m = ManualDriver(smile=0.5)

    def worker(k: int) -> None:
        for i in range(200):
            m.set(eye_open=(i % 10) / 10, head_yaw=k / 10)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = m.get()
    assert state["smile"] == 0.5 and 0 <= state["eye_open"] <= 0.9 and m.version == 800
    m.set(mouth_open=3.0)  # clamped
    assert m.get()["mouth_open"] == 1.0
    with pytest.raises(ValueError, match="unknown control"):
        m.set(blink=1)
    m.clear("smile")
    assert "smile" not in m.get()
    idle = IdleDriver(seed=0)
    merged = merge_targets([idle, ManualDriver(eye_open=0.25)], 1.0)
    # later drivers win per control; eye_open stands for both eyes
    assert merged["eye_open_l"] == merged["eye_open_r"] == 0.25 and "head_tilt" in merged
    # all 17 live controls are accepted (and eye_open), each clamped to its own range
    m2 = ManualDriver(gaze_x=-3, vowel_o=0.5, brow_y=0.2, breath=2)
    assert m2.get() == {"gaze_x": -1.0, "vowel_o": 0.5, "brow_y": 0.2, "breath": 1.0}
    m2.set(eye_open=0.5)
    m2.set(eye_open_l=0.0)  # one eye now: the other keeps the both-eyes value
    assert m2.get()["eye_open_l"] == 0.0 and m2.get()["eye_open_r"] == 0.5 and "eye_open" not in m2.get()
    m2.set(eye_open=1.0)  # both eyes again: the single eyes are forgotten
    assert merge_targets([m2], 0.0)["eye_open_l"] == 1.0
    with pytest.raises(ValueError, match=r"control gaze_y must be a finite number from -1 to 1"):
        m2.set(gaze_y=float("nan"))


def _quat(axis: str, degrees: float) -> tuple[float, float, float, float]:
    h = math.radians(degrees) / 2
    s, c = math.sin(h), math.cos(h)
    return {"y": (0.0, s, 0.0, c), "z": (0.0, 0.0, s, c), "x": (s, 0.0, 0.0, c)}[axis]


def test_vmc_mapping():
    assert head_angles(_quat("y", 20))[0] == pytest.approx(20)
    assert head_angles(_quat("z", -10))[2] == pytest.approx(-10)
    assert head_angles(_quat("x", 15))[1] == pytest.approx(15)
    c = vmc_to_controls({"Blink_L": 1.0, "Blink_R": 0.5, "A": 0.2, "O": 1.0, "Joy": 0.6, "Sorrow": 0.5})
    vowels = {"vowel_a": 0.2, "vowel_i": 0.0, "vowel_u": 0.0, "vowel_e": 0.0, "vowel_o": 1.0}
    assert c == pytest.approx(
        {"eye_open_l": 0.0, "eye_open_r": 0.5, "mouth_open": 0.85, "smile": 0.25, **vowels}
    )
    # VRM 1.0 names, case-insensitive; the head: turning to its right = towards image left.
    c = vmc_to_controls({"blink": 0.0, "aa": 1.0, "HAPPY": 1.0}, _quat("y", 15))
    assert c == pytest.approx(
        {"eye_open": 1.0, "mouth_open": 1.0, "smile": 1.0, "head_yaw": -0.5, "head_tilt": 0.0,
         "head_pitch": 0.0, "vowel_a": 1.0, "vowel_i": 0.0, "vowel_u": 0.0, "vowel_e": 0.0, "vowel_o": 0.0}
    )  # fmt: skip
    c = vmc_to_controls({}, _quat("z", 30), mirror=True)
    assert c == pytest.approx({"head_yaw": 0.0, "head_tilt": -1.0, "head_pitch": 0.0})  # clamped, mirrored
    assert vmc_to_controls({}, _quat("x", 10))["head_pitch"] == pytest.approx(-0.5)  # Unity +x looks down
    # NaN and inf never reach the controls
    assert vmc_to_controls({"Joy": float("nan"), "A": float("inf")}, (float("nan"), 0, 0, 1)) == {}
    assert vmc_to_controls({"Neutral": 1.0, "LookUp": 0.3}) == {}


def test_vmc_listener_over_loopback_udp():
    drv = VMCDriver("127.0.0.1", 0)  # ephemeral port
    assert drv.port != 0
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        frame = encode_bundle(
            [
                encode_message("/VMC/Ext/OK", 1),
                encode_message("/VMC/Ext/Blend/Val", "Blink_L", 1.0),
                encode_message("/VMC/Ext/Blend/Val", "Blink_R", 1.0),
                encode_message("/VMC/Ext/Blend/Val", "A", 0.7),
                encode_message("/VMC/Ext/Blend/Val", "Joy", 0.5),
                encode_bundle(
                    [
                        encode_message(
                            "/VMC/Ext/Bone/Pos", "Head", 0.0, 1.4, 0.0, *_quat("y", -15), tags="sfffffff"
                        )
                    ]
                ),
            ]
        )
        sender.sendto(frame, ("127.0.0.1", drv.port))
        assert drv.wait(lambda d: d.packets >= 1, timeout=5.0)
        # Blend values wait for Apply; the head bone applies at once.
        assert drv.update(0.0) == pytest.approx({"head_yaw": 0.5, "head_tilt": 0.0, "head_pitch": 0.0})
        sender.sendto(encode_message("/VMC/Ext/Blend/Apply"), ("127.0.0.1", drv.port))
        sender.sendto(b"garbage!", ("127.0.0.1", drv.port))  # malformed: counted, dropped
        assert drv.wait(lambda d: d.packets >= 2 and d.errors >= 1, timeout=5.0)
        got = drv.update(0.0)
        assert {k: got[k] for k in ("eye_open_l", "eye_open_r", "mouth_open", "smile", "head_yaw")} == (
            pytest.approx(
                {"eye_open_l": 0.0, "eye_open_r": 0.0, "mouth_open": 0.7, "smile": 0.5, "head_yaw": 0.5}
            )
        )
        assert "address pattern" in (drv.last_error or "") or "'/'" in (drv.last_error or "")
    finally:
        sender.close()
        drv.close()
    assert not drv._thread.is_alive()


def test_vmc_port_in_use_is_a_clear_error():
    first = VMCDriver("127.0.0.1", 0)
    try:
        with pytest.raises(OSError, match="another VMC receiver"):
            VMCDriver("127.0.0.1", first.port)
    finally:
        first.close()


def test_keyboard_driver_holds_combines_and_releases():
    from avatarforge.animate.drivers import IdleDriver, KeyboardDriver, merge_targets

    kb = KeyboardDriver()
    idle = IdleDriver(seed=0)
    assert kb.update(0.0) == {}  # nothing held: the idle driver's targets pass through
    assert merge_targets([idle, kb], 0.0) == merge_targets([idle], 0.0)
    assert kb.key_down("B") and kb.key_down(" ") and not kb.key_down("q")
    assert kb.update(0.0) == {"eye_open": 0.0, "mouth_open": 1.0}
    assert kb.key_down("m")  # pressed last: wins the mouth
    assert kb.update(0.0)["mouth_open"] == 0.6 and kb.held == ["b", " ", "m"]
    v = kb.version
    assert kb.key_down("m") and kb.version == v  # key repeat changes nothing
    assert kb.key_up("m") and kb.update(0.0)["mouth_open"] == 1.0
    assert merge_targets([idle, kb], 0.0)["eye_open_l"] == 0.0
    assert kb.key_up("b") and not kb.key_up("b")
    assert kb.update(0.0) == {"mouth_open": 1.0}
    kb.release_all()
    assert kb.update(0.0) == {} and kb.held == []
    custom = KeyboardDriver({"ArrowLeft": {"head_yaw": -5.0}})  # clamped to range
    custom.key_down("arrowleft")
    assert custom.update(0.0) == {"head_yaw": -1.0}
    with pytest.raises(ValueError, match="unknown control"):
        KeyboardDriver({"x": {"blink": 1.0}})
