"""Drivers: where the expression controls come from, frame by frame.

A driver is anything with ``update(t) -> {control: target}`` (``t`` = loop time in seconds)
and ``close()``; it returns *targets* for some of the controls (:data:`CONTROL_NAMES`)
and the frame loop (:mod:`avatarforge.animate.loop`) merges the drivers in order (later
ones win per control) and smooths the targets. Built in:

* :class:`IdleDriver`: random blinks and breathing sway, seeded;
* :class:`ScriptedDriver`: named actions (``idle``, ``blink``, ``sway``, ``talk``,
  ``smile``, ``look``, ``nod``) for ``--script blink,talk``;
* :class:`AudioDriver`: a WAV file (stdlib :mod:`wave`) -> RMS envelope with attack and
  release -> ``mouth_open``; :class:`MicrophoneDriver` does the same live with the
  optional ``sounddevice`` package;
* :class:`ManualDriver`: a thread-safe control state a UI or HTTP API sets;
  :class:`KeyboardDriver` maps held keys onto it (``B`` blink, ``Space``/``M`` mouth, ``S``
  smile, arrows turn and tilt the head: :data:`DEFAULT_KEYS`) for any UI that forwards
  key-down / key-up events (a browser, a terminal, pygame);
* :class:`VMCDriver`: the VMC protocol (OSC over UDP, as sent by VSeeFace, VMagicMirror,
  Warudo, ...): blend shapes (``Blink_L``, ``Blink_R``, ``A I U E O``, ``Joy``, ``Fun``, VRM
  1.0 names too) and the ``Head`` bone rotation, listening on ``127.0.0.1:39539`` by
  default (:func:`vmc_to_controls` is the mapping).
"""

from __future__ import annotations

import math
import socket
import threading
import time
import wave
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from avatarforge.animate.osc import OSCError, iter_messages, parse_packet
from avatarforge.data.procedural.schema import LIVE_CONTROLS, NEUTRAL_LIVE
from avatarforge.errors import MissingDependencyError
from avatarforge.models.animator import CONTROL_RANGES

__all__ = [
    "ALL_CONTROLS",
    "DEFAULT_KEYS",
    "LIVE_NAMES",
    "SCRIPT_ACTIONS",
    "VMC_DEFAULT_HOST",
    "VMC_DEFAULT_PORT",
    "AudioDriver",
    "AudioEnvelope",
    "Driver",
    "IdleDriver",
    "KeyboardDriver",
    "ManualDriver",
    "MicrophoneDriver",
    "ScriptedDriver",
    "VMCDriver",
    "clamp_controls",
    "envelope_from_samples",
    "expand_eyes",
    "head_angles",
    "live_controls",
    "merge_targets",
    "read_wav",
    "vmc_to_controls",
]

VMC_DEFAULT_HOST = "127.0.0.1"
VMC_DEFAULT_PORT = 39539


@runtime_checkable
class Driver(Protocol):
    """What the frame loop needs from a driver."""

    def update(self, t: float) -> Mapping[str, float]:
        """Control targets at loop time ``t`` (seconds); may leave controls out."""
        ...

    def close(self) -> None:
        """Release sockets, threads, audio streams."""
        ...


#: The 17 live (rig) controls, in the schema's order (:data:`LIVE_CONTROLS`).
LIVE_NAMES: tuple[str, ...] = tuple(LIVE_CONTROLS)
#: Every control a driver may send and its range: the 17 live controls plus the animator's
#: ``eye_open`` (both eyes at once: :func:`expand_eyes`).
ALL_CONTROLS: dict[str, tuple[float, float]] = {**CONTROL_RANGES, **LIVE_CONTROLS}


def clamp_controls(values: Mapping[str, float]) -> dict[str, float]:
    """Known controls (:data:`ALL_CONTROLS`) clamped to their ranges; unknown names and
    values that are not finite numbers raise ValueError naming the control and its range."""
    out = {}
    for k, v in values.items():
        if k not in ALL_CONTROLS:
            raise ValueError(f"unknown control {k!r}; valid controls: {', '.join(ALL_CONTROLS)}")
        lo, hi = ALL_CONTROLS[k]
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"control {k} must be a number from {lo:g} to {hi:g}, got {v!r}") from None
        if not math.isfinite(v):
            raise ValueError(f"control {k} must be a finite number from {lo:g} to {hi:g}, got {v}")
        out[k] = min(hi, max(lo, v))
    return out


