"""Generation speed through :class:`~avatarforge.generate.GeneratorPipeline`.

For DCGAN and StyleGAN at 64 and 128 px, with the generator of the training preset
(``src/avatarforge/configs/<model>-<res>.yaml``; untrained weights, which cost the same
time as trained ones), RGB:

* **latency**: one avatar per call, ``pipe(seeds=[s])`` with ``batch_size=1`` -- latent
  draw, forward pass (StyleGAN: mapping + synthesis), uint8 conversion; median (p50) and
  p90 over the calls after warm-up;
* **throughput**: ``pipe(n=64)`` with ``batch_size=64``, images per second, best of a few
  calls.

The pipeline runs fixed-size batches (the reproducibility contract), so these are the
figures a user of ``avatarforge generate --batch-size`` sees (its own overhead -- latent
draw, chunking, uint8 -- is under 1 ms per call). Measured with one thread and with torch's
default (all cores): on a shared, overloaded machine OpenMP threads that wait for a
descheduled sibling make multi-threaded small-batch calls *slower* than one thread, so
compare the one-thread rows across runs.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
import yaml

from avatarforge.generate import GeneratorPipeline
from avatarforge.models.registry import get_model_class
from benchmarks.common import ROOT, Result

CONFIGS = ROOT / "src" / "avatarforge" / "configs"


def _preset_generator(name: str, resolution: int) -> torch.nn.Module:
    """The preset's generator, built as the trainer would (minus the data set)."""
    model = yaml.safe_load(Path(CONFIGS / f"{name}-{resolution}.yaml").read_text())["model"]
    kwargs = {**model.get("kwargs", {}), **model.get("g_kwargs", {})}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G = get_model_class(name, "generator")(
            resolution=resolution, channels=3, z_dim=model["z_dim"], **kwargs
        )
    return G.eval()


def _latency(pipe: GeneratorPipeline, calls: int) -> tuple[float, float]:
    for s in range(3):  # warm-up: allocator, oneDNN primitive caches
        pipe(seeds=[s])
    times = []
    for s in range(calls):
        t0 = time.perf_counter()
        pipe(seeds=[1000 + s])
        times.append(time.perf_counter() - t0)
    times.sort()
    return statistics.median(times) * 1000, times[int(0.9 * (len(times) - 1))] * 1000


def _throughput(pipe: GeneratorPipeline, repeats: int) -> float:
    pipe(n=64)  # warm-up
    best = 0.0
    for r in range(repeats):
        t0 = time.perf_counter()
        out = pipe(seeds=range(64 * (r + 1), 64 * (r + 2)))
        best = max(best, len(out) / (time.perf_counter() - t0))
    return best


def run(quick: bool) -> list[Result]:
    calls, repeats = (10, 2) if quick else (30, 3)
    default_threads = torch.get_num_threads()
    results = []
    try:
        for threads in (1, default_threads):
            torch.set_num_threads(threads)
            results += _measure(calls, repeats, threads)
    finally:
        torch.set_num_threads(default_threads)
    return results


def _measure(calls: int, repeats: int, threads: int) -> list[Result]:
    results = []
    tag = "1 thread" if threads == 1 else f"{threads} threads"
    with torch.no_grad():
        for name in ("dcgan", "stylegan"):
            for res in (64, 128):
                G = _preset_generator(name, res)
                params = sum(p.numel() for p in G.parameters()) / 1e6
                p50, p90 = _latency(GeneratorPipeline(G, batch_size=1), calls)
                rate = _throughput(GeneratorPipeline(G, batch_size=64), repeats)
                note = f"{name}-{res} preset G ({params:.1f} M params), untrained, RGB"
                results.append(
                    Result(
                        f"{name} {res} px latency, batch 1 (p50), {tag}",
                        p50,
                        "ms",
                        higher_is_better=False,
                        notes=f"{note}; p90 {p90:.1f} ms over {calls} calls",
                        extra={"p90_ms": p90},
                    )
                )
                results.append(
                    Result(
                        f"{name} {res} px throughput, batch 64, {tag}",
                        rate,
                        "img/s",
                        notes=f"{note}; best of {repeats}",
                    )
                )
    return results
