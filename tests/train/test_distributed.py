"""Data-parallel training with 2 CPU processes (gloo over 127.0.0.1), launched with torchrun.

This file is also the worker script: ``torchrun ... test_distributed.py --worker ...`` trains
with :class:`GANTrainer` and dumps each rank's final weights, so the test can compare the
ranks with each other and with the checkpoint rank 0 wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from avatarforge.train.checkpoint import find_checkpoint
from avatarforge.train.metrics_log import read_metrics

PREFIXES = ("g", "g_ema", "d")


def _worker(data: str, runs: str, out: str, kimg: str, resume: str | None) -> None:
    from avatarforge.config import build_train_config
    from avatarforge.train.gan import GANTrainer

    torch.set_num_threads(1)
    cfg = build_train_config(
        cli={"model": {"name": "dcgan"}, "data": {"path": data}},
        overrides=[
            "batch_size=8",  # global: 4 per process
            f"kimg={kimg}",
            f"runs_dir={runs}",
            "model.kwargs.base_channels=8",
            "data.augment=color,translation",
            "log.every_steps=2",
            "log.sample_every_kimg=0",
            "log.checkpoint_every_kimg=0",
            "log.progress=false",
            "log.num_samples=4",
            "device=cpu",
        ],
    )
    trainer = GANTrainer(cfg, resume=resume)
    trainer.fit()
    rank = int(os.environ["RANK"])
    for prefix, model in zip(PREFIXES, (trainer.G, trainer.G_ema, trainer.D)):
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(Path(out) / f"rank{rank}_{prefix}.safetensors"))


def _torchrun(tmp_path: Path, data: Path, runs: Path, out: Path, kimg: str, resume: Path | None = None):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc_per_node=2",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=127.0.0.1:0",
        __file__,
        "--worker",
        str(data),
        str(runs),
        str(out),
        kimg,
        str(resume or ""),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _assert_ranks_equal_checkpoint(out: Path, ckpt: Path) -> None:
    for prefix in PREFIXES:
        r0 = load_file(str(out / f"rank0_{prefix}.safetensors"))
        r1 = load_file(str(out / f"rank1_{prefix}.safetensors"))
        saved = load_file(str(ckpt / f"{prefix}_model.safetensors"))
        assert r0.keys() == r1.keys() == saved.keys()
        for k in r0:
            assert torch.equal(r0[k], r1[k]), f"{prefix}.{k} differs between ranks"
            assert torch.equal(r0[k], saved[k]), f"{prefix}.{k} differs from the checkpoint"


def _train_then_resume(tmp_path: Path) -> tuple[Path, Path, Path]:
    """4 steps with 2 processes, then resume to 6; returns (data, run dir, dir of final weights)."""
    from tests.conftest import make_packed

    data = make_packed(tmp_path / "data", n=16, size=32)
    runs, out1, out2 = tmp_path / "runs", tmp_path / "out1", tmp_path / "out2"
    out1.mkdir()
    out2.mkdir()

    _torchrun(tmp_path, data, runs, out1, kimg="0.032")  # 4 steps of 2 x 4 images
    (run,) = runs.glob("0*")
    ckpt = find_checkpoint(run)
    state = json.loads((ckpt / "training_state.json").read_text())
    assert (state["step"], state["world_size"], state["nimg"]) == (4, 2, 32)
    assert "rank1/rng/latent" in load_file(str(ckpt / "training_state.safetensors"))  # every rank's RNG
    _assert_ranks_equal_checkpoint(out1, ckpt)
    assert [r["step"] for r in read_metrics(run, kind="train")] == [2, 4]  # rank 0 logs alone

    # Both ranks resume from the same checkpoint and stay in lock-step.
    _torchrun(tmp_path, data, runs, out2, kimg="0.048", resume=run)
    ckpt2 = find_checkpoint(run)
    assert ckpt2.name == "ckpt-00000006"
    _assert_ranks_equal_checkpoint(out2, ckpt2)
    before = load_file(str(out1 / "rank0_g.safetensors"))
    after = load_file(str(out2 / "rank0_g.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it did train further
    return data, run, out2


def test_two_process_gloo_training_and_resume(tmp_path):
    _train_then_resume(tmp_path)


@pytest.mark.slow
def test_two_process_resume_is_bit_identical(tmp_path):
    """Stopped at 4 and resumed to 6 == 6 steps in one go, with the same 2 processes."""
    data, _, resumed = _train_then_resume(tmp_path)
    straight = tmp_path / "out3"
    straight.mkdir()
    _torchrun(tmp_path, data, tmp_path / "runs-straight", straight, kimg="0.048")
    for prefix in PREFIXES:
        a = load_file(str(resumed / f"rank0_{prefix}.safetensors"))
        b = load_file(str(straight / f"rank0_{prefix}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), prefix


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--worker":
        _worker(*sys.argv[2:6], resume=sys.argv[6] or None)
    else:
        sys.exit(pytest.main([__file__, "-q"]))
