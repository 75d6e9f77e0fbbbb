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
    "FRAME_SOCKET_PATH",
    "KEY_BINDINGS",
    "KEY_HELP",
    "NO_ANIMATOR_CLOSE_CODE",
    "NO_ANIMATOR_MESSAGE",
    "PAGE_PATH",
    "RIG_PATH",
    "STATIC_PATH",
    "TOO_MANY_LOOPS_CLOSE_CODE",
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
    ("0 or Esc", "reset every manual control (idle, audio and VMC take over)"),
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
class OverlayControls:
    """The manual controls of one avatar: a :class:`ManualDriver` plus timed actions.

    Thread-safe; a driver for the frame loop (``update(t)``). A blink closes the eyes for
    0.15 s of wall time (the loop's smoothing then opens them naturally).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        from avatarforge.animate.drivers import ManualDriver

        self.manual = ManualDriver()
        self.clock = clock
        self._blink_until = 0.0
        self._audio_restart = 0  # incremented by play_audio; audio wrappers watch it
        self._lock = threading.Lock()

    def blink(self) -> None:
        """Close the eyes for 0.15 s of wall time."""
        with self._lock:
            self._blink_until = self.clock() + _BLINK_SECONDS

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

    def update(self, t: float) -> dict[str, float]:
        """The manual controls for the frame loop at time ``t``, with a running blink."""
        out = self.manual.get()
        with self._lock:
            if self.clock() < self._blink_until:
                out["eye_open"] = 0.0
        return out

    def close(self) -> None:
        """Shared between loops: nothing to release."""


def apply_control(controls: OverlayControls, message: Any) -> dict[str, float]:
    """Apply one control message (a dict or JSON text) and return the manual controls.

    Messages: ``{"set": {control: value}}``, ``{"clear": [names] | true}``,
    ``{"action": "blink" | "reset" | "play_audio"}``, ``{"key": KEY}`` (see
    :data:`KEY_BINDINGS`). Several fields may be combined in one message.

    Raises:
        OverlayError: not JSON, not an object, unknown fields, controls, keys or actions,
            or values that are not finite numbers (the message names the field).
    """
    from avatarforge.models.animator import CONTROL_NAMES, CONTROL_RANGES

    if isinstance(message, (str, bytes)):
        try:
            message = json.loads(message)
        except ValueError as e:
            raise OverlayError(f'a control message must be JSON, e.g. {{"action": "blink"}} ({e})') from None
    if not isinstance(message, Mapping):
        raise OverlayError(f"a control message must be a JSON object, got {type(message).__name__}")
    unknown = sorted(set(message) - {"set", "clear", "action", "key"})
    if unknown:
        raise OverlayError(
            f"unknown control message field(s) {unknown}; valid fields: set, clear, action, key"
        )
    if "set" in message:
        values = message["set"]
        if not isinstance(values, Mapping):
            raise OverlayError('"set" must be an object such as {"mouth_open": 0.5}')
        clean: dict[str, float] = {}
        for k, v in values.items():
            if k not in CONTROL_RANGES:
                raise OverlayError(
                    f'"set": unknown control {k!r}; valid controls: {", ".join(CONTROL_NAMES)}'
                )
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                lo, hi = CONTROL_RANGES[k]
                raise OverlayError(f'"set": {k} must be a number from {lo:g} to {hi:g}, got {v!r}')
            clean[k] = float(v)
        controls.manual.set(clean)
    if "clear" in message:
        names = message["clear"]
        if names is True:
            controls.manual.clear()
        elif isinstance(names, list) and all(n in CONTROL_RANGES for n in names):
            if names:
                controls.manual.clear(*names)
        else:
            raise OverlayError(f'"clear" must be true or a list of controls ({", ".join(CONTROL_NAMES)})')
    if "action" in message:
        _action(controls, message["action"])
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
        else:  # step
            name, delta = binding[1], binding[2]
            current = controls.manual.get().get(name, 0.0)
            controls.manual.set({name: current + delta})
    return controls.get()


def _action(controls: OverlayControls, action: Any) -> None:
    if action == "blink":
        controls.blink()
    elif action == "reset":
        controls.manual.clear()
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
