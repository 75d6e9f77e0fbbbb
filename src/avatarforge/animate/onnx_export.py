"""ONNX export of the animator, and an onnxruntime animator with the torch API.

:func:`export_onnx` writes two graphs, mirroring the torch split between the once-per-avatar
and the per-frame work:

* ``NAME.onnx``, the **render** graph: inputs ``source, e1, e2, e3, g`` (the encoded avatar)
  and ``controls (B, 5)`` -> ``frame (B, 4, S, S)`` in [-1, 1];
* ``NAME.prepare.onnx``, the **prepare** graph: ``image (B, 4, S, S)`` in [-1, 1] ->
  ``source, e1, e2, e3, g``.

Both carry metadata (``avatarforge.*`` keys: resolution, control order, the animator's
config), so :class:`OnnxAnimator` needs nothing but the files. The batch axis is dynamic;
the image size is fixed at the animator's resolution. The exporter is torch's TorchScript
based one (``dynamo=False``): it needs only the ``onnx`` package, not ``onnxscript``.

:class:`OnnxAnimator` has ``prepare``/``render``/``render_image``/``animate`` like
:class:`~avatarforge.models.animator.ExpressionAnimator`, so the frame loop, the CLI and the
benchmark take either. Install the extras with ``pip install onnx onnxruntime``; without
them these functions raise :class:`~avatarforge.train.metrics_log.MissingDependencyError`.
"""

from __future__ import annotations

import copy
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from avatarforge.errors import MissingDependencyError
from avatarforge.fileio import atomic_write_bytes
from avatarforge.models.animator import (
    CONTROL_NAMES,
    STATE_NAMES,
    ControlsLike,
    ExpressionAnimator,
    FrameDecoder,
    controls_tensor,
    image_to_tensor,
)

__all__ = [
    "OnnxAnimator",
    "OnnxState",
    "export_onnx",
    "onnx_available",
    "prepare_path",
    "require_onnxruntime",
]

FORMAT = "avatarforge-animator-onnx"
FORMAT_VERSION = 1


def onnx_available() -> bool:
    """True if both ``onnx`` (export) and ``onnxruntime`` (inference) import."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError as e:
        raise MissingDependencyError(
            "ONNX export needs the 'onnx' package: pip install onnx onnxruntime"
        ) from e
    return onnx


def require_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or :class:`MissingDependencyError` saying how to install it."""
    try:
        import onnxruntime
    except ImportError as e:
        raise MissingDependencyError(
            "ONNX inference needs the 'onnxruntime' package: pip install onnxruntime"
        ) from e
    return onnxruntime


def prepare_path(path: str | os.PathLike) -> Path:
    """``avatar.onnx`` -> ``avatar.prepare.onnx`` (the prepare graph next to the render graph)."""
    p = Path(path)
    return p.with_name(p.stem + ".prepare" + (p.suffix or ".onnx"))


class _Prepare(nn.Module):
    def __init__(self, animator: ExpressionAnimator) -> None:
        super().__init__()
        self.animator = animator

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        return self.animator.encode(image).tensors()


def _export_bytes(
    module: nn.Module, args: tuple[Tensor, ...], inputs: list[str], outputs: list[str], opset: int
) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one, which needs
        # onnxscript; it is still supported and exports these ops (grid_sample: opset 16+).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={n: {0: "batch"} for n in [*inputs, *outputs]},
            do_constant_folding=True,
        )
    return buf.getvalue()


def _with_metadata(raw: bytes, meta: dict[str, str]) -> bytes:
    onnx = _require_onnx()
    model = onnx.load_from_string(raw)
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(model)
    return model.SerializeToString()


@torch.no_grad()
def export_onnx(
    animator: ExpressionAnimator, path: str | os.PathLike, *, opset: int = 17, check: bool = True
) -> tuple[Path, Path]:
    """Write ``path`` (render graph) and :func:`prepare_path` ``(path)`` (prepare graph).

    With ``check``, both graphs are run with onnxruntime on a test avatar and compared with
    torch (max abs difference <= 1e-3 in [-1, 1] units), raising ``RuntimeError`` otherwise.

    Returns the two paths.

    Raises:
        MissingDependencyError: ``onnx`` (or, with ``check``, ``onnxruntime``) is missing.
    """
    _require_onnx()
    if opset < 16:
        raise ValueError(f"opset must be >= 16 (grid_sample), got {opset}")
    model = copy.deepcopy(animator).eval().float().to("cpu")  # leave the caller's module alone
    s = model.resolution
    meta = {
        "avatarforge.format": FORMAT,
        "avatarforge.format_version": str(FORMAT_VERSION),
        "avatarforge.resolution": str(s),
        "avatarforge.controls": ",".join(CONTROL_NAMES),
        "avatarforge.state": ",".join(STATE_NAMES),
        "avatarforge.config": json.dumps(model.config_dict()),
    }
    image = _test_image(s)
    state = model.encode(image)
    controls = controls_tensor({"eye_open": 0.3, "mouth_open": 0.6, "smile": 0.4, "head_yaw": 0.3})
    render_raw = _export_bytes(
        FrameDecoder(model), (*state.tensors(), controls), [*STATE_NAMES, "controls"], ["frame"], opset
    )
    prepare_raw = _export_bytes(_Prepare(model), (image,), ["image"], list(STATE_NAMES), opset)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, _with_metadata(render_raw, {**meta, "avatarforge.graph": "render"}))
    prep = prepare_path(out)
    atomic_write_bytes(prep, _with_metadata(prepare_raw, {**meta, "avatarforge.graph": "prepare"}))
    if check:
        ort_anim = OnnxAnimator(out, threads=1)
        want = model.decode(*state.tensors(), controls)[0].clamp(-1, 1).numpy()
        got = ort_anim.render(ort_anim.prepare(image), controls)
        diff = float(np.abs(want - got).max())
        if diff > 1e-3:
            raise RuntimeError(f"ONNX export check failed: onnxruntime differs from torch by {diff:.3g}")
    return out, prep


