"""GAN losses and regularisers, each a small function of logits.

* ``logistic``: the non-saturating loss of Goodfellow et al. (2014) as written in StyleGAN:
  D minimises ``softplus(D(fake)) + softplus(-D(real))``, G minimises ``softplus(-D(fake))``.
* ``hinge``: Lim & Ye (2017) / SNGAN: D minimises ``relu(1 - D(real)) + relu(1 + D(fake))``,
  G minimises ``-D(fake)``.
* R1 (Mescheder et al. 2018): ``gamma / 2 * E ||grad_x D(x)||^2`` on real images. "Lazy"
  (StyleGAN2): computed every ``interval`` steps and multiplied by ``interval`` so its
  average strength is unchanged.
* InfoGAN's mutual-information term is the model module's
  :func:`avatarforge.models.infogan.mutual_information_loss`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LOSS_KINDS", "class_loss", "d_loss", "g_loss", "info_loss", "r1_penalty", "r1_weight"]

LOSS_KINDS = ("logistic", "hinge")


def d_loss(real_logits: Tensor, fake_logits: Tensor, kind: str = "logistic") -> Tensor:
    """Discriminator loss (scalar, mean over the batch)."""
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    if kind == "logistic":
        return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    raise ValueError(f"unknown loss kind {kind!r}; valid: {', '.join(LOSS_KINDS)}")


def g_loss(fake_logits: Tensor, kind: str = "logistic") -> Tensor:
    """Generator loss (scalar, mean over the batch)."""
    fake_logits = fake_logits.float()
    if kind == "logistic":
        return F.softplus(-fake_logits).mean()
    if kind == "hinge":
        return -fake_logits.mean()
    raise ValueError(f"unknown loss kind {kind!r}; valid: {', '.join(LOSS_KINDS)}")


def r1_penalty(real_images: Tensor, real_logits: Tensor) -> Tensor:
    """``E ||grad_x D(x)||^2`` over the batch; ``real_images`` must require grad.

    ``create_graph=True`` so the penalty itself can be backpropagated into D.
    """
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real_images, create_graph=True)
    return grad.float().square().sum(dim=[1, 2, 3]).mean()


def r1_weight(gamma: float, interval: int) -> float:
    """Multiplier of :func:`r1_penalty` on a lazy-regularisation step: ``gamma / 2 * interval``."""
    return gamma * 0.5 * interval


def class_loss(
    class_logits: Sequence[Tensor], labels: Tensor, weights: Sequence[float] | None = None
) -> Tensor:
    """Mean over labels of the cross-entropy of per-label class scores ``[(B, K_i), ...]``
    against ``(B, L)`` class indices, each times its ``weights[i]`` (default 1); the
    "unknown" index ``K_i`` is ignored."""
    terms = []
    for i, logits in enumerate(class_logits):
        target = labels[:, i]
        known = target < logits.shape[1]
        if known.any():
            w = 1.0 if weights is None else float(weights[i])
            terms.append(w * F.cross_entropy(logits[known].float(), target[known]))
    return torch.stack(terms).mean() if terms else labels.new_zeros((), dtype=torch.float32)


def info_loss(q_outputs: Sequence[Any], codes: Tensor, code_dims: Mapping[str, Any]) -> Tensor:
    """InfoGAN's mutual-information loss (delegates to the model module's definition)."""
    from avatarforge.models.infogan import mutual_information_loss

    return mutual_information_loss(q_outputs, codes, code_dims)
