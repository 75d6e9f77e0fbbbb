"""FLOP counting and the machine's matmul rate, for model FLOP utilisation (MFU) figures.

MFU = (FLOPs of the model's matmuls/convolutions that a training step executes) / (step
time) / (the fp32 ``torch.mm`` rate measured on the same machine, same thread count, in the
same run). FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode`, which
counts what actually runs: ``convolution_backward`` is charged only for the gradients it
computes (input and/or weight, per its ``output_mask``), so a frozen discriminator costs no
weight-gradient FLOPs and a detached input costs no input-gradient FLOPs. Element-wise work
(BatchNorm, activations, Adam, augmentation) is not counted: it is overhead, as in every
MFU figure.

What one GAN training step executes, per image, and so what the MFU figures count (forward
F, backward = input gradient + weight gradient = about 2 F per layer):

* G: one forward (the fakes serve both steps) and one backward (input + weight gradients);
* D step: forward on fakes and on reals, backward with weight gradients on both and input
  gradients on every layer but the first (the images need none; R1 steps do need them);
* G step: D forward on the fakes again and a backward with input gradients only (D frozen).

The classic reference loop also computes D's weight gradients in the G step (thrown away),
so its count per step is higher for the same useful work; its MFU is computed from its own
count, which flatters it.

Hand count for one layer, checked in ``tests/test_bench_smoke.py``: dcgan-64's second D
layer, ``Conv2d(64, 128, 4, 2, 1)`` from 32x32 to 16x16, is 16 * 16 * 128 * 64 * 16 =
33.6 M multiply-adds = 67.1 MFLOP per image forward, 134.2 MFLOP backward; G's
``ConvTranspose2d(512, 256, 4, 2, 1)`` from 4x4 to 8x8 is 4 * 4 * 512 * 256 * 16 multiply-adds,
the same 67.1 MFLOP.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops", "matmul_rate", "trainer_step_flops"]


def count_flops(fn: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """Run ``fn()`` once under a FLOP counter; returns ``(total, {op name: flops})``.

    A multiply-add counts as 2 FLOPs (torch's convention).
    """
    mode = FlopCounterMode(display=False)
    with mode:
        fn()
    by_op = {str(op).split(".")[-1]: int(n) for op, n in mode.get_flop_counts()["Global"].items()}
    return int(mode.get_total_flops()), by_op


def matmul_rate(
    n: int = 2048,
    repeats: int = 5,
    dtype: torch.dtype = torch.float32,
    min_seconds: float = 0.0,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Best-of-``repeats`` rate of an ``n x n @ n x n`` ``torch.mm`` in FLOP/s.

    Uses the current ``torch.get_num_threads()``. ``min_seconds`` > 0 keeps repeating until
    that much time was spent (best single matmul still wins): on a shared machine more
    tries find a quieter moment. ``clock=time.thread_time`` (with one thread) gives FLOPs
    per CPU-second of this thread, which time spent descheduled does not dilute.
    """
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dtype)
    b = torch.randn(n, n, generator=gen).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up (thread pool, page faults)
    best = float("inf")
    t_start = time.perf_counter()
    k = 0
    while k < repeats or time.perf_counter() - t_start < min_seconds:
        t0 = clock()
        torch.mm(a, b, out=out)
        best = min(best, max(clock() - t0, 1e-9))
        k += 1
    return 2.0 * n**3 / best


def trainer_step_flops(trainer: Any, reals: torch.Tensor, labels: torch.Tensor) -> tuple[int, dict[str, int]]:
    """FLOPs of one ``trainer.train_step(reals, labels)`` (which really runs: it is a step).

    The trainer's counters are not advanced; the caller decides whether the step counts.
    Lazy regularisation depends on ``trainer.step``: set it to pick an R1 step or not.
    """
    return count_flops(lambda: trainer.train_step(reals, labels))
