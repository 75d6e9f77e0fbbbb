"""Metric sanity: closed forms, identities, monotonicity, unbiasedness."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import torch

from avatarforge.eval.metrics import (
    SWDAccumulator,
    feature_statistics,
    frechet_distance,
    get_metric,
    kid,
    laplacian_pyramid,
    list_metrics,
    mse,
    precision_recall,
    psnr,
    register_metric,
    ssim,
    swd,
    swd_resolutions,
)
from tests.eval.conftest import procedural_images


def _spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# ----------------------------------------------------------------------------- FID
@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_identical_is_zero(method):
    rng = np.random.default_rng(0)
    mu, sigma = rng.normal(size=16), _spd(rng, 16)
    assert abs(frechet_distance(mu, sigma, mu, sigma, method=method)) < 1e-8


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_diagonal_closed_form(method):
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    s1, s2 = rng.uniform(0.1, 3, 8), rng.uniform(0.1, 3, 8)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2), method=method)
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-10)


def test_frechet_2x2_closed_form():
    # For 2x2 M with positive eigenvalues, tr(sqrt(M)) = sqrt(tr M + 2 sqrt(det M)).
    s1 = np.array([[2.0, 0.7], [0.7, 1.0]])
    s2 = np.array([[1.5, -0.4], [-0.4, 0.8]])
    m = s1 @ s2
    tr_sqrt = math.sqrt(np.trace(m) + 2 * math.sqrt(np.linalg.det(m)))
    mu1, mu2 = np.array([0.3, -1.0]), np.array([1.0, 0.5])
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    for method in ("eigh", "sqrtm"):
        assert frechet_distance(mu1, s1, mu2, s2, method=method) == pytest.approx(expected, rel=1e-10)


def test_frechet_methods_agree_on_random_covariances():
    rng = np.random.default_rng(2)
    d = 64
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _spd(rng, d), _spd(rng, d)
    ref = np.trace(scipy.linalg.sqrtm(s1 @ s2)).real  # independent: general matrix square root
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * ref
    assert frechet_distance(mu1, s1, mu2, s2, method="eigh") == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu1, s1, mu2, s2, method="sqrtm") == pytest.approx(expected, rel=1e-8)


def test_frechet_singular_covariances_are_finite():
    # Rank-deficient covariances (fewer samples than dimensions), as at small sample counts.
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(10, 32)), rng.normal(size=(10, 32)) + 0.5
    (m1, s1), (m2, s2) = feature_statistics(a), feature_statistics(b)
    got = [frechet_distance(m1, s1, m2, s2, method=m) for m in ("eigh", "sqrtm")]
    assert all(math.isfinite(g) and g > 0 for g in got)
    assert got[0] == pytest.approx(got[1], rel=1e-3)


def test_frechet_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="method"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), method="nope")


def test_fid_metric_identical_features_is_zero():
    from avatarforge.eval.stats_cache import FeatureSet

    f = np.random.default_rng(4).normal(size=(200, 16)).astype(np.float32)
    out = get_metric("fid").compute(FeatureSet(f), FeatureSet(f.copy()))
    assert abs(out["fid"]) < 1e-6


# ----------------------------------------------------------------------------- KID
def test_kid_identical_and_separated():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    same, _ = kid(x, x, num_subsets=20, subset_size=100)
    shifted, _ = kid(x, x + 1.0, num_subsets=20, subset_size=100)
    assert abs(same) < 0.05 * shifted
    assert shifted > 0


def test_kid_is_unbiased_on_equal_distributions():
    """Independent draws of one distribution: estimates scatter around 0 with both signs."""
    rng = np.random.default_rng(6)
    means = []
    for i in range(16):
        a = rng.normal(size=(150, 8)).astype(np.float32)
        b = rng.normal(size=(150, 8)).astype(np.float32)
        means.append(kid(a, b, num_subsets=10, subset_size=150, seed=i)[0])
    means = np.array(means)
    assert (means > 0).any() and (means < 0).any()
    assert abs(means.mean()) < 3 * means.std(ddof=1) / math.sqrt(len(means))
    # ... while a small real difference is clearly positive.
    a = rng.normal(size=(150, 8)).astype(np.float32)
    b = rng.normal(size=(150, 8)).astype(np.float32) + 0.5
    assert kid(a, b, num_subsets=10, subset_size=150)[0] > 5 * means.std()


def test_kid_small_sets_and_errors():
    rng = np.random.default_rng(7)
    mean, std = kid(rng.normal(size=(5, 4)), rng.normal(size=(7, 4)), num_subsets=8)
    assert math.isfinite(mean) and std >= 0  # subset size falls back to 5
    with pytest.raises(ValueError, match="at least 2"):
        kid(np.zeros((1, 4)), np.zeros((5, 4)))


def test_kid_gram_and_per_subset_paths_agree(monkeypatch):
    import avatarforge.eval.metrics as M

    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(60, 8)).astype(np.float32), rng.normal(size=(50, 8)).astype(np.float32) + 0.2
    full = kid(a, b, num_subsets=5, subset_size=40)
    monkeypatch.setattr(M, "_KID_GRAM_MAX_PAIRS", 0)
    per_subset = kid(a, b, num_subsets=5, subset_size=40)
    assert per_subset[0] == pytest.approx(full[0], rel=1e-5)
    assert per_subset[1] == pytest.approx(full[1], rel=1e-4)


# ----------------------------------------------------------------------------- precision / recall
def test_precision_recall_identical_sets():
    x = np.random.default_rng(9).normal(size=(200, 8))
    assert precision_recall(x, x) == (1.0, 1.0)


def test_precision_recall_drop_with_shift():
    rng = np.random.default_rng(10)
    real = rng.normal(size=(400, 4))
    fake = rng.normal(size=(400, 4))
    results = [precision_recall(real, fake + s) for s in (0.0, 1.0, 2.0, 4.0)]
    precisions = [p for p, _ in results]
    recalls = [r for _, r in results]
    assert precisions[0] > 0.8 and recalls[0] > 0.8
    assert precisions == sorted(precisions, reverse=True) and recalls == sorted(recalls, reverse=True)
    assert precisions[-1] < 0.05 and recalls[-1] < 0.05


def test_precision_recall_subset_has_full_precision_partial_recall():
    rng = np.random.default_rng(11)
    # Two well separated clusters; the fakes cover only one of them (mode dropping).
    real = np.concatenate([rng.normal(size=(200, 4)), rng.normal(size=(200, 4)) + 10])
    fake = real[:200]
    p, r = precision_recall(real, fake, batch_size=64)
    assert p == 1.0
    assert 0.4 < r < 0.6


def test_precision_recall_needs_k_plus_one():
    with pytest.raises(ValueError, match="at least 4"):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)))


# ----------------------------------------------------------------------------- SWD
def test_laplacian_pyramid_reconstructs():
    x = torch.rand(2, 3, 32, 32) * 255
    pyr = laplacian_pyramid(x, 3)
    assert [p.shape[-1] for p in pyr] == [32, 16, 8]
    from avatarforge.eval.metrics import _pyr_up

    rec = pyr[-1]
    for lvl in reversed(pyr[:-1]):
        rec = _pyr_up(rec) + lvl
    assert torch.allclose(rec, x, atol=1e-3)


def test_pyr_down_matches_scipy_mirror_convolution():
    x = np.random.default_rng(12).uniform(0, 255, (1, 3, 16, 16)).astype(np.float32)
    k = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]).astype(np.float32) / 256
    ref = scipy.ndimage.convolve(x, k[None, None], mode="mirror")[:, :, ::2, ::2]
    from avatarforge.eval.metrics import _pyr_down

    assert np.allclose(_pyr_down(torch.from_numpy(x)).numpy(), ref, atol=1e-3)


def test_swd_resolutions():
    assert swd_resolutions(64) == [64, 32, 16]
    assert swd_resolutions(128) == [128, 64, 32, 16]
    with pytest.raises(ValueError):
        swd_resolutions(8)


def test_swd_identical_is_zero_and_grows_with_blur():
    imgs = procedural_images(24, 64)
    assert swd(imgs, imgs)["swd"] == 0.0
    metric = get_metric("swd")
    real = SWDAccumulator(64, seed=0)
    real.feed(imgs)
    values = []
    for sigma in (0.5, 1, 2, 3):
        blurred = np.round(scipy.ndimage.gaussian_filter(imgs.astype(np.float32), sigma=(0, sigma, sigma, 0)))
        fake = SWDAccumulator(64, seed=0)
        fake.feed(blurred.astype(np.uint8))
        values.append(metric.compute(real, fake, seed=0))
    avgs = [v["swd"] for v in values]
    assert avgs == sorted(avgs) and avgs[0] > 1.0, avgs
    # The finest level feels the blur most.
    assert values[-1]["swd_64"] > values[-1]["swd_16"]
    assert set(values[0]) == {"swd", "swd_64", "swd_32", "swd_16"}


def test_swd_accumulator_caps_descriptors_and_streams():
    imgs = procedural_images(16, 32)
    acc = SWDAccumulator(32, max_descriptors=256, expected_images=16, seed=3)
    assert acc.nhoods_per_image == 16
    for s in range(0, 16, 5):
        acc.feed(imgs[s : s + 5])
    d = acc.descriptors()
    assert [x.shape for x in d] == [(256, 147), (256, 147)]
    # Normalised per channel over the set.
    v = d[0].view(256, 3, 49)
    assert torch.allclose(v.mean(dim=(0, 2)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(v.std(dim=(0, 2), unbiased=False), torch.ones(3), atol=1e-4)
    with pytest.raises(ValueError, match="32 px"):
        acc.feed(procedural_images(1, 64))


# ----------------------------------------------------------------------------- PSNR / SSIM / MSE
def test_psnr_ssim_identical():
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    assert torch.isinf(psnr(x, x)).all()
    assert torch.allclose(ssim(x, x), torch.ones(3))
    assert torch.equal(mse(x, x), torch.zeros(3))


def test_psnr_constant_offset_closed_form():
    x = torch.rand(2, 3, 16, 16) * 1.5 - 1
    c = 0.1
    expected = 20 * math.log10(2.0 / c)  # data range 2 ([-1, 1] images)
    assert torch.allclose(psnr(x, x + c), torch.full((2,), expected), atol=1e-3)
    assert torch.allclose(
        psnr((x + 1) / 2, (x + 1) / 2 + c / 2, data_range=1.0), torch.full((2,), expected), atol=1e-3
    )


def test_ssim_constant_images_closed_form():
    a, b = 0.2, -0.3
    x, y = torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b)
    c1 = (0.01 * 2.0) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # no variance: only the luminance term
    assert ssim(x, y).item() == pytest.approx(expected, rel=1e-5)


def test_ssim_decreases_with_noise_and_accepts_uint8():
    rng = np.random.default_rng(13)
    img = procedural_images(2, 64)
    noisy = [np.clip(img + rng.normal(0, s, img.shape), 0, 255).astype(np.uint8) for s in (5, 20, 60)]
    vals = [ssim(img, n).mean().item() for n in noisy]
    assert 1 > vals[0] > vals[1] > vals[2]
    with pytest.raises(ValueError, match="11x11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


# ----------------------------------------------------------------------------- registry
def test_registry_lists_builtins_and_accepts_new_metrics():
    assert {"fid", "kid", "pr", "swd", "attr", "recon"} <= set(list_metrics())
    with pytest.raises(KeyError, match="available"):
        get_metric("nope")

    @register_metric("test_mean_dist", "features", description="distance of means")
    def _mean_dist(real, fake, *, seed=0):
        return {"test_mean_dist": float(np.linalg.norm(real.mu - fake.mu))}

    assert get_metric("test_mean_dist").kind == "features"
    with pytest.raises(ValueError, match="kind"):
        register_metric("x", "weird")
