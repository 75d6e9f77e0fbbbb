"""A corpus of valid-but-odd and broken image files for the ingest tests.

Every valid image has distinct content (so exact dedupe keeps them all) and a known
expected appearance that tests/data/test_prepare.py checks against the ingested pixels.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Relative names (under Corpus.root) of the valid files; zip members are "archive.zip::name".
VALID = [
    "rgba.png",
    "palette_transparent.png",
    "palette.png",
    "gray.png",
    "gray_alpha.png",
    "gray16.png",
    "rgb_trns.png",
    "cmyk.jpg",
    "progressive.jpg",
    "exif_rotated.jpg",
    "alpha.webp",
    "image.bmp",
    "animated.gif",
    "image.tiff",
    "png_named.jpg",
    "UPPER.PNG",
    "portrait.png",
    "nested/deeper/inner.png",
    "archive.zip::photos/inzip.png",
    "ünïcødé_画像.png",
    "bilevel.png",
    "big.jpg",
]

# Broken inputs and the reason code each must be reported with.
BROKEN = {
    "zero.png": "empty",
    "truncated.png": "truncated",
    "truncated.jpg": "truncated",
    "random.png": "not_an_image",
    "text.jpg": "not_an_image",
    "page.webp": "not_an_image",
    "bomb.png": "too_large",
    "tiny.png": "too_small",
    "broken_link.png": "broken_symlink",
    "loop.png": "broken_symlink",
    "folder.png": "is_directory",
    "pipe.png": "not_a_file",
    "corrupt.zip": "corrupt",
    "archive.zip::photos/bad.png": "corrupt",
    "cut.webp": "truncated",
}

# Present but never reported: hidden files, macOS metadata, non-image names.
IGNORED = [".hidden.png", "__MACOSX/._junk.png", "notes.txt", "archive.zip::__MACOSX/._inzip.png"]


@dataclass
class Corpus:
    root: Path
    valid: list[str] = field(default_factory=lambda: list(VALID))
    broken: dict[str, str] = field(default_factory=lambda: dict(BROKEN))

    def source(self, rel: str) -> str:
        """The source name prepare_dataset reports for a corpus entry."""
        if "::" in rel:
            archive, member = rel.split("::", 1)
            return f"{os.path.normpath(self.root / archive)}::{member}"
        return os.path.normpath(self.root / rel)


def solid(color, size=(40, 40), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def noise(seed: int, size: int = 64) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def smooth(seed: int, size: int = 96) -> Image.Image:
    """A smooth random picture (blurred blobs): survives JPEG, like a photo does."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)


