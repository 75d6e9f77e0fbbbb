"""How good is an animator: reconstruction vs. the copy baseline, identity, expression accuracy.

All metrics run on a held-out :class:`~avatarforge.animate.pairs.PairCache` (procedural
identities the animator never saw) and are in [0, 1] pixel units (RGBA, straight alpha):

* ``l1_changed`` / ``baseline_l1_changed`` / ``ratio``: mean |prediction - target| over the
  pixels the expression change touches (where source and target differ by more than
  ``changed_threshold``), against copying the source (the identity baseline). ``ratio``
  < 1 means the animator does better than doing nothing; 0 is perfect.
* ``face_ratio``: the same ratio over the face parts (eyes, brows, mouth) of source and target.
* ``identity_l1`` / ``identity_psnr``: re-neutralisation. The neutral render ``N`` is
  animated to expression ``e`` and the result animated back to neutral; the distance to
  ``N`` (all pixels) says how much of the character is lost on the way. It needs no ground
  truth, so it also works on any avatar (:func:`identity_consistency`).
* ``eye_err`` / ``mouth_err`` (and ``*_baseline``): expression accuracy from the renderer's
  part masks. The *openness* of a region is the fraction of its pixels that are not skin
  coloured (an open eye shows white and iris, a closed one a thin lash line; an open mouth
  shows its dark inside): :func:`openness`. The error is |openness(prediction) -
  openness(target)| averaged over pairs whose eye (mouth) control changed, against the
  source's openness.

Avatars from the generators (GAN / VAE samples, user images) have no target to compare
with and no part maps; :func:`avatar_metrics` scores them without either:

* identity: the round trip above, next to the *identity baseline* ``other_l1`` (the
  distance between two different avatars of the set: what losing the character would
  cost), as ``identity_ratio = identity_l1 / other_l1``;
* expression accuracy: the openness of the eyes (mouth) when the animator is asked for
  eyes closed vs. open (mouth open vs. closed), measured in the *layout regions* where
  procedural avatars have their eyes and mouth (:func:`layout_regions`; the generators
  are trained on that framing), as a fraction of the change the renderer itself draws
  for the same request on procedural avatars (``eye_effect_ratio``,
  ``mouth_effect_ratio``: 1 = as strong as ground truth, 0 = nothing happens, the copy
  baseline), and how concentrated the change is in the region (``eye_locality``: mean
  change inside / outside).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avatarforge.animate.pairs import FACE_PARTS, PairCache, part_mask
from avatarforge.models.animator import (
    CONTROL_NAMES,
    NEUTRAL_CONTROLS,
    ExpressionAnimator,
    controls_tensor,
    image_to_tensor,
)

__all__ = [
    "EYE_PARTS",
    "MOUTH_PARTS",
    "LayoutRegions",
    "avatar_metrics",
    "evaluate_animator",
    "identity_consistency",
    "layout_regions",
    "openness",
]

EYE_PARTS: tuple[str, ...] = ("eye_white", "iris", "eye_line")
MOUTH_PARTS: tuple[str, ...] = ("mouth",)


def _u(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1]."""
    return (x.float() + 1) * 0.5


def _dilate(mask: Tensor, r: int) -> Tensor:
    """(B, H, W) bool -> dilated by a (2r+1)^2 square."""
    if r <= 0:
        return mask
    return F.max_pool2d(mask.float()[:, None], 2 * r + 1, stride=1, padding=r)[:, 0] > 0.5


def openness(images: Tensor, region: Tensor, skin: Tensor, threshold: float = 0.18) -> Tensor:
    """Fraction of ``region`` pixels whose colour is far from ``skin``: ``(B,)``.

    Args:
        images: ``(B, 4, H, W)`` in [-1, 1].
        region: ``(B, H, W)`` bool.
        skin: ``(B, 3)`` skin colour in [0, 1].
        threshold: max-channel distance that counts as "not skin".
    """
    rgb = _u(images[:, :3])
    a = _u(images[:, 3])
    far = ((rgb - skin[:, :, None, None]).abs().amax(1) > threshold) & (a > 0.5)
    r = region.float()
    return (far.float() * r).sum((1, 2)) / r.sum((1, 2)).clamp_min(1.0)


