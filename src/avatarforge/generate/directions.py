"""Attribute sliders: supervised (labels, InfoGAN codes) and unsupervised (GANSpace, SeFa).

Kinds of :class:`Direction`:

* ``label`` -- conditional models (cgan, conditional dcgan/stylegan/VAE): the slider blends
  the label embedding from the latent's own class toward a target class (``amount`` 0 =
  unchanged, 1 = the target class; see :func:`~avatarforge.generate.pipeline.blend_labels`).
  For StyleGAN the blend is applied as the ``w`` difference it causes, so it also edits
  latents found by inversion.
* ``code`` -- InfoGAN: a continuous code ``cJ`` is *set* to ``amount`` (trained range
  [-1, 1]); a categorical code ``catK=J`` blends the one-hot block toward class ``J``.
* ``z`` -- every other generator (dcgan, cgan, infogan, the VAEs' decoders), unsupervised,
  on the first layer, the one that maps ``z`` (plus labels and codes) to features:
  - **SeFa**: eigenvectors of ``A^T A`` where ``A`` is that layer's weight on the ``z`` inputs
    (a ``ConvTranspose2d`` from ``z`` to 4x4 features, or the VAE decoder's ``Linear``): the
    unit ``z`` moves that change the first features most, whatever the labels;
  - **GANSpace**: principal components of the first layer's features over random ``z``,
    mapped back to ``z`` by least squares (Härkönen et al.'s recipe for BigGAN). With a
    linear first layer and ``z ~ N(0, I)`` these are SeFa's directions again (up to sampling
    noise), ordered by explained variance.
  ``amount`` is in standard deviations of ``z`` along the direction (before truncation).
* ``w`` -- StyleGAN, unsupervised:
  - **GANSpace** (Härkönen et al. 2020): principal components of ``w`` over random samples;
  - **SeFa** (Shen & Zhou 2021, closed form): eigenvectors of ``A^T A`` where ``A`` stacks
    the affine (style) weights of chosen layers -- by default the first modulation,
    ``G.style_affine_weights()[0]`` -- i.e. the unit ``w`` moves that change those styles most.
  ``amount`` is in standard deviations of ``w`` along the direction. Edits apply to every
  style vector unless ``layers`` restricts them (coarse layers: shape/pose; fine: colour).

Unsupervised directions have no meaning attached; :func:`name_directions` finds one: it
moves procedural-avatar samples along each direction, classifies both ends with the
``avatar`` attribute net (:mod:`avatarforge.eval.avatar_net`) -- or any classifier you pass
-- and names the direction after the attribute class whose predicted probability changes
most, e.g. ``hair_color:blonde+`` (``-`` when moving forward lowers it). Directions with no
clear effect (below ``min_effect``) keep their id (``sefa3``).

Example::

    pipe = GeneratorPipeline.from_pretrained("runs/00003-stylegan-64")
    dirs = name_directions(pipe, sefa_directions(pipe, k=8))
    strip = slide(pipe, pipe(seeds=[7]).latent, dirs[0], amounts=[-3, -1.5, 0, 1.5, 3])
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avatarforge.generate.conditioning import code_columns
from avatarforge.generate.pipeline import GenerationResult, GeneratorPipeline, Latent

__all__ = [
    "Classifier",
    "Direction",
    "apply_direction",
    "avatar_classifier",
    "code_directions",
    "find_direction",
    "ganspace_directions",
    "label_directions",
    "load_directions",
    "measure_effects",
    "move_to_classes",
    "name_directions",
    "save_directions",
    "sefa_directions",
    "slide",
]

#: ``images (B, H, W, C) uint8 -> {attribute: {class name: (B,) probability}}``; continuous
#: attributes use the class name ``""`` and hold predicted values.
Classifier = Callable[[np.ndarray], Mapping[str, Mapping[str, np.ndarray]]]


@dataclass
class Direction:
    """One slider.

    Attributes:
        id: stable identifier (``sefa0``, ``pca3``, ``hair_color=pink``, ``c0``).
        name: human name (auto-named, or ``id``).
        kind: ``"w"`` (StyleGAN), ``"z"`` (other generators), ``"label"`` or ``"code"``.
        method: ``"sefa"``, ``"pca"``, ``"label"`` or ``"code"``.
        vector: unit vector in ``w`` space (kind ``w``) or ``z`` space (kind ``z``).
        scale: std of ``w`` (``z``) along ``vector`` (``amount`` 1 = one std).
        layers: style indices edited (``None`` = all).
        attribute, value: the target class of a label slider.
        code: ``"cJ"`` or ``"catK=J"`` for code sliders.
        range: the slider's default ``(low, high)`` amounts.
        score: explained-variance ratio (PCA) or eigenvalue (SeFa).
        effect: what :func:`name_directions` measured (attribute, class, change).
    """

    id: str
    kind: str
    method: str
    name: str = ""
    vector: list[float] | None = None
    scale: float = 1.0
    layers: list[int] | None = None
    attribute: str | None = None
    value: str | None = None
    code: str | None = None
    range: tuple[float, float] = (-3.0, 3.0)
    score: float = 0.0
    effect: dict[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        self.name = self.name or self.id
        self.range = (float(self.range[0]), float(self.range[1]))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["range"] = list(self.range)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Direction:
        kw = dict(d)
        kw["range"] = tuple(kw.get("range", (-3.0, 3.0)))
        return cls(**kw)


# ----------------------------------------------------------------------------- discovery
def _require_stylegan(pipe: GeneratorPipeline, what: str) -> None:
    if not pipe.is_stylegan:
        raise ValueError(
            f"{what} directions of StyleGAN's w space do not apply to this {pipe.family}; compute its own "
            "(z space): sefa_directions(pipe) or 'avatarforge edit directions --method sefa'"
        )


def _z_input_weights(pipe: GeneratorPipeline) -> torch.Tensor:
    """``A (features, z_dim)``: the first layer's weights on ``z`` (float64, CPU).

    The first ``Linear`` or ``ConvTranspose2d`` of the generator that takes at least
    ``z_dim`` inputs: dcgan/infogan/conditional dcgan put ``z`` first in its input (then
    codes, then label embeddings), cgan feeds ``z`` alone (labels act through its
    conditional batch norms), a VAE decoder's ``fc`` takes ``z`` then the label embeddings.
    """
    from torch import nn

    z_dim = pipe.z_dim
    for m in pipe.G.modules():
        if isinstance(m, nn.Linear) and m.in_features >= z_dim:
            return m.weight.detach()[:, :z_dim].double().cpu()
        if isinstance(m, nn.ConvTranspose2d) and m.in_channels >= z_dim:
            # weight (in, out, kh, kw): every output unit's weights on the z inputs
            return m.weight.detach()[:z_dim].reshape(z_dim, -1).T.double().cpu()
    raise ValueError(
        f"cannot find the first layer of this {pipe.family} generator (a Linear or ConvTranspose2d "
        f"taking z, {z_dim} inputs); SeFa/GANSpace need it"
    )


def _sample_zs(pipe: GeneratorPipeline, n: int, seed: int) -> torch.Tensor:
    """``(n, z_dim)`` random ``z`` of the generator's prior, float64."""
    return pipe.random_latents(n, seed).z.double()


