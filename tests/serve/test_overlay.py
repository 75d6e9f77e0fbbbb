"""The live overlay: page, frame socket, control channel, shared loops, disconnects."""

from __future__ import annotations

import io
import json
import re
import time

import numpy as np
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from starlette.websockets import WebSocketDisconnect

from avatarforge.serve.overlay import (
    NO_ANIMATOR_CLOSE_CODE,
    UNAUTHORIZED_CLOSE_CODE,
    OverlayControls,
    OverlayError,
    OverlayOptions,
    apply_control,
    encode_frame,
    mount_overlay,
    parse_avatar,
)
from tests.serve.fixtures_studio import SIZE, ProceduralAnimator, make_state, tiny_animator, tiny_pipe


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipe()


def make_client(state, **options) -> tuple[TestClient, object]:
    app = FastAPI()
    hub = mount_overlay(app, state, OverlayOptions(**options) if options else None)
    return TestClient(app), hub


def with_assets(client: TestClient, page) -> str:
    """A page's HTML plus the text of the scripts and stylesheets it links (static files)."""
    refs = re.findall(r'(?:href|src)="([^"]*/overlay/static/[^"]+)"', page.text)
    # the overlay: a stylesheet and two scripts (rig.js, overlay.js); the control page: one of each
    assert len(refs) in (2, 3), refs
    texts = [page.text]
    for ref in refs:
        r = client.get(ref)
        assert r.status_code == 200, ref
        texts.append(r.text)
    return "\n".join(texts)


