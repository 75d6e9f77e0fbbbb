"""Image arrays <-> files (stills and animations), sample grids, and alpha cleanup.

Conventions used across AvatarForge:
- NumPy images are ``(H, W, C)`` uint8, C = 3 (RGB) or 4 (RGBA, straight alpha).
- Torch images are ``(B, C, H, W)`` float in [-1, 1] (what generators output).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, ImageSequence

from avatarforge.fileio import atomic_write_bytes

__all__ = [
    "ANIMATION_FORMATS",
    "as_rgba_frames",
    "check_image",
    "checkerboard",
    "clean_alpha",
    "composite_over",
    "from_uint8",
    "load_animation",
    "make_grid",
    "network_input",
    "save_animation",
    "save_image",
    "save_webm",
    "to_uint8",
]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) float in [-1, 1] -> (B, H, W, C) uint8 (rounded, clamped)."""
    x = images.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, C) or (H, W, C) uint8 -> (B, C, H, W) float32 in [-1, 1]."""
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[None]
    t = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float()
    return t.div(127.5).sub(1)


def network_input(images: np.ndarray, channels: int) -> torch.Tensor:
    """``(N, h, w, 3 or 4)`` uint8 -> ``(N, channels, h, w)`` float32 in [-1, 1], the input of an
    image-to-image network with ``channels`` inputs: RGB given to an RGBA network gets an
    opaque alpha, RGBA given to an RGB one drops its alpha.

    Raises:
        ValueError: ``images`` is not an ``(N, h, w, 3 or 4)`` uint8 array.
    """
    if (
        not isinstance(images, np.ndarray)
        or images.ndim != 4
        or images.shape[-1] not in (3, 4)
        or images.dtype != np.uint8
    ):
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise ValueError(f"images must be (N, h, w, 3 or 4) uint8, got {got}")
    # A copy: the images may be a read-only memory map (a cached pool), which torch cannot wrap.
    x = torch.from_numpy(np.array(images, dtype=np.uint8)).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    if x.shape[1] == channels:
        return x
    if channels == 4:
        return torch.cat([x, torch.ones_like(x[:, :1])], 1)
    return x[:, :3]


def checkerboard(h: int, w: int, cell: int = 8) -> np.ndarray:
    """(H, W, 3) uint8 light-grey checkerboard, the usual backdrop for transparent images."""
    yy, xx = np.mgrid[0:h, 0:w]
    board = ((yy // cell + xx // cell) % 2).astype(np.uint8)
    return np.where(board[..., None] == 1, 204, 255).astype(np.uint8).repeat(3, axis=2)


def make_grid(
    images: np.ndarray | torch.Tensor,
    nrow: int | None = None,
    padding: int = 2,
    pad_value: int = 255,
    alpha_backdrop: str = "keep",
) -> np.ndarray:
    """Tile images into one (H, W, C) uint8 grid.

    Args:
        images: (N, H, W, C) uint8 or (N, C, H, W) float tensor in [-1, 1].
        nrow: images per row (default: near-square).
        alpha_backdrop: for RGBA input, ``"keep"`` keeps the alpha channel, ``"checker"``
            composites onto a checkerboard so transparency is visible in any viewer.
    """
    arr = to_uint8(images) if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.ndim != 4 or arr.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, C) uint8 images, got {arr.dtype} {arr.shape}")
    n, h, w, c = arr.shape
    if c == 4 and alpha_backdrop == "checker":
        a = arr[..., 3:4].astype(np.float32) / 255.0
        board = checkerboard(h, w)[None].astype(np.float32)
        arr = (arr[..., :3] * a + board * (1 - a)).round().astype(np.uint8)
        c = 3
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol_rows = math.ceil(n / nrow)
    gh = ncol_rows * h + (ncol_rows + 1) * padding
    gw = nrow * w + (nrow + 1) * padding
    grid = np.full((gh, gw, c), pad_value, dtype=np.uint8)
    if c == 4:
        grid[..., 3] = 0 if pad_value == 0 else 255
    for i in range(n):
        r, col = divmod(i, nrow)
        y = padding + r * (h + padding)
        x = padding + col * (w + padding)
        grid[y : y + h, x : x + w] = arr[i]
    return grid


def save_image(path: str | os.PathLike, image: np.ndarray, **pil_kwargs) -> Path:
    """Write an (H, W, C) uint8 array as PNG/WebP/JPEG (by suffix), atomically."""
    path = Path(path)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None].repeat(3, axis=2)
    mode = {3: "RGB", 4: "RGBA", 1: "L"}[arr.shape[2]]
    img = Image.fromarray(arr[..., 0] if mode == "L" else arr, mode)
    fmt = {".png": "PNG", ".webp": "WEBP", ".jpg": "JPEG", ".jpeg": "JPEG", ".gif": "GIF"}.get(
        path.suffix.lower(), "PNG"
    )
    if fmt == "JPEG" and mode == "RGBA":
        img = img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format=fmt, **pil_kwargs)
    return atomic_write_bytes(path, buf.getvalue())


_3X3 = np.ones((3, 3), np.uint8)


def clean_alpha(
    image: np.ndarray, solid: int = 128, edge: int | None = None, max_hole: float = 0.005
) -> np.ndarray:
    """A generated RGBA avatar's alpha made clean: one silhouette, opaque inside, soft edges kept.

    A generator draws alpha like any other channel, so its output has faint specks away from
    the character (grey dots on stream) and a body at alpha 249-254 instead of 255. Here:

    1. the body is the largest 8-connected region of ``alpha >= solid``; enclosed holes in it
       smaller than ``max_hole`` of the image are filled (colour inpainted from around them);
    2. alpha is kept only within ``edge`` pixels of the body (the antialiased rim; default one
       pixel per 64 px of image side) and only where that rim connects to the body: everything
       else becomes fully transparent, so ``alpha > 0`` is one 8-connected region;
    3. the body eroded by one pixel becomes fully opaque (255); the rim keeps its soft alpha.

    ``image``: ``(H, W, 4)`` or ``(N, H, W, 4)`` uint8 (RGB images are returned unchanged).
    An image with no pixel at ``alpha >= solid`` keeps the largest region of ``alpha > 0``.
    """
    a = np.asarray(image)
    if a.ndim == 4:
        return np.stack([clean_alpha(x, solid, edge, max_hole) for x in a]) if len(a) else a.copy()
    if a.ndim != 3 or a.shape[-1] != 4:
        return a.copy()
    if a.dtype != np.uint8:
        raise TypeError(f"clean_alpha takes uint8 images, got {a.dtype}")
    alpha = a[..., 3]
    h, w = alpha.shape
    edge = max(1, round(max(h, w) / 64)) if edge is None else int(edge)
    core = alpha >= solid
    if not core.any():
        core = alpha > 0
        if not core.any():
            return a.copy()
    body = _largest_component(core)
    # Enclosed holes: regions of ~body that do not reach the border.
    _, lab, stats, _ = cv2.connectedComponentsWithStats((~body).astype(np.uint8), connectivity=4)
    # One lookup table over the labels, not one full-image pass per region: a noisy alpha
    # has hundreds of little regions, and this runs on every generated avatar.
    small = stats[:, cv2.CC_STAT_AREA] <= max_hole * h * w
    small[0] = False  # label 0 is the body itself
    small[np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])] = False  # reaches the border
    holes = small[lab]
    body |= holes
    near = cv2.dilate(body.astype(np.uint8), _3X3, iterations=edge).astype(bool)
    keep = _component_of(body | (near & (alpha > 0)), body)
    out = a.copy()
    out[..., 3] = np.where(keep, alpha, 0)
    out[cv2.erode(body.astype(np.uint8), _3X3).astype(bool), 3] = 255
    if holes.any():
        rgb = np.ascontiguousarray(out[..., :3])
        out[..., :3] = np.where(
            holes[..., None], cv2.inpaint(rgb, holes.astype(np.uint8), 2, cv2.INPAINT_TELEA), rgb
        )
    return out


def _largest_component(mask: np.ndarray) -> np.ndarray:
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(mask, dtype=bool)
    return lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def _component_of(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The 8-connected component of ``mask`` that holds ``seed`` (a connected subset of it)."""
    _, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return lab == lab[seed][0]


