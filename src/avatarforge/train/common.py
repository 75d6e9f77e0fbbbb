"""Small pieces every training loop shares: device choice, speed settings, AMP, schedules.

Kept as plain functions so a loop reads top to bottom (no callback hierarchy).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from typing import Any

import torch

from avatarforge.config import ConfigError, PerfConfig

__all__ = [
    "amp_dtype",
    "apply_perf_settings",
    "autocast",
    "cpu_has_native_bf16",
    "crossed",
    "derive_seed",
    "make_generator",
    "resolve_device",
]


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA if available (this process's local GPU under torchrun), else CPU.

    Raises:
        ConfigError: CUDA was asked for but is not available.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
        if name == "cuda":
            return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return torch.device(name)


def apply_perf_settings(perf: PerfConfig, device: torch.device) -> None:
    """Thread count, TF32, cuDNN autotuning and determinism, as configured."""
    if perf.num_threads is not None:
        torch.set_num_threads(perf.num_threads)
    if perf.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        # TF32 keeps fp32 range with a 10-bit mantissa: ~2x faster convs/matmuls on Ampere+
        # with no visible effect on GAN training.
        torch.backends.cuda.matmul.allow_tf32 = perf.tf32
        torch.backends.cudnn.allow_tf32 = perf.tf32
        # Fixed shapes every step: let cuDNN pick the fastest kernels once.
        torch.backends.cudnn.benchmark = not perf.deterministic
        torch.backends.cudnn.deterministic = perf.deterministic


#: oneDNN ISA caps (``ONEDNN_MAX_CPU_ISA``) below the first one with bf16 dot products.
_ONEDNN_NO_BF16_ISAS = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI"})


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True if the CPU has bf16 dot-product instructions (AVX512-BF16 or AMX-BF16) and they are
    not switched off.

    oneDNN then runs bf16 convolutions and matmuls at about twice the fp32 rate. Without them
    bf16 is emulated and slower than fp32. Reads ``/proc/cpuinfo`` (False elsewhere).
    ``ATEN_CPU_CAPABILITY=avx2`` (or ``default``) and an ``ONEDNN_MAX_CPU_ISA`` below
    ``AVX512_CORE_BF16`` make the process behave as a CPU without them, so this is False too:
    that is how the test suite emulates such a CPU on one that has them.
    """
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _ONEDNN_NO_BF16_ISAS:
        return False
    if torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "AVX2"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``perf.amp`` on ``device`` (None = full fp32).

    ``auto`` is bf16 on CUDA GPUs that support it, bf16 on CPUs with native bf16 instructions
    (:func:`cpu_has_native_bf16`: measured 1.8-2x faster training for dcgan and stylegan at
    64 px, docs/training.md), and off on other CPUs, where bf16 is emulated and slower.
    """
    if amp == "off":
        return None
    if device.type != "cuda":
        if amp == "auto":
            return torch.bfloat16 if cpu_has_native_bf16() else None
        if amp == "fp16":
            raise ConfigError("perf.amp=fp16 needs a CUDA device; use perf.amp=bf16 or off on CPU")
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (SplitMix64), so streams of nearby seeds are unrelated."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 29
    return x & 0x7FFFFFFFFFFFFFFF


def make_generator(device: torch.device, *seed_parts: int) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with :func:`derive_seed` of ``seed_parts``."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(*seed_parts))
    return g


def crossed(prev_nimg: int, nimg: int, every_kimg: float) -> bool:
    """True if a multiple of ``every_kimg`` thousand images lies in ``(prev_nimg, nimg]``."""
    if every_kimg <= 0:
        return False
    every = every_kimg * 1000.0
    return math.floor(nimg / every) > math.floor(prev_nimg / every)
