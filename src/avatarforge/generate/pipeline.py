"""Generation pipeline: a trained generator + what its labels mean, behind one ``__call__``.

Example::

    from avatarforge.generate import GeneratorPipeline

    pipe = GeneratorPipeline.from_pretrained("runs/00004-cgan-64").to("cuda")
    out = pipe(seeds="1-16", truncation=0.7, attrs={"hair_color": "pink"})
    out.images            # (16, 64, 64, C) uint8
    out.save("out/")      # seed0001.png ... with the generation parameters in PNG metadata

Reproducibility: image ``i`` depends only on the model file, its seed and the options, never
on the other seeds requested with it. Each seed has its own ``torch.Generator`` (on the CPU,
so the device does not change the latents), which draws, in this order, ``z``, the InfoGAN
codes and random labels -- always all three, so fixing an attribute does not shift the
stream. StyleGAN uses its constant noise buffers by default. Images are computed in chunks of
exactly ``batch_size`` (the last one padded by repeating a latent), because CPU kernels pick
different code paths -- with different float rounding -- for different batch sizes: a seed
then gives the same bytes alone or among 63 others. ``batch_size`` is recorded in the
metadata for that reason.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from avatarforge.fileio import file_sha256
from avatarforge.generate.conditioning import (
    LabelInfo,
    apply_codes,
    code_columns,
    encode_attrs,
    encode_codes,
    model_labels,
    parse_assignments,
)
from avatarforge.imageio import clean_alpha, composite_over, make_grid, to_uint8

__all__ = [
    "NOISE_MODES",
    "GenerationResult",
    "GeneratorPipeline",
    "Latent",
    "blend_labels",
    "composite",
    "format_seeds",
    "parse_colour",
    "parse_seeds",
    "state_sha256",
]

NOISE_MODES = ("const", "random", "none")
DEFAULT_BATCH = 8
_MAX_SEED = 2**63 - 1


# ----------------------------------------------------------------------------- seeds
def parse_seeds(spec: str | int | Sequence[int]) -> list[int]:
    """``"1-64"``, ``"1,5,9"``, ``"3"``, ``"1-3,10"``, an int or a list -> list of seeds.

    Raises:
        ValueError: malformed text, a negative seed or a descending range.
    """
    if isinstance(spec, bool):
        raise ValueError(f"seeds must be integers, got {spec!r}")
    if isinstance(spec, int):
        items: list[int] = [spec]
    elif isinstance(spec, str):
        items = []
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
            if m:
                a, b = int(m.group(1)), int(m.group(2))
                if b < a:
                    raise ValueError(f"seed range {part!r} runs backwards; write {b}-{a}")
                items.extend(range(a, b + 1))
            elif re.fullmatch(r"\d+", part):
                items.append(int(part))
            else:
                raise ValueError(
                    f"cannot parse seeds {spec!r}: use e.g. 1-64, 1,5,9 or 3 (non-negative integers)"
                )
    else:
        items = [int(s) for s in spec]
    if not items:
        raise ValueError(f"no seeds in {spec!r}")
    for s in items:
        if not 0 <= s <= _MAX_SEED:
            raise ValueError(f"seeds must be in 0..{_MAX_SEED}, got {s}")
    return items


def format_seeds(seeds: Sequence[int]) -> str:
    """Inverse of :func:`parse_seeds`, compact: ``[1, 2, 3, 7]`` -> ``"1-3,7"``."""
    parts, i = [], 0
    seeds = list(seeds)
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        parts.append(str(seeds[i]) if j == i else f"{seeds[i]}-{seeds[j]}")
        i = j + 1
    return ",".join(parts)


# ----------------------------------------------------------------------------- latents
def _b64(t: Tensor) -> dict[str, Any]:
    a = t.detach().cpu().contiguous()
    dtype = "int64" if a.dtype == torch.long else "float32"
    arr = a.numpy().astype(dtype)
    return {"dtype": dtype, "shape": list(arr.shape), "data": base64.b64encode(arr.tobytes()).decode("ascii")}


def _unb64(d: Mapping[str, Any]) -> Tensor:
    arr = np.frombuffer(base64.b64decode(d["data"]), dtype=d["dtype"]).reshape(d["shape"])
    return torch.from_numpy(arr.copy())


@dataclass
class Latent:
    """Everything a generator needs for ``N`` images (CPU tensors).

    Attributes:
        z: ``(N, z_dim)`` input latents.
        labels: ``(N, L)`` class indices (conditional models).
        codes: ``(N, code_features)`` InfoGAN codes.
        ws: ``(N, num_ws, w_dim)`` StyleGAN styles, truncation already applied; when set, they
            are rendered directly and ``z``/``labels`` only document where they came from.
        labels_to, label_t: blend the label embeddings toward ``labels_to`` by ``label_t``
            ``(N,)`` (0 = ``labels``, 1 = ``labels_to``): the attribute sliders.
        truncation: psi used to map ``z`` (StyleGAN: toward ``w_avg``; others: ``z * psi``).
        noise_seeds: ``(N,)`` seeds of StyleGAN's per-image noise for ``noise_mode="random"``.
    """

    z: Tensor
    labels: Tensor | None = None
    codes: Tensor | None = None
    ws: Tensor | None = None
    labels_to: Tensor | None = None
    label_t: Tensor | None = None
    truncation: float = 1.0
    noise_seeds: Tensor | None = None

    _TENSORS = ("z", "labels", "codes", "ws", "labels_to", "label_t", "noise_seeds")

    def __len__(self) -> int:
        return int(self.z.shape[0])

    def __getitem__(self, idx: int | slice | Sequence[int] | Tensor) -> Latent:
        if isinstance(idx, int):
            idx = slice(idx, idx + 1) if idx != -1 else slice(-1, None)
        return self._map(lambda t: t[idx])

    def _map(self, fn: Any) -> Latent:
        return replace(
            self, **{k: (None if getattr(self, k) is None else fn(getattr(self, k))) for k in self._TENSORS}
        )

    def pad_to(self, n: int) -> Latent:
        """Repeat the last row until there are ``n`` rows (for fixed-size batches)."""
        m = len(self)
        if m >= n:
            return self
        return self._map(lambda t: torch.cat([t, t[-1:].expand(n - m, *t.shape[1:])]))

    def repeat(self, n: int) -> Latent:
        """The first row repeated ``n`` times (copies, safe to edit in place)."""
        return self[0]._map(lambda t: t.expand(n, *t.shape[1:]).clone())

    def to(self, device: str | torch.device) -> Latent:
        return self._map(lambda t: t.to(device))

    def detach(self) -> Latent:
        """Detached CPU copies of every tensor."""
        return self._map(lambda t: t.detach().cpu().clone())

    @staticmethod
    def cat(latents: Sequence[Latent]) -> Latent:
        """Concatenate latents (same fields set, same truncation) along the batch."""
        first = latents[0]
        if any(lt.truncation != first.truncation for lt in latents):
            raise ValueError("cannot concatenate latents with different truncation")
        kw: dict[str, Any] = {"truncation": first.truncation}
        for k in Latent._TENSORS:
            vals = [getattr(lt, k) for lt in latents]
            if all(v is None for v in vals):
                kw[k] = None
            elif any(v is None for v in vals):
                raise ValueError(f"cannot concatenate latents where only some have {k}")
            else:
                kw[k] = torch.cat(vals)
        return Latent(**kw)

    def to_json(self) -> dict[str, Any]:
        """JSON form (base64 float32/int64 arrays): exact round trip via :meth:`from_json`."""
        out: dict[str, Any] = {"truncation": self.truncation}
        for k in self._TENSORS:
            v = getattr(self, k)
            if v is not None:
                out[k] = _b64(v)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Latent:
        kw: dict[str, Any] = {k: _unb64(d[k]) for k in cls._TENSORS if k in d}
        return cls(truncation=float(d.get("truncation", 1.0)), **kw)


# ----------------------------------------------------------------------------- label blending
def _label_embedding_types() -> tuple[type, ...]:
    from avatarforge.models import layers

    return (layers.LabelEmbedding,)  # every family, StyleGAN included, embeds labels with it


@contextlib.contextmanager
def blend_labels(G: nn.Module, labels_to: Tensor | None, t: Tensor | None) -> Iterator[None]:
    """Within the block, every label embedding of ``G`` outputs ``lerp(emb(labels), emb(labels_to), t)``.

    All families embed labels with a lookup table (cgan: the conditional-BN gains/shifts;
    dcgan/infogan/VAE: concatenated to ``z``; StyleGAN: concatenated in the mapping
    network), so blending the looked-up rows is the continuous version of switching the
    label: ``t=0`` is ``labels``, ``t=1`` exactly ``labels_to`` (the blend is computed as
    ``a + t * (b - a)`` only for ``0 < t < 1``), values outside ``[0, 1]`` extrapolate.
    """
    if labels_to is None or t is None:
        yield
        return
    handles = []

    def hook(mod: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> Tensor:
        other = mod.forward(labels_to.to(output.device))  # .forward: no hook recursion
        w = t.to(output.device, output.dtype).view(-1, *([1] * (output.ndim - 1)))
        mixed = torch.lerp(output, other, w)
        # Exact endpoints, so a slider at 0 or 1 reproduces the plain label's bytes.
        mixed = torch.where(w == 0, output, torch.where(w == 1, other, mixed))
        return mixed

    for m in G.modules():
        if isinstance(m, _label_embedding_types()):
            handles.append(m.register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _deterministic_kernels() -> Iterator[None]:
    # cuDNN's autotuner may pick a different algorithm per call; pin it for byte-stable output.
    prev = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev


# ----------------------------------------------------------------------------- output images
def parse_colour(colour: str | Sequence[int] | None) -> tuple[int, int, int]:
    """``"white"``, ``"#ff00aa"``, ``"255,0,170"``, a triple, or ``None`` (white) -> ``(r, g, b)``."""
    if colour is None:
        return (255, 255, 255)
    if isinstance(colour, str) and not re.fullmatch(r"\s*\d+\s*,\s*\d+\s*,\s*\d+\s*", colour):
        from PIL import ImageColor

        try:
            rgb = ImageColor.getrgb(colour)
        except ValueError:
            raise ValueError(f"unknown colour {colour!r}; use a name (white), #rrggbb or r,g,b") from None
        return (int(rgb[0]), int(rgb[1]), int(rgb[2]))
    vals = [int(v) for v in (colour.split(",") if isinstance(colour, str) else colour)]
    if len(vals) != 3 or not all(0 <= v <= 255 for v in vals):
        raise ValueError(f"a colour is three values in 0..255, got {colour!r}")
    return (vals[0], vals[1], vals[2])


def _refiner_input_size(path: str | os.PathLike) -> int | None:
    """The input size a refiner run was trained for (its config's data.size / data.scale), or
    None when the path carries no training config (a ``save_pretrained`` directory)."""
    import yaml

    from avatarforge.runs import resolve_run

    try:
        run = resolve_run(path, "refiner")
    except (FileNotFoundError, ValueError):
        return None
    for folder in (run, run.parent, run.parent.parent):
        cfg = folder / "config.yaml"
        if cfg.is_file():
            data = (yaml.safe_load(cfg.read_text("utf-8")) or {}).get("data") or {}
            if data.get("size") and data.get("scale"):
                return int(data["size"]) // int(data["scale"])
            return None
    return None


def _downsample(images: np.ndarray, size: int) -> np.ndarray:
    """Area-average ``(N, H, H, C)`` uint8 down to ``size`` (H a multiple of it), in
    premultiplied alpha so transparent pixels' colours do not bleed into the edges."""
    n, h = images.shape[0], images.shape[1]
    if h == size:
        return images
    k = h // size
    x = images.astype(np.float32)
    if x.shape[-1] == 4:
        x[..., :3] *= x[..., 3:4] / 255.0
    x = x.reshape(n, size, k, size, k, x.shape[-1]).mean(axis=(2, 4))
    if x.shape[-1] == 4:
        a = x[..., 3:4]
        x[..., :3] = np.where(a > 0, x[..., :3] * 255.0 / np.maximum(a, 1e-6), 0.0)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def composite(images: np.ndarray, background: str | Sequence[int] | None = None) -> np.ndarray:
    """RGBA ``(..., H, W, 4)`` uint8 over a solid colour -> RGB; RGB passes through."""
    return composite_over(images, parse_colour(background))


def _to_output(images: np.ndarray, rgba: bool | None, background: Any) -> np.ndarray:
    if rgba is None:
        return images
    if rgba:
        if images.shape[-1] == 4:
            return images
        alpha = np.full((*images.shape[:-1], 1), 255, np.uint8)
        return np.concatenate([images, alpha], axis=-1)
    return composite(images, background)


# ----------------------------------------------------------------------------- result
@dataclass
class GenerationResult:
    """Images and everything needed to make them again.

    Attributes:
        images: ``(N, H, W, C)`` uint8 (C = 4 for RGBA output).
        latent: the :class:`Latent` of every image (StyleGAN: ``ws`` filled in).
        params: options shared by all images (``kind``, ``truncation``, ``noise_mode``,
            ``batch_size``, ``rgba``, ``background``, the model's identity, ...).
        items: per-image parameters (``seed``, resolved ``attrs`` and ``codes``, ...).
        store_latent: record the exact latent in the metadata (needed when the image cannot
            be re-derived from a seed: variations, inversions, edits).
    """

    images: np.ndarray
    latent: Latent
    params: dict[str, Any]
    items: list[dict[str, Any]] = field(default_factory=list)
    store_latent: bool = False

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def record(self, i: int) -> dict[str, Any]:
        """The metadata of image ``i``: shared params + its own + (if stored) its latent."""
        from avatarforge import __version__

        rec = {"avatarforge_version": __version__, **self.params, **(self.items[i] if self.items else {})}
        if self.store_latent:
            rec["latent"] = self.latent[i].to_json()
        return rec

    def names(self, prefix: str | None = None) -> list[str]:
        """File stems: ``seed0042`` for seeded images, else ``{prefix}{i:04d}``."""
        out = []
        for i in range(len(self)):
            seed = self.items[i].get("seed") if self.items else None
            if seed is not None and prefix is None:
                out.append(f"seed{seed:04d}")
            else:
                out.append(f"{prefix or self.params.get('kind', 'image')}{i:04d}")
        return out

    def grid(self, nrow: int | None = None, checker: bool = True) -> np.ndarray:
        """All images tiled into one; RGBA on a checkerboard unless ``checker=False``."""
        return make_grid(self.images, nrow=nrow, alpha_backdrop="checker" if checker else "keep")

    def save(
        self,
        out_dir: str | os.PathLike,
        format: str = "png",
        grid: bool = False,
        prefix: str | None = None,
        nrow: int | None = None,
    ) -> list[Path]:
        """Write every image (``png`` or lossless ``webp``) with its metadata; returns the paths.

        ``grid=True`` also writes ``grid.png`` (no metadata: it is not one generation).
        """
        from avatarforge.generate.metadata import save_with_metadata
        from avatarforge.imageio import save_image

        fmt = format.lower().lstrip(".")
        if fmt not in ("png", "webp"):
            raise ValueError(f"format must be png or webp, got {format!r}")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = [
            save_with_metadata(out / f"{name}.{fmt}", self.images[i], self.record(i))
            for i, name in enumerate(self.names(prefix))
        ]
        if grid:
            paths.append(save_image(out / "grid.png", self.grid(nrow)))
        return paths


# ----------------------------------------------------------------------------- the pipeline
def state_sha256(module: nn.Module) -> str:
    """sha256 of ``module``'s weights as :meth:`ConfigModule.save_pretrained` writes them.

    Equal to the hash of the saved ``model.safetensors`` file, so an in-memory model and its
    file have the same identity.
    """
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    return hashlib.sha256(save(state)).hexdigest()


_GAN_ROLES = ("ema", "g_ema", "g")


class GeneratorPipeline:
    """A generator ready for sampling: seeds in, uint8 images (+ their latents) out.

    Build it with :meth:`from_pretrained` (a run directory or checkpoint, GAN or VAE) or
    directly from a module following the GAN interface.

    Args:
        G: the generator (``G(z, labels, codes, truncation_psi)``, ``sample_z``, ...).
        labels: what the labels mean (default: indices only, see :func:`model_labels`).
        model_sha256: content hash of the weights file (default: computed from ``G``'s
            weights, equal to the hash of the file ``save_pretrained`` writes).
        source: the run directory / checkpoint it was loaded from (recorded in metadata).
        which: ``"ema"`` or ``"g"`` (recorded).
        vae: the whole VAE when ``G`` is its decoder (inversion then uses its encoder).
        batch_size: images per forward pass; part of the reproducibility contract (see the
            module docstring).
    """

    def __init__(
        self,
        G: nn.Module,
        *,
        labels: LabelInfo | None = None,
        model_sha256: str | None = None,
        model_file: str | None = None,
        source: str | os.PathLike | None = None,
        which: str = "ema",
        vae: nn.Module | None = None,
        batch_size: int = DEFAULT_BATCH,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.G = G.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False) if vae is not None else None
        self.labels = labels if labels is not None else model_labels(G)
        self.model_sha256 = model_sha256 or state_sha256(vae if vae is not None else G)
        self.model_file = model_file
        self.source = str(source) if source is not None else None
        self.which = which
        self.batch_size = int(batch_size)
        self.device = next(G.parameters()).device
        #: Clean the alpha of RGBA output (:func:`~avatarforge.imageio.clean_alpha`): one
        #: silhouette, opaque inside. A generator draws alpha like colour, with faint specks away
        #: from the character and a body at 249-254; nobody wants those on stream.
        self.clean_alpha = True
        #: The cascade's second stage (:class:`~avatarforge.models.refiner.Refiner`): makes the
        #: high-resolution sizes (:attr:`sizes`) and the part maps a rig needs. See
        #: :meth:`attach_refiner`.
        self.refiner: nn.Module | None = None
        self.refiner_info: dict[str, Any] | None = None
        #: The part segmenter (:class:`~avatarforge.models.parts.PartSegmenter`): the part maps
        #: rigs need, predicted from the generator-size avatar; without one, the refiner's part
        #: head (if it has one) is used. See :meth:`attach_segmenter`.
        self.segmenter: nn.Module | None = None
        self.segmenter_info: dict[str, Any] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        which: str = "ema",
        device: str | torch.device = "cpu",
        batch_size: int = DEFAULT_BATCH,
        refiner: str | os.PathLike | None = "auto",
        segmenter: str | os.PathLike | None = "auto",
    ) -> GeneratorPipeline:
        """Load from a run directory, its ``checkpoints`` directory, one checkpoint, or a
        quickstart output folder (its generator run); see :func:`avatarforge.runs.resolve_run`.

        ``which``: ``"ema"`` (the EMA generator, or a VAE's EMA weights when kept) or ``"g"``.
        ``refiner``: a refiner run (:meth:`attach_refiner`); ``"auto"`` (default) takes the
        quickstart folder's refiner when ``path`` is one that has it; ``None``: none.
        ``segmenter``: a part segmenter run (:meth:`attach_segmenter`), ``"auto"`` likewise.
        """
        from avatarforge.runs import (
            ROLE_PREFIXES,
            checkpoint_for,
            is_vae_checkpoint,
            load_network,
            load_vae,
            resolve_run,
        )

        if which not in _GAN_ROLES:
            raise ValueError(f"which must be 'ema' or 'g', got {which!r}")
        p = resolve_run(path, "generator")
        if is_vae_checkpoint(p):
            ckpt = checkpoint_for(p, "vae_")
            prefix = "vae_ema_" if which != "g" and (ckpt / "vae_ema_config.json").is_file() else "vae_"
            vae = load_vae(ckpt, which="ema" if prefix == "vae_ema_" else "vae", device=device)
            G: nn.Module = vae.decoder
            labels = LabelInfo(
                tuple(vae.label_names)
                if vae.label_names
                else tuple(f"label{i}" for i in range(len(vae.label_dims))),
                tuple(tuple(v) for v in vae.label_values)
                if vae.label_values
                else tuple(() for _ in vae.label_dims),
                tuple(vae.label_dims),
                "model config",
            )
        else:
            prefix = ROLE_PREFIXES[which]
            ckpt = checkpoint_for(p, prefix)
            G = load_network(ckpt, which=which, device=device)
            vae = None
            labels = model_labels(G, p, ckpt)
        weights = ckpt / f"{prefix}model.safetensors"
        pipe = cls(
            G,
            labels=labels,
            model_sha256=file_sha256(weights),
            model_file=weights.name,
            source=p.resolve(),
            which=which,
            vae=vae,
            batch_size=batch_size,
        )
        if "auto" in (refiner, segmenter):
            from avatarforge.runs import quickstart_runs

            found = (quickstart_runs(path) or {}) if Path(path).is_dir() else {}
            refiner = found.get("refiner") if refiner == "auto" else refiner
            segmenter = found.get("parts") if segmenter == "auto" else segmenter
        if refiner is not None:
            pipe.attach_refiner(refiner, device=device)
        if segmenter is not None:
            pipe.attach_segmenter(segmenter, device=device)
        return pipe

    def attach_segmenter(
        self, segmenter: str | os.PathLike | nn.Module, device: str | torch.device = "cpu"
    ) -> None:
        """Use ``segmenter`` (a parts run/checkpoint, or a loaded module) for the part maps of
        :meth:`render_layers` / :meth:`layers_of` (instead of the refiner's part head).

        Raises:
            ValueError: it was trained for another colour mode.
        """
        from avatarforge.runs import load_segmenter

        source = None
        if not isinstance(segmenter, nn.Module):
            source = str(Path(segmenter).resolve())
            segmenter = load_segmenter(segmenter, device=device)
        ch = int(getattr(segmenter, "channels", self.channels))
        if ch != self.channels:
            raise ValueError(
                f"the part segmenter reads {ch}-channel images but this generator makes {self.channels}-channel "
                "ones: train one for RGBA avatars (avatarforge train src/avatarforge/configs/parts-64px.yaml)"
            )
        self.segmenter = segmenter.eval().requires_grad_(False)
        self.segmenter_info = {"sha256": state_sha256(segmenter), "path": source}

    def attach_refiner(
        self, refiner: str | os.PathLike | nn.Module, device: str | torch.device = "cpu"
    ) -> None:
        """Use ``refiner`` (a refiner run/checkpoint, or a loaded module) for the large sizes.

        Raises:
            ValueError: it was trained for another colour mode or its input size is not this
                generator's resolution (the message names the refiner to train instead).
        """
        from avatarforge.runs import load_refiner

        source = None
        in_size = None
        if not isinstance(refiner, nn.Module):
            source = str(Path(refiner).resolve())
            in_size = _refiner_input_size(refiner)
            refiner = load_refiner(refiner, device=device)
        ch = int(getattr(refiner, "channels", self.channels))
        if ch != self.channels:
            raise ValueError(
                f"the refiner works on {ch}-channel images but this generator makes {self.channels}-channel "
                "ones: train a refiner on the generator's data set (avatarforge train "
                "src/avatarforge/configs/refiner-512px.yaml data.source=DATA)"
            )
        if in_size is not None and int(in_size) != self.resolution:
            raise ValueError(
                f"the refiner was trained on {in_size}-px inputs but this generator makes {self.resolution}-px "
                "avatars: train a refiner for this resolution (avatarforge train "
                "src/avatarforge/configs/refiner-512px.yaml data.source=DATA)"
            )
        self.refiner = refiner.eval().requires_grad_(False)
        self.refiner_info = {
            "sha256": state_sha256(refiner),
            "path": source,
            "scale": int(refiner.scale),
            "parts": int(getattr(refiner, "part_classes", 0) or 0),
        }

    def to(self, device: str | torch.device) -> GeneratorPipeline:
        """Move the model to ``device`` (latents stay on the CPU); returns ``self``."""
        self.device = torch.device(device)
        self.G.to(self.device)
        if self.vae is not None:
            self.vae.to(self.device)
        return self

    # ------------------------------------------------------------------ properties
    @property
    def family(self) -> str:
        """Registry name: ``dcgan``, ``cgan``, ``infogan``, ``stylegan``; ``vae`` for a decoder."""
        if self.vae is not None:
            return str(getattr(self.vae, "registry_name", "vae") or "vae")
        return str(getattr(self.G, "registry_name", "") or type(self.G).__name__)

    @property
    def is_stylegan(self) -> bool:
        """True when the generator has a mapping/synthesis split (a w space)."""
        return hasattr(self.G, "mapping") and hasattr(self.G, "synthesis")

    @property
    def resolution(self) -> int:
        return int(self.G.resolution)

    @property
    def channels(self) -> int:
        return int(self.G.channels)

    @property
    def sizes(self) -> list[int]:
        """The output sizes this pipeline makes: the generator's resolution, and with a refiner
        every power-of-two step up to its output (e.g. 64, 128, 256, 512)."""
        out = [self.resolution]
        if self.refiner is not None:
            top = self.resolution * int(self.refiner.scale)
            while out[-1] < top:
                out.append(out[-1] * 2)
        return out

    def check_size(self, size: int | None) -> int:
        """``size`` (None = the generator's resolution) if this pipeline makes it, else a
        ValueError naming the sizes it makes and how to get larger ones."""
        if size is None:
            return self.resolution
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or int(size) not in self.sizes:
            if self.refiner is None and isinstance(size, (int, np.integer)) and int(size) > self.resolution:
                raise ValueError(
                    f"size {size}: this {self.family} generator makes {self.resolution}-px avatars and has no "
                    "refiner for larger ones; train one (avatarforge train src/avatarforge/configs/refiner-512px.yaml "
                    "data.source=DATA) and pass it (--refiner REFINER_RUN), or use a quickstart folder, which has one"
                )
            raise ValueError(f"size must be one of {', '.join(map(str, self.sizes))}, got {size!r}")
        return int(size)

    @property
    def z_dim(self) -> int:
        return int(self.G.z_dim)

    @property
    def label_dims(self) -> list[int]:
        return list(getattr(self.G, "label_dims", []) or [])

    @property
    def code_dims(self) -> dict[str, Any]:
        return dict(getattr(self.G, "code_dims", None) or {"categorical": [], "continuous": 0})

    @property
    def has_codes(self) -> bool:
        return code_columns(self.code_dims).width > 0

    @property
    def num_ws(self) -> int:
        """StyleGAN: number of style vectors (0 for other families)."""
        return int(getattr(self.G, "num_ws", 0))

    def model_info(self) -> dict[str, Any]:
        """The model's identity as recorded in metadata."""
        return {
            "sha256": self.model_sha256,
            "file": self.model_file,
            "path": self.source,
            "which": self.which,
            "family": self.family,
            "resolution": self.resolution,
            "channels": self.channels,
            **({"refiner": self.refiner_info} if self.refiner_info is not None else {}),
            **({"segmenter": self.segmenter_info} if self.segmenter_info is not None else {}),
        }

    # ------------------------------------------------------------------ latents
    def latents(
        self,
        seeds: str | int | Sequence[int],
        attrs: Mapping[str, Any] | str | None = None,
        codes: Mapping[str, Any] | str | None = None,
        truncation: float = 1.0,
    ) -> Latent:
        """Per-seed latents: ``z``, InfoGAN codes and labels from ``torch.Generator(seed)``.

        ``attrs`` fix label values (the rest are random per seed); ``codes`` fix code
        entries (``{"c0": 0.5, "cat0": 2}``).
        """
        seed_list = parse_seeds(seeds)
        label_row = encode_attrs(self.labels, parse_assignments(attrs))
        code_vals = encode_codes(self.code_dims, parse_assignments(codes, "--codes"))
        zs, cs, ls = [], [], []
        for s in seed_list:
            g = torch.Generator().manual_seed(s)
            zs.append(self.G.sample_z(1, generator=g, device="cpu"))
            if self.has_codes:
                cs.append(self.G.sample_codes(1, generator=g, device="cpu"))
            if self.label_dims:
                drawn = [int(torch.randint(k, (1,), generator=g)) for k in self.label_dims]
                ls.append([d if want is None else want for d, want in zip(drawn, label_row)])
        return Latent(
            z=torch.cat(zs).float(),
            labels=torch.tensor(ls, dtype=torch.long) if ls else None,
            codes=apply_codes(torch.cat(cs).float(), self.code_dims, code_vals) if cs else None,
            truncation=float(truncation),
            noise_seeds=torch.tensor(seed_list, dtype=torch.long),
        )

    def random_latents(
        self, n: int, seed: int = 0, like: Latent | None = None, truncation: float | None = None
    ) -> Latent:
        """``n`` latents drawn together from one ``torch.Generator(seed)``.

        With ``like`` (one latent), its labels, codes and truncation are kept and only ``z``
        is new: random samples "of the same kind".
        """
        g = torch.Generator().manual_seed(int(seed))
        z = self.G.sample_z(n, generator=g, device="cpu").float()
        if like is not None:
            src = like[0]
            rep = src.repeat(n)
            return replace(
                rep, z=z, ws=None, truncation=src.truncation if truncation is None else float(truncation)
            )
        codes = self.G.sample_codes(n, generator=g, device="cpu").float() if self.has_codes else None
        labels = (
            torch.stack([torch.randint(k, (n,), generator=g) for k in self.label_dims], 1)
            if self.label_dims
            else None
        )
        return Latent(
            z=z, labels=labels, codes=codes, truncation=1.0 if truncation is None else float(truncation)
        )

    # ------------------------------------------------------------------ forward passes
    def _forward(self, latent: Latent, noise_mode: str = "const", noise_generator: Any = None) -> Tensor:
        """One forward pass (gradients flow when enabled): ``(N, C, H, W)`` in [-1, 1]."""
        dev = self.device
        lat = latent.to(dev)
        if self.is_stylegan:
            ws = lat.ws if lat.ws is not None else self._map_tensor(lat)
            return self.G.synthesis(ws, noise_mode=noise_mode, generator=noise_generator)
        with blend_labels(self.G, lat.labels_to, lat.label_t):
            return self.G(lat.z, labels=lat.labels, codes=lat.codes, truncation_psi=lat.truncation)

    def _map_tensor(self, lat: Latent) -> Tensor:
        with blend_labels(self.G, lat.labels_to, lat.label_t):
            return self.G.mapping(lat.z, lat.labels, truncation_psi=lat.truncation, update_w_avg=False)

    def synthesize(self, latent: Latent, noise_mode: str = "const") -> Tensor:
        """Differentiable forward pass in one batch (used by inversion): float images in [-1, 1]."""
        return self._forward(latent, noise_mode)

    def _chunks(self, latent: Latent) -> Iterator[tuple[int, Latent]]:
        b = self.batch_size
        for s in range(0, len(latent), b):
            part = latent[s : s + b]
            yield len(part), part.pad_to(b)

    @torch.no_grad()
    def map(self, latent: Latent) -> Latent:
        """StyleGAN: a copy of ``latent`` with ``ws`` computed (if missing); others: unchanged."""
        if not self.is_stylegan or latent.ws is not None:
            return latent
        with _deterministic_kernels():
            ws = [
                self._map_tensor(part.to(self.device))[:m].float().cpu() for m, part in self._chunks(latent)
            ]
        return replace(latent, ws=torch.cat(ws))

    @torch.no_grad()
    def render_float(self, latent: Latent, noise_mode: str = "const") -> Tensor:
        """Float images ``(N, C, H, W)`` in about [-1, 1] on the CPU, batch-invariant."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        outs = []
        with _deterministic_kernels():
            if noise_mode == "random" and self.is_stylegan:
                # Per-image noise from the image's own seed: render each image in its own
                # (padded) batch so the noise does not depend on its neighbours.
                seeds = (
                    latent.noise_seeds
                    if latent.noise_seeds is not None
                    else torch.zeros(len(latent), dtype=torch.long)
                )
                for i in range(len(latent)):
                    g = torch.Generator().manual_seed(int(seeds[i]) + 0x5EED)
                    x = self._forward(latent[i].pad_to(self.batch_size), noise_mode, g)
                    outs.append(x[:1].float().cpu())
            else:
                for m, part in self._chunks(latent):
                    outs.append(self._forward(part, noise_mode)[:m].float().cpu())
        return torch.cat(outs)

    def render(
        self,
        latent: Latent,
        noise_mode: str = "const",
        rgba: bool | None = None,
        background: str | Sequence[int] | None = None,
        size: int | None = None,
    ) -> np.ndarray:
        """uint8 images ``(N, size, size, C)``.

        ``rgba``: ``None`` keeps the model's channels, ``True`` adds an opaque alpha to RGB
        output, ``False`` composites RGBA onto ``background`` (default white). RGBA output has
        its alpha cleaned (:attr:`clean_alpha`) before anything else. ``size``: one of
        :attr:`sizes` (default the generator's resolution); larger sizes go through the refiner.
        """
        size = self.check_size(size)
        images = self._render_uint8(latent, noise_mode, size)
        return _to_output(images, rgba, background)

    def _render_uint8(self, latent: Latent, noise_mode: str, size: int) -> np.ndarray:
        images = to_uint8(self.render_float(latent, noise_mode))
        if size != self.resolution:
            images = self._refine(images, size)
        if self.clean_alpha and images.shape[-1] == 4:
            images = clean_alpha(images)
        return images

    def _refine(self, images: np.ndarray, size: int) -> np.ndarray:
        """The refiner's output, area-downsampled when ``size`` is below it (e.g. 256 of 512)."""
        from avatarforge.models.refiner import refine_images

        assert self.refiner is not None
        with _deterministic_kernels():
            big = refine_images(self.refiner, images)
        return _downsample(big, size)

    def render_layers(
        self, latent: Latent, size: int, noise_mode: str = "const"
    ) -> tuple[np.ndarray, np.ndarray]:
        """RGBA images and their part maps ``((N, S, S, 4) uint8, (N, S, S) uint8)`` for rigs
        (:class:`~avatarforge.animate.rig.AvatarRig`); needs a refiner with a part head.

        Raises:
            ValueError: no refiner, a refiner without a part head, or an RGB generator.
        """
        self._check_layers()
        return self.layers_of(to_uint8(self.render_float(latent, noise_mode)), size)

    def layers_of(self, images: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`render_layers` for ``(N, R, R, 4)`` uint8 images at the generator's resolution
        ``R`` (e.g. the studio's finished pick): refined to ``size``, alpha cleaned, part maps."""
        self._check_layers()
        size = self.check_size(size)
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (self.resolution, self.resolution, 4):
            raise ValueError(
                f"layers_of takes (N, {self.resolution}, {self.resolution}, 4) uint8 images, got {images.shape}"
            )
        big = self._refine(images, size) if size != self.resolution else images.copy()
        if self.clean_alpha:
            big = clean_alpha(big)
        with _deterministic_kernels():
            if self.segmenter is not None:
                from avatarforge.models.parts import predict_part_map

                parts = predict_part_map(self.segmenter, images, size)
            else:
                from avatarforge.models.refiner import predict_parts

                parts = predict_parts(self.refiner, images)
        if parts.shape[1] != size:
            from PIL import Image

            parts = np.stack(
                [np.asarray(Image.fromarray(p).resize((size, size), Image.Resampling.NEAREST)) for p in parts]
            )
        parts = np.where(big[..., 3] == 0, 0, parts).astype(np.uint8)  # background = transparent
        return big, parts

    @property
    def has_layers(self) -> bool:
        """Whether :meth:`render_layers` works: an RGBA generator, a refiner, and a part
        segmenter or a refiner with a part head."""
        parts = self.segmenter is not None or int(getattr(self.refiner, "part_classes", 0) or 0) > 0
        return self.refiner is not None and parts and self.channels == 4

    def _check_layers(self) -> None:
        if self.refiner is None:
            raise ValueError(
                "part maps come with the large avatar: train a refiner (avatarforge train "
                "src/avatarforge/configs/refiner-512px.yaml) and pass --refiner"
            )
        if self.segmenter is None and not int(getattr(self.refiner, "part_classes", 0) or 0):
            raise ValueError(
                "part maps come from a part segmenter (avatarforge train src/avatarforge/configs/parts-64px.yaml) "
                "or a refiner trained on the built-in renderer (it predicts the parts); pass one"
            )
        if self.channels != 4:
            raise ValueError("a rig needs RGBA avatars; this generator makes RGB images")

    # ------------------------------------------------------------------ one call
    def __call__(
        self,
        seeds: str | int | Sequence[int] | None = None,
        n: int | None = None,
        truncation: float = 1.0,
        attrs: Mapping[str, Any] | str | None = None,
        codes: Mapping[str, Any] | str | None = None,
        noise_mode: str = "const",
        rgba: bool | None = None,
        background: str | Sequence[int] | None = None,
        size: int | None = None,
    ) -> GenerationResult:
        """Generate one image per seed (``n`` alone means seeds ``0..n-1``).

        Args:
            seeds: ``"1-64"``, ``"1,5,9"``, an int or a list.
            n: number of images when ``seeds`` is not given.
            truncation: psi (1 = none, 0 = the average image).
            attrs: fixed attribute values, ``{"hair_color": "pink"}`` or ``"hair_color=pink"``;
                unspecified labels of a conditional model are random per seed.
            codes: InfoGAN codes, ``{"c0": 0.8, "cat0": 3}``; the rest are random per seed.
            noise_mode: StyleGAN noise: ``"const"`` (default), ``"random"`` (per-seed), ``"none"``.
            rgba, background: output channels, see :meth:`render`.
            size: output size, one of :attr:`sizes` (default the generator's resolution).
        """
        size = self.check_size(size)
        if seeds is None:
            if n is None:
                raise ValueError("give seeds (e.g. '1-16') or n")
            if n < 1:
                raise ValueError(f"n must be >= 1, got {n}")
            seeds = list(range(n))
        elif n is not None and n != len(parse_seeds(seeds)):
            raise ValueError("give either seeds or n, not both")
        seed_list = parse_seeds(seeds)
        attrs_d = parse_assignments(attrs)
        codes_d = parse_assignments(codes, "--codes")
        latent = self.map(self.latents(seed_list, attrs_d, codes_d, truncation))
        images = self.render(latent, noise_mode, rgba, background, size=size)
        params = self.record_params(
            "generate", truncation=float(truncation), noise_mode=noise_mode, rgba=rgba, background=background
        )
        if size != self.resolution:
            params["size"] = size
        params["requested"] = {"attrs": attrs_d, "codes": codes_d}
        items = [{"seed": s, **self.describe(latent[i])} for i, s in enumerate(seed_list)]
        return GenerationResult(images, latent, params, items)

    def record_params(self, kind: str, **kw: Any) -> dict[str, Any]:
        """Metadata parameters shared by a batch: ``kind``, the model identity, ``batch_size``,
        ``threads`` (CPU), ``background`` (normalised to ``[r, g, b]``) and the keyword arguments."""
        bg = kw.pop("background", None)
        return {
            "kind": kind,
            "model": self.model_info(),
            "batch_size": self.batch_size,
            # CPU kernels split work by thread count, and StyleGAN's rounding follows it.
            "threads": torch.get_num_threads() if self.device.type == "cpu" else None,
            "background": list(parse_colour(bg)) if bg is not None else None,
            **kw,
        }

    def describe(self, latent: Latent) -> dict[str, Any]:
        """Readable labels and codes of a one-image latent (what the metadata shows)."""
        out: dict[str, Any] = {}
        if latent.labels is not None:
            out["attrs"] = self.labels.decode(latent.labels[0].tolist())
        if latent.labels_to is not None and latent.label_t is not None:
            out["attrs_to"] = self.labels.decode(latent.labels_to[0].tolist())
            out["label_t"] = float(latent.label_t[0])
        if latent.codes is not None:
            cols = code_columns(self.code_dims)
            row = latent.codes[0]
            d: dict[str, float] = {}
            for i, (start, k) in enumerate(cols.categorical):
                d[f"cat{i}"] = int(row[start : start + k].argmax())
            for j, c in enumerate(cols.continuous):
                d[f"c{j}"] = float(row[c])
            out["codes"] = d
        return out