def _test_image(size: int) -> Tensor:
    """A procedural avatar at ``size`` for tracing and checking (any image would do)."""
    from avatarforge.data.procedural import render_avatar

    return image_to_tensor(render_avatar(1, max(32, size)), size)


@dataclass
class OnnxState:
    """An encoded avatar for :class:`OnnxAnimator`: the prepare graph's outputs (numpy)."""

    arrays: dict[str, np.ndarray]

    @property
    def batch(self) -> int:
        return int(self.arrays["source"].shape[0])


class OnnxAnimator:
    """Run an exported animator with onnxruntime; the API of :class:`ExpressionAnimator`.

    Args:
        path: the render graph (``NAME.onnx``); the prepare graph is found next to it.
        threads: intra-op threads (None: onnxruntime's default, one per core).
        providers: onnxruntime execution providers (default CPU).
    """

    def __init__(
        self, path: str | os.PathLike, *, threads: int | None = None, providers: list[str] | None = None
    ) -> None:
        ort = require_onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"{self.path} not found (export with: avatarforge animate export-onnx RUN {self.path})"
            )
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        prov = providers or ["CPUExecutionProvider"]
        self.render_session = ort.InferenceSession(str(self.path), so, providers=prov)
        meta = self.render_session.get_modelmeta().custom_metadata_map
        if meta.get("avatarforge.format") != FORMAT:
            raise ValueError(
                f"{self.path} is not an AvatarForge animator ONNX file (no avatarforge.format metadata)"
            )
        if meta.get("avatarforge.graph") != "render":
            raise ValueError(
                f"{self.path} holds the {meta.get('avatarforge.graph')!r} graph; pass the render graph (NAME.onnx)"
            )
        if meta.get("avatarforge.controls", "").split(",") != list(CONTROL_NAMES):
            raise ValueError(
                f"{self.path} uses controls {meta.get('avatarforge.controls')}, expected {CONTROL_NAMES}"
            )
        prep = prepare_path(self.path)
        if not prep.is_file():
            raise FileNotFoundError(
                f"{prep} not found: the prepare graph is written next to {self.path.name} by export"
            )
        self.prepare_session = ort.InferenceSession(str(prep), so, providers=prov)
        self.resolution = int(meta["avatarforge.resolution"])
        self.metadata = dict(meta)

    def prepare(self, avatar: Any) -> OnnxState:
        """Encode an avatar (same inputs as :meth:`ExpressionAnimator.prepare`)."""
        x = image_to_tensor(avatar, self.resolution).numpy().astype(np.float32)
        outs = self.prepare_session.run(list(STATE_NAMES), {"image": x})
        return OnnxState(dict(zip(STATE_NAMES, outs)))

    def render(self, state: OnnxState, controls: ControlsLike) -> np.ndarray:
        """``(B, 4, S, S)`` float32 frames in [-1, 1]."""
        c = controls_tensor(controls).numpy()
        feeds = dict(state.arrays)
        b = c.shape[0]
        if state.batch != b:
            if state.batch != 1:
                raise ValueError(f"state has batch {state.batch} but controls have {b} rows")
            feeds = {k: np.repeat(v, b, axis=0) for k, v in feeds.items()}
        feeds["controls"] = c
        return self.render_session.run(["frame"], feeds)[0]

    def render_image(self, state: OnnxState, controls: ControlsLike) -> np.ndarray:
        """One frame as ``(S, S, 4)`` uint8 RGBA, its alpha cleaned."""
        f = self.render(state, controls)[0]
        u8 = np.clip(np.rint((f + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(1, 2, 0)
        from avatarforge.imageio import clean_alpha

        u8 = clean_alpha(np.ascontiguousarray(u8)[None])[0]  # as ExpressionAnimator.render_image
        u8[u8[..., 3] == 0, :3] = 0
        return u8

    def animate(self, avatar: Any, controls: ControlsLike) -> np.ndarray:
        """``render_image(prepare(avatar), controls)``."""
        return self.render_image(self.prepare(avatar), controls)
