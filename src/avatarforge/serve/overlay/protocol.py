"""What goes over the wire: paths, close codes, the ``avatar=`` spec, control messages, frames.

Nothing here knows about FastAPI or threads: a control message is applied to an
:class:`OverlayControls` (the manual controls of one avatar, a driver for the frame loop),
and a frame is encoded to the bytes a socket sends.
"""

from __future__ import annotations

import io
import json
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "BAD_REQUEST_CLOSE_CODE",
    "CONTROL_PAGE_PATH",
    "CONTROL_SOCKET_PATH",
    "EXPRESSIONS_PATH",
    "FACE_MESH_PATH",
    "FRAME_SOCKET_PATH",
    "KEY_BINDINGS",
    "KEY_HELP",
    "MESSAGE_FIELDS",
    "NO_ANIMATOR_CLOSE_CODE",
    "NO_ANIMATOR_MESSAGE",
    "PAGE_PATH",
    "RIG_PATH",
    "STATIC_PATH",
    "TOO_MANY_LOOPS_CLOSE_CODE",
    "TRACKER_PATH",
    "TRACKER_STATIC_PATH",
    "UNAUTHORIZED_CLOSE_CODE",
    "OverlayBusy",
    "OverlayControls",
    "OverlayError",
    "apply_control",
    "encode_frame",
    "parse_avatar",
]

#: The overlay's paths (under the app's root path). The pages get the socket paths in their
#: config rather than spelling them out, so a path is named only here.
PAGE_PATH = "/overlay"
CONTROL_PAGE_PATH = "/overlay/control"
FRAME_SOCKET_PATH = "/ws/overlay"
#: The avatar's rig as JSON (rig mode: the page draws the frames).
RIG_PATH = "/overlay/rig"
CONTROL_SOCKET_PATH = "/ws/overlay/control"
#: The pages' scripts and stylesheets (static files, no API key needed).
STATIC_PATH = "/overlay/static"
#: The webcam face tracker page, its scripts, and the MediaPipe files it loads (from the
#: server: npm's @mediapipe/face_mesh installed at install time, never a CDN).
TRACKER_PATH = "/tracker"
TRACKER_STATIC_PATH = "/tracker/static"
FACE_MESH_PATH = "/tracker/mediapipe"
#: The expression presets and one-shot animations (JSON, for bots and control panels).
EXPRESSIONS_PATH = "/overlay/expressions"

#: WebSocket close code (application range 4000-4999) sent when no animator is loaded.
NO_ANIMATOR_CLOSE_CODE = 4503
#: Close code for a bad query parameter (the reason names it).
BAD_REQUEST_CLOSE_CODE = 4400
#: Close code when ``OverlayOptions.max_loops`` loops already run (join one of them instead).
TOO_MANY_LOOPS_CLOSE_CODE = 4429
#: Close code for a missing or wrong API key (policy violation). Such sockets are refused
#: *before* the handshake: the client gets HTTP 403 and never an open socket, and the
#: server log records the attempt as rejected (``"WebSocket /ws/overlay?key=[redacted]" 403``).
UNAUTHORIZED_CLOSE_CODE = 1008

NO_ANIMATOR_MESSAGE = (
    "no animator loaded: start the server with an animator (avatarforge serve RUN --animator ANIMATOR_RUN)"
)

#: Keyboard bindings (``KeyboardEvent.key`` values, case-insensitive for letters): what each
#: key does to the manual controls. ``("action", name)`` runs an action; ``("set", {...})``
#: sets controls; ``("step", name, delta)`` moves a control by ``delta``; ``("clear", names)``.
KEY_BINDINGS: dict[str, tuple[Any, ...]] = {
    "b": ("action", "blink"),
    "6": ("expression", "happy"),
    "7": ("expression", "angry"),
    "8": ("expression", "surprised"),
    "9": ("expression", "sad"),
    "w": ("expression", "wink"),
    "e": ("expression", "wink_right"),
    "z": ("expression", "sleepy"),
    "u": ("expression", "pout"),
    "n": ("animation", "nod"),
    "h": ("animation", "shake"),
    "l": ("animation", "laugh"),
    "1": ("clear", ("mouth_open", "smile")),
    "2": ("set", {"mouth_open": 0.5}),
    "3": ("set", {"mouth_open": 1.0}),
    "4": ("set", {"smile": 1.0}),
    "5": ("set", {"smile": -1.0}),
    "arrowleft": ("step", "head_yaw", -0.25),
    "arrowright": ("step", "head_yaw", 0.25),
    "arrowup": ("step", "head_tilt", -0.25),
    "arrowdown": ("step", "head_tilt", 0.25),
    "0": ("action", "reset"),
    "escape": ("action", "reset"),
    "p": ("action", "play_audio"),
}

