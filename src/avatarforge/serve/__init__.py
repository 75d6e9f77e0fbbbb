"""HTTP API (``avatarforge serve``; see docs/serving.md).

* :class:`ServeSettings`, :class:`ServeState` (models loaded once, the lock) -- :mod:`.state`;
* :func:`create_app` (FastAPI) -- :mod:`.app`; routes -- :mod:`.routes`;
* :func:`require_api_key` (dependency), :func:`check_api_key` -- :mod:`.auth`;
* CLI: :func:`add_serve_arguments`, :func:`serve_main` -- :mod:`.cli`.

Attributes are imported lazily so ``import avatarforge.serve`` needs neither torch nor fastapi.
"""

from __future__ import annotations

from avatarforge.lazy import lazy_attributes

__all__ = [
    "ServeSettings",
    "ServeState",
    "add_serve_arguments",
    "check_api_key",
    "create_app",
    "require_api_key",
    "serve_main",
]

_LAZY = {
    "ServeSettings": "avatarforge.serve.state",
    "ServeState": "avatarforge.serve.state",
    "create_app": "avatarforge.serve.app",
    "check_api_key": "avatarforge.serve.auth",
    "require_api_key": "avatarforge.serve.auth",
    "add_serve_arguments": "avatarforge.serve.cli",
    "serve_main": "avatarforge.serve.cli",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
