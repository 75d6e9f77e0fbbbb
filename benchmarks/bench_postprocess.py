"""Post-processing speed: milliseconds per 256 px image for every op and the default chain.

Inputs are a procedural avatar at 256 px: RGBA (soft alpha edges) for every op, except
background removal, which gets the avatar composited on a chroma-green backdrop (RGB, the
case it exists for). Ops run with representative, non-identity parameters (an identity
parameter such as ``hue=0`` returns a copy and would time nothing). One process, the
library's default threading (OpenCV / PyTorch); best of a few timed loops, because the
machine is shared.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from avatarforge.data.procedural import render_avatar
from avatarforge.postprocess import DEFAULT_CHAIN, SRNet, apply_chain, get_op
from benchmarks.common import Result, best_rate

SIZE = 256
# A light clean-up chain must keep up with interactive use (a few images per second).
DEFAULT_CHAIN_TARGET_MS = 50.0

# (label, op, parameters, input kind)
CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("brightness", "brightness", {"factor": 1.2}, "rgba"),
    ("contrast", "contrast", {"factor": 1.2}, "rgba"),
    ("saturation", "saturation", {"factor": 1.2}, "rgba"),
    ("hue", "hue", {"degrees": 30.0}, "rgba"),
    ("gamma", "gamma", {"gamma": 1.5}, "rgba"),
    ("temperature", "temperature", {"amount": 0.3}, "rgba"),
    ("white_balance", "white_balance", {}, "rgba"),
    ("clahe", "clahe", {}, "rgba"),
    ("sharpen", "sharpen", {}, "rgba"),
    ("denoise bilateral", "denoise", {"method": "bilateral"}, "rgba"),
    ("denoise edge_preserving", "denoise", {"method": "edge_preserving"}, "rgba"),
    ("denoise guided", "denoise", {"method": "guided"}, "rgba"),
    ("cel_shade", "cel_shade", {}, "rgba"),
    ("upscale x2 (Lanczos)", "upscale", {"factor": 2}, "rgba"),
    ("upscale x4 (Lanczos)", "upscale", {"factor": 4}, "rgba"),
    ("remove_background key", "remove_background", {"method": "key"}, "green"),
    ("remove_background auto (key + GrabCut)", "remove_background", {}, "green"),
    ("composite", "composite", {"color": (40, 40, 60)}, "rgba"),
]


def _inputs() -> dict[str, np.ndarray]:
    rgba = render_avatar(3, SIZE)
    a = rgba[..., 3:4].astype(np.uint32)
    green = ((rgba[..., :3] * a + np.array([0, 177, 64], np.uint32) * (255 - a) + 127) // 255).astype(
        np.uint8
    )
    return {"rgba": rgba, "green": green}


def _ms(fn: Callable[[], object], quick: bool) -> float:
    fn()  # warm up (OpenCV/PyTorch kernels, lookup tables)

    def once() -> int:
        fn()
        return 1

    rate = best_rate(once, repeats=2 if quick else 3, min_seconds=0.15 if quick else 0.4)
    return 1000.0 / rate


def run(quick: bool) -> list[Result]:
    """ms per 256 px image for each op, the learned upscaler and the default chain."""
    images = _inputs()
    results = []
    for label, name, params, kind in CASES:
        spec, img = get_op(name), images[kind]
        ms = _ms(lambda spec=spec, img=img, params=params: spec.func(img, **params), quick)
        p = ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"
        results.append(
            Result(f"{label}, {SIZE} px", ms, "ms/image", higher_is_better=False, notes=f"{kind}; {p}")
        )
    torch.manual_seed(0)
    model = SRNet(scale=2, features=32).eval()  # timing does not depend on the weights
    up = get_op("upscale").func
    ms = _ms(lambda: up(images["rgba"], 2, model=model), quick)
    results.append(
        Result(
            f"upscale x2 (learned ESPCN, 32 features), {SIZE} px",
            ms,
            "ms/image",
            higher_is_better=False,
            notes=f"rgba; torch threads {torch.get_num_threads()}",
        )
    )
    ms = _ms(lambda: apply_chain(images["rgba"], DEFAULT_CHAIN), quick)
    results.append(
        Result(
            f"default chain, {SIZE} px",
            ms,
            "ms/image",
            target=DEFAULT_CHAIN_TARGET_MS,
            higher_is_better=False,
            notes=f"rgba; '{DEFAULT_CHAIN}'",
        )
    )
    return results
