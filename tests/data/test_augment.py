"""Differentiable batch augmentation (avatarforge.data.augment)."""

from __future__ import annotations

import pytest
import torch

from avatarforge.data.augment import POLICY_OPS, DiffAugment, diff_augment, hflip

FULL = "flip,color,translation,cutout"


def _batch(b=4, c=3, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g) * 2 - 1


def _reference(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """A slow, literal DiffAugment: flip, brightness, saturation, contrast, shift, cutout."""
    x = x.clone()
    b = x.shape[0]
    if "flip" in p:
        x = torch.where(p["flip"].view(b, 1, 1, 1), x.flip(3), x)
    rgb = x[:, :3]
    if "brightness" in p:
        rgb = rgb + p["brightness"].view(b, 1, 1, 1)
    if "saturation" in p:
        m = rgb.mean(1, keepdim=True)
        rgb = (rgb - m) * p["saturation"].view(b, 1, 1, 1) + m
    if "contrast" in p:
        m = rgb.mean((1, 2, 3), keepdim=True)
        rgb = (rgb - m) * p["contrast"].view(b, 1, 1, 1) + m
    x = torch.cat([rgb, x[:, 3:]], 1)
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    for k in range(b):
        dy, dx = p["translation"][k].tolist() if "translation" in p else (0, 0)
        for i in range(h):
            for j in range(w):
                if 0 <= i - dy < h and 0 <= j - dx < w:
                    out[k, :, i, j] = x[k, :, i - dy, j - dx]
        if "cutout" in p:
            y0, x0, y1, x1 = p["cutout"][k].tolist()
            out[k, :, y0:y1, x0:x1] = 0
    return out


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("policy", [FULL, "color", "brightness,contrast", "translation", "flip,cutout"])
def test_matches_literal_reference(policy, channels):
    x = _batch(c=channels)
    aug = DiffAugment(policy)
    p = aug.sample_params(4, 16, generator=torch.Generator().manual_seed(1))
    out = aug.apply(x, p)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.allclose(out, _reference(x, p), atol=1e-5)
    # channels_last input: same values (a different gather path), same memory format out.
    out_cl = aug.apply(x.contiguous(memory_format=torch.channels_last), p)
    assert torch.allclose(out_cl, out, atol=1e-6)


def test_param_ranges_and_keys():
    aug = DiffAugment(FULL)
    p = aug.sample_params(256, 64, generator=torch.Generator().manual_seed(0))
    assert set(p) == {"flip", "brightness", "saturation", "contrast", "translation", "cutout"}
    assert p["flip"].dtype == torch.bool and 0.3 < p["flip"].float().mean() < 0.7
    assert p["brightness"].min() >= -0.5 and p["brightness"].max() < 0.5
    assert p["saturation"].min() >= 0 and p["saturation"].max() < 2
    assert p["contrast"].min() >= 0.5 and p["contrast"].max() < 1.5
    t = p["translation"]
    assert t.shape == (256, 2) and t.abs().max() == 8  # 1/8 of 64
    c = p["cutout"]
    assert c.shape == (256, 4) and (c >= 0).all() and (c <= 64).all()
    assert ((c[:, 2] - c[:, 0]) <= 32).all() and ((c[:, 2] - c[:, 0]) == 32).any()  # 1/2 of 64, clipped


def test_unknown_policy_lists_valid_ops():
    with pytest.raises(ValueError, match="valid: " + ", ".join(POLICY_OPS)):
        DiffAugment("color,zoom")
    assert DiffAugment("").ops == ()
    x = _batch()
    assert torch.equal(DiffAugment("")(x, generator=torch.Generator()), x)


def test_differentiable():
    x = _batch(c=4).requires_grad_(True)
    aug = DiffAugment(FULL)
    out = aug(x, generator=torch.Generator().manual_seed(0))
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # Exact first and second derivatives on a tiny float64 batch (R1 on augmented reals).
    xs = _batch(b=2, c=4, h=6, w=6).double().requires_grad_(True)
    p = aug.sample_params(2, 6, generator=torch.Generator().manual_seed(3))
    assert torch.autograd.gradcheck(lambda t: aug.apply(t, p), (xs,))
    assert torch.autograd.gradgradcheck(lambda t: aug.apply(t, p), (xs,))


def test_same_params_same_output_and_pairs():
    aug = DiffAugment(FULL)
    x = _batch()
    p = aug.sample_params(4, 16, generator=torch.Generator().manual_seed(2))
    assert torch.equal(aug.apply(x, p), aug.apply(x, p))
    a, b = aug((x, x.clone()), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    # A pair with different content and channels: the geometry is shared. Warp a coordinate
    # map alongside the images and check each output pixel came from where the map says.
    geo = DiffAugment("flip,translation,cutout")
    h = w = 16
    coords = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")).float() + 1
    coords = coords.expand(4, 2, h, w)  # (B, 2, H, W) 1-based (row, col); 0 marks "filled"
    img, where = geo((x, coords), generator=torch.Generator().manual_seed(7))
    for k in range(4):
        for i, j in [(0, 0), (5, 9), (15, 3), (8, 8)]:
            r, c = where[k, :, i, j].long().tolist()
            expect = x[k, :, r - 1, c - 1] if r > 0 else torch.zeros(3)
            assert torch.equal(img[k, :, i, j], expect)


def test_generator_determinism_and_no_global_rng():
    x = _batch()
    state = torch.get_rng_state()
    a = diff_augment(x, FULL, generator=torch.Generator().manual_seed(11))
    b = diff_augment(x, FULL, generator=torch.Generator().manual_seed(11))
    c = diff_augment(x, FULL, generator=torch.Generator().manual_seed(12))
    diff_augment(x, FULL)  # no generator: a fresh OS-seeded one, still not the global RNG
    hflip(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)
    # The generator's state advances, so consecutive calls differ and resume from a saved state works.
    g = torch.Generator().manual_seed(0)
    aug = DiffAugment(FULL)
    aug(x, generator=g)
    saved = g.get_state()
    first = aug(x, generator=g)
    g.set_state(saved)
    assert torch.equal(aug(x, generator=g), first)


def test_color_ops_leave_alpha_alone():
    x = _batch(c=4)
    out = DiffAugment("color")(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, 3], x[:, 3])
    assert not torch.allclose(out[:, :3], x[:, :3])


def test_translation_moves_content_by_sampled_amount():
    x = torch.zeros(3, 4, 16, 16)
    x[:, :, 5, 7] = 1.0
    aug = DiffAugment("translation")
    p = {"translation": torch.tensor([[2, -1], [0, 0], [-2, 2]])}
    out = aug.apply(x, p)
    for k, (dy, dx) in enumerate(p["translation"].tolist()):
        hot = (out[k, 0] == 1).nonzero().tolist()
        assert hot == [[5 + dy, 7 + dx]]
        assert (out[k, 3] == out[k, 0]).all()  # alpha moves with colour
    # Zero fill where content moved in from outside.
    ones = aug.apply(torch.ones(1, 3, 16, 16), {"translation": torch.tensor([[1, -2]])})
    assert (
        (ones[0, :, 0, :] == 0).all() and (ones[0, :, :, -2:] == 0).all() and ones[0, :, 1:, :-2].eq(1).all()
    )
    # Shifts are clamped to translation_ratio of the size (2 px at 16).
    far = aug.apply(x[:1], {"translation": torch.tensor([[9, 0]])})
    assert (far[0, 0] == 1).nonzero().tolist() == [[7, 7]]


def test_cutout_zeroes_region():
    x = _batch(b=2, c=4)
    out = DiffAugment("cutout").apply(x, {"cutout": torch.tensor([[2, 3, 10, 9], [0, 0, 16, 4]])})
    assert (out[0, :, 2:10, 3:9] == 0).all() and (out[1, :, :, :4] == 0).all()
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[0, :, 2:10, 3:9] = False
    mask[1, :, :, :4] = False
    assert torch.equal(out[mask], x[mask])
    p = DiffAugment("cutout").sample_params(8, 16, generator=torch.Generator().manual_seed(0))
    out = DiffAugment("cutout").apply(_batch(b=8) + 3, p)  # +3: no pixel is 0 by chance
    zero_frac = (out == 0).float().mean((1, 2, 3))
    area = ((p["cutout"][:, 2] - p["cutout"][:, 0]) * (p["cutout"][:, 3] - p["cutout"][:, 1])).float() / 256
    assert torch.allclose(zero_frac, area)


def test_flip():
    x = _batch()
    assert torch.equal(hflip(x, torch.Generator(), p=1.0), x.flip(3))
    assert torch.equal(hflip(x, torch.Generator(), p=0.0), x)
    out = hflip(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(out[k], x[k].flip(2)) for k in range(4)]
    kept = [torch.equal(out[k], x[k]) for k in range(4)]
    assert all(f or k for f, k in zip(flipped, kept))
    p = {"flip": torch.tensor([True, False, True, False])}
    out = DiffAugment("flip").apply(x, p)
    assert torch.equal(out[0], x[0].flip(2)) and torch.equal(out[1], x[1])


def test_bad_params_rejected():
    aug = DiffAugment()
    x = _batch()
    with pytest.raises(ValueError, match="batch of 3"):
        aug.apply(x, aug.sample_params(3, 16, generator=torch.Generator()))
    with pytest.raises(ValueError, match="unknown augmentation params"):
        aug.apply(x, {"zoom": torch.zeros(4)})
    with pytest.raises(ValueError, match="paired"):
        aug((x, x[:2]), generator=torch.Generator())
