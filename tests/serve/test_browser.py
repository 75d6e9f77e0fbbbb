"""A real browser (Debian's Chromium via Selenium 4) against a live server: the studio's
pick-and-refine and download, the overlay's frames and keys, and microphone lip sync from
the control panel (Chromium's fake capture device plays a WAV as the microphone). The studio
flow runs twice: on a tiny untrained StyleGAN (metadata, exact pixels, restore, WebP) and on
a procedural "generator" that draws the hair and outfit colours asked for, where the avatar
attribute classifier (``avatar_extractor``, trained once per session) checks the download.

Never downloads a browser or driver: ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` are
given explicitly (Selenium Manager is not consulted) and ``SE_OFFLINE`` is set. Skips with a
reason when either is missing (CI installs them via ``.ci/run`` as root).

``AVATARFORGE_SCREENSHOTS=DIR`` saves ``studio.png`` and ``overlay.png`` there (how
docs/images/ was made).
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.serve.fixtures_studio import HAIR, ProceduralAnimator, make_state, procedural_pipe, tiny_animator
from tests.serve.live_server import CHROMEDRIVER, CHROMIUM, HAVE_CHROMIUM, thread_server

EYES = ("blue", "green")

pytestmark = pytest.mark.skipif(
    not HAVE_CHROMIUM,
    reason="needs Debian's chromium and chromedriver at /usr/bin (apt-get install chromium chromium-driver)",
)


def _live_server(pipe, animator, tmp_path_factory, before_stop=None):
    """A uvicorn server of ``create_app`` around ``pipe`` and ``animator`` on a free loopback
    port, in a background thread (and a serve state directory of its own): yields ``(url,
    app)``, then calls ``before_stop()`` (if given) and stops the server."""
    pytest.importorskip("uvicorn")
    pytest.importorskip("gradio")
    from avatarforge.serve.app import create_app

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    state_dir = tmp_path_factory.mktemp("serve-state")
    app = create_app(make_state(pipe, animator, state_dir=str(state_dir)))
    with thread_server(app) as port:
        yield f"http://127.0.0.1:{port}", app
        if before_stop is not None:
            before_stop()
    app.state.overlay_hub.close()
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A live server with tiny untrained models (a StyleGAN and an animator)."""
    yield from _live_server(_two_attribute_pipe(), tiny_animator(), tmp_path_factory)


@pytest.fixture(scope="module")
def procedural_server(tmp_path_factory, browser):
    """A live server whose generator draws procedural avatars of the requested hair and
    outfit colours (:class:`~tests.serve.fixtures_studio.ProceduralGenerator`, 64 px).

    It stops while the module's browser is still open (the browser started first): leaving
    its page first closes the studio's event stream, which uvicorn would otherwise wait for
    (10 s) before stopping."""
    yield from _live_server(
        procedural_pipe(), ProceduralAnimator(), tmp_path_factory, lambda: browser.get("about:blank")
    )


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager reach the network
    downloads = tmp_path_factory.mktemp("downloads")
    tone = _write_speech_like_wav(tmp_path_factory.mktemp("audio") / "talk.wav")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1100",
        # a synthetic microphone playing the WAV above, no permission prompt
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={tone}",
    ):
        opts.add_argument(arg)
    # every request the pages make, for the offline test (Network.requestWillBeSent events)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    opts.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
            "safebrowsing.enabled": False,
            # the studio test downloads twice from one page origin: no "multiple files" prompt
            "profile.default_content_setting_values.automatic_downloads": 1,
        },
    )
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.downloads = downloads  # type: ignore[attr-defined]
    yield driver
    driver.quit()