def _z_directions(
    method: str, evecs: torch.Tensor, k: int, z: torch.Tensor, score: Callable[[int], float]
) -> list[Direction]:
    return _eigen_directions(method, evecs, k, None, lambda i, v: (float((z @ v).std()), score(i)), "z")


def _sample_ws(pipe: GeneratorPipeline, n: int, seed: int) -> torch.Tensor:
    """``(n, w_dim)`` w of random latents (truncation 1), float64 on the CPU."""
    lat = pipe.map(pipe.random_latents(n, seed))
    assert lat.ws is not None
    return lat.ws[:, 0].double()


def _eigen_directions(
    method: str,
    evecs: torch.Tensor,
    k: int,
    layers: Sequence[int] | None,
    measure: Callable[[int, torch.Tensor], tuple[float, float]],
    kind: str = "w",
) -> list[Direction]:
    """``w`` (or ``z``) directions along the first ``k`` columns of ``evecs`` (ids
    ``{method}0``, ...), each signed so that its largest entry is positive (eigh's sign is
    arbitrary); ``measure(i, v)`` gives the ``(scale, score)`` of column ``i`` (signed: ``v``)."""
    out = []
    for i in range(min(k, evecs.shape[1])):
        v = evecs[:, i]
        v = v * torch.sign(v[v.abs().argmax()])
        scale, score = measure(i, v)
        out.append(
            Direction(
                id=f"{method}{i}",
                kind=kind,
                method=method,
                vector=v.float().tolist(),
                scale=scale,
                layers=list(layers) if layers is not None else None,
                score=score,
            )
        )
    return out