def decode(data: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    assert im.mode == "RGBA"
    return np.asarray(im)


def wait_until(pred, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def test_frames_are_rgba_webp_of_the_requested_size(pipe):
    client, hub = make_client(make_state(pipe, tiny_animator()))
    with client, client.websocket_connect("/ws/overlay?avatar=5&size=48&fps=60") as ws:
        data = [ws.receive_bytes() for _ in range(5)]
        assert hub.running()[0]["clients"] == 1
    assert all(d[:4] == b"RIFF" and d[8:12] == b"WEBP" for d in data)  # the default format
    frames = [decode(d) for d in data]
    for f in frames:
        assert f.shape == (48, 48, 4)
        assert f[..., 3].min() < 255  # real alpha, not an opaque square
    # idle sway moves the head: the frames are not all the same picture
    assert max(np.abs(f.astype(int) - frames[0]).max() for f in frames) > 0


def test_default_size_is_the_animators_and_png_works(pipe):
    client, _ = make_client(make_state(pipe, tiny_animator()), image_format="png", fps=60)
    with client, client.websocket_connect("/ws/overlay?avatar=procedural:4") as ws:
        data = ws.receive_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert decode(data).shape == (SIZE, SIZE, 4)


def test_blink_and_mouth_controls_change_the_frames(pipe):
    anim = ProceduralAnimator(identity=3)
    client, hub = make_client(make_state(pipe, anim))
    eyes = anim.eye_region()
    open_ref = anim.render_image(3, {"eye_open": 1.0})
    closed_ref = anim.render_image(3, {"eye_open": 0.0})

    def eye_diff(frame, ref):
        return np.abs(frame.astype(int) - ref.astype(int))[eyes].mean()

    with client, client.websocket_connect("/ws/overlay?avatar=7&fps=60&idle=0") as ws:
        first = decode(ws.receive_bytes())
        assert eye_diff(first, open_ref) == 0  # neutral: eyes open, nothing else moves
        # hold the eyes shut (a blink lasts 0.15 s: long enough, but hold to make the check exact)
        ws.send_text(json.dumps({"set": {"eye_open": 0.0}}))
        frames = [decode(ws.receive_bytes()) for _ in range(12)]
        assert eye_diff(frames[-1], closed_ref) < 1.0 < eye_diff(frames[-1], open_ref)
        # the B key blinks: closed within a few frames, then open again by itself
        ws.send_text(json.dumps({"clear": ["eye_open"]}))
        for _ in range(12):
            ws.receive_bytes()
        ws.send_text(json.dumps({"key": "b"}))
        blink = [decode(ws.receive_bytes()) for _ in range(30)]  # 0.5 s at 60 fps
        diffs = [eye_diff(f, open_ref) for f in blink]
        assert max(diffs) > 20 and diffs[-1] < 1.0
        # key 3: mouth wide open
        ws.send_text(json.dumps({"key": "3"}))
        for _ in range(12):
            last = decode(ws.receive_bytes())
        want = anim.render_image(3, {"mouth_open": 1.0})
        assert np.abs(last.astype(int) - want.astype(int)).mean() < 1.0
        assert hub.controls("7").get() == {"mouth_open": 1.0}


def test_one_loop_is_shared_and_stops_with_the_last_client(pipe):
    anim = tiny_animator()
    client, hub = make_client(make_state(pipe, anim))
    with client:
        with client.websocket_connect("/ws/overlay?avatar=2&fps=60") as a:
            a.receive_bytes()
            with client.websocket_connect("/ws/overlay?avatar=2&fps=60") as b:
                b.receive_bytes()
                running = hub.running()
                assert len(running) == 1 and running[0]["clients"] == 2
                # the control socket feeds the same avatar
                with client.websocket_connect("/ws/overlay/control?avatar=2") as c:
                    c.send_text(json.dumps({"set": {"smile": 0.5}}))
                    assert json.loads(c.receive_text()) == {"manual": {"smile": 0.5}}
            # b left without reading its queue: a keeps receiving
            for _ in range(3):
                a.receive_bytes()
            assert wait_until(lambda: hub.running() and hub.running()[0]["clients"] == 1)
        assert wait_until(lambda: hub.running() == [])


def test_running_loops_are_capped_but_clients_join_running_ones(pipe):
    from avatarforge.serve.overlay import TOO_MANY_LOOPS_CLOSE_CODE

    client, hub = make_client(make_state(pipe, tiny_animator()), max_loops=2, fps=30)
    with client:
        with (
            client.websocket_connect("/ws/overlay?avatar=1") as a,
            client.websocket_connect("/ws/overlay?avatar=2") as b,
        ):
            a.receive_bytes(), b.receive_bytes()
            # a third distinct loop is refused, with a reason the page shows
            with (
                client.websocket_connect("/ws/overlay?avatar=3") as c,
                pytest.raises(WebSocketDisconnect) as e,
            ):
                c.receive_bytes()
            assert e.value.code == TOO_MANY_LOOPS_CLOSE_CODE and "max_loops" in e.value.reason
            # joining a running loop costs nothing and is allowed
            with client.websocket_connect("/ws/overlay?avatar=1") as d:
                d.receive_bytes()
                assert len(hub.running()) == 2
        assert wait_until(lambda: hub.running() == [])


def test_manual_controls_of_many_avatars_do_not_accumulate(pipe):
    from avatarforge.serve.overlay import MAX_CONTROLLED_AVATARS

    client, hub = make_client(make_state(pipe, tiny_animator()))
    with client:
        for seed in range(MAX_CONTROLLED_AVATARS + 50):
            r = client.post(f"/overlay/control?avatar={seed}", json={"set": {"smile": 0.5}})
            assert r.status_code == 200
    assert len(hub._controls) == MAX_CONTROLLED_AVATARS
    assert str(MAX_CONTROLLED_AVATARS + 49) in hub._controls and "0" not in hub._controls  # oldest dropped


def test_slow_client_queue_is_bounded_and_keeps_the_newest_frames():
    import asyncio

    from avatarforge.serve.overlay.hub import _Subscriber

    async def main():
        sub = _Subscriber(asyncio.get_running_loop(), maxsize=2)
        for i in range(10):  # the render thread hands over 10 frames before the socket sends one
            sub.offer(bytes([i]))
        await asyncio.sleep(0.05)
        return sub.queue.qsize(), sub.dropped, [await sub.queue.get() for _ in range(2)]

    size, dropped, kept = asyncio.run(main())
    assert size == 2 and dropped == 8 and kept == [b"\x08", b"\x09"]


def test_no_animator_page_says_so_and_socket_closes_with_reason(pipe):
    client, _ = make_client(make_state(pipe, None))
    with client:
        r = client.get("/overlay")
        assert r.status_code == 503
        assert "no animator loaded" in r.text
        assert "background: transparent" in with_assets(client, r)
        with client.websocket_connect("/ws/overlay") as ws, pytest.raises(WebSocketDisconnect) as e:
            ws.receive_bytes()
        assert e.value.code == NO_ANIMATOR_CLOSE_CODE
        assert "no animator loaded" in e.value.reason


def test_page_is_transparent_and_forwards_its_query(pipe):
    client, _ = make_client(make_state(pipe, tiny_animator()))
    with client:
        r = client.get("/overlay?avatar=12&size=256&fps=24&idle=0")
        assert r.status_code == 200
        html = with_assets(client, r)
        assert "background: transparent" in html and "margin: 0" in html
        assert '"avatar": "12"' in html and '"size": "256"' in html and "/ws/overlay" in html
        bad = client.get("/overlay?size=huge")
        assert bad.status_code == 400 and "size must be an integer" in bad.text
        ctl = client.get("/overlay/control?avatar=12")
        assert ctl.status_code == 200 and "Start microphone" in ctl.text and "/ws/overlay/control" in ctl.text


def test_pages_are_static_files_filled_with_a_config(pipe):
    """The pages' HTML, JS and CSS are package files; the server fills in only a JSON config
    (escaped: a query value cannot close the script element), and serves the scripts and
    stylesheets without the key (they hold no data) while the pages need it."""
    from avatarforge.serve.overlay.pages import static_dir

    names = {
        "overlay.html",
        "overlay.js",
        "rig.js",
        "overlay.css",
        "control.html",
        "control.js",
        "control.css",
    }
    assert names <= {f.name for f in static_dir().iterdir()}
    client, _ = make_client(make_state(pipe, tiny_animator(), api_key="s3cret"))
    with client:
        assert client.get("/overlay").status_code == 401
        for name in names - {"overlay.html", "control.html"}:
            r = client.get(f"/overlay/static/{name}")
            assert r.status_code == 200 and r.text == (static_dir() / name).read_text(encoding="utf-8")
        evil = "</script><script>alert(1)</script>"
        r = client.get("/overlay", params={"key": "s3cret", "avatar": evil})
        assert r.status_code == 400 and evil not in r.text and "{{" not in r.text
        ctl = with_assets(client, client.get("/overlay/control?avatar=5&key=s3cret"))
        assert "getUserMedia" in ctl and '"control": "/ws/overlay/control"' in ctl and "{{" not in ctl


def test_bad_socket_parameters_close_with_the_field_named(pipe):
    client, _ = make_client(make_state(pipe, tiny_animator()))
    with (
        client,
        client.websocket_connect("/ws/overlay?fps=1000") as ws,
        pytest.raises(WebSocketDisconnect) as e,
    ):
        ws.receive_bytes()
    assert e.value.code == 4400 and "fps must be from 1 to" in e.value.reason


def test_bad_control_messages_are_answered_not_fatal(pipe):
    client, _ = make_client(make_state(pipe, tiny_animator()))
    with client, client.websocket_connect("/ws/overlay/control?avatar=3") as c:
        c.send_text("not json")
        assert "must be JSON" in json.loads(c.receive_text())["error"]
        c.send_text(json.dumps({"set": {"eyes": 1}}))
        assert "unknown control 'eyes'" in json.loads(c.receive_text())["error"]
        c.send_text(json.dumps({"action": "blink"}))
        assert json.loads(c.receive_text()) == {"manual": {}}


def test_http_control_and_api_key(pipe):
    client, hub = make_client(make_state(pipe, tiny_animator(), api_key="s3cret"))
    with client:
        assert client.get("/overlay").status_code == 401
        assert client.get("/overlay?key=s3cret").status_code == 200
        r = client.post("/overlay/control?avatar=4", json={"key": "4"})
        assert r.status_code == 401
        r = client.post("/overlay/control?avatar=4", json={"key": "4"}, headers={"X-API-Key": "s3cret"})
        assert r.status_code == 200 and r.json() == {"avatar": "4", "manual": {"smile": 1.0}}
        r = client.post(
            "/overlay/control?avatar=4", json={"set": {"smile": "big"}}, headers={"X-API-Key": "s3cret"}
        )
        assert r.status_code == 422 and "smile must be a number" in r.json()["detail"]
        # refused before the handshake (no socket opens; a real server answers HTTP 403)
        for url in ("/ws/overlay?avatar=4", "/ws/overlay?avatar=4&key=wrong", "/ws/overlay/control?avatar=4"):
            with pytest.raises(WebSocketDisconnect) as e, client.websocket_connect(url):
                pytest.fail("the socket opened without the key")
            assert e.value.code == UNAUTHORIZED_CLOSE_CODE == 1008
        r = client.post(
            "/overlay/control?avatar=4", json={"key": "b"}, headers={"Authorization": "Bearer s3cret"}
        )
        assert r.status_code == 200
        with client.websocket_connect("/ws/overlay?avatar=4", headers={"X-API-Key": "s3cret"}) as ws:
            assert decode(ws.receive_bytes()).shape == (SIZE, SIZE, 4)
    assert hub.controls("4").get() == {"smile": 1.0}


def test_studio_avatar_is_swapped_in_running_loops(pipe):
    anim = tiny_animator()
    client, hub = make_client(make_state(pipe, anim))
    with client, client.websocket_connect("/ws/overlay?avatar=studio&fps=60&idle=0") as ws:
        before = decode(ws.receive_bytes())
        other = pipe(seeds=[99], rgba=True).images[0]
        hub.set_avatar("studio", other)
        want = anim.render_image(anim.prepare(other), {})
        assert wait_until(lambda: np.array_equal(decode(ws.receive_bytes()), want), timeout=5)
        assert not np.array_equal(before, want)


def test_apply_control_keys_and_validation():
    c = OverlayControls()
    assert apply_control(c, {"key": "ArrowRight"}) == {"head_yaw": 0.25}
    assert apply_control(c, {"key": "arrowright"}) == {"head_yaw": 0.5}
    assert apply_control(c, {"key": "ArrowUp"}) == {"head_yaw": 0.5, "head_tilt": -0.25}
    assert apply_control(c, '{"set": {"mouth_open": 0.7, "vowel_o": 1, "gaze_x": -0.5}}')["vowel_o"] == 1.0
    with pytest.raises(OverlayError, match=r'"set": mouth_open must be a number from 0 to 1, got 7'):
        apply_control(c, '{"set": {"mouth_open": 7}}')  # out of range: the field and its range
    apply_control(c, {"clear": ["vowel_o", "gaze_x", "mouth_open"]})
    assert apply_control(c, {"key": "Escape"}) == {}
    c.blink()
    assert c.update(0.0)["eye_open"] == 0.0
    for bad, msg in [
        ([], "JSON object"),
        ({"jump": 1}, "unknown control message field"),
        ({"key": "q"}, "not bound"),
        ({"action": "dance"}, "unknown action"),
        ({"clear": "all"}, '"clear" must be'),
        ({"set": {"smile": float("nan")}}, "smile must be a number"),
    ]:
        with pytest.raises(OverlayError, match=msg):
            apply_control(c, bad)


def test_parse_avatar_and_options():
    assert parse_avatar(None) == "studio"
    assert parse_avatar(" 007 ") == "7"
    assert parse_avatar("Procedural:3") == "procedural:3"
    with pytest.raises(OverlayError, match="avatar must be"):
        parse_avatar("../etc/passwd")
    with pytest.raises(OverlayError, match="image_format"):
        OverlayOptions(image_format="jpeg")
    with pytest.raises(OverlayError, match="vmc must be"):
        OverlayOptions(vmc="localhost:abc")


def test_encode_frame_keeps_alpha_and_resizes():
    img = np.zeros((32, 32, 4), np.uint8)
    img[8:24, 8:24] = (255, 0, 0, 255)
    out = decode(encode_frame(img, "png", size=64))
    assert out.shape == (64, 64, 4)
    assert out[0, 0, 3] == 0 and out[32, 32, 3] == 255 and tuple(out[32, 32, :3]) == (255, 0, 0)
    assert np.array_equal(decode(encode_frame(img, "webp")), img)


def test_vmc_listener_drives_the_overlay_and_closes_with_it(pipe):
    import socket

    from avatarforge.animate.osc import encode_bundle, encode_message

    anim = ProceduralAnimator(identity=3)
    client, hub = make_client(make_state(pipe, anim), vmc="127.0.0.1:0", fps=60)  # port 0: a free port
    eyes = anim.eye_region()
    closed_ref = anim.render_image(3, {"eye_open": 0.0})
    with client, client.websocket_connect("/ws/overlay?avatar=1&idle=0") as ws:
        ws.receive_bytes()
        vmc = hub._vmc
        assert vmc is not None
        packet = encode_bundle(
            [encode_message("/VMC/Ext/Blend/Val", "Blink", 1.0), encode_message("/VMC/Ext/Blend/Apply")]
        )
        # A sender streams (the listener counts a silent one as a lost face after 0.5 s); the
        # tracking layer fades in over 0.3 s.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(packet, ("127.0.0.1", vmc.port))
            assert vmc.wait(lambda d: d.packets >= 1, timeout=5)
            for i in range(45):
                if i % 5 == 0:
                    s.sendto(packet, ("127.0.0.1", vmc.port))
                last = decode(ws.receive_bytes())
        assert np.abs(last.astype(int) - closed_ref.astype(int))[eyes].mean() < 1.0
    assert wait_until(lambda: hub._vmc is None)  # the last client left: the UDP port is free again


def test_mounted_on_the_real_app(client, serve_state_noanim):
    """create_app mounts the overlay: the page, and frames from the loaded animator."""
    assert client.get("/overlay").status_code == 200
    with client.websocket_connect("/ws/overlay?avatar=3&fps=60") as ws:
        frame = decode(ws.receive_bytes())
    assert frame.shape == (32, 32, 4)

    from avatarforge.serve.app import create_app

    with TestClient(create_app(serve_state_noanim)) as bare:
        assert "no animator loaded" in bare.get("/overlay").text


def test_options_from_the_environment(pipe, monkeypatch, tmp_path):
    from avatarforge.serve.overlay import overlay_options as _overlay_options

    state = make_state(pipe, None)
    monkeypatch.setenv("AVATARFORGE_VMC", "1")
    assert _overlay_options(state, None).vmc == "127.0.0.1:39539"
    monkeypatch.setenv("AVATARFORGE_VMC", "127.0.0.1:40000")
    monkeypatch.setenv("AVATARFORGE_OVERLAY_AUDIO", str(tmp_path / "missing.wav"))
    with pytest.raises(OverlayError, match="is not a file"):
        _overlay_options(state, None)
    monkeypatch.delenv("AVATARFORGE_OVERLAY_AUDIO")
    assert _overlay_options(state, None).vmc == "127.0.0.1:40000"


def test_server_wav_drives_the_mouth(pipe, tmp_path):
    import wave

    anim = ProceduralAnimator(identity=3)
    rate = 16000
    t = np.arange(rate * 2) / rate
    loud = (0.5 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2")  # 2 s of a loud tone
    with wave.open(str(tmp_path / "tone.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(loud.tobytes())
    client, _ = make_client(make_state(pipe, anim), audio=str(tmp_path / "tone.wav"), fps=60, idle=False)
    open_mouth = anim.render_image(3, {"mouth_open": 1.0})
    with client, client.websocket_connect("/ws/overlay?avatar=1") as ws:
        frames = [decode(ws.receive_bytes()) for _ in range(20)]
    assert np.abs(frames[-1].astype(int) - open_mouth.astype(int)).mean() < 1.0


def test_server_shutdown_stops_loops_and_frees_the_vmc_port(pipe):
    import asyncio

    app = FastAPI()
    hub = mount_overlay(app, make_state(pipe, tiny_animator()), OverlayOptions(vmc="127.0.0.1:0"))

    async def serve_then_shut_down():
        async with app.router.lifespan_context(app):  # what uvicorn does around serving
            loop = asyncio.get_running_loop()
            session, sub = await asyncio.to_thread(hub.subscribe, "1", None, 30.0, True, loop)
            await asyncio.wait_for(sub.queue.get(), 10)  # a frame arrived; the client is still there
            assert hub.running() and hub._vmc is not None
        return session

    session = asyncio.run(serve_then_shut_down())
    assert hub.running() == [] and hub._vmc is None
    assert not session.thread.is_alive()
    assert session.error == "the server is shutting down"  # what the socket's close reason says


class _Broken:
    resolution = SIZE

    def prepare(self, avatar):
        return None

    def render_image(self, state, controls):
        raise RuntimeError("out of memory (simulated)")


def test_a_failing_animator_closes_the_stream_with_the_reason(pipe):
    client, hub = make_client(make_state(pipe, _Broken()))
    with (
        client,
        client.websocket_connect("/ws/overlay?avatar=1") as ws,
        pytest.raises(WebSocketDisconnect) as e,
    ):
        ws.receive_bytes()
    assert e.value.code == 1011 and "rendering failed: RuntimeError: out of memory" in e.value.reason
    assert wait_until(lambda: hub.running() == [])


def test_vmc_port_in_use_closes_with_a_clear_reason(pipe):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        client, hub = make_client(make_state(pipe, tiny_animator()), vmc=f"127.0.0.1:{port}")
        with (
            client,
            client.websocket_connect("/ws/overlay?avatar=1") as ws,
            pytest.raises(WebSocketDisconnect) as e,
        ):
            ws.receive_bytes()
    assert e.value.code == 1011
    assert f"cannot start the overlay: cannot listen for VMC on 127.0.0.1:{port}" in e.value.reason
    assert hub.running() == [] and hub._vmc is None


# ------------------------------------------------------------------ rig mode (the page draws)
def test_rig_mode_page_rig_and_controls_stream(pipe):
    """A procedural avatar is rigged at 512 px without any animator; the socket then sends
    only the smoothed controls as JSON, which the page draws from (tests/serve/test_overlay_rig_browser.py)."""
    client, hub = make_client(make_state(pipe, None))
    with client:
        page = client.get("/overlay?avatar=procedural:3")
        assert page.status_code == 200
        cfg = json.loads(re.search(r'id="overlay-config"[^>]*>(.*?)</script>', page.text, re.S).group(1))
        assert cfg["mode"] == "rig" and cfg["query"]["mode"] == "rig"
        rig = client.get("/overlay/rig?avatar=procedural:3").json()
        assert rig["format"] == "avatarforge-rig" and rig["size"] == 512
        assert set(rig["eyes"]) == {"l", "r"} and rig["plate"].startswith("data:image/png;base64,")
        assert client.get("/overlay/rig?avatar=procedural:3&size=256").json()["size"] == 256
        with client.websocket_connect("/ws/overlay?avatar=procedural:3&mode=rig&fps=60&idle=0") as ws:
            first = json.loads(ws.receive_text())
            assert first["c"]["eye_open"] == 1.0 and first["c"]["mouth_open"] == 0.0
            ws.send_text(json.dumps({"key": "3"}))  # mouth wide open
            for _ in range(30):
                msg = json.loads(ws.receive_text())
            assert msg["c"]["mouth_open"] > 0.9
            assert hub.running()[0]["mode"] == "rig"


def test_rig_mode_errors_name_the_fix(pipe):
    client, _ = make_client(make_state(pipe, None))
    with client:
        # generator seeds need a layer source (a refiner): the message says how to get one
        r = client.get("/overlay/rig?avatar=5")
        assert r.status_code == 422 and "--refiner" in r.json()["detail"]
        assert "mode must be one of rig, frames" in client.get("/overlay?avatar=procedural:1&mode=x").text
        # without an animator, frames mode is refused as before
        with (
            client.websocket_connect("/ws/overlay?avatar=procedural:1&mode=frames") as ws,
            pytest.raises(WebSocketDisconnect) as e,
        ):
            ws.receive_bytes()
        assert e.value.code == 4503


def test_generator_avatars_are_rigged_through_the_refiner(pipe):
    """With a refiner that predicts part maps, generator seeds and the studio's pick are rigged
    at the largest size the server makes; a new studio pick tells rig pages to reload."""
    from avatarforge.models.refiner import Refiner

    p = tiny_pipe()
    torch.manual_seed(0)
    p.attach_refiner(Refiner(scale=4, channels=4, width=8, blocks=1).eval())
    client, hub = make_client(make_state(p, None))
    with client:
        page = client.get("/overlay?avatar=5")
        assert page.status_code == 200 and '"mode": "rig"' in page.text
        r = client.get("/overlay/rig?avatar=5")
        assert r.status_code == 200 and r.json()["size"] == 4 * SIZE
        with client.websocket_connect("/ws/overlay?avatar=studio&mode=rig&idle=0") as ws:
            json.loads(ws.receive_text())
            img = p(seeds=[9], rgba=True).images[0]
            hub.set_avatar("studio", img)
            for _ in range(100):
                msg = json.loads(ws.receive_text())
                if msg.get("reload"):
                    break
            assert msg == {"reload": True}


# ------------------------------------------------------------------ tracking, expressions (#19)
def test_tracker_page_model_files_and_expression_api(pipe, monkeypatch):
    from avatarforge.serve.overlay import routes

    client, hub = make_client(make_state(pipe, None, api_key="k"))
    with client:
        assert client.get("/tracker").status_code == 401
        page = client.get("/tracker?avatar=procedural:1&key=k")
        cfg = json.loads(re.search(r'id="tracker-config"[^>]*>(.*?)</script>', page.text, re.S).group(1))
        assert cfg["mediapipe"] == "/tracker/mediapipe" and cfg["socket"] == "/ws/overlay/control"
        assert client.get("/tracker/static/tracker.js").status_code == 200
        if cfg["installed"]:  # node_modules present: the files come from the server, wasm typed
            r = client.get("/tracker/mediapipe/face_mesh_solution_simd_wasm_bin.wasm")
            assert r.status_code == 200 and r.headers["content-type"] == "application/wasm"
        for name in ("package.json", "..%2Fpackage.json", "index.d.ts"):
            assert client.get(f"/tracker/mediapipe/{name}").status_code == 404
        monkeypatch.setattr(routes, "face_mesh_dir", lambda: None)
        page = client.get("/tracker?key=k").text
        cfg = json.loads(re.search(r'id="tracker-config"[^>]*>(.*?)</script>', page, re.S).group(1))
        assert cfg["installed"] is False and "npm ci --ignore-scripts" in cfg["install"]
        assert client.get("/tracker/mediapipe/face_mesh.js").status_code == 404

        info = client.get("/overlay/expressions", headers={"X-API-Key": "k"}).json()
        assert info["expressions"]["happy"]["key"] == "6" and "nod" in info["animations"]
        h = {"X-API-Key": "k"}
        r = client.post(
            "/overlay/control?avatar=procedural:1",
            json={"expression": {"name": "happy", "hold": 2}},
            headers=h,
        )
        assert r.status_code == 200 and hub.controls("procedural:1").expression.current == "happy"
        for bad, msg in [
            ({"expression": "giddy"}, "unknown expression 'giddy'"),
            ({"expression": {"name": "sad", "fade_in": 99}}, "fade_in must be a number from 0 to 10"),
            ({"animation": "moonwalk"}, "unknown animation"),
            ({"track": [1, 2]}, '"track" must be an object'),
        ]:
            r = client.post("/overlay/control?avatar=procedural:1", json=bad, headers=h)
            assert r.status_code == 422 and msg in r.json()["detail"], r.json()
        # a tracker frame: clamped and counted, not refused; no reply on the control socket
        with client.websocket_connect("/ws/overlay/control?avatar=procedural:1&key=k") as ws:
            ws.send_text(json.dumps({"track": {"head_yaw": 3, "smile": 0.5, "nope": 1}, "seq": 7}))
            ws.send_text(json.dumps({"key": "6"}))  # toggles happy off
            assert json.loads(ws.receive_text()) == {"manual": {}}
        tracker = hub.controls("procedural:1").tracker
        assert tracker.seq == 7 and tracker.stats.clamped == 1 and tracker.stats.dropped_values == 1
        assert hub.controls("procedural:1").expression.current is None
