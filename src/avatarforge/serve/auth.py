"""API-key check shared by every protected route (the JSON API, the overlay, the studio).

The key travels as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``. It is compared with
:func:`hmac.compare_digest` over the UTF-8 bytes so the time taken does not reveal how many
leading characters were right. With no key configured the API is open (the server binds to
loopback by default; ``avatarforge serve`` warns when that is not the case).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping

from fastapi import HTTPException, Request, status

__all__ = [
    "API_KEY_HEADER",
    "STATE_SCOPE_KEY",
    "api_key_dependency",
    "check_api_key",
    "presented_key",
    "require_api_key",
    "unauthorized",
]

API_KEY_HEADER = "X-API-Key"

#: ASGI scope key under which create_app's middleware stores the ServeState of a request.
STATE_SCOPE_KEY = "avatarforge.serve_state"


def presented_key(request_headers: Mapping[str, str]) -> str | None:
    """The key a request presents (``X-API-Key`` first, then ``Authorization: Bearer``), or None."""
    get = request_headers.get
    key = get(API_KEY_HEADER.lower()) or get(API_KEY_HEADER)
    if key:
        return str(key)
    auth = get("authorization") or ""
    scheme, _, token = str(auth).partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def check_api_key(expected: str | None, presented: str | None) -> bool:
    """True when no key is configured, or ``presented`` equals it (constant-time compare)."""
    if expected is None:
        return True
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def unauthorized() -> HTTPException:
    """The API's 401 (raise it): names both ways to send the key."""
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="missing or wrong API key: send header 'X-API-Key: KEY' or 'Authorization: Bearer KEY'",
        headers={"WWW-Authenticate": "Bearer"},
    )


def api_key_dependency(expected: str | None) -> Callable[[Request], None]:
    """A dependency bound to one key (for sub-apps whose ``request.app`` is not the main app)."""

    def dependency(request: Request) -> None:
        if not check_api_key(expected, presented_key(request.headers)):
            raise unauthorized()

    return dependency


def require_api_key(request: Request) -> None:
    """FastAPI dependency: 401 unless the request carries the configured API key.

    Finds the :class:`~avatarforge.serve.state.ServeState` that
    :func:`~avatarforge.serve.app.create_app` puts into every request's ASGI scope (so it
    also works inside mounted sub-applications, whose ``request.app`` is their own), falling
    back to ``request.app.state.serve``. Use it as ``dependencies=[Depends(require_api_key)]``.
    WebSockets: call :func:`check_api_key` with :func:`presented_key` of ``websocket.headers``
    (or a query parameter) instead -- HTTP exceptions do not apply there.

    Raises:
        RuntimeError: used on an app that :func:`create_app` did not build (fails closed
            rather than leaving a route open by accident).
    """
    state = request.scope.get(STATE_SCOPE_KEY) or getattr(request.app.state, "serve", None)
    if state is None:
        raise RuntimeError("require_api_key needs an app built by avatarforge.serve.create_app")
    if not check_api_key(state.settings.api_key, presented_key(request.headers)):
        raise unauthorized()
