"""Layers with priorities and fades: idle < tracking < manual < one-shot animation < expression.

The frame loop's drivers used to be merged "later wins" per control, which makes a control
jump when a tracker starts or stops. :class:`Mixer` is one driver that blends *layers*
instead, in priority order (VTube Studio documents the same order: idle animation, then face
tracking, then one-shot animations, then expressions on top):

1. the **base**: every control neutral, then the idle life (:class:`~.drivers.IdleDriver`:
   blinks, breathing, sway, eye darts) -- always running underneath;
2. **tracking** layers (webcam page, iFacialMocap, VMC, audio lip sync), then the **manual**
   controls (sliders, keys, ``{"set": ...}``): per control, a layer's weight rises to 1 over
   ``fade_in`` seconds while it sends that control and falls to 0 over ``fade_out`` seconds
   after it stops (a tracker goes quiet when the face is lost), holding its last value, so
   the avatar glides from idle into tracking and back, never pops;
3. **one-shot animations** (:data:`ANIMATIONS`: blink, nod, shake, laugh, ...) and
   **expressions** (:data:`EXPRESSIONS`: happy, angry, surprised, sad, wink, ...; held, or
   for ``hold`` seconds) bring their own envelopes (:meth:`ExpressionState.mix`), with
   configurable fade times; an expression replacing another cross-fades.

The blend per control is ``out = out + (layer - out) * smoothstep(weight)``, layer after
layer. The result still goes through the loop's critically damped smoother.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from avatarforge.animate.drivers import clamp_controls, expand_eyes
from avatarforge.data.procedural.schema import NEUTRAL_LIVE

__all__ = [
    "ANIMATIONS",
    "EXPRESSIONS",
    "PRIORITIES",
    "AnimationPlayer",
    "ExpressionState",
    "Layer",
    "Mixer",
]

#: Layer priorities (higher wins): the order of :class:`Mixer` layers.
PRIORITIES: dict[str, int] = {"idle": 0, "tracking": 1, "manual": 2, "animation": 3, "expression": 4}

#: Expression presets: the live controls each one sets (the others stay with the layers
#: below: a happy face still blinks, talks and follows the head). ``eye_open`` sets both eyes.
EXPRESSIONS: dict[str, dict[str, float]] = {
    "happy": {"smile": 1.0, "eye_open": 0.55, "brow_y": 0.35},
    "angry": {"smile": -0.8, "brow_y": -1.0, "eye_open": 0.75},
    "surprised": {"eye_open": 1.0, "brow_y": 1.0, "mouth_open": 0.65, "vowel_o": 0.8, "smile": 0.0},
    "sad": {"smile": -0.7, "brow_y": 0.45, "eye_open": 0.6, "gaze_y": -0.35, "head_pitch": -0.25},
    "wink": {"eye_open_l": 0.0, "eye_open_r": 1.0, "smile": 0.6},
    "wink_right": {"eye_open_r": 0.0, "eye_open_l": 1.0, "smile": 0.6},
    "sleepy": {"eye_open": 0.2, "brow_y": -0.25, "head_tilt": 0.45, "head_pitch": -0.2},
    "pout": {"vowel_u": 1.0, "mouth_open": 0.15, "smile": -0.25, "brow_y": -0.3},
}


def _blink(u: float) -> dict[str, float]:
    closed = u / 0.4 if u < 0.4 else (1.0 - u) / 0.6
    return {"eye_open": 1.0 - closed}


def _nod(u: float) -> dict[str, float]:
    return {"head_pitch": -0.7 * math.sin(2 * math.pi * 2 * u) * math.sin(math.pi * u)}


def _shake(u: float) -> dict[str, float]:
    return {"head_yaw": 0.7 * math.sin(2 * math.pi * 3 * u) * math.sin(math.pi * u)}


def _laugh(u: float) -> dict[str, float]:
    env = math.sin(math.pi * u)
    return {
        "smile": 1.0,
        "eye_open": 0.35,
        "mouth_open": env * (0.45 + 0.35 * abs(math.sin(2 * math.pi * 5 * u))),
        "vowel_a": env,
        "head_pitch": 0.25 * env,
    }


def _bounce(u: float) -> dict[str, float]:
    return {"breath": abs(math.sin(2 * math.pi * 2 * u)), "head_pitch": 0.3 * math.sin(2 * math.pi * 2 * u)}


#: One-shot animations: duration (seconds) and the controls as a function of progress 0-1.
ANIMATIONS: dict[str, tuple[float, Callable[[float], dict[str, float]]]] = {
    "blink": (0.2, _blink),
    "nod": (1.0, _nod),
    "shake": (1.2, _shake),
    "laugh": (1.4, _laugh),
    "bounce": (0.9, _bounce),
}


def _smoothstep(w: float) -> float:
    w = 0.0 if w < 0.0 else 1.0 if w > 1.0 else w
    return w * w * (3.0 - 2.0 * w)


def _blend(below: float, value: float, weight: float) -> float:
    """``below`` eased towards ``value`` by ``smoothstep(weight)`` (exactly ``value`` at 1)."""
    e = _smoothstep(weight)
    return value if e >= 1.0 else below + (value - below) * e


def _ramp(elapsed: float, seconds: float) -> float:
    return 1.0 if seconds <= 0 else max(0.0, min(1.0, elapsed / seconds))


# =============================================================================== expressions
@dataclass
class _Entry:
    name: str
    values: dict[str, float]
    start: float
    fade_in: float
    fade_out: float
    until: float | None = None  # when it starts fading out (None: held)

    def envelope(self, now: float) -> float:
        e = _ramp(now - self.start, self.fade_in)
        if self.until is not None and now > self.until:
            e = min(e, 1.0 - _ramp(now - self.until, self.fade_out))
        return e

    def done(self, now: float) -> bool:
        return self.until is not None and now >= self.until + self.fade_out


class ExpressionState:
    """The expression of one avatar: at most one held (or timed) preset, cross-faded.

    Thread-safe; times are wall-clock (``clock``), so a chat bot's HTTP request and the
    frame loop agree. :meth:`mix` is what the :class:`Mixer` reads.

    Args:
        fade_in, fade_out: default fade times in seconds (a message may give its own).
        presets: name -> controls (default :data:`EXPRESSIONS`).
    """

    def __init__(
        self,
        fade_in: float = 0.25,
        fade_out: float = 0.4,
        presets: Mapping[str, Mapping[str, float]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fade_in, self.fade_out = float(fade_in), float(fade_out)
        self.presets = {k: expand_eyes(clamp_controls(v)) for k, v in (presets or EXPRESSIONS).items()}
        self.clock = clock
        self._entries: list[_Entry] = []
        self._lock = threading.Lock()

    @property
    def current(self) -> str | None:
        """The expression shown (not fading out), or None."""
        now = self.clock()
        with self._lock:
            for e in reversed(self._entries):
                if e.until is None or now < e.until:
                    return e.name
        return None

    def set(
        self,
        name: str,
        hold: float | None = None,
        fade_in: float | None = None,
        fade_out: float | None = None,
    ) -> None:
        """Show ``name`` (held, or for ``hold`` seconds); the one shown before fades out.

        Raises:
            ValueError: an unknown preset, or a negative/too long time (names the field).
        """
        if name not in self.presets:
            raise ValueError(f"unknown expression {name!r}; presets: {', '.join(self.presets)}")
        fi = self.fade_in if fade_in is None else _seconds("fade_in", fade_in, 10.0)
        fo = self.fade_out if fade_out is None else _seconds("fade_out", fade_out, 10.0)
        h = None if hold is None else _seconds("hold", hold, 3600.0)
        now = self.clock()
        with self._lock:
            self._release(now, fi)
            self._entries.append(
                _Entry(name, dict(self.presets[name]), now, fi, fo, None if h is None else now + fi + h)
            )

    def toggle(self, name: str) -> bool:
        """Show ``name``, or stop it when it is the one shown (a hotkey); returns whether it shows."""
        if self.current == name:
            self.clear()
            return False
        self.set(name)
        return True

    def clear(self, fade_out: float | None = None) -> None:
        """Fade the shown expression out (``fade_out`` seconds, default its own)."""
        now = self.clock()
        with self._lock:
            self._release(now, fade_out)

    def _release(self, now: float, fade_out: float | None) -> None:
        for e in self._entries:
            if e.until is None or e.until > now:
                e.until = now
                if fade_out is not None:
                    e.fade_out = fade_out

    def mix(self, t: float) -> dict[str, tuple[float, float]]:
        """Per control ``(value, weight)``: the entries' values weighted by their envelopes."""
        now = self.clock()
        acc: dict[str, list[float]] = {}
        with self._lock:
            self._entries = [e for e in self._entries if not e.done(now)]
            for e in self._entries:
                w = e.envelope(now)
                if w <= 0:
                    continue
                for k, v in e.values.items():
                    a = acc.setdefault(k, [0.0, 0.0, 0.0])  # sum w*v, sum w, max w
                    a[0] += w * v
                    a[1] += w
                    a[2] = max(a[2], w)
        return {k: (a[0] / a[1], min(1.0, a[1])) for k, a in acc.items() if a[1] > 0}

    def update(self, t: float) -> dict[str, float]:
        """The controls at full weight (for a plain "later wins" driver list)."""
        return {k: v for k, (v, w) in self.mix(t).items() if w > 0}

    def close(self) -> None:
        """Shared: nothing to release."""


