"""Decode and normalise ONE user image (from a path or bytes), defensively.

Used by ``avatarforge data prepare`` (:mod:`avatarforge.data.prepare`) for every file of a
folder or archive, and by the HTTP server to validate uploads, so both accept and reject
exactly the same inputs.

Two steps:

- :func:`load_image` decodes a file fully (so truncated or corrupt data is detected here, not
  later during training), applies the EXIF orientation and converts any Pillow mode to
  ``RGB`` or ``RGBA``. Anything wrong raises :class:`ImageRejected` with a short ``reason``
  code (see :data:`REASONS`) and a human-readable ``message``.
- :func:`normalize_image` fits the image into a ``size`` x ``size`` square (centre crop or
  pad), resizes it with an antialiasing filter in premultiplied alpha, and either keeps the
  alpha channel or composites onto a background colour. It returns a uint8 array.

The format is decided by the content, never by the file name: a PNG named ``.jpg`` loads
fine and a text file named ``.png`` is rejected as ``not_an_image``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import ExifTags, Image, ImageColor, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "REASONS",
    "SUPPORTED_FORMATS",
    "ImageRejected",
    "default_min_side",
    "load_image",
    "normalize_image",
    "parse_color",
]

DEFAULT_MAX_PIXELS = 64_000_000

# Pillow formats we decode. The list is passed to Image.open so that formats with weak or no
# magic bytes (TGA, ...) can never "recognise" a random file. (JPEGs from cameras that embed
# a second picture open through the JPEG plugin as format "MPO".)
SUPPORTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")

# File names that are considered candidate images when scanning folders and archives. The
# content still decides the format; this only keeps labels.json, README.txt, ... out.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".dib", ".gif", ".tif", ".tiff"}
)

#: Reason codes of :class:`ImageRejected` and what they mean.
REASONS: dict[str, str] = {
    "empty": "the file is empty (0 bytes)",
    "truncated": "the file ends before the image data does (incomplete download or copy)",
    "corrupt": "the image data is damaged and cannot be decoded",
    "not_an_image": "the content is not an image (e.g. text or HTML with an image file name)",
    "unsupported_format": "an image format other than PNG, JPEG, WebP, BMP, GIF, TIFF",
    "too_small": "the shorter side is below the minimum (--min-side)",
    "too_large": "more pixels than the limit (--max-pixels); protects against decompression bombs",
    "unreadable": "the file cannot be read (permission denied, I/O error, encrypted archive member)",
    "broken_symlink": "a symbolic link whose target is missing, or a symlink loop",
    "is_directory": "a directory, not a file",
    "not_a_file": "a special file (FIFO, socket, device), not a regular file",
    "error": "an unexpected error while processing (a bug: please report it)",
}

# Where load_image records the decoded size before a JPEG draft shrank it, so that the
# minimum-size check in normalize_image judges the real image, not the draft.
_ORIGINAL_SIZE_KEY = "avatarforge.original_size"

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


class ImageRejected(Exception):
    """An input that is not a usable image.

    Attributes:
        reason: short code, one of :data:`REASONS` (``"truncated"``, ``"too_small"``, ...).
        message: what is wrong with this input, for people.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"

    def __reduce__(self):  # keep both fields when sent between processes
        return (type(self), (self.reason, self.message))


def default_min_side(size: int) -> int:
    """The default minimum shorter side for a target ``size``: half of it (at least 1)."""
    return max(1, int(size) // 2)


# ----------------------------------------------------------------------------- colours


def parse_color(s: str) -> tuple[int, int, int]:
    """Parse a colour: ``'#rrggbb'``, ``'#rgb'``, a name (``'white'``, ``'green'``), ``'r,g,b'``.

    Raises:
        ValueError: naming the valid forms.
    """
    text = str(s).strip()
    if "," in text and not text.lower().startswith(("rgb", "hsl", "hsv")):
        parts = [p.strip() for p in text.split(",")]
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            vals = []
        if len(vals) == 3 and all(0 <= v <= 255 for v in vals):
            return (vals[0], vals[1], vals[2])
    else:
        try:
            rgb = ImageColor.getrgb(text)
        except ValueError:
            rgb = None
        if rgb is not None:
            return (int(rgb[0]), int(rgb[1]), int(rgb[2]))
    raise ValueError(
        f"invalid colour {s!r}; use '#rrggbb' (e.g. '#00ff00'), '#rgb', a colour name "
        "(e.g. 'white', 'green') or 'r,g,b' with 0-255 values (e.g. '255,255,255')"
    )


# ----------------------------------------------------------------------------- loading

# What Pillow's decoders raise on bad data (SyntaxError is its "not this format" signal).
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    zlib.error,
    MemoryError,
)

