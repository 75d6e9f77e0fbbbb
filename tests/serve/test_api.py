"""HTTP API: every endpoint through TestClient, validation, uploads, API key, concurrency."""

from __future__ import annotations

from .conftest import API_KEY, SIZE


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
