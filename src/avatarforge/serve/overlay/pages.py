"""The overlay's two pages: static HTML/JS/CSS files plus a config the server fills in.

The files live in ``avatarforge/serve/static/overlay`` (package data, listed in
pyproject's ``[tool.setuptools.package-data]``). :func:`mount_static` serves the scripts and
stylesheets at :data:`~avatarforge.serve.overlay.protocol.STATIC_PATH`; the HTML files are
templates with two fields, ``{{root}}`` (the app's root path, for the asset URLs) and
``{{config}}`` (a JSON object in a ``<script type="application/json">`` element that the
page's script reads: the query to forward, the socket paths, the bound keys, an error).
"""

from __future__ import annotations

import functools
import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from avatarforge.serve.overlay.protocol import (
    CONTROL_SOCKET_PATH,
    FACE_MESH_PATH,
    FRAME_SOCKET_PATH,
    KEY_BINDINGS,
    KEY_HELP,
    PAGE_PATH,
    RIG_PATH,
    STATIC_PATH,
    TRACKER_STATIC_PATH,
)

__all__ = [
    "FACE_MESH_ENV",
    "FACE_MESH_INSTALL",
    "control_page_html",
    "face_mesh_dir",
    "mount_static",
    "overlay_page_html",
    "static_dir",
    "tracker_page_html",
]

#: A folder holding the files of npm's ``@mediapipe/face_mesh`` (see :func:`face_mesh_dir`).
FACE_MESH_ENV = "AVATARFORGE_FACE_MESH"
#: The pinned package (package.json / package-lock.json).
FACE_MESH_PACKAGE = "@mediapipe/face_mesh@0.4.1633559619"
#: What to run when the files are missing (the tracker page shows it).
FACE_MESH_INSTALL = (
    "make install  (or: npm ci --ignore-scripts)  in the AvatarForge checkout; without the checkout: "
    f"npm pack {FACE_MESH_PACKAGE} && tar xzf mediapipe-face_mesh-0.4.1633559619.tgz, then set "
    f"{FACE_MESH_ENV}=$PWD/package; then restart the server"
)
#: The files the tracker page may load (the loader, the model and the wasm runtime).
FACE_MESH_FILES = (
    "face_mesh.js",
    "face_mesh.binarypb",
    "face_mesh_solution_packed_assets_loader.js",
    "face_mesh_solution_packed_assets.data",
    "face_mesh_solution_simd_wasm_bin.js",
    "face_mesh_solution_simd_wasm_bin.wasm",
    "face_mesh_solution_simd_wasm_bin.data",
    "face_mesh_solution_wasm_bin.js",
    "face_mesh_solution_wasm_bin.wasm",
)


def face_mesh_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """Where MediaPipe face_mesh's files are, or ``None`` when they are not installed.

    Looked for like Swagger UI's (``serve.app.swagger_ui_dir``): ``$AVATARFORGE_FACE_MESH``;
    ``static/tracker/mediapipe/`` in the package (a build that ships them);
    ``node_modules/@mediapipe/face_mesh`` of the checkout the package runs from (``make
    install``: ``npm ci --ignore-scripts``, pinned by package.json and package-lock.json) and
    of the current directory. The page never loads them from the internet.
    """
    import os

    env = os.environ if environ is None else environ
    here = Path(__file__).resolve().parent.parent  # avatarforge/serve
    candidates = [Path(env[FACE_MESH_ENV])] if env.get(FACE_MESH_ENV) else []
    candidates += [
        here / "static" / "tracker" / "mediapipe",
        here.parents[2] / "node_modules" / "@mediapipe" / "face_mesh",
        Path.cwd() / "node_modules" / "@mediapipe" / "face_mesh",
    ]
    for d in candidates:
        if all((d / f).is_file() for f in FACE_MESH_FILES[:6]):
            return d
    return None


def static_dir() -> Path:
    """The folder of the overlay's static files (inside the installed package)."""
    # Package data next to the code (pip and editable installs unpack it: a real folder, which
    # StaticFiles needs).
    return Path(__file__).resolve().parent.parent / "static" / "overlay"


