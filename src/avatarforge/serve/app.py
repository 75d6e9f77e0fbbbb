"""The FastAPI application: ``create_app(state)``.

Routes: ``GET /healthz`` (open, for load balancers), ``GET /v1/info`` and the model
endpoints under ``/v1/`` (API key enforced when configured; see docs/serving.md). At the
end the live overlay (:mod:`avatarforge.serve.overlay`) and the Gradio studio
(:mod:`avatarforge.serve.studio`, only when gradio is installed) are mounted when present.

``/docs`` is Swagger UI served from local files (:func:`swagger_ui_dir`: the npm package
``swagger-ui-dist`` that ``make install`` puts in the checkout's ``node_modules``); without
them it is a page saying how to install them. ``/redoc`` leads to ``/docs``. No page of
the server loads anything from another host.

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
import os
from collections.abc import Mapping
from pathlib import Path
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

__all__ = ["SWAGGER_UI_ENV", "create_app", "swagger_ui_dir"]

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


#: A folder holding Swagger UI's files (``swagger-ui-bundle.js``, ``swagger-ui.css``) when they
#: are not in the checkout's ``node_modules`` (see :func:`swagger_ui_dir`).
SWAGGER_UI_ENV = "AVATARFORGE_SWAGGER_UI"
#: The files of the npm package ``swagger-ui-dist`` that ``/docs`` serves (nothing else is).
SWAGGER_UI_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "oauth2-redirect.html")
_SWAGGER_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".html": "text/html"}


def swagger_ui_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """Where Swagger UI's files are, or ``None`` when they are not installed.

    Looked for, in this order: ``$AVATARFORGE_SWAGGER_UI``; ``static/swagger-ui/`` in the
    package (for a build that ships them); ``node_modules/swagger-ui-dist`` of the checkout
    the package runs from (``make install`` puts it there with ``npm ci --ignore-scripts``,
    pinned by package.json and package-lock.json) and of the current directory. The server
    never loads them from the internet.
    """
    env = os.environ if environ is None else environ
    here = Path(__file__).resolve().parent
    candidates = [Path(env[SWAGGER_UI_ENV])] if env.get(SWAGGER_UI_ENV) else []
    candidates += [
        here / "static" / "swagger-ui",
        here.parents[2] / "node_modules" / "swagger-ui-dist",  # src/avatarforge/serve -> the checkout
        Path.cwd() / "node_modules" / "swagger-ui-dist",
    ]
    for d in candidates:
        if all((d / f).is_file() for f in SWAGGER_UI_FILES[:2]):
            return d
    return None


_NO_SWAGGER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:46em;margin:2em auto;line-height:1.5}}
code{{background:#eee;padding:0 .2em}}</style></head>
<body><h1>API docs: Swagger UI is not installed</h1>
<p>This page shows the interactive API docs with Swagger UI, served by this server from local
files (never from the internet). They are not installed here. In the AvatarForge checkout run</p>
<pre>make install          # or: npm ci --ignore-scripts   (needs Node.js's npm)</pre>
<p>and restart the server; or set <code>{env}</code> to a folder holding
<code>swagger-ui-bundle.js</code> and <code>swagger-ui.css</code> (the npm package
<code>swagger-ui-dist</code>).</p>
<p>The API schema itself is here: <a href="{schema}">openapi.json</a>. The endpoints are described
in docs/serving.md.</p></body></html>
"""


