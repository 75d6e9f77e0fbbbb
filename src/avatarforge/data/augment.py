"""Differentiable batch augmentation (DiffAugment-style) for GAN training.

Everything works on batches ``(B, C, H, W)`` of float images in [-1, 1] and is differentiable
with respect to the input (twice, so an R1 penalty on augmented reals works too): the
discriminator of a data-efficient GAN sees real *and* generated images through the same
augmentation, and the generator's gradient flows back through it (Zhao et al., 2020,
"Differentiable Augmentation for Data-Efficient GAN Training").

Randomness comes only from an explicit ``torch.Generator`` (a trainer checkpoints its state for
an exact resume); the global RNG is never touched. Sampling is split from applying:
:meth:`DiffAugment.sample_params` draws per-sample parameters, :meth:`DiffAugment.apply` is a
deterministic function of ``(x, params)``, so the same transform can be applied to a pair of
batches (images and their targets) by applying the same ``params`` to both.

Policy ops (applied in this order): ``flip`` (horizontal, p = 0.5), ``color`` = ``brightness``
(add U[-0.5, 0.5)), ``saturation`` (scale the deviation from the per-pixel channel mean by
U[0, 2)), ``contrast`` (scale the deviation from the image mean by U[0.5, 1.5)),
``translation`` (integer shift by up to ``translation_ratio`` of the size, zero fill) and
``cutout`` (zero a square of ``cutout_ratio`` of the size centred anywhere in the image).
For RGBA batches the colour ops act on RGB only; flip, translation and cutout move/zero all
channels alike, so alpha stays aligned with colour. "Zero" is 0 in [-1, 1] units (mid grey,
half-transparent alpha), as in DiffAugment: it only has to be the same for reals and fakes.

Implementation notes (speed matters: the fast loader path augments 20k+ images/s on 2 cores):
the three colour ops are folded into one affine map per sample
(``out = c*s*x + c*(1-s)*mean_c(x) + (1-c)*mean(x) + b``, exactly the composition of the three)
and flip, translation and cutout into one gather and one multiply by a 0/1 mask, so a
full augmentation is about four passes over the batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import overload

import torch

__all__ = ["POLICY_OPS", "DiffAugment", "diff_augment", "hflip"]

# Op names accepted in a policy string; "color" expands to the three colour ops.
POLICY_OPS: tuple[str, ...] = (
    "flip",
    "color",
    "brightness",
    "saturation",
    "contrast",
    "translation",
    "cutout",
)
_ORDER = ("flip", "brightness", "saturation", "contrast", "translation", "cutout")
_COLOR = ("brightness", "saturation", "contrast")
_GEOMETRIC = ("flip", "translation", "cutout")


def _generator(generator: torch.Generator | None) -> torch.Generator:
    """``generator``, or a fresh OS-seeded one (never the global RNG)."""
    if generator is not None:
        return generator
    g = torch.Generator()
    g.manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
    return g


def hflip(x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """Flip each image of a (B, C, H, W) batch horizontally with probability ``p``.

    Differentiable; randomness from ``generator`` only (a fresh OS-seeded one when None, so
    pass one for reproducibility). For a pair of batches use ``DiffAugment("flip")`` with
    shared params.
    """
    g = _generator(generator)
    flip = torch.rand(x.shape[0], generator=g, device=g.device).lt(p).to(x.device)  # (B,)
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def _channel_mean(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, H, W) mean over channels; for 3 channels two adds beat the
    strided reduction kernel of ``mean(dim=1)`` by about 2x on CPU."""
    if x.shape[1] != 3:
        return x.mean(dim=1, keepdim=True)
    return torch.add(x[:, 0:1], x[:, 1:2]).add_(x[:, 2:3]).div_(3)


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


