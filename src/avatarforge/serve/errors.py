"""One error shape for every 4xx the API returns about a request field.

``field_error("n", "at most 64 images per request")`` raises a
:class:`~fastapi.exceptions.RequestValidationError`, so hand-written checks (limits taken from
the server settings, library ``ValueError`` s) answer exactly like pydantic's: status 422,
``{"detail": [{"loc": [...], "msg": ..., "type": ...}], "message": "n: ..."}``. Uploads use
:class:`UploadError` for 413/415 with the same body.
"""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError

__all__ = ["UploadError", "error_body", "field_error"]


def field_error(
    field: str, msg: str, where: str = "body", kind: str = "value_error"
) -> RequestValidationError:
    """A 422 naming ``field`` (raise the returned exception)."""
    return RequestValidationError([{"loc": (where, *field.split(".")), "msg": msg, "type": kind}])


def _field(loc: Any) -> str:
    # ("body", "n") -> "n": the name a client wrote.
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or ".".join(str(p) for p in loc)


def error_body(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """FastAPI's ``detail`` list (what generated clients expect) plus a one-line ``message``."""
    detail = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "invalid")), "type": e.get("type", "")}
        for e in errors
    ]
    message = "; ".join(f"{_field(e['loc'])}: {e['msg']}" for e in detail)
    return {"detail": detail, "message": message}


class UploadError(Exception):
    """An upload refused with ``status`` (413 too large, 415 not a supported image, 422 broken)."""

    def __init__(self, status: int, field: str, msg: str, kind: str) -> None:
        super().__init__(f"{field}: {msg}")
        self.status = status
        self.errors = [{"loc": ("body", field), "msg": msg, "type": kind}]
