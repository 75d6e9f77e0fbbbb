"""Smoke tests for benchmarks/bench_stream.py's measures, on small renderer avatars (a few
seconds): the changed-pixel fraction, the iris-left measure (the renderer's own closed eyes
score 0, open eyes all their iris), and the JSON clean-up."""

from __future__ import annotations

import math

import numpy as np
from benchmarks.bench_stream import _plain, changed_fraction, iris_pixels, lanczos, on_grey

from avatarforge.animate.rig_sources import procedural_layers
from avatarforge.data.procedural import render_expressions

SIZE = 128


def test_changed_fraction_counts_pixels_over_the_threshold():
    a = np.zeros((4, 4, 4), np.uint8)
    a[..., 3] = 255
    b = a.copy()
    b[0, 0, 0] = 25  # over 24
    b[0, 1, 0] = 24  # not over
    assert changed_fraction(a, a) == 0.0
    assert changed_fraction(a, b) == 1 / 16
    # Colour under alpha 0 is invisible: premultiplied, it does not count.
    c, d = a.copy(), a.copy()
    c[..., 3] = d[..., 3] = 0
    d[..., :3] = 255
    assert changed_fraction(c, d) == 0.0


def test_iris_measure_on_the_renderer():
    img, parts = procedural_layers(1000, SIZE)
    opened, closed, mouth = render_expressions(1000, [{}, {"eye_open": 0.0}, {"mouth_open": 1.0}], SIZE)
    n_open = iris_pixels(img, parts)
    assert n_open > 20
    assert iris_pixels(opened, parts, img) == n_open
    assert iris_pixels(closed, parts, img) == 0  # closed eyes leave no iris
    assert iris_pixels(mouth, parts, img) == n_open  # the mouth is not in the eye region
    assert changed_fraction(closed, opened) > 0.005
    assert iris_pixels(img, np.zeros_like(parts)) == -1  # no iris in the part map


def test_helpers():
    img, _ = procedural_layers(3, 64)
    assert lanczos(img[None], 128).shape == (1, 128, 128, 4)
    grey = on_grey(img)
    assert grey.shape == (64, 64, 3) and (grey[0, 0] == 200).all()  # transparent corner
    assert _plain({"a": np.float32(1.5), "b": [np.int64(2), float("nan")], "c": np.bool_(True)}) == {
        "a": 1.5,
        "b": [2, None],
        "c": True,
    }
    assert math.isfinite(_plain(np.float64(0.25)))
