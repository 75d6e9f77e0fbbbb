"""The overlay's 3D mode in a real browser: /view3d?live=1 plays the VRM model from the same
control stream as the 2D overlay (keys, idle life, tracking), on software WebGL."""

from __future__ import annotations

import base64
import io
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


@pytest.fixture(scope="module")
def base_url():
    pytest.importorskip("uvicorn")
    from avatarforge.serve.app import create_app
    from avatarforge.serve.view3d import view3d_vendor_dir

    if view3d_vendor_dir() is None:
        pytest.skip("three.js / three-vrm are not installed (make install runs npm ci)")
    app = create_app(make_state(tiny_pipe(), None))
    with thread_server(app) as port:
        yield f"http://127.0.0.1:{port}"
    app.state.overlay_hub.close()


@pytest.fixture(scope="module")
def browser():
    driver = headless_chromium((700, 700))
    yield driver
    driver.quit()


def _wait(driver, script: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.execute_script(script):
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}")


def _canvas(driver) -> np.ndarray:
    url = driver.execute_script("return document.getElementById('stage').toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA")).astype(
        float
    )


def test_the_control_stream_drives_the_3d_model(base_url, browser):
    from avatarforge.animate.rig_sources import rig_for

    browser.get(f"{base_url}/view3d?avatar=procedural:3&live=1&idle=0&bg=0")
    _wait(browser, "return window.view3d && window.view3d.ready && window.view3d.liveFrames > 5")
    assert browser.execute_script("return window.view3dErrors") == []
    time.sleep(0.5)  # idle=0: neutral
    rest = _canvas(browser)
    browser.execute_script("window.view3d.send({key: '3'})")  # the overlay's key: mouth wide open
    time.sleep(1.5)
    opened = _canvas(browser)
    changed = (
        np.abs(opened[..., :3] * opened[..., 3:] / 255 - rest[..., :3] * rest[..., 3:] / 255).max(-1) > 24
    )
    ys, xs = np.nonzero(changed)
    m = rig_for("3", 512).mouth
    assert len(ys) > 30
    assert abs(ys.mean() - m.cy) < 40 and abs(xs.mean() - m.cx) < 40  # the mouth, not the whole model
    frames = browser.execute_script("return window.view3d.liveFrames")
    time.sleep(0.5)
    assert browser.execute_script("return window.view3d.liveFrames") > frames  # still streaming
