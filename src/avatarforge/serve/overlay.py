"""The live overlay: an OBS browser source fed by a WebSocket of animated frames.

:func:`mount_overlay` adds to a FastAPI app (``avatarforge serve``; docs/studio.md):

* ``GET /overlay`` -- a page with a transparent background and no margins showing the
  animated avatar; query parameters ``avatar`` (see below), ``size`` (pixels), ``fps``,
  ``idle`` (``0`` turns the random blinks and sway off), ``key`` (the API key, when one is
  set: a browser source cannot send headers). Keyboard controls work when the page has
  focus (OBS: *Interact*).
* ``GET /overlay/control`` -- a control panel for a normal browser tab: buttons, the same
  keys, sliders, and **microphone lip sync** (the page measures the loudness with WebAudio
  and sends ``mouth_open`` values; the audio never leaves the browser).
* ``WS /ws/overlay`` -- binary messages, one lossless WebP (or PNG) with alpha per frame;
  the client may send JSON control messages on the same socket.
* ``WS /ws/overlay/control`` and ``POST /overlay/control`` -- control messages only (a
  Stream Deck, a script), answered with the avatar's manual control state.

Avatars (``avatar=``): ``studio`` (default: the avatar last sent from the web studio, or
generator seed 0 until then), an integer ``N`` (the loaded generator's seed ``N``), or
``procedural:N`` (the procedural renderer's avatar ``N``, what the animator was trained on).

Control messages (JSON objects; :func:`apply_control`): ``{"set": {"mouth_open": 0.4}}``,
``{"clear": ["smile"]}`` or ``{"clear": true}``, ``{"action": "blink"}`` (also
``"reset"``, ``"play_audio"``), ``{"key": "b"}`` (:data:`KEY_BINDINGS`).

Design: one :class:`FrameLoop` per (avatar, size, fps) runs in a background thread while
at least one client watches it and stops when the last one leaves; every frame is
encoded once and handed to each client's bounded queue (the oldest frame is dropped for a
client that cannot keep up, so a slow socket never grows memory or slows the others). The
drivers of a loop are, in order (later ones win per control): :class:`IdleDriver`, a WAV
:class:`AudioDriver` (server side, :class:`OverlayOptions.audio`), a :class:`VMCDriver`
(:class:`OverlayOptions.vmc`; one UDP listener shared by all loops) and the avatar's
manual controls (keys, buttons, browser microphone), shared by all loops of that avatar.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

__all__ = [
    "AUDIO_ENV",
    "KEY_BINDINGS",
    "NO_ANIMATOR_CLOSE_CODE",
    "TOO_MANY_LOOPS_CLOSE_CODE",
    "VMC_ENV",
    "OverlayBusy",
    "OverlayControls",
    "OverlayError",
    "OverlayHub",
    "OverlayOptions",
    "apply_control",
    "control_page_html",
    "encode_frame",
    "mount_overlay",
    "overlay_page_html",
    "parse_avatar",
]

#: WebSocket close code (application range 4000-4999) sent when no animator is loaded.
NO_ANIMATOR_CLOSE_CODE = 4503
#: Close code for a bad query parameter (the reason names it).
BAD_REQUEST_CLOSE_CODE = 4400
#: Close code when ``OverlayOptions.max_loops`` loops already run (join one of them instead).
TOO_MANY_LOOPS_CLOSE_CODE = 4429
#: Most avatars with manual controls kept (controls of avatars without a running loop are
#: dropped, oldest first, beyond this): ``?avatar=`` takes any of a billion seeds, and each
#: one must not be a permanent allocation.
MAX_CONTROLLED_AVATARS = 256
#: Close code for a missing or wrong API key (policy violation). Such sockets are refused
#: *before* the handshake: the client gets HTTP 403 and never an open socket, and the
#: server log records the attempt as rejected (``"WebSocket /ws/overlay?key=[redacted]" 403``).
UNAUTHORIZED_CLOSE_CODE = 1008

# uvicorn prints its WebSocket lines ("[accepted]", "403") here; explicit rejections go
# next to them so the log tells what happened (query keys are redacted on this logger).
_ws_log = logging.getLogger("uvicorn.error")

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


@dataclass
class OverlayOptions:
    """Server-side options of the overlay.

    Attributes:
        fps: default frame rate (a client may ask for another with ``?fps=``).
        max_fps: highest frame rate a client may ask for.
        max_size: largest ``?size=`` in pixels.
        image_format: ``"webp"`` (lossless, default) or ``"png"``. Measured at 256 px on one
            core: WebP (method 0) 3.9 ms and 6.7 kB a frame, PNG (level 1) 8.2 ms and 13.7 kB.
        idle: random blinks and breathing sway by default (``?idle=0`` turns them off).
        audio: a PCM WAV played (as ``mouth_open``) from the start of each loop; ``P`` or
            ``{"action": "play_audio"}`` restarts it.
        vmc: ``"HOST:PORT"`` (or ``"PORT"``) to listen for VMC face tracking, e.g.
            ``"127.0.0.1:39539"``; ``None`` = off.
        queue_frames: frames buffered per client before the oldest is dropped.
        seed: seed of the idle driver's blinks.
        max_loops: most frame loops running at once (one per distinct avatar, size, fps,
            idle); each renders continuously, so this bounds the overlay's CPU and memory.
            Clients of a running loop join it for free.
    """

    fps: float = 30.0
    max_fps: float = 60.0
    max_size: int = 1024
    image_format: str = "webp"
    idle: bool = True
    audio: str | Path | None = None
    vmc: str | None = None
    queue_frames: int = 2
    seed: int = 0
    max_loops: int = 8

    def __post_init__(self) -> None:
        if self.image_format not in ("png", "webp"):
            raise OverlayError(f"image_format must be 'png' or 'webp', got {self.image_format!r}")
        if not 0 < self.fps <= self.max_fps:
            raise OverlayError(f"fps must be in (0, max_fps={self.max_fps}], got {self.fps}")
        if self.queue_frames < 1:
            raise OverlayError(f"queue_frames must be >= 1, got {self.queue_frames}")
        if self.max_loops < 1:
            raise OverlayError(f"max_loops must be >= 1, got {self.max_loops}")
        if self.vmc is not None:
            _parse_hostport(self.vmc)


def _parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = str(text).rpartition(":")
    try:
        p = int(port)
    except ValueError:
        raise OverlayError(
            f"vmc must be 'HOST:PORT' or 'PORT' (e.g. 127.0.0.1:39539), got {text!r}"
        ) from None
    if not 0 <= p <= 65535:
        raise OverlayError(f"vmc port must be in 0..65535, got {p}")
    return host or "127.0.0.1", p


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
        with self._lock:
            self._blink_until = self.clock() + _BLINK_SECONDS

    @property
    def audio_restarts(self) -> int:
        return self._audio_restart

    def restart_audio(self) -> None:
        with self._lock:
            self._audio_restart += 1

    def get(self) -> dict[str, float]:
        """The manual controls set now (without the timed blink)."""
        return self.manual.get()

    def update(self, t: float) -> dict[str, float]:
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


class _RestartableAudio:
    """An :class:`AudioDriver` whose time origin moves to the loop time of a ``play_audio``."""

    def __init__(self, driver: Any, controls: OverlayControls) -> None:
        self.driver = driver
        self.controls = controls
        self._seen = controls.audio_restarts
        self._origin = 0.0

    def update(self, t: float) -> Mapping[str, float]:
        if self.controls.audio_restarts != self._seen:
            self._seen = self.controls.audio_restarts
            self._origin = t
        return self.driver.update(t - self._origin)

    def close(self) -> None:
        self.driver.close()


class _Neutral:
    """Every control at rest; the other drivers override it."""

    def update(self, t: float) -> Mapping[str, float]:
        from avatarforge.models.animator import NEUTRAL_CONTROLS

        return NEUTRAL_CONTROLS

    def close(self) -> None:
        pass


class _Shared:
    """A driver shared by several loops: closing one loop must not close it."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def update(self, t: float) -> Mapping[str, float]:
        return self.driver.update(t)

    def close(self) -> None:
        pass


