"""The GAN interface every generator/discriminator family implements, plus small helpers.

The trainer, the samplers and the evaluation code only ever talk to GANs through this
interface, so a new family (``dcgan``, ``cgan``, ``infogan``, ``stylegan``, ...) plugs in by
registering two classes::

    @register_model("dcgan", role="generator")
    class DCGANGenerator(ConfigModule): ...

    @register_model("dcgan", role="discriminator")
    class DCGANDiscriminator(ConfigModule): ...

Generator
---------
Constructor keyword arguments (JSON types, recorded in ``config.json``):

* ``resolution: int`` -- output side, a power of two in :data:`VALID_RESOLUTIONS`
  (``ValueError`` naming the valid sizes otherwise);
* ``channels: int = 3`` -- 3 (RGB) or 4 (RGBA);
* ``z_dim: int`` -- latent size;
* ``label_dims: list[int] = []`` -- number of classes of each categorical label the model is
  conditioned on; empty = unconditional (``cgan`` requires at least one label);
* architecture arguments (``base_channels``, ``max_channels``, ...), family specific.

Attributes: ``resolution``, ``channels``, ``z_dim``, ``label_dims`` (list) and ``code_dims``
(``{"categorical": [k1, ...], "continuous": n}``; :data:`EMPTY_CODE_DIMS` for families
without latent codes).

``G(z, labels=None, codes=None, truncation_psi=1.0) -> (B, C, H, W)`` images roughly in
``[-1, 1]``:

* ``z``: ``(B, z_dim)`` float, standard normal (see :meth:`sample_z`);
* ``labels``: ``(B, len(label_dims))`` integer tensor; column ``i`` holds values in
  ``[0, label_dims[i]]`` *inclusive*: index ``label_dims[i]`` means "unknown" (a NaN in the
  data set), so every label embedding has ``num_classes + 1`` rows. Unconditional models
  ignore ``labels`` so a trainer may pass the batch's labels uniformly;
* ``codes`` (InfoGAN only): ``(B, sum(categorical) + continuous)`` float, one one-hot block
  per categorical code followed by the continuous codes in ``[-1, 1]`` (see
  ``sample_codes``). An InfoGAN generator *requires* them (it never samples hidden
  randomness inside ``forward``); other families reject them;
* ``truncation_psi``: dcgan/cgan/infogan scale ``z`` toward the mean, ``z * psi``
  (:func:`apply_truncation`); StyleGAN does the usual w-space interpolation.

``G.sample_z(n, generator=None, device=None) -> (n, z_dim)`` standard normal;
InfoGAN also has ``G.sample_codes(n, generator=None, device=None)``.
:func:`sample_inputs` builds the keyword arguments for any generator.

Discriminator
-------------
Constructor keyword arguments: ``resolution``, ``channels``, ``label_dims: list[int] = []``,
``spectral_norm: bool = False`` plus architecture arguments; InfoGAN's also takes
``code_dims`` (pass ``G.code_dims``).

``D(images, labels=None) -> logits (B,)`` (raw scores, no sigmoid). Conditional
discriminators use a projection head (Miyato & Koyama 2018): ``logit = linear(phi(x)) +
sum_i <embed_i(label_i), phi(x)>``. InfoGAN: ``D(images, labels=None, return_q=False)``;
with ``return_q=True`` it returns ``(logits, q_cat_logits: list[(B, k)], q_cont_mean (B, n),
q_cont_logstd (B, n))`` from a Q head sharing D's trunk, to be fed to
:func:`avatarforge.models.infogan.mutual_information_loss`.

Random numbers
--------------
Sampling helpers draw on the ``generator``'s device and then move to ``device``, so a CPU
``torch.Generator`` gives the same latents whichever device the model runs on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = [
    "EMPTY_CODE_DIMS",
    "VALID_RESOLUTIONS",
    "GANDiscriminator",
    "GANGenerator",
    "GeneratorMixin",
    "apply_truncation",
    "check_channels",
    "check_labels",
    "check_resolution",
    "code_features",
    "normalize_code_dims",
    "normalize_label_dims",
    "sample_codes",
    "sample_inputs",
    "sample_z",
]

#: Output sides the GAN families support (powers of two, 4x4 seed doubled 3..6 times).
VALID_RESOLUTIONS: tuple[int, ...] = (32, 64, 128, 256)

#: ``code_dims`` of a generator without InfoGAN latent codes.
EMPTY_CODE_DIMS: dict[str, Any] = {"categorical": [], "continuous": 0}


# ---------------------------------------------------------------------------- protocols
@runtime_checkable
class GANGenerator(Protocol):
    """What the trainer and samplers may rely on for every registered GAN generator."""

    resolution: int
    channels: int
    z_dim: int
    label_dims: list[int]
    code_dims: dict[str, Any]

    def __call__(
        self,
        z: Tensor,
        labels: Tensor | None = None,
        codes: Tensor | None = None,
        truncation_psi: float = 1.0,
    ) -> Tensor:
        """``(B, z_dim)`` latents -> ``(B, C, H, W)`` images roughly in ``[-1, 1]``."""
        ...

    def sample_z(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        """``(n, z_dim)`` standard-normal latents."""
        ...


@runtime_checkable
class GANDiscriminator(Protocol):
    """What the trainer may rely on for every registered GAN discriminator."""

    resolution: int
    channels: int
    label_dims: list[int]

    def __call__(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        """``(B, C, H, W)`` images -> ``(B,)`` logits."""
        ...


# ---------------------------------------------------------------------------- validation
def check_resolution(resolution: int) -> int:
    """Return ``resolution`` if supported, else raise ``ValueError`` naming the valid sizes."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution not in VALID_RESOLUTIONS:
        valid = ", ".join(map(str, VALID_RESOLUTIONS))
        raise ValueError(f"resolution must be one of {valid} (a power of two), got {resolution!r}")
    return resolution


