"""The overlay's routes on a FastAPI app: the two pages, the control POST and the two sockets.

The pages' HTML, JavaScript and CSS are static files (``avatarforge/serve/static/overlay``,
:mod:`.pages`); the routes check the key and the query and fill in the page's config.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi import Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from avatarforge.serve.overlay.hub import OVERLAY_MODES, RIG_SIZE, OverlayHub, OverlayOptions, overlay_options
from avatarforge.serve.overlay.pages import (
    FACE_MESH_FILES,
    control_page_html,
    face_mesh_dir,
    mount_static,
    overlay_page_html,
    tracker_page_html,
)
from avatarforge.serve.overlay.protocol import (
    BAD_REQUEST_CLOSE_CODE,
    CONTROL_PAGE_PATH,
    CONTROL_SOCKET_PATH,
    EXPRESSIONS_PATH,
    FACE_MESH_PATH,
    FRAME_SOCKET_PATH,
    KEY_BINDINGS,
    NO_ANIMATOR_CLOSE_CODE,
    NO_ANIMATOR_MESSAGE,
    PAGE_PATH,
    RIG_PATH,
    TOO_MANY_LOOPS_CLOSE_CODE,
    TRACKER_PATH,
    UNAUTHORIZED_CLOSE_CODE,
    OverlayBusy,
    OverlayControls,
    OverlayError,
    apply_control,
    parse_avatar,
)

__all__ = ["mount_overlay"]

# uvicorn prints its WebSocket lines ("[accepted]", "403") here; explicit rejections go
# next to them so the log tells what happened (query keys are redacted on this logger).
_ws_log = logging.getLogger("uvicorn.error")


def _check_key(state: Any, provided: str | None) -> bool:
    # The API's check: constant-time on UTF-8 bytes (a non-ASCII key is refused, not a crash).
    from avatarforge.serve.auth import check_api_key

    return check_api_key(getattr(getattr(state, "settings", None), "api_key", None), provided)


def _header_key(headers: Mapping[str, str]) -> str | None:
    """The key of an ``X-API-Key`` or ``Authorization: Bearer`` header (scripts, not browsers)."""
    from avatarforge.serve.auth import presented_key

    return presented_key(headers)


def _client_params(hub: OverlayHub, q: Mapping[str, str]) -> tuple[str, int | None, float, bool]:
    """Validated ``(avatar, size, fps, idle)`` of a request's query; OverlayError names the field."""
    avatar = parse_avatar(q.get("avatar"))
    size: int | None = None
    if q.get("size"):
        try:
            size = int(q["size"])
        except ValueError:
            raise OverlayError(f"size must be an integer number of pixels, got {q['size']!r}") from None
        if not 16 <= size <= hub.options.max_size:
            raise OverlayError(f"size must be from 16 to {hub.options.max_size} pixels, got {size}")
    fps = hub.options.fps
    if q.get("fps"):
        try:
            fps = float(q["fps"])
        except ValueError:
            raise OverlayError(f"fps must be a number, got {q['fps']!r}") from None
        max_fps = min(
            hub.options.max_fps, float(getattr(getattr(hub.state, "settings", None), "max_fps", 1e9))
        )
        if not (math.isfinite(fps) and 1 <= fps <= max_fps):
            raise OverlayError(f"fps must be from 1 to {max_fps:g}, got {q['fps']}")
    idle_text = q.get("idle", "1" if hub.options.idle else "0").strip().lower()
    if idle_text not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
        raise OverlayError(f"idle must be 1 or 0, got {q.get('idle')!r}")
    return avatar, size, fps, idle_text in ("1", "true", "yes", "on")


def _forward_query(q: Mapping[str, str]) -> dict[str, str]:
    return {k: q[k] for k in ("avatar", "size", "fps", "idle", "key", "mode") if k in q}


