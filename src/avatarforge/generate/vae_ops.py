"""Working with a trained VAE: encode, decode, reconstruct, sample, interpolate, edit attributes.

Every function takes the VAE first: a loaded model (:func:`avatarforge.runs.load_vae`)
or a run directory / checkpoint path, which is loaded on the fly.

Images go in as uint8 arrays ``(H, W, C)`` / ``(N, H, W, C)`` (what
:func:`load_images` and the packed data sets hold), a list of such arrays, or float tensors
``(N, C, H, W)`` in [-1, 1]. They must already have the model's resolution
(:func:`load_images` resizes files the way ``avatarforge data prepare`` does). Channels are
adapted: RGBA into an RGB model is composited onto white (as ``PackedDataset(channels=3)``
does), RGB into an RGBA model gets an opaque alpha channel.

Images come out as uint8 ``(N, H, W, C)`` arrays (``as_uint8=False``: CPU float tensors
``(N, C, H, W)`` in [-1, 1]). Latents are CPU float32 tensors ``(N, z_dim)``.

Labels (conditional models only; ignored otherwise) may be ``None`` (every label
"unknown"; models trained with ``data.label_dropout > 0`` handle that), a mapping
``{"hair_color": "blonde"}`` (by class name or index; unnamed labels are unknown) applied
to every image, a list of such mappings (one per image), or an integer ``(N, L)`` tensor
of class indices (``num_classes`` = unknown).

Example::

    from avatarforge.generate import vae_ops as V
    vae = V.as_vae("runs/00007-vae-64")
    imgs = V.load_images(["a.png", "b.png"], vae)                 # (2, 64, 64, C) uint8
    strip = V.interpolate(vae, imgs[0], imgs[1], frames=8)        # (8, 64, 64, C) uint8
    d = V.attribute_vector(vae, "data/avatars64", "hair_color", "*", "blonde")
    blonde = V.apply_attribute(vae, imgs, d, strength=1.0)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from avatarforge.imageio import from_uint8, to_uint8

__all__ = [
    "ANY",
    "apply_attribute",
    "as_vae",
    "attribute_vector",
    "decode",
    "encode",
    "interpolate",
    "label_tensor",
    "lerp",
    "load_images",
    "reconstruct",
    "relabel",
    "sample",
    "slerp",
    "to_model_input",
]

#: ``value_from`` of :func:`attribute_vector` meaning "any known value other than ``value_to``".
ANY = "*"
_CHUNK = 64  # images per forward pass: bounded memory at 256 px

ImagesLike = np.ndarray | Tensor | Sequence[np.ndarray]
LabelsLike = Tensor | np.ndarray | Mapping[str, Any] | Sequence[Mapping[str, Any]] | None


# --------------------------------------------------------------------------- inputs
def as_vae(vae: nn.Module | str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """``vae`` itself, or the VAE loaded from a run directory / checkpoint (eval mode)."""
    if isinstance(vae, nn.Module):
        return vae
    from avatarforge.runs import load_vae

    return load_vae(vae, device=device)


def _device(vae: nn.Module) -> torch.device:
    return next(vae.parameters()).device


def _adapt_channels_uint8(a: np.ndarray, channels: int) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, H, W, channels): RGBA -> RGB on white, RGB -> opaque RGBA."""
    c = a.shape[-1]
    if c == channels:
        return a
    if c == 4 and channels == 3:
        rgb, alpha = a[..., :3].astype(np.uint16), a[..., 3:4].astype(np.uint16)
        return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    if c == 3 and channels == 4:
        return np.concatenate([a, np.full((*a.shape[:-1], 1), 255, np.uint8)], axis=-1)
    raise ValueError(f"images have {c} channels; expected 3 (RGB) or 4 (RGBA)")


def _adapt_channels_float(x: Tensor, channels: int) -> Tensor:
    """(N, C, H, W) in [-1, 1] -> (N, channels, H, W), same rules as the uint8 version."""
    c = x.shape[1]
    if c == channels:
        return x
    if c == 4 and channels == 3:
        a = (x[:, 3:4] + 1) / 2  # alpha in [0, 1]
        return x[:, :3] * a + (1 - a)  # over white (= 1.0)
    if c == 3 and channels == 4:
        return torch.cat([x, torch.ones_like(x[:, :1])], 1)
    raise ValueError(f"images have {c} channels; expected 3 (RGB) or 4 (RGBA)")