class DiffAugment:
    """A differentiable augmentation policy for (B, C, H, W) batches in [-1, 1].

    Args:
        policy: comma-separated ops from :data:`POLICY_OPS` (``""`` = identity).
        translation_ratio: maximum shift as a fraction of the image size (1/8: 8 px at 64).
        cutout_ratio: side of the cutout square as a fraction of the image size.

    Raises:
        ValueError: an unknown op in ``policy`` (the message lists the valid ones) or a ratio
            out of range.

    Example::

        aug = DiffAugment("color,translation,cutout")
        g = torch.Generator().manual_seed(0)
        d_real = D(aug(reals, generator=g)); d_fake = D(aug(fakes, generator=g))
        params = aug.sample_params(len(a), a.shape[-1], generator=g)
        a2, b2 = aug.apply(a, params), aug.apply(b, params)   # same transform on a pair
    """

    def __init__(
        self,
        policy: str = "color,translation,cutout",
        translation_ratio: float = 0.125,
        cutout_ratio: float = 0.5,
    ) -> None:
        names = [p.strip() for p in policy.split(",") if p.strip()]
        unknown = [n for n in names if n not in POLICY_OPS]
        if unknown:
            raise ValueError(
                f"unknown augmentation op(s) {unknown} in policy {policy!r}; valid: {', '.join(POLICY_OPS)}"
            )
        if not 0.0 <= translation_ratio < 1.0:
            raise ValueError(f"translation_ratio must be in [0, 1), got {translation_ratio}")
        if not 0.0 < cutout_ratio <= 1.0:
            raise ValueError(f"cutout_ratio must be in (0, 1], got {cutout_ratio}")
        wanted = set(names)
        if "color" in wanted:
            wanted |= set(_COLOR)
        self.policy = policy
        self.ops: tuple[str, ...] = tuple(op for op in _ORDER if op in wanted)
        self.translation_ratio = float(translation_ratio)
        self.cutout_ratio = float(cutout_ratio)

    def __repr__(self) -> str:
        return (
            f"DiffAugment({self.policy!r}, translation_ratio={self.translation_ratio}, "
            f"cutout_ratio={self.cutout_ratio})"
        )

    def _shift(self, n: int) -> int:
        return int(n * self.translation_ratio + 0.5)

    def sample_params(
        self,
        batch_size: int,
        size: int | Sequence[int],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> dict[str, torch.Tensor]:
        """Draw per-sample parameters for a batch of ``batch_size`` images of ``size`` px.

        ``size`` is the side of square images or ``(H, W)``. Draws from ``generator`` in a
        fixed order (flip, brightness, saturation, contrast, translation, cutout; only the
        policy's ops), on the generator's device, then moves the result to ``device``.

        Returns a dict with the policy's keys: ``flip`` (B,) bool; ``brightness``,
        ``saturation``, ``contrast`` (B,) float32; ``translation`` (B, 2) int64 ``(dy, dx)``
        (content moves down/right by that many pixels); ``cutout`` (B, 4) int64
        ``(y0, x0, y1, x1)``, the half-open rectangle zeroed, already clipped to the image.
        """
        h, w = _size_hw(size)
        g = _generator(generator)
        gd = g.device
        b = int(batch_size)
        p: dict[str, torch.Tensor] = {}
        for op in self.ops:
            if op == "flip":
                p["flip"] = torch.rand(b, generator=g, device=gd) < 0.5
            elif op == "brightness":
                p["brightness"] = torch.rand(b, generator=g, device=gd) - 0.5
            elif op == "saturation":
                p["saturation"] = torch.rand(b, generator=g, device=gd) * 2.0
            elif op == "contrast":
                p["contrast"] = torch.rand(b, generator=g, device=gd) + 0.5
            elif op == "translation":
                sy, sx = self._shift(h), self._shift(w)
                dy = torch.randint(-sy, sy + 1, (b,), generator=g, device=gd)
                dx = torch.randint(-sx, sx + 1, (b,), generator=g, device=gd)
                p["translation"] = torch.stack([dy, dx], 1)
            elif op == "cutout":
                ch, cw = max(1, int(h * self.cutout_ratio + 0.5)), max(1, int(w * self.cutout_ratio + 0.5))
                # Centre anywhere in the image (DiffAugment's offsets), so the square may be clipped.
                cy = torch.randint(0, h + (1 - ch % 2), (b,), generator=g, device=gd) - ch // 2
                cx = torch.randint(0, w + (1 - cw % 2), (b,), generator=g, device=gd) - cw // 2
                p["cutout"] = torch.stack(
                    [cy.clamp(0, h), cx.clamp(0, w), (cy + ch).clamp(0, h), (cx + cw).clamp(0, w)], 1
                )
        if device is not None:
            p = {k: v.to(device) for k, v in p.items()}
        return p

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Apply the transform described by ``params`` to ``x`` (B, C, H, W).

        Deterministic and differentiable with respect to ``x``. Applies exactly the ops whose
        keys are in ``params`` (see :meth:`sample_params`), whatever this object's policy.
        Translations are clamped to this object's ``translation_ratio`` of the size.
        """
        if x.dim() != 4:
            raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
        unknown = set(params) - set(_ORDER)
        if unknown:
            raise ValueError(
                f"unknown augmentation params {sorted(unknown)}; valid keys: {', '.join(_ORDER)}"
            )
        for k, v in params.items():
            if v.shape[0] != x.shape[0]:
                raise ValueError(f"params[{k!r}] is for a batch of {v.shape[0]}, the input has {x.shape[0]}")
        if any(k in params for k in _COLOR):
            x = self._color(x, params)
        if any(k in params for k in _GEOMETRIC):
            x = self._geometric(x, params)
        return x

    @overload
    def __call__(
        self,
        x: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        params: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor: ...

    @overload
    def __call__(
        self,
        x: Sequence[torch.Tensor],
        *,
        generator: torch.Generator | None = None,
        params: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, ...]: ...

    def __call__(
        self,
        x: torch.Tensor | Sequence[torch.Tensor],
        *,
        generator: torch.Generator | None = None,
        params: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Sample params (unless given) and apply them.

        ``x`` may be a tensor or a sequence of tensors with the same batch size and spatial
        size (e.g. images and their targets): then all are transformed identically and a
        tuple is returned.
        """
        batch = [x] if isinstance(x, torch.Tensor) else list(x)
        ref = batch[0]
        for t in batch[1:]:
            if t.shape[0] != ref.shape[0] or t.shape[-2:] != ref.shape[-2:]:
                raise ValueError(
                    f"paired batches must share batch and spatial size, got {tuple(ref.shape)} and {tuple(t.shape)}"
                )
        if params is None:
            params = self.sample_params(
                ref.shape[0], (ref.shape[-2], ref.shape[-1]), generator=generator, device=ref.device
            )
        out = tuple(self.apply(t, params) for t in batch)
        return out[0] if isinstance(x, torch.Tensor) else out

    # -- ops --------------------------------------------------------------------------------

    @staticmethod
    def _color(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        bsz = x.shape[0]

        def coef(name: str) -> torch.Tensor | None:
            v = params.get(name)
            return None if v is None else v.to(device=x.device, dtype=x.dtype).view(bsz, 1, 1, 1)

        b, s, c = coef("brightness"), coef("saturation"), coef("contrast")
        rgb = x[:, :3] if x.shape[1] == 4 else x  # (B, 3, H, W); alpha is left alone
        # brightness (+b), then saturation (s about the channel mean m), then contrast (c about
        # the image mean M) compose to: c*s*x + c*(1-s)*m + (1-c)*M + b, because the channel
        # mean of (x - m) is 0. One reduction and one fused multiply-add instead of six passes.
        if s is None:
            if c is None:
                out = rgb + b
            else:
                mean_all = rgb.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
                shift = (1 - c) * mean_all if b is None else (1 - c) * mean_all + b
                out = torch.addcmul(shift, rgb, c)
        else:
            m = _channel_mean(rgb)  # (B, 1, H, W)
            if c is None:
                c = torch.ones_like(s)
            mean_all = m.mean(dim=(2, 3), keepdim=True)  # (B, 1, 1, 1)
            shift = (1 - c) * mean_all if b is None else (1 - c) * mean_all + b
            t = torch.addcmul(shift, m, c * (1 - s))  # (B, 1, H, W)
            out = torch.addcmul(t, rgb, c * s)
        if x.shape[1] == 4:
            out = torch.cat([out, x[:, 3:]], dim=1)
        return out

    def _geometric(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Flip, translation and cutout as one gather and one multiply by a 0/1 mask.

        Output pixel (i, j) reads source pixel (i - dy, j - dx), mirrored in the column when
        flipped (flip first: out[j] = flip(x)[j - dx] = x[W - 1 - (j - dx)]). Reads that fall
        outside the image are clamped to the border and then zeroed by the mask, which also
        holds the cutout box; both index and mask are separable (row part x column part), so
        building them costs a few (B, H, W) ops and no padded copy of the batch is made.
        """
        bsz, ch, h, w = x.shape
        dev = x.device
        flip, trans, box = params.get("flip"), params.get("translation"), params.get("cutout")
        mask: torch.Tensor | None = None  # (B, H, W) 1 = keep, 0 = zero
        rows = torch.arange(h, device=dev).expand(bsz, h)  # (B, H)
        cols = torch.arange(w, device=dev).expand(bsz, w)  # (B, W)
        src_r, src_c = rows, cols
        if trans is not None:
            sy, sx = self._shift(h), self._shift(w)
            trans = trans.to(dev)
            src_r = rows - trans[:, 0:1].clamp(-sy, sy)  # content moves down by dy
            src_c = cols - trans[:, 1:2].clamp(-sx, sx)  # and right by dx
            keep_r = ((src_r >= 0) & (src_r < h)).to(x.dtype)  # (B, H)
            keep_c = ((src_c >= 0) & (src_c < w)).to(x.dtype)  # (B, W)
            src_r, src_c = src_r.clamp(0, h - 1), src_c.clamp(0, w - 1)
        else:
            keep_r = torch.ones(bsz, h, dtype=x.dtype, device=dev)
            keep_c = torch.ones(bsz, w, dtype=x.dtype, device=dev)
        if flip is not None:
            src_c = torch.where(flip.to(dev).view(bsz, 1), (w - 1) - src_c, src_c)
        if trans is not None or box is not None:
            mask = keep_r[:, :, None] * keep_c[:, None, :]  # (B, H, W)
        if box is not None:
            box = box.to(dev)
            in_r = ((rows >= box[:, 0:1]) & (rows < box[:, 2:3])).to(x.dtype)  # (B, H)
            in_c = ((cols >= box[:, 1:2]) & (cols < box[:, 3:4])).to(x.dtype)  # (B, W)
            # keep * (1 - cut) = kr kc - (kr in_r)(kc in_c): separable, one more op.
            mask = mask.addcmul_((keep_r * in_r)[:, :, None], (keep_c * in_c)[:, None, :], value=-1)
        if trans is None and flip is None:
            out = x
        else:
            idx = (src_r[:, :, None] * w + src_c[:, None, :]).view(bsz, 1, h * w)  # (B, 1, H*W)
            # reshape is a view for contiguous and channels_last x alike; the output is contiguous.
            out = x.reshape(bsz, ch, h * w).gather(2, idx.expand(bsz, ch, h * w)).view(bsz, ch, h, w)
        if mask is None:
            return out
        mask = mask.unsqueeze(1)  # (B, 1, H, W), broadcast over channels
        # In place on the fresh gather output (gather's backward does not need it); never on x.
        return out * mask if out is x else out.mul_(mask)


def diff_augment(
    x: torch.Tensor, policy: str = "color,translation,cutout", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Functional form: ``DiffAugment(policy)(x, generator=generator)``."""
    return DiffAugment(policy)(x, generator=generator)
