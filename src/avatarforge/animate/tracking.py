"""Face tracking input: ARKit blend shapes -> live controls, iFacialMocap, a jitter filter.

Where a tracker's numbers become the 17 live controls
(:data:`~avatarforge.data.procedural.schema.LIVE_CONTROLS`):

* :func:`arkit_to_live` maps Apple's 52 ARKit blend shapes (:data:`ARKIT_NAMES`, what an
  iPhone's TrueDepth camera measures and what iFacialMocap and VMC "perfect sync" senders
  send) and a head rotation to the controls;
* :func:`parse_ifacialmocap` reads one iFacialMocap UDP datagram (both wire versions:
  ``name-value|...`` and v2's ``name&value|...``, values 0-100, then
  ``=head#rx,ry,rz,px,py,pz|rightEye#..|leftEye#..``);
  :class:`IFacialMocapDriver` listens for them (port 49983; 127.0.0.1 unless told) and can
  send the phone the start request;
* :class:`OneEuroFilter` / :class:`OneEuroBank`: the One-Euro filter (Casiez et al., CHI
  2012), a low-pass whose cut-off rises with the speed of the signal: still faces do not
  jitter, fast moves do not lag. The tracker page (``static/tracker/tracker.js``) uses the
  same formulas;
* :class:`TrackerInput`: the latest controls a tracker sent (the browser page, over the
  control socket), clamped and counted, that go stale when the tracker stops sending (the
  face is lost), so the mixer (:mod:`.expressions`) fades back to idle;
* :class:`InputStats`: what every network input counts: packets, drops, clamps, errors.

Network inputs never trust a packet: malformed text, NaN/inf and out-of-range numbers are
dropped or clamped and counted, never raised into the listener thread; a flood is
coalesced (only the newest datagram of a burst is parsed), so the frame loop keeps its rate.

Conventions. ARKit's ``...Left`` is the user's left; it drives the character's left
(``eye_open_l``, the image-right eye): the avatar moves like the user, as in VTube Studio.
Head angles are degrees; turning towards the user's own left (ARKit/iFacialMocap positive
yaw) turns the avatar to its left, towards the image right (``head_yaw`` > 0); looking up is
``head_pitch`` > 0; ``mirror=True`` swaps left and right for senders that mirror.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from avatarforge.data.procedural.schema import LIVE_CONTROLS

__all__ = [
    "ARKIT_NAMES",
    "IFACIALMOCAP_PORT",
    "IFACIALMOCAP_START",
    "IFacialMocapDriver",
    "InputStats",
    "OneEuroBank",
    "OneEuroFilter",
    "TrackerInput",
    "VMCSender",
    "arkit_to_live",
    "clamp_live",
    "controls_to_vmc",
    "mirror_controls",
    "parse_ifacialmocap",
]

#: Apple ARKit's 52 face blend shapes (``ARFaceAnchor.BlendShapeLocation``), as perfect-sync
#: senders name them.
ARKIT_NAMES: tuple[str, ...] = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
    "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft",
    "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight",
    "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft",
    "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper",
    "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight", "tongueOut",
)  # fmt: skip
_ARKIT_LOWER = {n.lower(): n for n in ARKIT_NAMES}

#: iFacialMocap's UDP port (the phone sends there; it listens for the start request there too).
IFACIALMOCAP_PORT = 49983
#: What a receiver sends the phone (UDP, to its port 49983) to make it stream; ``v2`` asks
#: for the ``name&value`` format.
IFACIALMOCAP_START = b"iFacialMocap_sahuasouryya9218sauhuiayeta91555dy3719|sendDataVersion=v2"

_EYE_SWAP = {"eye_open_l": "eye_open_r", "eye_open_r": "eye_open_l"}


def _c01(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


def _ramp(x: float, lo: float, hi: float) -> float:
    """0 below ``lo``, 1 above ``hi``, linear in between."""
    return _c01((x - lo) / (hi - lo))


def clamp_live(values: Mapping[str, Any]) -> tuple[dict[str, float], int, int]:
    """``values`` restricted to the live controls (plus ``eye_open``) and clamped to range.

    For tracker input (noisy measurements): returns ``(clean, clamped, dropped)`` where
    ``clamped`` counts values pulled into range and ``dropped`` unknown names and values that
    are not finite numbers. Never raises.
    """
    out: dict[str, float] = {}
    clamped = dropped = 0
    for k, v in values.items():
        rng = LIVE_CONTROLS.get(k) or ((0.0, 1.0) if k == "eye_open" else None)
        if rng is None or isinstance(v, bool) or not isinstance(v, (int, float)):
            dropped += 1
            continue
        x = float(v)
        if not math.isfinite(x):
            dropped += 1
            continue
        lo, hi = rng
        if x < lo or x > hi:
            clamped += 1
            x = lo if x < lo else hi
        out[k] = x
    return out, clamped, dropped


def mirror_controls(c: Mapping[str, float]) -> dict[str, float]:
    """Left and right swapped: the eyes, and the sign of gaze_x, head yaw/roll and body sway."""
    out = {_EYE_SWAP.get(k, k): v for k, v in c.items()}
    for k in ("gaze_x", "head_yaw", "head_tilt", "body_sway"):
        if k in out:
            out[k] = -out[k]
    return out


# =============================================================================== ARKit mapping
def arkit_to_live(
    blend: Mapping[str, float],
    head: Sequence[float] | None = None,
    *,
    yaw_degrees: float = 30.0,
    pitch_degrees: float = 20.0,
    roll_degrees: float = 10.0,
    mirror: bool = False,
) -> dict[str, float]:
    """ARKit blend shapes (0-1; names case-insensitive) and ``head = (yaw, pitch, roll)`` in
    degrees -> live controls. Only controls with data are returned, all in range.

    * eyes: ``eye_open_l = 1 - eyeBlinkLeft`` (rescaled: ARKit rarely reports a full 0 or 1,
      so 0.1 counts as open and 0.8 as shut), widened a little by ``eyeWide``;
    * gaze from ``eyeLook{In,Out,Up,Down}`` of both eyes (looking towards the user's left
      is the character's left, image right: ``gaze_x`` > 0);
    * ``mouth_open`` from ``jawOpen`` (and ``mouthLowerDown``), minus ``mouthClose``;
    * ``smile`` = smile - frown (both sides, x1.4);
    * vowels from the mouth's shape: A wide open jaw, I stretched and flat, U a pucker with a
      near-closed jaw, E lower lip down with a half-open jaw, O a funnel with an open jaw,
      normalised to sum to at most 1;
    * ``brow_y`` = inner/outer brow up - brow down;
    * the head: ``head_yaw = yaw / yaw_degrees``, ``head_pitch = pitch / pitch_degrees``,
      ``head_tilt = roll / roll_degrees`` (the rig's full roll is 10 degrees), clamped.
    """
    b: dict[str, float] = {}
    for name, v in blend.items():
        key = _ARKIT_LOWER.get(str(name).lower())
        if key is None:
            continue
        try:
            x = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(x):
            b[key] = _c01(x)
    g = b.get
    out: dict[str, float] = {}
    for side, arkit in (("l", "Left"), ("r", "Right")):
        if f"eyeBlink{arkit}" in b:
            shut = _ramp(b[f"eyeBlink{arkit}"], 0.1, 0.8)
            out[f"eye_open_{side}"] = _c01(1.0 - shut + 0.3 * g(f"eyeWide{arkit}", 0.0))
    look = [k for k in b if k.startswith("eyeLook")]
    if look:
        # User's left = character's left = image right: out of the left eye, into the right one.
        gx = (g("eyeLookOutLeft", 0.0) - g("eyeLookInLeft", 0.0) + g("eyeLookInRight", 0.0)
              - g("eyeLookOutRight", 0.0)) / 2  # fmt: skip
        gy = (g("eyeLookUpLeft", 0.0) + g("eyeLookUpRight", 0.0) - g("eyeLookDownLeft", 0.0)
              - g("eyeLookDownRight", 0.0)) / 2  # fmt: skip
        out["gaze_x"] = max(-1.0, min(1.0, 1.6 * gx))
        out["gaze_y"] = max(-1.0, min(1.0, 1.6 * gy))
    mouth_keys = ("jawOpen", "mouthFunnel", "mouthPucker", "mouthSmileLeft", "mouthStretchLeft")
    if any(k in b for k in mouth_keys):
        jaw = g("jawOpen", 0.0)
        lower = (g("mouthLowerDownLeft", 0.0) + g("mouthLowerDownRight", 0.0)) / 2
        opening = max(jaw, 0.8 * lower) - 0.5 * g("mouthClose", 0.0)
        out["mouth_open"] = _ramp(opening, 0.04, 0.55)
        smile = (g("mouthSmileLeft", 0.0) + g("mouthSmileRight", 0.0)) / 2
        frown = (g("mouthFrownLeft", 0.0) + g("mouthFrownRight", 0.0)) / 2
        out["smile"] = max(-1.0, min(1.0, 1.4 * (smile - frown)))
        funnel, pucker = g("mouthFunnel", 0.0), g("mouthPucker", 0.0)
        stretch = (g("mouthStretchLeft", 0.0) + g("mouthStretchRight", 0.0)) / 2
        j = _ramp(jaw, 0.05, 0.5)
        vow = {
            "vowel_a": j * (1.0 - _c01(funnel + pucker)),
            "vowel_i": _c01(2.0 * max(stretch, 0.6 * smile)) * (1.0 - j) * (1.0 - _c01(2 * pucker)),
            "vowel_u": _c01(2.0 * pucker) * (1.0 - j),
            "vowel_e": _c01(2.0 * lower) * _ramp(jaw, 0.03, 0.25) * (1.0 - j) * (1.0 - _c01(2 * funnel)),
            "vowel_o": _c01(2.0 * funnel) * _ramp(jaw, 0.05, 0.3),
        }
        total = sum(vow.values())
        scale = 1.0 / total if total > 1.0 else 1.0
        out.update({k: v * scale for k, v in vow.items()})
    if any(k.startswith("brow") for k in b):
        up = max(g("browInnerUp", 0.0), (g("browOuterUpLeft", 0.0) + g("browOuterUpRight", 0.0)) / 2)
        down = (g("browDownLeft", 0.0) + g("browDownRight", 0.0)) / 2
        out["brow_y"] = max(-1.0, min(1.0, 1.5 * (up - down)))
    if head is not None and len(head) >= 3:
        yaw, pitch, roll = (float(v) for v in head[:3])
        if all(math.isfinite(v) for v in (yaw, pitch, roll)):
            out["head_yaw"] = max(-1.0, min(1.0, yaw / yaw_degrees))
            out["head_pitch"] = max(-1.0, min(1.0, pitch / pitch_degrees))
            out["head_tilt"] = max(-1.0, min(1.0, roll / roll_degrees))
    return mirror_controls(out) if mirror else out


# =============================================================================== iFacialMocap
def parse_ifacialmocap(data: bytes | str) -> tuple[dict[str, float], tuple[float, float, float] | None]:
    """One iFacialMocap datagram -> ``(blend shapes 0-1 by ARKit name, head or None)``.

    ``head`` is ``(yaw, pitch, roll)`` in degrees, converted from iFacialMocap's
    ``=head#rx,ry,rz,px,py,pz`` (degrees; ``rx`` + nods down, ``ry`` + turns to the user's
    left, ``rz`` + rolls the head: the signs Talking-Head-Anime's converter uses) as
    ``(ry, -rx, rz)``, what :func:`arkit_to_live` wants. The position and the eye bones
    (``rightEye#``, ``leftEye#``) are not used: the blend shapes carry the gaze.

    Raises:
        ValueError: not UTF-8 text, an item that is neither ``name-value``, ``name&value``
            nor ``key#numbers``, a number that does not parse or is not finite, or no known
            blend shape and no head at all. (Unknown names inside a good packet are skipped.)
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("iFacialMocap packet is not UTF-8 text") from None
    else:
        text = data
    blend: dict[str, float] = {}
    head: tuple[float, float, float] | None = None
    for raw in text.split("|"):
        item = raw.strip()
        if not item:
            continue
        if "#" in item:
            key, _, nums = item.partition("#")
            key = key.lstrip("=")
            if key != "head":
                continue  # rightEye#/leftEye#: the eye bones (the blend shapes carry the gaze)
            try:
                v = [float(x) for x in nums.split(",")]
            except ValueError:
                raise ValueError(f"iFacialMocap head {nums[:40]!r} is not numbers") from None
            if len(v) < 3 or not all(math.isfinite(x) for x in v[:3]):
                raise ValueError(f"iFacialMocap head needs 3 finite angles, got {nums[:40]!r}")
            rx, ry, rz = v[:3]
            head = (ry, -rx, rz)
            continue
        sep = "&" if "&" in item else "-"
        name, _, value = item.rpartition(sep) if sep == "-" else item.partition(sep)
        if not name or not value:
            raise ValueError(f"iFacialMocap item {item[:40]!r} is not name-value")
        try:
            x = float(value)
        except ValueError:
            raise ValueError(f"iFacialMocap value of {name[:30]!r} is not a number: {value[:20]!r}") from None
        if not math.isfinite(x):
            raise ValueError(f"iFacialMocap value of {name[:30]!r} is not finite")
        if name.endswith("_L"):
            name = name[:-2] + "Left"
        elif name.endswith("_R"):
            name = name[:-2] + "Right"
        key = _ARKIT_LOWER.get(name.lower())
        if key is not None:
            blend[key] = x / 100.0
    if not blend and head is None:
        raise ValueError("iFacialMocap packet has no blend shape and no head")
    return blend, head


@dataclass
class InputStats:
    """What a network input counted (thread-safe through its owner's lock)."""

    packets: int = 0  # datagrams received
    parsed: int = 0  # datagrams parsed and applied
    coalesced: int = 0  # dropped unparsed: a newer datagram of the same burst replaced them
    errors: int = 0  # malformed (dropped)
    clamped: int = 0  # values pulled into range
    dropped_values: int = 0  # NaN/inf/unknown values dropped
    last_error: str | None = None
    last_time: float | None = None  # time.monotonic() of the last good datagram

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _UDPListener:
    """A UDP socket read by a thread that coalesces bursts: it drains every datagram waiting
    in the socket and hands only the newest to ``handle`` (a flood costs one parse per
    wake-up, not one per packet); the others are counted in ``stats.coalesced``."""

    def __init__(self, host: str, port: int, what: str, hint: str) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._sock.bind((host, port))
        except OSError as e:
            self._sock.close()
            raise OSError(f"cannot listen for {what} on {host}:{port} ({e.strerror or e}); {hint}") from e
        self._sock.settimeout(0.1)
        self.host, self.port = self._sock.getsockname()[:2]
        self.stats = InputStats()
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{what}-{self.port}", daemon=True)

    def _start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                break
            n = 1
            self._sock.setblocking(False)
            try:
                while n < 100_000:
                    try:
                        data, addr = self._sock.recvfrom(65535)
                    except (BlockingIOError, InterruptedError):
                        break
                    n += 1
            except OSError:
                break
            finally:
                if not self._stop.is_set():
                    self._sock.settimeout(0.1)
            with self._cond:
                self.stats.packets += n
                self.stats.coalesced += n - 1
            self.handle(data, addr)
            time.sleep(0.002)  # at most ~500 parses a second, whatever arrives

    def handle(self, data: bytes, addr: Any = None) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def wait(self, predicate: Callable[[Any], bool], timeout: float = 2.0) -> bool:
        """Block until ``predicate(self)`` holds (checked after each datagram) or ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout=timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._sock.close()


class IFacialMocapDriver(_UDPListener):
    """Listen for iFacialMocap (iPhone/iPad TrueDepth tracking) and map it to live controls.

    Args:
        host, port: where to listen (default ``127.0.0.1:49983``; a phone on the LAN needs
            the machine's LAN address or ``0.0.0.0``: ``--listen``). Port 0 picks a free one.
        phone: the phone's IP address: the start request (:data:`IFACIALMOCAP_START`) is sent
            to its port 49983 (:meth:`request_stream`), as other receivers do.
        stale_after: seconds without a packet after which :meth:`update` returns nothing
            (the mixer then fades the avatar back to idle).
        filter: smooth the controls with a :class:`OneEuroBank` (``None``: raw).
        mapping: keyword arguments of :func:`arkit_to_live` (degrees, ``mirror``).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = IFACIALMOCAP_PORT,
        *,
        phone: str | None = None,
        stale_after: float = 0.5,
        filter: OneEuroBank | None = None,
        clock: Callable[[], float] = time.monotonic,
        **mapping: Any,
    ) -> None:
        super().__init__(
            host, port, "iFacialMocap", "is another iFacialMocap receiver running (VSeeFace, VTube Studio)?"
        )
        self.mapping = mapping
        self.stale_after = stale_after
        self.filter = filter
        self.clock = clock
        self._controls: dict[str, float] = {}
        self.phone = phone
        self._start()
        if phone:
            self.request_stream(phone)

    def request_stream(self, phone: str, port: int = IFACIALMOCAP_PORT) -> None:
        """Ask the phone at ``phone`` to stream to this machine (from this listener's port)."""
        self._sock.sendto(IFACIALMOCAP_START, (phone, port))

    def handle(self, data: bytes, addr: Any = None) -> None:
        """Parse one datagram (also usable without a socket); bad ones are counted, never raised."""
        try:
            blend, head = parse_ifacialmocap(data)
            controls = arkit_to_live(blend, head, **self.mapping)
        except (ValueError, TypeError) as e:
            with self._cond:
                self.stats.errors += 1
                self.stats.last_error = str(e)[:200]
                self._cond.notify_all()
            return
        now = self.clock()
        if self.filter is not None:
            controls = self.filter(controls, now)
        with self._cond:
            self.stats.parsed += 1
            self.stats.last_time = now
            self._controls = controls
            self._cond.notify_all()

    def update(self, t: float) -> dict[str, float]:
        with self._lock:
            last = self.stats.last_time
            if last is None or self.clock() - last > self.stale_after:
                return {}
            return dict(self._controls)


# =============================================================================== One-Euro
class OneEuroFilter:
    """The One-Euro filter for one signal (Casiez, Roussel, Vogel, CHI 2012).

    ``x_hat = x_hat + a (x - x_hat)`` with ``a = 1 / (1 + tau / dt)``, ``tau = 1 / (2 pi fc)``
    and the cut-off ``fc = min_cutoff + beta |dx_hat|``: the speed (itself low-passed at
    ``d_cutoff``) opens the filter. Lower ``min_cutoff`` = less jitter at rest, higher
    ``beta`` = less lag in fast moves.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.3, d_cutoff: float = 1.0) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(
                f"One-Euro needs min_cutoff > 0, d_cutoff > 0 and beta >= 0, got {min_cutoff}, {d_cutoff}, {beta}"
            )
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.x: float | None = None
        self.dx = 0.0
        self.t: float | None = None

    @staticmethod
    def _alpha(cutoff: float, dt: float) -> float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: float, t: float) -> float:
        """The filtered value of ``x`` measured at time ``t`` (seconds, increasing)."""
        if self.x is None or self.t is None or t <= self.t:
            if self.x is None:
                self.x, self.t = float(x), float(t)
            return self.x
        dt = t - self.t
        dx = (x - self.x) / dt
        self.dx += self._alpha(self.d_cutoff, dt) * (dx - self.dx)
        cutoff = self.min_cutoff + self.beta * abs(self.dx)
        self.x += self._alpha(cutoff, dt) * (x - self.x)
        self.t = float(t)
        return self.x

    def reset(self) -> None:
        self.x, self.dx, self.t = None, 0.0, None


@dataclass
class OneEuroBank:
    """One :class:`OneEuroFilter` per control, created on first use; ``bank(values, t)``."""

    min_cutoff: float = 1.0
    beta: float = 0.3
    d_cutoff: float = 1.0
    #: Faster cut-off for the eyes (a blink lasts ~150 ms and must not be smoothed away).
    eye_min_cutoff: float = 4.0
    filters: dict[str, OneEuroFilter] = field(default_factory=dict)

    def __call__(self, values: Mapping[str, float], t: float) -> dict[str, float]:
        out = {}
        for k, v in values.items():
            f = self.filters.get(k)
            if f is None:
                mc = self.eye_min_cutoff if k.startswith("eye_open") else self.min_cutoff
                f = self.filters[k] = OneEuroFilter(mc, self.beta, self.d_cutoff)
            out[k] = f(float(v), t)
        return out

    def reset(self) -> None:
        self.filters.clear()


# =============================================================================== browser tracker
class TrackerInput:
    """The latest live controls a tracker sent (the ``/tracker`` page: ``{"track": {...}}``).

    :meth:`put` clamps and counts (a tracker measures, so out-of-range values are pulled in
    rather than refused; NaN/inf and unknown names are dropped); ``put(None)`` says the face
    is lost. :meth:`update` returns the controls while they are fresh (younger than
    ``stale_after`` seconds of wall time), else nothing: a closed page or a lost face fades
    the avatar back to idle. ``seq`` (an integer the page numbers its frames with) is kept
    for latency measurements; ``sampled_seq`` is the seq of the controls :meth:`update` last
    returned (the frame a frame loop actually drew from).
    """

    def __init__(self, stale_after: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        self.stale_after = stale_after
        self.clock = clock
        self.stats = InputStats()
        self.seq: int | None = None
        self.sampled_seq: int | None = None
        self._values: dict[str, float] = {}
        self._lock = threading.Lock()

    def put(self, values: Mapping[str, Any] | None, seq: int | None = None) -> dict[str, float]:
        """Store a tracker frame; returns the clean controls (empty when the face is lost)."""
        now = self.clock()
        if values is None:
            with self._lock:
                self._values = {}
                self.stats.packets += 1
                self.stats.last_time = None
            return {}
        clean, clamped, dropped = clamp_live(values)
        with self._lock:
            self.stats.packets += 1
            self.stats.parsed += 1
            self.stats.clamped += clamped
            self.stats.dropped_values += dropped
            self.stats.last_time = now
            self._values = clean
            if seq is not None:
                self.seq = seq
        return clean

    def _fresh(self) -> bool:
        last = self.stats.last_time
        return last is not None and self.clock() - last <= self.stale_after

    def update(self, t: float) -> dict[str, float]:
        with self._lock:
            if not self._fresh():
                return {}
            self.sampled_seq = self.seq
            return dict(self._values)

    @property
    def active(self) -> bool:
        """Whether a tracker sent a face within ``stale_after`` seconds."""
        with self._lock:
            return self._fresh() and bool(self._values)

    def close(self) -> None:
        """Shared between loops: nothing to release."""


# =============================================================================== VMC out
def _quat_yxz(yaw: float, pitch: float, roll: float) -> tuple[float, float, float, float]:
    """Unity's ``Quaternion.Euler(pitch, yaw, roll)`` (degrees; z, then x, then y), as (x, y, z, w):
    the inverse of :func:`avatarforge.animate.drivers.head_angles`."""
    hy, hx, hz = (math.radians(a) / 2 for a in (yaw, pitch, roll))
    cy, sy, cx, sx, cz, sz = (
        math.cos(hy),
        math.sin(hy),
        math.cos(hx),
        math.sin(hx),
        math.cos(hz),
        math.sin(hz),
    )
    # q = qy * qx * qz
    x = cy * sx * cz + sy * cx * sz
    y = sy * cx * cz - cy * sx * sz
    z = cy * cx * sz - sy * sx * cz
    w = cy * cx * cz + sy * sx * sz
    return x, y, z, w


def controls_to_vmc(
    c: Mapping[str, float],
    *,
    yaw_degrees: float = 30.0,
    tilt_degrees: float = 15.0,
    pitch_degrees: float = 20.0,
) -> tuple[dict[str, float], tuple[float, float, float, float]]:
    """Live controls -> VRM preset blend shapes and the Head bone quaternion, the inverse of
    :func:`avatarforge.animate.drivers.vmc_to_controls` (same degrees)."""
    eye = c.get("eye_open", 1.0)
    blend = {
        "Blink_L": 1.0 - c.get("eye_open_l", eye),
        "Blink_R": 1.0 - c.get("eye_open_r", eye),
        "Joy": max(0.0, c.get("smile", 0.0)),
        "Sorrow": max(0.0, -c.get("smile", 0.0)) / 0.7 if c.get("smile", 0.0) < 0 else 0.0,
    }
    vowels = {v: c.get(f"vowel_{v}", 0.0) for v in "aiueo"}
    if not any(vowels.values()):
        vowels["a"] = c.get("mouth_open", 0.0)  # only an openness: show it as A
    blend.update({v.upper(): x for v, x in vowels.items()})
    blend = {k: min(1.0, max(0.0, v)) for k, v in blend.items()}
    q = _quat_yxz(
        -c.get("head_yaw", 0.0) * yaw_degrees,
        -c.get("head_pitch", 0.0) * pitch_degrees,
        c.get("head_tilt", 0.0) * tilt_degrees,
    )
    return blend, q


class VMCSender:
    """Send live controls out as VMC (OSC over UDP): the VRM blend shapes, ``Apply``, the
    ``Head`` bone and ``/VMC/Ext/OK``, one bundle per frame, at most ``max_rate`` a second.

    Other apps (VSeeFace, Warudo, VMagicMirror as receivers) can then use AvatarForge's
    tracking. Send errors (no one listening) are counted, never raised.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 39540, *, max_rate: float = 60.0) -> None:
        self.addr = (host, int(port))
        self.min_interval = 1.0 / max_rate if max_rate > 0 else 0.0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._last = -1e9
        self._lock = threading.Lock()
        self.sent = 0
        self.errors = 0

    def packet(self, c: Mapping[str, float]) -> bytes:
        """The bundle for ``c``."""
        from avatarforge.animate.osc import encode_bundle, encode_message

        blend, q = controls_to_vmc(c)
        msgs = [encode_message("/VMC/Ext/OK", 1)]
        msgs += [encode_message("/VMC/Ext/Blend/Val", k, float(v), tags="sf") for k, v in blend.items()]
        msgs.append(encode_message("/VMC/Ext/Blend/Apply"))
        msgs.append(encode_message("/VMC/Ext/Bone/Pos", "Head", 0.0, 0.0, 0.0, *q, tags="sfffffff"))
        return encode_bundle(msgs)

    def send(self, c: Mapping[str, float]) -> bool:
        """Send ``c`` unless the last send was less than ``1 / max_rate`` ago; returns whether sent."""
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.min_interval:
                return False
            self._last = now
        try:
            self._sock.sendto(self.packet(c), self.addr)
        except OSError:
            self.errors += 1
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self._sock.close()