def _mode(hub: OverlayHub, q: Mapping[str, str]) -> str:
    """``?mode=``: ``rig`` or ``frames``; by default the rig, unless only the animator can
    animate this avatar (no layer source for generator seeds)."""
    mode = (q.get("mode") or "").strip().lower()
    if mode:
        if mode not in OVERLAY_MODES:
            raise OverlayError(f"mode must be one of {', '.join(OVERLAY_MODES)}, got {q.get('mode')!r}")
        return mode
    avatar = parse_avatar(q.get("avatar"))
    rig_ok = avatar.startswith("procedural:") or getattr(hub.state, "avatar_layers", None) is not None
    return "rig" if rig_ok else "frames"


def mount_overlay(app: Any, state: Any, options: OverlayOptions | None = None) -> OverlayHub:
    """Add the overlay routes to ``app`` (FastAPI) and return the :class:`OverlayHub`.

    The hub is also stored as ``app.state.overlay_hub`` (the studio sends picked avatars
    to it). The app's lifespan is wrapped so that shutting the server down stops the loops
    and the VMC listener (``hub.close()``).
    """
    hub = OverlayHub(state, overlay_options(state, options))
    app.state.overlay_hub = hub
    from avatarforge.serve.persist import attach_overlay

    # The studio avatar survives restarts with or without the studio (idempotent).
    attach_overlay(hub, state)

    # Stop the loops and free the VMC port when the server shuts down: wrap the app's
    # lifespan (whatever it is) rather than require the caller to remember hub.close().
    previous = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> Any:
        async with previous(a) as maybe_state:
            try:
                yield maybe_state
            finally:
                await run_in_threadpool(hub.close)

    app.router.lifespan_context = lifespan
    mount_static(app)  # the pages' scripts and stylesheets

    def _root(request: Any) -> str:
        return str(request.scope.get("root_path", "") or "").rstrip("/")

    @app.get(PAGE_PATH, response_class=HTMLResponse, include_in_schema=False)
    def overlay_page(request: Request) -> HTMLResponse:
        q = dict(request.query_params)
        error = None
        status = 200
        mode = "frames"
        if not _check_key(state, q.get("key")):
            error, status = "wrong or missing API key: add ?key=YOUR_KEY to the URL", 401
        else:
            try:
                _client_params(hub, q)
                mode = _mode(hub, q)
            except OverlayError as e:
                error, status = str(e), 400
            else:
                if mode == "frames" and not hub.has_animator:
                    error, status = NO_ANIMATOR_MESSAGE, 503
        forward = {**_forward_query(q), "mode": mode}
        return HTMLResponse(overlay_page_html(forward, _root(request), error, mode), status_code=status)

    @app.get(RIG_PATH, include_in_schema=False)
    async def overlay_rig(request: Request) -> JSONResponse:
        """The avatar's rig (layers as PNG data URLs, geometry): the page draws frames from it."""
        from avatarforge.animate.rig import RigError

        q = dict(request.query_params)
        if not _check_key(state, q.get("key") or _header_key(request.headers)):
            return JSONResponse(
                {"detail": "wrong or missing API key (X-API-Key header or ?key=)"}, status_code=401
            )
        try:
            avatar, size, _, _ = _client_params(hub, q)
            if size is None:  # the largest the server makes, up to the recommended OBS size
                sizes = getattr(getattr(state, "pipe", None), "sizes", None) or [RIG_SIZE]
                size = RIG_SIZE if avatar.startswith("procedural:") else min(RIG_SIZE, max(sizes))
            rig = await run_in_threadpool(hub.avatar_rig, avatar, size)
        except (OverlayError, RigError) as e:
            return JSONResponse({"detail": str(e)}, status_code=422)
        return JSONResponse(rig)

    @app.get(CONTROL_PAGE_PATH, response_class=HTMLResponse, include_in_schema=False)
    def control_page(request: Request) -> HTMLResponse:
        q = dict(request.query_params)
        if not _check_key(state, q.get("key")):
            return HTMLResponse("wrong or missing API key: add ?key=YOUR_KEY to the URL", status_code=401)
        try:
            avatar = parse_avatar(q.get("avatar"))
        except OverlayError as e:
            return HTMLResponse(str(e), status_code=400)
        if not hub.has_animator:
            return HTMLResponse(NO_ANIMATOR_MESSAGE, status_code=503)
        return HTMLResponse(control_page_html(_forward_query(q), avatar, _root(request)))

    @app.get(TRACKER_PATH, response_class=HTMLResponse, include_in_schema=False)
    def tracker_page(request: Request) -> HTMLResponse:
        """Webcam face tracking in the page (MediaPipe face_mesh from this server's files)."""
        q = dict(request.query_params)
        if not _check_key(state, q.get("key")):
            return HTMLResponse("wrong or missing API key: add ?key=YOUR_KEY to the URL", status_code=401)
        try:
            parse_avatar(q.get("avatar"))
        except OverlayError as e:
            return HTMLResponse(str(e), status_code=400)
        forward = {k: q[k] for k in ("avatar", "key", "mincutoff", "beta", "debug") if k in q}
        html = tracker_page_html(forward, _root(request), installed=face_mesh_dir() is not None)
        return HTMLResponse(html)

    _types = {".js": "text/javascript", ".wasm": "application/wasm"}

    @app.get(FACE_MESH_PATH + "/{name}", include_in_schema=False)
    def face_mesh_file(name: str) -> FileResponse:
        # Open like the pages' scripts: the same public files for every server, no data.
        folder = face_mesh_dir()
        if folder is None or name not in FACE_MESH_FILES or not (folder / name).is_file():
            return JSONResponse(
                {"detail": f"no face tracking file {name!r} (installed: {folder is not None})"}, 404
            )
        media = _types.get("." + name.rsplit(".", 1)[-1], "application/octet-stream")
        # A week: the files are pinned by version; ?v= is not needed.
        return FileResponse(folder / name, media_type=media, headers={"Cache-Control": "max-age=604800"})

    @app.get(EXPRESSIONS_PATH, include_in_schema=False)
    def expressions(request: Request) -> JSONResponse:
        """The expression presets, one-shot animations and the keys bound to them."""
        from avatarforge.animate.expressions import ANIMATIONS, EXPRESSIONS

        q = dict(request.query_params)
        if not _check_key(state, q.get("key") or _header_key(request.headers)):
            return JSONResponse({"detail": "wrong or missing API key (X-API-Key header or ?key=)"}, 401)
        keys = {b[1]: k for k, b in KEY_BINDINGS.items() if b[0] in ("expression", "animation")}
        return JSONResponse(
            {
                "expressions": {n: {"controls": c, "key": keys.get(n)} for n, c in EXPRESSIONS.items()},
                "animations": {n: {"seconds": d, "key": keys.get(n)} for n, (d, _) in ANIMATIONS.items()},
                "fades": {
                    "expression_fade_in": hub.options.expression_fade_in,
                    "expression_fade_out": hub.options.expression_fade_out,
                    "tracking_fade_in": hub.options.tracking_fade_in,
                    "tracking_fade_out": hub.options.tracking_fade_out,
                },
            }
        )

    @app.post(CONTROL_PAGE_PATH, include_in_schema=False)
    async def control_post(request: Request) -> JSONResponse:
        q = dict(request.query_params)
        if not _check_key(state, q.get("key") or _header_key(request.headers)):
            return JSONResponse(
                {"detail": "wrong or missing API key (X-API-Key header or ?key=)"}, status_code=401
            )
        try:
            avatar = parse_avatar(q.get("avatar"))
            body = await request.body()
            manual = apply_control(hub.controls(avatar), body.decode("utf-8", "replace"))
        except OverlayError as e:
            return JSONResponse({"detail": str(e)}, status_code=422)
        return JSONResponse({"avatar": avatar, "manual": manual})

    def _short(reason: str) -> str:
        # Close reasons are limited to 123 bytes by the protocol.
        return reason.encode()[:123].decode("utf-8", "ignore")

    async def _refuse(ws: WebSocket, reason: str) -> None:
        """No (or a wrong) key: close before accepting, so no socket ever opens (HTTP 403)."""
        await ws.close(code=UNAUTHORIZED_CLOSE_CODE, reason=_short(reason))

    async def _reject(ws: WebSocket, code: int, reason: str) -> None:
        """An authorised client's bad request: accept, then close with ``code`` and the reason,
        which the page shows (it stops reconnecting on 4400-4599); logged as rejected."""
        await ws.accept()
        await _close_rejected(ws, code, reason)

    async def _close_rejected(ws: WebSocket, code: int, reason: str) -> None:
        await ws.close(code=code, reason=_short(reason))
        client = ws.client
        where = f"{client.host}:{client.port}" if client else "-"
        query = ws.scope.get("query_string", b"").decode("latin-1")
        path = ws.scope.get("path", "") + (f"?{query}" if query else "")
        _ws_log.info('%s - "WebSocket %s" rejected: %d %s', where, path, code, reason)

    async def _control_messages(ws: WebSocket, controls: OverlayControls, reply: bool) -> None:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(msg.get("code", 1000))
            text = msg.get("text")
            if text is None and msg.get("bytes") is not None:
                text = msg["bytes"].decode("utf-8", "replace")
            if text is None:
                continue
            try:
                manual = apply_control(controls, text)
                # A tracker's frames (30 a second) are not answered; everything else is.
                if reply and not text.lstrip().startswith('{"track"'):
                    await ws.send_text(json.dumps({"manual": manual}))
            except OverlayError as e:
                await ws.send_text(json.dumps({"error": str(e)}))

    @app.websocket(CONTROL_SOCKET_PATH)
    async def control_socket(ws: WebSocket) -> None:
        q = dict(ws.query_params)
        if not _check_key(state, q.get("key") or _header_key(ws.headers)):
            return await _refuse(ws, "wrong or missing API key: add ?key=YOUR_KEY")
        try:
            avatar = parse_avatar(q.get("avatar"))
        except OverlayError as e:
            return await _reject(ws, BAD_REQUEST_CLOSE_CODE, str(e))
        await ws.accept()
        with contextlib.suppress(WebSocketDisconnect):
            await _control_messages(ws, hub.controls(avatar), reply=True)

    @app.websocket(FRAME_SOCKET_PATH)
    async def frame_socket(ws: WebSocket) -> None:
        q = dict(ws.query_params)
        if not _check_key(state, q.get("key") or _header_key(ws.headers)):
            return await _refuse(ws, "wrong or missing API key: add ?key=YOUR_KEY")
        try:
            avatar, size, fps, idle = _client_params(hub, q)
            mode = (q.get("mode") or "frames").strip().lower()
            if mode not in OVERLAY_MODES:
                raise OverlayError(f"mode must be one of {', '.join(OVERLAY_MODES)}, got {q.get('mode')!r}")
        except OverlayError as e:
            if not hub.has_animator and q.get("mode") != "rig":
                return await _reject(ws, NO_ANIMATOR_CLOSE_CODE, NO_ANIMATOR_MESSAGE)
            return await _reject(ws, BAD_REQUEST_CLOSE_CODE, str(e))
        if mode == "frames" and not hub.has_animator:
            return await _reject(ws, NO_ANIMATOR_CLOSE_CODE, NO_ANIMATOR_MESSAGE)
        await ws.accept()
        try:
            # Starting a loop prepares the avatar (a model call): keep it off the event loop.
            session, sub = await run_in_threadpool(
                hub.subscribe, avatar, size, fps, idle, asyncio.get_running_loop(), mode
            )
        except OverlayBusy as e:
            return await _close_rejected(ws, TOO_MANY_LOOPS_CLOSE_CODE, str(e))
        except Exception as e:
            await ws.close(
                code=1011, reason=f"cannot start the overlay: {e}".encode()[:123].decode("utf-8", "ignore")
            )
            return
        receiver = asyncio.create_task(_control_messages(ws, hub.controls(avatar), reply=False))
        try:
            while True:
                getter = asyncio.create_task(sub.queue.get())
                done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
                if receiver in done:
                    getter.cancel()
                    break  # the client left (or sent something that broke the socket)
                data = getter.result()
                if data is None:
                    await ws.close(code=1011, reason=(session.error or "the overlay stopped")[:120])
                    break
                if isinstance(data, str):
                    await ws.send_text(data)  # rig mode: the controls, as JSON
                else:
                    await ws.send_bytes(data)
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client went away mid-send
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await receiver
            if hub.unsubscribe(session, sub):
                await run_in_threadpool(session.join)

    return hub
