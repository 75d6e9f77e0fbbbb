"""Variational autoencoders: ``vae`` (unconditional) and ``cvae`` (label-conditional).

One registered model (role ``"vae"``) holds both halves, so a checkpoint is one
``vae_config.json`` + ``vae_model.safetensors`` pair and the trainer has one optimizer::

    encoder:  x (B, C, H, W)
              Conv(4, 2, 1) -> (B, E0, H/2, W/2)  + LeakyReLU           } log2(resolution / 4)
              Conv(4, 2, 1) -> (B, E1, H/4, W/4)  + GroupNorm + LReLU   } stride-2 blocks
              ...           -> (B, E_last, 4, 4)
              flatten [+ label embeddings] -> Linear -> mu (B, z_dim), logvar (B, z_dim)

    decoder:  z (B, z_dim) [+ label embeddings] -> Linear -> (B, D0, 4, 4) + LReLU
              ConvT(4, 2, 1) -> (B, D1, 8, 8)     + GroupNorm + LReLU   } log2(resolution / 4)
              ...            -> (B, D_last, H, W)                        } stride-2 blocks
              Conv(3, 1, 1)  -> (B, C, H, W) + tanh                     (in [-1, 1], like the data)

Sizes follow by construction: each stride-2 block halves (encoder) or doubles (decoder) the
side exactly, so ``log2(resolution / 4)`` of them connect the 4x4 bottleneck to any
power-of-two resolution from 32 to 256.

Why GroupNorm rather than BatchNorm: an encoder used as an API (``encode`` one image) must
not depend on the rest of the batch, and training- and eval-mode outputs should be the
same function; GroupNorm has no running statistics, so neither problem exists (and there
are no buffers to keep in sync across processes).

The conditional model (``cvae``, Sohn et al. 2015) embeds each categorical label (one
table per label with an extra "unknown" row at index ``num_classes``, as the GANs do) and
concatenates the embeddings to the encoder's flattened features and to the decoder's
``z``. :attr:`VAE.label_names` / :attr:`VAE.label_values` record what the labels mean so
a saved model can be driven by names (``{"hair_color": "blonde"}``) without its data set.

Random numbers: :meth:`VAE.reparameterize` draws its noise from an explicit
``torch.Generator`` (the trainer checkpoints its state for exact resume); nothing inside
``forward`` touches the global RNG.

``VAE.decoder`` implements the GAN generator interface (:mod:`avatarforge.models.gan_api`):
``decoder(z, labels=None)``, ``decoder.sample_z(n)``, ``resolution``/``channels``/``z_dim``/
``label_dims``/``code_dims``, so samplers and metrics written for generators work on VAEs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from avatarforge.models import gan_api
from avatarforge.models.base import ConfigModule
from avatarforge.models.layers import LabelEmbedding
from avatarforge.models.registry import register_model

__all__ = ["CVAE", "VAE", "VAEDecoder", "VAEEncoder", "vae_widths"]

#: logvar is clamped to this range before ``exp``: keeps a bad step from producing inf.
LOGVAR_RANGE = (-30.0, 20.0)
NORMS = ("group", "none")


# ---------------------------------------------------------------------------- builders
def vae_widths(resolution: int, base_channels: int, max_channels: int) -> list[int]:
    """Encoder feature widths at resolution/2, resolution/4, ..., 4x4 (doubling per halving).

    The decoder uses the same list reversed (widest at 4x4).
    """
    n = int(math.log2(gan_api.check_resolution(resolution) // 4))
    return [min(max_channels, base_channels * 2**i) for i in range(n)]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    groups = min(32, max(1, channels // 8))  # ~8 channels per group, at most 32 groups
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


def _check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    return norm


class VAEEncoder(nn.Module):
    """``(B, C, H, W)`` images [+ ``(B, L)`` labels] -> ``(mu, logvar)``, each ``(B, z_dim)``."""

    def __init__(
        self,
        resolution: int,
        channels: int,
        z_dim: int,
        label_dims: Sequence[int],
        base_channels: int,
        max_channels: int,
        embed_dim: int,
        norm: str,
    ) -> None:
        super().__init__()
        widths = vae_widths(resolution, base_channels, max_channels)
        layers: list[nn.Module] = []
        c_in = channels
        for i, c_out in enumerate(widths):
            # No norm on the first block: it would normalise away the input's colour scale.
            use_norm = i > 0 and norm != "none"
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=not use_norm)]  # side /2
            if use_norm:
                layers.append(_norm(norm, c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c_in = c_out
        self.trunk = nn.Sequential(*layers)  # -> (B, C_last, 4, 4)
        self.embed = LabelEmbedding(label_dims, embed_dim) if label_dims else None
        feat = c_in * 16 + (self.embed.out_features if self.embed is not None else 0)
        self.head = nn.Linear(feat, 2 * z_dim)  # -> mu and logvar side by side
        # Start near the prior (mu ~ 0, logvar ~ 0): the first KL terms are small and the
        # first reparameterised samples are not dominated by huge variances.
        nn.init.normal_(self.head.weight, 0.0, 0.01 / math.sqrt(feat))
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = self.trunk(x).flatten(1)  # (B, C_last * 16)
        if self.embed is not None:
            h = torch.cat([h, self.embed(labels)], 1)  # (B, C_last * 16 + L * embed_dim)
        mu, logvar = self.head(h).chunk(2, dim=1)  # 2 x (B, z_dim)
        return mu, logvar.clamp(*LOGVAR_RANGE)


class VAEDecoder(gan_api.GeneratorMixin, nn.Module):
    """``(B, z_dim)`` latents [+ labels] -> ``(B, C, H, W)`` images in [-1, 1].

    Follows the GAN generator interface (:class:`avatarforge.models.gan_api.GANGenerator`),
    so anything that samples from a generator can sample from a VAE's decoder.
    """

    def __init__(
        self,
        resolution: int,
        channels: int,
        z_dim: int,
        label_dims: Sequence[int],
        base_channels: int,
        max_channels: int,
        embed_dim: int,
        norm: str,
    ) -> None:
        super().__init__()
        self._init_header(resolution, channels, z_dim, list(label_dims))
        widths = vae_widths(resolution, base_channels, max_channels)[::-1]  # widest first
        self.embed = LabelEmbedding(label_dims, embed_dim) if label_dims else None
        in_dim = z_dim + (self.embed.out_features if self.embed is not None else 0)
        self.fc = nn.Linear(in_dim, widths[0] * 16)  # -> (B, D0 * 4 * 4)
        self.width0 = widths[0]
        layers: list[nn.Module] = [nn.LeakyReLU(0.2, inplace=True)]
        for c_in, c_out in itertools.pairwise([*widths, widths[-1]]):
            use_norm = norm != "none"
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=not use_norm))  # side x2
            if use_norm:
                layers.append(_norm(norm, c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        # A 3x3 conv (not one more transposed conv) makes the colours: it sees every output
        # pixel's neighbourhood, which smooths the transposed convs' checkerboard pattern.
        layers += [nn.Conv2d(widths[-1], channels, 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def embed_labels(self, labels: Tensor | None, batch: int) -> Tensor | None:
        """``(B, L)`` label indices -> ``(B, L * embed_dim)`` (None for unconditional models)."""
        labels = gan_api.check_labels(labels, self.label_dims, batch)
        return self.embed(labels) if self.embed is not None else None

    def forward(
        self,
        z: Tensor,
        labels: Tensor | None = None,
        codes: Tensor | None = None,
        truncation_psi: float = 1.0,
        label_embedding: Tensor | None = None,
    ) -> Tensor:
        """``(B, z_dim)`` -> ``(B, C, H, W)`` in [-1, 1].

        ``truncation_psi`` scales ``z`` (sampling temperature); ``label_embedding`` (from
        :meth:`embed_labels`, possibly blended between two label sets) replaces ``labels``.
        """
        if codes is not None:
            raise ValueError("a VAE decoder takes no InfoGAN codes")
        x = gan_api.apply_truncation(z, truncation_psi)  # (B, z_dim)
        if self.embed is not None:
            emb = label_embedding if label_embedding is not None else self.embed_labels(labels, z.shape[0])
            x = torch.cat([x, emb.to(x.dtype)], 1)  # (B, z_dim + L * embed_dim)
        h = self.fc(x).view(-1, self.width0, 4, 4)  # (B, D0, 4, 4)
        return self.net(h)  # (B, C, H, W)


# ---------------------------------------------------------------------------- the models
@register_model("vae", role="vae")
class VAE(ConfigModule):
    """Convolutional VAE (Kingma & Welling 2014); conditional when ``label_dims`` is given.

    Args:
        resolution: image side, one of 32, 64, 128, 256.
        channels: 3 (RGB) or 4 (RGBA).
        z_dim: latent size.
        label_dims: classes per conditioning label; empty = unconditional.
        label_names: optional names of those labels (for name-based label input).
        label_values: optional class names of each label (``label_values[i][k]``).
        base_channels: width of the encoder's first block / the decoder's last block.
        max_channels: cap on any layer's width.
        embed_dim: per-label embedding size (conditional only).
        norm: ``"group"`` (GroupNorm) or ``"none"``.
    """

    #: Whether ``label_dims`` must be non-empty (:class:`CVAE`).
    requires_labels: bool = False

    def __init__(
        self,
        resolution: int = 64,
        channels: int = 3,
        z_dim: int = 128,
        label_dims: Sequence[int] = (),
        label_names: Sequence[str] = (),
        label_values: Sequence[Sequence[str]] = (),
        base_channels: int = 32,
        max_channels: int = 256,
        embed_dim: int = 16,
        norm: str = "group",
    ) -> None:
        if self.requires_labels and not label_dims:
            raise ValueError(
                "cvae is label-conditional: pass label_dims (classes per label), e.g. [11]; "
                "train it on a data set with categorical labels (data.condition_on)"
            )
        super().__init__()
        self.resolution = gan_api.check_resolution(resolution)
        self.channels = gan_api.check_channels(channels)
        if isinstance(z_dim, bool) or not isinstance(z_dim, int) or z_dim < 1:
            raise ValueError(f"z_dim must be a positive integer, got {z_dim!r}")
        self.z_dim = z_dim
        self.label_dims = gan_api.normalize_label_dims(label_dims)
        self.label_names = [str(n) for n in label_names]
        self.label_values = [[str(v) for v in vals] for vals in label_values]
        if self.label_names and len(self.label_names) != len(self.label_dims):
            raise ValueError(
                f"label_names {self.label_names} must name each of the {len(self.label_dims)} labels"
            )
        for i, vals in enumerate(self.label_values):
            if i >= len(self.label_dims) or len(vals) != self.label_dims[i]:
                raise ValueError("label_values must list the class names of each label (label_dims[i] names)")
        _check_norm(norm)
        args = (resolution, channels, z_dim, self.label_dims, base_channels, max_channels, embed_dim, norm)
        self.encoder = VAEEncoder(*args)
        self.decoder = VAEDecoder(*args)

    @property
    def conditional(self) -> bool:
        return bool(self.label_dims)

    @property
    def code_dims(self) -> dict[str, Any]:
        return self.decoder.code_dims

    def encode(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(B, C, H, W)`` in [-1, 1] -> ``(mu, logvar)`` of q(z | x), each ``(B, z_dim)``."""
        labels = gan_api.check_labels(labels, self.label_dims, x.shape[0])
        return self.encoder(x, labels)

    def decode(self, z: Tensor, labels: Tensor | None = None, **kwargs: Any) -> Tensor:
        """``(B, z_dim)`` -> ``(B, C, H, W)`` in [-1, 1] (keyword arguments: see :class:`VAEDecoder`)."""
        return self.decoder(z, labels, **kwargs)

    @staticmethod
    def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``z = mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)`` drawn with ``generator``.

        The noise is drawn on the generator's device then moved, so a CPU generator gives
        the same ``eps`` whatever device the model runs on.
        """
        dev = generator.device if generator is not None else mu.device
        eps = torch.randn(mu.shape, generator=generator, device=dev, dtype=torch.float32)
        return torch.addcmul(mu, eps.to(device=mu.device, dtype=mu.dtype), (0.5 * logvar).exp())

    def forward(
        self,
        x: Tensor,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
        sample: bool = True,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Encode, reparameterise (``sample=False``: use ``mu``), decode.

        Returns ``(reconstruction (B, C, H, W), mu (B, z_dim), logvar (B, z_dim))``.
        """
        mu, logvar = self.encode(x, labels)
        z = self.reparameterize(mu, logvar, generator) if sample else mu
        return self.decoder(z, labels), mu, logvar

    def sample_z(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        """``(n, z_dim)`` draws from the prior N(0, I)."""
        return self.decoder.sample_z(n, generator, device)


@register_model("cvae", role="vae")
class CVAE(VAE):
    """Conditional VAE: label embeddings into encoder and decoder; ``label_dims`` is required.

    Same arguments (and so the same ``config.json`` fields) as :class:`VAE`.
    """

    requires_labels = True