def _skin_colour(images: Tensor, parts: Tensor) -> Tensor:
    """Median colour of each image's skin pixels: ``(B, 3)`` in [0, 1]."""
    skin = part_mask(parts, ("skin",))
    out = []
    for img, m in zip(_u(images[:, :3]), skin):
        px = img[:, m]  # (3, n)
        out.append(px.median(dim=1).values if px.shape[1] else torch.full((3,), 0.5))
    return torch.stack(out)


@torch.no_grad()
def identity_consistency(
    animator: ExpressionAnimator,
    avatars: Tensor,
    expressions: Sequence[dict[str, float]],
    chunk: int = 64,
) -> dict[str, float]:
    """Animate each avatar to each expression and back to neutral; distance to the avatar.

    Args:
        avatars: ``(N, 4, S, S)`` in [-1, 1] (at the animator's resolution), e.g. neutral renders
            or generator samples.
        expressions: the round-trip targets.

    Returns ``identity_l1`` (mean |back - avatar|, [0, 1] units), ``identity_psnr`` (dB) and
    ``self_l1`` (avatar animated straight to neutral, the animator's own floor).
    """
    animator.eval()
    n, e = avatars.shape[0], len(expressions)
    ctrl = torch.cat([controls_tensor(x) for x in expressions])  # (E, 5)
    neutral = controls_tensor(NEUTRAL_CONTROLS)
    dev = next(animator.parameters()).device
    src = avatars.repeat_interleave(e, 0).to(dev)  # (N E, 4, S, S)
    c = ctrl.repeat(n, 1).to(dev)
    errs, sq, selfs = [], [], []
    for i in range(0, src.shape[0], chunk):
        s, cc = src[i : i + chunk], c[i : i + chunk]
        there = animator(s, cc).clamp(-1, 1)
        back = animator(there, neutral.expand(s.shape[0], -1).to(dev)).clamp(-1, 1)
        d = _u(back) - _u(s)
        errs.append(d.abs().mean((1, 2, 3)))
        sq.append(d.square().mean((1, 2, 3)))
    for i in range(0, n, chunk):
        a = avatars[i : i + chunk].to(dev)
        selfs.append(
            (_u(animator(a, neutral.expand(a.shape[0], -1).to(dev)).clamp(-1, 1)) - _u(a))
            .abs()
            .mean((1, 2, 3))
        )
    mse = float(torch.cat(sq).mean())
    return {
        "identity_l1": float(torch.cat(errs).mean()),
        "identity_psnr": 10 * math.log10(1.0 / max(mse, 1e-12)),
        "self_l1": float(torch.cat(selfs).mean()),
    }


@torch.no_grad()
def evaluate_animator(
    animator: ExpressionAnimator,
    cache: PairCache,
    *,
    max_identities: int | None = None,
    changed_threshold: float = 0.05,
    chunk: int = 64,
) -> dict[str, Any]:
    """Every metric of the module docstring on ``cache`` (all ordered pairs source != target).

    Returns a flat dict of floats (plus ``pairs``: how many pairs were scored).
    """
    was_training = animator.training
    animator.eval()
    dev = next(animator.parameters()).device
    n = len(cache) if max_identities is None else min(len(cache), max_identities)
    k = cache.images.shape[1]
    si, ti = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    keep = si != ti
    si, ti = si[keep], ti[keep]
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}

    def add(name: str, value: Tensor, weight: Tensor | float = 1.0) -> None:
        w = weight if torch.is_tensor(weight) else torch.full_like(value, float(weight))
        sums[name] = sums.get(name, 0.0) + float((value * w).sum())
        counts[name] = counts.get(name, 0.0) + float(w.sum())

    for i in range(n):
        imgs = torch.from_numpy(np.array(cache.images[i])).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        parts = torch.from_numpy(np.array(cache.parts[i]))
        ctrl = torch.from_numpy(np.array(cache.controls[i]))
        src, tgt = imgs[si], imgs[ti]
        sp, tp = parts[si], parts[ti]
        preds = []
        for j in range(0, len(si), chunk):
            preds.append(
                animator(src[j : j + chunk].to(dev), ctrl[ti[j : j + chunk]].to(dev)).clamp(-1, 1).cpu()
            )
        pred = torch.cat(preds)
        err = (_u(pred) - _u(tgt)).abs().mean(1)  # (P, H, W)
        base = (_u(src) - _u(tgt)).abs().mean(1)
        changed = ((_u(src) - _u(tgt)).abs().amax(1) > changed_threshold).float()
        add("l1", err.mean((1, 2)))
        face = (_dilate(part_mask(sp, FACE_PARTS) | part_mask(tp, FACE_PARTS), 1)).float()
        for region, m in (("changed", changed), ("face", face)):
            count = m.sum((1, 2))  # pixel-weighted means: sum of errors / number of pixels
            add(f"l1_{region}", (err * m).sum((1, 2)) / count.clamp_min(1), count)
            add(f"baseline_l1_{region}", (base * m).sum((1, 2)) / count.clamp_min(1), count)

        skin = _skin_colour(src, sp)
        for name, parts_, idx in (("eye", EYE_PARTS, 0), ("mouth", MOUTH_PARTS, 1)):
            region = _dilate(part_mask(sp, parts_) | part_mask(tp, parts_), 1)
            o_pred, o_tgt, o_src = (openness(x, region, skin) for x in (pred, tgt, src))
            moved = ((ctrl[si, idx] - ctrl[ti, idx]).abs() > 0.25).float()
            add(f"{name}_err", (o_pred - o_tgt).abs(), moved)
            add(f"{name}_err_baseline", (o_src - o_tgt).abs(), moved)

    out: dict[str, Any] = {k: sums[k] / max(counts[k], 1e-9) for k in sums}
    out["ratio"] = out["l1_changed"] / max(out["baseline_l1_changed"], 1e-9)
    out["face_ratio"] = out["l1_face"] / max(out["baseline_l1_face"], 1e-9)
    out["pairs"] = int(n * len(si))

    # Identity: neutral (expression 0 of every group) -> each other expression -> neutral.
    neutral = torch.from_numpy(np.array(cache.images[:n, 0])).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    exprs = [dict(zip(CONTROL_NAMES, map(float, c))) for c in cache.controls[0, 1:]]
    out.update(identity_consistency(animator, neutral, exprs, chunk=chunk))
    animator.train(was_training)
    return out


