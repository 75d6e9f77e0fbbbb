"""Evaluation throughput: feature extractors, SWD, and the distance computations.

- ``avatar`` extractor: 64 px uint8 images -> 256-d features, images/s (batch 64). Uses the
  cached avatar net (trained on first use into the default cache; the training time is
  reported when that happens);
- ``inception`` extractor with random weights (the speed does not depend on the values):
  uint8 images -> resize to 299 -> 2048-d pool3 features, images/s (batch 16);
- SWD end to end at 64 px (pyramids, 128 patches per image, 512 projections per level),
  images/s counting both sets;
- FID (2048-d Fréchet distance, ``eigh`` vs ``sqrtm``), KID (100 subsets of 1000) and
  precision/recall (k=3) on random 2048-d features: seconds.

The machine is shared; figures are the best of a few repeats.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from benchmarks.common import Result, best_rate


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    from avatarforge.data import procedural as P

    base = np.stack(
        [P.render(P.sample_attributes(seed + i), size, background=True) for i in range(min(n, 64))]
    )
    return np.concatenate([base] * (n // len(base) + 1))[:n]


def _seconds(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _avatar(quick: bool) -> list[Result]:
    from avatarforge.eval.avatar_net import DEFAULT_RECIPE, AvatarExtractor, _cache_entry

    results = []
    trained = not (_cache_entry(DEFAULT_RECIPE, None) / "model.safetensors").is_file()
    t0 = time.perf_counter()
    ext = AvatarExtractor()
    if trained:
        rep = ext.report
        results.append(
            Result(
                "avatar net: first-use training",
                time.perf_counter() - t0,
                "s",
                target=90.0,
                higher_is_better=False,
                notes=f"render {rep.get('render_seconds')} s + train {rep.get('train_seconds')} s (one thread); "
                f"held-out hair_color {rep['accuracy']['hair_color']}, eye_color {rep['accuracy']['eye_color']}",
            )
        )
    x = _images(64, 64)
    rate = best_rate(lambda: len(ext(x)), repeats=2 if quick else 3, min_seconds=0.5)
    results.append(
        Result(
            "avatar extractor 64 px", rate, "images/s", notes=f"batch 64, {torch.get_num_threads()} threads"
        )
    )
    return results


def _inception(quick: bool) -> Result:
    import tempfile
    from pathlib import Path

    from avatarforge.eval.inception import FIDInceptionV3, InceptionExtractor

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random_inception.pth"
        torch.save(FIDInceptionV3().state_dict(), path)
        ext = InceptionExtractor(weights=path)
    x = _images(16, 64)
    ext(x[:2])  # warm up
    rate = best_rate(lambda: len(ext(x)), repeats=2 if quick else 3, min_seconds=1.0)
    return Result(
        "inception extractor (299 px)",
        rate,
        "images/s",
        notes="random weights, 64 px input resized, batch 16",
    )


def _swd(quick: bool) -> Result:
    from avatarforge.eval.metrics import swd

    n = 256 if quick else 1024
    real, fake = _images(n, 64, 0), _images(n, 64, 1000)
    sec = _seconds(lambda: swd(real, fake), 1 if quick else 2)
    return Result(
        "SWD 64 px", 2 * n / sec, "images/s", notes=f"{n} vs {n} images, 128 patches/image, 3 levels"
    )


def _distances(quick: bool) -> list[Result]:
    from avatarforge.eval.metrics import feature_statistics, frechet_distance, kid, precision_recall

    rng = np.random.default_rng(0)
    n = 2000 if quick else 5000
    a = np.abs(rng.normal(size=(n, 2048))).astype(np.float32)
    b = np.abs(rng.normal(size=(n, 2048)) + 0.05).astype(np.float32)
    (m1, s1), (m2, s2) = feature_statistics(a), feature_statistics(b)
    out = []
    for method in ("eigh", "sqrtm"):
        sec = _seconds(lambda m=method: frechet_distance(m1, s1, m2, s2, method=m), 1)
        out.append(Result(f"FID 2048-d ({method})", sec, "s", higher_is_better=False))
    sec = _seconds(lambda: kid(a, b), 1)
    out.append(
        Result("KID 2048-d", sec, "s", higher_is_better=False, notes=f"{n} vs {n}, 100 subsets of 1000")
    )
    m = 1000 if quick else 5000
    sec = _seconds(lambda: precision_recall(a[:m], b[:m]), 1)
    out.append(Result("precision/recall 2048-d", sec, "s", higher_is_better=False, notes=f"{m} vs {m}, k=3"))
    return out


def run(quick: bool) -> list[Result]:
    """Throughput of the extractors and SWD, and the time of the distance computations."""
    return [*_avatar(quick), _inception(quick), _swd(quick), *_distances(quick)]
