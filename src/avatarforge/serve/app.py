"""The FastAPI application: ``create_app(state)``.

Routes: ``GET /healthz`` (open, for load balancers), ``GET /v1/info`` and the model
endpoints under ``/v1/`` (API key enforced when configured; see docs/serving.md). At the
end the live overlay (:mod:`avatarforge.serve.overlay`) and the Gradio studio
(:mod:`avatarforge.serve.studio`, only when gradio is installed) are mounted when present.

With an API key, ``/docs``, ``/redoc`` and ``/openapi.json`` need it too (the schema lists
the model's attributes and the server's limits, which ``/v1/info`` also guards): send the
header, or -- from a browser, which cannot -- add ``?key=KEY`` to the URL; the docs page
then loads the schema with the same key. Query-string keys are redacted from the log
(:mod:`avatarforge.serve.logs`).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from avatarforge import __version__
from avatarforge.serve.auth import (
    STATE_SCOPE_KEY,
    check_api_key,
    presented_key,
    require_api_key,
    unauthorized,
)
from avatarforge.serve.errors import UploadError, error_body
from avatarforge.serve.logs import install_redaction
from avatarforge.serve.state import ServeState
from avatarforge.serve.uploads import BodyLimit

__all__ = ["create_app"]

log = logging.getLogger(__name__)


class _StateScope:
    """Pure ASGI middleware: puts the ServeState into every scope (HTTP and WebSocket).

    Mounted sub-applications (the Gradio studio, the overlay) see their own ``request.app``,
    but the scope is passed down, so :func:`require_api_key` finds the key everywhere.
    """

    def __init__(self, app: Any, state: ServeState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope[STATE_SCOPE_KEY] = self.state
        await self.app(scope, receive, send)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(status_code=422, content=error_body(list(exc.errors())))


async def _upload_error(request: Request, exc: UploadError) -> JSONResponse:
    return JSONResponse(status_code=exc.status, content=error_body(exc.errors))


def _mount_optional(
    app: FastAPI, state: ServeState, module: str, func: str, needs: str | None = None
) -> bool:
    """Call ``module.func(app, state)`` if the module exists (and ``needs`` is importable)."""
    if needs is not None and importlib.util.find_spec(needs) is None:
        return False
    try:
        # import_module: `module` is one of this file's own constants (the studio and overlay
        # parts, optional because they need extra packages), never a name from a request or config.
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:  # the part is not installed/written: serve without it
            return False
        raise
    getattr(mod, func)(app, state)
    return True


def _keyed_docs(app: FastAPI, state: ServeState) -> None:
    """``/openapi.json``, ``/docs`` and ``/redoc`` that need the API key (header or ``?key=``)."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

    def key_of(request: Request) -> str:
        key = presented_key(request.headers) or request.query_params.get("key")
        if key is None or not check_api_key(state.settings.api_key, key):
            raise unauthorized()
        return key

    def schema_url(request: Request) -> str:
        root = str(request.scope.get("root_path", "") or "").rstrip("/")
        # The page's own fetch of the schema cannot send headers: it carries the key.
        return f"{root}/openapi.json?key={quote(key_of(request), safe='')}"

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(request: Request) -> JSONResponse:
        key_of(request)
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=schema_url(request), title=f"{app.title} - docs")

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(openapi_url=schema_url(request), title=f"{app.title} - ReDoc")


def create_app(state: ServeState) -> FastAPI:
    """The HTTP API around ``state`` (models loaded once; see :class:`ServeState`).

    Every blocking model call runs in the thread pool under ``state.lock``. The returned app
    has ``app.state.serve = state``; the overlay and studio are mounted when available.
    """
    install_redaction()  # ?key= of overlay/docs URLs never reaches uvicorn's log
    keyed = state.settings.api_key is not None
    app = FastAPI(
        title="AvatarForge API",
        version=__version__,
        description="Generate, edit, post-process, style and animate VTuber avatars. See docs/serving.md.",
        # With a key the schema and docs pages are added below, behind the key.
        openapi_url=None if keyed else "/openapi.json",
        docs_url=None if keyed else "/docs",
        redoc_url=None if keyed else "/redoc",
    )
    app.state.serve = state
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(UploadError, _upload_error)
    # Bound the whole body (two uploads for /v1/style plus form fields) before it is spooled.
    app.add_middleware(BodyLimit, max_bytes=2 * state.settings.max_upload_bytes + 1024 * 1024)
    app.add_middleware(_StateScope, state=state)

    @app.get("/healthz", tags=["meta"], summary="liveness check (never needs the API key)")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get("/v1/info", tags=["meta"], dependencies=[Depends(require_api_key)], summary="the loaded model")
    def info() -> dict[str, Any]:
        return state.info()

    if keyed:
        _keyed_docs(app, state)

    from avatarforge.serve.routes import build_router

    app.include_router(build_router(state), prefix="/v1", dependencies=[Depends(require_api_key)])

    mounted = [
        name
        for name, module, func, needs in (
            ("overlay", "avatarforge.serve.overlay", "mount_overlay", None),
            ("studio", "avatarforge.serve.studio", "mount_studio", "gradio"),
        )
        if _mount_optional(app, state, module, func, needs)
    ]
    app.state.mounted = mounted
    return app