def _docs(app: FastAPI, state: ServeState, swagger: Path | None) -> None:
    """``/docs`` (Swagger UI from local files), ``/redoc`` (the same page) and, with an API
    key, ``/openapi.json``; all three need the key when one is set (header or ``?key=``)."""
    from fastapi import HTTPException
    from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
    from fastapi.responses import FileResponse, RedirectResponse

    keyed = state.settings.api_key is not None

    def key_of(request: Request) -> str | None:
        if not keyed:
            return None
        key = presented_key(request.headers) or request.query_params.get("key")
        if key is None or not check_api_key(state.settings.api_key, key):
            raise unauthorized()
        return key

    def root(request: Request) -> str:
        return str(request.scope.get("root_path", "") or "").rstrip("/")

    def schema_url(request: Request) -> str:
        key = key_of(request)
        # The page's own fetch of the schema cannot send headers: it carries the key.
        return f"{root(request)}/openapi.json" + (f"?key={quote(key, safe='')}" if key else "")

    if keyed:

        @app.get("/openapi.json", include_in_schema=False)
        def openapi(request: Request) -> JSONResponse:
            key_of(request)
            return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        url = schema_url(request)
        title = f"{app.title} - docs"
        if swagger is None:
            return HTMLResponse(_NO_SWAGGER_PAGE.format(title=title, env=SWAGGER_UI_ENV, schema=url))
        static = f"{root(request)}/docs/static"
        return get_swagger_ui_html(
            openapi_url=url,
            title=title,
            swagger_js_url=f"{static}/swagger-ui-bundle.js",
            swagger_css_url=f"{static}/swagger-ui.css",
            swagger_favicon_url=f"{static}/favicon-32x32.png",
            oauth2_redirect_url="/docs/oauth2-redirect",
            # No spec validator badge: it would send the schema to validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/docs/static/{name}", include_in_schema=False)
    def docs_static(name: str) -> FileResponse:
        # Open like the overlay's scripts: the same public files for every server, no data.
        if swagger is None or name not in SWAGGER_UI_FILES or not (swagger / name).is_file():
            raise HTTPException(status_code=404, detail=f"no docs file {name!r}")
        return FileResponse(swagger / name, media_type=_SWAGGER_TYPES[Path(name).suffix])

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> RedirectResponse:
        key_of(request)
        query = request.url.query
        return RedirectResponse(f"{root(request)}/docs" + (f"?{query}" if query else ""), status_code=307)


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
        # With a key the schema is added below, behind the key; the docs pages always are
        # (Swagger UI from local files, never a CDN).
        openapi_url=None if keyed else "/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.serve = state
    from avatarforge.serve.routes import add_latent_sliders, build_router

    add_latent_sliders(state)  # before the router: its schema lists the sliders
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

    app.state.swagger_ui = swagger_ui_dir()
    _docs(app, state, app.state.swagger_ui)

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
    _mount_view3d(app, state)
    return app


def _mount_view3d(app: FastAPI, state: ServeState) -> None:
    """The 3D view (``/view3d?avatar=...``): VRM of a built-in avatar, a generator seed or the
    studio's pick (through the refiner's part map when the server has one)."""
    from avatarforge.serve.auth import check_api_key, presented_key, unauthorized
    from avatarforge.serve.view3d import mount_view3d

    def page_key(request: Request) -> None:
        # Browsers open the page by URL: ?key= like the overlay, or the API's headers.
        given = request.query_params.get("key") or presented_key(request.headers)
        if not check_api_key(state.settings.api_key, given):
            raise unauthorized()

    def avatar_source(avatar: str) -> Any:
        from avatarforge.avatar3d.source import AvatarSource

        layers = state.avatar_layers
        if layers is None or not (avatar == "studio" or avatar.isdigit()):
            raise ValueError(
                "avatar must be procedural:N, a generator seed or studio; seeds need a refiner with a part "
                "head on this server (avatarforge serve RUN --refiner REFINER_RUN)"
            )
        hub = getattr(app.state, "overlay_hub", None)
        image = getattr(hub, "_avatars", {}).get(avatar) if hub is not None else None
        with state.model_lock():
            big, parts = layers(avatar, max(state.pipe.sizes), image)
        return AvatarSource(image=big, parts=parts, name=f"avatar {avatar}", origin=avatar)

    mount_view3d(app, state, dependencies=[Depends(page_key)], avatar_source=avatar_source)