def to_model_input(vae: nn.Module, images: ImagesLike) -> Tensor:
    """Images in any accepted form -> ``(N, C, H, W)`` float32 in [-1, 1] on the model's device.

    Raises:
        ValueError: wrong rank, dtype, channel count or size (the message says what was expected).
    """
    res, channels = vae.resolution, vae.channels
    if isinstance(images, (list, tuple)):
        images = np.stack([np.asarray(i) for i in images])
    if isinstance(images, Tensor) and images.dtype == torch.uint8:
        images = images.cpu().numpy()
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise ValueError(f"image arrays must be uint8 (H, W, C) or (N, H, W, C), got {images.dtype}")
        a = images[None] if images.ndim == 3 else images
        if not a.flags.writeable:  # e.g. np.asarray(PIL image): torch warns about read-only memory
            a = a.copy()
        if a.ndim != 4:
            raise ValueError(f"image arrays must be (H, W, C) or (N, H, W, C), got shape {images.shape}")
        x = from_uint8(_adapt_channels_uint8(a, channels))
    elif isinstance(images, Tensor):
        x = images[None] if images.ndim == 3 else images
        if x.ndim != 4 or not x.dtype.is_floating_point:
            raise ValueError(
                f"image tensors must be float (N, C, H, W) in [-1, 1], got {x.dtype} {tuple(x.shape)}"
            )
        x = _adapt_channels_float(x.float(), channels)
    else:
        raise TypeError(
            f"images must be a uint8 array, a list of arrays or a float tensor, not {type(images).__name__}"
        )
    if x.shape[-2:] != (res, res):
        raise ValueError(
            f"images are {x.shape[-1]}x{x.shape[-2]} but the VAE works at {res}x{res}; "
            "resize them first (load_images does)"
        )
    return x.to(_device(vae))


def _class_index(vae: nn.Module, i: int, value: Any) -> int:
    """A class name or index of label ``i`` -> its index (``None`` -> unknown)."""
    k = vae.label_dims[i]
    if value is None:
        return k
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if not 0 <= int(value) <= k:
            raise ValueError(
                f"label {_label_name(vae, i)!r}: index {value} out of range 0..{k} ({k} = unknown)"
            )
        return int(value)
    values = vae.label_values[i] if i < len(vae.label_values) else []
    if str(value) in values:
        return values.index(str(value))
    if str(value).isdigit():
        return _class_index(vae, i, int(value))
    hint = f"; valid values: {', '.join(values)}" if values else f" (give an index 0..{k - 1})"
    raise ValueError(f"label {_label_name(vae, i)!r}: unknown value {value!r}{hint}")


def _label_name(vae: nn.Module, i: int) -> str:
    return vae.label_names[i] if i < len(vae.label_names) else f"label{i}"


def _mapping_row(vae: nn.Module, m: Mapping[str, Any]) -> list[int]:
    names = [_label_name(vae, i) for i in range(len(vae.label_dims))]
    unknown = set(m) - set(names)
    if unknown:
        raise ValueError(
            f"the VAE is conditioned on {', '.join(names)}; it has no label {sorted(unknown)[0]!r}"
        )
    return [_class_index(vae, i, m.get(n)) for i, n in enumerate(names)]


def label_tensor(vae: nn.Module, labels: LabelsLike, n: int) -> Tensor | None:
    """Labels in any accepted form -> ``(n, L)`` int64 class indices on the model's device.

    None for unconditional models (whatever ``labels`` is).
    """
    dims = list(getattr(vae, "label_dims", []))
    if not dims:
        return None
    if labels is None:
        y = torch.tensor(dims).expand(n, -1)  # every label unknown
    elif isinstance(labels, Mapping):
        y = torch.tensor(_mapping_row(vae, labels)).expand(n, -1)
    elif isinstance(labels, (Tensor, np.ndarray)):
        y = torch.as_tensor(labels).long()
        y = y.expand(n, -1) if y.ndim == 1 else y
    else:
        rows = [_mapping_row(vae, m) for m in labels]
        if len(rows) != n:
            raise ValueError(f"got {len(rows)} label mappings for {n} images")
        y = torch.tensor(rows)
    if y.shape != (n, len(dims)):
        raise ValueError(f"labels must have shape ({n}, {len(dims)}), got {tuple(y.shape)}")
    return y.contiguous().to(_device(vae))


def _output(x: Tensor, as_uint8: bool) -> np.ndarray | Tensor:
    return to_uint8(x) if as_uint8 else x.float().cpu()