# =============================================================================== frames
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


class _Subscriber:
    """One client's bounded frame queue on its event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, maxsize: int) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=maxsize)
        self.dropped = 0

    def _put(self, item: bytes | None) -> None:
        # Runs on the client's event loop: drop the oldest frame rather than grow the queue.
        while self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
                self.dropped += 1
        self.queue.put_nowait(item)

    def offer(self, item: bytes | None) -> None:
        with contextlib.suppress(RuntimeError):  # the client's loop already closed
            self.loop.call_soon_threadsafe(self._put, item)


class _Session:
    """One running frame loop (avatar, size, fps) and its subscribers."""

    def __init__(self, hub: OverlayHub, key: tuple[str, int | None, float, bool]) -> None:
        self.hub = hub
        self.key = key
        self.avatar, self.size, self.fps, self.idle = key
        self.subscribers: list[_Subscriber] = []
        self.frames = 0
        self.error: str | None = None
        self.renderer: Any = None
        self.loop: Any = None
        self.thread: threading.Thread | None = None
        self._vmc_acquired = False
        self._stopped = threading.Event()

    def start(self) -> None:
        from avatarforge.animate.drivers import AudioDriver, IdleDriver
        from avatarforge.animate.loop import AvatarRenderer, FrameLoop

        hub = self.hub
        avatar = hub.avatar_image(self.avatar)
        with hub.model_lock():
            self.renderer = AvatarRenderer(hub.state.animator, avatar)
        controls = hub.controls(self.avatar)
        # Neutral first: the loop keeps a control's last target when no driver sends it, so a
        # cleared manual control (or the end of a blink) would otherwise stick.
        drivers: list[Any] = [_Neutral()]
        if self.idle:
            drivers.append(IdleDriver(hub.options.seed))
        if hub.options.audio is not None:
            drivers.append(_RestartableAudio(AudioDriver(hub.options.audio), controls))
        vmc = hub.acquire_vmc()
        self._vmc_acquired = vmc is not None
        if vmc is not None:
            drivers.append(_Shared(vmc))
        drivers.append(controls)
        self.loop = FrameLoop(self._render, drivers, fps=self.fps, realtime=True, drop_late=True)
        self.thread = threading.Thread(target=self._run, name=f"overlay-{self.avatar}", daemon=True)
        self.thread.start()

    def _render(self, controls: Mapping[str, float]) -> np.ndarray:
        with self.hub.model_lock():
            return self.renderer(controls)

    def _run(self) -> None:
        try:
            for frame in self.loop.run():
                data = encode_frame(frame.image, self.hub.options.image_format, self.size)
                self.frames += 1
                for sub in list(self.subscribers):
                    sub.offer(data)
                if self._stopped.is_set():
                    break  # FrameLoop.run clears its own stop flag when it starts: check ours too
        except Exception as e:  # a failing model must end the streams with a reason, not hang them
            self.error = f"rendering failed: {type(e).__name__}: {e}"
            for sub in list(self.subscribers):
                sub.offer(None)
        finally:
            self.loop.close()
            if self._vmc_acquired:
                self.hub.release_vmc()

    def stop(self) -> None:
        self._stopped.set()
        if self.loop is not None:
            self.loop.stop()

    def join(self, timeout: float = 5.0) -> None:
        if self.thread is not None:
            self.thread.join(timeout)


class OverlayHub:
    """The running overlay loops of an app, shared by its WebSocket clients.

    Args:
        state: the server state (``animator``, ``pipe``, ``lock``/``model_lock()``, ``settings``).
        options: :class:`OverlayOptions`.
    """

    def __init__(self, state: Any, options: OverlayOptions | None = None) -> None:
        self.state = state
        self.options = options or OverlayOptions()
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, int | None, float, bool], _Session] = {}
        self._controls: dict[str, OverlayControls] = {}
        self._avatars: dict[str, np.ndarray] = {}
        self._vmc: Any = None
        self._vmc_users = 0

    # ------------------------------------------------------------------ models
    @contextlib.contextmanager
    def model_lock(self) -> Iterator[None]:
        """The state's model lock (serialises torch calls with the HTTP API and the studio)."""
        ml = getattr(self.state, "model_lock", None)
        if callable(ml):
            with ml():
                yield
            return
        import torch

        lock = getattr(self.state, "lock", None)
        with lock if lock is not None else contextlib.nullcontext(), torch.inference_mode():
            yield

    @property
    def has_animator(self) -> bool:
        return getattr(self.state, "animator", None) is not None

    def avatar_image(self, avatar: str) -> np.ndarray:
        """The RGBA still of ``avatar`` (see :func:`parse_avatar`)."""
        with self._lock:
            if avatar in self._avatars:
                return self._avatars[avatar]
        if avatar.startswith("procedural:"):
            from avatarforge.data.procedural import render_avatar

            res = int(getattr(self.state.animator, "resolution", 64))
            return render_avatar(int(avatar.split(":", 1)[1]), max(32, min(512, res)))
        seed = 0 if avatar == "studio" else int(avatar)
        with self.model_lock():
            out = self.state.pipe(seeds=[seed], rgba=True)
        return out.images[0]

    def set_avatar(self, avatar: str, image: np.ndarray) -> None:
        """Show ``image`` (RGBA uint8) as ``avatar`` (e.g. ``"studio"``), also in running loops."""
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] not in (3, 4) or img.dtype != np.uint8:
            raise OverlayError(f"avatar image must be (H, W, 3|4) uint8, got {img.dtype} {img.shape}")
        avatar = parse_avatar(avatar)
        with self._lock:
            self._avatars[avatar] = img
            running = [s for k, s in self._sessions.items() if k[0] == avatar and s.renderer is not None]
        for s in running:
            with self.model_lock():
                s.renderer.set_avatar(img)

    def controls(self, avatar: str) -> OverlayControls:
        """The manual controls of ``avatar`` (created on first use, shared by its loops)."""
        avatar = parse_avatar(avatar)
        with self._lock:
            if avatar not in self._controls:
                if len(self._controls) >= MAX_CONTROLLED_AVATARS:
                    live = {k[0] for k in self._sessions} | set(self._avatars)
                    idle = [a for a in self._controls if a not in live]  # insertion order: oldest first
                    for a in idle[: len(self._controls) - MAX_CONTROLLED_AVATARS + 1]:
                        del self._controls[a]
                self._controls[avatar] = OverlayControls()
            return self._controls[avatar]

    # ------------------------------------------------------------------ VMC (one UDP port)
    def acquire_vmc(self) -> Any:
        if self.options.vmc is None:
            return None
        from avatarforge.animate.drivers import VMCDriver

        with self._lock:
            if self._vmc is None:
                host, port = _parse_hostport(self.options.vmc)
                self._vmc = VMCDriver(host, port)
            self._vmc_users += 1
            return self._vmc

    def release_vmc(self) -> None:
        with self._lock:
            if self._vmc is None:
                return
            self._vmc_users -= 1
            if self._vmc_users <= 0:
                self._vmc.close()
                self._vmc, self._vmc_users = None, 0

    # ------------------------------------------------------------------ subscriptions
    def subscribe(
        self,
        avatar: str,
        size: int | None,
        fps: float,
        idle: bool = True,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> tuple[_Session, _Subscriber]:
        """Join (or start) the loop of ``(avatar, size, fps, idle)``.

        Raises:
            OverlayBusy: starting it would run more than ``options.max_loops`` loops.

        Frames are delivered to the returned subscriber's ``queue`` on ``loop`` (default: the
        running event loop; pass it when calling from a worker thread, since starting a loop
        prepares the avatar, a model call).
        """
        key = (parse_avatar(avatar), size, float(fps), bool(idle))
        sub = _Subscriber(loop or asyncio.get_running_loop(), self.options.queue_frames)
        with self._lock:
            session = self._sessions.get(key)
            fresh = session is None
            if fresh:
                if len(self._sessions) >= self.options.max_loops:
                    raise OverlayBusy(
                        f"{len(self._sessions)} overlay loops are running, the most this server allows "
                        "(max_loops): reuse the avatar, size and fps of a running one"
                    )
                session = self._sessions[key] = _Session(self, key)
            session.subscribers.append(sub)
        if fresh:
            try:
                session.start()
            except Exception:
                with self._lock:
                    self._sessions.pop(key, None)
                raise
        return session, sub

    def unsubscribe(self, session: _Session, sub: _Subscriber) -> bool:
        """Leave a loop; the last client to leave stops it. Returns True if it stopped."""
        with self._lock:
            if sub in session.subscribers:
                session.subscribers.remove(sub)
            last = not session.subscribers
            if last and self._sessions.get(session.key) is session:
                del self._sessions[session.key]
        if last:
            session.stop()
        return last

    def running(self) -> list[dict[str, Any]]:
        """The running loops: avatar, size, fps, clients, frames rendered (for tests and status)."""
        with self._lock:
            return [
                {
                    "avatar": s.avatar,
                    "size": s.size,
                    "fps": s.fps,
                    "idle": s.idle,
                    "clients": len(s.subscribers),
                    "frames": s.frames,
                    "stats": s.loop.stats.summary() if s.loop is not None else {},
                }
                for s in self._sessions.values()
            ]

    def close(self) -> None:
        """Stop every loop and the VMC listener (call at app shutdown)."""
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for s in sessions:
            s.stop()
        for s in sessions:
            s.join()
            # wake the sockets still waiting for frames: they close with this reason
            s.error = s.error or "the server is shutting down"
            for sub in list(s.subscribers):
                sub.offer(None)
        with self._lock:
            if self._vmc is not None:
                self._vmc.close()
                self._vmc, self._vmc_users = None, 0


# =============================================================================== pages
_PAGE_CSS = """
html, body { background: transparent !important; margin: 0; padding: 0; overflow: hidden; }
#avatar { display: block; width: 100vw; height: 100vh; object-fit: contain; image-rendering: auto; }
#status { position: fixed; left: 8px; top: 8px; font: 16px sans-serif; color: #fff;
          text-shadow: 0 0 3px #000, 0 0 3px #000; }
#status:empty { display: none; }
"""

_PAGE_JS = r"""
(function () {
  const cfg = __CONFIG__;
  const img = document.getElementById('avatar');
  const status = document.getElementById('status');
  window.overlayFrames = 0;
  window.overlayClosed = null;
  let url = null, ws = null, retry = 500;
  function wsUrl(path) {
    const p = new URLSearchParams(cfg.query);
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + cfg.root + path + '?' + p;
  }
  function connect() {
    ws = new WebSocket(wsUrl('/ws/overlay'));
    ws.binaryType = 'blob';
    ws.onopen = function () { retry = 500; };
    ws.onmessage = function (ev) {
      if (typeof ev.data === 'string') { return; }
      const next = URL.createObjectURL(ev.data);
      img.onload = function () { if (url) { URL.revokeObjectURL(url); } url = next; };
      img.src = next;
      window.overlayFrames += 1;
      img.dataset.frames = String(window.overlayFrames);
      status.textContent = '';
    };
    ws.onclose = function (ev) {
      window.overlayClosed = {code: ev.code, reason: ev.reason};
      if (ev.code >= 4400 && ev.code < 4600) {  // configuration problem: say it, do not hammer the server
        status.textContent = 'AvatarForge overlay: ' + ev.reason;
        return;
      }
      setTimeout(connect, retry);  // server restart: reconnect with back-off
      retry = Math.min(retry * 2, 5000);
    };
  }
  window.overlaySend = function (msg) {
    if (ws && ws.readyState === 1) { ws.send(JSON.stringify(msg)); }
  };
  document.addEventListener('keydown', function (ev) {
    if (ev.repeat || ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    if (cfg.keys.indexOf(ev.key.toLowerCase()) >= 0) { ev.preventDefault(); window.overlaySend({key: ev.key}); }
  });
  if (cfg.error) { status.textContent = 'AvatarForge overlay: ' + cfg.error; return; }
  connect();
})();
"""

_CONTROL_HTML = r"""<!doctype html>
<html><head><meta charset="utf-8"><title>AvatarForge overlay controls</title>
<style>
body { font: 15px sans-serif; margin: 16px; max-width: 760px; }
button { margin: 2px; padding: 6px 10px; }
table { border-collapse: collapse; } td { padding: 2px 10px 2px 0; }
label { display: block; margin: 6px 0; } input[type=range] { width: 260px; vertical-align: middle; }
#preview { background: repeating-conic-gradient(#ccc 0% 25%, #fff 0% 50%) 50% / 16px 16px; width: 256px; height: 256px; }
#state { font-family: monospace; }
</style></head>
<body>
<h2>AvatarForge overlay controls</h2>
<p>Avatar <b id="avatar-name"></b>. Keys work while this tab has focus. OBS browser source URL:
<code id="obs-url"></code></p>
<img id="preview" alt="live preview">
<div>
<button data-msg='{"action":"blink"}'>Blink (B)</button>
<button data-msg='{"key":"2"}'>Mouth half (2)</button>
<button data-msg='{"key":"3"}'>Mouth open (3)</button>
<button data-msg='{"key":"4"}'>Smile (4)</button>
<button data-msg='{"key":"5"}'>Frown (5)</button>
<button data-msg='{"key":"1"}'>Neutral (1)</button>
<button data-msg='{"action":"reset"}'>Reset (0)</button>
<button data-msg='{"action":"play_audio"}'>Play server WAV (P)</button>
</div>
<div id="sliders"></div>
<h3>Microphone lip sync</h3>
<p><button id="mic">Start microphone</button> gain <input id="gain" type="range" min="0.5" max="4" step="0.1" value="1.5">
level <meter id="level" min="0" max="1" value="0"></meter></p>
<p><small>The browser measures the loudness (WebAudio) and sends only mouth_open values; the audio never
leaves this tab. Microphones need http://127.0.0.1 or localhost (a secure context).</small></p>
<h3>Keys</h3><table id="keys"></table>
<p>Manual state: <span id="state">{}</span></p>
<script>
(function () {
  const cfg = __CONFIG__;
  const p = new URLSearchParams(cfg.query);
  document.getElementById('avatar-name').textContent = cfg.avatar;
  document.getElementById('obs-url').textContent = location.origin + cfg.root + '/overlay?' + p;
  const keys = document.getElementById('keys');
  cfg.help.forEach(function (kv) { const tr = keys.insertRow(); tr.insertCell().textContent = kv[0]; tr.insertCell().textContent = kv[1]; });
  const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + cfg.root + '/ws/overlay/control?' + p);
  window.controlReplies = 0;
  ws.onmessage = function (ev) { window.controlReplies += 1; document.getElementById('state').textContent = ev.data; };
  function send(msg) { if (ws.readyState === 1) { ws.send(JSON.stringify(msg)); } }
  window.controlSend = send;
  document.querySelectorAll('button[data-msg]').forEach(function (b) {
    b.addEventListener('click', function () { send(JSON.parse(b.dataset.msg)); });
  });
  const sl = document.getElementById('sliders');
  cfg.controls.forEach(function (c) {
    const l = document.createElement('label');
    l.innerHTML = c.name + ' <input type="range" min="' + c.lo + '" max="' + c.hi + '" step="0.01" value="' + c.neutral + '">';
    l.querySelector('input').addEventListener('input', function (ev) { const s = {}; s[c.name] = parseFloat(ev.target.value); send({set: s}); });
    sl.appendChild(l);
  });
  document.addEventListener('keydown', function (ev) {
    if (ev.repeat || ev.ctrlKey || ev.metaKey || ev.altKey || ev.target.tagName === 'INPUT') { return; }
    if (cfg.keys.indexOf(ev.key.toLowerCase()) >= 0) { ev.preventDefault(); send({key: ev.key}); }
  });
  // live preview through the same frame socket as OBS (shares the loop)
  const img = document.getElementById('preview');
  const fws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + cfg.root + '/ws/overlay?' + p);
  let url = null;
  fws.onmessage = function (ev) {
    if (typeof ev.data === 'string') { return; }
    const next = URL.createObjectURL(ev.data);
    img.onload = function () { if (url) { URL.revokeObjectURL(url); } url = next; };
    img.src = next;
  };
  // microphone: RMS of 20 ms blocks -> dBFS -> 0 at -50 dB, 1 at -15 dB -> attack 30 ms / release 120 ms
  let ctx = null, stream = null, timer = null;
  document.getElementById('mic').addEventListener('click', async function (ev) {
    const btn = ev.target;
    if (ctx) {
      clearInterval(timer); stream.getTracks().forEach(function (t) { t.stop(); }); ctx.close(); ctx = null;
      send({clear: ['mouth_open']}); btn.textContent = 'Start microphone'; return;
    }
    try { stream = await navigator.mediaDevices.getUserMedia({audio: true, video: false}); }
    catch (e) { alert('Microphone unavailable: ' + e.message); return; }
    ctx = new AudioContext();
    const an = ctx.createAnalyser(); an.fftSize = 1024;
    ctx.createMediaStreamSource(stream).connect(an);
    const buf = new Float32Array(an.fftSize);
    let level = 0, last = -1;
    const block = 0.02, up = 1 - Math.exp(-block / 0.03), down = 1 - Math.exp(-block / 0.12);
    timer = setInterval(function () {
      an.getFloatTimeDomainData(buf);
      let s = 0; for (let i = 0; i < buf.length; i++) { s += buf[i] * buf[i]; }
      const db = 20 * Math.log10(Math.max(Math.sqrt(s / buf.length), 1e-10));
      const x = Math.min(1, Math.max(0, (db + 50) / 35));
      level += (x - level) * (x > level ? up : down);
      const v = Math.min(1, level * parseFloat(document.getElementById('gain').value));
      document.getElementById('level').value = v;
      if (Math.abs(v - last) > 0.01) { last = v; send({set: {mouth_open: Math.round(v * 1000) / 1000}}); }
    }, block * 1000);
    btn.textContent = 'Stop microphone';
  });
})();
</script>
</body></html>
"""


def _config_json(data: Mapping[str, Any]) -> str:
    # JSON inside <script>: escape '<' so a value can never close the script element.
    return json.dumps(data).replace("<", "\\u003c")


def overlay_page_html(query: Mapping[str, str], root: str = "", error: str | None = None) -> str:
    """The ``/overlay`` page: transparent, margin-free, an <img> updated from ``/ws/overlay``.

    ``query`` is forwarded to the socket (avatar, size, fps, idle, key); ``error`` is shown
    instead of connecting (e.g. no animator loaded).
    """
    cfg = {"query": dict(query), "root": root, "keys": list(KEY_BINDINGS), "error": error}
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>AvatarForge overlay</title>'
        f'<style>{_PAGE_CSS}</style></head>\n<body><img id="avatar" alt=""><div id="status"></div>'
        f"<script>{_PAGE_JS.replace('__CONFIG__', _config_json(cfg))}</script></body></html>\n"
    )


