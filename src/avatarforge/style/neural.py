"""Neural style transfer: Gatys et al.'s optimisation and AdaIN (Huang & Belongie 2017).

Everything takes and returns ``(H, W, 3|4)`` uint8 arrays (see :mod:`avatarforge.imageio`);
the feature network is a :class:`~avatarforge.style.features.FeatureNet` (VGG-19 from a
user file, or the seeded random CNN when none is given).

- :func:`gatys_transfer` optimises the pixels of an image that starts as the content: a
  content loss (MSE of ``relu4_2`` features) plus ``style_weight`` times a style loss (MSE
  of Gram matrices of ``relu1_1 .. relu4_1``), with L-BFGS or Adam, for ``steps`` steps.
- :func:`adain_transfer` with a trained :class:`AdaINDecoder` is one forward pass:
  ``decoder((1 - s) * f(c) + s * AdaIN(f(c), f(s)))`` where ``f`` is the network up to
  ``relu4_1`` and ``AdaIN`` re-normalises each content channel to the style's mean/std.
  :func:`train_adain_decoder` trains that decoder on a content set and a style set.
- Without a decoder, :func:`adain_transfer` uses the training-free fallback: optimise the
  pixels (as Gatys does) so that ``relu4_1`` matches the AdaIN target and the per-channel
  mean/std of ``relu1_1 .. relu4_1`` match the style's (the AdaIN paper's decoder loss,
  applied to the image instead of to a decoder).

Working resolution: the content is processed with its longer side at ``size`` (sides
rounded to a multiple of the network's stride, 8), the style image is scaled the same
way, and the result is resized back to the content's own size. So ``size`` sets the scale
of brush strokes and the cost, never the output size.

Alpha: content and style are split into straight RGB and alpha. Transparent regions are
filled with a push-pull extrapolation of the visible colours before the network sees them
(so edge features see plausible colours, not black), every style statistic (Gram matrix,
mean/std) is an alpha-weighted average over visible pixels only, and the output carries
the content's alpha unchanged; fully transparent pixels keep the content's RGB.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avatarforge.imageio import composite_over
from avatarforge.models.adain import AdaINDecoder
from avatarforge.style.classical import as_image_array, merge_alpha, split_alpha
from avatarforge.style.features import (
    ADAIN_LAYER,
    CONTENT_LAYER,
    STYLE_LAYERS,
    FeatureNet,
    RandomMultiScaleCNN,
)

__all__ = [
    "OPTIMIZERS",
    "AdaINDecoder",
    "adain",
    "adain_transfer",
    "decoder_for",
    "encoder_for_decoder",
    "fill_transparent",
    "gatys_transfer",
    "gram_matrix",
    "load_adain_decoder",
    "load_image_set",
    "masked_mean_std",
    "prepare_image",
    "train_adain_decoder",
]

OPTIMIZERS = ("lbfgs", "adam")
DEFAULT_GATYS_STYLE_WEIGHT = 1e5
DEFAULT_ADAIN_STYLE_WEIGHT = 10.0  # decoder training: the paper's lambda
DEFAULT_ADAIN_OPT_STYLE_WEIGHT = 1.0  # training-free fallback (measured: 10 lets texture swamp the content)
_EPS = 1e-5

#: ``callback(step, losses)`` after every optimisation/training step (progress, tests).
StepCallback = Callable[[int, dict[str, float]], None]


# ----------------------------------------------------------------------------- image <-> tensor
def fill_transparent(premul: Tensor, alpha: Tensor) -> Tensor:
    """Straight RGB with transparent areas filled from the visible colours (push-pull).

    The premultiplied image and its alpha are averaged down a pyramid to 1x1; then, from
    coarse to fine, each level is composited *over* the upsampled coarser fill
    (``colour = premul + (1 - coverage) * coarser``). Opaque pixels keep their colour,
    transparent ones get a smooth extrapolation of their surroundings, and semi-transparent
    edge pixels are un-premultiplied toward their neighbours instead of toward black.

    Args:
        premul: (B, 3, H, W) premultiplied colour in [0, 1].
        alpha: (B, 1, H, W) coverage in [0, 1].

    Returns:
        (B, 3, H, W) straight colour in [0, 1] (mid-grey where the whole image is transparent).
    """
    ps, ws = [premul], [alpha]
    while max(ps[-1].shape[-2:]) > 1:
        ps.append(F.avg_pool2d(ps[-1], 2, ceil_mode=True))
        ws.append(F.avg_pool2d(ws[-1], 2, ceil_mode=True))
    w_top = ws[-1]
    colour = torch.where(w_top > 0, ps[-1] / w_top.clamp_min(1e-12), torch.full_like(ps[-1], 0.5))
    for p, w in zip(reversed(ps[:-1]), reversed(ws[:-1])):
        up = F.interpolate(colour, size=p.shape[-2:], mode="bilinear", align_corners=False)
        colour = p + (1.0 - w) * up
    return colour.clamp(0.0, 1.0)


def _working_size(h: int, w: int, size: int | None, multiple: int) -> tuple[int, int]:
    """(h', w') with the longer side about ``size`` (None: the image's own), multiples of ``multiple``."""
    scale = 1.0 if size is None else size / max(h, w)
    return (
        max(multiple, round(h * scale / multiple) * multiple),
        max(multiple, round(w * scale / multiple) * multiple),
    )


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Antialiased bilinear when shrinking, bicubic when enlarging; identity when equal."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    if shrink:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False)


def prepare_image(
    image: np.ndarray, size: int | None, multiple: int = 8, device: str | torch.device = "cpu"
) -> tuple[Tensor, Tensor]:
    """A uint8 image as the network input at the working size.

    Resizing happens in premultiplied alpha (no dark fringes), then transparent areas are
    filled by :func:`fill_transparent`.

    Args:
        image: (H, W, 3|4) uint8.
        size: longer side of the working size (None: keep the size, rounded to ``multiple``).

    Returns:
        ``(rgb (1, 3, h, w) in [-1, 1], alpha (1, 1, h, w) in [0, 1])`` on ``device``.
    """
    rgb8, a8 = split_alpha(image)
    rgb = torch.from_numpy(np.array(rgb8, copy=True)).to(device).permute(2, 0, 1)[None].float() / 255.0
    if a8 is None:
        alpha = torch.ones_like(rgb[:, :1])
    else:
        alpha = torch.from_numpy(np.array(a8, copy=True)).to(device)[None, None].float() / 255.0
    target = _working_size(rgb.shape[-2], rgb.shape[-1], size, multiple)
    premul = _resize(rgb * alpha, target)
    alpha = _resize(alpha, target).clamp(0.0, 1.0)
    straight = fill_transparent(premul.clamp(0.0, 1.0), alpha)
    return (straight * 2.0 - 1.0).contiguous(), alpha.contiguous()


def _finish(rgb: Tensor, content: np.ndarray) -> np.ndarray:
    """(1, 3, h, w) result in [-1, 1] -> uint8 at the content's size under the content's alpha."""
    h, w = content.shape[:2]
    x = _resize(rgb.detach().float().clamp(-1, 1), (h, w))
    u8 = x.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)[0].permute(1, 2, 0).cpu().numpy()
    return merge_alpha(u8, content)


