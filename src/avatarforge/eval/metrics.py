"""Sample-quality metrics: FID, KID, precision/recall, SWD, attribute accuracy, MSE/PSNR/SSIM.

Every function here works on plain arrays/tensors, so it can be used without the rest of
the evaluation machinery::

    from avatarforge.eval.metrics import frechet_distance, kid, precision_recall, swd, ssim, psnr

The registry (:func:`register_metric`, :func:`get_metric`, :func:`list_metrics`) is what
``evaluate(..., metrics=[...])`` and ``avatarforge eval --metrics`` select from. A metric
has a *kind* that says what it consumes:

- ``"features"``: ``compute(real: FeatureSet, fake: FeatureSet, *, seed) -> {key: value}``
  on extractor features (``fid``, ``kid``, ``pr``);
- ``"images"``: streamed uint8 images; ``accumulator(resolution=..., seed=...)`` makes an
  object with ``feed(batch)``, and ``compute(real_acc, fake_acc, *, seed)`` compares two
  of them (``swd``);
- ``"generator"``: ``compute(source, *, avatar, batch_size, label_names, label_values,
  notes)`` scores a conditional generator's samples with the avatar attribute net
  (``attr``: :func:`attribute_accuracy`);
- ``"reconstruction"``: ``compute(vae, reference, *, batch_size, device, notes)`` scores a
  model with ``encode``/``decode`` (VAEs) on reference images (``recon``:
  :func:`reconstruction_metrics`).

Every registered entry computes its metric; :class:`~avatarforge.eval.evaluate.Evaluator`
only gathers what each kind consumes.

Conventions: images are uint8 ``(B, H, W, C)`` or float ``(B, C, H, W)`` in ``[-1, 1]``;
features are ``(N, D)``; statistics are computed in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import Tensor

from avatarforge.eval.features import FeatureExtractor, ImageBatch
from avatarforge.eval.stats_cache import FeatureSet

if TYPE_CHECKING:  # the sources are imported where used: this module stays about arrays
    from avatarforge.eval.sources import ImageSource

__all__ = [
    "COLOUR_ATTRIBUTES",
    "Metric",
    "SWDAccumulator",
    "attribute_accuracy",
    "attribute_accuracy_from_predictions",
    "attribute_target",
    "feature_statistics",
    "frechet_distance",
    "gaussian_window",
    "get_metric",
    "kid",
    "laplacian_pyramid",
    "list_metrics",
    "mse",
    "precision_recall",
    "psnr",
    "reconstruction_metrics",
    "register_metric",
    "sliced_wasserstein",
    "ssim",
    "swd",
    "swd_resolutions",
]


# ============================================================================ FID
def feature_statistics(features: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(N, D)`` features -> ``(mu (D,), sigma (D, D))`` in float64 (covariance with ``N - 1``)."""
    f = np.asarray(features.cpu() if isinstance(features, Tensor) else features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features must be (N, D) with N >= 2, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrtm_trace(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    """tr(sqrtm(sigma1 @ sigma2)) the way the reference FID code computes it."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    covmean = covmean[0] if isinstance(covmean, tuple) else covmean
    if not np.isfinite(covmean).all():
        # Singular product: the reference implementation's fallback.
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        covmean = covmean[0] if isinstance(covmean, tuple) else covmean
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has a large imaginary component ({np.max(np.abs(covmean.imag)):.3g})")
        covmean = covmean.real
    return float(np.trace(covmean))


def _eigh_trace(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr(sqrtm(sigma1 @ sigma2)) via symmetric eigendecompositions.

    For symmetric PSD ``A``, ``B``: ``A B`` is similar to ``A^1/2 B A^1/2`` (symmetric PSD),
    so the trace of its square root is the sum of square roots of that matrix's
    eigenvalues. Both decompositions are symmetric (``eigh``): stable, real, and about 10x
    faster than a general ``sqrtm`` at 2048 dimensions. Tiny negative eigenvalues from
    round-off are clipped to 0.
    """
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # sigma1^(1/2)
    m = root1 @ sigma2 @ root1
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(ev, 0, None)).sum())


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    *,
    method: str = "eigh",
    eps: float = 1e-6,
) -> float:
    """Fréchet distance between Gaussians: ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2)``.

    Args:
        mu1, mu2: ``(D,)`` means; sigma1, sigma2: ``(D, D)`` covariances (float64 used).
        method: ``"eigh"`` (default; symmetric eigendecompositions, see :func:`_eigh_trace`)
            or ``"sqrtm"`` (``scipy.linalg.sqrtm`` with the reference implementation's
            ``eps`` diagonal offset when the product is singular). They agree to ~1e-6
            relative on well-conditioned inputs.
        eps: the diagonal offset of the ``sqrtm`` fallback.

    Raises:
        ValueError: shapes do not match, or an unknown method.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"mean/covariance shapes do not match: {mu1.shape}, {mu2.shape}, {sigma1.shape}, {sigma2.shape}"
        )
    diff = mu1 - mu2
    if method == "eigh":
        tr_covmean = _eigh_trace(sigma1, sigma2)
    elif method == "sqrtm":
        tr_covmean = _sqrtm_trace(sigma1, sigma2, eps)
    else:
        raise ValueError(f"method must be 'eigh' or 'sqrtm', got {method!r}")
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


# ============================================================================ KID
# Above this many real x fake pairs the full Gram matrices (3 of them, float32) would take
# more memory than per-subset products are worth.
_KID_GRAM_MAX_PAIRS = 6000 * 6000


def kid(
    real: np.ndarray | Tensor,
    fake: np.ndarray | Tensor,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with the cubic kernel.

    ``k(x, y) = (x·y / D + 1)^3``. Each of ``num_subsets`` draws picks ``m = min(subset_size,
    N_real, N_fake)`` items of each set without replacement and computes the unbiased
    estimate (self-similarities excluded), as StyleGAN2-ADA's ``kernel_inception_distance``.

    Returns:
        ``(mean, std)`` over the subsets. The mean can be slightly negative when the sets
        come from the same distribution (the estimator is unbiased, not non-negative). When
        both sets have at most ``subset_size`` items every subset is the whole set: one
        estimate, std 0.
    """
    x_all = torch.as_tensor(np.asarray(fake, np.float32) if not isinstance(fake, Tensor) else fake).float()
    y_all = torch.as_tensor(np.asarray(real, np.float32) if not isinstance(real, Tensor) else real).float()
    if x_all.ndim != 2 or y_all.ndim != 2 or x_all.shape[1] != y_all.shape[1]:
        raise ValueError(
            f"features must be (N, D) with equal D, got {tuple(y_all.shape)} and {tuple(x_all.shape)}"
        )
    m = min(subset_size, len(x_all), len(y_all))
    if m < 2:
        raise ValueError(
            f"KID needs at least 2 items in each set, got {len(y_all)} real and {len(x_all)} fake"
        )
    d = x_all.shape[1]
    if m == len(x_all) == len(y_all):
        # Every subset would be the whole of both sets: one estimate, no spread.
        num_subsets = 1
    rng = np.random.default_rng(seed)
    # Gram matrices once (float32 BLAS), then cubes and sums per subset in float64; when the
    # sets are large, per-subset products are cheaper than full Gram matrices.
    full = len(x_all) * len(y_all) <= _KID_GRAM_MAX_PAIRS
    if full:
        gxx, gyy, gxy = x_all @ x_all.T, y_all @ y_all.T, x_all @ y_all.T
    values = []
    for _ in range(num_subsets):
        ix = torch.from_numpy(rng.choice(len(x_all), m, replace=False))
        iy = torch.from_numpy(rng.choice(len(y_all), m, replace=False))
        if full:
            kxx, kyy, kxy = gxx[ix][:, ix], gyy[iy][:, iy], gxy[ix][:, iy]
        else:
            x, y = x_all[ix], y_all[iy]
            kxx, kyy, kxy = x @ x.T, y @ y.T, x @ y.T
        kxx, kyy, kxy = ((k.double() / d + 1) ** 3 for k in (kxx, kyy, kxy))
        a = kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()
        values.append(float(a / (m * (m - 1)) - 2 * kxy.sum() / (m * m)))
    v = np.array(values)
    return float(v.mean()), float(v.std(ddof=1) if len(v) > 1 else 0.0)