def control_page_html(query: Mapping[str, str], avatar: str, root: str = "") -> str:
    """The ``/overlay/control`` page (buttons, sliders, keys, microphone lip sync, preview)."""
    from avatarforge.models.animator import CONTROL_NAMES, CONTROL_RANGES, NEUTRAL_CONTROLS

    cfg = {
        "query": dict(query),
        "root": root,
        "avatar": avatar,
        "keys": list(KEY_BINDINGS),
        "help": KEY_HELP,
        "controls": [
            {
                "name": n,
                "lo": CONTROL_RANGES[n][0],
                "hi": CONTROL_RANGES[n][1],
                "neutral": NEUTRAL_CONTROLS[n],
            }
            for n in CONTROL_NAMES
        ],
    }
    return _CONTROL_HTML.replace("__CONFIG__", _config_json(cfg))


# =============================================================================== FastAPI
def _check_key(state: Any, provided: str | None) -> bool:
    # The API's check: constant-time on UTF-8 bytes (a non-ASCII key is refused, not a crash).
    from avatarforge.serve.auth import check_api_key

    return check_api_key(getattr(getattr(state, "settings", None), "api_key", None), provided)


def _header_key(headers: Mapping[str, str]) -> str | None:
    """The key of an ``X-API-Key`` or ``Authorization: Bearer`` header (scripts, not browsers)."""
    from avatarforge.serve.auth import presented_key

    return presented_key(headers)