def ganspace_directions(
    pipe: GeneratorPipeline,
    k: int = 8,
    n_samples: int = 4096,
    seed: int = 0,
    layers: Sequence[int] | None = None,
) -> list[Direction]:
    """Top-``k`` principal components (GANSpace), largest variance first.

    StyleGAN: of ``w``. Other generators: of the first layer's features over ``n_samples``
    random ``z`` (labels and codes add a constant per sample, left out), each mapped back to
    the ``z`` move that makes it (least squares); ``layers`` is StyleGAN's only.
    """
    if not pipe.is_stylegan:
        if layers is not None:
            raise ValueError(f"layers are StyleGAN style indices; this {pipe.family} has none")
        A = _z_input_weights(pipe)  # (F, z_dim)
        z = _sample_zs(pipe, n_samples, seed)
        f = (z - z.mean(0)) @ A.T  # (n, F) features' variation due to z
        evals, u = torch.linalg.eigh(f.T @ f / (len(f) - 1))
        evals, u = evals.flip(0).clamp_min(0), u.flip(1)
        kk = min(k, A.shape[1])
        v = torch.linalg.lstsq(A, u[:, :kk]).solution  # (z_dim, k): A v = u
        v = v / v.norm(dim=0, keepdim=True).clamp_min(1e-12)
        total = float(evals.sum())
        return _z_directions("pca", v, kk, z, lambda i: float(evals[i]) / total if total > 0 else 0.0)
    w = _sample_ws(pipe, n_samples, seed)
    w = w - w.mean(0)
    evals, evecs = torch.linalg.eigh(w.T @ w / (len(w) - 1))  # ascending
    evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
    total = float(evals.sum())
    return _eigen_directions(
        "pca",
        evecs,
        k,
        layers,
        lambda i, v: (float(evals[i].sqrt()), float(evals[i]) / total if total > 0 else 0.0),
    )


def sefa_directions(
    pipe: GeneratorPipeline,
    k: int = 8,
    layers: Sequence[int] = (0,),
    apply_layers: Sequence[int] | None = None,
    n_samples: int = 1024,
    seed: int = 0,
) -> list[Direction]:
    """Closed-form SeFa directions: top eigenvectors of ``A^T A``, for any generator.

    StyleGAN: ``A`` stacks the affine (style) weights of ``layers``; the directions live in
    ``w``. Other generators (dcgan, cgan, infogan, VAE decoders): ``A`` is the first layer's
    weights on ``z`` (:func:`_z_input_weights`; ``layers`` must be ``(0,)``); the directions
    live in ``z``.

    Args:
        layers: StyleGAN style indices whose affine weights define ``A`` (default: the first
            modulation, ``G.style_affine_weights()[0]``).
        apply_layers: style indices the slider edits (default: all; StyleGAN only).
        n_samples: random ``w`` (``z``) used to measure the spread along each direction (``scale``).
    """
    if not pipe.is_stylegan:
        if tuple(layers) != (0,) or apply_layers is not None:
            raise ValueError(
                f"this {pipe.family} has one first layer (layers=(0,)); style layers are StyleGAN's only"
            )
        A = _z_input_weights(pipe)
        evals, evecs = torch.linalg.eigh(A.T @ A)
        evals, evecs = evals.flip(0), evecs.flip(1)
        z = _sample_zs(pipe, n_samples, seed)
        return _z_directions("sefa", evecs, k, z, lambda i: float(evals[i]))
    mats = pipe.G.style_affine_weights()
    bad = [i for i in layers if not 0 <= i < len(mats)]
    if bad:
        raise ValueError(f"layers must be style indices in 0..{len(mats) - 1}, got {bad}")
    A = torch.cat([mats[i].double().cpu() for i in layers], 0)  # (F, w_dim)
    evals, evecs = torch.linalg.eigh(A.T @ A)
    evals, evecs = evals.flip(0), evecs.flip(1)
    w = _sample_ws(pipe, n_samples, seed)
    return _eigen_directions(
        "sefa", evecs, k, apply_layers, lambda i, v: (float((w @ v).std()), float(evals[i]))
    )