#: What the keys do, for the pages and the docs.
KEY_HELP: list[tuple[str, str]] = [
    ("B", "blink"),
    ("1", "neutral mouth and smile"),
    ("2 / 3", "mouth half / wide open"),
    ("4 / 5", "smile / frown"),
    ("\u2190 \u2192", "turn the head (steps of 0.25)"),
    ("\u2191 \u2193", "tilt the head (steps of 0.25)"),
    ("6 / 7 / 8 / 9", "expression happy / angry / surprised / sad (press again: off)"),
    ("W / E / Z / U", "expression wink / wink right / sleepy / pout (press again: off)"),
    ("N / H / L", "one-shot: nod / shake the head / laugh"),
    ("0 or Esc", "reset every manual control and expression (idle and tracking take over)"),
    ("P", "play the server's WAV from the start (when one is configured)"),
]

_BLINK_SECONDS = 0.15
_AVATAR_RE = re.compile(r"^(studio|\d{1,9}|procedural:\d{1,9})$")


class OverlayError(ValueError):
    """A bad overlay request or control message; the message names the field and the fix."""


class OverlayBusy(OverlayError):
    """``OverlayOptions.max_loops`` loops already run; a new one is refused."""


def parse_avatar(spec: str | None) -> str:
    """Normalise an ``avatar=`` value (``studio``, ``N``, ``procedural:N``); OverlayError otherwise."""
    s = (spec or "studio").strip().lower()
    if not _AVATAR_RE.match(s):
        raise OverlayError(
            f"avatar must be 'studio', a generator seed (an integer) or 'procedural:N', got {spec!r}"
        )
    return str(int(s)) if s.isdigit() else s


# =============================================================================== controls
#: The fields of a control message (:func:`apply_control`).
MESSAGE_FIELDS = ("set", "clear", "action", "key", "expression", "animation", "track", "seq")


class OverlayControls:
    """What one avatar is told to do, shared by its loops: manual controls, the browser
    tracker's frames, one-shot animations and the expression.

    * :attr:`manual` -- a :class:`ManualDriver` (sliders, keys, ``{"set": ...}``);
    * :attr:`tracker` -- a :class:`~avatarforge.animate.tracking.TrackerInput` (the
      ``/tracker`` page's ``{"track": ...}`` frames; stale after 0.5 s: face lost);
    * :attr:`animations` -- an :class:`~avatarforge.animate.expressions.AnimationPlayer`
      (blink, nod, shake, laugh, bounce);
    * :attr:`expression` -- an :class:`~avatarforge.animate.expressions.ExpressionState`.

    :meth:`layers` gives them to a loop's :class:`~avatarforge.animate.expressions.Mixer` in
    priority order. Thread-safe. :meth:`update` is the older "manual controls plus a 0.15 s
    blink" driver, for plain driver lists.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        fade_in: float = 0.25,
        fade_out: float = 0.4,
        stale_after: float = 0.5,
    ) -> None:
        from avatarforge.animate.drivers import ManualDriver
        from avatarforge.animate.expressions import AnimationPlayer, ExpressionState
        from avatarforge.animate.tracking import TrackerInput

        self.manual = ManualDriver()
        self.tracker = TrackerInput(stale_after, clock)
        self.animations = AnimationPlayer(clock=clock)
        self.expression = ExpressionState(fade_in, fade_out, clock=clock)
        self.clock = clock
        self._blink_until = 0.0
        self._audio_restart = 0  # incremented by play_audio; audio wrappers watch it
        self._lock = threading.Lock()

    def blink(self) -> None:
        """Blink once (a one-shot animation; :meth:`update` closes the eyes for 0.15 s)."""
        with self._lock:
            self._blink_until = self.clock() + _BLINK_SECONDS
        self.animations.play("blink")

    @property
    def audio_restarts(self) -> int:
        """How many times ``play_audio`` was asked for (audio drivers watch it)."""
        return self._audio_restart

    def restart_audio(self) -> None:
        """Play the server's WAV from the start in every loop of this avatar."""
        with self._lock:
            self._audio_restart += 1

    def get(self) -> dict[str, float]:
        """The manual controls set now (without the timed blink)."""
        return self.manual.get()

    def status(self) -> dict[str, Any]:
        """Manual controls, expression, animations playing, whether a tracker is live."""
        return {
            "manual": self.manual.get(),
            "expression": self.expression.current,
            "animations": self.animations.playing,
            "tracking": self.tracker.active,
            "tracker": self.tracker.stats.as_dict(),
        }

    def update(self, t: float) -> dict[str, float]:
        """The manual controls for the frame loop at time ``t``, with a running blink."""
        out = self.manual.get()
        with self._lock:
            if self.clock() < self._blink_until:
                out["eye_open"] = 0.0
        return out

    def layers(self, fade_in: float = 0.3, fade_out: float = 0.6) -> list[Any]:
        """The mixer layers of these controls: tracker (fading in and out over ``fade_in`` /
        ``fade_out`` seconds), manual, animations, expression."""
        from avatarforge.animate.expressions import PRIORITIES, Layer

        return [
            Layer(self.tracker, "webcam", PRIORITIES["tracking"], fade_in=fade_in, fade_out=fade_out),
            Layer(self.manual, "manual", PRIORITIES["manual"], fade_in=0.15, fade_out=0.3),
            Layer(self.animations, "animation", PRIORITIES["animation"]),
            Layer(self.expression, "expression", PRIORITIES["expression"]),
        ]

    def close(self) -> None:
        """Shared between loops: nothing to release."""


