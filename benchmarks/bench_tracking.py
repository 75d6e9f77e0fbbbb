"""Live webcam tracking (issue 19): the issue's "Numbers" table for the ``/tracker`` page.

The real server (``create_app`` in a uvicorn thread of this process, one torch thread) and
headless Debian Chromium with software WebGL (``--use-angle=swiftshader``), whose fake camera
plays a ``.y4m`` built here at 640 x 480, 30 frames/s, from the real selfies in
``../shared/data/selfies-256``: per face, 1 s held level, then 2.5 s of smooth synthetic head
motion (roll up to +-20 degrees, shift up to +-50 px, scale 0.85..1.15); cuts between faces
with a closed mouth and faces with an open mouth. Each frame carries its number as a 10-bit
code in its top-left corner, which the page (``?debug=1``) reads back, so every tracked frame
is matched to what is in it. Two windows of the same browser (one clock): the tracker page and
the overlay page (``mode=rig``) of the same avatar. While a ``while True: pass`` process keeps
the other core busy (a streamer's game), over a window of seconds:

* **tracking rate**: frames the page tracked per second (camera at 30 frames/s);
* **camera frame -> overlay frame latency** (p50, p95): per tracker frame ``seq``, from the
  camera's capture time of the frame (``requestVideoFrameCallback``'s ``captureTime``, kept in
  ``window.trackerSentAt``) to when the overlay drew its first frame mixed from that seq's
  controls (``window.overlayShownAt``: the hub tags each rig message with the seq the mixer
  sampled, the page notes the time of the first ``requestAnimationFrame`` draw from it);
* **head roll**: per face, the measured roll minus the face's own roll (median of its level
  frames) against the synthetic roll: max and mean absolute error in degrees;
* **face found**: share of the tracked frames with a face;
* **outside requests**: requests of both pages (Chrome's network log) to any host but the
  server;
* **browser CPU per tracked frame**: CPU seconds of all the browser's processes (SwiftShader's
  GPU process and the overlay window included) over the window / tracked frames: the figure
  the machine's load shifts least (the box is shared: compare rows of one run).

The shipped page (here: a software renderer, so nets on the CPU, a 320-px model input, the
tracked frames as preview) carries the targets; the full run adds (``VARIANTS``) the shipped
page alone (no overlay window: in OBS the overlay has its own renderer), the page with
MediaPipe's defaults as it was before, and the CPU nets with a live ``<video>`` preview (quick:
the "before" row only).

Every row notes the 1-minute load average; ``run.py`` records the machine. Skips (saying why)
without Chromium/chromedriver, selenium/uvicorn, the selfies folder or the npm face_mesh files.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from tests.serve.live_server import HAVE_CHROMIUM, headless_chromium, thread_server

from benchmarks.common import ROOT, Result

SELFIES = ROOT.parent / "shared" / "data" / "selfies-256"
W, H, FPS = 640, 480, 30
LEVEL_S, MOVE_S = 1.0, 2.5
# (file, mouth open?) -- the faces of tests/serve/test_tracker_browser.py: closed and open
# mouths alternate, so every cut is one.
FACES = [
    ("female_10.jpg", False),
    ("female_1750.jpg", True),
    ("female_21063.jpg", False),
    ("female_4837.jpg", True),
]
AVATAR = "procedural:2"
TARGETS = {"fps": 30.0, "p95_ms": 100.0, "roll_deg": 5.0, "found_pct": 95.0, "outside": 0.0}


def _load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def _skip(name: str, why: str) -> Result:
    return Result(name, 0.0, "skipped", None, True, why)


# ------------------------------------------------------------------------------ the camera
def _frame(face: Any, angle: float, dx: float, dy: float, scale: float, code: int) -> np.ndarray:
    from PIL import Image

    bg = Image.new("RGB", (W, H), (96, 104, 112))
    size = round(300 * scale)
    im = face.resize((size, size), Image.Resampling.BICUBIC).convert("RGBA")
    im = im.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    bg.paste(im, (round((W - im.width) / 2 + dx), round((H - im.height) / 2 + 20 + dy)), im)
    rgb = np.asarray(bg).copy()
    rgb[:12, :160] = 0
    for b in range(10):  # frame number, most significant bit first, 16-px blocks
        if code >> (9 - b) & 1:
            rgb[:12, b * 16 : b * 16 + 16] = 255
    return rgb


def build_video(path: Path) -> list[dict[str, Any]]:
    """Write the fake camera's ``.y4m``; returns, per frame, what is in it (face, roll angle
    in PIL's counter-clockwise degrees, mouth open, level or moving)."""
    from PIL import Image

    truth: list[dict[str, Any]] = []
    rng = np.random.default_rng(19)
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{W} H{H} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for i, (name, open_mouth) in enumerate(FACES):
            face = Image.open(SELFIES / name).convert("RGB")
            amp = float(rng.uniform(14, 20)) * (1 if i % 2 == 0 else -1)
            sx, sy = (float(v) for v in rng.uniform(-50, 50, 2))
            s1 = float(rng.uniform(0.85, 1.15))
            n_level, n_move = round(LEVEL_S * FPS), round(MOVE_S * FPS)
            for k in range(n_level + n_move):
                if k < n_level:
                    angle, dx, dy, scale, level = 0.0, 0.0, 0.0, 1.0, True
                else:
                    u = (k - n_level) / n_move  # 0..1: a full roll swing, shift and scale ramp
                    angle = amp * np.sin(2 * np.pi * u)
                    dx, dy = sx * np.sin(np.pi * u), sy * np.sin(np.pi * u)
                    scale = 1.0 + (s1 - 1.0) * np.sin(np.pi * u)
                    level = False
                code = len(truth)
                rgb = _frame(face, angle, dx, dy, scale, code)
                ycc = np.asarray(Image.fromarray(rgb).convert("YCbCr"))
                cb = ycc[..., 1].reshape(H // 2, 2, W // 2, 2).mean(axis=(1, 3)).round().astype(np.uint8)
                cr = ycc[..., 2].reshape(H // 2, 2, W // 2, 2).mean(axis=(1, 3)).round().astype(np.uint8)
                f.write(b"FRAME\n" + ycc[..., 0].tobytes() + cb.tobytes() + cr.tobytes())
                truth.append({"face": i, "angle": float(angle), "open": open_mouth, "level": level})
    assert len(truth) < 1024, "the frame code has 10 bits"
    return truth


# ------------------------------------------------------------------------------ measures
def roll_errors(
    log: list[dict[str, Any]], truth: list[dict[str, Any]]
) -> tuple[list[float], dict[int, float]]:
    """Per tracked moving frame, |(measured roll - the face's level roll) + synthetic angle|
    (PIL turns counter-clockwise; the page's + roll is clockwise)."""
    base: dict[int, list[float]] = {}
    for e in log:
        if e["face"] and truth[e["code"]]["level"]:
            base.setdefault(truth[e["code"]]["face"], []).append(e["roll"])
    level = {k: float(np.median(v)) for k, v in base.items()}
    errs = []
    for e in log:
        t = truth[e["code"]]
        if e["face"] and not t["level"] and t["face"] in level:
            errs.append(abs(e["roll"] - level[t["face"]] + t["angle"]))
    return errs, level


def latencies(sent_at: dict[str, float], shown_at: dict[str, float], seqs: set[int]) -> list[float]:
    """ms from the camera frame to the overlay's first frame drawn from it, per seq."""
    return [
        shown_at[str(s)] - sent_at[str(s)] for s in sorted(seqs) if str(s) in sent_at and str(s) in shown_at
    ]


def quantiles(values: list[float], digits: int) -> dict[str, float]:
    """The 0, 5, ..., 100th percentiles of ``values`` (the JSON keeps these, not every frame)."""
    if not values:
        return {}
    return {str(q): round(float(np.percentile(values, q)), digits) for q in range(0, 101, 5)}


def _requested(driver: Any) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def _tree_cpu(root: int) -> float:
    from benchmarks.bench_stream import _tree_cpu as tree_cpu

    return tree_cpu(root)


# ------------------------------------------------------------------------------ the browser
def _app() -> Any:
    from avatarforge.serve.app import create_app
    from avatarforge.serve.state import ServeState
    from benchmarks.bench_stream import _tiny_pipe

    return create_app(ServeState.from_pipeline(_tiny_pipe()))


def _browser(video: Path) -> tuple[Any, Any]:
    """The tracker test's headless Chromium with ``video`` as the camera, and its driver service."""
    driver = headless_chromium(
        (1100, 800),
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
        "--autoplay-policy=no-user-gesture-required",
        performance_log=True,
    )
    return driver, driver.service


def measure(
    driver: Any,
    service: Any,
    base: str,
    truth: list[dict[str, Any]],
    seconds: float,
    query: str = "",
    with_overlay: bool = True,
) -> dict[str, Any]:
    """One measurement: open the overlay and the tracker (two windows; ``with_overlay=False``:
    the tracker only), warm up, then track for ``seconds`` with the other core busy. Returns
    the figures and the raw material (the URLs both pages requested included)."""
    for handle in driver.window_handles[1:]:  # a previous measurement's windows
        driver.switch_to.window(handle)
        driver.close()
    driver.switch_to.window(driver.window_handles[0])
    driver.get(f"{base}/overlay?avatar={AVATAR}&mode=rig" if with_overlay else "about:blank")
    overlay = driver.current_window_handle
    driver.switch_to.new_window("window")
    tracker = driver.current_window_handle
    driver.get(f"{base}/tracker?avatar={AVATAR}&debug=1" + (f"&{query}" if query else ""))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        err = driver.execute_script("return window.trackerError")
        if err:
            raise RuntimeError(f"tracker page: {err}")
        if driver.execute_script("return window.trackerStats().frames") >= 3:
            break
        time.sleep(0.25)
    else:
        raise RuntimeError("the tracker page tracked no frame in 90 s")
    time.sleep(3.0)  # warm-up
    load = _load()
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        s0 = driver.execute_script("return window.trackerStats()")
        n0 = len(driver.execute_script("return window.trackerLog"))
        c0, t0 = _tree_cpu(service.process.pid), time.monotonic()
        time.sleep(seconds)
        s1 = driver.execute_script("return window.trackerStats()")
        dt = time.monotonic() - t0
        cpu = (_tree_cpu(service.process.pid) - c0) / dt
        log = driver.execute_script("return window.trackerLog")[n0:]
        sent_at = driver.execute_script("return window.trackerSentAt")
        visible_tracker = driver.execute_script("return document.visibilityState")
        inference = driver.execute_script("return window.trackerInference && window.trackerInference()")
        urls = _requested(driver)
        time.sleep(0.5)  # the overlay draws the last frames
        driver.switch_to.window(overlay)
        urls += _requested(driver)
        shown_at, overlay_stats, visible_overlay = {}, {"fps": 0.0}, None
        if with_overlay:
            shown_at = driver.execute_script("return window.overlayShownAt")
            visible_overlay = driver.execute_script("return document.visibilityState")
            overlay_stats = driver.execute_script("return window.overlayStats()")
    finally:
        burner.kill()
        burner.wait()
    driver.switch_to.window(tracker)
    log = [e for e in log if e["code"] < len(truth)]
    fps = (s1["frames"] - s0["frames"]) / dt
    seqs = set(range(s0["sent"] + 1, s1["sent"] + 1))  # the page numbers its face frames 1, 2, ...
    lat = latencies(sent_at, shown_at, seqs)
    errs, level = roll_errors(log, truth)
    found = 100.0 * sum(e["face"] for e in log) / max(len(log), 1)
    mouth_open = [e["mouth"] for e in log if e["face"] and truth[e["code"]]["open"]]
    mouth_shut = [e["mouth"] for e in log if e["face"] and not truth[e["code"]]["open"]]
    return {
        "fps": fps,
        "frames": s1["frames"] - s0["frames"],
        "seconds": dt,
        "latency_ms": lat,
        "roll_errors": errs,
        "level_roll": level,
        "found_pct": found,
        "tracked": len(log),
        "mouth_open_median": float(np.median(mouth_open)) if mouth_open else None,
        "mouth_shut_median": float(np.median(mouth_shut)) if mouth_shut else None,
        "browser_cpu_cores": cpu,
        "overlay_fps": overlay_stats["fps"],
        "visibility": [visible_tracker, visible_overlay],
        "inference": inference,
        "urls": urls,
        "with_overlay": with_overlay,
        "load": load,
    }


def _rows(m: dict[str, Any], label: str, targets: bool) -> list[Result]:
    lat = np.asarray(m["latency_ms"]) if m["latency_ms"] else np.asarray([np.nan])
    errs = np.asarray(m["roll_errors"]) if m["roll_errors"] else np.asarray([np.nan])
    inf = m.get("inference") or {}
    where = {True: "nets on the CPU", False: "nets on WebGL", None: "MediaPipe's default (WebGL)"}
    size = "x".join(str(v) for v in inf.get("input") or ["?"])
    cond = (
        f"{label}: {where[inf.get('cpu')]}, model input {size} (WebGL renderer {inf.get('renderer', '?')}); other core busy (burner); browser {m['browser_cpu_cores']:.2f} CPU cores; "
        f"{m['frames']} frames in {m['seconds']:.0f} s; {m['load']}"
    )

    def t(key: str) -> float | None:
        return TARGETS[key] if targets else None

    sfx = "" if targets else f", {label}"
    rows = [
        Result(f"tracking rate{sfx}", m["fps"], "frames/s", t("fps"), True, cond),
        Result(
            f"camera -> overlay latency p50{sfx}",
            float(np.percentile(lat, 50)),
            "ms",
            None,
            False,
            f"{len(m['latency_ms'])} tracker frames matched to overlay frames; overlay drawing "
            f"{m['overlay_fps']:.0f} frames/s; {m['load']}",
        ),
        Result(
            f"camera -> overlay latency p95{sfx}",
            float(np.percentile(lat, 95)),
            "ms",
            t("p95_ms"),
            False,
            m["load"],
        ),
        Result(
            f"head roll error max{sfx}",
            float(errs.max()),
            "degrees",
            t("roll_deg"),
            False,
            f"{len(m['roll_errors'])} moving frames (synthetic roll up to 20 degrees); mean {np.mean(errs):.2f}",
        ),
        Result(f"head roll error mean{sfx}", float(errs.mean()), "degrees", None, False, ""),
        Result(
            f"browser CPU per tracked frame{sfx}",
            1000 * m["browser_cpu_cores"] * m["seconds"] / max(m["frames"], 1),
            "ms",
            None,
            False,
            "all of the browser's processes (the GPU process's SwiftShader too, the overlay window's "
            "drawing included): the figure the load shifts least",
        ),
        Result(
            f"face found{sfx}",
            m["found_pct"],
            "%",
            t("found_pct"),
            True,
            f"{m['tracked']} tracked frames; median mouth opening open/closed faces "
            f"{m['mouth_open_median'] or 0:.2f}/{m['mouth_shut_median'] or 0:.2f}",
        ),
    ]
    if not m["with_overlay"]:
        rows = [r for r in rows if "latency" not in r.name]
    return rows


def run(quick: bool) -> list[Result]:
    name = "tracking"
    if not SELFIES.is_dir():
        return [_skip(name, f"needs the selfies at {SELFIES} (../shared/data/selfies-256)")]
    if not HAVE_CHROMIUM:
        return [
            _skip(
                name,
                "needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)",
            )
        ]
    try:
        import selenium  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        return [_skip(name, f"needs uvicorn and selenium ({e})")]
    from avatarforge.serve.overlay.pages import face_mesh_dir

    if face_mesh_dir() is None:
        return [_skip(name, "MediaPipe face_mesh is not installed (make install / npm ci --ignore-scripts)")]
    import torch

    seconds = 30.0 if quick else 90.0
    variants = [("as shipped", "", True)] + [v for v in VARIANTS if not quick or v[1] in QUICK_VARIANTS]
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    results: list[Result] = []
    driver = None
    app = _app()
    server = contextlib.ExitStack()
    try:
        try:
            port = server.enter_context(thread_server(app))
        except RuntimeError as e:
            return [_skip(name, str(e))]
        with tempfile.TemporaryDirectory() as d:
            video = Path(d) / "camera.y4m"
            t0 = time.monotonic()
            truth = build_video(video)
            print(f"   [camera: {len(truth)} frames in {time.monotonic() - t0:.0f} s]", flush=True)
            driver, service = _browser(video)
            base = f"http://127.0.0.1:{port}"
            _requested(driver)
            urls = []
            for i, (label, query, with_overlay) in enumerate(variants):
                m = measure(driver, service, base, truth, seconds, query, with_overlay)
                urls += m["urls"]
                print(
                    f"   [{label}: {m['fps']:.2f} frames/s, found {m['found_pct']:.0f} %, {m['load']}]",
                    flush=True,
                )
                rows = _rows(m, label, targets=i == 0)
                rows[0].extra = {
                    "query": query,
                    "latency_ms_quantiles": quantiles(m["latency_ms"], 1),
                    "roll_error_quantiles": quantiles(m["roll_errors"], 2),
                    "level_roll": {str(k): round(v, 2) for k, v in m["level_roll"].items()},
                    "visibility": m["visibility"],
                    "inference": m["inference"],
                    "browser_cpu_cores": round(m["browser_cpu_cores"], 2),
                }
                results += rows
            web = [u for u in urls if u.startswith(("http:", "https:", "ws:", "wss:"))]
            host = urlsplit(base).netloc
            outside = sorted({u for u in web if urlsplit(u).netloc != host})
            results.append(
                Result(
                    "requests to other hosts",
                    float(len(outside)),
                    "requests",
                    TARGETS["outside"],
                    False,
                    f"{len(web)} requests of the tracker and overlay pages in all"
                    + (f"; outside: {', '.join(outside[:5])}" if outside else ""),
                )
            )
    finally:
        if driver is not None:
            driver.quit()
        server.close()
        hub = getattr(app.state, "overlay_hub", None)
        if hub is not None:
            hub.close()
        torch.set_num_threads(old_threads)
    for r in results:
        r.value = float(r.value)
    return results


#: Other settings of the tracker page measured next to the shipped one: (label, query).
#: (label, page query, overlay window open?). The shipped page, on a software WebGL renderer
#: (here), runs the nets on the CPU, hands the model a 320-px copy of each frame, does not draw
#: the output image back and previews the tracked frames instead of a live <video>. "before" is
#: the page before these changes (MediaPipe's defaults: nets on WebGL, the 640-px frame, the
#: output image drawn, the live video shown). "alone": no overlay window in this browser (its
#: 512-px rig drawing shares SwiftShader's GPU process with the tracker), no latency then.
VARIANTS: list[tuple[str, str, bool]] = [
    ("as shipped, tracker alone (the overlay in OBS, not this browser)", "", False),
    (
        "before: nets on WebGL, 640-px frame, live video",
        "inference=gpu&input=640&image=1&preview=video",
        True,
    ),
    ("nets on the CPU, 640-px frame, live video", "inference=cpu&input=640&preview=video", True),
]
QUICK_VARIANTS: set[str] = {"inference=gpu&input=640&image=1&preview=video"}