# =============================================================================== any avatar
@dataclass
class LayoutRegions:
    """Where procedural avatars have their parts, at one size (``(S, S)`` bool masks), and
    the renderer's own openness changes there (the ground truth the ratios divide by).

    Attributes:
        eyes, mouth: pixels covered by the eyes (eyes open) / the mouth (mouth open) in at
            least ``min_share`` of the renders, dilated by 1 px.
        skin: pixels that are skin in at least 80% of the renders, outside eyes and mouth.
        eye_effect, mouth_effect: mean openness change the renderer draws there (eyes open
            -> closed, mouth closed -> open) on the same identities.
    """

    eyes: Tensor
    mouth: Tensor
    skin: Tensor
    eye_effect: float
    mouth_effect: float


def layout_regions(size: int, identities: int = 32, seed: int = 0, min_share: float = 0.25) -> LayoutRegions:
    """:class:`LayoutRegions` from ``identities`` procedural avatars (held-out seeds) at ``size``."""
    from avatarforge.animate.pairs import HELDOUT, identity_seed, render_group

    closed = {**NEUTRAL_CONTROLS, "eye_open": 0.0}
    mouth = {**NEUTRAL_CONTROLS, "mouth_open": 1.0}
    imgs, parts = [], []
    for i in range(identities):
        im, pt, _ = render_group(
            identity_seed(seed, HELDOUT, 10_000 + i), [NEUTRAL_CONTROLS, closed, mouth], size
        )
        imgs.append(torch.from_numpy(im).permute(0, 3, 1, 2).float().div(127.5).sub(1))
        parts.append(torch.from_numpy(pt))
    x = torch.stack(imgs)  # (N, 3, 4, S, S): neutral, eyes closed, mouth open
    p = torch.stack(parts)  # (N, 3, S, S)
    eyes = _dilate((part_mask(p[:, 0], EYE_PARTS).float().mean(0) >= min_share)[None], 1)[0]
    mouth_r = _dilate((part_mask(p[:, 2], MOUTH_PARTS).float().mean(0) >= min_share)[None], 1)[0]
    skin = (part_mask(p[:, 0], ("skin",)).float().mean(0) >= 0.8) & ~eyes & ~mouth_r
    regions = LayoutRegions(eyes, mouth_r, skin, 0.0, 0.0)
    sk = _region_skin(x[:, 0], skin)
    o = {
        k: openness(x[:, j], r.expand(len(x), -1, -1), sk)
        for k, j, r in (("open", 0, eyes), ("closed", 1, eyes))
    }
    regions.eye_effect = float((o["open"] - o["closed"]).mean())
    m0 = openness(x[:, 0], mouth_r.expand(len(x), -1, -1), sk)
    m1 = openness(x[:, 2], mouth_r.expand(len(x), -1, -1), sk)
    regions.mouth_effect = float((m1 - m0).mean())
    return regions