# Pillow's own decompression-bomb guard is a process-wide setting (Image.MAX_IMAGE_PIXELS).
# We enforce our per-call limit ourselves; only when a caller allows MORE than Pillow's hard
# limit do we raise Pillow's limit, temporarily, under a lock, and restore it afterwards.
_PIXEL_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _pillow_pixel_limit(max_pixels: int) -> Iterator[None]:
    current = Image.MAX_IMAGE_PIXELS
    if current is None or max_pixels <= 2 * current:
        yield
        return
    with _PIXEL_LIMIT_LOCK:
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = current


def _open_path(path: str) -> io.BufferedReader:
    """Open a regular file for reading, turning every failure into :class:`ImageRejected`."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            raise ImageRejected("broken_symlink", f"symbolic link to a missing target ({target})") from None
        raise ImageRejected("unreadable", "no such file") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ImageRejected("broken_symlink", "symbolic link loop (the link points to itself)") from None
        if e.errno in (errno.EACCES, errno.EPERM):
            raise ImageRejected("unreadable", f"permission denied ({e.strerror})") from None
        raise ImageRejected("unreadable", f"cannot access the file: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageRejected("is_directory", "is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        # Opening a FIFO would block forever; devices could be endless.
        raise ImageRejected("not_a_file", "not a regular file (FIFO, socket or device)")
    if st.st_size == 0:
        raise ImageRejected("empty", "the file is empty (0 bytes)")
    try:
        return open(path, "rb")  # closed by load_image
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            raise ImageRejected("unreadable", f"permission denied ({e.strerror})") from None
        raise ImageRejected("unreadable", f"cannot open the file: {e.strerror or e}") from None


def _sniff(head: bytes) -> str | None:
    """The image format a file's first bytes claim to be, or None."""
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def _webp_truncated(fp: io.IOBase) -> bool:
    """A WebP's RIFF header states its length; fewer bytes present means truncated."""
    with contextlib.suppress(Exception):
        fp.seek(0)
        head = fp.read(12)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            declared = struct.unpack("<I", head[4:8])[0] + 8
            actual = fp.seek(0, io.SEEK_END)
            return actual < declared
    return False


def _classify_unidentified(fp: io.IOBase) -> ImageRejected:
    """Pillow recognised no supported format: explain what the file is instead."""
    try:
        fp.seek(0)
        head = fp.read(64)
    except Exception:
        head = b""
    claimed = _sniff(head)
    if claimed is not None:
        # Starts like a supported image but the header cannot be parsed: cut short or damaged.
        return ImageRejected(
            "corrupt", f"starts like a {claimed} file but its header is damaged or cut short"
        )
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<!doctype html", b"<html", b"<?xml", b"<svg")):
        return ImageRejected(
            "not_an_image", "an HTML/XML document, not an image (a web page saved under an image name?)"
        )
    # Maybe another image format Pillow knows (TGA, ICO, AVIF, ...): say so, it is actionable.
    other = None
    with contextlib.suppress(Exception), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp.seek(0)
        with Image.open(fp) as im:
            other = im.format
    if other and other not in (*SUPPORTED_FORMATS, "MPO"):
        return ImageRejected(
            "unsupported_format",
            f"{other} images are not supported; convert it to PNG (supported: PNG, JPEG, WebP, BMP, GIF, TIFF)",
        )
    if head and sum(32 <= b < 127 or b in (9, 10, 13) for b in head) >= 0.95 * len(head):
        return ImageRejected("not_an_image", "a text file, not an image")
    return ImageRejected("not_an_image", "not a recognised image (PNG, JPEG, WebP, BMP, GIF, TIFF)")


def _decode_error(e: BaseException, fp: io.IOBase, fmt: str | None) -> ImageRejected:
    """Map a Pillow decode failure to truncated / corrupt / too_large."""
    if isinstance(e, MemoryError):
        return ImageRejected("too_large", "not enough memory to decode this image")
    text = str(e) or type(e).__name__
    if isinstance(e, EOFError) or "truncat" in text.lower():
        return ImageRejected("truncated", f"the file is truncated ({text})")
    if fmt == "WEBP" and _webp_truncated(fp):
        return ImageRejected("truncated", "the file is truncated (shorter than its RIFF header says)")
    return ImageRejected("corrupt", f"cannot decode the {fmt or 'image'} data ({text})")


