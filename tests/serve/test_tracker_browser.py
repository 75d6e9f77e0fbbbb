"""The /tracker page in a real browser: webcam face tracking with MediaPipe face_mesh served by
the server itself (npm's @mediapipe/face_mesh in node_modules), fed a fake camera.

The camera is a ``.y4m`` built here from real selfies (``../shared/data/selfies-256``): each
face is shown level and then rolled by a known angle (with a shift and a scale), and faces
with a closed mouth alternate with faces with an open mouth. Every frame carries its number
as a 10-bit code in its top-left corner, which the page (``?debug=1``) reads back, so each
measurement is matched to the frame it came from. Asserted: the roll recovered within 5
degrees, the mouth opening on the open-mouth faces, a face found in >= 95% of the frames,
the parameters reaching the server (the avatar's tracker input), and every request of the
page going to the server (no CDN). Also: the page says what is missing when the camera
permission is denied.

Speed: headless Chromium here has only a software WebGL (SwiftShader), on which the page runs
MediaPipe's nets on the CPU (wasm + XNNPACK), gives them a 320-px copy of each frame and
previews those frames instead of a live <video> (asserted). The video is slow (4 fps) and short
all the same, for a loaded 2-core machine; the rate is measured by benchmarks/bench_tracking.py
(docs/tracking.md).

Skips (saying why) without Chromium/chromedriver, the selfies folder or the npm files.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from tests.serve.fixtures_studio import make_state, tiny_pipe
from tests.serve.live_server import HAVE_CHROMIUM, headless_chromium, thread_server

SELFIES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "selfies-256"

pytestmark = [
    pytest.mark.skipif(
        not HAVE_CHROMIUM,
        reason="needs Debian's chromium and chromedriver at /usr/bin (apt-get install chromium chromium-driver)",
    ),
    pytest.mark.skipif(
        not SELFIES.is_dir(), reason=f"needs the selfies at {SELFIES} (../shared/data/selfies-256)"
    ),
]

# (file, mouth open?) -- picked by eye from the 40 selfies: varied faces, two with glasses.
FACES = [
    ("female_10.jpg", False),
    ("female_1750.jpg", True),
    ("female_21063.jpg", False),
    ("female_4837.jpg", True),
]
ANGLES = [14, -12, 18, -16]  # degrees, counter-clockwise on screen (PIL)
# A few tracked frames a second here (software WebGL, loaded cores): the video is slow enough
# (4 fps, each pose held 1 s) for every pose to be measured in its first two loops.
FPS = 4
PER_SEGMENT = 4
W, H = 640, 480
AVATAR = "procedural:2"


def _frame(face: Image.Image, angle: float, dx: int, dy: int, scale: float, code: int) -> np.ndarray:
    bg = Image.new("RGB", (W, H), (96, 104, 112))
    size = round(300 * scale)
    im = face.resize((size, size), Image.Resampling.BICUBIC).convert("RGBA")
    im = im.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    bg.paste(im, ((W - im.width) // 2 + dx, (H - im.height) // 2 + 20 + dy), im)
    rgb = np.asarray(bg).copy()
    rgb[:12, :160] = 0
    for b in range(10):  # frame number, most significant bit first, 16-px blocks
        if code >> (9 - b) & 1:
            rgb[:12, b * 16 : b * 16 + 16] = 255
    return rgb


def _write_y4m(path: Path) -> list[dict]:
    """The test video and, per frame, what is in it."""
    truth = []
    frames = []
    rng = np.random.default_rng(19)
    for i, (name, open_mouth) in enumerate(FACES):
        face = Image.open(SELFIES / name).convert("RGB")
        for angle in (0, ANGLES[i]):
            dx, dy = (int(v) for v in rng.integers(-40, 41, 2))
            scale = float(rng.uniform(0.9, 1.1))
            for _ in range(PER_SEGMENT):
                code = len(frames)
                frames.append(_frame(face, angle, dx, dy, scale, code))
                truth.append({"face": i, "angle": angle, "open": open_mouth})
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{W} H{H} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            ycc = np.asarray(Image.fromarray(rgb).convert("YCbCr"))
            y = ycc[..., 0]
            cb = ycc[..., 1].reshape(H // 2, 2, W // 2, 2).mean(axis=(1, 3)).round().astype(np.uint8)
            cr = ycc[..., 2].reshape(H // 2, 2, W // 2, 2).mean(axis=(1, 3)).round().astype(np.uint8)
            f.write(b"FRAME\n" + y.tobytes() + cb.tobytes() + cr.tobytes())
    return truth


@pytest.fixture(scope="module")
def server():
    pytest.importorskip("uvicorn")
    from avatarforge.serve.app import create_app
    from avatarforge.serve.overlay.pages import face_mesh_dir

    if face_mesh_dir() is None:
        pytest.skip("MediaPipe face_mesh is not installed (make install / npm ci --ignore-scripts)")
    app = create_app(make_state(tiny_pipe(), None))
    with thread_server(app) as port:
        yield f"http://127.0.0.1:{port}", app
    app.state.overlay_hub.close()


@pytest.fixture(scope="module")
def camera(tmp_path_factory):
    path = tmp_path_factory.mktemp("camera") / "faces.y4m"
    return path, _write_y4m(path)


@pytest.fixture(scope="module")
def browser(camera):
    pytest.importorskip("selenium")
    driver = headless_chromium(
        (1100, 800),
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={camera[0]}",
        "--autoplay-policy=no-user-gesture-required",
        performance_log=True,
    )
    yield driver
    driver.quit()


def _requested(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def test_tracker_recovers_roll_and_mouth_from_a_fake_camera(server, browser, camera, record_number):
    base, app = server
    _, truth = camera
    _requested(browser)
    browser.get(f"{base}/tracker?avatar={AVATAR}&debug=1")
    deadline = time.monotonic() + 40
    segments = len(truth) // PER_SEGMENT
    while time.monotonic() < deadline:
        log = browser.execute_script("return window.trackerLog")
        err = browser.execute_script("return window.trackerError")
        assert err is None, err
        seen = {e["code"] // PER_SEGMENT for e in log if e["face"] and e["code"] < len(truth)}
        if len(seen) == segments and len(log) >= 20:
            break
        time.sleep(0.5)
    stats = browser.execute_script("return window.trackerStats()")
    inference = browser.execute_script("return window.trackerInference()")
    assert inference["software"] and inference["cpu"] is True and inference["input"] == [320, 240], inference
    assert inference["preview"] == "frames", inference  # no 30-fps <video> for SwiftShader to composite
    log = [e for e in browser.execute_script("return window.trackerLog") if e["code"] < len(truth)]
    assert len(log) >= 20, (stats, len(log))
    found = sum(e["face"] for e in log) / len(log)
    record_number("tracker_face_found_pct", round(100 * found, 1))
    record_number("tracker_fps_test", round(stats["fps"], 1))
    missed = [truth[e["code"]] for e in log if not e["face"]]
    assert found >= 0.95, (found, missed)

    # roll: per face, (rolled - level) = -angle (PIL turns counter-clockwise; + roll is clockwise)
    roll: dict[tuple[int, int], list[float]] = {}
    for e in log:
        if e["face"]:
            t = truth[e["code"]]
            roll.setdefault((t["face"], t["angle"]), []).append(e["roll"])
    errors = []
    for i, angle in enumerate(ANGLES):
        level, rolled = roll.get((i, 0)), roll.get((i, angle))
        assert level and rolled, f"face {FACES[i][0]} not tracked in both poses"
        errors.append(abs((np.median(rolled) - np.median(level)) + angle))
    record_number("tracker_roll_error_max_deg", round(max(errors), 2))
    assert max(errors) < 5.0, errors

    # mouth: the open-mouth faces measure wider than the closed ones, and so do the parameters
    mouth_open = [e["mouth"] for e in log if e["face"] and truth[e["code"]]["open"]]
    mouth_shut = [e["mouth"] for e in log if e["face"] and not truth[e["code"]]["open"]]
    assert np.median(mouth_open) > np.median(mouth_shut) + 0.1, (np.median(mouth_open), np.median(mouth_shut))
    sent_open = [e["params"]["mouth_open"] for e in log if e["face"] and truth[e["code"]]["open"]]
    sent_shut = [e["params"]["mouth_open"] for e in log if e["face"] and not truth[e["code"]]["open"]]
    assert np.mean(sent_open) > np.mean(sent_shut) + 0.2

    # the parameters reached the server (the avatar's tracker input), seq numbered
    tracker = app.state.overlay_hub.controls(AVATAR).tracker
    assert tracker.stats.parsed >= stats["sent"] * 0.9 >= 18 and tracker.seq is not None
    assert set(tracker._values) >= {
        "eye_open_l",
        "eye_open_r",
        "gaze_x",
        "mouth_open",
        "head_tilt",
        "vowel_a",
    }

    # every request of the page went to the server (the model and the wasm too)
    urls = _requested(browser)
    web = [u for u in urls if u.startswith(("http:", "https:", "ws:", "wss:"))]
    assert any("face_mesh_solution" in u for u in web), web
    host = urlsplit(base).netloc
    outside = [u for u in web if urlsplit(u).netloc != host]
    assert not outside, outside


def test_tracker_without_camera_permission_says_so(server, browser):
    """The browser refuses the camera (what getUserMedia raises when the user or a policy says
    no: a NotAllowedError): the page says what is missing and how to allow it."""
    base, _ = server
    script = browser.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {
            "source": "navigator.mediaDevices.getUserMedia = function () {"
            " return Promise.reject(new DOMException('Permission denied', 'NotAllowedError')); };"
        },
    )
    try:
        browser.get(f"{base}/tracker?avatar={AVATAR}")
        deadline = time.monotonic() + 20
        err = None
        while time.monotonic() < deadline and not err:
            err = browser.execute_script("return window.trackerError")
            time.sleep(0.2)
        assert err and "Camera permission is missing" in err, err
        assert "Camera permission is missing" in browser.find_element("id", "status").text
    finally:
        browser.execute_cdp_cmd(
            "Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]}
        )