def label_directions(pipe: GeneratorPipeline, attributes: Sequence[str] | None = None) -> list[Direction]:
    """One slider per (attribute, class) of a conditional model: blend toward that class."""
    info = pipe.labels
    if not info.dims:
        raise ValueError(f"label sliders need a conditional model; this {pipe.family} is unconditional")
    names = list(attributes) if attributes is not None else list(info.names)
    out = []
    for name in names:
        i = info.index(name)
        for c in range(info.dims[i]):
            value = info.class_name(i, c)
            out.append(
                Direction(
                    id=f"{name}={value}",
                    name=f"{name}:{value}+",
                    kind="label",
                    method="label",
                    attribute=name,
                    value=value,
                    range=(0.0, 1.0),
                )
            )
    return out


def code_directions(pipe: GeneratorPipeline) -> list[Direction]:
    """InfoGAN sliders: each continuous code ``cJ`` (range -1..1) and each categorical class."""
    cols = code_columns(pipe.code_dims)
    if not cols.width:
        raise ValueError(f"code sliders need an InfoGAN model; this {pipe.family} has no latent codes")
    out = [
        Direction(id=f"c{j}", kind="code", method="code", code=f"c{j}", range=(-1.0, 1.0))
        for j in range(len(cols.continuous))
    ]
    for k, (_, n_cls) in enumerate(cols.categorical):
        out += [
            Direction(id=f"cat{k}={j}", kind="code", method="code", code=f"cat{k}={j}", range=(0.0, 1.0))
            for j in range(n_cls)
        ]
    return out


# ----------------------------------------------------------------------------- applying
def apply_direction(
    pipe: GeneratorPipeline, latent: Latent, direction: Direction, amount: float | torch.Tensor
) -> Latent:
    """``latent`` moved ``amount`` along ``direction`` (a new :class:`Latent`).

    ``amount`` is a number or ``(N,)`` per latent. Units: standard deviations (``w``),
    blend weight 0..1 (``label``, categorical codes), the code value (continuous codes).
    """
    n = len(latent)
    amt = torch.as_tensor(amount, dtype=torch.float32).expand(n).clone()
    if direction.kind == "w":
        _require_stylegan(pipe, direction.method)
        lat = pipe.map(latent)
        assert lat.ws is not None and direction.vector is not None
        v = torch.tensor(direction.vector, dtype=torch.float32) * float(direction.scale)
        mask = torch.zeros(lat.ws.shape[1], dtype=torch.float32)
        mask[direction.layers if direction.layers is not None else slice(None)] = 1.0
        ws = lat.ws + amt[:, None, None] * mask[None, :, None] * v[None, None, :]
        return replace(lat, ws=ws)
    if direction.kind == "label":
        if latent.labels is None or direction.attribute is None:
            raise ValueError("a label slider needs a conditional model's latent (with labels)")
        col = pipe.labels.index(direction.attribute)
        target = latent.labels.clone()
        target[:, col] = pipe.labels.class_index(col, direction.value)
        if pipe.is_stylegan:
            # Apply as the w change the label blend causes, so latents without a meaningful
            # z (inversions) are edited too: ws + t * (w(z, target) - w(z, labels)).
            lat = pipe.map(latent)
            base = pipe.map(replace(latent, ws=None, labels_to=None, label_t=None))
            moved = pipe.map(replace(latent, ws=None, labels_to=target, label_t=torch.ones(n)))
            assert lat.ws is not None and base.ws is not None and moved.ws is not None
            delta = moved.ws - base.ws
            return replace(lat, ws=lat.ws + amt[:, None, None] * delta)
        return replace(latent, labels_to=target, label_t=amt)
    if direction.kind == "code":
        if latent.codes is None or direction.code is None:
            raise ValueError("a code slider needs an InfoGAN latent (with codes)")
        cols = code_columns(pipe.code_dims)
        codes = latent.codes.clone()
        if direction.code.startswith("cat"):
            k, j = (int(x) for x in direction.code[3:].split("="))
            start, n_cls = cols.categorical[k]
            onehot = torch.zeros(n_cls)
            onehot[j] = 1.0
            block = codes[:, start : start + n_cls]
            codes[:, start : start + n_cls] = block + amt[:, None] * (onehot[None] - block)
        else:
            codes[:, cols.continuous[int(direction.code[1:])]] = amt
        return replace(latent, codes=codes)
    if direction.kind == "z":
        if pipe.is_stylegan or latent.ws is not None:
            raise ValueError(
                f"{direction.id} is a z-space direction of a {pipe.family}; this model is a StyleGAN "
                "(use its w-space directions)"
                if pipe.is_stylegan
                else "a z-space direction cannot move a latent given by its w"
            )
        assert direction.vector is not None
        v = torch.tensor(direction.vector, dtype=latent.z.dtype) * float(direction.scale)
        if v.shape[0] != latent.z.shape[1]:
            raise ValueError(
                f"{direction.id} has {v.shape[0]} entries; this model's z has {latent.z.shape[1]}"
            )
        return replace(latent, z=latent.z + amt[:, None].to(latent.z.dtype) * v[None, :])
    raise ValueError(f"unknown direction kind {direction.kind!r}")


