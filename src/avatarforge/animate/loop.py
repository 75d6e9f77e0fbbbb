"""The real-time frame loop: drivers -> smoothed controls -> animator -> frames, at a target FPS.

Each frame, at loop time ``t = index / fps``:

1. every driver's targets are merged (later drivers win per control,
   :func:`~avatarforge.animate.drivers.merge_targets`);
2. the current controls move towards the targets with a critically damped spring per
   control (:class:`CriticalSmoother`): no overshoot, no lag build-up, and a blink still
   closes the eyes within a frame or two because the eyes get a short response time;
3. the renderer (an animator and a prepared avatar, :class:`AvatarRenderer`, or any
   ``controls -> (S, S, 4) uint8`` callable) draws the frame, timed.

With ``realtime=True`` (live use) frame ``i`` is rendered at wall time ``start + i / fps``
(the loop sleeps in between), frames that start late are flagged, and with
``drop_late=True`` frames that are more than a frame interval behind are skipped to catch
up. With ``realtime=False`` (writing a file) frames are produced as fast as possible with
the same loop times, so the output does not depend on the machine's speed.

:attr:`FrameLoop.stats` reports the achieved FPS and the render time percentiles.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avatarforge.animate.drivers import LIVE_NAMES, expand_eyes, live_controls, merge_targets
from avatarforge.data.procedural.schema import NEUTRAL_LIVE
from avatarforge.models.animator import CONTROL_NAMES

__all__ = [
    "DEFAULT_RESPONSE",
    "AvatarRenderer",
    "CriticalSmoother",
    "Frame",
    "FrameLoop",
    "LoopStats",
]

#: Response time (seconds; ~ the time to cover 80% of a step) per control: eyes must be
#: fast enough for blinks, the head slow enough to look heavy. ``eye_open`` stands for both
#: eyes (``eye_open_l``, ``eye_open_r``), as in a driver's targets.
DEFAULT_RESPONSE: dict[str, float] = {
    "eye_open": 0.025,
    "gaze_x": 0.03,  # saccades are fast
    "gaze_y": 0.03,
    "mouth_open": 0.04,
    "smile": 0.15,
    "vowel_a": 0.05,
    "vowel_i": 0.05,
    "vowel_u": 0.05,
    "vowel_e": 0.05,
    "vowel_o": 0.05,
    "brow_y": 0.08,
    "head_yaw": 0.12,
    "head_pitch": 0.12,
    "head_tilt": 0.12,
    "body_sway": 0.25,
    "breath": 0.2,
}


class CriticalSmoother:
    """Critically damped springs, one per live control, integrated exactly for any ``dt``.

    The controls are the 17 live ones; :meth:`step` also returns ``eye_open`` (the mean of
    the two eyes, exactly the old single eye when both are driven together) for the animator.

    For a target ``x*`` held over ``dt`` the exact solution of ``x'' = -2 w x' - w^2 (x - x*)``
    is ``y(dt) = (y0 + (v0 + w y0) dt) e^{-w dt}`` with ``y = x - x*``; the response time
    ``r`` sets ``w = 3 / r`` (80% of a step after ``r`` seconds). Exact integration makes the
    result independent of the frame rate and never overshoots a step.
    """

    def __init__(
        self, response: Mapping[str, float] | None = None, initial: Mapping[str, float] | None = None
    ):
        resp = expand_eyes({**DEFAULT_RESPONSE, **dict(response or {})})
        self.omega = {k: 3.0 / max(float(r), 1e-4) for k, r in resp.items() if k in LIVE_NAMES}
        self.value = {**NEUTRAL_LIVE, **expand_eyes(dict(initial or {}))}
        self.velocity = dict.fromkeys(LIVE_NAMES, 0.0)
        # Last target of each control: a driver that stops sending keeps its old target.
        self.target = dict(self.value)

    def step(self, targets: Mapping[str, float], dt: float) -> dict[str, float]:
        """Advance by ``dt`` seconds towards ``targets`` (controls left out keep their last
        target; ``eye_open`` means both eyes). Returns the new values (:func:`live_controls`)."""
        targets = expand_eyes(targets)
        for k in LIVE_NAMES:
            target = self.target[k] = float(targets.get(k, self.target[k]))
            w = self.omega[k]
            y0, v0 = self.value[k] - target, self.velocity[k]
            e = math.exp(-w * dt)
            tmp = (v0 + w * y0) * dt
            self.value[k] = target + (y0 + tmp) * e
            self.velocity[k] = (v0 - w * tmp) * e
        return live_controls(self.value)


@dataclass
class Frame:
    """One rendered frame."""

    index: int
    t: float  # loop time, seconds (index / fps)
    controls: dict[str, float]  # the smoothed controls it was rendered with
    image: np.ndarray  # (S, S, 4) uint8 RGBA
    render_ms: float  # time spent rendering it
    late: bool = False  # realtime only: started more than a frame interval after its due time


@dataclass
class LoopStats:
    """Frame timing of a run of the loop."""

    frames: int = 0
    dropped: int = 0
    late: int = 0
    elapsed_s: float = 0.0
    render_ms: list[float] = field(default_factory=list)

    @property
    def fps(self) -> float:
        """Frames per second achieved (wall time, including any waiting in realtime mode)."""
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def render_fps(self) -> float:
        """1 / mean render time: what the renderer alone could sustain."""
        return 1000.0 / float(np.mean(self.render_ms)) if self.render_ms else 0.0

    def percentile(self, q: float) -> float:
        """Render time percentile in ms (``q`` in 0-100)."""
        return float(np.percentile(self.render_ms, q)) if self.render_ms else 0.0

    def summary(self) -> dict[str, float]:
        """A flat dict for logs and benchmarks."""
        return {
            "frames": self.frames,
            "dropped": self.dropped,
            "late": self.late,
            "fps": round(self.fps, 2),
            "render_fps": round(self.render_fps, 2),
            "render_ms_mean": round(float(np.mean(self.render_ms)), 3) if self.render_ms else 0.0,
            "render_ms_p50": round(self.percentile(50), 3),
            "render_ms_p99": round(self.percentile(99), 3),
            "render_ms_max": round(max(self.render_ms), 3) if self.render_ms else 0.0,
        }


class AvatarRenderer:
    """``controls -> (S, S, 4) uint8`` for one avatar: prepares it once, renders per frame.

    Works with :class:`~avatarforge.models.animator.ExpressionAnimator` and
    :class:`~avatarforge.animate.onnx_export.OnnxAnimator` alike (anything with
    ``prepare(avatar)`` and ``render_image(state, controls)``). :meth:`set_avatar` swaps the
    avatar between frames (thread-safe).
    """

    def __init__(self, animator: Any, avatar: Any) -> None:
        self.animator = animator
        self._lock = threading.Lock()
        self.state = animator.prepare(avatar)

    def set_avatar(self, avatar: Any) -> None:
        state = self.animator.prepare(avatar)
        with self._lock:
            self.state = state

    def __call__(self, controls: Mapping[str, float]) -> np.ndarray:
        """The frame for ``controls``: the animator's five (``eye_open`` from the two eyes when
        only they are given); the rig's other live controls are not the animator's and are
        left out."""
        with self._lock:
            state = self.state
        c = {k: controls[k] for k in CONTROL_NAMES if k in controls}
        if "eye_open" not in c and ("eye_open_l" in controls or "eye_open_r" in controls):
            c["eye_open"] = live_controls(controls)["eye_open"]
        return self.animator.render_image(state, c)


class FrameLoop:
    """Render frames at ``fps`` from ``drivers`` (see the module docstring).

    Args:
        render: ``controls dict -> (S, S, 4) uint8`` (e.g. :class:`AvatarRenderer`).
        drivers: objects with ``update(t) -> {control: target}`` (:mod:`.drivers`).
        fps: target frame rate.
        response: per-control response times overriding :data:`DEFAULT_RESPONSE`.
        initial: the controls before the first frame (default neutral).
        realtime: pace frames to the wall clock (live) or not (files).
        drop_late: realtime only: skip frames to catch up when more than one interval behind.
        clock, sleep: injectable for tests.
    """

    def __init__(
        self,
        render: Callable[[Mapping[str, float]], np.ndarray],
        drivers: Sequence[Any] = (),
        *,
        fps: float = 30.0,
        response: Mapping[str, float] | None = None,
        initial: Mapping[str, float] | None = None,
        realtime: bool = True,
        drop_late: bool = False,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not (isinstance(fps, (int, float)) and 0 < fps <= 240):
            raise ValueError(f"fps must be a number in (0, 240], got {fps!r}")
        self.render = render
        self.drivers = list(drivers)
        self.fps = float(fps)
        self.smoother = CriticalSmoother(response, initial)
        self.realtime = realtime
        self.drop_late = drop_late
        self.clock = clock
        self.sleep = sleep
        self.stats = LoopStats()
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current frame (thread-safe)."""
        self._stop.set()

    def run(self, frames: int | None = None, seconds: float | None = None) -> Iterator[Frame]:
        """Yield frames until ``frames`` frames (or ``seconds`` x fps), :meth:`stop`, or forever.

        ``frames`` counts frames yielded, so a realtime loop that drops late frames still
        yields exactly that many (covering more loop time).
        """
        if frames is None and seconds is not None:
            frames = max(1, round(seconds * self.fps))
        if frames is not None and frames < 0:
            raise ValueError(f"frames must be >= 0, got {frames}")
        self._stop.clear()
        self.stats = LoopStats()
        interval = 1.0 / self.fps
        start = self.clock()
        index = 0  # loop-time index (advances past dropped frames)
        prev_t = 0.0
        while (frames is None or self.stats.frames < frames) and not self._stop.is_set():
            late = False
            if self.realtime:
                due = start + index * interval
                now = self.clock()
                if now < due:
                    self.sleep(due - now)
                elif now - due > interval:
                    late = True
                    if self.drop_late:
                        skip = int((now - due) / interval)
                        index += skip
                        self.stats.dropped += skip
            t = index * interval
            targets = merge_targets(self.drivers, t)
            controls = self.smoother.step(targets, t - prev_t if index else 0.0)
            prev_t = t
            t0 = time.perf_counter()
            image = self.render(controls)
            ms = (time.perf_counter() - t0) * 1000.0
            self.stats.render_ms.append(ms)
            self.stats.frames += 1
            self.stats.late += int(late)
            self.stats.elapsed_s = self.clock() - start
            yield Frame(index, t, controls, image, ms, late)
            index += 1

    def collect(self, frames: int | None = None, seconds: float | None = None) -> list[np.ndarray]:
        """:meth:`run` and return the images."""
        return [f.image for f in self.run(frames, seconds)]

    def close(self) -> None:
        """Close every driver."""
        for d in self.drivers:
            d.close()
