"""The running frame loops of an app, shared by its WebSocket clients (:class:`OverlayHub`).

One loop per (avatar, size, fps, idle) runs in a background thread while at least one
client watches it; every frame is encoded once and handed to each client's bounded queue
(the oldest frame is dropped for a client that cannot keep up). Also the server-side
options (:class:`OverlayOptions`, :func:`overlay_options`) and the driver stack of a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avatarforge.serve.overlay.protocol import (
    OverlayBusy,
    OverlayControls,
    OverlayError,
    encode_frame,
    parse_avatar,
)

__all__ = [
    "AUDIO_ENV",
    "IFACIALMOCAP_ENV",
    "LISTEN_ENV",
    "MAX_CONTROLLED_AVATARS",
    "OVERLAY_MODES",
    "RIG_SIZE",
    "VMC_ENV",
    "VMC_SEND_ENV",
    "OverlayHub",
    "OverlayOptions",
    "overlay_options",
]

#: Most avatars with manual controls kept (controls of avatars without a running loop are
#: dropped, oldest first, beyond this): ``?avatar=`` takes any of a billion seeds, and each
#: one must not be a permanent allocation.
MAX_CONTROLLED_AVATARS = 256

#: How the page gets its frames: drawn by the page from the avatar's rig and the controls
#: the server streams ("rig", 512 px, the default where the avatar can be rigged), or
#: rendered and encoded by the server's neural animator ("frames").
OVERLAY_MODES = ("rig", "frames")
#: The rig's default size: the recommended OBS browser-source size.
RIG_SIZE = 512


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
        ifacialmocap: ``"HOST:PORT"`` (or ``"PORT"``) to listen for iFacialMocap (iPhone
            ARKit tracking), e.g. ``"127.0.0.1:49983"``; ``None`` = off.
        ifacialmocap_phone: the phone's IP: the start request is sent to it.
        vmc_send: ``"HOST:PORT"``: send every frame's controls out as VMC (perfect-sync
            blend shapes, the head bone), so other apps can use this tracking; ``None`` = off.
        tracking_fade_in, tracking_fade_out: seconds a tracker (webcam page, iPhone, VMC)
            takes to take over from idle life, and to give it back when the face is lost.
        expression_fade_in, expression_fade_out: default fade times of expressions.
        stale_after: seconds without tracker data after which the face counts as lost.
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
    ifacialmocap: str | None = None
    ifacialmocap_phone: str | None = None
    vmc_send: str | None = None
    tracking_fade_in: float = 0.3
    tracking_fade_out: float = 0.6
    expression_fade_in: float = 0.25
    expression_fade_out: float = 0.4
    stale_after: float = 0.5
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
        if self.ifacialmocap is not None:
            _parse_hostport(self.ifacialmocap, "ifacialmocap", 49983)
        if self.vmc_send is not None:
            _parse_hostport(self.vmc_send, "vmc_send", 39540)
        for name in ("tracking_fade_in", "tracking_fade_out", "expression_fade_in", "expression_fade_out"):
            v = getattr(self, name)
            if not 0 <= v <= 10:
                raise OverlayError(f"{name} must be from 0 to 10 seconds, got {v}")
        if not 0.05 <= self.stale_after <= 10:
            raise OverlayError(f"stale_after must be from 0.05 to 10 seconds, got {self.stale_after}")


def _parse_hostport(text: str, what: str = "vmc", example: int = 39539) -> tuple[str, int]:
    host, _, port = str(text).rpartition(":")
    try:
        p = int(port)
    except ValueError:
        raise OverlayError(
            f"{what} must be 'HOST:PORT' or 'PORT' (e.g. 127.0.0.1:{example}), got {text!r}"
        ) from None
    if not 0 <= p <= 65535:
        raise OverlayError(f"{what} port must be in 0..65535, got {p}")
    return host or "127.0.0.1", p


_log = logging.getLogger(__name__)
_LOOPBACK = ("127.", "::1", "localhost")


def _warn_public(what: str, host: str, port: int) -> None:
    """Like the server's public-bind warning: a tracker listener others can reach."""
    if not host.startswith(_LOOPBACK):
        _log.warning(
            "%s listens on %s:%d: anyone on this network can move your avatar (the UDP protocols "
            "have no key). Use it on a network you trust, or listen on 127.0.0.1.",
            what,
            host,
            port,
        )