# --------------------------------------------------------------------------- encode / decode
@torch.no_grad()
def encode(
    vae: nn.Module, images: ImagesLike, labels: LabelsLike = None, *, return_logvar: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Posterior means ``mu`` ``(N, z_dim)`` (and ``logvar`` with ``return_logvar=True``)."""
    vae = as_vae(vae)
    x = to_model_input(vae, images)
    y = label_tensor(vae, labels, x.shape[0])
    mus, logvars = [], []
    for s in range(0, x.shape[0], _CHUNK):
        mu, logvar = vae.encode(x[s : s + _CHUNK], None if y is None else y[s : s + _CHUNK])
        mus.append(mu.float().cpu())
        logvars.append(logvar.float().cpu())
    mu, logvar = torch.cat(mus), torch.cat(logvars)
    return (mu, logvar) if return_logvar else mu


@torch.no_grad()
def _decode_tensor(vae: nn.Module, z: Tensor, y: Tensor | None = None, emb: Tensor | None = None) -> Tensor:
    z = z.to(_device(vae), torch.float32)
    out = []
    for s in range(0, z.shape[0], _CHUNK):
        kw: dict[str, Any] = {}
        if emb is not None:
            kw["label_embedding"] = emb[s : s + _CHUNK]
        out.append(
            vae.decode(z[s : s + _CHUNK], None if y is None else y[s : s + _CHUNK], **kw).float().cpu()
        )
    return torch.cat(out) if out else torch.zeros(0, vae.channels, vae.resolution, vae.resolution)


def decode(
    vae: nn.Module, z: Tensor | np.ndarray, labels: LabelsLike = None, *, as_uint8: bool = True
) -> np.ndarray | Tensor:
    """Latents ``(N, z_dim)`` (or one ``(z_dim,)``) -> images."""
    vae = as_vae(vae)
    z = torch.as_tensor(np.asarray(z) if not isinstance(z, Tensor) else z).float()
    z = z[None] if z.ndim == 1 else z
    if z.ndim != 2 or z.shape[1] != vae.z_dim:
        raise ValueError(f"latents must be (N, {vae.z_dim}), got {tuple(z.shape)}")
    return _output(_decode_tensor(vae, z, label_tensor(vae, labels, z.shape[0])), as_uint8)


def reconstruct(
    vae: nn.Module, images: ImagesLike, labels: LabelsLike = None, *, as_uint8: bool = True
) -> np.ndarray | Tensor:
    """``decode(encode(images))`` through the posterior means (deterministic)."""
    vae = as_vae(vae)
    mu = encode(vae, images, labels)
    return decode(vae, mu, labels, as_uint8=as_uint8)


def sample(
    vae: nn.Module,
    n: int,
    seed: int = 0,
    labels: LabelsLike = None,
    temperature: float = 1.0,
    *,
    as_uint8: bool = True,
) -> np.ndarray | Tensor:
    """``n`` images decoded from prior draws ``z = temperature * N(0, I)`` seeded by ``seed``.

    A conditional model without ``labels`` gets random known classes (from the same seed).
    """
    vae = as_vae(vae)
    g = torch.Generator().manual_seed(int(seed))
    z = vae.sample_z(n, generator=g, device="cpu") * float(temperature)
    if vae.label_dims and labels is None:
        labels = torch.cat([torch.randint(k, (n, 1), generator=g) for k in vae.label_dims], 1)
    return decode(vae, z, labels, as_uint8=as_uint8)


# --------------------------------------------------------------------------- interpolation
def lerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Linear interpolation ``(1 - t) a + t b`` for ``t`` ``(T,)``: ``(z,), (z,) -> (T, z)``."""
    return torch.lerp(a[None], b[None], t[:, None].to(a.dtype))


def slerp(a: Tensor, b: Tensor, t: Tensor, eps: float = 1e-7) -> Tensor:
    """Spherical interpolation (Shoemake 1985; White 2016 for generative models).

    Moves along the great circle between the directions of ``a`` and ``b`` (norms are
    interpolated along with it), keeping intermediate latents at the typical distance
    from the origin where a Gaussian prior puts its mass; a straight line cuts through the
    low-density middle. Falls back to :func:`lerp` for (anti)parallel vectors.
    ``(z,), (z,), (T,) -> (T, z)``.
    """
    a64, b64, t64 = a.double(), b.double(), t.double()[:, None]
    cos = torch.dot(a64 / a64.norm().clamp_min(eps), b64 / b64.norm().clamp_min(eps)).clamp(-1, 1)
    omega = torch.arccos(cos)
    if omega.abs() < 1e-4 or (torch.pi - omega).abs() < 1e-4:
        return lerp(a, b, t)
    so = torch.sin(omega)
    out = torch.sin((1 - t64) * omega) / so * a64 + torch.sin(t64 * omega) / so * b64
    return out.to(a.dtype)


def interpolate(
    vae: nn.Module,
    img_a: ImagesLike,
    img_b: ImagesLike,
    frames: int = 8,
    mode: str = "slerp",
    labels_a: LabelsLike = None,
    labels_b: LabelsLike = None,
    *,
    as_uint8: bool = True,
) -> np.ndarray | Tensor:
    """``frames`` images morphing from ``img_a`` to ``img_b`` through latent space.

    The path runs between the posterior means ``mu_a`` and ``mu_b`` (``mode`` = ``"slerp"``
    or ``"lerp"``); conditional models also blend the two images' label embeddings. Frame
    0 is exactly ``decode(vae, mu_a)`` and the last exactly ``decode(vae, mu_b)``: the
    endpoints are set to the means themselves, and every frame is decoded on its own,
    because a convolution may round differently inside a larger batch.
    """
    if mode not in ("slerp", "lerp"):
        raise ValueError(f"mode must be 'slerp' or 'lerp', got {mode!r}")
    if frames < 2:
        raise ValueError(f"frames must be >= 2, got {frames}")
    vae = as_vae(vae)
    mu_a = encode(vae, img_a, labels_a)
    mu_b = encode(vae, img_b, labels_b)
    if mu_a.shape[0] != 1 or mu_b.shape[0] != 1:
        raise ValueError("interpolate takes one image for each endpoint")
    t = torch.linspace(0, 1, frames)
    z = (slerp if mode == "slerp" else lerp)(mu_a[0], mu_b[0], t)  # (frames, z_dim)
    z[0], z[-1] = mu_a[0], mu_b[0]
    emb = None
    if vae.label_dims:
        ya, yb = label_tensor(vae, labels_a, 1), label_tensor(vae, labels_b, 1)
        ea, eb = vae.decoder.embed_labels(ya, 1)[0], vae.decoder.embed_labels(yb, 1)[0]
        emb = lerp(ea, eb, t.to(ea.device))
        emb[0], emb[-1] = ea, eb
    out = [
        _decode_tensor(vae, z[i : i + 1], None if emb is None else label_tensor(vae, labels_a, 1),
                       None if emb is None else emb[i : i + 1])
        for i in range(frames)
    ]  # fmt: skip
    return _output(torch.cat(out), as_uint8)


# --------------------------------------------------------------------------- attribute editing
def _dataset(dataset: Any) -> Any:
    if isinstance(dataset, (str, os.PathLike)):
        from avatarforge.data.dataset import PackedDataset

        return PackedDataset(dataset)
    return dataset


def _value_index(field: Any, value: Any) -> int | None:
    """A class name/index of a data set label field -> its index (None for ``ANY``)."""
    if value == ANY:
        return None
    if (
        isinstance(value, (int, np.integer))
        and not isinstance(value, bool)
        and 0 <= int(value) < field.num_classes
    ):
        return int(value)
    if str(value) in field.values:
        return list(field.values).index(str(value))
    raise ValueError(
        f"label {field.name!r} has no value {value!r}; valid values: {', '.join(field.values)} (or '{ANY}')"
    )


@torch.no_grad()
def attribute_vector(
    vae: nn.Module,
    dataset: Any,
    attribute: str,
    value_from: Any,
    value_to: Any,
    *,
    max_images: int = 2000,
    seed: int = 0,
) -> Tensor:
    """Latent direction from one attribute value to another: ``mean mu(to) - mean mu(from)``.

    Args:
        vae: the model (or its run directory).
        dataset: a packed data set (path or :class:`~avatarforge.data.dataset.PackedDataset`)
            with the categorical label ``attribute``, at the model's resolution.
        attribute: label name, e.g. ``"hair_color"``, ``"accessory"``.
        value_from: class name or index, or ``"*"``: every image with a known value other
            than ``value_to`` ("make hair blonde": ``"*" -> "blonde"``).
        value_to: class name or index.
        max_images: at most this many images per group (a seeded random subset).
        seed: picks the subset.

    Returns:
        ``(z_dim,)`` float32 direction; add it to a latent (:func:`apply_attribute`).
        Conditional models encode each image with its own data set labels.

    Raises:
        ValueError: unknown attribute or value, or a group without images.
    """
    vae = as_vae(vae)
    ds = _dataset(dataset)
    schema = ds.schema
    if attribute not in schema.names:
        raise ValueError(f"the data set has no label {attribute!r}; its labels: {', '.join(schema.names)}")
    field = schema[attribute]
    if field.kind != "categorical":
        raise ValueError(f"label {attribute!r} is continuous; attribute_vector takes categorical labels")
    to_idx = _value_index(field, value_to)
    if to_idx is None:
        raise ValueError(f"value_to must be a value of {attribute!r}, not '{ANY}'")
    from_idx = _value_index(field, value_from)
    col = ds.labels[:, schema.index(attribute)]  # (N,) float, NaN = unknown
    known = ~np.isnan(col)
    to_mask = known & (col == to_idx)
    from_mask = known & (col != to_idx) if from_idx is None else known & (col == from_idx)
    rng = np.random.default_rng(seed)
    means = []
    for mask, name in ((from_mask, value_from), (to_mask, value_to)):
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            raise ValueError(f"no image in the data set has {attribute}={name}")
        if idx.size > max_images:
            idx = np.sort(rng.choice(idx, size=max_images, replace=False))
        labels = None
        if vae.label_dims:
            from avatarforge.data.dataset import label_indices

            names = vae.label_names
            labels = label_indices(torch.from_numpy(ds.labels[idx]), schema, names)
        total = torch.zeros(vae.z_dim, dtype=torch.float64)
        for s in range(0, idx.size, _CHUNK):
            part = idx[s : s + _CHUNK]
            mu = encode(vae, ds.images_uint8(part), None if labels is None else labels[s : s + _CHUNK])
            total += mu.double().sum(0)
        means.append(total / idx.size)
    return (means[1] - means[0]).float()


def apply_attribute(
    vae: nn.Module,
    images: ImagesLike,
    direction: Tensor,
    strength: float = 1.0,
    labels: LabelsLike = None,
    *,
    as_uint8: bool = True,
) -> np.ndarray | Tensor:
    """``decode(mu(images) + strength * direction)``; ``strength = 0`` is a reconstruction."""
    vae = as_vae(vae)
    mu = encode(vae, images, labels)
    z = mu + float(strength) * torch.as_tensor(direction, dtype=torch.float32).reshape(1, -1)
    return decode(vae, z, labels, as_uint8=as_uint8)


def relabel(
    vae: nn.Module,
    images: ImagesLike,
    labels_from: LabelsLike,
    labels_to: LabelsLike,
    strength: float = 1.0,
    *,
    as_uint8: bool = True,
) -> np.ndarray | Tensor:
    """Conditional models: encode with ``labels_from``, decode with ``labels_to``.

    The latent keeps what the labels do not describe (pose, expression, ...), so this
    changes only the labelled attributes. ``strength`` blends the two label embeddings
    (0 = reconstruction, 1 = the new labels; > 1 exaggerates).
    """
    vae = as_vae(vae)
    if not vae.label_dims:
        raise ValueError("relabel needs a conditional VAE (cvae); use attribute_vector + apply_attribute")
    mu = encode(vae, images, labels_from)
    n = mu.shape[0]
    ya, yb = label_tensor(vae, labels_from, n), label_tensor(vae, labels_to, n)
    with torch.no_grad():
        ea, eb = vae.decoder.embed_labels(ya, n), vae.decoder.embed_labels(yb, n)
        emb = torch.lerp(ea, eb, float(strength))
    return _output(_decode_tensor(vae, mu, yb, emb), as_uint8)


# --------------------------------------------------------------------------- files
def load_images(paths: Sequence[str | os.PathLike], vae: nn.Module, fit: str = "crop") -> np.ndarray:
    """Read image files for ``vae``: ``(N, res, res, C)`` uint8.

    Decoded and validated with :func:`avatarforge.data.imagefile.load_image` and resized
    with :func:`~avatarforge.data.imagefile.normalize_image` exactly as ``avatarforge data
    prepare`` ingests files (centre crop by default, ``fit="pad"`` to keep the whole
    picture). RGBA models keep the alpha channel; RGB models composite transparency onto
    white.

    Raises:
        ValueError: a file is not a usable image (the message names the file and why).
    """
    from avatarforge.data.imagefile import ImageRejected, load_image, normalize_image

    out = []
    for p in paths:
        try:
            img = load_image(Path(p))
            arr = normalize_image(
                img, vae.resolution, fit=fit, alpha="keep" if vae.channels == 4 else "composite"
            )
        except ImageRejected as e:
            raise ValueError(f"{p}: {e}") from None
        out.append(arr)
    if not out:
        raise ValueError("no images given")
    return np.stack(out)
