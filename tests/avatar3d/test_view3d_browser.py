"""The 3D view page in a real browser (Debian's Chromium, software WebGL through SwiftShader):
three-vrm loads the exported VRM (1.0 and 0.x) without errors; ``blink`` changes pixels only
in the eye region, ``aa`` only in the mouth region; a 30-degree head yaw moves the silhouette.

Everything the page loads comes from the test server (three.js and three-vrm from
node_modules). Never downloads a browser or driver; skips with a reason when Chromium,
chromedriver or node_modules/three are missing.
"""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
from PIL import Image

from tests.serve.live_server import HAVE_CHROMIUM, headless_chromium, thread_server

AVATAR = "procedural:3"

pytestmark = pytest.mark.skipif(
    not HAVE_CHROMIUM,
    reason="needs Debian's chromium and chromedriver at /usr/bin (apt-get install chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def server():
    pytest.importorskip("uvicorn")
    fastapi = pytest.importorskip("fastapi")
    from avatarforge.serve.view3d import mount_view3d, view3d_vendor_dir

    if view3d_vendor_dir() is None:
        pytest.skip(
            "three and @pixiv/three-vrm are not in node_modules (make install / npm ci --ignore-scripts)"
        )
    app = fastapi.FastAPI()
    requests: list[str] = []

    @app.middleware("http")
    async def record(request, call_next):
        requests.append(str(request.url))
        return await call_next(request)

    mount_view3d(app)
    with thread_server(app, ws=False) as port:
        yield f"http://127.0.0.1:{port}", requests


@pytest.fixture(scope="module")
def browser():
    driver = headless_chromium((700, 800))
    yield driver
    driver.quit()


def _wait(driver, script: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = driver.execute_script(script)
        if v:
            return v
        errors = driver.execute_script("return window.view3dErrors || []")
        assert not errors, errors
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}")


def _canvas(driver) -> np.ndarray:
    url = driver.execute_script("return document.getElementById('stage').toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA")).astype(
        float
    )


def _changed(a: np.ndarray, b: np.ndarray, thr: float = 40.0) -> np.ndarray:
    pa, pb = a[..., :3] * a[..., 3:4] / 255, b[..., :3] * b[..., 3:4] / 255
    return np.abs(pa - pb).max(axis=-1) > thr


@pytest.mark.parametrize("fmt", ["vrm1", "vrm0"])
def test_three_vrm_loads_and_plays_the_model(server, browser, fmt):
    from avatarforge.animate.rig import AvatarRig
    from avatarforge.avatar3d.source import load_avatar

    base_url, requests = server
    browser.get(f"{base_url}/view3d?avatar={AVATAR}&format={fmt}")
    _wait(browser, "return window.view3d && window.view3d.ready")
    assert browser.execute_script("return window.view3dErrors") == []
    names = browser.execute_script("return window.view3d.expressions")
    assert {
        "blink",
        "blinkLeft",
        "blinkRight",
        "aa",
        "ih",
        "ou",
        "ee",
        "oh",
        "happy",
        "angry",
        "surprised",
    } <= set(names)
    assert all(u.startswith(base_url) for u in requests)  # nothing from another host

    src = load_avatar(AVATAR)
    rig = AvatarRig.from_parts(src.image, src.parts)
    base = _canvas(browser)
    assert base.shape[:2] == (512, 512)
    # the front view is the 2D avatar (canvas pixel = avatar pixel)
    a = src.image.astype(float)
    front = np.abs(base[..., :3] * base[..., 3:4] / 255 - a[..., :3] * a[..., 3:4] / 255).max(-1)
    assert (front > 40).mean() < 0.02, (front > 40).mean()

    pad = 10
    x0 = min(e.x for e in rig.eyes.values()) - pad
    x1 = max(e.x + e.opening.shape[1] for e in rig.eyes.values()) + pad
    y0 = min(e.y for e in rig.eyes.values()) - pad
    y1 = max(e.y + e.opening.shape[0] for e in rig.eyes.values()) + pad
    browser.execute_script("window.view3d.setExpression('blink', 1)")
    ch = _changed(_canvas(browser), base)
    ys, xs = np.nonzero(ch)
    assert len(ys) > 200
    assert ys.min() >= y0 and ys.max() <= y1 and xs.min() >= x0 and xs.max() <= x1, (
        xs.min(),
        xs.max(),
        ys.min(),
        ys.max(),
    )
    browser.execute_script("window.view3d.resetExpressions()")

    m = rig.mouth
    browser.execute_script("window.view3d.setExpression('aa', 1)")
    ch = _changed(_canvas(browser), base)
    ys, xs = np.nonzero(ch)
    assert len(ys) > 50
    assert ys.min() >= m.cy - m.height - pad and ys.max() <= m.cy + 1.5 * m.height + pad
    assert xs.min() >= m.cx - 2 * m.half_width - pad and xs.max() <= m.cx + 2 * m.half_width + pad
    browser.execute_script("window.view3d.resetExpressions()")

    browser.execute_script("window.view3d.setHeadYaw(30)")
    turned = _canvas(browser)
    sil = (turned[..., 3] > 127) != (base[..., 3] > 127)
    assert sil.sum() > 500, sil.sum()
    browser.execute_script("window.view3d.setHeadYaw(0)")
    assert browser.execute_script("return window.view3dErrors") == []