def _client_params(hub: OverlayHub, q: Mapping[str, str]) -> tuple[str, int | None, float, bool]:
    """Validated ``(avatar, size, fps, idle)`` of a request's query; OverlayError names the field."""
    avatar = parse_avatar(q.get("avatar"))
    size: int | None = None
    if q.get("size"):
        try:
            size = int(q["size"])
        except ValueError:
            raise OverlayError(f"size must be an integer number of pixels, got {q['size']!r}") from None
        if not 16 <= size <= hub.options.max_size:
            raise OverlayError(f"size must be from 16 to {hub.options.max_size} pixels, got {size}")
    fps = hub.options.fps
    if q.get("fps"):
        try:
            fps = float(q["fps"])
        except ValueError:
            raise OverlayError(f"fps must be a number, got {q['fps']!r}") from None
        max_fps = min(
            hub.options.max_fps, float(getattr(getattr(hub.state, "settings", None), "max_fps", 1e9))
        )
        if not (math.isfinite(fps) and 1 <= fps <= max_fps):
            raise OverlayError(f"fps must be from 1 to {max_fps:g}, got {q['fps']}")
    idle_text = q.get("idle", "1" if hub.options.idle else "0").strip().lower()
    if idle_text not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
        raise OverlayError(f"idle must be 1 or 0, got {q.get('idle')!r}")
    return avatar, size, fps, idle_text in ("1", "true", "yes", "on")