def _gray_to_uint8(img: Image.Image) -> np.ndarray:
    """16-bit, 32-bit integer or float grayscale -> uint8, scaled (not clipped)."""
    a = np.asarray(img)
    if img.mode.startswith("I;16"):
        # Exact rounding of v * 255 / 65535 == v / 257.
        return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if img.mode == "F":
        a = a.astype(np.float64)
        finite = a[np.isfinite(a)]
        hi = float(finite.max()) if finite.size else 1.0
        lo = float(finite.min()) if finite.size else 0.0
        a = np.nan_to_num(a, nan=0.0, posinf=hi, neginf=lo)
        if lo >= 0.0 and hi <= 1.0:  # the usual float convention: 0..1
            return np.rint(a * 255.0).astype(np.uint8)
        if lo >= 0.0 and hi <= 255.0:
            return np.rint(a).astype(np.uint8)
        return np.rint((a - lo) * (255.0 / max(hi - lo, 1e-12))).astype(np.uint8)
    # Mode "I" (32-bit signed): 16-bit PNGs/TIFFs open as "I" in some Pillow versions.
    a = a.astype(np.int64)
    bits = 0
    if img.format == "PNG":
        bits = 16
    elif img.format == "TIFF":
        with contextlib.suppress(Exception):
            bps = img.tag_v2.get(258)  # type: ignore[attr-defined]  # BitsPerSample
            bits = int(bps[0] if isinstance(bps, (tuple, list)) else bps)
    lo, hi = int(a.min()), int(a.max())
    if bits == 0:
        bits = 8 if (lo >= 0 and hi <= 255) else 16 if (lo >= 0 and hi <= 65535) else 32
    if bits <= 8:
        return np.clip(a, 0, 255).astype(np.uint8)
    if bits <= 16:
        return ((np.clip(a, 0, 65535) + 128) // 257).astype(np.uint8)
    # Genuinely 32-bit data has no fixed white point: stretch its range.
    return np.rint((a - lo) * (255.0 / max(hi - lo, 1))).astype(np.uint8)


def _cmyk_to_rgb(img: Image.Image) -> Image.Image:
    """CMYK -> RGB through the embedded ICC profile when there is one (much closer to what
    the author saw than Pillow's naive formula), else the naive formula."""
    icc = img.info.get("icc_profile")
    if icc:
        with contextlib.suppress(Exception):
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            out = ImageCms.profileToProfile(img, src, dst, outputMode="RGB")
            if out is not None:
                return out
    return img.convert("RGB")


def _to_rgb_or_rgba(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> "RGB", or "RGBA" when the image carries transparency."""
    mode = img.mode
    if mode == "RGBA" or (mode == "RGB" and "transparency" not in img.info):
        return img
    if mode.startswith("I") or mode == "F":
        # Pillow's convert() clips 16-bit values to 255 instead of scaling them.
        gray = Image.fromarray(_gray_to_uint8(img), "L")
        return gray.convert("RGB")
    if mode == "CMYK":
        return _cmyk_to_rgb(img)
    if mode in ("LA", "La", "PA", "RGBa") or img.has_transparency_data:
        return img.convert("RGBA")
    return img.convert("RGB")  # 1, L, P, YCbCr, LAB, HSV


def load_image(
    src: str | os.PathLike | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: int | None = None,
) -> Image.Image:
    """Decode one image fully and return it as an ``RGB`` or ``RGBA`` Pillow image.

    The image is EXIF-transposed; for animated images (GIF, WebP, APNG) the first frame is
    used. Truncated data is an error: :meth:`PIL.Image.Image.load` is forced and any decode
    error rejects the file. (This relies on Pillow's process-wide
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` staying False, its default; AvatarForge never sets it.)

    Args:
        src: a file path or the file's bytes.
        max_pixels: reject images with more pixels than this (``too_large``) before decoding
            them, so a tiny file that claims 20000x20000 pixels never allocates gigabytes.
        draft_size: optional speed hint for JPEGs: the caller will downscale so the shorter
            side becomes ``draft_size``; the JPEG decoder may then decode at 1/2, 1/4 or 1/8
            scale (DCT scaling) as long as both sides stay >= 2 x ``draft_size``.

    Raises:
        ImageRejected: with ``reason`` one of :data:`REASONS`.
    """
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise ImageRejected("empty", "the data is empty (0 bytes)")
        fp: io.IOBase = io.BytesIO(bytes(src))
    else:
        fp = _open_path(os.fspath(src))
    try:
        return _decode(fp, max_pixels=max_pixels, draft_size=draft_size)
    finally:
        fp.close()


def _decode(fp: io.IOBase, *, max_pixels: int, draft_size: int | None) -> Image.Image:
    fmt: str | None = None
    # Pillow reports odd-but-harmless things (corrupt EXIF, ...) as warnings; record rather
    # than print them so a folder of 10,000 photos doesn't flood the terminal.
    with warnings.catch_warnings(record=True), _pillow_pixel_limit(max_pixels):
        warnings.simplefilter("always")
        try:
            img = Image.open(fp, formats=SUPPORTED_FORMATS)
        except Image.DecompressionBombError as e:
            raise ImageRejected("too_large", f"too many pixels ({e})") from None
        except UnidentifiedImageError:
            raise _classify_unidentified(fp) from None
        except PermissionError as e:
            raise ImageRejected("unreadable", f"permission denied ({e})") from None
        except _DECODE_ERRORS as e:
            raise _decode_error(e, fp, _sniff(_head(fp))) from None
        fmt = img.format
        w, h = img.size
        if w <= 0 or h <= 0:
            raise ImageRejected("corrupt", f"invalid dimensions {w}x{h}")
        if w * h > max_pixels:
            raise ImageRejected(
                "too_large",
                f"{w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} "
                "(raise --max-pixels if this image is genuine)",
            )
        original_size = (w, h)
        if draft_size and fmt in ("JPEG", "MPO") and img.mode in ("RGB", "L", "CMYK", "YCbCr"):
            # DCT-domain downscaling: much faster for big photos; keep >= 2x the target, the
            # same "reducing gap" as Image.thumbnail, so the final filter still antialiases.
            img.draft(None, (2 * draft_size, 2 * draft_size))
        try:
            img.load()
        except Image.DecompressionBombError as e:
            raise ImageRejected("too_large", f"too many pixels ({e})") from None
        except _DECODE_ERRORS as e:
            raise _decode_error(e, fp, fmt) from None
        # Unreadable EXIF: keep the pixels as stored rather than reject the image.
        with contextlib.suppress(Exception):
            orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
            if orientation != 1:  # (exif_transpose would parse the EXIF again)
                ImageOps.exif_transpose(img, in_place=True)
            if orientation in (5, 6, 7, 8):  # transposed: width and height swap
                original_size = (original_size[1], original_size[0])
        try:
            out = _to_rgb_or_rgba(img)
        except (OSError, ValueError) as e:
            raise ImageRejected("corrupt", f"cannot convert {img.mode} pixels to RGB ({e})") from None
    # The size before any draft, in the displayed orientation (for the --min-side check).
    ow, oh = original_size
    out.info[_ORIGINAL_SIZE_KEY] = (ow, oh)
    out.format = fmt  # type: ignore[misc]
    return out


def _head(fp: io.IOBase) -> bytes:
    try:
        fp.seek(0)
        return fp.read(16)
    except Exception:
        return b""


# ----------------------------------------------------------------------------- normalising

_FITS = ("crop", "pad")


def _resize(img: Image.Image, size: tuple[int, int], box: tuple[int, int, int, int] | None) -> Image.Image:
    if box is not None and box != (0, 0, *img.size):
        # Crop first: resize(box=...) lets the filter read pixels outside the box, which
        # would leak a sliver of the cropped-away content into the edges.
        img = img.crop(box)
    if img.size == size:
        return img
    if size[0] <= img.size[0] and size[1] <= img.size[1]:
        # Downscaling: LANCZOS (its support widens with the scale factor, so it antialiases);
        # reducing_gap=2 first box-averages by a large integer factor with reduce(), which
        # is much faster and indistinguishable from a full LANCZOS pass.
        return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    # Upscaling (allowed down to --min-side): BICUBIC rings less than LANCZOS when enlarging.
    return img.resize(size, Image.Resampling.BICUBIC)


def normalize_image(
    img: Image.Image,
    size: int,
    *,
    fit: str = "crop",
    alpha: str = "keep",
    background: Sequence[int] = (255, 255, 255),
    min_side: int | None = None,
) -> np.ndarray:
    """Fit ``img`` into a ``size`` x ``size`` square; returns a uint8 array.

    Args:
        img: an image from :func:`load_image` (other modes are converted first).
        size: output side in pixels.
        fit: ``"crop"`` centre-crops to a square; ``"pad"`` keeps the whole image and pads
            the short side (transparent when alpha is kept, else ``background``).
        alpha: ``"keep"`` -> ``(size, size, 4)`` RGBA (opaque images get alpha 255; fully
            transparent pixels are stored as (0, 0, 0, 0)). ``"composite"`` -> ``(size,
            size, 3)`` RGB composited onto ``background``. A colour (``"white"``,
            ``"#00ff00"``, ``"0,255,0"``, see :func:`parse_color`) -> RGB composited onto
            that colour (it overrides ``background``), as ``--alpha COLOR`` does.
        background: RGB colour for ``alpha="composite"`` (compositing and padding).
        min_side: reject images whose shorter side is below this (``too_small``); default
            half of ``size``; 0 disables the check. Measured on the image as stored, before
            any JPEG draft.

    Resizing happens in premultiplied alpha, so the colour of fully transparent pixels
    never bleeds into the edges of the visible area.

    Raises:
        ImageRejected: ``too_small``.
        ValueError: invalid ``size`` / ``fit`` / ``alpha`` / ``background``.
    """
    if int(size) < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    if fit not in _FITS:
        raise ValueError(f"fit must be one of {', '.join(_FITS)}, got {fit!r}")
    size = int(size)
    keep = alpha == "keep"
    if keep or alpha == "composite":
        bg = tuple(int(c) for c in background)[:3]
        if len(bg) != 3 or not all(0 <= c <= 255 for c in bg):
            raise ValueError(f"background must be an (r, g, b) colour with 0-255 values, got {background!r}")
    else:
        try:
            bg = parse_color(alpha)
        except ValueError as e:
            raise ValueError(f"alpha must be 'keep', 'composite' or a colour: {e}") from None
    if img.mode not in ("RGB", "RGBA"):
        img = _to_rgb_or_rgba(img)
    min_side = default_min_side(size) if min_side is None else int(min_side)
    ow, oh = img.info.get(_ORIGINAL_SIZE_KEY, img.size)
    if min(ow, oh) < min_side:
        raise ImageRejected(
            "too_small", f"{ow}x{oh} is smaller than the minimum side of {min_side} px (--min-side)"
        )
    w, h = img.size
    has_alpha = img.mode == "RGBA"
    if fit == "crop":
        m = min(w, h)
        left, top = (w - m) // 2, (h - m) // 2
        box: tuple[int, int, int, int] | None = (left, top, left + m, top + m)
        target = (size, size)
    else:
        box = None
        scale = size / max(w, h)
        target = (max(1, min(size, round(w * scale))), max(1, min(size, round(h * scale))))
    # Premultiply once, resize, and keep premultiplied values for the compositing below.
    src = img.convert("RGBa") if has_alpha else img
    arr = np.asarray(_resize(src, target, box))
    th, tw = arr.shape[:2]
    oy, ox = (size - th) // 2, (size - tw) // 2
    if keep:
        out = np.zeros((size, size, 4), dtype=np.uint8)
        if has_alpha:
            a = arr[..., 3:4].astype(np.uint32)
            # Un-premultiply with rounding; fully transparent pixels become (0, 0, 0, 0).
            rgb = (arr[..., :3].astype(np.uint32) * 255 + a // 2) // np.maximum(a, 1)
            out[oy : oy + th, ox : ox + tw, :3] = np.minimum(rgb, 255)
            out[oy : oy + th, ox : ox + tw, 3] = arr[..., 3]
        else:
            out[oy : oy + th, ox : ox + tw, :3] = arr
            out[oy : oy + th, ox : ox + tw, 3] = 255
        return out
    out = np.empty((size, size, 3), dtype=np.uint8)
    out[...] = np.asarray(bg, dtype=np.uint8)
    if has_alpha:
        # Premultiplied "over": C = P + bg * (1 - a).
        inv = 255 - arr[..., 3:4].astype(np.uint32)
        comp = arr[..., :3].astype(np.uint32) * 255 + np.asarray(bg, dtype=np.uint32) * inv
        out[oy : oy + th, ox : ox + tw] = np.minimum((comp + 127) // 255, 255)
    else:
        out[oy : oy + th, ox : ox + tw] = arr
    return out


def describe(reason: str) -> str:
    """The long description of a reason code (for reports)."""
    return REASONS.get(reason, reason)