def check_channels(channels: int) -> int:
    """Return ``channels`` if it is 3 (RGB) or 4 (RGBA), else raise ``ValueError``."""
    if channels not in (3, 4) or isinstance(channels, bool):
        raise ValueError(f"channels must be 3 (RGB) or 4 (RGBA), got {channels!r}")
    return int(channels)


def normalize_label_dims(label_dims: Sequence[int] | None) -> list[int]:
    """``label_dims`` as a list of positive ints (``None`` -> ``[]``)."""
    dims = [] if label_dims is None else list(label_dims)
    for k in dims:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"label_dims entries are class counts >= 1, got {label_dims!r}")
    return dims


def check_labels(labels: Tensor | None, label_dims: Sequence[int], batch: int) -> Tensor | None:
    """Validate ``labels`` for a model conditioned on ``label_dims``.

    Returns ``None`` for unconditional models (labels are ignored there) and the labels
    otherwise. Only shape and dtype are checked: a value check would force a device sync
    every step; out-of-range values fail inside ``nn.Embedding`` instead.
    """
    if not label_dims:
        return None
    if labels is None:
        raise ValueError(
            f"this model is conditioned on {len(label_dims)} label(s) {list(label_dims)}; pass labels"
        )
    if labels.shape != (batch, len(label_dims)):
        raise ValueError(
            f"labels must have shape (batch, {len(label_dims)}) = ({batch}, {len(label_dims)}), "
            f"got {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor (class indices), got {labels.dtype}")
    return labels


def normalize_code_dims(code_dims: Mapping[str, Any] | None) -> dict[str, Any]:
    """``code_dims`` as ``{"categorical": [int, ...], "continuous": int}`` (``None`` -> empty)."""
    if code_dims is None:
        return {"categorical": [], "continuous": 0}
    unknown = set(code_dims) - {"categorical", "continuous"}
    if unknown:
        raise ValueError(f"code_dims keys are 'categorical' and 'continuous', got extra {sorted(unknown)}")
    cat = list(code_dims.get("categorical", []))
    cont = code_dims.get("continuous", 0)
    if any(isinstance(k, bool) or not isinstance(k, int) or k < 2 for k in cat):
        raise ValueError(f"categorical code sizes must be ints >= 2, got {cat!r}")
    if isinstance(cont, bool) or not isinstance(cont, int) or cont < 0:
        raise ValueError(f"continuous code count must be an int >= 0, got {cont!r}")
    return {"categorical": cat, "continuous": cont}


def code_features(code_dims: Mapping[str, Any]) -> int:
    """Width of the ``codes`` tensor: ``sum(categorical) + continuous``."""
    return sum(code_dims["categorical"]) + code_dims["continuous"]