def _forward_query(q: Mapping[str, str]) -> dict[str, str]:
    return {k: q[k] for k in ("avatar", "size", "fps", "idle", "key") if k in q}


#: Environment variables read when the server's settings do not say: VMC listener
#: (``HOST:PORT`` or ``PORT``; ``1`` = the default ``127.0.0.1:39539``) and a WAV for lip sync.
VMC_ENV = "AVATARFORGE_VMC"
AUDIO_ENV = "AVATARFORGE_OVERLAY_AUDIO"


def _overlay_options(state: Any, options: OverlayOptions | None) -> OverlayOptions:
    if options is not None:
        return options
    from avatarforge.animate.drivers import VMC_DEFAULT_HOST, VMC_DEFAULT_PORT

    # ServeSettings fields when the server has them (vmc, overlay_audio, overlay_fps), else
    # the environment, so `AVATARFORGE_VMC=1 avatarforge serve ...` works with any CLI.
    s = getattr(state, "settings", None)
    kw: dict[str, Any] = {}
    vmc = getattr(s, "vmc", None) or os.environ.get(VMC_ENV, "").strip() or None
    if vmc is not None:
        kw["vmc"] = (
            f"{VMC_DEFAULT_HOST}:{VMC_DEFAULT_PORT}" if str(vmc).lower() in ("1", "true", "on") else vmc
        )
    audio = getattr(s, "overlay_audio", None) or os.environ.get(AUDIO_ENV, "").strip() or None
    if audio is not None:
        if not Path(audio).is_file():
            raise OverlayError(f"overlay audio {audio!r} is not a file; give a PCM WAV file ({AUDIO_ENV})")
        kw["audio"] = audio
    if getattr(s, "overlay_fps", None):
        kw["fps"] = float(s.overlay_fps)
    if getattr(s, "max_fps", None):
        kw["max_fps"] = float(s.max_fps)
        kw["fps"] = min(kw.get("fps", 30.0), kw["max_fps"])
    return OverlayOptions(**kw)


