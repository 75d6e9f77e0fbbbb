"""Image sources for evaluation: a stream of uint8 RGB batches from anything evaluable.

:func:`open_source` turns what the user named into an :class:`ImageSource`:

- a **packed data set** directory (``manifest.json``): its images, RGBA composited onto white
  (as ``PackedDataset(channels=3)``); with ``n`` smaller than the set, a seeded random
  subset;
- a **folder of images** (PNG, JPEG, WebP, ... searched recursively, sorted by path);
- a **run directory or checkpoint** of a trained model: ``n`` samples from its EMA
  generator (GANs) or decoder (VAEs), latents drawn from ``seed``;
- a **generator object** (any module with the GAN generator interface).

Every source yields ``(B, H, W, 3)`` uint8 batches and says how many images it yields.
Sources with fixed content expose a :attr:`~ImageSource.content_hash` (so features of
reference sets are cached); generated samples have none.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from avatarforge.imageio import composite_over

__all__ = [
    "FolderSource",
    "GeneratorSource",
    "ImageSource",
    "PackedSource",
    "SourceError",
    "composite_on_white",
    "is_model_path",
    "open_source",
]


class SourceError(ValueError):
    """A source that cannot be evaluated (the message names the input and the fix)."""


def composite_on_white(images: np.ndarray) -> np.ndarray:
    """(..., 4) straight-alpha uint8 -> (..., 3) uint8 on white (exact integer rounding): how
    transparent images are measured."""
    return composite_over(images)


def _to_rgb(images: np.ndarray) -> np.ndarray:
    if images.shape[-1] == 4:
        return composite_on_white(images)
    if images.shape[-1] == 1:
        return np.repeat(images, 3, axis=-1)
    return images


def _subset(count: int, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` items out of ``count`` (all when ``n`` is None or >= count)."""
    if n is None or n >= count:
        return np.arange(count)
    rng = np.random.Generator(np.random.PCG64(seed))
    return np.sort(rng.choice(count, size=n, replace=False))


class ImageSource(ABC):
    """A finite stream of RGB images.

    Attributes:
        kind: ``"packed"``, ``"folder"`` or ``"generator"``.
        path: where it came from (None for an in-memory generator).
    """

    kind: str = ""
    path: Path | None = None

    @abstractmethod
    def __len__(self) -> int:
        """Number of images :meth:`batches` yields."""

    @property
    @abstractmethod
    def resolution(self) -> int:
        """Image side in pixels (height; sources yield square images)."""

    @property
    def content_hash(self) -> str | None:
        """Hash of exactly the images yielded, or None (generated samples)."""
        return None

    @abstractmethod
    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """``(B, H, W, 3)`` uint8 batches (the last may be smaller)."""

    def info(self) -> dict[str, Any]:
        """Description recorded in results."""
        return {
            "kind": self.kind,
            "path": str(self.path) if self.path else None,
            "images": len(self),
            "resolution": self.resolution,
            "content_hash": self.content_hash,
        }


