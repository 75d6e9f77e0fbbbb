"""InfoGAN (Chen et al. 2016): a DCGAN whose generator also takes latent codes ``c``, and
whose discriminator shares its trunk with a Q head that predicts ``c`` back from the image.

Maximising a variational lower bound of the mutual information ``I(c; G(z, c))`` -- i.e.
minimising :func:`mutual_information_loss` for both G and Q -- makes the codes control
disentangled, interpretable factors (e.g. a 10-way categorical code picking a hair style,
continuous codes for pose or hue) without any labels.

Codes (``code_dims = {"categorical": [k1, ...], "continuous": n}``): the ``codes`` tensor is
``(B, sum(k) + n)``: one one-hot block per categorical code followed by ``n`` continuous
values in ``[-1, 1]`` (see ``InfoGANGenerator.sample_codes``). The generator *requires*
codes: ``forward`` never draws hidden randomness.

Generator: ``concat(z * psi, codes[, label embeddings])`` into the DCGAN generator body.
Discriminator: DCGAN trunk -> (a) the 4x4 conv logit (+ projection when conditional),
(b) Q head ``conv4x4 -> 128 -> BN -> LeakyReLU -> 1x1 conv`` giving categorical logits and
a Gaussian (mean, log-std) per continuous code, as in the paper's Q network.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avatarforge.models import gan_api
from avatarforge.models.base import ConfigModule
from avatarforge.models.dcgan import DCGANDiscriminator, build_generator_net, init_weights_
from avatarforge.models.layers import LabelEmbedding
from avatarforge.models.registry import register_model

__all__ = ["DEFAULT_CODE_DIMS", "InfoGANDiscriminator", "InfoGANGenerator", "mutual_information_loss"]

#: Used when ``code_dims`` is ``None`` (the paper's MNIST setting). Part of the saved-model
#: format (a saved ``code_dims: null`` means this), so never change it.
DEFAULT_CODE_DIMS: dict[str, Any] = {"categorical": [10], "continuous": 2}

# Q's log-std is clamped so the Gaussian NLL cannot blow up (sigma in [e^-5, e^2]).
LOGSTD_MIN, LOGSTD_MAX = -5.0, 2.0


def _resolve_code_dims(code_dims: Mapping[str, Any] | None) -> dict[str, Any]:
    dims = gan_api.normalize_code_dims(DEFAULT_CODE_DIMS if code_dims is None else code_dims)
    if not gan_api.code_features(dims):
        raise ValueError("infogan needs at least one code: code_dims={'categorical': [...], 'continuous': n}")
    return dims


@register_model("infogan", role="generator")
class InfoGANGenerator(gan_api.GeneratorMixin, ConfigModule):
    """DCGAN generator fed ``concat(z, codes[, label embeddings])``.

    Args:
        resolution: output side, one of 32, 64, 128, 256.
        channels: 3 (RGB) or 4 (RGBA).
        z_dim: noise size (the paper uses 62 for MNIST; 100 here like DCGAN).
        label_dims: classes per conditioning label; empty = unconditional.
        code_dims: ``{"categorical": [k, ...], "continuous": n}``; ``None`` ->
            :data:`DEFAULT_CODE_DIMS` (10-way categorical + 2 continuous).
        base_channels, max_channels: DCGAN widths.
        embed_dim: per-label embedding size (conditional only).
    """

    def __init__(
        self,
        resolution: int = 64,
        channels: int = 3,
        z_dim: int = 100,
        label_dims: Sequence[int] = (),
        code_dims: Mapping[str, Any] | None = None,
        base_channels: int = 64,
        max_channels: int = 512,
        embed_dim: int = 16,
    ) -> None:
        super().__init__()
        self._init_header(
            resolution,
            channels,
            z_dim,
            gan_api.normalize_label_dims(label_dims),
            _resolve_code_dims(code_dims),
        )
        self.code_features = gan_api.code_features(self.code_dims)
        self.embed = LabelEmbedding(self.label_dims, embed_dim) if self.label_dims else None
        in_dim = z_dim + self.code_features + (self.embed.out_features if self.embed is not None else 0)
        self.net = build_generator_net(in_dim, resolution, channels, base_channels, max_channels)
        self.net.apply(init_weights_)

    def forward(
        self,
        z: Tensor,
        labels: Tensor | None = None,
        codes: Tensor | None = None,
        truncation_psi: float = 1.0,
    ) -> Tensor:
        """``(B, z_dim)`` + ``(B, code_features)`` codes -> ``(B, C, H, W)`` in [-1, 1].

        ``truncation_psi`` scales ``z`` only; codes are used as given.
        """
        B = z.shape[0]
        if codes is None:
            raise ValueError(
                "InfoGANGenerator needs codes: pass codes=G.sample_codes(batch) (or use sample_inputs)"
            )
        if codes.shape != (B, self.code_features):
            raise ValueError(f"codes must have shape ({B}, {self.code_features}), got {tuple(codes.shape)}")
        parts = [gan_api.apply_truncation(z, truncation_psi), codes.to(z.dtype)]
        labels = gan_api.check_labels(labels, self.label_dims, B)
        if self.embed is not None:
            parts.append(self.embed(labels))
        x = torch.cat(parts, 1)  # (B, z_dim + code_features [+ L * embed_dim])
        return self.net(x[:, :, None, None])  # (B, C, H, W)


@register_model("infogan", role="discriminator")
class InfoGANDiscriminator(DCGANDiscriminator):
    """DCGAN discriminator plus a Q head on the shared trunk.

    Args:
        resolution, channels, label_dims, spectral_norm, base_channels, max_channels: as
            :class:`~avatarforge.models.dcgan.DCGANDiscriminator`.
        code_dims: the generator's ``code_dims`` (``None`` -> :data:`DEFAULT_CODE_DIMS`).
        q_hidden: width of Q's hidden layer (the paper's 128).

    Spectral norm (when on) applies to D's own layers only; Q is trained with the MI loss,
    not the adversarial one, so it keeps BN.
    """

    def __init__(
        self,
        resolution: int = 64,
        channels: int = 3,
        label_dims: Sequence[int] = (),
        spectral_norm: bool = False,
        code_dims: Mapping[str, Any] | None = None,
        base_channels: int = 64,
        max_channels: int = 512,
        q_hidden: int = 128,
    ) -> None:
        super().__init__(
            resolution=resolution,
            channels=channels,
            label_dims=label_dims,
            spectral_norm=spectral_norm,
            base_channels=base_channels,
            max_channels=max_channels,
        )
        self.code_dims = _resolve_code_dims(code_dims)
        n_cat, n_cont = sum(self.code_dims["categorical"]), self.code_dims["continuous"]
        feat = self.head.in_channels
        self.q_head = nn.Sequential(
            nn.Conv2d(feat, q_hidden, 4, 1, 0, bias=False),  # (B, feat, 4, 4) -> (B, q_hidden, 1, 1)
            nn.BatchNorm2d(q_hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(q_hidden, n_cat + 2 * n_cont, 1),  # (B, n_cat + 2 n_cont, 1, 1)
        )
        self.q_head.apply(init_weights_)

    def q_from_features(self, h: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """Trunk features -> (categorical logits list of (B, k), cont mean (B, n), cont log-std (B, n))."""
        q = self.q_head(h).flatten(1)  # (B, n_cat + 2 n_cont)
        n_cat, n = sum(self.code_dims["categorical"]), self.code_dims["continuous"]
        cat_logits = list(q[:, :n_cat].split(self.code_dims["categorical"], dim=1)) if n_cat else []
        mean = q[:, n_cat : n_cat + n]
        logstd = q[:, n_cat + n :].clamp(LOGSTD_MIN, LOGSTD_MAX)
        return cat_logits, mean, logstd

    def forward(
        self, images: Tensor, labels: Tensor | None = None, return_q: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor], Tensor, Tensor]:
        """``(B, C, H, W)`` -> logits ``(B,)``; with ``return_q`` also Q's outputs (one trunk pass)."""
        h = self.features(images)  # (B, feat, 4, 4)
        logits = self.logits_from_features(h, labels)
        if not return_q:
            return logits
        return (logits, *self.q_from_features(h))


