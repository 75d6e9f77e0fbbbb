"""Where and how fast tensors run: device choice, speed settings, bf16 support, autocast.

Shared by training, evaluation and generation; on the ground floor so that none of them
has to import another for it. Settings are read through :class:`PerfSettings` (which
``avatarforge.config.PerfConfig`` satisfies), so this module imports nothing of
AvatarForge's but its errors.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any, Protocol

import torch

from avatarforge.errors import ConfigError

__all__ = [
    "PerfSettings",
    "amp_dtype",
    "apply_perf_settings",
    "autocast",
    "cpu_has_native_bf16",
    "resolve_device",
]


class PerfSettings(Protocol):
    """The speed settings :func:`apply_perf_settings` reads (``PerfConfig`` has them)."""

    num_threads: int | None
    deterministic: bool
    tf32: bool


def resolve_device(device: str | torch.device | None, local_rank: int | None = None) -> torch.device:
    """``"auto"``/None -> CUDA if available, else CPU; otherwise ``torch.device(device)``.

    With ``local_rank`` (training under torchrun), a bare ``cuda`` (or ``auto`` on a CUDA
    machine) becomes this process's local GPU; without it, ``cuda`` stays unindexed.

    Raises:
        ConfigError: CUDA was asked for but is not available (a ValueError; names the fix).
    """
    name = "auto" if device is None else str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
        if name == "cuda" and local_rank is not None:
            return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return torch.device(name)


def apply_perf_settings(perf: PerfSettings, device: torch.device) -> None:
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
