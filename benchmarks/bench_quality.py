"""Quality at fixed compute: dcgan, stylegan and vae trained for the same CPU minutes.

The three models train with their presets (``src/avatarforge/configs/{dcgan,stylegan,vae}-64.yaml``;
stylegan with DiffAugment and, layered on top, ``configs/stylegan-64-cpu.yaml``: see
:data:`CONFIG_FILES`) on the shared anime-faces-96 folder, prepared to 64 px with
:func:`avatarforge.data.prepare.prepare_dataset` into ``.af-cache/bench/`` (skipped cleanly
when the folder is absent). They train at the same time, each in its own process on one
torch thread, each until it has used the same CPU time (full: 15 CPU minutes, quick: 0.5;
``AF_QUALITY_MINUTES`` overrides): a CPU-time budget, unlike a wall-clock one, is fair on a
machine shared with other jobs, and running side by side gives all the same conditions.
Full mode is 15 CPU minutes, not 20: three models at one thread each on the shared 2-core
box take at least 23 minutes of wall time even when it is idle, and over 45 when it is busy.

Outputs: one PNG with samples side by side from fixed latents (dcgan | stylegan | vae; the
GANs' EMA generators, the VAE's decoder on prior draws), labelled, in
``benchmarks/results/quality_grid*.png``; figures per model: images per CPU-second, kimg
reached, SWD (multi-scale sliced Wasserstein distance, ``avatarforge.eval.metrics.swd``,
weight-free, x1e3) and FID in the ``avatar`` extractor's feature space (``fid_avatar``, the
key :func:`avatarforge.eval.evaluate` writes for ``extractor="avatar"``) of generated images
against held-out real images, next to the same figures for two disjoint halves of the real
data (the floor a perfect model would reach at this sample count). Lower is better for both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from avatarforge.fileio import atomic_write_json
from avatarforge.imageio import make_grid
from benchmarks.common import RESULTS, ROOT, Result, shared_faces

SIZE = 64
CACHE = ROOT / ".af-cache" / "bench"
MODELS = ("dcgan", "stylegan", "vae")
#: Config files layered on a model's preset. StyleGAN trains with its small-budget setup
#: (its own generator, DCGAN's BatchNorm discriminator plus an image-statistics head, noise
#: inputs up to 16 px): with the StyleGAN2 discriminator it is still colour blobs after 15
#: CPU minutes (docs/training.md, "Quality at fixed compute").
CONFIG_FILES = {"stylegan": ROOT / "configs" / "stylegan-64-cpu.yaml"}
#: CPU minutes per model: full and quick mode (``AF_QUALITY_MINUTES`` overrides both).
MINUTES = {False: 15.0, True: 0.5}


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
    """Train ``model`` (its preset, its :data:`CONFIG_FILES` entry, ``overrides``) on 1 torch
    thread until this process has used ``cpu_minutes`` of CPU time; returns the run directory.

    The budget is CPU time, not wall time, so a busy machine does not shorten one model's run
    more than the other's. A wall-clock limit of 12x the budget is a safety net (a 2-core box
    shared with other jobs can give a process less than a quarter of a core for long
    stretches). The CPU seconds actually used and the stop reason go to ``cpu_budget.json``
    in the run directory.
    """
    from avatarforge.config import build_train_config
    from avatarforge.train import make_trainer

    torch.set_num_threads(1)
    cfg = build_train_config(
        config_file=CONFIG_FILES.get(model),
        cli={"model": {"name": model}, "data": {"path": str(data)}},
        overrides=[
            f"runs_dir={runs_dir}",
            f"minutes={12 * cpu_minutes}",
            "kimg=null",
            "log.progress=false",
            "log.sample_every_kimg=0",
            "log.checkpoint_every_kimg=0",
            "log.metric_every_kimg=0",  # the VAE's built-in evaluation: not part of the budget
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

    trainer = make_trainer(cfg, step_hook=budget)
    t0 = time.perf_counter()
    run_dir = trainer.fit()
    used = {
        "cpu_s": time.process_time() - start[0] if start else 0.0,
        "wall_s": time.perf_counter() - t0,
        # The budget stops the run through the trainer's stop signal ("signal:cpu-budget").
        "stopped_by": "cpu-budget" if trainer.stopped_by == "signal:cpu-budget" else trainer.stopped_by,
        "budget_cpu_s": cpu_minutes * 60,
    }
    atomic_write_json(run_dir / "cpu_budget.json", used)
    return run_dir


def train_side_by_side(
    data: Path,
    runs_dir: Path,
    cpu_minutes: float,
    overrides: dict[str, Sequence[str]] | None = None,
    meanwhile: Callable[[], Any] | None = None,
) -> dict[str, Path]:
    """Train every model of :data:`MODELS` at once, one process (1 thread) each, same CPU budget.

    Running them together means all see the same machine load. ``meanwhile()`` runs in this
    process while they train (the evaluation's reference statistics: it costs the trainers
    wall time, not CPU budget).
    """
    procs = {}
    for model in MODELS:
        cmd = [sys.executable, "-m", "benchmarks.bench_quality", "--train", model, "--data", str(data)]
        cmd += ["--runs-dir", str(runs_dir / model), "--cpu-minutes", str(cpu_minutes)]
        cmd += list((overrides or {}).get(model, ()))
        log = open(runs_dir.parent / f"{runs_dir.name}-{model}.log", "w")  # noqa: SIM115
        procs[model] = (subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), log)
    try:
        if meanwhile is not None:
            meanwhile()
    except BaseException:
        for proc, _ in procs.values():
            proc.terminate()
        raise
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
    """``n`` images from the run, latents from ``seed``, as (n, C, H, W) in [-1, 1]: a GAN's
    EMA generator, or a VAE's decoder on draws from its N(0, I) prior."""
    from avatarforge.train import load_generator, load_vae
    from avatarforge.train.checkpoint import find_checkpoint

    ckpt = find_checkpoint(run_dir)
    if any(ckpt.glob("vae_*")):
        vae = load_vae(run_dir)
        G, sample_z = vae.decode, vae.sample_z
    else:
        G = load_generator(run_dir)
        sample_z = G.sample_z
    g = torch.Generator().manual_seed(seed)
    z = sample_z(n, generator=g, device="cpu")
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


