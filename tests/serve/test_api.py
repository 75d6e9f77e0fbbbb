"""HTTP API: every endpoint through TestClient, validation, uploads, API key, concurrency."""

from __future__ import annotations

import base64
import io
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

from .conftest import API_KEY, HAIR, SIZE, decode_png, png_bytes


def test_healthz_is_open(keyed_client):
    r = keyed_client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_info(client):
    r = client.get("/v1/info")
    assert r.status_code == 200
    body = r.json()
    assert body["model"]["resolution"] == SIZE and body["model"]["rgba"] is True
    assert "hair_color" in body["attributes"]


def test_api_key_enforced(keyed_client):
    assert keyed_client.get("/v1/info").status_code == 401
    r = keyed_client.get("/v1/info", headers={"X-API-Key": "wrong"})
    assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
    assert keyed_client.get("/v1/info", headers={"X-API-Key": API_KEY}).status_code == 200
    assert keyed_client.get("/v1/info", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200


# ----------------------------------------------------------------------------- offline docs
def _docs_app(state, swagger):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from avatarforge.serve.app import _docs

    keyed = state.settings.api_key is not None
    app = FastAPI(openapi_url=None if keyed else "/openapi.json", docs_url=None, redoc_url=None)
    _docs(app, state, swagger)
    return TestClient(app)


def _local_only(html: str) -> None:
    import re

    assert "cdn" not in html.lower() and "fastapi.tiangolo.com" not in html
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", html), html  # nothing from another host


def test_docs_serve_swagger_ui_from_local_files(serve_state, tmp_path):
    """Issue 18, defect 3: /docs loads Swagger UI from the server (a local copy of the npm
    package swagger-ui-dist), never from a CDN; /redoc leads there; the key still guards it."""
    from avatarforge.serve.app import SWAGGER_UI_FILES

    for name in SWAGGER_UI_FILES:
        (tmp_path / name).write_bytes(f"/* {name} */".encode())
    client = _docs_app(serve_state, tmp_path)
    page = client.get("/docs")
    assert page.status_code == 200
    _local_only(page.text)
    assert '"/docs/static/swagger-ui-bundle.js"' in page.text and '"/docs/static/swagger-ui.css"' in page.text
    assert '"validatorUrl": null' in page.text  # no badge fetching validator.swagger.io
    js = client.get("/docs/static/swagger-ui-bundle.js")
    assert js.status_code == 200 and js.text == "/* swagger-ui-bundle.js */"
    assert js.headers["content-type"].startswith("text/javascript")
    for bad in ("package.json", "..%2Fapp.py", "swagger-ui-bundle.js.map"):
        assert client.get(f"/docs/static/{bad}").status_code == 404, bad
    assert client.get("/redoc").url.path == "/docs"
    keyed = _docs_app(serve_state.with_settings(api_key=API_KEY), tmp_path)
    assert keyed.get("/docs").status_code == 401
    page = keyed.get(f"/docs?key={API_KEY}")
    assert page.status_code == 200 and f"/openapi.json?key={API_KEY}" in page.text
    assert keyed.get("/docs/static/swagger-ui.css").status_code == 200  # public files, no data


def test_docs_without_swagger_ui_say_how_to_install_it(serve_state):
    client = _docs_app(serve_state, None)
    page = client.get("/docs")
    assert page.status_code == 200 and "Swagger UI is not installed" in page.text
    assert "make install" in page.text and "npm ci --ignore-scripts" in page.text
    assert 'href="/openapi.json"' in page.text
    _local_only(page.text)
    assert client.get("/docs/static/swagger-ui-bundle.js").status_code == 404


def test_swagger_ui_dir_finds_the_bundle(tmp_path, monkeypatch):
    from avatarforge.serve.app import SWAGGER_UI_ENV, swagger_ui_dir

    (tmp_path / "swagger-ui-bundle.js").write_text("x")
    (tmp_path / "swagger-ui.css").write_text("x")
    assert swagger_ui_dir({SWAGGER_UI_ENV: str(tmp_path)}) == tmp_path
    # from the checkout: where `make install` (npm ci) puts it, found whatever the cwd
    monkeypatch.chdir(tmp_path)
    repo = Path(__file__).resolve().parents[2]
    found = swagger_ui_dir({})
    if (repo / "node_modules" / "swagger-ui-dist" / "swagger-ui-bundle.js").is_file():
        assert found == repo / "node_modules" / "swagger-ui-dist"


# ----------------------------------------------------------------------------- helpers
def _images(body: dict) -> list[np.ndarray]:
    return [decode_png(base64.b64decode(im["png"])) for im in body["images"]]


def _field_named(r, field: str) -> None:
    assert 400 <= r.status_code < 500, r.text
    body = r.json()
    assert field in body["message"], body
    assert any(field in [str(p) for p in d["loc"]] for d in body["detail"]), body


# ----------------------------------------------------------------------------- generate
def test_generate_shape_alpha_and_determinism(client, serve_state):
    r = client.post("/v1/generate", json={"seeds": [3, 11]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["width"], body["height"], body["channels"]) == (SIZE, SIZE, 4)
    imgs = _images(body)
    assert [im.shape for im in imgs] == [(SIZE, SIZE, 4)] * 2
    assert [im["seed"] for im in body["images"]] == [3, 11]
    assert not np.array_equal(imgs[0], imgs[1])
    # the same seed alone gives the same bytes, and the library gives the same pixels
    alone = client.post("/v1/generate", json={"seeds": [11]}).json()
    assert alone["images"][0]["png"] == body["images"][1]["png"]
    ref = serve_state.pipe(seeds=[3, 11]).images
    np.testing.assert_array_equal(np.stack(imgs), ref)


def test_generate_attrs_rgb_background_and_n(client):
    r = client.post(
        "/v1/generate", json={"n": 2, "attrs": {"hair_color": "pink"}, "rgba": False, "background": "#00ff00"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["channels"] == 3 and [im["seed"] for im in body["images"]] == [0, 1]
    assert all(im["attrs"]["hair_color"] == "pink" for im in body["images"])


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"seeds": [1], "attrs": {"hair_color": "plaid"}}, "attrs"),
        ({"seeds": [1], "attrs": {"nose": "big"}}, "attrs"),
        ({"seeds": [1], "truncation": 5}, "truncation"),
        ({"seeds": [-1]}, "seeds"),
        ({"n": 0}, "n"),
        ({"n": 65}, "n"),  # over the server's max_n (64) but under the schema's hard cap
        ({"seeds": [1], "noise_mode": "loud"}, "noise_mode"),
        ({"seeds": [1], "background": "no-such-colour"}, "background"),
        ({"seeds": [1], "codes": {"c0": 1}}, "codes"),
        ({"seeds": [1], "unexpected": 1}, "unexpected"),
    ],
)
def test_generate_validation_names_the_field(client, payload, field):
    r = client.post("/v1/generate", json=payload)
    assert r.status_code == 422
    _field_named(r, field)


