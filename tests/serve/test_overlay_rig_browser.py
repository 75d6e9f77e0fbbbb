"""The overlay in rig mode in a real browser (Debian's Chromium, software WebGL): the page
draws 512-px frames itself from the avatar's rig and the controls the server streams.

* the canvas is 512 px and what it shows matches :meth:`AvatarRig.render` (the page and the
  Python rig are two implementations of the same two steps);
* a key press (mouth wide open) reaches the picture;
* frames shown per second and the p99 frame interval, measured in the page with the other
  core kept busy by a CPU-burning process (a streamer's game). The target (>= 30 FPS, p99
  <= 50 ms) is measured by ``make bench`` (benchmarks/bench_overlay.py); this test asserts a
  margin below it so a slow CI runner does not fail it by a frame.

Never downloads a browser or driver (``/usr/bin/chromium``, ``/usr/bin/chromedriver``,
``SE_OFFLINE``); skips with a reason when either is missing.
"""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from tests.serve.fixtures_studio import make_state, tiny_pipe
from tests.serve.live_server import HAVE_CHROMIUM, headless_chromium, thread_server

pytestmark = pytest.mark.skipif(
    not HAVE_CHROMIUM,
    reason="needs Debian's chromium and chromedriver at /usr/bin (apt-get install chromium chromium-driver)",
)

AVATAR = "procedural:3"


@pytest.fixture(scope="module")
def server():
    pytest.importorskip("uvicorn")
    from avatarforge.serve.app import create_app

    app = create_app(make_state(tiny_pipe(), None))  # no animator: the rig needs none
    with thread_server(app) as port:
        yield f"http://127.0.0.1:{port}", app
    app.state.overlay_hub.close()


@pytest.fixture(scope="module")
def browser():
    driver = headless_chromium((600, 600))
    yield driver
    driver.quit()


def _wait(driver, script: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = driver.execute_script(script)
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}")


def _canvas(driver) -> np.ndarray:
    url = driver.execute_script("return window.overlaySnapshot()")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA"))


def _premul(x: np.ndarray) -> np.ndarray:
    return x[..., :3].astype(float) * (x[..., 3:4] / 255.0)


def test_overlay_draws_the_rig_at_512_px(server, browser):
    from avatarforge.animate.rig import AvatarRig

    base, app = server
    browser.get(f"{base}/overlay?avatar={AVATAR}&idle=0&fps=30")
    _wait(browser, "return window.overlayFrames > 5")
    assert browser.execute_script("return document.getElementById('avatar-rig').width") == 512
    assert browser.execute_script("return document.getElementById('avatar').style.display") == "none"
    time.sleep(0.5)  # idle=0: the controls settle at neutral
    page = _canvas(browser)
    rig = app.state.overlay_hub.avatar_rig(AVATAR, 512)
    # The page's frame equals the Python rig's (same rig JSON rebuilt into a rig object).
    from avatarforge.data.procedural import NEUTRAL_EXPRESSION, render, sample_attributes
    from avatarforge.data.procedural.schema import PART_NAMES

    img, parts = render({**sample_attributes(3), **NEUTRAL_EXPRESSION}, 512, return_parts=True)
    lab = np.zeros((512, 512), np.uint8)
    for i, n in enumerate(PART_NAMES):
        lab[parts[n]] = i
    want = AvatarRig.from_parts(img, lab).render({})
    assert rig["size"] == 512
    diff = np.abs(_premul(page) - _premul(want)).max(axis=-1)
    assert diff.mean() < 1.0 and (diff > 32).mean() < 0.005

    # Key 3 opens the mouth: the picture changes around the mouth only.
    mouth = rig["mouth"]
    browser.execute_script("window.overlaySend({key: '3'})")
    time.sleep(1.0)
    opened = _canvas(browser)
    changed = np.abs(_premul(opened) - _premul(page)).max(axis=-1) > 24
    ys, xs = np.nonzero(changed)
    assert len(ys) > 100
    assert abs(xs.mean() - mouth["cx"]) < 20 and abs(ys.mean() - mouth["cy"]) < 30


def test_frame_rate_with_the_other_core_busy(server, browser, record_number):
    base, _ = server
    browser.get(f"{base}/overlay?avatar={AVATAR}&fps=30")  # idle on: blinks, sway, breath
    _wait(browser, "return window.overlayFrames > 5")
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        browser.execute_script("window.overlayResetStats()")
        time.sleep(5.0)
        stats = browser.execute_script("return window.overlayStats()")
    finally:
        burner.kill()
        burner.wait()
    record_number("overlay_rig_fps_loaded", round(stats["fps"], 1))
    record_number("overlay_rig_p99_ms_loaded", round(stats["p99_ms"], 1))
    assert stats["samples"] > 50
    assert stats["fps"] >= 24, stats  # target 30 (benchmarks/bench_overlay.py); margin for slow runners
    assert stats["p99_ms"] <= 100, stats