def _write_speech_like_wav(path: Path) -> Path:
    """2 s of a 220 Hz tone switched on and off 4 times a second (syllables), 16-bit mono."""
    import wave

    rate = 16000
    t = np.arange(2 * rate) / rate
    gate = (np.floor(t * 8) % 2 == 0).astype(float)
    x = (0.6 * gate * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(x.tobytes())
    return path


def _screenshot(driver, name: str) -> None:
    out = os.environ.get("AVATARFORGE_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(out) / name))


def _grid_srcs(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [im.get_attribute("src") for im in driver.find_elements(By.CSS_SELECTOR, "#grid img")]


def _two_attribute_pipe():
    """The studio's tiny StyleGAN with two named attributes (hair and eye colour)."""
    from avatarforge.generate import GeneratorPipeline
    from avatarforge.generate.conditioning import LabelInfo
    from avatarforge.models.stylegan import StyleGANGenerator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        G = StyleGANGenerator(
            resolution=32,
            channels=4,
            channel_base=512,
            channel_max=64,
            z_dim=64,
            w_dim=64,
            mapping_layers=2,
            label_dims=[len(HAIR), len(EYES)],
        ).eval()
        with torch.no_grad():
            G.mapping.w_avg.copy_(G.mapping(torch.randn(256, 64), update_w_avg=False)[:, 0].mean(0))
    labels = LabelInfo(("hair_color", "eye_color"), (HAIR, EYES), (len(HAIR), len(EYES)), "test")
    return GeneratorPipeline(G, labels=labels)


def _choose(browser, wait, attr: str, value: str) -> None:
    """Pick ``value`` in the studio's dropdown of ``attr`` and wait for the pick to follow."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    before = _picked_src(browser)
    browser.find_element(By.CSS_SELECTOR, f"#attr-{attr} input").click()
    option = wait.until(
        EC.element_to_be_clickable((By.CSS_SELECTOR, f'#attr-{attr} li[aria-label="{value}"]'))
    )
    option.click()
    wait.until(lambda d: _picked_src(d) != before)


def _picked_src(driver) -> str | None:
    from selenium.webdriver.common.by import By

    imgs = driver.find_elements(By.CSS_SELECTOR, "#picked img")
    return imgs[0].get_attribute("src") if imgs else None


def _status(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, "#status").text


def _slide(browser, wait, fraction: float = 0.8) -> float:
    """Click the first latent slider's track at ``fraction`` of its width (sets the value and
    releases it), wait for the pick to follow, and return the slider's amount."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    before = _picked_src(browser)
    track = browser.find_element(By.CSS_SELECTOR, "#slider-0 input[type=range]")
    ActionChains(browser).move_to_element_with_offset(  # the offset is from the centre
        track, int(track.size["width"] * (fraction - 0.5)), 0
    ).click().perform()
    wait.until(lambda d: _picked_src(d) != before)
    return _slider_amount(browser)


def _slider_amount(driver) -> float:
    from selenium.webdriver.common.by import By

    return float(driver.find_element(By.CSS_SELECTOR, "#slider-0 input[type=number]").get_attribute("value"))


def _download(browser, wait, suffix: str = ".png") -> Path:
    """Click the download button until a ``suffix`` file arrives (the folder is emptied first:
    Chrome overwrites a file of the same name, and the name is the pixels' hash). Clicking
    again covers a click that came before the finish step set the new file."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    for old in browser.downloads.iterdir():
        old.unlink()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#download"))).click()
        until = time.monotonic() + 3
        while time.monotonic() < until:
            got = [p for p in browser.downloads.iterdir() if p.suffix == suffix]
            if got:
                time.sleep(0.1)  # the file is renamed into place once complete
                return got[0]
            time.sleep(0.1)
    raise AssertionError(f"no {suffix} download arrived: {list(browser.downloads.iterdir())}")


def test_studio_generate_pick_refine_download(server, browser):
    """Issue 18: generate, pick, change two attributes and a slider, refine, undo, download;
    the PNG's record and pixels reflect every change; a new page shows the same avatar (the
    session is kept under the serve state directory)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from avatarforge.generate import read_metadata
    from avatarforge.generate.pipeline import Latent
    from avatarforge.serve.studio import StudioSession, finished_latent, slider_directions

    url, app = server
    state = app.state.serve
    pipe = state.pipe
    wait = WebDriverWait(browser, 30, poll_frequency=0.1)
    browser.get(url + "/studio/")
    wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#generate"))).click()
    wait.until(lambda d: len(_grid_srcs(d)) >= 16)
    first = _grid_srcs(browser)

    # pick the 4th avatar (seed 3): the picked image and the download button appear
    browser.find_elements(By.CSS_SELECTOR, "#grid img")[3].click()
    wait.until(lambda d: _picked_src(d) and "picked seed 3" in _status(d))
    # two attributes: the pick moves to the chosen classes
    labels = pipe.latents([3]).labels[0].tolist()
    hair = next(h for h in reversed(HAIR) if h != HAIR[labels[0]])
    eyes = next(e for e in EYES if e != EYES[labels[1]])
    _choose(browser, wait, "hair_color", hair)
    _choose(browser, wait, "eye_color", eyes)
    # a latent slider: click on its track at 80 % (sets the value and releases it)
    amount = _slide(browser, wait)
    number = browser.find_element(By.CSS_SELECTOR, "#slider-0 input[type=number]")
    assert amount > 0.5, amount
    picked_src = _picked_src(browser)

    # refine (the palette step): 16 new cells, the first one is the pick; pick another
    browser.find_element(By.CSS_SELECTOR, "#refine").click()
    wait.until(lambda d: _grid_srcs(d) != first and "round 1" in _status(d))
    assert float(number.get_attribute("value")) == 0.0  # the slider is part of the refined pick
    browser.find_elements(By.CSS_SELECTOR, "#grid img")[5].click()
    wait.until(lambda d: "cell 5" in _status(d) and _picked_src(d) != picked_src)
    # undo: back to the pick with both attributes and the slider, the seed grid again
    browser.find_element(By.CSS_SELECTOR, "#undo").click()
    wait.until(lambda d: "undone" in _status(d))
    wait.until(
        lambda d: (
            float(d.find_element(By.CSS_SELECTOR, "#slider-0 input[type=number]").get_attribute("value"))
            == amount
        )
    )
    wait.until(lambda d: _grid_srcs(d) and len(_grid_srcs(d)) >= 16)
    # the expression preview of the finished avatar appears too
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#expression img"))
    _screenshot(browser, "studio.png")
    # the finish step after undo shows the pick again (Gradio names its files by content)
    wait.until(lambda d: _picked_src(d) == picked_src)
    path = _download(browser, wait)
    img = Image.open(io.BytesIO(path.read_bytes()))
    assert img.format == "PNG" and img.mode == "RGBA"
    pixels = np.asarray(img)
    assert (pixels[..., 3] == 0).any() and pixels[..., 3].max() > 0  # really transparent pixels

    record = read_metadata(path)
    assert record["kind"] == "studio" and record["history"][-4:] == [
        "pick seed 3",
        "refine palette strength=0.3",
        "pick cell 5",
        "undo palette",
    ]
    assert record["steps"] == [{"step": "pick", "choice": "seed 3"}]
    chosen = {"hair_color": hair, "eye_color": eyes}
    assert record["attrs"] == chosen and record["studio"]["attrs"] == chosen
    slider = slider_directions(state)[0]
    assert record["studio"]["sliders"][slider.id] == amount
    # the recorded latent is the pick of seed 3 with both classes and the slider: it renders
    # the downloaded pixels, and each change shows in them
    sess = StudioSession(picked=pipe.map(pipe.latents([3], truncation=0.8)))  # the page's truncation
    want = finished_latent(state, sess, {slider.id: amount}, chosen)
    assert torch.equal(Latent.from_json(record["latent"]).ws, want.ws)
    with torch.inference_mode():
        again = pipe.render(Latent.from_json(record["latent"]), rgba=True)[0]
        no_slider = pipe.render(finished_latent(state, sess, {}, chosen), rgba=True)[0]
        one_attr = pipe.render(
            finished_latent(state, sess, {slider.id: amount}, {"hair_color": hair}), rgba=True
        )[0]
    assert np.array_equal(pixels, again)
    assert not np.array_equal(pixels, no_slider) and not np.array_equal(pixels, one_attr)

    # a new page (or a restarted server) shows the same avatar: the session was kept
    assert list(Path(state.settings.state_dir).glob("*/studio.json"))
    browser.get(url + "/studio/")
    wait.until(lambda d: "restored your last session" in _status(d) and _picked_src(d))
    wait.until(
        lambda d: (
            float(d.find_element(By.CSS_SELECTOR, "#slider-0 input[type=number]").get_attribute("value"))
            == amount
        )
    )
    assert _picked_src(browser) == picked_src  # the same avatar (its download set in the same event)
    again_path = _download(browser, wait)
    assert np.array_equal(np.asarray(Image.open(again_path)), pixels)
    # the same avatar as a lossless WebP with alpha and the same record
    browser.find_element(By.XPATH, "//*[@id='format']//label[contains(., 'WebP')]").click()
    webp = _download(browser, wait, ".webp")
    back = Image.open(webp)
    assert back.format == "WEBP" and back.mode == "RGBA" and np.array_equal(np.asarray(back), pixels)
    assert read_metadata(webp)["latent"] == record["latent"]


# The classifier's weights are trained on this machine: rerun by `make test-numerics-fp32`.
@pytest.mark.numerics
def test_studio_download_shows_the_chosen_attributes(
    procedural_server, browser, avatar_extractor, record_number
):
    """Issue 18: the same flow with a generator that draws what it is asked for (procedural
    avatars of the requested hair and outfit colours, a z-space SeFa slider that tilts the
    head): generate, pick, change two attributes and a slider, refine, undo, download. The
    avatar attribute classifier, on the downloaded PNG composited on white, agrees with the
    chosen hair and outfit colours (and with the generated ones on the pick before the
    change), and sees the slider's head tilt."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from avatarforge.generate import read_metadata
    from avatarforge.generate.pipeline import Latent, composite
    from avatarforge.serve.studio import StudioSession, finished_latent, slider_directions

    url, app = procedural_server
    state = app.state.serve
    pipe = state.pipe
    slider = slider_directions(state)[0]
    assert (slider.kind, slider.id, slider.vector[0]) == ("z", "sefa0", 1.0)  # z0: the head's tilt
    # the avatar tilted furthest left: the slider (to the right) has the most room to show
    seed = int(pipe.latents(range(16)).z[:, 0].argmin())
    wait = WebDriverWait(browser, 30, poll_frequency=0.1)
    browser.get(url + "/studio/")
    wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#generate"))).click()
    wait.until(lambda d: len(_grid_srcs(d)) >= 16)
    first = _grid_srcs(browser)
    browser.find_elements(By.CSS_SELECTOR, "#grid img")[seed].click()
    wait.until(lambda d: _picked_src(d) and f"picked seed {seed}" in _status(d))

    # two attributes to colours unlike the pick's own, then the slider
    generated = pipe.describe(pipe.latents([seed]))["attrs"]
    hair = next(h for h in ("pink", "green", "blonde") if h != generated["hair_color"])
    outfit = next(o for o in ("yellow", "navy", "red") if o != generated["outfit_color"])
    chosen = {"hair_color": hair, "outfit_color": outfit}
    _choose(browser, wait, "hair_color", hair)
    _choose(browser, wait, "outfit_color", outfit)
    amount = _slide(browser, wait)
    assert amount > 0.5, amount
    picked_src = _picked_src(browser)

    # refine, pick another cell, undo: back to the pick with both attributes and the slider
    browser.find_element(By.CSS_SELECTOR, "#refine").click()
    wait.until(lambda d: _grid_srcs(d) != first and "round 1" in _status(d))
    browser.find_elements(By.CSS_SELECTOR, "#grid img")[5].click()
    wait.until(lambda d: "cell 5" in _status(d) and _picked_src(d) != picked_src)
    browser.find_element(By.CSS_SELECTOR, "#undo").click()
    wait.until(lambda d: "undone" in _status(d))
    wait.until(lambda d: _slider_amount(d) == amount)
    wait.until(lambda d: _picked_src(d) == picked_src)
    path = _download(browser, wait)

    img = Image.open(io.BytesIO(path.read_bytes()))
    assert img.format == "PNG" and img.mode == "RGBA" and img.size == (64, 64)
    pixels = np.asarray(img)
    assert (pixels[..., 3] == 0).any() and (pixels[..., 3] == 255).any()
    record = read_metadata(path)
    assert record["history"][-4:] == [
        f"pick seed {seed}",
        "refine palette strength=0.3",
        "pick cell 5",
        "undo palette",
    ]
    assert record["attrs"] == chosen and record["studio"]["attrs"] == chosen
    assert record["studio"]["sliders"][slider.id] == amount
    # the recorded latent is the pick's with both classes and the slider; it renders the pixels
    sess = StudioSession(picked=pipe.latents([seed], truncation=0.8))  # the page's truncation
    want = finished_latent(state, sess, {slider.id: amount}, chosen)
    got = Latent.from_json(record["latent"])
    assert torch.equal(got.z, want.z) and torch.equal(got.labels, want.labels)
    with torch.inference_mode():
        assert np.array_equal(pipe.render(got, rgba=True)[0], pixels)
        no_slider = pipe.render(finished_latent(state, sess, {}, chosen), rgba=True)[0]
        as_generated = pipe.render(sess.picked, rgba=True)[0]

    # the classifier reads the chosen colours off the download (on white, as it was trained)
    on_white = composite(np.stack([pixels, no_slider, as_generated]), "white")
    pred = avatar_extractor.attribute_predictions(on_white)
    for attr, value in chosen.items():
        names = avatar_extractor.class_names(attr)
        seen = [names[int(k)] for k in pred[attr].argmax(1)]
        assert seen == [value, value, generated[attr]], (attr, seen, pred[attr].max(1))
    # and the slider's head tilt (z0 -> head_tilt, clockwise)
    # measured +0.21..+0.29 over bf16/fp32 x classifier seeds 0-1
    record_number("studio_slider_tilt_change", pred["head_tilt"][0] - pred["head_tilt"][1])
    assert pred["head_tilt"][0] > pred["head_tilt"][1] + 0.1, pred["head_tilt"]


def test_overlay_frames_arrive(server, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    url, app = server
    browser.get(url + "/overlay?avatar=studio&fps=30")
    WebDriverWait(browser, 20, poll_frequency=0.1).until(
        lambda d: d.execute_script("return window.overlayFrames") >= 10
    )
    bg = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
    assert bg in ("rgba(0, 0, 0, 0)", "transparent")
    src1 = browser.execute_script("return document.getElementById('avatar').src")
    WebDriverWait(browser, 10, poll_frequency=0.05).until(
        lambda d: d.execute_script("return document.getElementById('avatar').src") != src1
    )
    # the page's keyboard control reaches the server's manual controls
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(browser).send_keys("4").perform()
    WebDriverWait(browser, 10, poll_frequency=0.05).until(
        lambda d: app.state.overlay_hub.controls("studio").get().get("smile") == 1.0
    )
    running = app.state.overlay_hub.running()
    assert running and running[0]["frames"] >= 10
    # the page's script and stylesheet are the package's static files, served by the server
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    for name in ("overlay.js", "overlay.css"):
        assert any(u.split("?")[0].endswith(f"/overlay/static/{name}") for u in loaded), (name, loaded)
    # a frame was really decoded and shown: read the <img>'s pixels back through a canvas
    width, height, visible = browser.execute_async_script(_IMG_PIXELS, "avatar")
    assert width > 0 and height == width
    assert visible > width * height // 10, (width, visible)  # tiny random models: any alpha > 0 counts
    _screenshot(browser, "overlay.png")


# Size of an <img> (argument: its id) and how many of its pixels are not fully transparent,
# drawn onto a canvas. The frames are blob: URLs of the same origin, so the canvas is not
# tainted and getImageData works. Resolves once the current frame has finished loading.
_IMG_PIXELS = """
const done = arguments[arguments.length - 1];
const img = document.getElementById(arguments[0]);
function census() {
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  if (!c.width) { return [0, 0, 0]; }
  const g = c.getContext('2d');
  g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let visible = 0;
  for (let i = 3; i < d.length; i += 4) { if (d[i] > 0) { visible++; } }
  return [c.width, c.height, visible];
}
if (img.complete) { done(census()); } else { img.decode().then(() => done(census()), () => done([0, 0, 0])); }
"""


def test_control_panel_microphone_lip_sync(server, browser):
    """The control page measures the (fake) microphone with WebAudio and sends mouth_open.

    Chromium's fake capture device plays the syllable-like WAV above as the microphone.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, app = server
    controls = app.state.overlay_hub.controls("procedural:2")
    browser.get(url + "/overlay/control?avatar=procedural:2&fps=30")
    WebDriverWait(browser, 20, poll_frequency=0.1).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#preview").get_attribute("src")
    )  # the live preview gets frames
    browser.find_element(By.CSS_SELECTOR, "#mic").click()
    seen: list[float] = []

    def mouth_moves(_d):
        seen.append(controls.get().get("mouth_open", 0.0))
        return max(seen) > 0.2 and browser.find_element(By.CSS_SELECTOR, "#mic").text == "Stop microphone"

    from selenium.common.exceptions import TimeoutException

    try:
        WebDriverWait(browser, 20, poll_frequency=0.05).until(mouth_moves)
    except TimeoutException:
        level = browser.execute_script("return document.getElementById('level').value")
        button = browser.find_element(By.CSS_SELECTOR, "#mic").text
        raise AssertionError(
            f"mouth_open never rose: last {seen[-5:]}, meter {level}, button {button!r}"
        ) from None
    browser.find_element(By.CSS_SELECTOR, "#mic").click()  # stop: the mouth is released
    WebDriverWait(browser, 10, poll_frequency=0.05).until(lambda d: "mouth_open" not in controls.get())