# ----------------------------------------------------------------------------- statistics
def _mask_at(alpha: Tensor | None, scale: int) -> Tensor | None:
    """The alpha mask on a layer's grid (average coverage of each cell)."""
    if alpha is None:
        return None
    return F.avg_pool2d(alpha, scale) if scale > 1 else alpha


def gram_matrix(feat: Tensor, mask: Tensor | None = None) -> Tensor:
    """Alpha-weighted Gram matrix ``sum_p m_p f_p f_p^T / (C * sum_p m_p)``.

    Args:
        feat: (B, C, H, W) features.
        mask: (B, 1, H, W) weights in [0, 1] or None (all ones: the usual ``F F^T / (C H W)``).

    Returns:
        (B, C, C).
    """
    b, c, h, w = feat.shape
    f = feat.reshape(b, c, h * w)
    if mask is None:
        return f @ f.transpose(1, 2) / (c * h * w)
    m = mask.reshape(b, 1, h * w)
    return (f * m) @ f.transpose(1, 2) / (c * m.sum(dim=2, keepdim=True).clamp_min(1e-8))


def masked_mean_std(feat: Tensor, mask: Tensor | None = None, eps: float = _EPS) -> tuple[Tensor, Tensor]:
    """Per-channel alpha-weighted mean and std over positions.

    Args:
        feat: (B, C, H, W). mask: (B, 1, H, W) weights or None.

    Returns:
        ``(mean, std)``, each (B, C, 1, 1); ``std = sqrt(var + eps)``.
    """
    if mask is None:
        mean = feat.mean(dim=(2, 3), keepdim=True)
        var = feat.var(dim=(2, 3), keepdim=True, unbiased=False)
    else:
        total = mask.sum(dim=(2, 3), keepdim=True).clamp_min(1e-8)
        mean = (feat * mask).sum(dim=(2, 3), keepdim=True) / total
        var = ((feat - mean).square() * mask).sum(dim=(2, 3), keepdim=True) / total
    return mean, (var + eps).sqrt()


