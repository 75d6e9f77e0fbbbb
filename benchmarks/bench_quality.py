"""Quality at fixed compute: dcgan vs stylegan trained for the same CPU minutes.

Both models train with their presets (``src/avatarforge/configs/{dcgan,stylegan}-64.yaml``;
stylegan with DiffAugment) on the shared anime-faces-96 folder, prepared to 64 px with
:func:`avatarforge.data.prepare.prepare_dataset` into ``.af-cache/bench/`` (skipped cleanly
when the folder is absent). Each run gets the same wall-clock budget with the same number of
torch threads, one after the other (full: 20 minutes each, quick: 3; ``AF_QUALITY_MINUTES``
overrides; ``AF_QUALITY_THREADS`` sets the threads, default 1: on the shared 2-core box one
thread per run is faster than two and wall minutes are then CPU minutes).

Outputs: one PNG with the EMA generators' samples side by side from fixed latents (left
dcgan, right stylegan) in ``benchmarks/results/``; figures per model: images/s, kimg reached,
and SWD (multi-scale sliced Wasserstein distance, ``avatarforge.eval.metrics.swd``,
weight-free, x1e3; lower is better) of generated images against the data set, next to the
SWD of two disjoint halves of the real data (the floor a perfect model would reach).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from avatarforge.imageio import make_grid
from benchmarks.common import RESULTS, ROOT, Result, shared_faces

SIZE = 64
CACHE = ROOT / ".af-cache" / "bench"
MODELS = ("dcgan", "stylegan")


def prepared_faces(size: int = SIZE) -> Path | None:
    """The shared anime faces as a packed ``size``-px data set (built once, cached), or None."""
    src = shared_faces()
    if src is None:
        return None
    out = CACHE / f"anime-faces-{size}"
    if not (out / "manifest.json").exists():
        from avatarforge.data.prepare import prepare_dataset

        CACHE.mkdir(parents=True, exist_ok=True)
        prepare_dataset([src], out, size, alpha="white", overwrite=True, progress=False)
    return out


def train(model: str, data: Path, runs_dir: Path, minutes: float, threads: int | None, *extra: str) -> Path:
    """Train ``model`` with its preset for ``minutes``; returns the run directory."""
    from avatarforge.config import build_train_config
    from avatarforge.train import GANTrainer

    overrides = [
        f"runs_dir={runs_dir}",
        f"minutes={minutes}",
        "kimg=null",
        "log.progress=false",
        "log.sample_every_kimg=0",
        "log.checkpoint_every_kimg=0",
        f"perf.num_threads={threads if threads else 'null'}",
        *extra,
    ]
    cfg = build_train_config(cli={"model": {"name": model}, "data": {"path": str(data)}}, overrides=overrides)
    return GANTrainer(cfg).fit()


@torch.no_grad()
def sample(run_dir: Path, n: int, seed: int) -> torch.Tensor:
    """``n`` images from the run's EMA generator, latents from ``seed``, as (n, C, H, W) in [-1, 1]."""
    from avatarforge.train import load_generator

    G = load_generator(run_dir)
    g = torch.Generator().manual_seed(seed)
    z = G.sample_z(n, generator=g, device="cpu")
    return torch.cat([G(z[i : i + 64]).float().clamp(-1, 1) for i in range(0, n, 64)])


def side_by_side(grids: dict[str, np.ndarray], path: Path, captions: dict[str, str]) -> Path:
    """Grids (H, W, 3 uint8) next to each other with a caption above each, saved as PNG."""
    pad, top = 16, 22
    h = max(g.shape[0] for g in grids.values())
    w = sum(g.shape[1] for g in grids.values()) + pad * (len(grids) + 1)
    canvas = Image.new("RGB", (w, h + top + pad), "white")
    draw = ImageDraw.Draw(canvas)
    x = pad
    for name, g in grids.items():
        canvas.paste(Image.fromarray(g), (x, top))
        draw.text((x, 5), captions.get(name, name), fill="black")
        x += g.shape[1] + pad
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def _swd(real: np.ndarray, fake: torch.Tensor | np.ndarray) -> float | None:
    try:
        from avatarforge.eval.metrics import swd
    except ImportError:  # the evaluation suite is not there yet: figures without SWD
        return None
    return float(swd(real, fake)["swd"])


