"""In-training evaluation from the command line: ``log.metrics`` builds the metric hook."""

from __future__ import annotations

import json

import torch

from avatarforge.cli import main
from tests.conftest import make_packed


def test_log_metrics_are_appended_and_best_checkpoint_kept(tmp_path, capsys):
    ds = make_packed(tmp_path / "blobs", n=32, size=32)
    threads = torch.get_num_threads()
    try:
        code = main([
            "train", "--data", str(ds), "--model", "dcgan", "--kimg", "0.128", "--runs-dir", str(tmp_path / "runs"),
            "batch_size=16", "log.metrics=[swd]", "log.metric_images=32", "log.metric_every_kimg=0.064",
            "log.best_metric=swd", "log.progress=false", "perf.num_threads=1", "log.sample_every_kimg=0",
            "model.g_kwargs.base_channels=8", "model.d_kwargs.base_channels=8",
        ])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    (run,) = (tmp_path / "runs").glob("0*-dcgan-32")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    swd = [r["swd"] for r in rows if "swd" in r]
    assert len(swd) >= 2 and all(v > 0 for v in swd)  # every 0.064 kimg and at the end
    assert (run / "checkpoints" / "best").is_dir()


def test_unknown_metric_is_a_clear_error(tmp_path, capsys):
    ds = make_packed(tmp_path / "blobs", n=8, size=32)
    code = main(
        ["train", "--data", str(ds), "--model", "dcgan", "--runs-dir", str(tmp_path), "log.metrics=[fidd]"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "log.metrics" in err and "fid" in err
