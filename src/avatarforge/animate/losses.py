"""The animator's loss terms (see :mod:`avatarforge.animate.trainer` for the step that adds them up).

* :func:`weighted_recon`: pixel-weighted squared and absolute errors, with :func:`pair_weight`
  (face parts, the mouth and changed pixels weigh more);
* :func:`flow_tv`: smoothness of the warp;
* :func:`gan_d_loss` / :func:`gan_g_loss`: the adversarial terms (hinge or least squares).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from avatarforge.animate.pairs import FACE_PARTS, PairBatch, part_mask

__all__ = ["flow_tv", "gan_d_loss", "gan_g_loss", "pair_weight", "weighted_recon"]


def weighted_recon(pred: Tensor, target: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """Pixel-weighted squared and absolute errors (RGBA, [-1, 1] units, fp32): ``(mse, l1)``
    each ``sum(w e) / sum(w)``; the caller adds ``loss.mse_weight * mse + loss.l1_weight * l1``.

    Why mostly squared error: most pixels of a pair are unchanged, so copying the source is
    a strong local optimum, and under L1 (a median) the residual branch collapses onto it
    and stays there (measured: the face-region error stuck at 1.00 x the copy baseline for
    600 steps at 32 px, eye/mouth-only pairs); the squared error's gradient grows with the error and pulls the
    eyes and mouth out of it (0.58 x after the same 600 steps). A small L1 term keeps
    colours crisp once they are right.
    """
    d = pred.float() - target.float()  # (B, 4, S, S)
    wm = weight.mean()
    return (d.square() * weight).mean() / wm, (d.abs() * weight).mean() / wm


def pair_weight(
    batch: PairBatch, *, face_weight: float, mouth_weight: float, change_weight: float, dilate: int
) -> Tensor:
    """``(B, 1, S, S)`` per-pixel loss weight: 1 + ``face_weight`` on the face parts of source
    or target + ``mouth_weight`` on the mouth + ``change_weight`` where source and target
    differ, each region dilated by ``dilate`` pixels (the ``loss.*`` settings of the same names;
    ``loss.face_dilate``)."""
    sp, tp = batch.source_parts, batch.target_parts
    w = torch.ones(sp.shape[0], 1, *sp.shape[1:], device=batch.source.device)
    r = dilate

    def grow(m: Tensor) -> Tensor:
        m = m.float()[:, None]
        return F.max_pool2d(m, 2 * r + 1, stride=1, padding=r) if r > 0 else m

    if face_weight > 0:
        w = w + face_weight * grow(part_mask(sp, FACE_PARTS) | part_mask(tp, FACE_PARTS))
    if mouth_weight > 0:
        w = w + mouth_weight * grow(part_mask(sp, ("mouth",)) | part_mask(tp, ("mouth",)))
    if change_weight > 0:
        changed = (batch.source - batch.target).abs().amax(1) > 0.1  # 5% in [0, 1] units
        w = w + change_weight * grow(changed)
    return w


def flow_tv(flow: Tensor) -> Tensor:
    """Mean absolute difference of neighbouring flow vectors (in grid units)."""
    return (flow[..., 1:, :] - flow[..., :-1, :]).abs().mean() + (flow[..., 1:] - flow[..., :-1]).abs().mean()


def gan_d_loss(real: Tensor, fake: Tensor, kind: str) -> Tensor:
    """Discriminator loss (hinge or least squares)."""
    real, fake = real.float(), fake.float()
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return 0.5 * ((real - 1).square().mean() + fake.square().mean())


def gan_g_loss(fake: Tensor, kind: str) -> Tensor:
    """Generator adversarial loss."""
    fake = fake.float()
    return -fake.mean() if kind == "hinge" else (fake - 1).square().mean()