def expand_eyes(values: Mapping[str, float]) -> dict[str, float]:
    """``eye_open`` (both eyes) as ``eye_open_l`` and ``eye_open_r``, unless the same dict
    names an eye itself (that eye wins); other controls unchanged."""
    out = dict(values)
    if "eye_open" in out:
        v = out.pop("eye_open")
        out.setdefault("eye_open_l", v)
        out.setdefault("eye_open_r", v)
    return out


def live_controls(values: Mapping[str, float]) -> dict[str, float]:
    """All 17 live controls (neutral where ``values`` has none) plus ``eye_open``, the mean of
    the two eyes, for the animator (exact when both eyes are equal)."""
    out = {**NEUTRAL_LIVE, **expand_eyes(values)}
    out["eye_open"] = (out["eye_open_l"] + out["eye_open_r"]) / 2
    return out


def merge_targets(drivers: Iterable[Any], t: float) -> dict[str, float]:
    """Every driver's targets at ``t``, later drivers overriding earlier ones per control.

    A driver's ``eye_open`` stands for both eyes (:func:`expand_eyes`), so a later driver's
    ``eye_open`` overrides an earlier one's ``eye_open_l``, and the other way round.
    """
    out: dict[str, float] = {}
    for d in drivers:
        out.update(expand_eyes(clamp_controls(d.update(t))))
    return out


class _Base:
    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# =============================================================================== idle / scripted