#: Environment variables read when the server's settings do not say: VMC listener
#: (``HOST:PORT`` or ``PORT``; ``1`` = the default ``127.0.0.1:39539``) and a WAV for lip sync.
VMC_ENV = "AVATARFORGE_VMC"
AUDIO_ENV = "AVATARFORGE_OVERLAY_AUDIO"
#: iFacialMocap listener (``HOST:PORT``, ``PORT`` or ``1`` = ``127.0.0.1:49983``); the phone's
#: IP for the start request; where to send VMC; the LAN address the tracking listeners use
#: instead of 127.0.0.1 (``--listen``: ``0.0.0.0`` or the machine's LAN address; warned about).
IFACIALMOCAP_ENV = "AVATARFORGE_IFACIALMOCAP"
IFACIALMOCAP_PHONE_ENV = "AVATARFORGE_IFACIALMOCAP_PHONE"
VMC_SEND_ENV = "AVATARFORGE_VMC_SEND"
LISTEN_ENV = "AVATARFORGE_TRACKING_LISTEN"


def overlay_options(state: Any, options: OverlayOptions | None = None) -> OverlayOptions:
    """``options`` if given, else options from the server's settings or the environment.

    Raises:
        OverlayError: a bad VMC address or an audio path that is not a file.
    """
    if options is not None:
        return options
    from avatarforge.animate.drivers import VMC_DEFAULT_HOST, VMC_DEFAULT_PORT

    # ServeSettings fields when the server has them (vmc, overlay_audio, overlay_fps), else
    # the environment, so `AVATARFORGE_VMC=1 avatarforge serve ...` works with any CLI.
    s = getattr(state, "settings", None)
    kw: dict[str, Any] = {}
    vmc = getattr(s, "vmc", None) or os.environ.get(VMC_ENV, "").strip() or None
    listen = getattr(s, "listen", None) or os.environ.get(LISTEN_ENV, "").strip() or None
    host = listen or VMC_DEFAULT_HOST
    if vmc is not None:
        kw["vmc"] = f"{host}:{VMC_DEFAULT_PORT}" if str(vmc).lower() in ("1", "true", "on") else vmc
    ifm = getattr(s, "ifacialmocap", None) or os.environ.get(IFACIALMOCAP_ENV, "").strip() or None
    if ifm is not None:
        kw["ifacialmocap"] = f"{host}:49983" if str(ifm).lower() in ("1", "true", "on") else ifm
    phone = getattr(s, "ifacialmocap_phone", None) or os.environ.get(IFACIALMOCAP_PHONE_ENV, "").strip()
    if phone:
        kw["ifacialmocap_phone"] = phone
    send = getattr(s, "vmc_send", None) or os.environ.get(VMC_SEND_ENV, "").strip() or None
    if send is not None:
        kw["vmc_send"] = "127.0.0.1:39540" if str(send).lower() in ("1", "true", "on") else send
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