def test_generate_needs_seeds_or_n(client):
    r = client.post("/v1/generate", json={})
    assert r.status_code == 422 and "seeds" in r.json()["message"]


# ----------------------------------------------------------------------------- variations / edit
def test_variations_of_seed_and_of_latent_agree(client):
    gen = client.post("/v1/generate", json={"seeds": [5]}).json()["images"][0]
    by_seed = client.post("/v1/variations", json={"seed": 5, "n": 3, "strength": 0.4}).json()
    by_latent = client.post("/v1/variations", json={"latent": gen["latent"], "n": 3, "strength": 0.4}).json()
    a, b = _images(by_seed), _images(by_latent)
    assert len(a) == 3 and a[0].shape == (SIZE, SIZE, 4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    # strength 0 reproduces the source image
    zero = client.post("/v1/variations", json={"latent": gen["latent"], "n": 1, "strength": 0.0}).json()
    np.testing.assert_array_equal(_images(zero)[0], decode_png(base64.b64decode(gen["png"])))


def test_variations_validation(client):
    _field_named(client.post("/v1/variations", json={"seed": 1, "strength": 1.5}), "strength")
    r = client.post("/v1/variations", json={"n": 2})
    assert r.status_code == 422 and "seed or latent" in r.json()["message"]
    _field_named(client.post("/v1/variations", json={"latent": "garbage!!"}), "latent")


def test_edit_label_slider_reaches_the_label(client):
    src = client.post("/v1/generate", json={"seeds": [9], "attrs": {"hair_color": HAIR[0]}}).json()["images"][
        0
    ]
    target = client.post("/v1/generate", json={"seeds": [9], "attrs": {"hair_color": HAIR[1]}}).json()[
        "images"
    ][0]
    r = client.post(
        "/v1/edit",
        json={"latent": src["latent"], "direction": f"hair_color={HAIR[1]}", "amounts": [0.0, 1.0]},
    )
    assert r.status_code == 200, r.text
    imgs = _images(r.json())
    assert [im["amount"] for im in r.json()["images"]] == [0.0, 1.0]
    src_img, tgt_img = (decode_png(base64.b64decode(x["png"])) for x in (src, target))
    # amount 0 = the source; amount 1 = the image generated with the other label
    assert np.abs(imgs[0].astype(int) - src_img).max() <= 1
    assert np.abs(imgs[1].astype(int) - tgt_img).max() <= 2
    assert np.abs(imgs[1].astype(int) - src_img).mean() > 0.5


def test_edit_sefa_default_range_and_unknown_direction(client):
    r = client.post("/v1/edit", json={"seed": 2, "direction": "sefa0"})
    assert r.status_code == 200 and len(r.json()["images"]) == 7
    r = client.post("/v1/edit", json={"seed": 2, "direction": "wings+"})
    _field_named(r, "direction")
    assert "sefa0" in r.json()["message"]  # lists what is available


# ----------------------------------------------------------------------------- interpolate
@pytest.mark.parametrize("fmt, magic", [("gif", b"GIF8"), ("webp", b"RIFF"), ("apng", b"\x89PNG")])
def test_interpolate_formats(client, fmt, magic):
    r = client.post("/v1/interpolate", json={"seeds": [1, 2], "frames": 4, "fps": 10, "format": fmt})
    assert r.status_code == 200, r.text
    assert r.content.startswith(magic) and r.headers["content-type"].startswith("image/")
    from avatarforge.postprocess.export import load_animation

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / ("a." + {"apng": "png"}.get(fmt, fmt))
        p.write_bytes(r.content)
        frames, durations = load_animation(p)
    assert len(frames) >= 2 and frames[0].shape == (SIZE, SIZE, 4)
    assert durations[0] == 100  # 10 fps


def test_interpolate_latents_matches_seeds(client):
    toks = [im["latent"] for im in client.post("/v1/generate", json={"seeds": [1, 2]}).json()["images"]]
    a = client.post("/v1/interpolate", json={"seeds": [1, 2], "frames": 5, "format": "apng"})
    b = client.post("/v1/interpolate", json={"latents": toks, "frames": 5, "format": "apng"})
    assert a.status_code == b.status_code == 200
    assert a.content == b.content


def test_interpolate_limits(client):
    _field_named(client.post("/v1/interpolate", json={"seeds": [1, 2], "frames": 241}), "frames")
    _field_named(client.post("/v1/interpolate", json={"seeds": [1]}), "seeds")
    _field_named(client.post("/v1/interpolate", json={"seeds": [1, 2], "format": "mov"}), "format")


# ----------------------------------------------------------------------------- postprocess
def test_postprocess_keeps_alpha_and_matches_library(client, avatar_png):
    from avatarforge.postprocess import apply_chain

    r = client.post(
        "/v1/postprocess",
        files={"image": ("a.png", avatar_png, "image/png")},
        data={"ops": "saturation=1.3,sharpen=0.5"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    out = decode_png(r.content)
    src = decode_png(avatar_png)
    assert out.shape == src.shape == (48, 48, 4)
    np.testing.assert_array_equal(out[..., 3], src[..., 3])  # alpha bit-exact
    np.testing.assert_array_equal(out, apply_chain(src, "saturation=1.3,sharpen=0.5"))


def test_postprocess_upscale(client, avatar_png):
    r = client.post("/v1/postprocess", files={"image": ("a.png", avatar_png)}, data={"ops": "upscale=2"})
    assert r.status_code == 200 and decode_png(r.content).shape == (96, 96, 4)


def test_postprocess_bad_chain_names_ops(client, avatar_png):
    r = client.post("/v1/postprocess", files={"image": ("a.png", avatar_png)}, data={"ops": "saturatoin=1.2"})
    _field_named(r, "ops")
    assert "saturation" in r.json()["message"]  # did-you-mean from the library


def test_postprocess_refuses_server_paths_without_revealing_them(client, avatar_png, tmp_path):
    existing = tmp_path / "bg.png"
    existing.write_bytes(avatar_png)
    msgs = []
    for path in (existing, tmp_path / "missing.png"):
        r = client.post(
            "/v1/postprocess",
            files={"image": ("a.png", avatar_png)},
            data={"ops": f"composite(background={path})"},
        )
        assert r.status_code == 422
        msgs.append(r.json()["message"])
    assert msgs[0] == msgs[1] and "server" in msgs[0]


def test_upload_too_large_is_413(client, serve_state):
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * (serve_state.settings.max_upload_bytes + 10)
    r = client.post("/v1/postprocess", files={"image": ("a.png", big)}, data={"ops": "sharpen"})
    assert r.status_code == 413
    assert "image" in r.json()["message"] or "body" in r.json()["message"]


def test_upload_pixel_bomb_is_413(client):
    # 5000 x 5000 claims 25 MP (> max_pixels 16 MP) but compresses to a few KB
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (5000, 5000)).save(buf, format="PNG")
    r = client.post("/v1/postprocess", files={"image": ("bomb.png", buf.getvalue())}, data={"ops": "sharpen"})
    assert r.status_code == 413
    _field_named(r, "image")
    assert "too_large" in r.json()["message"]


@pytest.mark.parametrize(
    "data, status, reason",
    [
        (b"", 422, "empty"),
        (b"<html>not an image</html>", 415, "not_an_image"),
        ("truncated", 422, "truncated"),
    ],
)
def test_corrupt_uploads_rejected_with_reason(client, avatar_png, data, status, reason):
    if data == "truncated":
        data = avatar_png[: len(avatar_png) // 2]
    r = client.post("/v1/postprocess", files={"image": ("x.png", data)}, data={"ops": "sharpen"})
    assert r.status_code == status, r.text
    _field_named(r, "image")
    assert reason in r.json()["message"]


def test_upload_side_limit(client):

    from fastapi.testclient import TestClient

    from avatarforge.serve.app import create_app

    st = client.app.state.serve
    small = st.with_settings(max_image_side=32)
    with TestClient(create_app(small)) as c:
        img = png_bytes(np.zeros((40, 20, 3), np.uint8))
        r = c.post("/v1/postprocess", files={"image": ("a.png", img)}, data={"ops": "sharpen"})
    assert r.status_code == 413 and "max_image_side" in r.json()["message"]


# ----------------------------------------------------------------------------- style
@pytest.mark.parametrize("method", ["colour", "histogram"])
def test_style_classical_keeps_content_alpha(client, avatar_png, method):
    from avatarforge.style import classical

    style = png_bytes(
        np.tile(np.array([[[200, 40, 90]]], np.uint8), (16, 16, 1))
        + np.arange(16, dtype=np.uint8)[:, None, None]
    )
    r = client.post(
        "/v1/style",
        files={"content": ("c.png", avatar_png), "style": ("s.png", style)},
        data={"method": method, "strength": "0.8"},
    )
    assert r.status_code == 200, r.text
    out, src = decode_png(r.content), decode_png(avatar_png)
    assert out.shape == src.shape
    np.testing.assert_array_equal(out[..., 3], src[..., 3])
    fn = classical.colour_transfer if method == "colour" else classical.histogram_match
    np.testing.assert_array_equal(out, fn(src, decode_png(style), strength=0.8))


def test_style_neural_runs_bounded(client, avatar_png):
    r = client.post(
        "/v1/style",
        files={"content": ("c.png", avatar_png), "style": ("s.png", avatar_png)},
        data={"method": "adain", "steps": "2", "size": "32"},
    )
    assert r.status_code == 200, r.text
    assert decode_png(r.content).shape == (48, 48, 4)
    r = client.post(
        "/v1/style",
        files={"content": ("c.png", avatar_png), "style": ("s.png", avatar_png)},
        data={"method": "gatys", "steps": "201"},
    )
    _field_named(r, "steps")


def test_style_validation(client, avatar_png):
    files = {"content": ("c.png", avatar_png), "style": ("s.png", b"garbage")}
    r = client.post("/v1/style", files=files, data={"method": "colour"})
    assert r.status_code == 415
    _field_named(r, "style")
    files = {"content": ("c.png", avatar_png), "style": ("s.png", avatar_png)}
    _field_named(client.post("/v1/style", files=files, data={"method": "cubism"}), "method")
    _field_named(client.post("/v1/style", files={"content": ("c.png", avatar_png)}), "style")


# ----------------------------------------------------------------------------- animate
def test_animate_seed_latent_and_upload(client):
    gen = client.post("/v1/generate", json={"seeds": [4]}).json()["images"][0]
    by_seed = client.post("/v1/animate", data={"seed": "4", "seconds": "0.5", "fps": "8", "format": "apng"})
    by_latent = client.post(
        "/v1/animate", data={"latent": gen["latent"], "seconds": "0.5", "fps": "8", "format": "apng"}
    )
    assert by_seed.status_code == 200, by_seed.text
    assert by_seed.content == by_latent.content and by_seed.content.startswith(b"\x89PNG")
    up = client.post(
        "/v1/animate",
        files={"avatar": ("a.png", base64.b64decode(gen["png"]))},
        data={"seconds": "0.5", "fps": "8", "format": "webp", "script": "blink,talk"},
    )
    assert up.status_code == 200 and up.headers["content-type"] == "image/webp"


def test_animate_validation(client):
    _field_named(client.post("/v1/animate", data={"seed": "1", "script": "dance"}), "script")
    _field_named(client.post("/v1/animate", data={"seed": "1", "seconds": "60", "fps": "30"}), "seconds")
    _field_named(client.post("/v1/animate", data={}), "avatar")


def test_animate_without_animator_is_503(serve_state_noanim):
    from fastapi.testclient import TestClient

    from avatarforge.serve.app import create_app

    with TestClient(create_app(serve_state_noanim)) as c:
        r = c.post("/v1/animate", data={"seed": "1"})
        assert c.get("/v1/info").json()["animator"] is False
    assert r.status_code == 503 and "--animator" in r.json()["detail"]


# ----------------------------------------------------------------------------- auth on every route
def test_every_v1_route_needs_the_key(keyed_client, keyed_app):
    paths = keyed_app.openapi()["paths"]
    routes = [p for p, ops in paths.items() if p.startswith("/v1/") and "post" in ops]
    assert {"/v1/generate", "/v1/postprocess", "/v1/animate"} <= set(routes)
    for path in routes:
        assert keyed_client.post(path, json={}).status_code == 401, path
    ok = keyed_client.post("/v1/generate", json={"seeds": [1]}, headers={"X-API-Key": API_KEY})
    assert ok.status_code == 200


def test_key_compare_is_constant_time(monkeypatch, keyed_client):
    import hmac

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    keyed_client.get("/v1/info", headers={"X-API-Key": "nope"})
    assert calls and calls[-1] == (b"nope", API_KEY.encode())


# ----------------------------------------------------------------------------- concurrency
def test_concurrent_requests_give_sequential_bytes(client, avatar_png):
    jobs = [("gen", s) for s in (1, 2, 3, 4)] + [("post", 0), ("var", 5), ("post", 1), ("gen", 6)]

    def call(job):
        kind, s = job
        if kind == "gen":
            return client.post("/v1/generate", json={"seeds": [s, s + 100]}).json()["images"][1]["png"]
        if kind == "var":
            return client.post("/v1/variations", json={"seed": s, "n": 2}).json()["images"][1]["png"]
        return client.post(
            "/v1/postprocess", files={"image": ("a.png", avatar_png)}, data={"ops": "denoise=0.3,sharpen=0.5"}
        ).content

    sequential = [call(j) for j in jobs]
    results: dict[int, object] = {}

    def worker(i):
        results[i] = call(jobs[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(jobs))] == sequential


def test_non_ascii_key_is_401_not_500(keyed_client):
    # Headers arrive as latin-1 text; hmac.compare_digest on non-ASCII *str* raises TypeError,
    # so the check compares UTF-8 bytes.
    r = keyed_client.get("/v1/info", headers={"X-API-Key": "kl\u00e9".encode("utf-8")})
    assert r.status_code == 401


def test_chunked_body_over_the_limit_is_413(client, serve_state):
    limit = 2 * serve_state.settings.max_upload_bytes + 1024 * 1024

    def body():  # no Content-Length: the server counts while streaming
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        for _ in range(limit // 65536 + 2):
            yield b"\0" * 65536

    r = client.post(
        "/v1/postprocess", content=body(), headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert r.status_code == 413 and "larger than" in r.text


def test_declared_content_length_over_the_limit_is_413_before_reading(client, serve_state):
    limit = 2 * serve_state.settings.max_upload_bytes + 1024 * 1024
    r = client.post(
        "/v1/generate",
        content=b"{}",
        headers={"Content-Type": "application/json", "Content-Length": str(limit + 1)},
    )
    assert r.status_code == 413 and r.json()["detail"][0]["loc"] == ["body"]


def test_openapi_lists_this_models_attributes(app):
    schema = app.openapi()
    attrs = schema["components"]["schemas"]["Attributes"]
    assert attrs["additionalProperties"] is False
    hair = attrs["properties"]["hair_color"]
    values = next(s for s in hair["anyOf"] if "enum" in s)["enum"]
    assert values == [*HAIR, "unknown"]
    body = schema["paths"]["/v1/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/GenerateRequest")


def test_unknown_attribute_class_round_trips_through_a_token(client):
    r = client.post("/v1/generate", json={"seeds": [3], "attrs": {"hair_color": "unknown"}})
    assert r.status_code == 200, r.text
    im = r.json()["images"][0]
    assert im["attrs"]["hair_color"] == "unknown"
    v = client.post("/v1/variations", json={"latent": im["latent"], "n": 1, "strength": 0.0})
    assert v.status_code == 200, v.text
    assert v.json()["images"][0]["png"] == im["png"]


# ----------------------------------------------------------------------------- hostile latent tokens
def _token(doc: dict) -> str:
    import json
    import zlib

    raw = zlib.compress(json.dumps(doc).encode())
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_tampered_tokens_are_422_naming_latent(client, serve_state):
    import json
    import zlib

    good = client.post("/v1/generate", json={"seeds": [1]}).json()["images"][0]["latent"]
    doc = json.loads(zlib.decompress(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4))))
    other_model = {**doc, "model": "0" * 16}
    bad_shape = json.loads(json.dumps(doc))
    bad_shape["latent"]["z"]["shape"] = [1, 3]
    bad_dtype = json.loads(json.dumps(doc))
    bad_dtype["latent"]["z"]["dtype"] = "object"
    bad_label = json.loads(json.dumps(doc))
    bad_label["latent"]["labels"]["data"] = base64.b64encode(np.array([[99, 0]], np.int64).tobytes()).decode()
    nan_z = json.loads(json.dumps(doc))
    z = np.full(serve_state.pipe.z_dim, np.nan, np.float32)
    nan_z["latent"]["z"]["data"] = base64.b64encode(z.tobytes()).decode()
    bomb = base64.urlsafe_b64encode(zlib.compress(b"[" * 5_000_000)).decode().rstrip("=")
    cases = {  # expected words in the message -> token
        "another model": _token(other_model),
        "does not match its shape": _token(bad_shape),
        "dtype": _token(bad_dtype),
        "class index": _token(bad_label),
        "NaN": _token(nan_z),
        "decompressed": bomb,
        "not a latent token": "not-a-token",
    }
    for expect, tok in cases.items():
        r = client.post("/v1/variations", json={"latent": tok, "n": 1})
        assert r.status_code == 422, (expect, r.text)
        _field_named(r, "latent")
        assert expect in r.json()["message"], (expect, r.json()["message"])


def test_generate_at_the_refiners_sizes(tmp_path):
    """/v1/generate size=: the sizes /v1/info lists; a size without a refiner names the fix."""
    import base64 as b64
    import io

    import torch
    from fastapi.testclient import TestClient
    from PIL import Image

    from avatarforge.models.refiner import Refiner
    from avatarforge.serve.app import create_app
    from tests.serve.fixtures_studio import SIZE, make_state, tiny_pipe

    plain = TestClient(create_app(make_state(tiny_pipe(), None)))
    r = plain.post("/v1/generate", json={"seeds": [1], "size": 4 * SIZE})
    assert r.status_code == 422 and "refiner" in r.text and "size" in r.text
    pipe = tiny_pipe()
    torch.manual_seed(0)
    pipe.attach_refiner(Refiner(scale=4, channels=4, width=8, blocks=1, part_classes=0).eval())
    client = TestClient(create_app(make_state(pipe, None)))
    assert client.get("/v1/info").json()["model"]["sizes"] == [SIZE, 2 * SIZE, 4 * SIZE]
    r = client.post("/v1/generate", json={"seeds": [1, 2], "size": 4 * SIZE})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["width"] == body["height"] == 4 * SIZE
    img = Image.open(io.BytesIO(b64.b64decode(body["images"][0]["png"])))
    assert img.size == (4 * SIZE, 4 * SIZE) and img.mode == "RGBA"
    r = client.post("/v1/generate", json={"n": 9, "size": 4 * SIZE})
    assert r.status_code == 422 and "at most 8" in r.text