def mutual_information_loss(
    q_outputs: Sequence[Any],
    codes: Tensor,
    code_dims: Mapping[str, Any],
    continuous_weight: float = 1.0,
) -> Tensor:
    """InfoGAN's MI lower-bound loss (minimise it for both G and Q); a scalar.

    ``sum_j CE(q_cat_j, argmax(code_j))`` + ``continuous_weight * sum_i NLL_Gaussian(c_i;
    mean_i, exp(logstd_i))``, each averaged over the batch. The categorical part is 0 for
    perfect predictions; the Gaussian part includes its ``0.5 log(2 pi)`` constant.

    Args:
        q_outputs: ``(q_cat_logits, q_cont_mean, q_cont_logstd)`` or the whole
            ``D(..., return_q=True)`` tuple (its leading logits are skipped).
        codes: the ``(B, sum(categorical) + continuous)`` codes G was given.
        code_dims: the generator's ``code_dims``.
        continuous_weight: lambda for the continuous part (the paper uses 0.1 to 1).
    """
    if len(q_outputs) == 4:
        q_outputs = q_outputs[1:]
    cat_logits, mean, logstd = q_outputs
    cat_sizes = list(code_dims["categorical"])
    n_cat = sum(cat_sizes)
    loss = codes.new_zeros(())
    for logits, target in zip(cat_logits, codes[:, :n_cat].split(cat_sizes, dim=1) if n_cat else []):
        loss = loss + F.cross_entropy(logits, target.argmax(1))
    if code_dims["continuous"]:
        c = codes[:, n_cat:]  # (B, n)
        nll = 0.5 * ((c - mean) * torch.exp(-logstd)).square() + logstd + 0.5 * math.log(2 * math.pi)
        loss = loss + continuous_weight * nll.sum(1).mean()
    return loss
