"""Property-based fuzzing of the OpenAPI schema with schemathesis: no input gives a 5xx.

schemathesis generates requests from ``/openapi.json`` -- valid ones and, in its negative
mode, ones that break the schema (wrong types, missing fields, odd strings, random bytes as
uploads) -- and sends them to the ASGI app in process. The check is ``not_a_server_error``:
every answer must be 2xx-4xx (503 from ``/v1/animate`` without an animator would also be a
5xx, so the fuzzed app has an animator).

The fuzzed server runs with small limits (4 images, 16 frames, 2 style steps) so that
every generated request stays cheap and the default run takes ~30 s on a busy 2-core box;
over-limit values are then refused with 422, which the fuzzer exercises as well. The bigger
run (more examples per endpoint) is marked slow.
"""

from __future__ import annotations

import collections
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

FAST_EXAMPLES = 25
SLOW_EXAMPLES = 150


@pytest.fixture(scope="module")
def fuzz_app(serve_state):
    from avatarforge.serve.app import create_app

    # same models and lock as the session's state; small limits keep every example cheap
    state = serve_state.with_settings(
        max_n=4, max_frames=16, max_steps=2, max_image_side=256, max_upload_bytes=64 * 1024
    )
    return create_app(state)


ENDPOINTS = [
    ("GET", "/healthz"),
    ("GET", "/v1/info"),
    ("POST", "/v1/generate"),
    ("POST", "/v1/variations"),
    ("POST", "/v1/edit"),
    ("POST", "/v1/interpolate"),
    ("POST", "/v1/postprocess"),
    ("POST", "/v1/style"),
    ("POST", "/v1/animate"),
]


@pytest.fixture(scope="module")
def api_schema(fuzz_app):
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


def _fuzz(api_schema, method: str, path: str, mode: str, examples: int) -> collections.Counter:
    # schemathesis' own pytest integration (schema.parametrize / from_fixture) reads a private
    # pytest attribute that pytest 9 removed; its Hypothesis strategies work the same, so
    # each (endpoint, mode) runs as a plain @given test.
    op = api_schema[path][method]
    strategy = op.as_strategy(generation_mode=GenerationMode(mode))

    statuses: collections.Counter = collections.Counter()

    @given(case=strategy)
    @settings(max_examples=examples, **_SETTINGS)
    def run(case):
        response = case.call()
        statuses[response.status_code] += 1
        if response.status_code == 422 and os.environ.get("FUZZ_DEBUG"):
            # FUZZ_DEBUG=1 pytest -s: see which rule refused each generated request
            print(response.json().get("message"))
        case.validate_response(response, checks=[not_a_server_error])

    run()
    return statuses


_SETTINGS = dict(
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same examples every run: a failure reproduces
    database=None,
)


# GET routes take no parameters, so there is nothing to break: negative mode only for POSTs.
CASES = [
    (m, p, mode)
    for m, p in ENDPOINTS
    for mode in ("positive", "negative")
    if m == "POST" or mode == "positive"
]


@pytest.mark.parametrize("method, path, mode", CASES)
def test_no_server_errors(api_schema, method, path, mode):
    statuses = _fuzz(api_schema, method, path, mode, FAST_EXAMPLES)
    print(method, path, mode, dict(statuses))
    assert sum(statuses.values()) >= 1
    assert all(200 <= code < 500 for code in statuses)


@pytest.mark.slow
@pytest.mark.parametrize("method, path, mode", CASES)
def test_no_server_errors_long(api_schema, method, path, mode):
    _fuzz(api_schema, method, path, mode, SLOW_EXAMPLES)


def test_schema_lists_every_endpoint(fuzz_app):
    paths = fuzz_app.openapi()["paths"]
    assert {p for _, p in ENDPOINTS} <= set(paths)


# ----------------------------------------------------------------------------- valid-input fuzzing
# Schema-driven positive cases mostly hit the cross-field rules (exactly one of seed/latent,
# known attribute names, parseable chains), so they rarely reach the models. These draw
# requests that are valid for *this* model and must all succeed.
def _chain_item(draw, spec) -> str:
    args = []
    for p in spec.params:
        if p.kind == "path" or draw(st.booleans()):
            continue  # path parameters are refused over HTTP; others keep their default half the time
        if p.kind == "float":
            v = draw(st.floats(min_value=p.lo, max_value=p.hi, allow_nan=False))
            args.append(f"{p.name}={v!r}")
        elif p.kind == "int":
            v = draw(st.sampled_from(p.choices) if p.choices else st.integers(int(p.lo), int(p.hi)))
            args.append(f"{p.name}={v}")
        elif p.kind == "bool":
            args.append(f"{p.name}={draw(st.sampled_from(['true', 'false']))}")
        elif p.kind == "choice":
            choices = p.choices
            if spec.name == "remove_background" and p.name == "method":
                # Key removal without key_color on an avatar whose border is not one colour is a
                # user error the server rightly answers with 422 naming the fix, not a valid chain.
                choices = tuple(c for c in choices if c != "key")
            args.append(f"{p.name}={draw(st.sampled_from(choices))}")
        elif p.kind == "color":
            # r,g,b is quoted: commas separate the chain's ops
            colour = draw(st.sampled_from(["white", "#00ff00", "'10,20,30'"]))
            args.append(f"{p.name}={colour}")
    return f"{spec.name}({', '.join(args)})" if args else spec.name