def bomb_png(side: int = 10_000) -> bytes:
    """A valid 1-bit PNG of side x side pixels that compresses to a few KB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    row = b"\x00" * (1 + side // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def build_corpus(root: Path) -> Corpus:
    root.mkdir(parents=True, exist_ok=True)

    def w(rel: str, data: bytes) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)

    # --- valid ---------------------------------------------------------------------------
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:, :20] = (255, 0, 0, 255)
    rgba[:, 20:] = (0, 255, 0, 0)  # invisible green: must not bleed into the red edge
    w("rgba.png", encode(Image.fromarray(rgba, "RGBA"), "PNG"))

    pal = Image.new("P", (40, 40), 1)
    pal.putpalette([0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    pal.paste(0, (0, 0, 40, 20))  # top half: index 0, transparent
    w("palette_transparent.png", encode(pal, "PNG", transparency=0))

    pal2 = Image.new("P", (40, 40), 0)
    pal2.putpalette([10, 200, 30] + [0] * (256 * 3 - 3))
    w("palette.png", encode(pal2, "PNG"))

    w("gray.png", encode(solid(77, mode="L"), "PNG"))
    w("gray_alpha.png", encode(solid((200, 128), mode="LA"), "PNG"))

    g16 = np.full((40, 40), 32768, np.uint16)
    g16[:, :20] = 65535
    img16 = Image.fromarray(g16)
    assert img16.mode.startswith("I;16")
    w("gray16.png", encode(img16, "PNG"))

    trns = np.full((40, 40, 3), (240, 230, 10), np.uint8)
    trns[:20] = (9, 9, 9)  # the tRNS colour: transparent
    w("rgb_trns.png", encode(Image.fromarray(trns), "PNG", transparency=(9, 9, 9)))

    w("cmyk.jpg", encode(solid((0, 200, 255, 0), mode="CMYK"), "JPEG", quality=95))  # RGB ~(255, 55, 0)
    w("progressive.jpg", encode(smooth(1), "JPEG", quality=92, progressive=True))

    rot = np.zeros((40, 60, 3), np.uint8)  # stored landscape: left black, right white
    rot[:, 30:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: black on top
    w("exif_rotated.jpg", encode(Image.fromarray(rot), "JPEG", quality=95, exif=exif.tobytes()))

    wa = np.zeros((40, 40, 4), np.uint8)
    wa[20:] = (250, 10, 200, 255)
    w("alpha.webp", encode(Image.fromarray(wa, "RGBA"), "WEBP", lossless=True))

    w("image.bmp", encode(solid((200, 100, 50)), "BMP"))
    frames = [solid((255, 0, 0)), solid((0, 0, 255))]
    w("animated.gif", encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0))
    w("image.tiff", encode(solid((12, 34, 56)), "TIFF"))
    w("png_named.jpg", encode(solid((90, 80, 70)), "PNG"))
    w("UPPER.PNG", encode(solid((33, 66, 99)), "PNG"))

    portrait = np.zeros((80, 40, 3), np.uint8)
    portrait[:20] = (255, 0, 0)
    portrait[20:60] = (0, 255, 0)
    portrait[60:] = (0, 0, 255)
    w("portrait.png", encode(Image.fromarray(portrait), "PNG"))

    w("nested/deeper/inner.png", encode(solid((111, 122, 133)), "PNG"))
    w("ünïcødé_画像.png", encode(solid((150, 160, 170)), "PNG"))

    bilevel = Image.new("1", (40, 40), 0)
    bilevel.paste(1, (20, 0, 40, 40))
    w("bilevel.png", encode(bilevel, "PNG"))

    w("big.jpg", encode(solid((30, 160, 90), size=(1200, 900)), "JPEG", quality=95))

    # --- archive with a good, a corrupt and an ignored member -----------------------------
    good = encode(solid((44, 55, 66)), "PNG")
    bad = encode(noise(7), "PNG")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("photos/inzip.png", good, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("photos/bad.png", bad, compress_type=zipfile.ZIP_STORED)
        zf.writestr("__MACOSX/._inzip.png", b"\x00\x05\x16\x07 AppleDouble")
        zf.writestr("readme.txt", b"hello")
    data = bytearray(buf.getvalue())
    at = bytes(data).index(bad) + len(bad) // 2
    data[at] ^= 0xFF  # damaged member: CRC mismatch when read
    w("archive.zip", bytes(data))

    # --- broken ----------------------------------------------------------------------------
    w("zero.png", b"")
    png = encode(noise(1), "PNG")
    w("truncated.png", png[: len(png) // 2])
    jpg = encode(noise(2), "JPEG", quality=90)
    w("truncated.jpg", jpg[: len(jpg) // 2])
    w("random.png", np.random.default_rng(3).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    w("text.jpg", b"this is not an image, just some text\n" * 20)
    w(
        "page.webp",
        b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>nope</body></html>\n",
    )
    w("bomb.png", bomb_png())
    w("tiny.png", encode(solid((1, 2, 3), size=(8, 8)), "PNG"))
    webp = encode(noise(4), "WEBP", quality=80)
    w("cut.webp", webp[: len(webp) // 2])
    os.symlink(root / "does-not-exist.png", root / "broken_link.png")
    os.symlink(root / "loop.png", root / "loop.png")
    (root / "folder.png").mkdir()
    os.mkfifo(root / "pipe.png")
    w("corrupt.zip", b"PK\x03\x04" + b"\x00" * 10 + b"definitely not a zip archive")

    # --- ignored ---------------------------------------------------------------------------
    w(".hidden.png", b"garbage")
    w("__MACOSX/._junk.png", b"garbage")
    w("notes.txt", b"some notes")
    return Corpus(root)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Corpus:
    """The full odd-file corpus (built once per test session)."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("the corpus needs POSIX symlinks and FIFOs")
    return build_corpus(tmp_path_factory.mktemp("corpus") / "src")
