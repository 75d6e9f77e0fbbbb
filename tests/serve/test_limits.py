"""Work and memory limits of the API (issue #21): post-processing chains are planned and
capped before any work, uploads are checked from their header before any pixel is
decoded, and only ``max_concurrent_images`` requests decode and process images at once."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient

from .conftest import png_bytes


def _app_client(serve_state, **settings):
    from avatarforge.serve.app import create_app

    return TestClient(create_app(serve_state.with_settings(**settings)))


def _post(client, image: bytes, ops: str):
    return client.post("/v1/postprocess", files={"image": ("a.png", image)}, data={"ops": ops})


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` (valid signature, IHDR and CRCs) but holds
    one tiny IDAT: a header-only reader sees the size, a decoder fails or allocates it all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


# ----------------------------------------------------------------------------- post-processing
def test_postprocess_output_side_is_capped_before_any_work(client, avatar_png, monkeypatch):
    from avatarforge.postprocess.chain import Op

    ran = []
    real = Op.__call__
    monkeypatch.setattr(Op, "__call__", lambda self, image: ran.append(self.name) or real(self, image))
    # 48 px x 4 x 4 x 4 = 3072 px > the default 2048
    r = _post(client, avatar_png, "sharpen,upscale=4,upscale=4,upscale=4")
    assert r.status_code == 422, r.text
    body = r.json()
    msg = body["message"]
    assert msg.startswith("ops: ") and body["detail"][0]["loc"] == ["body", "ops"]
    assert "upscale(factor=4) (op 4 of 4)" in msg and "3072x3072" in msg
    assert "at most 2048 px per side (the server's max_output_side)" in msg
    assert ran == []  # planned from the header size: no op ran
    # within the limit it runs: 48 x 4 x 4 = 768 px
    r = _post(client, avatar_png, "upscale=4,upscale=4")
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
    assert ran == ["upscale", "upscale"]


def test_issue_example_16px_four_upscales_is_422_fast(client):
    img = png_bytes(np.random.default_rng(0).integers(0, 256, (16, 16, 4), dtype=np.uint8))
    t = time.perf_counter()
    r = _post(client, img, "upscale=4,upscale=4,upscale=4,upscale=4")
    assert r.status_code == 422 and "max_output_side" in r.json()["message"]
    r = _post(client, img, "upscale=4,upscale=4,upscale=4,upscale=4,upscale=4")  # was a 500
    assert r.status_code == 422 and "op 4 of 5" in r.json()["message"]
    assert time.perf_counter() - t < 5.0  # was 9.6 s and 2.1 GB for the first alone


def test_postprocess_work_and_op_count_limits_name_their_setting(serve_state):
    img = png_bytes(np.zeros((64, 64, 4), np.uint8))
    with _app_client(serve_state, max_output_side=4096, max_chain_pixels=100_000, max_chain_ops=4) as c:
        r = _post(c, img, "upscale=4, sharpen")  # 65,536 + 65,536 px
        assert r.status_code == 422 and "max_chain_pixels" in r.json()["message"]
        assert "131,072 pixels" in r.json()["message"]
        r = _post(c, img, "sharpen,sharpen,sharpen,sharpen,sharpen")
        assert r.status_code == 422 and "5 ops; at most 4" in r.json()["message"]
        assert "max_chain_ops" in r.json()["message"]
        assert _post(c, img, "upscale=2, sharpen").status_code == 200
        limits = c.get("/v1/info").json()["limits"]
    assert (limits["max_output_side"], limits["max_chain_pixels"], limits["max_chain_ops"]) == (
        4096,
        100_000,
        4,
    )


def test_neural_style_size_is_capped_by_a_setting(client, avatar_png):
    files = {"content": ("c.png", avatar_png), "style": ("s.png", avatar_png)}
    r = client.post("/v1/style", files=files, data={"method": "adain", "steps": "1", "size": "300"})
    assert r.status_code == 422, r.text
    assert "size: at most 256 on this server (its max_style_size), got 300" in r.json()["message"]
    r = client.post("/v1/style", files=files, data={"method": "adain", "steps": "1", "size": "256"})
    assert r.status_code == 200


def test_default_limits_are_reported(client):
    limits = client.get("/v1/info").json()["limits"]
    assert limits["max_style_size"] == 256
    assert limits["max_output_side"] == 2048
    assert limits["max_chain_pixels"] == 32_000_000 and limits["max_chain_ops"] == 32


def test_studio_chain_uses_the_server_limits(serve_state):
    from avatarforge.serve.studio import StudioError, apply_finish

    img = np.zeros((32, 32, 4), np.uint8)
    with pytest.raises(StudioError, match="max_output_side"):
        apply_finish(serve_state, img, chain="upscale=4,upscale=4,upscale=4,upscale=2")  # 4096 px
    assert apply_finish(serve_state, img, chain="upscale=4").shape == (128, 128, 4)


def test_serve_flags_set_the_image_limits():
    from avatarforge.cli import build_parser
    from avatarforge.serve.cli import settings_from_args

    def settings(*argv):
        return settings_from_args(build_parser().parse_args(["serve", "r", *argv]), environ={})

    s = settings()
    assert (s.max_output_side, s.max_pixels) == (2048, 16_000_000)
    s = settings("--max-output-side", "4096", "--max-pixels", "1000000")
    assert (s.max_output_side, s.max_pixels) == (4096, 1_000_000)
    for flag in ("--max-output-side", "--max-pixels"):
        with pytest.raises(ValueError, match=flag):
            settings(flag, "0")


# ----------------------------------------------------------------------------- uploads
def test_oversized_upload_is_refused_from_its_header_without_decoding(client, monkeypatch):
    import avatarforge.serve.uploads as U

    decoded = []
    monkeypatch.setattr(U, "load_image", lambda *a, **k: decoded.append(1) or pytest.fail("decoded"))
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGBA", (4000, 4000)).save(buf, format="PNG")  # ~62 KB, 64 MB of pixels
    r = _post(client, buf.getvalue(), "sharpen")
    assert r.status_code == 413, r.text
    assert "4000x4000" in r.json()["message"] and "max_image_side" in r.json()["message"]
    assert decoded == []


def test_pixel_bomb_message_quotes_the_server_limit(client):
    # 30000 x 30000 = 900 MP: Pillow itself refuses it while opening (its own limit is
    # ~179 MP); the answer must quote the server's max_pixels, not Pillow's figure.
    r = _post(client, _png_header_only(30000, 30000), "sharpen")
    assert r.status_code == 413, r.text
    msg = r.json()["message"]
    assert "too_large" in msg and "900,000,000 pixels" in msg
    assert "16,000,000" in msg and "max_pixels" in msg
    assert "178956970" not in msg and "decompression bomb" not in msg.lower()
    # under Pillow's limit but over ours: the same wording, with the size
    r = _post(client, _png_header_only(5000, 5000), "sharpen")
    assert r.status_code == 413 and "5000x5000 = 25,000,000 pixels" in r.json()["message"]
    assert "16,000,000 on this server (its max_pixels" in r.json()["message"]


def test_at_most_max_concurrent_images_decode_at_once(serve_state, avatar_png, monkeypatch):
    import avatarforge.serve.uploads as U

    real = U.load_image
    lock = threading.Lock()
    now = peak = 0

    def slow_load(*a, **k):
        nonlocal now, peak
        with lock:
            now += 1
            peak = max(peak, now)
        time.sleep(0.15)
        try:
            return real(*a, **k)
        finally:
            with lock:
                now -= 1

    monkeypatch.setattr(U, "load_image", slow_load)
    with _app_client(serve_state, max_concurrent_images=1) as c:
        codes: list[int] = []

        def one() -> None:
            codes.append(_post(c, avatar_png, "sharpen").status_code)

        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert codes == [200] * 4
    assert peak == 1
