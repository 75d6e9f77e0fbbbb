"""The 3D view mounted on the real app: built-in avatars, generator seeds through the refiner's
part map, and the API key (page and model keyed; scripts open, like the overlay's)."""

from __future__ import annotations

import torch
from fastapi.testclient import TestClient

from avatarforge.serve.app import create_app
from tests.serve.fixtures_studio import make_state, tiny_pipe


def test_model_of_a_builtin_avatar_and_the_key():
    client = TestClient(create_app(make_state(tiny_pipe(), None, api_key="s3cret")))
    assert client.get("/view3d/model.vrm?avatar=procedural:3").status_code == 401
    r = client.get("/view3d/model.vrm?avatar=procedural:3&key=s3cret")
    assert r.status_code == 200 and r.content[:4] == b"glTF"
    assert client.get("/view3d?avatar=procedural:3").status_code == 401
    assert client.get("/view3d?avatar=procedural:3&key=s3cret").status_code in (
        200,
        503,
    )  # 503: no node_modules
    assert client.get("/view3d/static/view3d.js").status_code == 200  # no data in it: no key


def test_generator_seeds_need_a_refiner_with_a_part_head():
    plain = TestClient(create_app(make_state(tiny_pipe(), None)))
    r = plain.get("/view3d/model.vrm?avatar=5")
    assert r.status_code == 422 and "--refiner" in r.text
    from avatarforge.models.refiner import Refiner

    pipe = tiny_pipe()
    torch.manual_seed(0)
    pipe.attach_refiner(Refiner(scale=4, channels=4, width=8, blocks=1).eval())
    client = TestClient(create_app(make_state(pipe, None)))
    r = client.get("/view3d/model.vrm?avatar=5")  # seeded: this untrained part head finds eye lines
    assert r.status_code == 200 and r.content[:4] == b"glTF"
