"""Quality at fixed compute: dcgan vs stylegan trained for the same CPU minutes.

Both models train with their presets (``src/avatarforge/configs/{dcgan,stylegan}-64.yaml``;
stylegan with DiffAugment) on the shared anime-faces-96 folder, prepared to 64 px with
:func:`avatarforge.data.prepare.prepare_dataset` into ``.af-cache/bench/`` (skipped cleanly
when the folder is absent). The two train at the same time, each in its own process on one
torch thread, each until it has used the same CPU time (full: 20 CPU minutes, quick: 3;
``AF_QUALITY_MINUTES`` overrides): a CPU-time budget, unlike a wall-clock one, is fair on a
machine shared with other jobs, and running side by side gives both the same conditions.

Outputs: one PNG with the EMA generators' samples side by side from fixed latents (left
dcgan, right stylegan) in ``benchmarks/results/``; figures per model: images per CPU-second,
kimg reached, and SWD (multi-scale sliced Wasserstein distance, ``avatarforge.eval.metrics.swd``,
weight-free, x1e3; lower is better) of generated images against the data set, next to the
SWD of two disjoint halves of the real data (the floor a perfect model would reach).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
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


def train_for_cpu(
    model: str, data: Path, runs_dir: Path, cpu_minutes: float, overrides: Sequence[str] = ()
) -> Path:
    """Train ``model`` (its preset + ``overrides``) on 1 torch thread until this process has
    used ``cpu_minutes`` of CPU time; returns the run directory.

    The budget is CPU time, not wall time, so a busy machine does not shorten one model's run
    more than the other's. A wall-clock limit of 4x the budget is a safety net.
    """
    from avatarforge.config import build_train_config
    from avatarforge.train import GANTrainer

    torch.set_num_threads(1)
    cfg = build_train_config(
        cli={"model": {"name": model}, "data": {"path": str(data)}},
        overrides=[
            f"runs_dir={runs_dir}",
            f"minutes={4 * cpu_minutes}",
            "kimg=null",
            "log.progress=false",
            "log.sample_every_kimg=0",
            "log.checkpoint_every_kimg=0",
            "perf.num_threads=1",
            *overrides,
        ],
    )
    start: list[float] = []

    def budget(trainer: Any) -> None:
        if not start:
            start.append(time.process_time())  # after the first step: set-up is not counted
        elif time.process_time() - start[0] >= cpu_minutes * 60:
            trainer.stop.request("cpu-budget")

    return GANTrainer(cfg, step_hook=budget).fit()


def train_side_by_side(
    data: Path, runs_dir: Path, cpu_minutes: float, overrides: dict[str, Sequence[str]] | None = None
) -> dict[str, Path]:
    """Train every model of :data:`MODELS` at once, one process (1 thread) each, same CPU budget.

    Running them together means both see the same machine load.
    """
    procs = {}
    for model in MODELS:
        cmd = [sys.executable, "-m", "benchmarks.bench_quality", "--train", model, "--data", str(data)]
        cmd += ["--runs-dir", str(runs_dir / model), "--cpu-minutes", str(cpu_minutes)]
        cmd += list((overrides or {}).get(model, ()))
        log = open(runs_dir.parent / f"{runs_dir.name}-{model}.log", "w")  # noqa: SIM115
        procs[model] = (subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), log)
    out = {}
    for model, (proc, log) in procs.items():
        rc = proc.wait()
        log.close()
        if rc != 0:
            raise RuntimeError(f"training {model} failed (exit {rc}); see {log.name}")
        (run_dir,) = sorted(d for d in (runs_dir / model).iterdir() if d.is_dir())
        out[model] = run_dir
    return out


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


def _kimg(run_dir: Path) -> float:
    """kimg reached, from the final checkpoint's training state."""
    from avatarforge.train.checkpoint import find_checkpoint

    state = json.loads((find_checkpoint(run_dir) / "training_state.json").read_text())
    return float(state["nimg"]) / 1000


def run(quick: bool = False) -> list[Result]:
    data = prepared_faces()
    if data is None:
        print("bench_quality: shared anime-faces-96 not found; skipped")
        return []
    minutes = float(os.environ.get("AF_QUALITY_MINUTES", 3 if quick else 20))
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
    runs_dir.mkdir(parents=True)
    run_dirs = train_side_by_side(data, runs_dir, minutes)
    for model in MODELS:
        run_dir = run_dirs[model]
        kimg = _kimg(run_dir)
        fakes = sample(run_dir, n_eval, seed=1)
        grids[model] = make_grid(sample(run_dir, 64, seed=123), nrow=8)
        score = _swd(reals, fakes)
        figures[model] = {
            "img_per_cpu_s": kimg * 1000 / (minutes * 60),
            "kimg": kimg,
            "swd": score,
            "run": str(run_dir.relative_to(ROOT)),
        }
        captions[model] = f"{model}: {kimg:.1f} kimg in {minutes:g} CPU min" + (
            f", SWD {score:.1f}" if score is not None else ""
        )
    grid_path = RESULTS / f"quality_grid{'_quick' if quick else ''}.png"
    side_by_side(grids, grid_path, captions)
    rel = grid_path.relative_to(ROOT)
    for model in MODELS:
        f = figures[model]
        common = {"cpu_minutes": minutes, "threads": 1, "grid": str(rel), "eval_images": n_eval, **f}
        results.append(
            Result(
                f"{model}: training images per CPU-second ({minutes:g} CPU min)",
                f["img_per_cpu_s"],
                "images/CPU-s",
                notes=f"preset {model}-64, 1 torch thread, {f['kimg']:.1f} kimg; samples: {rel}",
                extra=common,
            )
        )
        if f["swd"] is not None:
            results.append(
                Result(
                    f"{model}: SWD after {minutes:g} CPU min",
                    f["swd"],
                    "x1e3",
                    higher_is_better=False,
                    notes=f"{n_eval} EMA samples vs {n_eval} reals, mean of 64/32/16 px levels; "
                    f"real-vs-real floor {floor:.1f}; grid: {rel} (left dcgan, right stylegan)",
                    extra=common,
                )
            )
        else:  # TODO: SWD once avatarforge.eval.metrics.swd is importable
            results.append(Result(f"{model}: kimg in {minutes:g} CPU min", f["kimg"], "kimg", extra=common))
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


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="quick run, or (--train) one training worker")
    ap.add_argument("--train", choices=MODELS)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--runs-dir", type=Path)
    ap.add_argument("--cpu-minutes", type=float, default=3.0)
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides")
    args = ap.parse_args(argv)
    if args.train:
        print(train_for_cpu(args.train, args.data, args.runs_dir, args.cpu_minutes, args.overrides))
        return
    for r in run(quick=True):
        print(f"{r.name}: {r.value:,.2f} {r.unit}  {r.notes}")


if __name__ == "__main__":
    main()