# ---------------------------------------------------------------------------- sampling
def _draw_device(generator: torch.Generator | None, device: torch.device | str | None) -> torch.device | None:
    # Draw where the RNG lives so results do not depend on the model's device.
    return (
        generator.device if generator is not None else (torch.device(device) if device is not None else None)
    )


def sample_z(
    n: int,
    z_dim: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """``(n, z_dim)`` standard-normal latents, drawn with ``generator`` then moved to ``device``."""
    z = torch.randn(n, z_dim, generator=generator, device=_draw_device(generator, device))
    return z if device is None else z.to(device)


def sample_codes(
    n: int,
    code_dims: Mapping[str, Any],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """InfoGAN codes ``(n, sum(categorical) + continuous)``.

    One uniformly drawn one-hot block per categorical code, then continuous codes
    uniform in ``[-1, 1]``.
    """
    dev = _draw_device(generator, device)
    parts = []
    for k in code_dims["categorical"]:
        idx = torch.randint(k, (n,), generator=generator, device=dev)
        parts.append(torch.nn.functional.one_hot(idx, k).float())  # (n, k)
    if code_dims["continuous"]:
        parts.append(torch.rand(n, code_dims["continuous"], generator=generator, device=dev) * 2 - 1)
    codes = torch.cat(parts, 1) if parts else torch.zeros(n, 0, device=dev)
    return codes if device is None else codes.to(device)


def apply_truncation(z: Tensor, truncation_psi: float) -> Tensor:
    """z-space truncation used by dcgan/cgan/infogan: ``z * psi`` (pulls samples to the mode).

    ``psi == 1`` returns ``z`` untouched (no extra kernel in the training path).
    """
    return z if truncation_psi == 1.0 else z * truncation_psi


def sample_inputs(
    G: GANGenerator,
    n: int,
    labels: Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Tensor | None]:
    """Keyword arguments for ``G(**kwargs)`` drawing ``n`` samples from any GAN family.

    Draws ``z`` and (for InfoGAN) ``codes``; a conditional model without ``labels`` gets
    random labels, uniform over the known classes.
    """
    out: dict[str, Tensor | None] = {"z": G.sample_z(n, generator=generator, device=device)}
    dev = out["z"].device  # type: ignore[union-attr]
    if code_features(G.code_dims):
        out["codes"] = G.sample_codes(n, generator=generator, device=dev)  # type: ignore[attr-defined]
    if G.label_dims:
        if labels is None:
            draw = _draw_device(generator, dev)
            cols = [torch.randint(k, (n, 1), generator=generator, device=draw) for k in G.label_dims]
            labels = torch.cat(cols, 1).to(dev)
        out["labels"] = labels
    return out


# ---------------------------------------------------------------------------- shared parts
class GeneratorMixin:
    """The header fields and latent samplers every ``z -> image`` generator shares.

    Mixed into the DCGAN, cGAN and InfoGAN generators and the VAE decoder (an ``nn.Module``),
    so :class:`GANGenerator`'s attributes and ``sample_z`` / ``sample_codes`` are written once.
    A generator without InfoGAN codes has empty ``code_dims``: its ``sample_codes`` gives
    ``(n, 0)``, and it is never asked for codes (``sample_inputs`` checks ``code_features``).
    """

    resolution: int
    channels: int
    z_dim: int
    label_dims: list[int]
    code_dims: dict[str, Any]

    def _init_header(
        self,
        resolution: int,
        channels: int,
        z_dim: int,
        label_dims: list[int],
        code_dims: dict[str, Any] | None = None,
    ) -> None:
        """Validate and set the fields of :class:`GANGenerator` (``label_dims`` already normalised)."""
        self.resolution = check_resolution(resolution)
        self.channels = check_channels(channels)
        self.z_dim = z_dim
        self.label_dims = label_dims
        self.code_dims = code_dims if code_dims is not None else normalize_code_dims(None)

    def _default_device(self, device: torch.device | str | None) -> torch.device | str:
        return device if device is not None else next(self.parameters()).device  # type: ignore[attr-defined]

    def sample_z(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        """``(n, z_dim)`` standard normal (the prior), on ``device`` (default: the model's)."""
        return sample_z(n, self.z_dim, generator, self._default_device(device))

    def sample_codes(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        """``(n, code_features)``: uniform one-hot categorical blocks, then U(-1, 1) continuous."""
        return sample_codes(n, self.code_dims, generator, self._default_device(device))