def _train_rate(run_dir: Path) -> tuple[float, float]:
    """(mean img/s over the logged intervals after the first, kimg reached) from metrics.jsonl."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("kind") == "train"]
    rates = [r["img_per_s"] for r in train[1:]] or [r["img_per_s"] for r in train]
    return float(np.mean(rates)) if rates else 0.0, float(train[-1]["kimg"]) if train else 0.0


def run(quick: bool = False) -> list[Result]:
    data = prepared_faces()
    if data is None:
        print("bench_quality: shared anime-faces-96 not found; skipped")
        return []
    minutes = float(os.environ.get("AF_QUALITY_MINUTES", 3 if quick else 20))
    threads_env = os.environ.get("AF_QUALITY_THREADS", "1")
    threads = int(threads_env) if threads_env not in ("", "0", "default") else None
    n_eval = 1024 if quick else 2048
    from avatarforge.data.dataset import PackedDataset

    ds = PackedDataset(data)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ds))
    reals = ds.images_uint8(np.sort(order[:n_eval]))  # (N, H, W, 3)
    floor = _swd(reals, ds.images_uint8(np.sort(order[n_eval : 2 * n_eval])))

    results: list[Result] = []
    grids: dict[str, np.ndarray] = {}
    captions: dict[str, str] = {}
    figures: dict[str, dict[str, Any]] = {}
    # Run directories are kept (checkpoints, metrics.jsonl, samples) until the next run.
    runs_dir = CACHE / "quality-runs" / ("quick" if quick else "full")
    if runs_dir.exists():
        shutil.rmtree(runs_dir)
    for model in MODELS:
        run_dir = train(model, data, runs_dir, minutes, threads)
        rate, kimg = _train_rate(run_dir)
        fakes = sample(run_dir, n_eval, seed=1)
        grids[model] = make_grid(sample(run_dir, 64, seed=123), nrow=8)
        score = _swd(reals, fakes)
        figures[model] = {
            "img_per_s": rate,
            "kimg": kimg,
            "swd": score,
            "run": str(run_dir.relative_to(ROOT)),
        }
        captions[model] = f"{model}: {kimg:.1f} kimg in {minutes:g} min" + (
            f", SWD {score:.1f}" if score is not None else ""
        )
    grid_path = RESULTS / f"quality_grid{'_quick' if quick else ''}.png"
    side_by_side(grids, grid_path, captions)
    rel = grid_path.relative_to(ROOT)
    thr = f"{threads} torch thread(s)" if threads else "default torch threads"
    for model in MODELS:
        f = figures[model]
        common = {"minutes": minutes, "threads": threads, "grid": str(rel), "eval_images": n_eval, **f}
        results.append(
            Result(
                f"{model}: training images/s ({minutes:g} min run)",
                f["img_per_s"],
                "images/s",
                notes=f"preset {model}-64, {thr}, {f['kimg']:.1f} kimg; samples: {rel}",
                extra=common,
            )
        )
        if f["swd"] is not None:
            results.append(
                Result(
                    f"{model}: SWD after {minutes:g} min",
                    f["swd"],
                    "x1e3",
                    higher_is_better=False,
                    notes=f"{n_eval} EMA samples vs {n_eval} reals, mean of 64/32/16 px levels; "
                    f"real-vs-real floor {floor:.1f}; grid: {rel} (left dcgan, right stylegan)",
                    extra=common,
                )
            )
        else:  # TODO: SWD once avatarforge.eval.metrics.swd is importable
            results.append(Result(f"{model}: kimg in {minutes:g} min", f["kimg"], "kimg", extra=common))
    if floor is not None:
        results.append(
            Result(
                "SWD floor: real vs real (disjoint halves)",
                floor,
                "x1e3",
                higher_is_better=False,
                notes=f"{n_eval} vs {n_eval} real images; what a perfect generator would score",
            )
        )
    return results


if __name__ == "__main__":
    for r in run(quick=True):
        print(f"{r.name}: {r.value:,.2f} {r.unit}  {r.notes}")
