"""Exponential moving average of generator weights (Karras et al.'s ``G_ema``).

The EMA is parametrised by a *half-life in images*: after ``ema_kimg * 1000`` images the
old weights count for one half. With batch ``B`` that is a per-step decay
``beta = 0.5 ** (B / (ema_kimg * 1000))``. Early in training the half-life is capped at
``rampup * images_seen`` so the average does not drag the random initialisation along.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ema_beta", "update_ema"]


def ema_beta(
    batch_size: int,
    cur_nimg: int,
    ema_kimg: float,
    rampup: float | None = None,
    fixed_beta: float | None = None,
) -> float:
    """Per-step EMA decay for a step of ``batch_size`` images after ``cur_nimg`` images.

    ``fixed_beta`` (when given) is returned as is.
    """
    if fixed_beta is not None:
        return float(fixed_beta)
    ema_nimg = ema_kimg * 1000.0
    if rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * rampup)
    if ema_nimg <= 0:
        return 0.0  # copy: no history to average yet
    return 0.5 ** (batch_size / ema_nimg)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """``ema = beta * ema + (1 - beta) * model`` for parameters; buffers are copied.

    Buffers (BatchNorm statistics, StyleGAN's ``w_avg``) are already averages or counters,
    so they are copied rather than averaged.
    """
    ema_params = list(ema.parameters())
    params = [p.detach() for p in model.parameters()]
    if len(ema_params) != len(params):
        raise ValueError("EMA and model have different parameter lists")
    if beta == 0.0:
        torch._foreach_copy_(ema_params, params)
    else:
        # lerp(ema, p, 1 - beta) = ema + (1 - beta) * (p - ema); one fused kernel per list.
        torch._foreach_lerp_(ema_params, params, 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