@functools.cache
def _template(name: str) -> str:
    # Read once per process: the files are part of the installed package and do not change.
    return (static_dir().parent / name).read_text(encoding="utf-8")


def _config_json(data: Mapping[str, Any]) -> str:
    # JSON inside <script>: escape '<' so a value can never close the script element.
    return json.dumps(data).replace("<", "\\u003c")


def _fill(name: str, root: str, cfg: Mapping[str, Any]) -> str:
    from avatarforge import __version__

    # ?v= makes a browser source fetch the scripts again after an upgrade (OBS caches hard).
    return (
        _template(name)
        .replace("{{root}}", html.escape(root, quote=True))
        .replace("{{version}}", html.escape(__version__, quote=True))
        .replace("{{config}}", _config_json(cfg))
    )


def overlay_page_html(
    query: Mapping[str, str], root: str = "", error: str | None = None, mode: str = "frames"
) -> str:
    """The ``/overlay`` page: transparent, margin-free.

    ``mode="rig"``: a canvas the page draws from the avatar's rig (``/overlay/rig``) and the
    controls streamed over ``/ws/overlay``; ``"frames"``: an <img> showing the server's
    frames. ``query`` is forwarded to the socket (avatar, size, fps, idle, key, mode);
    ``error`` is shown instead of connecting (e.g. no animator loaded).
    """
    cfg = {
        "query": dict(query),
        "root": root,
        "mode": mode,
        "rig": RIG_PATH,
        "socket": FRAME_SOCKET_PATH,
        "keys": list(KEY_BINDINGS),
        "error": error,
    }
    return _fill("overlay/overlay.html", root, cfg)


def control_page_html(query: Mapping[str, str], avatar: str, root: str = "") -> str:
    """The ``/overlay/control`` page (buttons, sliders, keys, microphone lip sync, preview)."""
    from avatarforge.models.animator import CONTROL_NAMES, CONTROL_RANGES, NEUTRAL_CONTROLS

    cfg = {
        "query": dict(query),
        "root": root,
        "avatar": avatar,
        "page": PAGE_PATH,
        "sockets": {"frames": FRAME_SOCKET_PATH, "control": CONTROL_SOCKET_PATH},
        "keys": list(KEY_BINDINGS),
        "help": KEY_HELP,
        "controls": [
            {
                "name": n,
                "lo": CONTROL_RANGES[n][0],
                "hi": CONTROL_RANGES[n][1],
                "neutral": NEUTRAL_CONTROLS[n],
            }
            for n in CONTROL_NAMES
        ],
    }
    return _fill("overlay/control.html", root, cfg)


def tracker_page_html(
    query: Mapping[str, str],
    root: str = "",
    *,
    control_socket: str = CONTROL_SOCKET_PATH,
    overlay: str = PAGE_PATH,
    installed: bool = True,
) -> str:
    """The ``/tracker`` page: webcam -> MediaPipe face_mesh in the page -> live controls sent
    on the control socket. ``installed=False``: the page says what to run instead."""
    from avatarforge.animate.tracking import OneEuroBank

    f = OneEuroBank()
    cfg = {
        "query": dict(query),
        "root": root,
        "socket": control_socket,
        "overlay": overlay,
        "mediapipe": FACE_MESH_PATH,
        "installed": installed,
        "install": FACE_MESH_INSTALL,
        "filter": {
            "min_cutoff": f.min_cutoff,
            "beta": f.beta,
            "d_cutoff": f.d_cutoff,
            "eye_min_cutoff": f.eye_min_cutoff,
        },
    }
    return _fill("tracker/tracker.html", root, cfg)


def mount_static(app: Any) -> None:
    """Serve the pages' scripts and stylesheets at ``STATIC_PATH`` on ``app``.

    They need no API key: they are the same code for every server and carry no data; the
    pages that embed a server's config (and its key) are the keyed routes.
    """
    from starlette.staticfiles import StaticFiles

    app.mount(STATIC_PATH, StaticFiles(directory=static_dir()), name="overlay-static")
    app.mount(
        TRACKER_STATIC_PATH, StaticFiles(directory=static_dir().parent / "tracker"), name="tracker-static"
    )