def adain(
    content_feat: Tensor,
    style_feat: Tensor,
    content_mask: Tensor | None = None,
    style_mask: Tensor | None = None,
) -> Tensor:
    """Adaptive instance normalisation: content channels re-normalised to the style's mean/std.

    ``(f_c - mean(f_c)) / std(f_c) * std(f_s) + mean(f_s)``, statistics alpha-weighted.
    Shapes: (B, C, H, W) content, (B, C, H', W') style -> (B, C, H, W).
    """
    mu_c, sd_c = masked_mean_std(content_feat, content_mask)
    mu_s, sd_s = masked_mean_std(style_feat, style_mask)
    return (content_feat - mu_c) / sd_c * sd_s + mu_s


# ----------------------------------------------------------------------------- optimisation
def _check_common(steps: int, size: int | None, strength: float, optimizer: str) -> None:
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if size is not None and size < 8:
        raise ValueError(f"size must be >= 8 pixels, got {size}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")


def _optimise_image(
    x0: Tensor,
    loss_fn: Callable[[Tensor], tuple[Tensor, dict[str, Tensor]]],
    steps: int,
    optimizer: str,
    lr: float | None,
    callback: StepCallback | None,
    progress: bool,
) -> Tensor:
    """Minimise ``loss_fn(clamp(x, -1, 1))`` over the pixels ``x``, starting at ``x0``.

    A *step* is one loss + gradient evaluation for both optimisers, so ``steps`` is the
    same work either way (and what the benchmark times). Adam takes one update per
    evaluation; L-BFGS runs up to ``steps`` iterations with a strong-Wolfe line search
    (most iterations take one evaluation; the limit counts evaluations, so the last line
    search may add a few). The loss is computed on the clamped image, so the objective is
    well defined for any ``x`` and the result is always a valid image. The best image seen
    is returned, so a diverging step (non-finite or worse loss) never spoils the result.
    """
    # Contiguous: L-BFGS flattens the gradient with .view().
    x = x0.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)
    best = x0.detach().clamp(-1.0, 1.0).clone()
    best_loss = math.inf
    evals = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, unit="step", dynamic_ncols=True)

    def closure() -> Tensor:
        nonlocal best_loss, evals
        opt.zero_grad(set_to_none=True)
        img = x.clamp(-1.0, 1.0)
        loss, parts = loss_fn(img)
        loss.backward()
        value = float(loss.detach())
        if math.isfinite(value) and value < best_loss:
            best_loss = value
            best.copy_(img.detach())
        if callback is not None or bar is not None:
            values = {"loss": value, **{k: float(v) for k, v in parts.items()}}
            if callback is not None:
                callback(evals, values)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.3g}" for k, v in values.items()}, refresh=False)
        evals += 1
        return loss

    opt: torch.optim.Optimizer
    try:
        if steps == 0:
            return best
        if optimizer == "lbfgs":
            # One step() call runs the whole budget: calling step() per iteration would
            # re-evaluate the loss at the start of every call (twice the work).
            opt = torch.optim.LBFGS(
                [x],
                lr=lr or 1.0,
                max_iter=steps,
                max_eval=steps,
                history_size=50,
                tolerance_grad=0.0,
                tolerance_change=0.0,
                line_search_fn="strong_wolfe",
            )
            opt.step(closure)
        else:
            opt = torch.optim.Adam([x], lr=lr or 0.02)
            for _ in range(steps):
                opt.step(closure)
                if not math.isfinite(best_loss) and evals > 1:
                    break
                with torch.no_grad():
                    x.clamp_(-1.0, 1.0)  # keep pixels where their gradient is alive
    finally:
        if bar is not None:
            bar.close()
    return best


def _resolve_net(net: FeatureNet | None, device: str | torch.device, seed: int) -> FeatureNet:
    if net is None:
        return RandomMultiScaleCNN(seed=seed).to(device)
    return net.to(device)