def snapshots(run_dir: Path) -> dict[int, Path]:
    """``{kimg: samples/fakes_<kimg>.png}`` of a run's sample grids (the trainer's fixed latents)."""
    out = {}
    for p in sorted((run_dir / "samples").glob("fakes_*.png")):
        out[int(p.stem.split("_")[1])] = p
    return out


def progress_figure(
    run_dirs: dict[str, Path],
    img_per_cpu_s: dict[str, float],
    lead: str,
    path: Path,
    tiles: int = 4,
    tile_px: int = 64,
    pad_px: int = 2,
) -> Path:
    """Snapshots of each run at about equal CPU time, one row per model.

    The columns are ``lead``'s snapshots (the slowest model's, so it has the fewest); each
    other model shows the snapshot nearest to the kimg it reached in the same CPU time
    (``kimg / img_per_cpu_s``). Each cell is the top-left ``tiles x tiles`` images of the
    trainer's sample grid (``tile_px`` images with ``pad_px`` padding, as written by
    :func:`avatarforge.imageio.make_grid`).
    """
    shots = {m: snapshots(d) for m, d in run_dirs.items()}
    kimgs = sorted(k for k in shots[lead] if k > 0)
    if not kimgs:
        raise ValueError(f"no sample snapshots in {run_dirs[lead] / 'samples'}")
    # The end-of-run grid often lands just after the last periodic one: keep only the later.
    step = kimgs[1] - kimgs[0] if len(kimgs) > 1 else kimgs[0]
    columns = [k for i, k in enumerate(kimgs) if i + 1 == len(kimgs) or kimgs[i + 1] - k > step / 4]
    side = pad_px + tiles * (tile_px + pad_px)
    label_w, top, gap = 70, 14, 10
    canvas = Image.new(
        "RGB", (label_w + len(columns) * (side + gap), len(run_dirs) * (side + top + gap)), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for row, model in enumerate(run_dirs):
        y = row * (side + top + gap)
        draw.text((4, y + top + side // 2), model, fill="black")
        for col, k_lead in enumerate(columns):
            cpu_s = k_lead * 1000 / img_per_cpu_s[lead]
            want = cpu_s * img_per_cpu_s[model] / 1000
            k = min(shots[model], key=lambda k, want=want: abs(k - want))
            x = label_w + col * (side + gap)
            cell = Image.open(shots[model][k]).convert("RGB").crop((0, 0, side, side))
            canvas.paste(cell, (x, y + top))
            cpu_min = k * 1000 / img_per_cpu_s[model] / 60
            draw.text((x, y), f"{k} kimg, {cpu_min:.1f} CPU min", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def _swd(real: np.ndarray, fake: torch.Tensor | np.ndarray) -> float:
    from avatarforge.eval.metrics import swd

    return float(swd(real, fake)["swd"])


class AvatarFID:
    """FID in the ``avatar`` extractor's feature space against a fixed set of real images.

    The same computation as ``evaluate(..., metrics="fid", extractor="avatar")`` (its
    ``fid_avatar`` key): 256-d features of the built-in avatar attribute net (trained once on
    procedural avatars and cached; docs/evaluation.md), Gaussian statistics, Frechet distance.
    """

    def __init__(self, reals: np.ndarray, extractor: Any = None) -> None:
        from avatarforge.eval.extractors import get_extractor
        from avatarforge.eval.metrics import feature_statistics

        # ``extractor``: another FeatureExtractor (tests pass a cheap one).
        self.extractor = extractor if extractor is not None else get_extractor("avatar", device="cpu")
        self.ref_stats = feature_statistics(self.features(reals))

    @torch.no_grad()
    def features(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        return np.concatenate(
            [self.extractor(images[i : i + 128]).float().cpu().numpy() for i in range(0, len(images), 128)]
        )

    def __call__(self, images: torch.Tensor | np.ndarray) -> float:
        from avatarforge.eval.metrics import feature_statistics, frechet_distance

        return frechet_distance(*self.ref_stats, *feature_statistics(self.features(images)))


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
    minutes = float(os.environ.get("AF_QUALITY_MINUTES", MINUTES[quick]))
    from avatarforge.data.dataset import PackedDataset

    ds = PackedDataset(data)
    # Two disjoint halves of the data: the reference set, and a second real set for the floors.
    # 1000 samples: SWD's spread is a few units there, FID_avatar's 256-d covariance is
    # well determined; more would cost the shared box many minutes of evaluation.
    n_eval = min(256 if quick else 1000, len(ds) // 2)
    order = np.random.default_rng(0).permutation(len(ds))
    reals = ds.images_uint8(np.sort(order[:n_eval]))  # (N, H, W, 3)
    reals_b = ds.images_uint8(np.sort(order[n_eval : 2 * n_eval]))
    state: dict[str, Any] = {}

    def reference_statistics() -> None:
        state["fid"] = AvatarFID(reals)
        state["floor"] = {"swd": _swd(reals, reals_b), "fid": state["fid"](reals_b)}

    # Run directories are kept (checkpoints, metrics.jsonl, samples) until the next run.
    runs_dir = CACHE / "quality-runs" / ("quick" if quick else "full")
    if runs_dir.exists():
        shutil.rmtree(runs_dir)
    runs_dir.mkdir(parents=True)
    # Full runs keep a sample grid every 10 kimg in each run directory (samples/), to see
    # how each model gets where it ends; they cost a fraction of a second each.
    snapshots = None if quick else {m: ["log.sample_every_kimg=10"] for m in MODELS}
    run_dirs = train_side_by_side(data, runs_dir, minutes, snapshots, meanwhile=reference_statistics)
    fid, floor = state["fid"], state["floor"]

    grids: dict[str, np.ndarray] = {}
    captions: dict[str, str] = {}
    figures: dict[str, dict[str, Any]] = {}
    for model in MODELS:
        run_dir = run_dirs[model]
        kimg = _kimg(run_dir)
        used = json.loads((run_dir / "cpu_budget.json").read_text())
        fakes = sample(run_dir, n_eval, seed=1)
        grids[model] = make_grid(sample(run_dir, 64, seed=123), nrow=8)
        figures[model] = {
            "img_per_cpu_s": kimg * 1000 / max(used["cpu_s"], 1e-9),
            "kimg": kimg,
            "cpu_minutes_used": round(used["cpu_s"] / 60, 2),
            "stopped_by": used["stopped_by"],
            "swd": _swd(reals, fakes),
            "fid_avatar": fid(fakes),
            "run": str(run_dir.relative_to(ROOT)),
        }
        f = figures[model]
        captions[model] = (
            f"{model}: {kimg:.1f} kimg in {f['cpu_minutes_used']:.1f} CPU min, SWD {f['swd']:.1f}, "
            f"FID_avatar {f['fid_avatar']:.2f}"
        )
    grid_path = RESULTS / f"quality_grid{'_quick' if quick else ''}.png"
    side_by_side(grids, grid_path, captions)
    if not quick:
        progress_figure(
            {m: run_dirs[m] for m in ("dcgan", "stylegan")},
            {m: figures[m]["img_per_cpu_s"] for m in ("dcgan", "stylegan")},
            "stylegan",
            RESULTS / "quality_progress.png",
        )
    rel = grid_path.relative_to(ROOT)
    link = f"[grid]({grid_path.relative_to(ROOT / 'benchmarks')})"  # relative to REPORT.md

    # Named by the CPU time the runs actually had (the budget, unless they were stopped
    # early, e.g. by a signal at a wall-clock deadline: then the least any of them had).
    spent = min(minutes, *(round(figures[m]["cpu_minutes_used"], 1) for m in MODELS))
    results: list[Result] = []
    for model in MODELS:
        f = figures[model]
        common = {"cpu_minutes": minutes, "threads": 1, "grid": str(rel), "eval_images": n_eval, **f}
        layers = f"preset {model}-64" + (
            f" + {CONFIG_FILES[model].relative_to(ROOT)}" if model in CONFIG_FILES else ""
        )
        preset = f"{layers}, 1 torch thread, {f['kimg']:.1f} kimg in {f['cpu_minutes_used']:g} CPU min" + (
            "" if f["stopped_by"] == "cpu-budget" else f" (stopped by {f['stopped_by']}, not the CPU budget)"
        )
        results += [
            Result(
                f"{model}: training images per CPU-second ({spent:g} CPU min)",
                f["img_per_cpu_s"],
                "images/CPU-s",
                notes=f"{preset}; samples: {link}",
                extra=common,
            ),
            Result(
                f"{model}: SWD after {spent:g} CPU min",
                f["swd"],
                "x1e3",
                higher_is_better=False,
                notes=f"{n_eval} samples vs {n_eval} reals, mean of the 64/32/16 px levels; "
                f"real-vs-real floor {floor['swd']:.1f}",
                extra=common,
            ),
            Result(
                f"{model}: FID_avatar after {spent:g} CPU min",
                f["fid_avatar"],
                "FID",
                higher_is_better=False,
                notes=f"avatar extractor ({fid.extractor.identity}), {n_eval} vs {n_eval}; "
                f"real-vs-real floor {floor['fid']:.2f}",
                extra=common,
            ),
        ]
    results += [
        Result(
            "SWD floor: real vs real (disjoint halves)",
            floor["swd"],
            "x1e3",
            higher_is_better=False,
            notes=f"{n_eval} vs {n_eval} real images; what a perfect generator would score",
        ),
        Result(
            "FID_avatar floor: real vs real (disjoint halves)",
            floor["fid"],
            "FID",
            higher_is_better=False,
            notes=f"{n_eval} vs {n_eval} real images; what a perfect generator would score",
        ),
    ]
    return results


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="quick run, or (--train) one training worker")
    ap.add_argument("--train", choices=MODELS)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--runs-dir", type=Path)
    ap.add_argument("--cpu-minutes", type=float, default=MINUTES[True])
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides")
    args = ap.parse_args(argv)
    if args.train:
        print(train_for_cpu(args.train, args.data, args.runs_dir, args.cpu_minutes, args.overrides))
        return
    for r in run(quick=True):
        print(f"{r.name}: {r.value:,.2f} {r.unit}  {r.notes}")


if __name__ == "__main__":
    main()