@st.composite
def chains(draw) -> str:
    from avatarforge.postprocess import get_op, list_ops

    names = draw(st.lists(st.sampled_from(list_ops()), min_size=1, max_size=3))
    if sum(n == "upscale" for n in names) > 1:  # x4 twice = x16: over any sensible output size
        names = [n for n in names if n != "upscale"] + ["upscale"]
    return ",".join(_chain_item(draw, get_op(n)) for n in names)


def test_valid_chains_always_succeed(fuzz_app, avatar_png):
    from fastapi.testclient import TestClient

    from .conftest import decode_png

    src = decode_png(avatar_png)
    with TestClient(fuzz_app) as client:

        @given(ops=chains())
        @settings(max_examples=40, **_SETTINGS)
        def run(ops):
            r = client.post("/v1/postprocess", files={"image": ("a.png", avatar_png)}, data={"ops": ops})
            assert r.status_code == 200, (ops, r.text)
            out = decode_png(r.content)
            assert out.ndim == 3 and out.shape[2] in (3, 4)
            if (
                out.shape[:2] == src.shape[:2]
                and out.shape[2] == 4
                and not any(a in ops for a in ("remove_background", "composite", "upscale", "clean_alpha"))
            ):
                assert (out[..., 3] == src[..., 3]).all(), ops  # alpha untouched

        run()


@st.composite
def generate_requests(draw, attributes: dict[str, list[str]]) -> dict:
    req: dict = {"seeds": draw(st.lists(st.integers(0, 2**63 - 1), min_size=1, max_size=4))}
    if draw(st.booleans()):
        keys = draw(st.lists(st.sampled_from(sorted(attributes)), unique=True))
        req["attrs"] = {k: draw(st.sampled_from(attributes[k])) for k in keys}
    if draw(st.booleans()):
        req["truncation"] = draw(st.floats(0.0, 2.0, allow_nan=False))
    req["noise_mode"] = draw(st.sampled_from(["const", "random", "none"]))
    req["rgba"] = draw(st.sampled_from([None, True, False]))
    return req


def test_valid_generate_requests_always_succeed(fuzz_app):
    from fastapi.testclient import TestClient

    with TestClient(fuzz_app) as client:
        attributes = client.get("/v1/info").json()["attributes"]

        @given(req=generate_requests(attributes))
        @settings(max_examples=30, **_SETTINGS)
        def run(req):
            r = client.post("/v1/generate", json=req)
            assert r.status_code == 200, (req, r.text)
            body = r.json()
            assert len(body["images"]) == len(req["seeds"])
            assert body["channels"] == (3 if req["rgba"] is False else 4)
            for im in body["images"]:
                assert all(im["attrs"][k] == v for k, v in req.get("attrs", {}).items())
            # every returned token is accepted back
            v = client.post("/v1/variations", json={"latent": body["images"][0]["latent"], "n": 1})
            assert v.status_code == 200, v.text

        run()


@st.composite
def media_requests(draw, sliders: list[str]) -> tuple[str, dict, bool]:
    """A valid edit (JSON), interpolate (JSON) or animate (form) request: (path, body, is_form)."""
    from avatarforge.animate.drivers import SCRIPT_ACTIONS

    seed = draw(st.integers(0, 2**63 - 1))
    kind = draw(st.sampled_from(["edit", "interpolate", "animate"]))
    if kind == "edit":
        # amounts always given: the default 7-step slide is over this app's max_n (4)
        amounts = draw(st.lists(st.floats(-3, 3, allow_nan=False), min_size=1, max_size=4))
        body = {"seed": seed, "direction": draw(st.sampled_from(sliders)), "amounts": amounts}
        return "/v1/edit", body, False
    fmt = draw(st.sampled_from(["gif", "webp", "apng"]))
    if kind == "interpolate":
        seeds = draw(st.lists(st.integers(0, 2**63 - 1), min_size=2, max_size=3))
        body = {
            "seeds": seeds,
            "frames": draw(st.integers(2, 16)),
            "loop": draw(st.booleans()),
            "format": fmt,
        }
        body["fps"] = draw(st.floats(1, 60, allow_nan=False))
        return "/v1/interpolate", body, False
    actions = draw(st.lists(st.sampled_from(sorted(SCRIPT_ACTIONS)), min_size=1, max_size=3))
    fps = draw(st.integers(1, 30))
    form = {"seed": str(seed), "script": ",".join(actions), "fps": str(fps), "format": fmt}
    form["seconds"] = str(draw(st.integers(1, 16)) / fps)  # at most 16 frames (max_frames)
    return "/v1/animate", form, True


def test_valid_edit_interpolate_animate_requests_always_succeed(fuzz_app):
    from fastapi.testclient import TestClient

    magic = {"image/gif": b"GIF8", "image/webp": b"RIFF", "image/apng": b"\x89PNG"}
    with TestClient(fuzz_app) as client:
        sliders = [s["id"] for s in client.get("/v1/info").json()["sliders"]]

        @given(spec=media_requests(sliders))
        @settings(max_examples=30, **_SETTINGS)
        def run(spec):
            path, body, is_form = spec
            r = client.post(path, data=body) if is_form else client.post(path, json=body)
            assert r.status_code == 200, (path, body, r.text)
            if path == "/v1/edit":
                assert [im["amount"] for im in r.json()["images"]] == body["amounts"]
            else:
                assert r.content.startswith(magic[r.headers["content-type"]])

        run()
