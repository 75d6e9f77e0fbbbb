"""``avatarforge eval`` through add_eval_arguments / eval_main."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from avatarforge.errors import EXIT_OK, EXIT_USAGE
from avatarforge.eval.cli import add_eval_arguments, eval_main
from avatarforge.models.dcgan import DCGANGenerator
from tests.conftest import make_packed


def _args(*argv: str) -> argparse.Namespace:
    return add_eval_arguments(argparse.ArgumentParser(prog="avatarforge eval")).parse_args(list(argv))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    a = make_packed(d / "a", n=24, size=32, seed=0)
    b = make_packed(d / "b", n=24, size=32, seed=1)
    torch.manual_seed(0)
    DCGANGenerator(resolution=32, z_dim=16, base_channels=8).save_pretrained(d / "run", prefix="g_ema_")
    return d, a, b


def test_defaults():
    a = _args("runs/x")
    assert (a.metrics, a.extractor, a.n, a.batch, a.seed, a.truncation, a.device) == (
        "fid,kid,pr", "auto", 5000, 64, 0, 1.0, "auto",
    )  # fmt: skip
    assert a.ref is None and a.out is None and a.weights is None


def test_eval_writes_json_and_summary(data, tmp_path, capsys):
    d, a, b = data
    out = tmp_path / "results.json"
    args = _args(str(d / "run"), "--ref", str(a), "--metrics", "fid,kid,pr,swd", "--extractor", "tiny",
                 "--n", "20", "--batch", "8", "--seed", "2", "--out", str(out), "--device", "cpu", "--quiet")  # fmt: skip
    assert eval_main(args) == EXIT_OK
    printed = capsys.readouterr().out
    assert "fid_tiny" in printed and "swd" in printed and str(out) in printed
    res = json.loads(out.read_text())
    assert {"fid_tiny", "kid_tiny", "kid_tiny_std", "precision_tiny", "recall_tiny", "swd"} <= set(
        res["metrics"]
    )
    assert res["settings"]["n"] == 20 and res["settings"]["seed"] == 2 and res["settings"]["batch_size"] == 8
    assert res["settings"]["extractor"]["name"] == "tiny" and res["source"]["kind"] == "generator"
    assert res["reference"]["path"] == str(a) and res["reference"]["content_hash"]
    # --json prints the same document.
    assert (
        eval_main(_args(str(a), "--ref", str(b), "--metrics", "swd", "--json", "--quiet", "--device", "cpu"))
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "avatarforge-eval" and "swd" in doc["metrics"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["{a}", "--metrics", "fid"], "--ref is required for fid"),
        (["{a}", "--ref", "{b}", "--metrics", "fid,fidd"], "--metrics: unknown metric 'fidd'"),
        (["{a}", "--ref", "{b}", "--extractor", "clip"], "--extractor: unknown 'clip'"),
        (["{d}/missing", "--ref", "{b}"], "SOURCE {d}/missing does not exist"),
        (["{a}", "--ref", "{d}/nope"], "--ref {d}/nope does not exist"),
        (["{a}", "--ref", "{b}", "--n", "0"], "--n must be >= 1"),
        (["{a}", "--ref", "{b}", "--batch", "0"], "--batch must be >= 1"),
        (["{a}", "--ref", "{b}", "--truncation", "0"], "--truncation must be > 0"),
        (["{a}", "--ref", "{b}", "--device", "tpu"], "--device must be"),
        (["{a}", "--ref", "{b}", "--weights", "{d}/w.pth"], "--weights {d}/w.pth does not exist"),
        (["{d}/run", "--ref", "{b}", "--metrics", "attr"], "conditional model"),
    ],
)
def test_usage_errors_name_the_option(data, capsys, argv, needle):
    d, a, b = data
    fill = {"a": a, "b": b, "d": d}
    extra = ["--quiet"]
    for flag, value in (("--device", "cpu"), ("--extractor", "tiny")):
        if flag not in argv:
            extra += [flag, value]  # keep every case cheap: no Inception, no avatar-net training
    code = eval_main(_args(*[s.format(**fill) for s in argv], *extra))
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert err.startswith("avatarforge eval: error: ") and needle.format(**fill) in err, err


def test_missing_inception_weights_say_where_to_put_them(data, tmp_path, monkeypatch, capsys):
    _, a, b = data
    monkeypatch.setenv("AVATARFORGE_CACHE", str(tmp_path / "c"))
    assert (
        eval_main(_args(str(a), "--ref", str(b), "--extractor", "inception", "--quiet", "--device", "cpu"))
        == 2
    )
    err = capsys.readouterr().err
    assert "pt_inception-2015-12-05-6726825d.pth" in err and str(tmp_path / "c" / "weights") in err
    assert "--weights" in err


def test_auto_extractor_falls_back_to_avatar(data, avatar_extractor, tmp_path, capsys):
    _, a, b = data
    out = tmp_path / "r.json"
    args = _args(str(a), "--ref", str(b), "--metrics", "fid", "--out", str(out), "--quiet", "--device", "cpu",
                 "--cache-dir", str(avatar_extractor.entry.parent.parent))  # fmt: skip
    assert eval_main(args) == 0
    assert "using the avatar extractor" in capsys.readouterr().err
    res = json.loads(out.read_text())
    assert "fid_avatar" in res["metrics"] and any("--extractor auto" in n for n in res["notes"])
