"""Uploaded images, validated exactly like the ingest pipeline (``avatarforge data prepare``).

Two steps, so that nothing is decoded before every limit has been checked:

1. :func:`receive_image` reads an :class:`~fastapi.UploadFile` in chunks and stops as soon as
   it passes ``max_upload_bytes`` (413), then reads the image's **header** only (Pillow opens
   lazily: ``.size`` is known before ``.load()``) and refuses images over ``max_pixels`` or
   ``max_image_side`` (413, quoting the server's own setting). A 62 KB PNG that claims
   4000x4000 px is refused here, without allocating its 64 MB of pixels.
2. :meth:`PendingImage.decode` decodes with :func:`avatarforge.data.imagefile.load_image` --
   the same decoder, checks and reason codes as ingest: non-images and unsupported formats
   are 415, empty/truncated/corrupt files are 422. Call it inside
   :meth:`~avatarforge.serve.state.ServeState.image_slot` so that only
   ``max_concurrent_images`` requests hold decoded pixels at a time.

Every error names the form field and the reason. :func:`read_upload` does both steps.

:class:`BodyLimit` is the outer guard: an ASGI middleware that refuses bodies longer than a
bound (by ``Content-Length`` up front, or while streaming) before the multipart parser
spools them to disk.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import HTTPException, UploadFile

from avatarforge.data.imagefile import SUPPORTED_FORMATS, ImageRejected, load_image
from avatarforge.serve.errors import UploadError

__all__ = ["BodyLimit", "PendingImage", "read_upload", "receive_image"]

_CHUNK = 64 * 1024
_UNSUPPORTED = {"not_an_image", "unsupported_format"}
_TOO_LARGE = {"too_large"}
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


@dataclass(frozen=True)
class PendingImage:
    """An upload whose size in bytes and whose header passed the limits; not decoded yet.

    Attributes:
        field: the form field, named by every error.
        data: the file's bytes.
        size: ``(width, height)`` from the header (``None`` when the header is unreadable:
            :meth:`decode` then reports why, with the ingest pipeline's reason code).
        max_pixels, max_side: the limits, checked again on the decoded image.
    """

    field: str
    data: bytes
    size: tuple[int, int] | None
    max_pixels: int
    max_side: int

    def decode(self) -> np.ndarray:
        """The image as an ``(H, W, 3|4)`` uint8 array (RGB or RGBA, EXIF-rotated).

        Raises:
            UploadError: 415 (not a supported image), 422 (empty, truncated, corrupt),
                413 (too many pixels), naming the field.
        """
        try:
            img = load_image(self.data, max_pixels=self.max_pixels)
        except ImageRejected as e:
            status = 415 if e.reason in _UNSUPPORTED else 413 if e.reason in _TOO_LARGE else 422
            raise UploadError(status, self.field, f"{e.reason}: {e.message}", e.reason) from None
        if max(img.size) > self.max_side:  # only if the header could not be read but the pixels could
            raise _too_large(
                self.field, f"the image is larger than {self.max_side} px (the server's max_image_side)"
            )
        return np.asarray(img)


def _too_large(field: str, msg: str) -> UploadError:
    return UploadError(413, field, f"too_large: {msg}", "too_large")


def _header_size(data: bytes, field: str, max_pixels: int) -> tuple[int, int] | None:
    """``(width, height)`` from the header, without decoding pixels; None if unreadable.

    Pillow refuses images over twice its own ``MAX_IMAGE_PIXELS`` while opening them; that
    message quotes Pillow's limit, so it is replaced by one quoting the server's.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: our limit decides below
            with Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS) as im:
                return int(im.size[0]), int(im.size[1])
    except Image.DecompressionBombError as e:
        m = _BOMB_PIXELS.search(str(e))
        claimed = f"the image has {int(m.group(1)):,} pixels" if m else "the image has too many pixels"
        raise _too_large(
            field, f"{claimed}; at most {max_pixels:,} on this server (its max_pixels, --max-pixels)"
        ) from None
    except Exception:
        return None  # not an image, truncated header, ...: decode() classifies it


def receive_image(
    upload: UploadFile, field: str, *, max_bytes: int, max_pixels: int, max_side: int
) -> PendingImage:
    """Read the upload's bytes and check its header against the limits; decode nothing.

    Raises:
        UploadError: 413 naming ``field`` (bytes, pixels or side over the limit).
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
    size = _header_size(data, field, max_pixels)
    if size is not None:
        w, h = size
        if w * h > max_pixels:
            raise _too_large(
                field,
                f"the image is {w}x{h} = {w * h:,} pixels; at most {max_pixels:,} on this server "
                "(its max_pixels, --max-pixels)",
            )
        if max(w, h) > max_side:
            raise _too_large(
                field,
                f"the image is {w}x{h} px; the longer side may be at most {max_side} px "
                "(the server's max_image_side): downscale it first",
            )
    return PendingImage(field, data, size, max_pixels, max_side)


def read_upload(
    upload: UploadFile, field: str, *, max_bytes: int, max_pixels: int, max_side: int
) -> np.ndarray:
    """:func:`receive_image` then :meth:`PendingImage.decode`: the upload as an
    ``(H, W, 3|4)`` uint8 array (callers that can, decode inside ``state.image_slot()``).

    Raises:
        UploadError: 413 (bytes, pixels or side over the limit), 415 (not a supported
            image), 422 (empty, truncated, corrupt), each naming ``field``.
    """
    return receive_image(
        upload, field, max_bytes=max_bytes, max_pixels=max_pixels, max_side=max_side
    ).decode()


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