def move_to_classes(pipe: GeneratorPipeline, latent: Latent, attrs: Mapping[str, str]) -> Latent:
    """``latent`` moved to the classes ``attrs`` (``{"hair_color": "pink", ...}``), all at once.

    Every named attribute becomes exactly that class (a label slider at 1), the rest of the
    avatar is kept; unnamed attributes keep their values. Unlike applying label sliders one
    after the other, several attributes combine: the latent's ``labels`` (and ``labels_to``
    of a blend in progress) take every new class, and a StyleGAN latent moves by the ``w``
    difference the new labels cause (so inverted latents are edited too). The returned
    latent's labels name the classes shown, so its metadata records them.
    """
    if not attrs:
        return latent
    if latent.labels is None:
        raise ValueError(
            f"attributes need a conditional model's latent (with labels); this {pipe.family} has none"
        )
    info = pipe.labels
    labels = latent.labels.clone()
    labels_to = latent.labels_to.clone() if latent.labels_to is not None else None
    for name, value in attrs.items():
        col = info.index(name)
        idx = info.class_index(col, value)
        labels[:, col] = idx
        if labels_to is not None:
            labels_to[:, col] = idx
    if torch.equal(labels, latent.labels) and (labels_to is None or torch.equal(labels_to, latent.labels_to)):
        return latent
    if not pipe.is_stylegan:
        return replace(latent, labels=labels, labels_to=labels_to)
    lat = pipe.map(latent)
    base = pipe.map(replace(latent, ws=None))
    moved = pipe.map(replace(latent, ws=None, labels=labels, labels_to=labels_to))
    assert lat.ws is not None and base.ws is not None and moved.ws is not None
    return replace(lat, ws=lat.ws + (moved.ws - base.ws), labels=labels, labels_to=labels_to)


def slide(
    pipe: GeneratorPipeline,
    latent: Latent,
    direction: Direction,
    amounts: Sequence[float] | None = None,
    steps: int = 7,
    noise_mode: str = "const",
    rgba: bool | None = None,
    background: str | Sequence[int] | None = None,
) -> GenerationResult:
    """Images of ``latent[0]`` at each amount along ``direction`` (default: ``steps`` over its range)."""
    src = latent[0]
    if amounts is None:
        amounts = np.linspace(direction.range[0], direction.range[1], steps).tolist()
    amts = [float(a) for a in amounts]
    rep = src.repeat(len(amts))
    lat = apply_direction(pipe, rep, direction, torch.tensor(amts))
    images = pipe.render(lat, noise_mode, rgba, background)
    params = pipe.record_params(
        "slide",
        direction={k: v for k, v in direction.to_json().items() if k != "vector"},
        truncation=src.truncation,
        noise_mode=noise_mode,
        rgba=rgba,
        background=background,
    )
    items = [{"amount": a, **pipe.describe(lat[i])} for i, a in enumerate(amts)]
    return GenerationResult(images, lat, params, items, store_latent=True)


