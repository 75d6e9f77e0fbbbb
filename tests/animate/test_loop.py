"""The frame loop: critically damped smoothing, frame counts, real-time pacing and drops."""

from __future__ import annotations

import numpy as np
import pytest

from avatarforge.animate.drivers import ManualDriver, ScriptedDriver
from avatarforge.animate.loop import CriticalSmoother, FrameLoop
from avatarforge.models.animator import CONTROL_NAMES


def _dummy_render(controls):
    """An 8x8 'frame' whose first pixels encode the controls."""
    img = np.zeros((8, 8, 4), np.uint8)
    img[0, : len(CONTROL_NAMES), 0] = [round(100 * (controls[n] + 1)) for n in CONTROL_NAMES]
    img[..., 3] = 255
    return img


class StepDriver:
    """mouth_open jumps from 0 to 1 at t = 0.5 s and back to 0 at t = 1.5 s."""

    def update(self, t):
        return {"mouth_open": 1.0 if 0.5 <= t < 1.5 else 0.0}

    def close(self):
        pass


def test_smoother_is_critically_damped_and_frame_rate_independent():
    ends = []
    for fps in (30, 60, 240):
        s = CriticalSmoother({"mouth_open": 0.1})
        values = [s.step({"mouth_open": 1.0}, 1 / fps)["mouth_open"] for _ in range(fps)]  # 1 s
        assert np.all(np.diff(values) >= 0)  # monotone: no overshoot, no ringing
        assert max(values) <= 1.0
        k = round(0.1 * fps)
        assert values[k - 1] == pytest.approx(0.8, abs=0.01)  # 80% after the response time
        ends.append(values[-1])
    assert ends == pytest.approx([1.0] * 3, abs=1e-6)
    # A control no driver mentions keeps its last target.
    s = CriticalSmoother()
    s.step({"smile": 0.5}, 1.0)
    assert s.step({}, 10.0)["smile"] == pytest.approx(0.5)


def test_loop_hits_the_frame_count_and_interpolates_smoothly():
    loop = FrameLoop(_dummy_render, [StepDriver()], fps=30, realtime=False, response={"mouth_open": 0.1})
    frames = list(loop.run(seconds=2.0))
    assert len(frames) == 60 and [f.index for f in frames] == list(range(60))
    assert frames[-1].t == pytest.approx(59 / 30)
    mouth = np.array([f.controls["mouth_open"] for f in frames])
    up, down = mouth[15:45], mouth[45:]
    assert np.all(np.diff(up) >= 0) and np.all(np.diff(down) <= 0)  # smooth ramps, no overshoot
    assert mouth[14] == 0.0 and 0 < mouth[15] < 0.5 and mouth[44] > 0.99  # follows the step within 0.3 s
    assert np.abs(np.diff(mouth)).max() < 0.35  # no frame jumps the whole way
    assert frames[0].image.shape == (8, 8, 4) and frames[20].image[0, 1, 0] > 100  # mouth_open
    assert loop.stats.frames == 60 and len(loop.stats.render_ms) == 60
    assert list(loop.run(frames=7)) and loop.stats.frames == 7  # again, by frame count


class FakeClock:
    """A clock that advances only when slept on or when the 'renderer' works."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, dt):
        self.now += dt


def test_realtime_pacing_lateness_and_drops():
    clock = FakeClock()

    def slow_render(controls, cost=[0.01]):  # noqa: B006 - mutable on purpose: per-call cost
        clock.now += cost[0]
        return _dummy_render(controls)

    loop = FrameLoop(slow_render, [ManualDriver(smile=1.0)], fps=50, clock=clock, sleep=clock.sleep)
    frames = list(loop.run(frames=20))
    assert len(frames) == 20 and loop.stats.late == 0
    assert loop.stats.fps == pytest.approx(50, rel=0.06)  # paced to the wall clock, not faster

    slow = lambda c: (setattr(clock, "now", clock.now + 0.05), _dummy_render(c))[1]  # noqa: E731
    clock.now = 0.0
    loop = FrameLoop(slow, [], fps=50, clock=clock, sleep=clock.sleep, drop_late=True)
    frames = list(loop.run(frames=10))
    assert len(frames) == 10  # still the requested count ...
    assert loop.stats.dropped > 0 and frames[-1].index > 10  # ... covering more loop time
    assert any(f.late for f in frames)


def test_stop_and_validation():
    loop = FrameLoop(_dummy_render, [ScriptedDriver("idle")], fps=30, realtime=False)
    n = 0
    for _ in loop.run():
        n += 1
        if n == 5:
            loop.stop()
    assert n == 5
    with pytest.raises(ValueError, match="fps"):
        FrameLoop(_dummy_render, fps=0)
