"""Shared fixtures of the serving tests (the studio engineer's tests use them too).

* ``serve_run``: a run-like directory holding a tiny *untrained* RGBA conditional StyleGAN
  checkpoint (32 px, w_dim 32; labels ``hair_color`` x 3 and ``eye_color`` x 2 with names
  from ``training_state.json``) -- enough for the API mechanics, built in well under a
  second;
* ``animator_dir``: a tiny untrained expression animator (``save_pretrained`` directory);
* ``serve_state``: a :class:`ServeState` with both loaded (session scope: models load once,
  as in the server);
* ``serve_state_noanim``: the same generator without an animator;
* ``client``: a ``TestClient`` of ``create_app(serve_state)`` (no API key);
* ``keyed_client``: a client of an app with ``api_key=API_KEY`` (the constant below).

Everything runs on one CPU thread (the machine is shared).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import save_tiny_stylegan

SIZE = 32
API_KEY = "test-key-0123456789"
HAIR = ["black", "pink", "blonde"]
EYES = ["blue", "green"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def serve_run(tmp_path_factory) -> Path:
    run = save_tiny_stylegan(
        tmp_path_factory.mktemp("serve-run") / "ckpt",
        7,
        resolution=SIZE,
        channel_base=256,
        channel_max=32,
        dim=32,
        label_dims=[len(HAIR), len(EYES)],
    )
    schema = [{"name": "hair_color", "values": HAIR}, {"name": "eye_color", "values": EYES}]
    (run / "training_state.json").write_text(json.dumps({"label_schema": schema}))
    return run


@pytest.fixture(scope="session")
def animator_dir(tmp_path_factory) -> Path:
    from avatarforge.models.animator import ExpressionAnimator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(8)
        anim = ExpressionAnimator(resolution=SIZE, widths=(4, 8, 8, 16), ctrl_hidden=16, enc_blocks=1).eval()
    path = tmp_path_factory.mktemp("serve-anim") / "animator"
    anim.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def serve_state(serve_run, animator_dir):
    from avatarforge.serve.state import ServeSettings, ServeState

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return ServeState.load(
            serve_run, animator=animator_dir, settings=ServeSettings(max_upload_bytes=256 * 1024)
        )
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="session")
def serve_state_noanim(serve_state):
    from dataclasses import replace

    return replace(serve_state, animator=None)  # same models and lock


@pytest.fixture(scope="session")
def app(serve_state):
    from avatarforge.serve.app import create_app

    return create_app(serve_state)


@pytest.fixture()
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="session")
def keyed_app(serve_state):
    from avatarforge.serve.app import create_app

    return create_app(serve_state.with_settings(api_key=API_KEY))


@pytest.fixture()
def keyed_client(keyed_app):
    from fastapi.testclient import TestClient

    with TestClient(keyed_app) as c:
        yield c


def png_bytes(image: np.ndarray) -> bytes:
    """Encode a uint8 ``(H, W, 3|4)`` array as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture(scope="session")
def avatar_png() -> bytes:
    """A 48 px procedural RGBA avatar as PNG bytes (an upload with real alpha)."""
    from avatarforge.data.procedural import render, sample_attributes

    return png_bytes(render(sample_attributes(3), 48))