def _seconds(name: str, value: Any, most: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= float(value) <= most:
        raise ValueError(f"{name} must be a number of seconds from 0 to {most:g}, got {value!r}")
    return float(value)


class AnimationPlayer:
    """One-shot animations (:data:`ANIMATIONS`) of one avatar; several may overlap.

    Thread-safe, wall-clock like :class:`ExpressionState`; each play fades in and out over
    ``fade`` seconds (the blink's own curve needs none).
    """

    def __init__(self, fade: float = 0.12, clock: Callable[[], float] = time.monotonic) -> None:
        self.fade = float(fade)
        self.clock = clock
        self._playing: list[tuple[str, float]] = []
        self._lock = threading.Lock()

    def play(self, name: str) -> None:
        """Start ``name``. Raises ValueError for an unknown animation."""
        if name not in ANIMATIONS:
            raise ValueError(f"unknown animation {name!r}; animations: {', '.join(ANIMATIONS)}")
        with self._lock:
            self._playing.append((name, self.clock()))
            del self._playing[:-8]

    @property
    def playing(self) -> list[str]:
        now = self.clock()
        with self._lock:
            return [n for n, s in self._playing if now - s < ANIMATIONS[n][0]]

    def mix(self, t: float) -> dict[str, tuple[float, float]]:
        now = self.clock()
        out: dict[str, tuple[float, float]] = {}
        with self._lock:
            self._playing = [(n, s) for n, s in self._playing if now - s < ANIMATIONS[n][0]]
            playing = list(self._playing)
        for name, start in playing:
            dur, curve = ANIMATIONS[name]
            el = now - start
            fade = 0.0 if name == "blink" else min(self.fade, dur / 3)
            w = min(_ramp(el, fade), _ramp(dur - el, fade))
            for k, v in expand_eyes(curve(el / dur)).items():
                out[k] = (v, w)  # later plays win
        return out

    def update(self, t: float) -> dict[str, float]:
        return {k: v for k, (v, w) in self.mix(t).items()}

    def close(self) -> None:
        """Shared: nothing to release."""


# =============================================================================== mixer
@dataclass
class Layer:
    """A source of controls in the :class:`Mixer`.

    ``source`` is a driver (``update(t)``; its per-control weights fade with ``fade_in`` /
    ``fade_out`` seconds of loop time as it starts and stops sending a control) or has
    ``mix(t) -> {control: (value, weight)}`` (its own envelopes: expressions, animations).
    """

    source: Any
    name: str = "tracking"
    priority: int = PRIORITIES["tracking"]
    fade_in: float = 0.3
    fade_out: float = 0.6
    weights: dict[str, float] = field(default_factory=dict)
    held: dict[str, float] = field(default_factory=dict)


class Mixer:
    """Blend ``base`` drivers (later wins, over neutral) and ``layers`` (by priority, with
    fades); a driver for :class:`~.loop.FrameLoop` that returns all 17 live controls.

    :attr:`active` names the layers with weight after the last update (for status pages).
    """

    def __init__(self, base: Sequence[Any] = (), layers: Sequence[Layer] = ()) -> None:
        self.base = list(base)
        self.layers = sorted(layers, key=lambda lay: lay.priority)  # stable: equal priority keeps order
        self._t: float | None = None
        self.active: list[str] = []

    def update(self, t: float) -> dict[str, float]:
        out = dict(NEUTRAL_LIVE)
        for d in self.base:
            out.update(expand_eyes(clamp_controls(d.update(t))))
        dt = 0.0 if self._t is None else max(0.0, min(0.5, t - self._t))
        self._t = t
        active = []
        for lay in self.layers:
            src = lay.source
            if hasattr(src, "mix"):
                mixed = src.mix(t)
                for k, (v, w) in mixed.items():
                    if k in out:
                        out[k] = _blend(out[k], v, w)
                if mixed:
                    active.append(lay.name)
                continue
            values = expand_eyes(clamp_controls(src.update(t)))
            for k in set(values) | set(lay.weights):
                if k not in out:
                    continue
                w = lay.weights.get(k, 0.0)
                if k in values:
                    lay.held[k] = values[k]
                    w = 1.0 if lay.fade_in <= 0 else min(1.0, w + dt / lay.fade_in)
                else:
                    w = 0.0 if lay.fade_out <= 0 else max(0.0, w - dt / lay.fade_out)
                if w <= 0.0 and k not in values:
                    lay.weights.pop(k, None)
                    lay.held.pop(k, None)
                    continue
                lay.weights[k] = w
                out[k] = _blend(out[k], lay.held[k], w)
            if lay.weights:
                active.append(lay.name)
        self.active = active
        return out

    def close(self) -> None:
        """Close the base drivers and the layers' sources (shared ones ignore it)."""
        for d in self.base:
            d.close()
        for lay in self.layers:
            lay.source.close()