def gatys_transfer(
    content: Any,
    style: Any,
    *,
    net: FeatureNet | None = None,
    steps: int = 200,
    size: int | None = 256,
    content_weight: float = 1.0,
    style_weight: float = DEFAULT_GATYS_STYLE_WEIGHT,
    strength: float = 1.0,
    optimizer: str = "lbfgs",
    lr: float | None = None,
    style_layers: Sequence[str] = STYLE_LAYERS,
    content_layer: str = CONTENT_LAYER,
    device: str | torch.device = "cpu",
    seed: int = 0,
    callback: StepCallback | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Gatys et al. (2016) optimisation-based style transfer.

    Loss: ``content_weight * MSE(F_l(x), F_l(c)) + style_weight * sum_k MSE(G_k(x), G_k(s))``
    with ``l = content_layer``, ``k`` over ``style_layers`` and Gram matrices ``G``
    normalised by ``C * H * W`` (alpha-weighted: only visible pixels of the style, and of
    the content where the result will be visible, count).

    Args:
        content, style: (H, W, 3|4) uint8 images (any sizes).
        net: feature network (default: the seeded random CNN, ``seed``).
        steps: optimiser steps (L-BFGS: one evaluation each).
        size: longer side of the working resolution (None: the content's own size).
        content_weight, style_weight: loss weights.
        strength: blends the result with the content in pixel space (1 = full result).
        optimizer: ``"lbfgs"`` (default; converges in fewer steps) or ``"adam"``.
        lr: step size (default 1 for L-BFGS, 0.02 for Adam, in [-1, 1] pixel units).

    Returns:
        (H, W, C) uint8 like ``content``: stylised RGB, the content's alpha.
    """
    content = as_image_array(content, "content")
    style = as_image_array(style, "style")
    _check_common(steps, size, strength, optimizer)
    net = _resolve_net(net, device, seed)
    style_layers = net.check_layers(style_layers)
    net.check_layers([content_layer])
    x_c, a_c = prepare_image(content, size, net.multiple, device)
    x_s, a_s = prepare_image(style, size, net.multiple, device)
    _require_visible(a_c, "content")
    _require_visible(a_s, "style")
    with torch.no_grad():
        target_c = net(x_c, [content_layer])[content_layer]
        fs = net(x_s, style_layers)
        target_g = {k: gram_matrix(fs[k], _mask_at(a_s, net.scales[k])) for k in style_layers}
    masks = {k: _mask_at(a_c, net.scales[k]) for k in style_layers}
    layers = list(dict.fromkeys([content_layer, *style_layers]))

    def loss_fn(x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        feats = net(x, layers)
        lc = F.mse_loss(feats[content_layer], target_c)
        ls = sum(
            (F.mse_loss(gram_matrix(feats[k], masks[k]), target_g[k]) for k in style_layers), x.new_zeros(())
        )
        return content_weight * lc + style_weight * ls, {"content": lc.detach(), "style": ls.detach()}

    x = _optimise_image(x_c, loss_fn, steps, optimizer, lr, callback, progress)
    return _finish(x_c + strength * (x - x_c), content)


def _require_visible(alpha: Tensor, name: str) -> None:
    if not bool((alpha > 0).any()):
        raise ValueError(f"the {name} image is fully transparent: nothing to take features from")


# ----------------------------------------------------------------------------- AdaIN decoder
def decoder_for(net: FeatureNet, widths: Sequence[int] | None = None, extra_convs: int = 1) -> AdaINDecoder:
    """A fresh :class:`AdaINDecoder` shaped and labelled for the encoder ``net``.

    Default widths: the paper's (256, 128, 64) for VGG-19; (64, 32, 16) for the random CNN
    (its ``relu4_1`` has 256 channels, and a small decoder trains in minutes on a CPU).
    """
    if widths is None:
        widths = (256, 128, 64) if net.kind == "vgg19" else (64, 32, 16)
    if 2 ** len(widths) != net.scales[ADAIN_LAYER]:
        raise ValueError(
            f"the decoder needs {int(math.log2(net.scales[ADAIN_LAYER]))} widths (one per 2x upsampling), got {list(widths)}"
        )
    return AdaINDecoder(
        in_channels=net.channels[ADAIN_LAYER],
        widths=[int(w) for w in widths],
        extra_convs=extra_convs,
        encoder=net.kind,
        encoder_seed=int(getattr(net, "seed", 0)),
        encoder_widths=list(getattr(net, "widths", ())) or None,
        encoder_fingerprint=net.fingerprint(),
    )


def load_adain_decoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> AdaINDecoder:
    """A decoder saved with ``save_pretrained`` (a directory with config.json + model.safetensors)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"AdaIN decoder {p} not found (train one with: avatarforge style train-decoder)"
        )
    if p.is_file():  # the user named config.json or model.safetensors inside the directory
        p = p.parent
    from avatarforge.runs import load_model

    return load_model(p, device=device, expect=AdaINDecoder, what="an AdaIN decoder")


def encoder_for_decoder(decoder: AdaINDecoder, device: str | torch.device = "cpu") -> FeatureNet:
    """Rebuild the random CNN a decoder was trained with (VGG weights must come from the user)."""
    if decoder.encoder == "random":
        widths = tuple(decoder.encoder_widths) if decoder.encoder_widths else (32, 64, 128, 256)
        return RandomMultiScaleCNN(seed=decoder.encoder_seed, widths=widths).to(device)  # type: ignore[arg-type]
    raise ValueError(
        f"this AdaIN decoder was trained on {decoder.encoder} features: pass the same VGG-19 weights file (--vgg PATH)"
    )


def _check_pair(net: FeatureNet, decoder: AdaINDecoder) -> None:
    fp = net.fingerprint()
    if decoder.encoder_fingerprint and decoder.encoder_fingerprint != fp:
        raise ValueError(
            f"the AdaIN decoder was trained with a different encoder ({decoder.encoder}, fingerprint "
            f"{decoder.encoder_fingerprint}) than the one given ({net.describe()}, fingerprint {fp}); "
            "use the same --vgg file (or none, for a decoder trained on the random CNN)"
        )


# ----------------------------------------------------------------------------- AdaIN transfer
def adain_transfer(
    content: Any,
    style: Any,
    *,
    net: FeatureNet | None = None,
    decoder: AdaINDecoder | None = None,
    strength: float = 1.0,
    size: int | None = 256,
    steps: int = 200,
    content_weight: float = 1.0,
    style_weight: float = DEFAULT_ADAIN_OPT_STYLE_WEIGHT,
    optimizer: str = "lbfgs",
    lr: float | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    callback: StepCallback | None = None,
    progress: bool = False,
) -> np.ndarray:
    """AdaIN style transfer, feed-forward with ``decoder`` or by optimisation without one.

    With a decoder: ``decoder((1 - strength) * f(c) + strength * AdaIN(f(c), f(s)))`` in one
    pass (``steps``, the weights and ``optimizer`` are unused). ``net`` defaults to the random
    CNN the decoder was trained with; a VGG-trained decoder needs ``net`` (its weights).

    Without a decoder (training-free fallback): start from the content and minimise
    ``content_weight * MSE(f(x), t) + style_weight * sum_k (MSE(mean_k(x), mean_k*) +
    MSE(std_k(x), std_k*))`` over ``relu1_1 .. relu4_1``, where ``t`` is the AdaIN target
    above and the target statistics are the style's, blended with the content's by
    ``strength``.

    Args: as :func:`gatys_transfer`, plus ``decoder``.

    Returns:
        (H, W, C) uint8 like ``content``: stylised RGB, the content's alpha.
    """
    content = as_image_array(content, "content")
    style = as_image_array(style, "style")
    _check_common(steps, size, strength, optimizer)
    if decoder is not None:
        decoder = decoder.to(device).eval()
        net = net.to(device) if net is not None else encoder_for_decoder(decoder, device)
        _check_pair(net, decoder)
    else:
        net = _resolve_net(net, device, seed)
    x_c, a_c = prepare_image(content, size, net.multiple, device)
    x_s, a_s = prepare_image(style, size, net.multiple, device)
    _require_visible(a_c, "content")
    _require_visible(a_s, "style")
    layers = list(STYLE_LAYERS)  # relu1_1 .. relu4_1 (ADAIN_LAYER is the last)
    with torch.no_grad():
        fc = net(x_c, layers)
        fs = net(x_s, layers)
        scale = net.scales[ADAIN_LAYER]
        t = adain(fc[ADAIN_LAYER], fs[ADAIN_LAYER], _mask_at(a_c, scale), _mask_at(a_s, scale))
        t = fc[ADAIN_LAYER] + strength * (t - fc[ADAIN_LAYER])
        if decoder is not None:
            out = decoder(t).clamp(-1.0, 1.0)
            return _finish(out, content)
        targets = {}
        for k in layers:
            mu_c, sd_c = masked_mean_std(fc[k], _mask_at(a_c, net.scales[k]))
            mu_s, sd_s = masked_mean_std(fs[k], _mask_at(a_s, net.scales[k]))
            targets[k] = (mu_c + strength * (mu_s - mu_c), sd_c + strength * (sd_s - sd_c))
    masks = {k: _mask_at(a_c, net.scales[k]) for k in layers}

    def loss_fn(x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        feats = net(x, layers)
        lc = F.mse_loss(feats[ADAIN_LAYER], t)
        ls = x.new_zeros(())
        for k in layers:
            mu, sd = masked_mean_std(feats[k], masks[k])
            ls = ls + F.mse_loss(mu, targets[k][0]) + F.mse_loss(sd, targets[k][1])
        return content_weight * lc + style_weight * ls, {"content": lc.detach(), "style": ls.detach()}

    x = _optimise_image(x_c, loss_fn, steps, optimizer, lr, callback, progress)
    return _finish(x, content)


# ----------------------------------------------------------------------------- decoder training
ImageSet = Any  # Tensor (N, 3, H, W) in [-1, 1] | uint8 array (N, H, W, C) | path | list of paths


def load_image_set(source: ImageSet, size: int, max_images: int = 1000, seed: int = 0) -> Tensor:
    """Images for decoder training as a (N, 3, size, size) uint8 tensor (RGBA on white).

    ``source`` may be a packed data set directory, a folder of images (searched
    recursively), one image file, a list of image files, a uint8 array (N, H, W, C), or a
    tensor (N, 3, H, W): uint8 (e.g. this function's own output) or float in [-1, 1]. Files are decoded with
    :func:`avatarforge.data.imagefile.load_image` (validated; unreadable files are skipped
    with a warning) and centre-cropped to a square. At most ``max_images`` are kept (a
    seeded random subset), so memory stays bounded.

    Raises:
        FileNotFoundError: a path does not exist. ValueError: no usable image.
    """
    import warnings

    rng = np.random.default_rng(seed)

    def pick(n: int) -> np.ndarray:
        return np.sort(rng.choice(n, size=max_images, replace=False)) if n > max_images else np.arange(n)

    def to_tensor(u8: np.ndarray) -> Tensor:  # (N, h, w, 3) uint8 -> (N, 3, size, size) uint8
        t = torch.from_numpy(np.ascontiguousarray(u8)).permute(0, 3, 1, 2)
        if t.shape[-1] != size or t.shape[-2] != size:
            t = _resize(t.float(), (size, size)).round().clamp(0, 255).to(torch.uint8)
        return t.contiguous()

    if isinstance(source, Tensor):
        if source.ndim != 4 or source.shape[1] != 3:
            raise ValueError(
                f"an image tensor must be (N, 3, H, W), uint8 or float in [-1, 1], got {tuple(source.shape)}"
            )
        u8 = source.detach().cpu()
        if u8.dtype != torch.uint8:  # float images in [-1, 1]
            u8 = u8.float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
        return to_tensor(u8[torch.from_numpy(pick(len(u8)))].permute(0, 2, 3, 1).cpu().numpy())
    if isinstance(source, np.ndarray):
        if source.ndim != 4 or source.dtype != np.uint8 or source.shape[-1] not in (3, 4):
            raise ValueError(
                f"an image array must be (N, H, W, 3|4) uint8, got {source.dtype} {source.shape}"
            )
        return to_tensor(composite_over(source[pick(len(source))]))
    paths = [Path(p) for p in source] if isinstance(source, (list, tuple)) else [Path(source)]
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"image set {p} not found")
    if len(paths) == 1 and (paths[0] / "manifest.json").is_file():
        from avatarforge.data.dataset import PackedDataset

        ds = PackedDataset(paths[0], channels=3)  # RGBA sets are composited on white
        return to_tensor(ds.images_uint8(pick(len(ds))))
    from avatarforge.data.imagefile import IMAGE_EXTENSIONS, ImageRejected, load_image, normalize_image

    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            files.append(p)
    files = [files[i] for i in pick(len(files))]
    arrays = []
    for f in files:
        try:
            arrays.append(
                normalize_image(load_image(f, draft_size=size), size, alpha="composite", min_side=0)
            )
        except ImageRejected as e:
            warnings.warn(f"skipping {f}: {e}", stacklevel=2)
    if not arrays:
        raise ValueError(f"no usable images in {', '.join(map(str, paths))}")
    return to_tensor(np.stack(arrays))


def train_adain_decoder(
    content: ImageSet,
    style: ImageSet,
    *,
    net: FeatureNet | None = None,
    decoder: AdaINDecoder | None = None,
    steps: int = 2000,
    batch_size: int = 8,
    size: int = 128,
    lr: float = 5e-4,
    style_weight: float = DEFAULT_ADAIN_STYLE_WEIGHT,
    widths: Sequence[int] | None = None,
    max_images: int = 1000,
    device: str | torch.device = "cpu",
    seed: int = 0,
    callback: StepCallback | None = None,
    progress: bool = False,
) -> AdaINDecoder:
    """Train an :class:`AdaINDecoder` for ``net`` on a content set and a style set.

    Each step draws ``batch_size`` content and style images (seeded), computes the AdaIN
    target ``t = AdaIN(f(c), f(s))`` at ``relu4_1``, decodes it and minimises the paper's
    loss ``MSE(f(g(t)), t) + style_weight * sum_k (MSE(mean_k) + MSE(std_k))`` over
    ``relu1_1 .. relu4_1`` with Adam. Huang & Belongie train 160k steps on MS-COCO +
    WikiArt; a few thousand steps on avatars + a few style images already give usable
    colour/texture transfer with the random CNN (see docs/style.md).

    Args:
        content, style: image sets (see :func:`load_image_set`).
        net: encoder (default: the random CNN with ``seed``).
        decoder: continue training this decoder (default: a fresh one from :func:`decoder_for`).
        widths: decoder widths for a fresh decoder.

    Returns:
        The trained decoder (eval mode); save it with ``decoder.save_pretrained(dir)``.
    """
    if steps < 0 or batch_size < 1:
        raise ValueError(f"steps must be >= 0 and batch_size >= 1, got {steps}, {batch_size}")
    net = _resolve_net(net, device, seed)
    if size % net.multiple:
        raise ValueError(f"size must be a multiple of {net.multiple}, got {size}")
    cset = load_image_set(content, size, max_images, seed)
    sset = load_image_set(style, size, max_images, seed + 1)
    g = torch.Generator().manual_seed(seed)
    if decoder is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # reproducible decoder initialisation without touching global state
            decoder = decoder_for(net, widths)
    decoder = decoder.to(device).train()
    _check_pair(net, decoder)
    opt = torch.optim.Adam(decoder.parameters(), lr=lr)
    layers = list(STYLE_LAYERS)

    def batch(images: Tensor) -> Tensor:
        idx = torch.randint(len(images), (batch_size,), generator=g)
        x = images[idx].to(device).float().div(127.5).sub(1.0)  # (B, 3, size, size) in [-1, 1]
        flip = torch.rand(batch_size, generator=g) < 0.5
        return torch.where(flip.view(-1, 1, 1, 1).to(device), x.flip(-1), x)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, unit="step", dynamic_ncols=True)
    try:
        for step in range(steps):
            c, s = batch(cset), batch(sset)
            with torch.no_grad():
                fc = net(c, [ADAIN_LAYER])[ADAIN_LAYER]
                fs = net(s, layers)
                t = adain(fc, fs[ADAIN_LAYER])
                stats_s = {k: masked_mean_std(fs[k]) for k in layers}
            out = decoder(t)
            fo = net(out, layers)
            lc = F.mse_loss(fo[ADAIN_LAYER], t)
            ls = out.new_zeros(())
            for k in layers:
                mu, sd = masked_mean_std(fo[k])
                ls = ls + F.mse_loss(mu, stats_s[k][0]) + F.mse_loss(sd, stats_s[k][1])
            loss = lc + style_weight * ls
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if callback is not None or bar is not None:
                values = {
                    "loss": float(loss.detach()),
                    "content": float(lc.detach()),
                    "style": float(ls.detach()),
                }
                if callback is not None:
                    callback(step, values)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in values.items()}, refresh=False)
    finally:
        if bar is not None:
            bar.close()
    return decoder.eval()