# ============================================================================ precision / recall
def _kth_radii(feats: Tensor, k: int, batch: int) -> Tensor:
    """Distance of every point to its k-th nearest neighbour within the set (itself excluded)."""
    out = []
    for s in range(0, len(feats), batch):
        d = torch.cdist(feats[s : s + batch], feats)  # (b, N)
        # k + 1 smallest includes the point itself at distance ~0.
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, -1])
    return torch.cat(out)


def _covered(queries: Tensor, refs: Tensor, radii: Tensor, batch: int) -> Tensor:
    """For each query: is it inside at least one reference point's k-NN ball?"""
    out = []
    for s in range(0, len(queries), batch):
        d = torch.cdist(queries[s : s + batch], refs)  # (b, N_ref)
        out.append((d <= radii[None, :]).any(1))
    return torch.cat(out)


def precision_recall(
    real: np.ndarray | Tensor, fake: np.ndarray | Tensor, *, k: int = 3, batch_size: int = 1024
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) in feature space.

    The manifold of a set is the union of balls around its points with radius = distance
    to the point's ``k``-th nearest neighbour. Precision = fraction of fakes inside the real
    manifold (are samples realistic?); recall = fraction of reals inside the fake manifold
    (is the variety covered?). Distances are computed in row batches of ``batch_size``.

    Raises:
        ValueError: fewer than ``k + 1`` items in a set.
    """
    r = torch.as_tensor(np.asarray(real, np.float32) if not isinstance(real, Tensor) else real).float()
    f = torch.as_tensor(np.asarray(fake, np.float32) if not isinstance(fake, Tensor) else fake).float()
    if min(len(r), len(f)) < k + 1:
        raise ValueError(f"precision/recall with k={k} needs at least {k + 1} items per set")
    r_radii = _kth_radii(r, k, batch_size)
    f_radii = _kth_radii(f, k, batch_size)
    precision = _covered(f, r, r_radii, batch_size).float().mean().item()
    recall = _covered(r, f, f_radii, batch_size).float().mean().item()
    return float(precision), float(recall)


# ============================================================================ SWD
# The 5-tap binomial filter of cv2.pyrDown (separable; outer product /256 as in the reference).
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: Tensor, gain: float = 1.0) -> Tensor:
    """Separable 5x5 binomial filter with mirror borders (scipy.ndimage 'mirror' = torch 'reflect').

    Written as five shifted adds per axis: on CPU that is ~2.5x faster than a depthwise
    ``conv2d`` for 3-channel images.
    """
    k = (_BINOMIAL * math.sqrt(gain)).tolist()
    y = F.pad(x, (2, 2, 2, 2), mode="reflect")  # (B, C, H+4, W+4)
    w = y.shape[-1]
    h = sum(y[..., i : w - 4 + i] * k[i] for i in range(5))  # (B, C, H+4, W)
    n = h.shape[-2]
    return sum(h[..., i : n - 4 + i, :] * k[i] for i in range(5))  # (B, C, H, W)


def _pyr_down(x: Tensor) -> Tensor:
    return _blur(x)[:, :, ::2, ::2]


def _pyr_up(x: Tensor) -> Tensor:
    b, c, h, w = x.shape
    up = x.new_zeros(b, c, h * 2, w * 2)
    up[:, :, ::2, ::2] = x
    return _blur(up, gain=4.0)  # x4: three quarters of the inserted samples are zeros


def laplacian_pyramid(x: Tensor, num_levels: int) -> list[Tensor]:
    """``(B, C, H, W)`` float -> ``num_levels`` levels: band-pass details, then the low-pass rest.

    Matches the progressive-GAN reference (``generate_laplacian_pyramid`` with cv2-style
    pyrDown/pyrUp).
    """
    pyramid = [x]
    for _ in range(1, num_levels):
        pyramid.append(_pyr_down(pyramid[-1]))
        pyramid[-2] = pyramid[-2] - _pyr_up(pyramid[-1])
    return pyramid


def swd_resolutions(resolution: int, min_resolution: int = 16) -> list[int]:
    """Pyramid level sizes used for an image side: ``resolution, resolution/2, ... >= min_resolution``."""
    out, r = [], int(resolution)
    while r >= min_resolution:
        out.append(r)
        r //= 2
    if not out:
        raise ValueError(f"SWD needs images of at least {min_resolution} px, got {resolution}")
    return out


def _to_255(images: ImageBatch) -> Tensor:
    """Images -> ``(B, 3, H, W)`` float32 in [0, 255] (RGBA composited on white)."""
    from avatarforge.eval.extractors import to_unit_float

    return to_unit_float(images, "cpu").mul_(255.0)


class SWDAccumulator:
    """Collects the Laplacian-pyramid patch descriptors of a stream of images.

    Per level: ``nhoods_per_image`` random 7x7x3 neighbourhoods of every image (positions
    from the accumulator's seed). :meth:`descriptors` normalises each colour channel to
    zero mean, unit variance over the set, as the reference does.

    Args:
        resolution: image side (all fed images must have it).
        nhood_size: neighbourhood side (7).
        nhoods_per_image: descriptors per image and level (128 in the paper).
        max_descriptors: memory cap per level; with more than ``max_descriptors /
            nhoods_per_image`` images, fewer per image are taken (decided per batch, see
            ``expected_images``).
        expected_images: how many images will be fed (to apply ``max_descriptors`` evenly).
        seed: seeds the positions.
        min_resolution: coarsest level side (16).
    """

    def __init__(
        self,
        resolution: int,
        *,
        nhood_size: int = 7,
        nhoods_per_image: int = 128,
        max_descriptors: int = 1 << 17,
        expected_images: int | None = None,
        seed: int = 0,
        min_resolution: int = 16,
    ) -> None:
        self.resolutions = swd_resolutions(resolution, min_resolution)
        self.nhood_size = nhood_size
        per = nhoods_per_image
        if expected_images:
            per = max(1, min(per, max_descriptors // max(1, expected_images)))
        self.nhoods_per_image = per
        self.generator = torch.Generator().manual_seed(seed)
        self._desc: list[list[Tensor]] = [[] for _ in self.resolutions]
        self._final: list[Tensor] | None = None
        self.count = 0

    def feed(self, images: ImageBatch) -> None:
        """Add a batch of images (uint8 ``(B, H, W, C)`` or float ``(B, C, H, W)`` in [-1, 1])."""
        x = _to_255(images)  # (B, 3, H, W)
        if x.shape[-1] != self.resolutions[0] or x.shape[-2] != self.resolutions[0]:
            raise ValueError(f"SWD accumulator for {self.resolutions[0]} px images got {tuple(x.shape[-2:])}")
        for lod, level in enumerate(laplacian_pyramid(x, len(self.resolutions))):
            self._desc[lod].append(self._patches(level))
        self.count += x.shape[0]
        self._final = None

    def _patches(self, level: Tensor) -> Tensor:
        b, _, h, w = level.shape
        half = self.nhood_size // 2
        n = b * self.nhoods_per_image
        img = torch.arange(b).repeat_interleave(self.nhoods_per_image)  # (n,)
        ys = torch.randint(half, h - half, (n,), generator=self.generator)
        xs = torch.randint(half, w - half, (n,), generator=self.generator)
        off = torch.arange(-half, half + 1)
        yy = (ys[:, None] + off)[:, :, None]  # (n, k, 1)
        xx = (xs[:, None] + off)[:, None, :]  # (n, 1, k)
        patches = level.permute(0, 2, 3, 1)[img[:, None, None], yy, xx]  # (n, k, k, C)
        return patches.permute(0, 3, 1, 2).reshape(n, -1).contiguous()  # (n, C*k*k), (chan, y, x) order

    def descriptors(self) -> list[Tensor]:
        """Per level ``(N, C*k*k)`` float32 descriptors, each channel normalised over the set.

        Computed once and kept (a reference set is compared with many sources).
        """
        if self._final is not None:
            return self._final
        out = []
        c = 3
        for lod, parts in enumerate(self._desc):
            if not parts:
                raise ValueError("no images were fed to the SWD accumulator")
            d = torch.cat(parts)  # (N, C*k*k)
            self._desc[lod] = [d]  # later feeds append to one block, not many small ones
            v = d.view(len(d), c, -1)
            mean = v.mean(dim=(0, 2), keepdim=True)
            std = v.std(dim=(0, 2), keepdim=True, unbiased=False).clamp_min(1e-8)
            out.append(((v - mean) / std).view(len(d), -1))
        self._final = out
        return out


def sliced_wasserstein(
    a: Tensor,
    b: Tensor,
    *,
    dir_repeats: int = 4,
    dirs_per_repeat: int = 128,
    generator: torch.Generator | None = None,
) -> float:
    """Sliced Wasserstein distance between two equally sized descriptor sets ``(N, D)``.

    Random unit directions (``dir_repeats x dirs_per_repeat``, 512 in total by default, as in
    the reference); per direction the sorted projections of both sets are matched and
    ``|a - b|`` averaged.
    """
    if a.shape != b.shape:
        raise ValueError(f"descriptor sets must have equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    results = []
    for _ in range(dir_repeats):
        dirs = torch.randn(a.shape[1], dirs_per_repeat, generator=generator)
        dirs /= dirs.norm(dim=0, keepdim=True)  # (D, dirs)
        # (dirs, N) rows sorted with NumPy: sorting contiguous rows is several times faster
        # than torch.sort along dim 0 on CPU.
        pa = np.sort((dirs.T @ a.T).numpy(), axis=1)
        pb = np.sort((dirs.T @ b.T).numpy(), axis=1)
        results.append(float(np.abs(pa - pb).mean(dtype=np.float64)))
    return float(np.mean(results))


def _swd_compare(
    real: SWDAccumulator, fake: SWDAccumulator, *, seed: int = 0, **options: Any
) -> dict[str, float]:
    if real.resolutions != fake.resolutions:
        raise ValueError(
            f"SWD compares equal resolutions, got {real.resolutions[0]} and {fake.resolutions[0]} px"
        )
    g = torch.Generator().manual_seed(seed + 1)
    out: dict[str, float] = {}
    for res, da, db in zip(real.resolutions, real.descriptors(), fake.descriptors()):
        n = min(len(da), len(db))
        # Unequal counts: keep a seeded random subset of the larger set.
        if len(da) > n:
            da = da[torch.randperm(len(da), generator=g)[:n]]
        if len(db) > n:
            db = db[torch.randperm(len(db), generator=g)[:n]]
        out[f"swd_{res}"] = sliced_wasserstein(da, db, generator=g, **options) * 1e3
    out["swd"] = float(np.mean([out[f"swd_{r}"] for r in real.resolutions]))
    return out


def swd(
    real: ImageBatch,
    fake: ImageBatch,
    *,
    seed: int = 0,
    nhoods_per_image: int = 128,
    dir_repeats: int = 4,
    dirs_per_repeat: int = 128,
) -> dict[str, float]:
    """Multi-scale sliced Wasserstein distance (Karras et al. 2018) between two image sets.

    Laplacian pyramid levels from the image size down to 16 px; per level ``nhoods_per_image``
    random 7x7 neighbourhoods per image, normalised per colour channel; 512 random
    projections. Values are ×1e3 as in the paper.

    Returns:
        ``{"swd_<res>": ..., ..., "swd": mean over levels}``.
    """
    res_r = _to_255(real).shape[-1] if not isinstance(real, np.ndarray) else real.shape[-2]
    acc_r = SWDAccumulator(res_r, nhoods_per_image=nhoods_per_image, seed=seed)
    # The same patch positions for both sets (common random numbers): less variance in the
    # difference, and identical sets give exactly 0.
    acc_f = SWDAccumulator(res_r, nhoods_per_image=nhoods_per_image, seed=seed)
    acc_r.feed(real)
    acc_f.feed(fake)
    return _swd_compare(acc_r, acc_f, seed=seed, dir_repeats=dir_repeats, dirs_per_repeat=dirs_per_repeat)


# ============================================================================ reconstruction
def _as_float_nchw(x: ImageBatch) -> Tensor:
    """uint8 (B, H, W, C) -> float in [-1, 1] (B, C, H, W); float tensors pass through."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if x.dtype == torch.uint8:
        x = x[None] if x.ndim == 3 else x
        return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return x.float()


def mse(a: ImageBatch, b: ImageBatch) -> Tensor:
    """Per-image mean squared error ``(B,)`` (on the [-1, 1] scale for uint8 inputs)."""
    a, b = _as_float_nchw(a), _as_float_nchw(b)
    return (a - b).pow(2).flatten(1).mean(1)


def psnr(a: ImageBatch, b: ImageBatch, data_range: float = 2.0) -> Tensor:
    """Per-image PSNR in dB ``(B,)``: ``10 log10(data_range² / MSE)``; identical images give inf.

    ``data_range`` is the span of valid values: 2 for [-1, 1] images (and for uint8 inputs,
    which are mapped to [-1, 1]), 1 for [0, 1], 255 for raw 0..255 floats.
    """
    m = mse(a, b).double()
    return (10.0 * torch.log10(data_range**2 / m)).float()  # m == 0 -> inf


def gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    """Normalised 1-D Gaussian ``(size,)`` (the SSIM window is its outer product)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    a: ImageBatch,
    b: ImageBatch,
    data_range: float = 2.0,
    *,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """Per-image SSIM ``(B,)`` (Wang et al. 2004): Gaussian window 11, sigma 1.5, valid filtering.

    ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2`` with ``L = data_range`` (2 for [-1, 1] images, see
    :func:`psnr`). The SSIM map is averaged over channels and pixels; works on tensors of
    any device, in float64.

    Raises:
        ValueError: images smaller than the window, or shapes differ.
    """
    x, y = _as_float_nchw(a).double(), _as_float_nchw(b).double()
    if x.shape != y.shape:
        raise ValueError(f"images must have equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window} pixels, got {tuple(x.shape[-2:])}")
    c = x.shape[1]
    g = gaussian_window(window, sigma).to(x.device)
    gh, gv = g.view(1, 1, 1, -1).expand(c, 1, 1, window), g.view(1, 1, -1, 1).expand(c, 1, window, 1)

    def filt(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, gh, groups=c), gv, groups=c)  # valid: (B, C, H-w+1, W-w+1)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x**2
    syy = filt(y * y) - mu_y**2
    sxy = filt(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).flatten(1).mean(1).float()


# ============================================================================ attribute accuracy
def attribute_accuracy_from_predictions(
    predictions: dict[str, np.ndarray], requested: dict[str, np.ndarray]
) -> dict[str, tuple[int, int]]:
    """``{attribute: (correct, total)}`` for requested class indices vs predicted probabilities.

    ``predictions[name]``: ``(B, K)`` probabilities; ``requested[name]``: ``(B,)`` class
    indices in the same class order.
    """
    out = {}
    for name, want in requested.items():
        got = predictions[name].argmax(1)
        out[name] = (int((got == want).sum()), len(want))
    return out


#: Predicted ``eye_open`` below which :func:`attribute_accuracy` does not judge eye colour.
EYES_OPEN = 0.5
#: Attributes that are a colour: a creator's first choice, and big enough patches to be judged
#: reliably, so they carry the higher accuracy target (:func:`attribute_target`).
COLOUR_ATTRIBUTES = ("hair_color", "eye_color", "skin_tone", "outfit_color", "background_color")


def attribute_target(name: str, num_classes: int) -> float:
    """The accuracy a conditional generator should reach on attribute ``name``.

    0.8 for a colour (:data:`COLOUR_ATTRIBUTES`), else three times chance (``3 / num_classes``,
    at most 0.95): the targets the quickstart report and the benchmark hold results against.
    """
    if name in COLOUR_ATTRIBUTES:
        return 0.8
    return min(0.95, 3.0 / max(1, num_classes))


def attribute_accuracy(
    source: ImageSource,
    *,
    avatar: FeatureExtractor | Callable[[], FeatureExtractor] | None = None,
    batch_size: int = 64,
    label_names: Sequence[str] | None = None,
    label_values: Sequence[Sequence[str]] | None = None,
    notes: list[str] | None = None,
) -> dict[str, float]:
    """Metric ``attr``: how often a conditional generator draws the labels it is asked for.

    The avatar attribute net judges every sample's categorical attributes; a label counts
    where the net knows the attribute and its class names; eye colour only where the net sees
    the eyes open (predicted ``eye_open`` >= :data:`EYES_OPEN`). Returns ``attr_acc`` (the mean)
    and ``attr_acc_<label>`` per judged label.

    Args:
        source: a :class:`~avatarforge.eval.sources.GeneratorSource` of a conditional model.
        avatar: the ``avatar`` extractor, or a function returning it (called after the checks,
            since the first use may train the net); default ``get_extractor("avatar")``.
        batch_size: images per forward pass.
        label_names, label_values: the generator's labels and their class names (default:
            what the source recorded; class names fall back to the procedural schema's).
        notes: list that receives what was skipped and why.

    Raises:
        SourceError: not a conditional generator, unnamed labels, or no label the net knows.
    """
    from avatarforge.data.procedural import SCHEMA
    from avatarforge.eval.sources import GeneratorSource, SourceError

    notes = notes if notes is not None else []

    if not isinstance(source, GeneratorSource):
        raise SourceError("metric 'attr' needs a conditional generator as the source (a run directory)")
    dims = list(getattr(source.G, "label_dims", []) or [])
    if not dims:
        raise SourceError(
            "metric 'attr' needs a conditional model (trained with labels); this one is unconditional"
        )
    names = list(label_names or getattr(source, "label_names", []) or [])
    values = [list(v) for v in (label_values or getattr(source, "label_values", []) or [])]
    if len(names) != len(dims):
        raise SourceError(
            f"metric 'attr': the model has {len(dims)} label(s) but their names are unknown; pass "
            "label_names (the run's checkpoint records them as label_names)"
        )
    # Built only now: the checks above are cheap, the avatar net may be trained on first use.
    if avatar is None:
        from avatarforge.eval.extractors import get_extractor

        avatar = get_extractor("avatar")
    elif not isinstance(avatar, FeatureExtractor) and callable(avatar):
        avatar = avatar()
    maps: dict[int, np.ndarray] = {}
    for i, (name, k) in enumerate(zip(names, dims)):
        if name not in avatar.net.categorical_names:
            notes.append(f"attr: label {name!r} is not an attribute the avatar net knows; skipped")
            continue
        vals = (
            values[i]
            if i < len(values) and values[i]
            else (list(SCHEMA[name].values) if name in SCHEMA.names else [])
        )
        if len(vals) != k:
            notes.append(f"attr: class names of label {name!r} unknown ({k} classes); skipped")
            continue
        known = avatar.class_names(name)
        maps[i] = np.array([known.index(v) if v in known else -1 for v in vals])
    if not maps:
        raise SourceError(f"metric 'attr': none of the labels {names} can be judged by the avatar net")
    correct = dict.fromkeys(maps, 0)
    total = dict.fromkeys(maps, 0)
    # A closed eye hides the iris: eye colour is judged only where the net sees open eyes
    # (its own held-out accuracy is ~0.8 over all renders but ~1.0 with the eyes open).
    gate_eyes = "eye_open" in getattr(avatar.net, "continuous_names", [])
    hidden = 0
    for images, labels in source.float_batches(batch_size):
        preds = avatar.attribute_predictions(images, include_continuous=gate_eyes)
        lab = labels.cpu().numpy()
        for i, cmap in maps.items():
            want = cmap[lab[:, i]]
            ok = want >= 0
            if names[i] == "eye_color" and gate_eyes:
                shut = preds["eye_open"] < EYES_OPEN
                hidden += int((ok & shut).sum())
                ok &= ~shut
            got = preds[names[i]].argmax(1)
            correct[i] += int((got[ok] == want[ok]).sum())
            total[i] += int(ok.sum())
    if hidden:
        notes.append(f"attr: eye_color not judged on {hidden} image(s) whose eyes the net sees closed")
    out = {f"attr_acc_{names[i]}": correct[i] / max(1, total[i]) for i in maps}
    out = {"attr_acc": float(np.mean(list(out.values()))), **out}
    return out


# ============================================================================ reconstruction
def reconstruction_metrics(
    vae: Any,
    reference: ImageSource | None,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    notes: list[str] | None = None,
) -> dict[str, float]:
    """Metric ``recon``: MSE, PSNR and SSIM of a VAE's reconstructions of the reference images.

    Each image is encoded to its posterior mean and decoded (no sampling). A conditional VAE
    gets the reference's labels when it is a packed data set with the same label names, else
    the "unknown" class (with a note).

    Args:
        vae: a model with ``encode``/``decode`` (a :class:`~avatarforge.models.vae.VAE`).
        reference: the images (an :class:`~avatarforge.eval.sources.ImageSource`).
        batch_size: images per forward pass.
        device: where to run when ``vae`` has no parameters to say it.
        notes: list that receives notes.

    Raises:
        SourceError: ``vae`` has no encode/decode, or no reference is given.
    """
    from avatarforge.eval.sources import PackedSource, SourceError

    notes = notes if notes is not None else []
    if vae is None or not (hasattr(vae, "encode") and hasattr(vae, "decode")):
        raise SourceError("metric 'recon' needs a VAE (a model with encode/decode), e.g. a VAE run directory")
    ref = reference
    if ref is None:
        raise SourceError("metric 'recon' compares against reference images: pass a reference")
    channels = int(getattr(vae, "channels", 3))
    label_dims = list(getattr(vae, "label_dims", []) or [])
    names = list(getattr(vae, "label_names", []) or [])
    param = next(vae.parameters(), None)
    dev = param.device if param is not None else torch.device(device)
    batches: Iterable[tuple[np.ndarray, torch.Tensor | None]]
    if isinstance(ref, PackedSource):
        from avatarforge.data.dataset import PackedDataset, label_indices

        ds = PackedDataset(ref.path, channels=channels)  # type: ignore[arg-type]
        use_labels = (
            bool(label_dims) and len(names) == len(label_dims) and all(n in ds.schema.names for n in names)
        )

        def gen_packed() -> Iterable[tuple[np.ndarray, torch.Tensor | None]]:
            for s in range(0, len(ref), batch_size):
                idx = ref.indices[s : s + batch_size]
                lab = (
                    label_indices(torch.from_numpy(ds.labels[idx]), ds.schema, names) if use_labels else None
                )
                yield ds.images_uint8(idx), lab

        batches = gen_packed()
    else:
        use_labels = False

        def gen_plain() -> Iterable[tuple[np.ndarray, torch.Tensor | None]]:
            for b in ref.batches(batch_size):
                if channels == 4:
                    b = np.concatenate([b, np.full((*b.shape[:-1], 1), 255, np.uint8)], -1)
                yield b, None

        batches = gen_plain()
    if label_dims and not use_labels:
        notes.append("recon: the reference has no matching labels; the conditional VAE got 'unknown' labels")
    m_all, p_all, s_all = [], [], []
    vae_mode = vae.training
    vae.eval()
    try:
        with torch.no_grad():
            for u8, lab in batches:
                x = (
                    torch.from_numpy(u8).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(dev)
                )  # (B, C, H, W)
                if label_dims and lab is None:
                    lab = torch.tensor(label_dims).expand(x.shape[0], -1)  # index num_classes = unknown
                lab = lab.to(dev) if lab is not None else None
                mu, _ = vae.encode(x, lab)
                x_hat = vae.decode(mu, lab).float().clamp(-1, 1)
                m_all.append(mse(x, x_hat).cpu())
                p_all.append(psnr(x, x_hat).cpu())
                s_all.append(ssim(x, x_hat).cpu())
    finally:
        vae.train(vae_mode)
    return {
        "mse": float(torch.cat(m_all).mean()),
        "psnr": float(torch.cat(p_all).mean()),
        "ssim": float(torch.cat(s_all).mean()),
    }


# ============================================================================ registry
@dataclass(frozen=True)
class Metric:
    """A registered metric (see the module docstring for the kinds)."""

    name: str
    kind: str
    compute: Callable[..., dict[str, float]]
    description: str = ""
    accumulator: Callable[..., Any] | None = None
    keys: tuple[str, ...] = ()


_KINDS = ("features", "images", "generator", "reconstruction")
_METRICS: dict[str, Metric] = {}


def register_metric(
    name: str,
    kind: str,
    *,
    description: str = "",
    accumulator: Callable[..., Any] | None = None,
    keys: Sequence[str] = (),
) -> Callable[[Callable[..., dict[str, float]]], Callable[..., dict[str, float]]]:
    """Decorator registering ``compute`` as metric ``name`` of ``kind`` (see module docstring).

    Example::

        @register_metric("mean_dist", "features", description="distance of the feature means")
        def _mean_dist(real, fake, *, seed=0):
            return {"mean_dist": float(np.linalg.norm(real.mu - fake.mu))}
    """
    if kind not in _KINDS:
        raise ValueError(f"metric kind must be one of {', '.join(_KINDS)}, got {kind!r}")
    if kind == "images" and accumulator is None:
        raise ValueError("an 'images' metric needs an accumulator factory")

    def deco(fn: Callable[..., dict[str, float]]) -> Callable[..., dict[str, float]]:
        if name in _METRICS and _METRICS[name].compute is not fn:
            raise ValueError(f"metric {name!r} is already registered")
        _METRICS[name] = Metric(name, kind, fn, description, accumulator, tuple(keys))
        return fn

    return deco


def list_metrics() -> list[str]:
    """Registered metric names, sorted."""
    return sorted(_METRICS)


def get_metric(name: str) -> Metric:
    """The registered metric ``name``.

    Raises:
        KeyError: unknown name (lists the registered ones).
    """
    try:
        return _METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; available: {', '.join(list_metrics())}") from None


@register_metric("fid", "features", description="Fréchet distance of feature Gaussians", keys=("fid",))
def _fid(real: FeatureSet, fake: FeatureSet, *, seed: int = 0) -> dict[str, float]:
    return {"fid": frechet_distance(real.mu, real.sigma, fake.mu, fake.sigma)}


@register_metric(
    "kid", "features", description="kernel distance (unbiased MMD², cubic kernel)", keys=("kid", "kid_std")
)
def _kid(real: FeatureSet, fake: FeatureSet, *, seed: int = 0) -> dict[str, float]:
    mean, std = kid(real.features, fake.features, seed=seed)
    return {"kid": mean, "kid_std": std}


@register_metric(
    "pr", "features", description="improved precision and recall (k=3)", keys=("precision", "recall")
)
def _pr(real: FeatureSet, fake: FeatureSet, *, seed: int = 0) -> dict[str, float]:
    p, r = precision_recall(real.features, fake.features)
    return {"precision": p, "recall": r}


register_metric(
    "swd",
    "images",
    description="multi-scale sliced Wasserstein distance on Laplacian-pyramid patches (x1e3)",
    accumulator=SWDAccumulator,
    keys=("swd",),
)(_swd_compare)


register_metric(
    "attr",
    "generator",
    description="attribute accuracy of a conditional generator, judged by the avatar attribute net",
    keys=("attr_acc",),
)(attribute_accuracy)
register_metric(
    "recon",
    "reconstruction",
    description="reconstruction MSE / PSNR / SSIM of a VAE on the reference images",
    keys=("mse", "psnr", "ssim"),
)(reconstruction_metrics)
