"""ONNX export: the onnxruntime animator renders what torch renders (skipped without onnxruntime)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatarforge.data.procedural import render_avatar
from avatarforge.models.animator import ExpressionAnimator

pytest.importorskip("onnx", reason="ONNX export needs: pip install onnx onnxruntime")
pytest.importorskip("onnxruntime", reason="ONNX inference needs: pip install onnxruntime")

from avatarforge.animate.onnx_export import OnnxAnimator, export_onnx, prepare_path


@pytest.fixture(scope="module")
def animator() -> ExpressionAnimator:
    torch.manual_seed(3)
    g = ExpressionAnimator(resolution=32, widths=(4, 8, 16, 16), ctrl_hidden=16).eval()
    with torch.no_grad():  # wake up the zero-initialised flow and FiLM layers
        for p in g.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return g


def test_export_matches_torch(animator, tmp_path):
    render_path, prep = export_onnx(animator, tmp_path / "anim.onnx")
    assert prep == prepare_path(render_path) == tmp_path / "anim.prepare.onnx" and prep.is_file()
    ort = OnnxAnimator(render_path, threads=1)
    assert ort.resolution == 32 and ort.metadata["avatarforge.graph"] == "render"
    avatar = render_avatar(9, 48)  # resized to 32 by both paths
    controls = [
        {"eye_open": 0.0, "mouth_open": 1.0},
        {"smile": -0.7, "head_yaw": 0.8, "head_tilt": -0.4},
    ]
    st_t, st_o = animator.prepare(avatar), ort.prepare(avatar)
    for name, t in zip(("source", "e1", "e2", "e3", "g"), st_t.tensors()):
        assert np.allclose(st_o.arrays[name], t.numpy(), atol=1e-4), name
    for c in controls:
        want = animator.render(st_t, c).numpy()
        got = ort.render(st_o, c)
        assert got.shape == want.shape == (1, 4, 32, 32)
        assert np.abs(got - want).max() < 1e-4
        diff = np.abs(ort.render_image(st_o, c).astype(int) - animator.render_image(st_t, c).astype(int))
        assert diff.max() <= 1  # uint8 frames: at most a rounding step apart
    batch = ort.render(st_o, np.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0]], np.float32))
    assert batch.shape == (3, 4, 32, 32)  # dynamic batch: one avatar, three expressions


def test_wrong_files_are_rejected(animator, tmp_path):
    _, prep = export_onnx(animator, tmp_path / "a.onnx", check=False)
    with pytest.raises(ValueError, match="prepare"):
        OnnxAnimator(prep)  # the prepare graph is not the render graph
    with pytest.raises(FileNotFoundError, match="export-onnx"):
        OnnxAnimator(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="opset"):
        export_onnx(animator, tmp_path / "b.onnx", opset=13)
