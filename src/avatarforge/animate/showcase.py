"""A fixed, seed-free timeline of live controls that shows off a rig: what the quickstart's
``avatar.webp``, the docs and the benchmark's expression strip play.

Every control a viewer should notice gets a turn, one after another, with breathing under
all of it: blink, a wink each side, talking through the vowels A I U E O, a smile, a head
turn with the eyes following, a nod and a tilt, then back to rest.
"""

from __future__ import annotations

import math

__all__ = ["SHOWCASE_SECONDS", "SHOWCASE_VERSION", "showcase_controls"]

#: Length of the timeline in seconds.
SHOWCASE_SECONDS = 9.0
#: Bumped whenever the timeline changes (outputs made from it are stale then).
SHOWCASE_VERSION = 1


def _bump(t: float, start: float, length: float) -> float:
    """0 -> 1 -> 0 over ``[start, start + length]`` (a raised cosine), 0 outside."""
    if not start <= t <= start + length:
        return 0.0
    return 0.5 - 0.5 * math.cos(2.0 * math.pi * (t - start) / length)


def _hold(t: float, start: float, length: float, ramp: float = 0.25) -> float:
    """0 -> 1 (ramp), held, -> 0 (ramp) over ``[start, start + length]``."""
    if not start <= t <= start + length:
        return 0.0
    up = min(1.0, (t - start) / ramp)
    down = min(1.0, (start + length - t) / ramp)
    return max(0.0, min(up, down))


def showcase_controls(t: float) -> dict[str, float]:
    """The live controls at ``t`` seconds (``t`` wraps around :data:`SHOWCASE_SECONDS`)."""
    t = t % SHOWCASE_SECONDS
    c: dict[str, float] = {"breath": 0.5 + 0.5 * math.sin(2.0 * math.pi * t / 3.0)}
    blink = _bump(t, 0.8, 0.3)
    c["eye_open_l"] = 1.0 - max(blink, _hold(t, 1.5, 0.6, 0.12))  # wink: the character's left eye
    c["eye_open_r"] = 1.0 - max(blink, _hold(t, 2.3, 0.6, 0.12))
    # Talking: one vowel per 0.4 s, each a syllable (the mouth opens and closes on it).
    if 3.1 <= t < 5.1:
        k = int((t - 3.1) / 0.4)
        c[f"vowel_{'aiueo'[k]}"] = _bump(t, 3.1 + 0.4 * k, 0.4) ** 0.7
    c["smile"] = _hold(t, 5.2, 1.2, 0.3)
    turn = _hold(t, 6.4, 1.6, 0.4) * math.sin(2.0 * math.pi * (t - 6.4) / 1.6)
    c["head_yaw"] = 0.8 * turn
    c["gaze_x"] = 0.7 * turn  # the eyes lead the head
    c["head_pitch"] = 0.6 * _bump(t, 8.0, 0.5)
    c["head_tilt"] = 0.5 * math.sin(2.0 * math.pi * (t - 6.4) / 1.6) * _hold(t, 6.4, 1.6, 0.4)
    c["brow_y"] = 0.6 * c["smile"]
    return c