def mount_overlay(app: Any, state: Any, options: OverlayOptions | None = None) -> OverlayHub:
    """Add the overlay routes to ``app`` (FastAPI) and return the :class:`OverlayHub`.

    The hub is also stored as ``app.state.overlay_hub`` (the studio sends picked avatars
    to it). The app's lifespan is wrapped so that shutting the server down stops the loops
    and the VMC listener (``hub.close()``).
    """
    hub = OverlayHub(state, _overlay_options(state, options))
    app.state.overlay_hub = hub

    # Stop the loops and free the VMC port when the server shuts down: wrap the app's
    # lifespan (whatever it is) rather than require the caller to remember hub.close().
    previous = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> Any:
        async with previous(a) as maybe_state:
            try:
                yield maybe_state
            finally:
                await run_in_threadpool(hub.close)

    app.router.lifespan_context = lifespan

    def _root(request: Any) -> str:
        return str(request.scope.get("root_path", "") or "").rstrip("/")

    @app.get("/overlay", response_class=HTMLResponse, include_in_schema=False)
    def overlay_page(request: Request) -> HTMLResponse:
        q = dict(request.query_params)
        error = None
        status = 200
        if not _check_key(state, q.get("key")):
            error, status = "wrong or missing API key: add ?key=YOUR_KEY to the URL", 401
        elif not hub.has_animator:
            error, status = NO_ANIMATOR_MESSAGE, 503
        else:
            try:
                _client_params(hub, q)
            except OverlayError as e:
                error, status = str(e), 400
        return HTMLResponse(overlay_page_html(_forward_query(q), _root(request), error), status_code=status)

    @app.get("/overlay/control", response_class=HTMLResponse, include_in_schema=False)
    def control_page(request: Request) -> HTMLResponse:
        q = dict(request.query_params)
        if not _check_key(state, q.get("key")):
            return HTMLResponse("wrong or missing API key: add ?key=YOUR_KEY to the URL", status_code=401)
        try:
            avatar = parse_avatar(q.get("avatar"))
        except OverlayError as e:
            return HTMLResponse(str(e), status_code=400)
        if not hub.has_animator:
            return HTMLResponse(NO_ANIMATOR_MESSAGE, status_code=503)
        return HTMLResponse(control_page_html(_forward_query(q), avatar, _root(request)))

    @app.post("/overlay/control", include_in_schema=False)
    async def control_post(request: Request) -> JSONResponse:
        q = dict(request.query_params)
        if not _check_key(state, q.get("key") or _header_key(request.headers)):
            return JSONResponse(
                {"detail": "wrong or missing API key (X-API-Key header or ?key=)"}, status_code=401
            )
        try:
            avatar = parse_avatar(q.get("avatar"))
            body = await request.body()
            manual = apply_control(hub.controls(avatar), body.decode("utf-8", "replace"))
        except OverlayError as e:
            return JSONResponse({"detail": str(e)}, status_code=422)
        return JSONResponse({"avatar": avatar, "manual": manual})

    def _short(reason: str) -> str:
        # Close reasons are limited to 123 bytes by the protocol.
        return reason.encode()[:123].decode("utf-8", "ignore")

    async def _refuse(ws: WebSocket, reason: str) -> None:
        """No (or a wrong) key: close before accepting, so no socket ever opens (HTTP 403)."""
        await ws.close(code=UNAUTHORIZED_CLOSE_CODE, reason=_short(reason))

    async def _reject(ws: WebSocket, code: int, reason: str) -> None:
        """An authorised client's bad request: accept, then close with ``code`` and the reason,
        which the page shows (it stops reconnecting on 4400-4599); logged as rejected."""
        await ws.accept()
        await _close_rejected(ws, code, reason)

    async def _close_rejected(ws: WebSocket, code: int, reason: str) -> None:
        await ws.close(code=code, reason=_short(reason))
        client = ws.client
        where = f"{client.host}:{client.port}" if client else "-"
        query = ws.scope.get("query_string", b"").decode("latin-1")
        path = ws.scope.get("path", "") + (f"?{query}" if query else "")
        _ws_log.info('%s - "WebSocket %s" rejected: %d %s', where, path, code, reason)

    async def _control_messages(ws: WebSocket, controls: OverlayControls, reply: bool) -> None:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(msg.get("code", 1000))
            text = msg.get("text")
            if text is None and msg.get("bytes") is not None:
                text = msg["bytes"].decode("utf-8", "replace")
            if text is None:
                continue
            try:
                manual = apply_control(controls, text)
                if reply:
                    await ws.send_text(json.dumps({"manual": manual}))
            except OverlayError as e:
                await ws.send_text(json.dumps({"error": str(e)}))

    @app.websocket("/ws/overlay/control")
    async def control_socket(ws: WebSocket) -> None:
        q = dict(ws.query_params)
        if not _check_key(state, q.get("key") or _header_key(ws.headers)):
            return await _refuse(ws, "wrong or missing API key: add ?key=YOUR_KEY")
        try:
            avatar = parse_avatar(q.get("avatar"))
        except OverlayError as e:
            return await _reject(ws, BAD_REQUEST_CLOSE_CODE, str(e))
        await ws.accept()
        with contextlib.suppress(WebSocketDisconnect):
            await _control_messages(ws, hub.controls(avatar), reply=True)

    @app.websocket("/ws/overlay")
    async def frame_socket(ws: WebSocket) -> None:
        q = dict(ws.query_params)
        if not _check_key(state, q.get("key") or _header_key(ws.headers)):
            return await _refuse(ws, "wrong or missing API key: add ?key=YOUR_KEY")
        if not hub.has_animator:
            return await _reject(ws, NO_ANIMATOR_CLOSE_CODE, NO_ANIMATOR_MESSAGE)
        try:
            avatar, size, fps, idle = _client_params(hub, q)
        except OverlayError as e:
            return await _reject(ws, BAD_REQUEST_CLOSE_CODE, str(e))
        await ws.accept()
        try:
            # Starting a loop prepares the avatar (a model call): keep it off the event loop.
            session, sub = await run_in_threadpool(
                hub.subscribe, avatar, size, fps, idle, asyncio.get_running_loop()
            )
        except OverlayBusy as e:
            return await _close_rejected(ws, TOO_MANY_LOOPS_CLOSE_CODE, str(e))
        except Exception as e:
            await ws.close(
                code=1011, reason=f"cannot start the overlay: {e}".encode()[:123].decode("utf-8", "ignore")
            )
            return
        receiver = asyncio.create_task(_control_messages(ws, hub.controls(avatar), reply=False))
        try:
            while True:
                getter = asyncio.create_task(sub.queue.get())
                done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
                if receiver in done:
                    getter.cancel()
                    break  # the client left (or sent something that broke the socket)
                data = getter.result()
                if data is None:
                    await ws.close(code=1011, reason=(session.error or "the overlay stopped")[:120])
                    break
                await ws.send_bytes(data)
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client went away mid-send
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await receiver
            if hub.unsubscribe(session, sub):
                await run_in_threadpool(session.join)

    return hub