def composite_over(
    images: np.ndarray, colour: tuple[int, int, int] | np.ndarray = (255, 255, 255)
) -> np.ndarray:
    """Straight-alpha RGBA ``(..., 4)`` uint8 over a background -> RGB ``(..., 3)``; RGB passes through.

    ``colour``: an ``(r, g, b)`` colour, or a uint8 ``(..., 3)`` background image that
    broadcasts against the images.

    ``(rgb * a + colour * (255 - a) + 127) // 255`` in integers: exact and deterministic
    (``rgb * a + c * (255 - a) <= 255 * 255``, so the sum plus the rounding term fits uint16).
    """
    if images.shape[-1] != 4:
        return images
    bg = np.asarray(colour, np.uint16)
    rgb, a = images[..., :3].astype(np.uint16), images[..., 3:4].astype(np.uint16)
    return ((rgb * a + bg * (255 - a) + 127) // 255).astype(np.uint8)


# ----------------------------------------------------------------------------- validation
def check_image(image: object, name: str = "image") -> np.ndarray:
    """Return ``image`` if it is an ``(H, W, 3|4)`` uint8 array, else raise.

    Raises:
        TypeError: not a NumPy array.
        ValueError: wrong dtype, rank, channel count or an empty side.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a NumPy (H, W, 3|4) uint8 array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(
            f"{name} must be uint8 (0-255), got {image.dtype}; convert with np.clip(...).astype(np.uint8)"
        )
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"{name} must have shape (H, W, 3) RGB or (H, W, 4) RGBA, got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name} is empty: shape {image.shape}")
    return image


# ----------------------------------------------------------------------------- animation files
#: File suffix -> animation format written by :func:`save_animation`.
ANIMATION_FORMATS: dict[str, str] = {".png": "apng", ".apng": "apng", ".webp": "webp", ".gif": "gif"}


def _rgba(frame: np.ndarray, i: int) -> np.ndarray:
    check_image(frame, f"frame {i}")
    if frame.shape[2] == 4:
        return frame
    out = np.empty((*frame.shape[:2], 4), np.uint8)
    out[..., :3] = frame
    out[..., 3] = 255
    return out


def as_rgba_frames(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    if len(frames) == 0:
        raise ValueError("no frames to export")
    return [_rgba(np.asarray(f), i) for i, f in enumerate(frames)]


def _same_size(imgs: list[np.ndarray]) -> None:
    sizes = {f.shape[:2] for f in imgs}
    if len(sizes) > 1:
        raise ValueError(
            f"animation frames must all have the same size, got {sorted(sizes)}; "
            "resize them first or use a sprite sheet"
        )


def _gif_frame(rgba: np.ndarray, threshold: int) -> Image.Image:
    """RGBA -> palette image: <= 255 colours, index 255 = transparent (alpha < threshold)."""
    q = Image.fromarray(np.ascontiguousarray(rgba[..., :3]), "RGB").quantize(
        colors=255, method=Image.Quantize.MEDIANCUT
    )
    idx = np.asarray(q).copy()
    idx[rgba[..., 3] < threshold] = 255
    pal = (q.getpalette() or [])[: 255 * 3]
    pal += [0] * (768 - len(pal))
    out = Image.fromarray(idx, "P")
    out.putpalette(pal)
    out.info["transparency"] = 255
    return out


def save_animation(
    path: str | os.PathLike,
    frames: Sequence[np.ndarray],
    fps: float = 12.0,
    *,
    loop: int = 0,
    format: str | None = None,
    alpha_threshold: int = 128,
    lossless: bool = True,
) -> Path:
    """Write an animation; the format follows the suffix (``.png``/``.apng`` -> APNG,
    ``.webp``, ``.gif``) unless ``format`` (``apng``, ``webp``, ``gif``) is given.

    Args:
        frames: same-size (H, W, 3|4) uint8 arrays.
        fps: frames per second, 0.1-100.
        loop: number of repetitions, 0 = forever.
        alpha_threshold: GIF only: alpha below this becomes transparent (GIF alpha is binary).
        lossless: WebP only: lossless (exact) or lossy (quality 90) compression.

    Note: APNG and GIF writers merge identical consecutive frames into one longer frame.
    """
    path = Path(path)
    imgs = as_rgba_frames(frames)
    _same_size(imgs)
    fmt = format or ANIMATION_FORMATS.get(path.suffix.lower())
    if fmt not in ("apng", "webp", "gif"):
        raise ValueError(
            f"cannot tell the animation format of {path.name!r}; use a .png/.apng, .webp or .gif name "
            "or pass format='apng'|'webp'|'gif'"
        )
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0.1 <= fps <= 100:
        raise ValueError(f"fps must be a number from 0.1 to 100, got {fps!r}")
    if isinstance(loop, bool) or not isinstance(loop, int) or loop < 0:
        raise ValueError(f"loop must be an integer >= 0 (0 = forever), got {loop!r}")
    duration = round(1000.0 / fps)
    if fmt == "apng":
        pil = [Image.fromarray(f, "RGBA") for f in imgs]
        # disposal=1 (clear to transparent) + blend=0 (replace): each frame stands alone.
        options: dict[str, Any] = {"format": "PNG", "disposal": 1, "blend": 0}
    elif fmt == "webp":
        pil = [Image.fromarray(f, "RGBA") for f in imgs]
        options = {"format": "WEBP", "lossless": lossless, "quality": 100 if lossless else 90, "method": 4}
    else:
        if not 1 <= int(alpha_threshold) <= 255:
            raise ValueError(f"alpha_threshold must be from 1 to 255, got {alpha_threshold}")
        pil = [_gif_frame(f, int(alpha_threshold)) for f in imgs]
        # disposal=2 (restore to background): transparent areas don't show the last frame.
        options = {"format": "GIF", "disposal": 2, "transparency": 255, "optimize": False}
    buf = io.BytesIO()
    pil[0].save(buf, save_all=True, append_images=pil[1:], duration=duration, loop=loop, **options)
    return atomic_write_bytes(path, buf.getvalue())


def save_webm(
    path: str | os.PathLike,
    frames: Sequence[np.ndarray],
    fps: float = 30.0,
    *,
    lossless: bool = False,
    crf: int = 20,
) -> Path:
    """Write frames as a WebM video: VP9 with an alpha channel (``yuva420p``), atomically.

    Encoded by libvpx-vp9 through PyAV (the ``av`` package, FFmpeg's libraries with their
    own libvpx), the encoder browsers, OBS and ``ffmpeg -c:v libvpx-vp9`` read transparency
    from (the stream is tagged ``alpha_mode=1``). Not OpenCV's writer, whose FFmpeg back end
    does not know the VP9 tag ("tag 0x30395056/'VP90' is not supported").

    Args:
        frames: same-size (H, W, 3|4) uint8 arrays (RGB frames get an opaque alpha).
        fps: frames per second, 0.1-100.
        lossless: VP9 lossless (exact up to the YUV conversion, larger files), else
            constant quality ``crf`` (0-63, lower = better; 20 is visually clean).

    Raises:
        ImportError: PyAV is not installed (the message names the install command).
    """
    try:
        import av
    except ImportError as e:
        raise ImportError(
            "writing .webm needs PyAV (FFmpeg with libvpx): pip install av (or 'avatarforge[video]'); "
            "or write .webp/.png/.gif, which keep alpha too"
        ) from e
    from fractions import Fraction

    path = Path(path)
    imgs = as_rgba_frames(frames)
    _same_size(imgs)
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0.1 <= fps <= 100:
        raise ValueError(f"fps must be a number from 0.1 to 100, got {fps!r}")
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 63:
        raise ValueError(f"crf must be an integer from 0 to 63, got {crf!r}")
    h, w = imgs[0].shape[:2]
    buf = io.BytesIO()
    with av.open(buf, "w", format="webm") as container:
        stream = container.add_stream("libvpx-vp9", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuva420p"
        # auto-alt-ref off: libvpx's alternate reference frames drop the alpha plane.
        opts = {"auto-alt-ref": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}
        opts.update({"lossless": "1"} if lossless else {"crf": str(crf), "b": "0"})
        stream.options = opts
        for f in imgs:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgba")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())  # flush the encoder
    return atomic_write_bytes(path, buf.getvalue())


def load_animation(path: str | os.PathLike) -> tuple[list[np.ndarray], list[int]]:
    """Read an animation back as full RGBA frames and their durations in ms."""
    frames, durations = [], []
    with Image.open(path) as im:
        for fr in ImageSequence.Iterator(im):
            frames.append(np.asarray(fr.convert("RGBA")).copy())
            durations.append(int(fr.info.get("duration", 0)))
    return frames, durations
