"""Uploaded images, validated exactly like the ingest pipeline (``avatarforge data prepare``).

:func:`read_upload` reads an :class:`~fastapi.UploadFile` in chunks and stops as soon as it
passes ``max_upload_bytes`` (413), then decodes it with
:func:`avatarforge.data.imagefile.load_image` -- the same decoder, checks and reason codes as
ingest: the pixel count is checked from the header before any pixel is decoded
(decompression bombs: 413), non-images and unsupported formats are 415, empty/truncated/
corrupt files are 422. Every error names the form field and the reason.

:class:`BodyLimit` is the outer guard: an ASGI middleware that refuses bodies longer than a
bound (by ``Content-Length`` up front, or while streaming) before the multipart parser
spools them to disk.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import HTTPException, UploadFile

from avatarforge.data.imagefile import ImageRejected, load_image
from avatarforge.serve.errors import UploadError

__all__ = ["BodyLimit", "read_upload"]

_CHUNK = 64 * 1024
_UNSUPPORTED = {"not_an_image", "unsupported_format"}
_TOO_LARGE = {"too_large"}


def read_upload(
    upload: UploadFile, field: str, *, max_bytes: int, max_pixels: int, max_side: int
) -> np.ndarray:
    """The upload as an ``(H, W, 3|4)`` uint8 array (RGB or RGBA, EXIF-rotated).

    Raises:
        UploadError: 413 (bytes, pixels or side over the limit), 415 (not a supported
            image), 422 (empty, truncated, corrupt), each naming ``field``.
    """
    chunks, total = [], 0
    f = upload.file
    while True:
        chunk = f.read(_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:
            raise UploadError(
                413,
                field,
                f"the upload is larger than {max_bytes} bytes (the server's max_upload_bytes)",
                "too_large",
            )
        chunks.append(chunk)
    data = b"".join(chunks)
    try:
        img = load_image(data, max_pixels=max_pixels)
    except ImageRejected as e:
        status = 415 if e.reason in _UNSUPPORTED else 413 if e.reason in _TOO_LARGE else 422
        raise UploadError(status, field, f"{e.reason}: {e.message}", e.reason) from None
    if max(img.size) > max_side:
        raise UploadError(
            413,
            field,
            f"the image is {img.size[0]}x{img.size[1]} px; the longer side may be at most {max_side} px "
            "(the server's max_image_side): downscale it first",
            "too_large",
        )
    return np.asarray(img)


class BodyLimit:
    """ASGI middleware: 413 for request bodies over ``max_bytes``.

    Checks ``Content-Length`` before the app runs and counts streamed bytes (chunked
    uploads have no length); the streaming case raises :class:`HTTPException` from
    ``receive``, which FastAPI passes through its body parsing unchanged.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        msg = f"the request body is larger than {self.max_bytes} bytes (uploads: see max_upload_bytes in /v1/info)"
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    from starlette.responses import JSONResponse

                    body = {
                        "detail": [{"loc": ["body"], "msg": msg, "type": "too_large"}],
                        "message": f"body: {msg}",
                    }
                    await JSONResponse(body, status_code=413)(scope, receive, send)
                    return
        seen = 0

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(status_code=413, detail=msg)
            return message

        await self.app(scope, limited_receive, send)
