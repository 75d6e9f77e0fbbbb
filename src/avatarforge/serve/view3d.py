"""The 3D view page: an avatar's VRM in the browser (three.js + @pixiv/three-vrm), rotate it,
turn its head, play its expressions.

Everything the page loads comes from this server (never a CDN): the page and its script
(``static/view3d/``), three.js and three-vrm from the checkout's ``node_modules`` (pinned in
package.json, installed by ``make install``), and the model, built on request by
:func:`avatarforge.avatar3d.vrm.model_to_glb`.

Routes (:func:`mount_view3d`):

* ``GET /view3d?avatar=procedural:N&format=vrm1|vrm0`` - the page;
* ``GET /view3d/model.vrm?avatar=...&format=...`` - the model file (cached per avatar/format);
* ``GET /view3d/static/{name}`` - the page's script;
* ``GET /view3d/vendor/{package}/{path}`` - three.js (``build/``, ``examples/jsm/``) and
  three-vrm (``lib/``) modules; nothing else of node_modules is reachable.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["VIEW3D_ENV", "mount_view3d", "view3d_vendor_dir"]

#: A node_modules folder holding three and @pixiv/three-vrm, when not the checkout's.
VIEW3D_ENV = "AVATARFORGE_NODE_MODULES"
STATIC = Path(__file__).resolve().parent / "static" / "view3d"
#: URL name -> (package folder under node_modules, sub-folders that may be served).
VENDOR: dict[str, tuple[str, tuple[str, ...]]] = {
    "three": ("three", ("build/", "examples/jsm/")),
    "three-vrm": ("@pixiv/three-vrm", ("lib/",)),
}
_TYPES = {".js": "text/javascript", ".html": "text/html", ".css": "text/css"}
_AVATAR = re.compile(r"^procedural:\d{1,9}$")


def view3d_vendor_dir(environ: dict[str, str] | None = None) -> Path | None:
    """The node_modules folder with three and three-vrm, or None when they are not installed."""
    env = os.environ if environ is None else environ
    here = Path(__file__).resolve()
    candidates = [Path(env[VIEW3D_ENV])] if env.get(VIEW3D_ENV) else []
    candidates += [here.parents[3] / "node_modules", Path.cwd() / "node_modules"]
    for d in candidates:
        if (d / "three" / "build" / "three.module.js").is_file() and (
            d / "@pixiv" / "three-vrm" / "lib" / "three-vrm.module.js"
        ).is_file():
            return d
    return None


_NOT_INSTALLED = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>3D view</title></head>
<body style="font-family:system-ui,sans-serif;max-width:40em;margin:2em auto">
<h1>3D view: three.js is not installed</h1>
<p>The 3D view draws the avatar's VRM with three.js and three-vrm, served by this server from
local files. In the AvatarForge checkout run <code>make install</code> (or
<code>npm ci --ignore-scripts</code>) and restart the server. The model itself is here:
<a href="model.vrm?avatar={avatar}">model.vrm</a>.</p></body></html>"""


def mount_view3d(
    app: Any,
    state: Any = None,
    *,
    prefix: str = "/view3d",
    dependencies: Sequence[Any] = (),
    avatar_source: Callable[[str], Any] | None = None,
) -> None:
    """Add the 3D view's routes to a FastAPI ``app``.

    Args:
        app: the FastAPI app.
        state: unused (the ``mount(app, state)`` form the server's optional parts share).
        prefix: where the page lives.
        dependencies: FastAPI dependencies for every route (e.g. the server's API-key check).
        avatar_source: ``avatar -> AvatarSource`` for avatars other than ``procedural:N``
            (e.g. the studio's pick with its predicted part map); unknown avatars are a 404.
    """
    from fastapi import APIRouter, HTTPException, Query
    from fastapi.responses import HTMLResponse, Response

    # The page and the model carry the avatar (keyed); scripts carry no data (open, like the
    # overlay's static files), so a browser can load them without the key in every URL.
    router = APIRouter(prefix=prefix, dependencies=list(dependencies))
    assets = APIRouter(prefix=prefix)
    lock = threading.Lock()

    @functools.lru_cache(maxsize=8)
    def model_bytes(avatar: str, fmt: str) -> bytes:
        from avatarforge.avatar3d.build import build_model
        from avatarforge.avatar3d.source import load_avatar
        from avatarforge.avatar3d.vrm import model_to_glb

        source = load_avatar(avatar) if _AVATAR.match(avatar) else avatar_source(avatar)  # type: ignore[misc]
        data, _ = model_to_glb(build_model(source), fmt)
        return data

    def check(avatar: str, fmt: str) -> None:
        if fmt not in ("vrm1", "vrm0", "glb"):
            raise HTTPException(422, "format must be vrm1, vrm0 or glb")
        if not _AVATAR.match(avatar) and avatar_source is None:
            raise HTTPException(404, "avatar must be procedural:N on this server")

    @router.get("", response_class=HTMLResponse, include_in_schema=False)
    def page(avatar: str = Query("procedural:0", max_length=64), format: str = "vrm1") -> HTMLResponse:
        check(avatar, format)
        if view3d_vendor_dir() is None:
            return HTMLResponse(_NOT_INSTALLED.replace("{avatar}", avatar), status_code=503)
        return HTMLResponse((STATIC / "index.html").read_text("utf-8"))

    @router.get("/model.vrm", include_in_schema=False)
    def model(avatar: str = Query("procedural:0", max_length=64), format: str = "vrm1") -> Response:
        check(avatar, format)
        try:
            with lock:  # one build at a time (a few hundred ms of CPU each)
                data = model_bytes(avatar, format)
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        return Response(data, media_type="model/gltf-binary", headers={"Cache-Control": "no-store"})

    @assets.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        f = STATIC / name
        if "/" in name or f.suffix not in _TYPES or not f.is_file():
            raise HTTPException(404, "not found")
        return Response(f.read_bytes(), media_type=_TYPES[f.suffix])

    @assets.get("/vendor/{package}/{path:path}", include_in_schema=False)
    def vendor(package: str, path: str) -> Response:
        root = view3d_vendor_dir()
        if root is None or package not in VENDOR:
            raise HTTPException(404, "not found")
        folder, allowed = VENDOR[package]
        base = (root / folder).resolve()
        f = (base / path).resolve()
        if (
            not f.is_relative_to(base)
            or not any(path.startswith(a) for a in allowed)
            or f.suffix != ".js"
            or not f.is_file()
        ):
            raise HTTPException(404, "not found")
        return Response(
            f.read_bytes(), media_type="text/javascript", headers={"Cache-Control": "max-age=3600"}
        )

    app.include_router(router)
    app.include_router(assets)
