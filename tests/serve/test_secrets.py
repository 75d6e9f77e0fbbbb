"""The API key stays secret (issue #21): never in the log, rejected sockets logged as
rejected, and the schema/docs pages behind the key when one is set."""

from __future__ import annotations

import io
import logging
import time

import pytest

from .conftest import API_KEY


@pytest.fixture()
def access_log():
    """uvicorn's access logger with a handler formatting like uvicorn's own (restored after)."""
    from uvicorn.logging import AccessFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s'))
    logger = logging.getLogger("uvicorn.access")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger, stream
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_query_keys_are_redacted_from_the_access_log(keyed_app, access_log):
    logger, stream = access_log  # keyed_app: create_app installed the filter
    for path in (
        "/overlay?key=s3cret-value&avatar=3",
        "/docs?avatar=1&API_KEY=s3cret-value",
        "/x?token=s3cret-value",
    ):
        # exactly how uvicorn's h11/httptools protocols log a request
        logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", path, "1.1", 200)
    text = stream.getvalue()
    assert "s3cret-value" not in text
    assert '"GET /overlay?key=[redacted]&avatar=3 HTTP/1.1" 200' in text
    assert "API_KEY=[redacted]" in text and "token=[redacted]" in text


def test_websocket_lines_are_redacted(keyed_app, caplog):
    with caplog.at_level(logging.INFO, logger="uvicorn.error"):
        logging.getLogger("uvicorn.error").info(
            '%s - "WebSocket %s" 403', "127.0.0.1:5000", "/ws/overlay?avatar=1&key=s3cret-value"
        )
    assert "s3cret-value" not in caplog.text and "key=[redacted]" in caplog.text


def test_redact_keeps_other_parameters():
    from avatarforge.serve.logs import redact

    assert redact("/overlay?avatar=3&key=a%20b&fps=30") == "/overlay?avatar=3&key=[redacted]&fps=30"
    assert redact("/overlay?monkey=1&keys=2") == "/overlay?monkey=1&keys=2"  # not a secret name
    assert redact("/ws/overlay?key=abc") == "/ws/overlay?key=[redacted]"
    assert redact("/ws/overlay?Key=abc#x") == "/ws/overlay?Key=[redacted]#x"


def test_schema_and_docs_need_the_key_when_one_is_set(keyed_client, client):
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert keyed_client.get(path).status_code == 401, path
        assert keyed_client.get(f"{path}?key=wrong").status_code == 401, path
        assert client.get(path).status_code == 200, path  # no key configured: open as before
    r = keyed_client.get("/openapi.json", headers={"X-API-Key": API_KEY})
    assert r.status_code == 200 and "/v1/generate" in r.json()["paths"]
    assert keyed_client.get(f"/openapi.json?key={API_KEY}").status_code == 200
    # a browser cannot send the header: /docs?key= works and its page fetches the schema with it
    page = keyed_client.get(f"/docs?key={API_KEY}")
    assert page.status_code == 200 and f"/openapi.json?key={API_KEY}" in page.text
    page = keyed_client.get("/redoc", headers={"Authorization": f"Bearer {API_KEY}"})
    assert page.status_code == 200 and f"/openapi.json?key={API_KEY}" in page.text
    assert keyed_client.get("/healthz").status_code == 200  # still open


@pytest.mark.slow
def test_real_server_log_has_no_key_and_says_rejected(serve_run, animator_dir, tmp_path):
    """The real uvicorn log: query keys redacted, a keyless socket refused before the handshake."""
    import asyncio

    import httpx
    import websockets

    from .live_server import live_server

    secret = "s3cret-never-logged"
    flags = ("--animator", str(animator_dir), "--log-level", "info")
    with live_server(serve_run, *flags, log_dir=tmp_path, env={"AVATARFORGE_API_KEY": secret}) as srv:
        assert httpx.get(f"{srv.base}/overlay?key={secret}&avatar=1", timeout=30).status_code == 200
        assert httpx.get(f"{srv.base}/docs?key={secret}", timeout=30).status_code == 200
        assert httpx.get(f"{srv.base}/openapi.json", timeout=30).status_code == 401
        ws_url = srv.base.replace("http://", "ws://")

        async def sockets() -> tuple[int, int]:
            statuses = []
            for q in ("avatar=1&key=wrong-key", "avatar=1"):
                try:
                    async with websockets.connect(f"{ws_url}/ws/overlay?{q}", open_timeout=30):
                        statuses.append(101)
                except websockets.exceptions.InvalidStatus as e:
                    statuses.append(e.response.status_code)
            async with websockets.connect(f"{ws_url}/ws/overlay?avatar=1&size=99999&key={secret}") as ws:
                with pytest.raises(websockets.exceptions.ConnectionClosed) as e:
                    await ws.recv()
            assert e.value.rcvd is not None and e.value.rcvd.code == 4400
            return statuses[0], statuses[1]

        assert asyncio.run(sockets()) == (403, 403)  # never upgraded
        time.sleep(0.5)  # let the log flush
        log = srv.log()
    assert secret not in log and "wrong-key" not in log
    assert '"GET /overlay?key=[redacted]&avatar=1 HTTP/1.1" 200' in log
    assert '"WebSocket /ws/overlay?avatar=1&key=[redacted]" 403' in log
    assert '"WebSocket /ws/overlay?avatar=1" 403' in log
    assert '"WebSocket /ws/overlay?avatar=1&size=99999&key=[redacted]" rejected: 4400 size must be' in log
    # only the authorised socket with a bad parameter was accepted (to hand the page its reason)
    assert log.count("[accepted]") == 1