def _number(field: str, name: str, v: Any, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise OverlayError(f'"{field}": {name} must be a number from {lo:g} to {hi:g}, got {v!r}')
    return float(v)


def apply_control(controls: OverlayControls, message: Any) -> dict[str, float]:
    """Apply one control message (a dict or JSON text) and return the manual controls.

    Messages (several fields may be combined in one):

    * ``{"set": {control: value}}`` -- manual controls: any of the 17 live controls (and
      ``eye_open`` for both eyes), each in its range;
    * ``{"clear": [names] | true}``;
    * ``{"action": "blink" | "reset" | "play_audio"}``; ``{"key": KEY}`` (:data:`KEY_BINDINGS`);
    * ``{"expression": NAME}`` (held until cleared), ``{"expression": {"name": NAME,
      "hold": SECONDS, "fade_in": SECONDS, "fade_out": SECONDS}}`` (all but the name
      optional), ``{"expression": null}`` (fade out);
    * ``{"animation": NAME}`` -- a one-shot animation (nod, shake, laugh, bounce, blink);
    * ``{"track": {control: value} | null, "seq": N}`` -- a tracker frame (the ``/tracker``
      page): clamped into range rather than refused (it is a measurement), NaN dropped and
      counted; ``null`` = the face is lost.

    Raises:
        OverlayError: not JSON, not an object, unknown fields, controls, keys, expressions or
            actions, or values out of range (the message names the field and the range).
    """
    from avatarforge.animate.drivers import ALL_CONTROLS
    from avatarforge.animate.expressions import ANIMATIONS

    if isinstance(message, (str, bytes)):
        try:
            message = json.loads(message)
        except ValueError as e:
            raise OverlayError(f'a control message must be JSON, e.g. {{"action": "blink"}} ({e})') from None
    if not isinstance(message, Mapping):
        raise OverlayError(f"a control message must be a JSON object, got {type(message).__name__}")
    unknown = sorted(set(message) - set(MESSAGE_FIELDS))
    if unknown:
        raise OverlayError(
            f"unknown control message field(s) {unknown}; valid fields: {', '.join(MESSAGE_FIELDS)}"
        )
    if "track" in message:
        track = message["track"]
        seq = message.get("seq")
        if track is not None and not isinstance(track, Mapping):
            raise OverlayError('"track" must be an object of live controls, or null when the face is lost')
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
            raise OverlayError(f'"seq" must be an integer, got {seq!r}')
        controls.tracker.put(track, seq)
    if "set" in message:
        values = message["set"]
        if not isinstance(values, Mapping):
            raise OverlayError('"set" must be an object such as {"mouth_open": 0.5}')
        clean: dict[str, float] = {}
        for k, v in values.items():
            if k not in ALL_CONTROLS:
                raise OverlayError(f'"set": unknown control {k!r}; valid controls: {", ".join(ALL_CONTROLS)}')
            lo, hi = ALL_CONTROLS[k]
            clean[k] = _number("set", k, v, lo, hi)
        controls.manual.set(clean)
    if "clear" in message:
        names = message["clear"]
        if names is True:
            controls.manual.clear()
        elif isinstance(names, list) and all(isinstance(n, str) and n in ALL_CONTROLS for n in names):
            if names:
                controls.manual.clear(*names)
        else:
            raise OverlayError(f'"clear" must be true or a list of controls ({", ".join(ALL_CONTROLS)})')
    if "action" in message:
        _action(controls, message["action"])
    if "expression" in message:
        _expression(controls, message["expression"])
    if "animation" in message:
        name = message["animation"]
        if name not in ANIMATIONS:
            raise OverlayError(
                f'"animation": unknown animation {name!r}; animations: {", ".join(ANIMATIONS)}'
            )
        controls.animations.play(name)
    if "key" in message:
        key = message["key"]
        if not isinstance(key, str):
            raise OverlayError('"key" must be a KeyboardEvent.key string such as "b" or "ArrowLeft"')
        binding = KEY_BINDINGS.get(key.lower())
        if binding is None:
            raise OverlayError(f'"key": {key!r} is not bound; bound keys: {", ".join(KEY_BINDINGS)}')
        kind = binding[0]
        if kind == "action":
            _action(controls, binding[1])
        elif kind == "set":
            controls.manual.set(binding[1])
        elif kind == "clear":
            controls.manual.clear(*binding[1])
        elif kind == "expression":
            controls.expression.toggle(binding[1])
        elif kind == "animation":
            controls.animations.play(binding[1])
        else:  # step
            name, delta = binding[1], binding[2]
            lo, hi = ALL_CONTROLS[name]
            current = controls.manual.get().get(name, 0.0)
            controls.manual.set({name: min(hi, max(lo, current + delta))})
    return controls.get()


def _expression(controls: OverlayControls, spec: Any) -> None:
    from avatarforge.animate.expressions import EXPRESSIONS

    if spec is None:
        controls.expression.clear()
        return
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping):
        raise OverlayError(
            '"expression" must be a name, null, or {"name": ..., "hold": s, "fade_in": s, "fade_out": s}'
        )
    bad = sorted(set(spec) - {"name", "hold", "fade_in", "fade_out"})
    if bad:
        raise OverlayError(
            f'"expression": unknown field(s) {bad}; valid fields: name, hold, fade_in, fade_out'
        )
    name = spec.get("name")
    if name not in EXPRESSIONS:
        raise OverlayError(f'"expression": unknown expression {name!r}; presets: {", ".join(EXPRESSIONS)}')
    kw = {}
    for f, most in (("hold", 3600.0), ("fade_in", 10.0), ("fade_out", 10.0)):
        if spec.get(f) is not None:
            kw[f] = _number("expression", f, spec[f], 0.0, most)
    controls.expression.set(name, **kw)


def _action(controls: OverlayControls, action: Any) -> None:
    if action == "blink":
        controls.blink()
    elif action == "reset":
        controls.manual.clear()
        controls.expression.clear()
    elif action == "play_audio":
        controls.restart_audio()
    else:
        raise OverlayError(f'"action": unknown action {action!r}; valid actions: blink, reset, play_audio')


def encode_frame(image: np.ndarray, image_format: str = "png", size: int | None = None) -> bytes:
    """An ``(S, S, 4)`` uint8 frame as PNG (fast compression) or lossless WebP bytes, with alpha.

    ``size`` resizes (Pillow resamples RGBA in premultiplied alpha, so edges keep no dark fringe).
    """
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(image), "RGBA")
    if size is not None and im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if image_format == "webp":
        im.save(buf, format="WEBP", lossless=True, quality=0, method=0, exact=False)
    else:
        # Level 1: a frame at 256 px encodes in ~2 ms; level 6 costs several times more for ~15% less.
        im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