def _requested_urls(driver) -> list[str]:
    """URLs of the requests the browser sent since the last call (its performance log)."""
    import json

    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
        elif msg["method"] == "Network.webSocketCreated":
            urls.append(msg["params"]["url"])
    return urls


def test_no_page_requests_an_outside_host(server, browser):
    """Issue 18: the studio, the API docs and the overlay pages load everything from the
    server itself (no CDN, no web fonts, no analytics): every request the browser sends, as
    recorded by Chrome's DevTools log, goes to the server's host and port."""
    from urllib.parse import urlsplit

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    url, app = server
    wait = WebDriverWait(browser, 30, poll_frequency=0.1)
    _requested_urls(browser)  # drop what earlier tests requested
    seen: list[str] = []
    browser.get(url + "/studio/")
    wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#generate"))).click()
    wait.until(lambda d: len(_grid_srcs(d)) >= 16)
    seen += _requested_urls(browser)
    browser.get(url + "/docs")
    if app.state.swagger_ui is not None:  # Swagger UI rendered the schema from local files
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock"))
    else:  # not installed: the page says how to install it
        assert "Swagger UI is not installed" in browser.page_source and "npm ci" in browser.page_source
    seen += _requested_urls(browser)
    browser.get(url + "/overlay?avatar=studio&fps=30")
    wait.until(lambda d: d.execute_script("return window.overlayFrames") >= 3)
    browser.get(url + "/overlay/control?avatar=studio")
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#preview").get_attribute("src"))
    time.sleep(1.0)  # late requests (fonts, analytics) of the last page
    seen += _requested_urls(browser)
    here = urlsplit(url).netloc
    web = [u for u in seen if urlsplit(u).scheme in ("http", "https", "ws", "wss")]
    assert len(web) > 20 and any("/docs" in u for u in web), web  # the log really recorded them
    outside = sorted({u for u in web if urlsplit(u).netloc != here})
    assert not outside, f"requests to other hosts: {outside}"
    assert all(urlsplit(u).scheme in ("http", "ws", "data", "blob") for u in seen), seen