class _Shared:
    """A driver shared by several loops: closing one loop must not close it."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def update(self, t: float) -> Mapping[str, float]:
        return self.driver.update(t)

    def close(self) -> None:
        pass


class _Subscriber:
    """One client's bounded frame queue on its event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, maxsize: int) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[bytes | str | None] = asyncio.Queue(maxsize=maxsize)
        self.dropped = 0

    def _put(self, item: bytes | str | None) -> None:
        # Runs on the client's event loop: drop the oldest frame rather than grow the queue.
        while self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
                self.dropped += 1
        self.queue.put_nowait(item)

    def offer(self, item: bytes | str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the client's loop already closed
            self.loop.call_soon_threadsafe(self._put, item)


class _Session:
    """One running frame loop (avatar, size, fps) and its subscribers."""

    def __init__(self, hub: OverlayHub, key: tuple[str, int | None, float, bool, str]) -> None:
        self.hub = hub
        self.key = key
        self.avatar, self.size, self.fps, self.idle, self.mode = key
        self.subscribers: list[_Subscriber] = []
        self.frames = 0
        self.error: str | None = None
        self.renderer: Any = None
        self.loop: Any = None
        self.thread: threading.Thread | None = None
        self.controls: OverlayControls | None = None
        self.mixer: Any = None
        self._inputs: list[str] = []
        self._stopped = threading.Event()

    def start(self) -> None:
        from avatarforge.animate.drivers import AudioDriver, IdleDriver
        from avatarforge.animate.expressions import PRIORITIES, Layer, Mixer
        from avatarforge.animate.loop import AvatarRenderer, FrameLoop

        hub = self.hub
        o = hub.options
        if self.mode == "frames":
            avatar = hub.avatar_image(self.avatar)
            with hub.model_lock():
                self.renderer = AvatarRenderer(hub.state.animator, avatar)
        controls = self.controls = hub.controls(self.avatar)
        # The mixer starts every frame from neutral, then idle life (blinks, breathing, sway,
        # eye darts), then the layers by priority with fades: trackers (server WAV, VMC,
        # iFacialMocap, the webcam page), manual controls, one-shot animations, expressions.
        base: list[Any] = [IdleDriver(o.seed)] if self.idle else []
        tracking = PRIORITIES["tracking"]
        fades = {"fade_in": o.tracking_fade_in, "fade_out": o.tracking_fade_out}
        layers: list[Any] = []
        if o.audio is not None:
            audio = _RestartableAudio(AudioDriver(o.audio), controls)
            layers.append(Layer(audio, "audio", tracking, fade_in=0.05, fade_out=0.2))
        for name in ("vmc", "ifacialmocap"):
            drv = hub.acquire_input(name)
            if drv is not None:
                self._inputs.append(name)
                layers.append(Layer(_Shared(drv), name, tracking, **fades))
        layers += controls.layers(o.tracking_fade_in, o.tracking_fade_out)
        self.mixer = Mixer(base, layers)
        self.loop = FrameLoop(self._render, [self.mixer], fps=self.fps, realtime=True, drop_late=True)
        self.thread = threading.Thread(target=self._run, name=f"overlay-{self.avatar}", daemon=True)
        self.thread.start()

    def _render(self, controls: Mapping[str, float]) -> np.ndarray | None:
        if self.mode == "rig":
            return None  # the page draws the frame from the controls (rig.js)
        with self.hub.model_lock():
            return self.renderer(controls)

    def _run(self) -> None:
        try:
            for frame in self.loop.run():
                sender = self.hub.vmc_sender()
                if sender is not None:
                    sender.send(frame.controls)
                if self.mode == "rig":
                    controls = {k: round(float(v), 4) for k, v in frame.controls.items()}
                    msg: dict[str, Any] = {"t": round(frame.t, 4), "c": controls}
                    seq = self.controls.tracker.sampled_seq if self.controls is not None else None
                    if seq is not None:
                        msg["s"] = seq  # the tracker frame these controls were mixed from (latency)
                    data: bytes | str = json.dumps(msg)
                else:
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
            for name in self._inputs:
                self.hub.release_input(name)

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
        self._sessions: dict[tuple[str, int | None, float, bool, str], _Session] = {}
        self._controls: dict[str, OverlayControls] = {}
        self._avatars: dict[str, np.ndarray] = {}
        self._rigs: dict[tuple[str, int], dict[str, Any]] = {}
        self._inputs: dict[str, list[Any]] = {}  # name -> [listener, loops using it]
        self._sender: Any = None

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
        """Whether the server has an animator loaded (frames need one)."""
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

    def avatar_rig(self, avatar: str, size: int = RIG_SIZE) -> dict[str, Any]:
        """The rig of ``avatar`` at ``size`` for the page (:meth:`AvatarRig.to_json`), cached.

        ``procedural:N`` avatars are rigged from the renderer's part map; generator seeds and
        the studio's pick from the server's layer source (``state.avatar_layers``: the
        pipeline's refiner, which predicts the part map).

        Raises:
            RigError: this avatar cannot be rigged (the message says what to do instead).
        """
        from avatarforge.animate.rig import AvatarRig, RigError

        avatar = parse_avatar(avatar)
        key = (avatar, int(size))
        with self._lock:
            if key in self._rigs:
                return self._rigs[key]
        if avatar.startswith("procedural:"):
            from avatarforge.animate.rig_sources import procedural_layers

            image, labels = procedural_layers(int(avatar.split(":", 1)[1]), int(size))
        else:
            layers = getattr(self.state, "avatar_layers", None)
            if layers is None:
                raise RigError(
                    "this server has no high-resolution layer source: start it on a run with a refiner "
                    "(avatarforge serve RUN --refiner REFINER_RUN), or show avatar=procedural:N"
                )
            with self.model_lock():
                image, labels = layers(avatar, int(size), self._avatars.get(avatar))
        rig = AvatarRig.from_parts(image, labels).to_json()
        with self._lock:
            self._rigs[key] = rig
        return rig

    def set_avatar(self, avatar: str, image: np.ndarray) -> None:
        """Show ``image`` (RGBA uint8) as ``avatar`` (e.g. ``"studio"``), also in running loops."""
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] not in (3, 4) or img.dtype != np.uint8:
            raise OverlayError(f"avatar image must be (H, W, 3|4) uint8, got {img.dtype} {img.shape}")
        avatar = parse_avatar(avatar)
        with self._lock:
            self._avatars[avatar] = img
            for k in [k for k in self._rigs if k[0] == avatar]:
                del self._rigs[k]
            running = [s for k, s in self._sessions.items() if k[0] == avatar and s.renderer is not None]
            rigged = [s for k, s in self._sessions.items() if k[0] == avatar and s.mode == "rig"]
        for s in rigged:  # pages drawing this avatar fetch its new rig
            for sub in list(s.subscribers):
                sub.offer(json.dumps({"reload": True}))
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
                o = self.options
                self._controls[avatar] = OverlayControls(
                    fade_in=o.expression_fade_in, fade_out=o.expression_fade_out, stale_after=o.stale_after
                )
            return self._controls[avatar]

    # ------------------------------------------------------------------ tracking inputs (one UDP port each)
    def acquire_input(self, name: str) -> Any:
        """The shared listener ``name`` (``"vmc"`` or ``"ifacialmocap"``; started on first use),
        or None when it is off. Each loop that uses it calls :meth:`release_input` once."""
        o = self.options
        where = {"vmc": o.vmc, "ifacialmocap": o.ifacialmocap}[name]
        if where is None:
            return None
        with self._lock:
            if name not in self._inputs:
                if name == "vmc":
                    from avatarforge.animate.drivers import VMCDriver

                    host, port = _parse_hostport(where)
                    drv: Any = VMCDriver(host, port, stale_after=o.stale_after)
                else:
                    from avatarforge.animate.tracking import IFacialMocapDriver, OneEuroBank

                    host, port = _parse_hostport(where, "ifacialmocap", 49983)
                    drv = IFacialMocapDriver(
                        host,
                        port,
                        phone=o.ifacialmocap_phone,
                        stale_after=o.stale_after,
                        filter=OneEuroBank(),
                    )
                _warn_public("VMC" if name == "vmc" else "iFacialMocap", host, drv.port)
                self._inputs[name] = [drv, 0]
            self._inputs[name][1] += 1
            return self._inputs[name][0]

    def release_input(self, name: str) -> None:
        """One loop less uses the listener; the last one closes it (frees the port)."""
        with self._lock:
            entry = self._inputs.get(name)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                entry[0].close()
                del self._inputs[name]

    @property
    def _vmc(self) -> Any:
        """The running VMC listener or None (tests and status)."""
        entry = self._inputs.get("vmc")
        return entry[0] if entry else None

    def acquire_vmc(self) -> Any:
        """The shared VMC listener (started on first use), or None when VMC is off."""
        return self.acquire_input("vmc")

    def release_vmc(self) -> None:
        """One loop less uses the VMC listener; the last one closes it (frees the port)."""
        self.release_input("vmc")

    def input_stats(self) -> dict[str, Any]:
        """What each running listener counted (packets, errors, coalesced, dropped values)."""
        with self._lock:
            entries = {k: v[0] for k, v in self._inputs.items()}
        out = {}
        for name, drv in entries.items():
            out[name] = drv.stats() if callable(getattr(drv, "stats", None)) else drv.stats.as_dict()
        return out

    def vmc_sender(self) -> Any:
        """The VMC sender (``options.vmc_send``), created on first use, or None."""
        if self.options.vmc_send is None:
            return None
        with self._lock:
            if self._sender is None:
                from avatarforge.animate.tracking import VMCSender

                host, port = _parse_hostport(self.options.vmc_send, "vmc_send", 39540)
                self._sender = VMCSender(host, port, max_rate=self.options.max_fps)
            return self._sender

    # ------------------------------------------------------------------ subscriptions
    def subscribe(
        self,
        avatar: str,
        size: int | None,
        fps: float,
        idle: bool = True,
        loop: asyncio.AbstractEventLoop | None = None,
        mode: str = "frames",
    ) -> tuple[_Session, _Subscriber]:
        """Join (or start) the loop of ``(avatar, size, fps, idle, mode)``.

        ``mode="frames"``: the loop renders and sends encoded images (the neural animator);
        ``"rig"``: it sends only the smoothed controls as JSON text and the page draws the
        frame from the avatar's rig (:meth:`avatar_rig`).

        Raises:
            OverlayBusy: starting it would run more than ``options.max_loops`` loops.

        Frames are delivered to the returned subscriber's ``queue`` on ``loop`` (default: the
        running event loop; pass it when calling from a worker thread, since starting a loop
        prepares the avatar, a model call).
        """
        if mode not in OVERLAY_MODES:
            raise OverlayError(f"mode must be one of {', '.join(OVERLAY_MODES)}, got {mode!r}")
        key = (parse_avatar(avatar), size, float(fps), bool(idle), mode)
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
                    "mode": s.mode,
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
            inputs = [v[0] for v in self._inputs.values()]
            self._inputs.clear()
            sender, self._sender = self._sender, None
        for drv in inputs:
            drv.close()
        if sender is not None:
            sender.close()