class IdleDriver(_Base):
    """Idle life, deterministic for a seed: random blinks, a slow breathing sway of the head,
    and for the live rig breathing, a slight body sway and occasional eye darts.

    The blinks and head sway are the animator's (``eye_open``, ``head_tilt``, ``head_yaw``;
    their random stream is unchanged by the live extras, which draw from their own); the
    extras are the rig's controls (``breath``, ``body_sway``, ``gaze_x``/``gaze_y``) and are
    left out with ``live=False``.

    Args:
        seed: blink times, sway phases and eye darts.
        blink: produce blinks (``eye_open``).
        sway: produce head sway (``head_tilt``, ``head_yaw``).
        blink_interval: seconds between blinks, uniform in this range (people blink every
            2-6 s at rest); one blink in ``double_blink`` is followed by a second one.
        blink_duration: close + open, seconds.
        sway_amount: peak tilt (yaw is 60% of it) in control units.
        breath_period: seconds per breathing cycle.
        live: also breathing (``breath``), body sway and eye darts.
        dart_interval: seconds between eye darts (glances aside that return), uniform.
        dart_amount: largest gaze offset of a dart.
        body_amount: peak ``body_sway``.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        blink: bool = True,
        sway: bool = True,
        blink_interval: tuple[float, float] = (2.0, 5.5),
        blink_duration: float = 0.18,
        sway_amount: float = 0.15,
        breath_period: float = 4.0,
        live: bool = True,
        dart_interval: tuple[float, float] = (2.5, 7.0),
        dart_amount: float = 0.45,
        body_amount: float = 0.12,
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.blink, self.sway, self.live = blink, sway, live
        self.blink_interval = blink_interval
        self.blink_duration = blink_duration
        self.sway_amount = sway_amount
        self.breath_period = breath_period
        self.dart_interval = dart_interval
        self.dart_amount = dart_amount
        self.body_amount = body_amount
        self._phase = self.rng.random(2) * 2 * math.pi
        self._blinks: list[float] = [float(self.rng.uniform(0.3, blink_interval[1]))]
        # The live extras draw from their own stream: the blinks stay what they always were.
        self._live_rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 1])
        self._live_phase = self._live_rng.random(3) * 2 * math.pi
        self._darts: list[tuple[float, float, float, float]] = []  # start, hold, gx, gy
        self._next_dart = float(self._live_rng.uniform(1.0, dart_interval[1]))

    def blink_times(self, until: float) -> list[float]:
        """Start times of the blinks up to ``until`` seconds (generated lazily, in order)."""
        lo, hi = self.blink_interval
        while self._blinks[-1] < until:
            self._blinks.append(self._blinks[-1] + float(self.rng.uniform(lo, hi)))
        return [b for b in self._blinks if b <= until]

    def eye_open(self, t: float) -> float:
        """1 = open; a blink closes fast (40% of the duration) and opens slower."""
        d = self.blink_duration
        for start in reversed(self.blink_times(t)):
            u = (t - start) / d
            if u > 1:
                break
            if u >= 0:
                return 1.0 - (u / 0.4 if u < 0.4 else (1.0 - u) / 0.6)
        return 1.0

    def gaze(self, t: float) -> tuple[float, float]:
        """``(gaze_x, gaze_y)``: a dart jumps aside (a saccade: ~40 ms), holds 0.3-0.9 s and
        returns; in between the eyes rest ahead."""
        lo, hi = self.dart_interval
        r = self._live_rng
        while self._next_dart <= t:
            ang = float(r.uniform(0, 2 * math.pi))
            amp = self.dart_amount * float(r.uniform(0.4, 1.0))
            hold = float(r.uniform(0.3, 0.9))
            self._darts.append((self._next_dart, hold, amp * math.cos(ang), 0.6 * amp * math.sin(ang)))
            self._next_dart += hold + float(r.uniform(lo, hi))
            del self._darts[:-8]  # a long stream keeps only the recent ones
        for start, hold, gx, gy in reversed(self._darts):
            if start <= t:
                u = t - start
                if u > hold + 0.05:
                    break
                k = min(u / 0.04, 1.0) * min((hold + 0.05 - u) / 0.05, 1.0)
                return gx * k, gy * k
        return 0.0, 0.0

    def update(self, t: float) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.blink:
            out["eye_open"] = self.eye_open(t)
        if self.sway:
            w = 2 * math.pi / self.breath_period
            out["head_tilt"] = self.sway_amount * math.sin(w * t + self._phase[0])
            out["head_yaw"] = 0.6 * self.sway_amount * math.sin(0.37 * w * t + self._phase[1])
        if self.live:
            w = 2 * math.pi / self.breath_period
            p = self._live_phase
            breath = 0.5 + 0.45 * math.sin(w * t + p[0]) + 0.05 * math.sin(2.7 * w * t)
            out["breath"] = min(1.0, max(0.0, breath))
            if self.sway:
                out["body_sway"] = self.body_amount * (
                    0.7 * math.sin(0.23 * w * t + p[1]) + 0.3 * math.sin(0.61 * w * t + p[2])
                )
            out["gaze_x"], out["gaze_y"] = self.gaze(t)
        return out


#: Actions of :class:`ScriptedDriver` (``--script``).
SCRIPT_ACTIONS: dict[str, str] = {
    "idle": "blinks and breathing sway",
    "blink": "random blinks only",
    "sway": "breathing sway only",
    "talk": "syllable-like mouth movement (about 4 per second, with pauses)",
    "smile": "a slow smile that comes and goes",
    "look": "looks left and right",
    "nod": "tilts the head from side to side",
}


class ScriptedDriver(_Base):
    """Named actions combined, e.g. ``ScriptedDriver(["blink", "talk"])``; seeded.

    Later actions override earlier ones on the controls they share.
    """

    def __init__(self, actions: Sequence[str] | str, seed: int = 0) -> None:
        if isinstance(actions, str):
            actions = [a.strip() for a in actions.split(",") if a.strip()]
        bad = [a for a in actions if a not in SCRIPT_ACTIONS]
        if bad:
            raise ValueError(f"unknown script action(s) {bad}; valid actions: {', '.join(SCRIPT_ACTIONS)}")
        self.actions = list(actions)
        self.seed = seed
        blink = any(a in ("idle", "blink") for a in self.actions)
        sway = any(a in ("idle", "sway") for a in self.actions)
        self.idle = IdleDriver(seed, blink=blink, sway=sway, live=False) if (blink or sway) else None
        rng = np.random.default_rng(seed + 1)
        # talk: a syllable every 0.22-0.32 s with amplitude 0.4-1, and a pause every ~2 s
        self._syllables: list[tuple[float, float, float]] = []  # (start, duration, amplitude)
        t = 0.2
        while t < 600:
            if rng.random() < 0.12:
                t += float(rng.uniform(0.4, 0.9))  # pause
            dur = float(rng.uniform(0.22, 0.32))
            self._syllables.append((t, dur, float(rng.uniform(0.4, 1.0))))
            t += dur
        self._starts = np.array([s[0] for s in self._syllables])

    def mouth(self, t: float) -> float:
        """Talking mouth openness at ``t``: a smooth bump per syllable."""
        i = int(np.searchsorted(self._starts, t, side="right")) - 1
        if i < 0:
            return 0.0
        start, dur, amp = self._syllables[i]
        u = (t - start) / dur
        return amp * math.sin(math.pi * u) ** 2 if 0 <= u <= 1 else 0.0

    def update(self, t: float) -> dict[str, float]:
        out: dict[str, float] = {}
        for a in self.actions:
            if a in ("idle", "blink", "sway") and self.idle is not None:
                out.update(self.idle.update(t))
            elif a == "talk":
                out["mouth_open"] = self.mouth(t)
            elif a == "smile":
                out["smile"] = 0.8 * max(0.0, math.sin(2 * math.pi * t / 6.0 - 0.5))
            elif a == "look":
                out["head_yaw"] = 0.8 * math.sin(2 * math.pi * t / 5.0)
            elif a == "nod":
                out["head_tilt"] = 0.6 * math.sin(2 * math.pi * t / 3.0)
        return out


# =============================================================================== audio
def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A PCM WAV file as mono float32 samples in [-1, 1] and its sample rate.

    Reads 8-bit unsigned, 16-, 24- and 32-bit signed PCM with the stdlib :mod:`wave`
    module; channels are averaged.

    Raises:
        ValueError: not a PCM WAV file the module can read (the message says what it is).
    """
    try:
        with wave.open(str(path), "rb") as w:
            n_ch, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError) as e:
        raise ValueError(f"{path}: not a PCM WAV file readable by the wave module ({e})") from None
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    else:  # pragma: no cover - wave rejects other widths
        raise ValueError(f"{path}: unsupported sample width {width}")
    x = x[: (len(x) // n_ch) * n_ch].reshape(-1, n_ch).mean(axis=1)
    return x.astype(np.float32), int(rate)


def _attack_release(level: np.ndarray, hop_s: float, attack: float, release: float) -> np.ndarray:
    """One-pole follower: rises with time constant ``attack``, falls with ``release`` (s)."""
    a_up = 1.0 - math.exp(-hop_s / max(attack, 1e-6))
    a_dn = 1.0 - math.exp(-hop_s / max(release, 1e-6))
    out = np.empty_like(level)
    y = 0.0
    for i, x in enumerate(level.tolist()):
        y += (x - y) * (a_up if x > y else a_dn)
        out[i] = y
    return out


def envelope_from_samples(
    samples: np.ndarray,
    rate: int,
    *,
    hop: float = 0.01,
    window: float = 0.03,
    attack: float = 0.03,
    release: float = 0.12,
    floor_db: float = -45.0,
    ceiling_db: float | None = None,
) -> np.ndarray:
    """Mouth openness per ``hop`` seconds from mono samples: RMS -> dB -> [0, 1] -> attack/release.

    Levels at or below ``floor_db`` (dBFS; the noise gate) map to 0, levels at
    ``ceiling_db`` or above to 1 (default: the file's 95th percentile level, at least 20 dB
    above the floor, so quiet recordings still open the mouth).
    """
    hop_n = max(1, round(hop * rate))
    win_n = max(hop_n, round(window * rate))
    n_frames = max(1, math.ceil(len(samples) / hop_n))
    padded = np.concatenate([samples.astype(np.float64), np.zeros(win_n, np.float64)])
    sq = np.concatenate([[0.0], np.cumsum(padded * padded)])
    starts = np.arange(n_frames) * hop_n
    rms = np.sqrt(np.maximum(sq[starts + win_n] - sq[starts], 0.0) / win_n)
    db = 20 * np.log10(np.maximum(rms, 1e-10))
    if ceiling_db is None:
        voiced = db[db > floor_db]
        ceiling_db = float(np.percentile(voiced, 95)) if voiced.size else floor_db + 20.0
        ceiling_db = max(ceiling_db, floor_db + 20.0)
    level = np.clip((db - floor_db) / (ceiling_db - floor_db), 0.0, 1.0).astype(np.float32)
    return _attack_release(level, hop_n / rate, attack, release)


class AudioEnvelope:
    """Mouth openness over time from a sound: ``value(t)`` looks it up (0 past the end)."""

    def __init__(self, envelope: np.ndarray, hop: float) -> None:
        self.envelope = np.asarray(envelope, np.float32)
        self.hop = float(hop)

    @property
    def duration(self) -> float:
        return len(self.envelope) * self.hop

    def value(self, t: float) -> float:
        i = int(t / self.hop)
        return float(self.envelope[i]) if 0 <= i < len(self.envelope) else 0.0


class AudioDriver(_Base):
    """``mouth_open`` from a WAV file's loudness (lip flaps; no phoneme recognition).

    Args:
        path: a PCM WAV file.
        gain: multiplies the openness (then clamped to 1).
        attack, release: envelope time constants in seconds (fast opening, slower closing
            looks like speech).
        floor_db: noise gate in dBFS.
        offset: seconds of the file at loop time 0 (to sync with a video).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        gain: float = 1.0,
        attack: float = 0.03,
        release: float = 0.12,
        floor_db: float = -45.0,
        offset: float = 0.0,
        hop: float = 0.01,
    ) -> None:
        samples, rate = read_wav(path)
        self.path = Path(path)
        self.rate = rate
        self.gain = gain
        self.offset = offset
        env = envelope_from_samples(samples, rate, hop=hop, attack=attack, release=release, floor_db=floor_db)
        self.envelope = AudioEnvelope(env, hop)

    @property
    def duration(self) -> float:
        """Length of the audio in seconds."""
        return self.envelope.duration

    def update(self, t: float) -> dict[str, float]:
        return {"mouth_open": min(1.0, self.gain * self.envelope.value(t + self.offset))}


class MicrophoneDriver(_Base):
    """Live ``mouth_open`` from the default (or given) microphone; needs ``sounddevice``.

    Raises:
        MissingDependencyError: ``sounddevice`` is not installed (``pip install sounddevice``).
    """

    def __init__(
        self,
        device: int | str | None = None,
        *,
        rate: int = 16000,
        block: float = 0.02,
        gain: float = 1.0,
        attack: float = 0.03,
        release: float = 0.12,
        floor_db: float = -50.0,
        ceiling_db: float = -15.0,
    ) -> None:
        try:
            import sounddevice as sd
        except (ImportError, OSError) as e:  # OSError: PortAudio library missing
            raise MissingDependencyError(
                "the microphone driver needs the 'sounddevice' package (and the PortAudio library): "
                "pip install sounddevice  -- or animate from a file with --audio speech.wav"
            ) from e
        self.gain = gain
        self._level = 0.0
        self._lock = threading.Lock()
        a_up = 1.0 - math.exp(-block / attack)
        a_dn = 1.0 - math.exp(-block / release)

        def callback(indata: np.ndarray, frames: int, t: Any, status: Any) -> None:
            rms = float(np.sqrt(np.mean(np.square(indata.astype(np.float64)))))
            db = 20 * math.log10(max(rms, 1e-10))
            x = min(1.0, max(0.0, (db - floor_db) / (ceiling_db - floor_db)))
            with self._lock:
                self._level += (x - self._level) * (a_up if x > self._level else a_dn)

        self._stream = sd.InputStream(
            device=device, channels=1, samplerate=rate, blocksize=round(block * rate), callback=callback
        )
        self._stream.start()

    def update(self, t: float) -> dict[str, float]:
        with self._lock:
            return {"mouth_open": min(1.0, self.gain * self._level)}

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()


# =============================================================================== manual
class ManualDriver(_Base):
    """A thread-safe control state: ``set(eye_open=0.2)`` from any thread, read by the loop.

    Only controls that were set are returned by :meth:`update` (the others stay with the
    drivers before it), until :meth:`clear`.
    """

    def __init__(self, **initial: float) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, float] = clamp_controls(initial)
        self.version = 0  # incremented on every change (UIs poll it)

    def set(self, values: Mapping[str, float] | None = None, **controls: float) -> dict[str, float]:
        """Set some controls (clamped to range); returns the whole state."""
        new = clamp_controls({**(values or {}), **controls})
        with self._lock:
            if "eye_open" in new:  # both eyes: forget a single eye set before
                self._values.pop("eye_open_l", None)
                self._values.pop("eye_open_r", None)
            elif ("eye_open_l" in new or "eye_open_r" in new) and "eye_open" in self._values:
                self._values = expand_eyes(self._values)  # one eye now: the other keeps its value
            self._values.update(new)
            self.version += 1
            return dict(self._values)

    def clear(self, *names: str) -> None:
        """Forget the named controls (all when none are named)."""
        with self._lock:
            for n in names or list(self._values):
                self._values.pop(n, None)
            self.version += 1

    def get(self) -> dict[str, float]:
        """A copy of the current state."""
        with self._lock:
            return dict(self._values)

    def update(self, t: float) -> dict[str, float]:
        return self.get()


#: Key -> the controls it sets while held (:class:`KeyboardDriver`). Names follow the DOM's
#: ``KeyboardEvent.key`` (case-insensitive): letters, ``" "``/``"Space"``, ``"ArrowLeft"``...
DEFAULT_KEYS: dict[str, dict[str, float]] = {
    "b": {"eye_open": 0.0},
    " ": {"mouth_open": 1.0},
    "space": {"mouth_open": 1.0},
    "m": {"mouth_open": 0.6},
    "s": {"smile": 1.0},
    "f": {"smile": -0.8},
    "arrowleft": {"head_yaw": -0.7},
    "arrowright": {"head_yaw": 0.7},
    "arrowup": {"head_tilt": -0.5},
    "arrowdown": {"head_tilt": 0.5},
}


class KeyboardDriver(ManualDriver):
    """Held keys -> controls: :meth:`key_down` applies a key's binding, :meth:`key_up`
    releases it (the control goes back to the drivers before this one, or to its last
    target). Several held keys combine; the most recently pressed wins per control.

    Thread-safe, like :class:`ManualDriver`: call it from the UI's event thread.

    Args:
        bindings: key -> ``{control: value}`` (default :data:`DEFAULT_KEYS`); keys are
            matched case-insensitively.
    """

    def __init__(self, bindings: Mapping[str, Mapping[str, float]] | None = None) -> None:
        super().__init__()
        self.bindings = {k.lower(): clamp_controls(v) for k, v in (bindings or DEFAULT_KEYS).items()}
        self._held: list[str] = []  # in press order

    def _apply(self) -> None:
        # Rebuild from the held keys, last pressed wins; called with the lock held.
        values: dict[str, float] = {}
        for key in self._held:
            values.update(self.bindings[key])
        self._values = values
        self.version += 1

    def key_down(self, key: str) -> bool:
        """Press ``key``; returns whether it is bound (unbound keys are ignored)."""
        k = key.lower()
        if k not in self.bindings:
            return False
        with self._lock:
            if k in self._held:  # key repeat
                return True
            self._held.append(k)
            self._apply()
        return True

    def key_up(self, key: str) -> bool:
        """Release ``key``; returns whether it was held."""
        k = key.lower()
        with self._lock:
            if k not in self._held:
                return False
            self._held.remove(k)
            self._apply()
        return True

    def release_all(self) -> None:
        """Release every key (e.g. when the window loses focus)."""
        with self._lock:
            self._held.clear()
            self._apply()

    @property
    def held(self) -> list[str]:
        """The keys held now, in press order."""
        with self._lock:
            return list(self._held)


# =============================================================================== VMC
_BLEND_ALIASES: dict[str, str] = {
    # VRM 0.x preset names -> canonical; VRM 1.0 names map onto the same.
    "blink": "blink",
    "blink_l": "blink_l",
    "blink_r": "blink_r",
    "blinkleft": "blink_l",
    "blinkright": "blink_r",
    "a": "a",
    "i": "i",
    "u": "u",
    "e": "e",
    "o": "o",
    "aa": "a",
    "ih": "i",
    "ou": "u",
    "ee": "e",
    "oh": "o",
    "joy": "joy",
    "happy": "joy",
    "fun": "fun",
    "relaxed": "fun",
    "sorrow": "sorrow",
    "sad": "sorrow",
    "angry": "angry",
}
#: How much each viseme opens the mouth (A is the widest; I and E are narrow).
VISEME_OPENNESS: dict[str, float] = {"a": 1.0, "i": 0.45, "u": 0.6, "e": 0.6, "o": 0.85}


def head_angles(quaternion: Sequence[float]) -> tuple[float, float, float]:
    """``(yaw, pitch, roll)`` in degrees of a Unity quaternion ``(x, y, z, w)`` (Y-X-Z order).

    Unity is left-handed with y up and z forward; VMC sends bone rotations in it.
    """
    x, y, z, w = (float(v) for v in quaternion)
    n = math.sqrt(x * x + y * y + z * z + w * w) or 1.0
    x, y, z, w = x / n, y / n, z / n, w / n
    pitch = math.degrees(math.asin(max(-1.0, min(1.0, 2 * (w * x - y * z)))))
    yaw = math.degrees(math.atan2(2 * (w * y + x * z), 1 - 2 * (x * x + y * y)))
    roll = math.degrees(math.atan2(2 * (w * z + x * y), 1 - 2 * (x * x + z * z)))
    return yaw, pitch, roll


def vmc_to_controls(
    blend: Mapping[str, float],
    head: Sequence[float] | None = None,
    *,
    yaw_degrees: float = 30.0,
    tilt_degrees: float = 15.0,
    pitch_degrees: float = 20.0,
    mirror: bool = False,
) -> dict[str, float]:
    """Map VMC blend shapes (and the Head bone quaternion) to live controls.

    VRM presets:

    * ``eye_open = 1 - Blink``; ``Blink_L``/``Blink_R`` close one eye each (``eye_open_l``
      is the character's left, ``Blink_L``);
    * ``mouth_open = max over visemes A I U E O of value x`` :data:`VISEME_OPENNESS`, and the
      visemes themselves as ``vowel_a`` ... ``vowel_o``;
    * ``smile = max(Joy, 0.7 Fun) - 0.7 max(Sorrow, Angry)``.

    "Perfect sync" senders send Apple's 52 ARKit blend shapes instead (``eyeBlinkLeft``,
    ``jawOpen``, ...); when any is present they are mapped by
    :func:`avatarforge.animate.tracking.arkit_to_live` (gaze, vowels, brows too) and the
    VRM presets fill in only what they leave out.

    Head: ``head_yaw = -yaw / yaw_degrees``, ``head_tilt = roll / tilt_degrees``,
    ``head_pitch = -pitch / pitch_degrees`` (clamped). The avatar faces the camera (+z in
    Unity), so turning to its own right (positive Unity yaw) moves the head towards image
    left, a positive roll is clockwise on screen and a positive Unity pitch looks down.
    ``mirror`` flips left and right, for senders that mirror the webcam.

    Only controls with data are returned; non-finite values are ignored. Names are
    case-insensitive; VRM 1.0 names (``blinkLeft``, ``aa``, ``happy``, ...) work too.
    """
    from avatarforge.animate.tracking import ARKIT_NAMES, arkit_to_live, mirror_controls

    b: dict[str, float] = {}
    arkit: dict[str, float] = {}
    arkit_lower = {n.lower() for n in ARKIT_NAMES}
    for name, v in blend.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            continue
        low = name.lower()
        key = _BLEND_ALIASES.get(low)
        if key is not None:
            b[key] = max(b.get(key, 0.0), min(1.0, max(0.0, float(v))))
        elif low in arkit_lower:
            arkit[name] = float(v)
    out: dict[str, float] = {}
    if {"blink", "blink_l", "blink_r"} & b.keys():
        both = b.get("blink", 0.0)
        if "blink_l" in b or "blink_r" in b:
            out["eye_open_l"] = 1.0 - max(both, b.get("blink_l", 0.0))
            out["eye_open_r"] = 1.0 - max(both, b.get("blink_r", 0.0))
        else:
            out["eye_open"] = 1.0 - both
    if VISEME_OPENNESS.keys() & b.keys():
        out["mouth_open"] = max(b.get(k, 0.0) * w for k, w in VISEME_OPENNESS.items())
        for k in VISEME_OPENNESS:
            out[f"vowel_{k}"] = b.get(k, 0.0)
    if {"joy", "fun", "sorrow", "angry"} & b.keys():
        out["smile"] = max(b.get("joy", 0.0), 0.7 * b.get("fun", 0.0)) - 0.7 * max(
            b.get("sorrow", 0.0), b.get("angry", 0.0)
        )
    if arkit:
        live = arkit_to_live(arkit)
        if "eye_open_l" in live:
            out.pop("eye_open", None)
        out.update(live)
    if head is not None and len(head) >= 4 and all(math.isfinite(float(v)) for v in head[:4]):
        yaw, pitch, roll = head_angles(head)
        out["head_yaw"] = -yaw / yaw_degrees
        out["head_tilt"] = roll / tilt_degrees
        out["head_pitch"] = -pitch / pitch_degrees
    out = clamp_controls(out)
    return mirror_controls(out) if mirror else out


class VMCDriver(_Base):
    """Listen for VMC protocol packets (OSC over UDP) and map them to controls.

    Handles ``/VMC/Ext/Blend/Val name value`` (collected; VRM presets or the 52 ARKit names
    of "perfect sync"), ``/VMC/Ext/Blend/Apply`` (makes the collected values current) and
    ``/VMC/Ext/Bone/Pos "Head" px py pz qx qy qz qw``; other addresses are ignored. A
    background thread receives; :meth:`update` returns the latest mapped controls.

    Never trusts a packet: malformed ones are counted (``errors``, ``last_error``) and
    dropped; NaN/inf values are dropped and counted (``dropped_values``); out-of-range values
    are clamped. A flood is bounded: the thread drains what waits in the socket and parses at
    most the newest ``max_batch`` datagrams of a burst (the older ones are counted in
    ``coalesced``), so 10,000 packets a second cost a fraction of a core and the frame loop
    keeps its rate.

    Args:
        host, port: where to listen; port 0 picks a free port (see :attr:`port`).
        yaw_degrees, tilt_degrees, pitch_degrees, mirror: see :func:`vmc_to_controls`.
        bone: the bone whose rotation drives the head.
        stale_after: seconds without a packet after which :meth:`update` returns nothing
            (the mixer fades back to idle); ``None``: keep the last values forever.
        max_batch: most datagrams parsed per burst.
    """

    def __init__(
        self,
        host: str = VMC_DEFAULT_HOST,
        port: int = VMC_DEFAULT_PORT,
        *,
        yaw_degrees: float = 30.0,
        tilt_degrees: float = 15.0,
        pitch_degrees: float = 20.0,
        mirror: bool = False,
        bone: str = "Head",
        stale_after: float | None = None,
        max_batch: int = 64,
    ) -> None:
        self.mapping = {
            "yaw_degrees": yaw_degrees,
            "tilt_degrees": tilt_degrees,
            "pitch_degrees": pitch_degrees,
            "mirror": mirror,
        }
        self.bone = bone
        self.stale_after = stale_after
        self.max_batch = max_batch
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._sock.bind((host, port))
        except OSError as e:
            self._sock.close()
            raise OSError(
                f"cannot listen for VMC on {host}:{port} ({e.strerror or e}); is another VMC receiver running? "
                "pick another port and set it in the sender"
            ) from e
        self._sock.settimeout(0.1)  # the thread checks the stop flag this often
        self.host, self.port = self._sock.getsockname()[:2]
        self._lock = threading.RLock()  # re-entrant: wait() predicates may call update()
        self._cond = threading.Condition(self._lock)
        self._pending: dict[str, float] = {}
        self._blend: dict[str, float] = {}
        self._head: tuple[float, ...] | None = None
        self._controls: dict[str, float] = {}
        self.packets = 0
        self.messages = 0
        self.errors = 0
        self.coalesced = 0
        self.dropped_values = 0
        self.last_error: str | None = None
        self.last_packet_time: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"vmc-{self.port}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ receiving
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, _addr = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                break  # socket closed
            batch = [data]
            self._sock.setblocking(False)
            try:
                while len(batch) < 100_000:
                    try:
                        batch.append(self._sock.recvfrom(65535)[0])
                    except (BlockingIOError, InterruptedError):
                        break
            except OSError:
                break
            finally:
                if not self._stop.is_set():
                    self._sock.settimeout(0.1)
            if len(batch) > self.max_batch:
                with self._cond:
                    self.coalesced += len(batch) - self.max_batch
                    self.packets += len(batch) - self.max_batch
                batch = batch[-self.max_batch :]
            for data in batch:
                self.handle_packet(data)
            if len(batch) > 1:
                time.sleep(0.002)  # a burst: let the frame loop run

    def handle_packet(self, data: bytes) -> None:
        """Process one datagram (also usable without a socket, e.g. from a recording)."""
        try:
            msgs = list(iter_messages(parse_packet(data)))
        except OSCError as e:
            with self._cond:
                self.errors += 1
                self.last_error = str(e)
                self._cond.notify_all()
            return
        with self._cond:
            self.packets += 1
            self.last_packet_time = time.monotonic()
            changed = False
            for m in msgs:
                self.messages += 1
                a = m.address
                if a == "/VMC/Ext/Blend/Val" and len(m.args) >= 2 and isinstance(m.args[0], str):
                    v = m.args[1]
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        if math.isfinite(v):
                            self._pending[m.args[0][:64]] = float(v)
                        else:
                            self.dropped_values += 1
                    if len(self._pending) > 256:  # a sender inventing names: bound the memory
                        self._pending.clear()
                        self.errors += 1
                        self.last_error = "more than 256 blend shapes before an Apply"
                elif a == "/VMC/Ext/Blend/Apply":
                    self._blend.update(self._pending)
                    self._pending.clear()
                    if len(self._blend) > 256:
                        self._blend = dict(list(self._blend.items())[-256:])
                    changed = True
                elif a == "/VMC/Ext/Bone/Pos" and len(m.args) >= 8 and m.args[0] == self.bone:
                    q = m.args[4:8]
                    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in q):
                        if all(math.isfinite(v) for v in q) and any(q):
                            self._head = tuple(float(v) for v in q)
                            changed = True
                        else:
                            self.dropped_values += 1
            if changed:
                self._controls = vmc_to_controls(self._blend, self._head, **self.mapping)  # type: ignore[arg-type]
            self._cond.notify_all()

    # ------------------------------------------------------------------ reading
    def update(self, t: float) -> dict[str, float]:
        with self._lock:
            if self.stale_after is not None and (
                self.last_packet_time is None or time.monotonic() - self.last_packet_time > self.stale_after
            ):
                return {}
            return dict(self._controls)

    def stats(self) -> dict[str, Any]:
        """What the listener counted (packets, messages, errors, coalesced, dropped values)."""
        with self._lock:
            return {
                "packets": self.packets,
                "messages": self.messages,
                "errors": self.errors,
                "coalesced": self.coalesced,
                "dropped_values": self.dropped_values,
                "last_error": self.last_error,
            }

    def wait(self, predicate: Callable[[VMCDriver], bool], timeout: float = 2.0) -> bool:
        """Block until ``predicate(self)`` holds (checked after each packet) or ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout=timeout)

    def close(self) -> None:
        """Stop the thread and close the socket."""
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._sock.close()