# ----------------------------------------------------------------------------- packed
class PackedSource(ImageSource):
    """A packed data set (see :mod:`avatarforge.data.packed`).

    Args:
        path: data set directory.
        n: use a seeded random subset of this many images (default all).
        seed: subset seed.

    The content hash covers the per-item pixel hashes of the manifest and the chosen subset.
    """

    kind = "packed"

    def __init__(self, path: str | os.PathLike, n: int | None = None, seed: int = 0) -> None:
        from avatarforge.data.dataset import PackedDataset

        self.path = Path(path)
        self.dataset = PackedDataset(self.path, channels=3)
        if len(self.dataset) == 0:
            raise SourceError(f"{self.path}: the data set is empty")
        self.indices = _subset(len(self.dataset), n, seed)
        self._hash: str | None = None

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def resolution(self) -> int:
        return self.dataset.size

    @property
    def content_hash(self) -> str:
        if self._hash is None:
            h = hashlib.sha256(b"packed-v1\n")
            items = self.dataset.manifest.get("items", [])
            hashes = [str(it.get("sha256", "")) for it in items]
            if len(hashes) != len(self.dataset) or not all(hashes):
                # No per-item hashes: hash the pixels themselves.
                for s in range(0, len(self.dataset), 1024):
                    h.update(np.ascontiguousarray(self.dataset.images[s : s + 1024]).tobytes())
            else:
                h.update("\n".join(hashes).encode())
            h.update(f"\nrgb-on-white {self.dataset.stored_channels}\n".encode())
            if len(self.indices) != len(self.dataset):
                h.update(np.ascontiguousarray(self.indices, dtype=np.int64).tobytes())
            self._hash = h.hexdigest()
        return self._hash

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        for s in range(0, len(self.indices), batch_size):
            yield self.dataset.images_uint8(self.indices[s : s + batch_size])

    def batches_with_labels(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Like :meth:`batches`, with the ``(B, A)`` float labels (NaN = unknown)."""
        for s in range(0, len(self.indices), batch_size):
            idx = self.indices[s : s + batch_size]
            yield self.dataset.images_uint8(idx), self.dataset.labels[idx]


# ----------------------------------------------------------------------------- folder
def _list_images(root: Path) -> list[Path]:
    from avatarforge.data.imagefile import IMAGE_EXTENSIONS

    return sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith(".")
    )


class FolderSource(ImageSource):
    """Image files under a folder (recursive, sorted by relative path).

    Args:
        path: the folder.
        n: use a seeded random subset of this many files (default all).
        seed: subset seed.
        size: side to bring images to; default the size of the first image. Images that
            are already ``size`` x ``size`` are used exactly as decoded (no resampling);
            others are centre-cropped to a square and resized (antialiased).

    Decoding follows :func:`avatarforge.data.imagefile.load_image` (EXIF orientation applied,
    first frame of animations); transparency is composited onto white. Unreadable files
    raise :class:`SourceError` naming the file. The content hash covers each file's relative
    path, size and modification time, plus ``size``.
    """

    kind = "folder"

    def __init__(
        self, path: str | os.PathLike, n: int | None = None, seed: int = 0, size: int | None = None
    ) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise SourceError(f"{self.path} is not a directory")
        files = _list_images(self.path)
        if not files:
            raise SourceError(
                f"{self.path}: no image files (.png, .jpg, .webp, ...) found; for a packed data set the "
                "directory must contain manifest.json"
            )
        self.files = [files[i] for i in _subset(len(files), n, seed)]
        self.size = int(size) if size is not None else self._first_size()
        self._hash: str | None = None

    def _first_size(self) -> int:
        img = self._decode(self.files[0])
        h, w = img.shape[:2]
        if h != w:
            raise SourceError(
                f"{self.files[0]} is {w}x{h}, not square; pass size=S (CLI: --size S) to centre-crop "
                "and resize every image to S x S"
            )
        return h

    def __len__(self) -> int:
        return len(self.files)

    @property
    def resolution(self) -> int:
        return self.size

    @property
    def content_hash(self) -> str:
        if self._hash is None:
            h = hashlib.sha256(b"folder-v1\n")
            h.update(f"size={self.size}\n".encode())
            for f in self.files:
                st = f.stat()
                h.update(f"{f.relative_to(self.path).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
            self._hash = h.hexdigest()
        return self._hash

    def _decode(self, f: Path) -> np.ndarray:
        from avatarforge.data.imagefile import ImageRejected, load_image

        try:
            return np.asarray(load_image(f))
        except ImageRejected as e:
            raise SourceError(f"{f}: {e.message}; remove the file or fix it") from None

    def _load(self, f: Path) -> np.ndarray:
        arr = self._decode(f)
        if arr.shape[:2] != (self.size, self.size):
            from PIL import Image

            from avatarforge.data.imagefile import normalize_image

            arr = normalize_image(Image.fromarray(arr), self.size, fit="crop", alpha="keep", min_side=0)
        return _to_rgb(arr if arr.ndim == 3 else arr[..., None])

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        for s in range(0, len(self.files), batch_size):
            yield np.stack([self._load(f) for f in self.files[s : s + batch_size]])


# ----------------------------------------------------------------------------- generator
def is_model_path(path: str | os.PathLike) -> bool:
    """True if ``path`` is a run directory or checkpoint that holds a generator or VAE."""
    from avatarforge.runs import QUICKSTART_MANIFEST, QUICKSTART_STATE, ROLE_PREFIXES

    p = Path(path)
    if any((p / f"{ROLE_PREFIXES[r]}config.json").is_file() for r in ("ema", "g", "vae", "vae_ema")):
        return True
    if (p / QUICKSTART_MANIFEST).is_file() or (p / QUICKSTART_STATE).is_file():
        return True
    return (p / "checkpoints").is_dir() or p.name.startswith("ckpt-")


def _forward_kwargs(G: nn.Module, generator: torch.Generator) -> dict[str, Any]:
    """RNG keyword arguments the generator's forward accepts (StyleGAN noise/mixing)."""
    try:
        params = inspect.signature(G.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {k: generator for k in ("noise_generator", "mixing_generator") if k in params}


class GeneratorSource(ImageSource):
    """``n`` samples of a generator (GAN generator or VAE decoder interface).

    Args:
        generator: the model (``G(z, labels=None, codes=None, truncation_psi=1.0)``,
            ``G.sample_z``; see :mod:`avatarforge.models.gan_api`).
        n: number of samples.
        seed: seeds the latents (and labels/codes) with a CPU ``torch.Generator``, so the
            same seed gives the same samples on any device.
        truncation: truncation psi (1 = none).
        labels: optional ``(n, L)`` class indices for conditional models (default: random
            known classes, uniform).
        device: where to run the generator (default: where its parameters are).
        path: recorded in results.
    """

    kind = "generator"

    def __init__(
        self,
        generator: nn.Module,
        n: int,
        *,
        seed: int = 0,
        truncation: float = 1.0,
        labels: torch.Tensor | None = None,
        device: str | torch.device | None = None,
        path: str | os.PathLike | None = None,
    ) -> None:
        if n < 1:
            raise SourceError(f"n must be >= 1 samples, got {n}")
        self.G = generator
        self.n = int(n)
        self.seed = int(seed)
        self.truncation = float(truncation)
        self.labels = labels
        if labels is not None and labels.shape[0] != n:
            raise SourceError(f"labels must have one row per sample ({n}), got {tuple(labels.shape)}")
        params = list(generator.parameters())
        self.device = (
            torch.device(device)
            if device is not None
            else (params[0].device if params else torch.device("cpu"))
        )
        self.path = Path(path) if path is not None else None
        self.last_labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.n

    @property
    def resolution(self) -> int:
        return int(self.G.resolution)

    def _call(self, kw: dict[str, Any], rng: torch.Generator) -> torch.Tensor:
        kw = {k: v for k, v in kw.items() if v is not None}
        if self.truncation != 1.0:
            kw["truncation_psi"] = self.truncation
        return self.G(**kw, **_forward_kwargs(self.G, rng))

    @torch.no_grad()
    def float_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """``(images (B, C, H, W) float in ~[-1, 1], labels (B, L) or None)`` per batch."""
        from avatarforge.models.gan_api import sample_inputs

        was_training = self.G.training
        self.G.eval()
        rng = torch.Generator().manual_seed(self.seed)
        try:
            for s in range(0, self.n, batch_size):
                b = min(batch_size, self.n - s)
                lab = self.labels[s : s + b].to(self.device) if self.labels is not None else None
                kw = sample_inputs(self.G, b, labels=lab, generator=rng, device=self.device)  # type: ignore[arg-type]
                yield self._call(kw, rng).float(), kw.get("labels")
        finally:
            self.G.train(was_training)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        from avatarforge.imageio import to_uint8

        for x, _ in self.float_batches(batch_size):
            yield _to_rgb(to_uint8(x))

    def info(self) -> dict[str, Any]:
        return {
            **super().info(),
            "model": getattr(self.G, "registry_name", type(self.G).__name__),
            "seed": self.seed,
            "truncation": self.truncation,
        }


# ----------------------------------------------------------------------------- dispatch
def _run_label_info(path: Path) -> dict[str, Any]:
    """Label names (and class names when known) a run's model was conditioned on."""
    from avatarforge.runs import read_training_state

    out: dict[str, Any] = {"label_names": [], "label_values": []}
    try:
        meta = read_training_state(path)
    except (FileNotFoundError, ValueError, OSError):
        return out
    out["label_names"] = list(meta.get("label_names") or [])
    data_path = ((meta.get("config") or {}).get("data") or {}).get("path") or (meta.get("data") or {}).get(
        "path"
    )
    if out["label_names"] and data_path:
        try:
            from avatarforge.data.packed import read_schema

            schema = read_schema(data_path)
            out["label_values"] = [list(schema[n].values) for n in out["label_names"]]
        except (OSError, KeyError, ValueError):
            pass
    return out


def load_model_source(
    path: str | os.PathLike,
    n: int,
    *,
    seed: int = 0,
    truncation: float = 1.0,
    device: str | torch.device = "cpu",
) -> GeneratorSource:
    """A :class:`GeneratorSource` for a run directory or checkpoint (GAN EMA generator or VAE decoder).

    The source gains ``label_names``/``label_values`` (what a conditional model's labels
    mean, from the checkpoint and its data set; empty if unknown) and ``vae`` (the whole VAE
    for reconstruction metrics, or None).
    """
    from avatarforge.runs import is_vae_checkpoint, load_generator, load_vae, resolve_run

    p = Path(path)
    try:
        p = resolve_run(p, "generator")
        vae = load_vae(p, device=device) if is_vae_checkpoint(p) else None
        G = vae.decoder if vae is not None else load_generator(p, device=device)
    except FileNotFoundError as e:
        hint = "" if "; pass " in str(e) else "; pass a run directory or a ckpt-* directory"
        raise SourceError(f"{p}: no trained model found ({e}){hint}") from e
    src = GeneratorSource(G, n, seed=seed, truncation=truncation, device=device, path=p)
    info = _run_label_info(p)
    if vae is not None and getattr(vae, "label_names", None):
        info = {"label_names": list(vae.label_names), "label_values": [list(v) for v in vae.label_values]}
    src.label_names = info["label_names"]  # type: ignore[attr-defined]
    src.label_values = info["label_values"]  # type: ignore[attr-defined]
    src.vae = vae  # type: ignore[attr-defined]
    return src


def open_source(
    spec: str | os.PathLike | nn.Module | ImageSource,
    *,
    n: int | None = None,
    seed: int = 0,
    truncation: float = 1.0,
    device: str | torch.device = "cpu",
    size: int | None = None,
    what: str = "source",
) -> ImageSource:
    """Open a source: an :class:`ImageSource` (returned as is), a generator module, a run
    directory / checkpoint, a packed data set or an image folder.

    Args:
        n: images to use (generators: required number of samples; data: a seeded random
            subset, default all).
        seed: latent seed (generators) or subset seed (data).
        truncation: truncation psi for generators.
        device: generator device.
        size: folder images are brought to this side (default: the first image's).
        what: how the input is called in error messages (``"SOURCE"``, ``"--ref"``).

    Raises:
        SourceError: the path does not exist or holds nothing evaluable (the message names it).
    """
    if isinstance(spec, ImageSource):
        return spec
    if isinstance(spec, nn.Module):
        if n is None:
            raise SourceError(f"{what}: a generator needs n (the number of samples)")
        return GeneratorSource(spec, n, seed=seed, truncation=truncation, device=device)
    p = Path(spec)
    if not p.exists():
        raise SourceError(f"{what} {p} does not exist")
    if (p / "manifest.json").is_file():
        from avatarforge.data.packed import PackedFormatError

        try:
            return PackedSource(p, n=n, seed=seed)
        except PackedFormatError as e:
            raise SourceError(f"{what} {p}: {e}") from e
    if is_model_path(p):
        if n is None:
            raise SourceError(f"{what} {p} is a trained model: pass n (CLI: --n) samples to generate")
        return load_model_source(p, n, seed=seed, truncation=truncation, device=device)
    if p.is_dir():
        return FolderSource(p, n=n, seed=seed, size=size)
    raise SourceError(
        f"{what} {p} is a file; pass a packed data set, a folder of images, or a run directory/checkpoint"
    )