def _region_skin(images: Tensor, skin: Tensor) -> Tensor:
    """Median colour of each image inside the ``skin`` layout region: ``(B, 3)`` in [0, 1]."""
    px = _u(images[:, :3])[:, :, skin]  # (B, 3, n)
    return px.median(dim=2).values if px.shape[2] else torch.full((images.shape[0], 3), 0.5)


@torch.no_grad()
def avatar_metrics(
    animator: ExpressionAnimator,
    avatars: Any,
    *,
    regions: LayoutRegions | None = None,
    expressions: Sequence[dict[str, float]] | None = None,
    chunk: int = 64,
) -> dict[str, float]:
    """Identity and expression accuracy on avatars without ground truth (see the module docstring).

    Args:
        animator: the animator (its resolution sets the working size).
        avatars: ``(N, H, W, 3|4)`` uint8 (e.g. ``GeneratorPipeline.render`` output), a list of
            such images, or ``(N, 3|4, H, W)`` in [-1, 1]; resized to the animator's resolution.
            At least 2 (the identity baseline compares different avatars).
        regions: :func:`layout_regions` at that resolution (computed when omitted).
        expressions: round-trip targets (default: eyes closed, mouth open, smile, head turn).

    Returns ``identity_l1``, ``identity_psnr``, ``self_l1``, ``other_l1``, ``identity_ratio``,
    ``eye_effect`` / ``mouth_effect`` (openness changes) and their ``*_ratio`` to the
    renderer's, ``eye_locality``, ``mouth_locality`` and ``avatars`` (how many).
    """
    s = animator.resolution
    if torch.is_tensor(avatars):
        x = image_to_tensor(avatars, s)
    else:
        x = torch.cat([image_to_tensor(np.asarray(a), s) for a in avatars])
    if x.shape[0] < 2:
        raise ValueError(f"avatar_metrics needs at least 2 avatars (the identity baseline), got {x.shape[0]}")
    regions = regions if regions is not None else layout_regions(s)
    if tuple(regions.eyes.shape) != (s, s):
        raise ValueError(f"regions are for {tuple(regions.eyes.shape)} px, the animator works at {s} px")
    exprs = list(
        expressions
        or [{"eye_open": 0.0}, {"mouth_open": 1.0}, {"smile": 0.8}, {"head_yaw": 0.6}, {"head_tilt": 0.5}]
    )
    was_training = animator.training
    animator.eval()
    out: dict[str, float] = dict(identity_consistency(animator, x, exprs, chunk=chunk))
    out["other_l1"] = float((_u(x) - _u(x.roll(1, 0))).abs().mean())
    out["identity_ratio"] = out["identity_l1"] / max(out["other_l1"], 1e-9)

    dev = next(animator.parameters()).device
    n = x.shape[0]

    def frames(**controls: float) -> Tensor:
        c = controls_tensor({**NEUTRAL_CONTROLS, **controls}, batch=n)
        return torch.cat(
            [
                animator(x[i : i + chunk].to(dev), c[i : i + chunk].to(dev)).clamp(-1, 1).cpu()
                for i in range(0, n, chunk)
            ]
        )

    neutral, closed, talking = frames(), frames(eye_open=0.0), frames(mouth_open=1.0)
    sk = _region_skin(x, regions.skin)
    for name, a, b, region, truth in (
        ("eye", neutral, closed, regions.eyes, regions.eye_effect),
        ("mouth", talking, neutral, regions.mouth, regions.mouth_effect),
    ):
        r = region.expand(n, -1, -1)
        effect = float((openness(a, r, sk) - openness(b, r, sk)).mean())
        out[f"{name}_effect"] = effect
        out[f"{name}_effect_ratio"] = effect / max(truth, 1e-9)
        change = (_u(a) - _u(b)).abs().mean(1)  # (N, S, S)
        out[f"{name}_locality"] = float(change[:, region].mean() / change[:, ~region].mean().clamp_min(1e-6))
    out["avatars"] = n
    animator.train(was_training)
    return out