# ----------------------------------------------------------------------------- naming
def avatar_classifier(extractor: Any = None, device: str = "cpu") -> Classifier:
    """A :data:`Classifier` from the ``avatar`` attribute net (trained on first use, ~1 min).

    RGBA images are composited onto white first (the net was trained on drawn or white
    backgrounds).
    """
    if extractor is None:
        from avatarforge.eval.avatar_net import AvatarExtractor

        extractor = AvatarExtractor(device=device)

    def classify(images: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        pred = extractor.attribute_predictions(images)
        out: dict[str, dict[str, np.ndarray]] = {}
        for name, p in pred.items():
            if p.ndim == 2:
                out[name] = {c: p[:, j] for j, c in enumerate(extractor.class_names(name))}
            else:
                out[name] = {"": p}
        return out

    return classify


def measure_effects(
    pipe: GeneratorPipeline,
    direction: Direction,
    classifier: Classifier,
    n: int = 16,
    seed: int = 10_000,
    amounts: tuple[float, float] | None = None,
    truncation: float = 1.0,
) -> dict[tuple[str, str], float]:
    """Mean change of every classifier output between the two ends of ``direction``.

    ``n`` latents from seeds ``seed..seed+n-1`` are moved to ``amounts`` (default: the
    direction's range) and classified; returns ``{(attribute, class): mean(high - low)}``.
    """
    lo, hi = amounts if amounts is not None else direction.range
    base = pipe.map(pipe.latents(range(seed, seed + n), truncation=truncation))
    imgs_lo = pipe.render(apply_direction(pipe, base, direction, lo))
    imgs_hi = pipe.render(apply_direction(pipe, base, direction, hi))
    p_lo, p_hi = classifier(imgs_lo), classifier(imgs_hi)
    return {
        (attr, cls): float(np.mean(np.asarray(p_hi[attr][cls]) - np.asarray(vals)))
        for attr, by_cls in p_lo.items()
        for cls, vals in by_cls.items()
    }


def name_directions(
    pipe: GeneratorPipeline,
    directions: Sequence[Direction],
    classifier: Classifier | None = None,
    n: int = 16,
    seed: int = 10_000,
    min_effect: float = 0.1,
) -> list[Direction]:
    """Copies of ``directions`` named after the attribute they change most.

    For each direction, :func:`measure_effects`; the (attribute, class) with the largest
    absolute mean change names it ``attribute:class+`` (or ``-``; continuous attributes:
    ``smile+``), if the change is at least ``min_effect`` (probability units). The
    measurement is stored in ``direction.effect``; repeated names get ``~2``, ``~3``.
    """
    classify = classifier if classifier is not None else avatar_classifier(device=str(pipe.device))
    out: list[Direction] = []
    used: dict[str, int] = {}
    for d in directions:
        effects = measure_effects(pipe, d, classify, n=n, seed=seed)
        (attr, cls), delta = max(effects.items(), key=lambda kv: abs(kv[1]))
        effect = {"attribute": attr, "class": cls, "delta": round(delta, 4)}
        if abs(delta) >= min_effect:
            base = f"{attr}:{cls}" if cls else attr
            name = base + ("+" if delta > 0 else "-")
        else:
            name = d.id
        used[name] = used.get(name, 0) + 1
        if used[name] > 1:
            name = f"{name}~{used[name]}"
        out.append(replace(d, name=name, effect=effect))
    return out


# ----------------------------------------------------------------------------- files
def save_directions(
    path: str | os.PathLike, directions: Sequence[Direction], pipe: GeneratorPipeline
) -> Path:
    """Write directions as JSON, tagged with the model's hash (they only mean something for it)."""
    from avatarforge.fileio import atomic_write_json

    return atomic_write_json(
        Path(path),
        {"model": pipe.model_info(), "directions": [d.to_json() for d in directions]},
    )


def load_directions(path: str | os.PathLike, pipe: GeneratorPipeline | None = None) -> list[Direction]:
    """Read :func:`save_directions` output; with ``pipe``, refuse another model's directions."""
    data = json.loads(Path(path).read_text("utf-8"))
    want = (data.get("model") or {}).get("sha256")
    if pipe is not None and want and want != pipe.model_sha256:
        raise ValueError(
            f"{path} holds directions of another model (sha256 {want[:16]}...), not of this one "
            f"(sha256 {pipe.model_sha256[:16]}...); run 'avatarforge edit directions' for this model"
        )
    return [Direction.from_json(d) for d in data["directions"]]


def find_direction(directions: Sequence[Direction], key: str) -> Direction:
    """The direction whose ``name`` or ``id`` is ``key`` (or index ``key``)."""
    for d in directions:
        if key in (d.name, d.id):
            return d
    if key.isdigit() and int(key) < len(directions):
        return directions[int(key)]
    names = ", ".join(f"{d.name} ({d.id})" if d.name != d.id else d.id for d in directions)
    raise ValueError(f"no direction {key!r}; available: {names}")
