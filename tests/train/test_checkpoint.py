"""Generic training pieces: checkpoints, run dirs, EMA, losses, metrics log, guard."""

from __future__ import annotations

import json
import random
import threading

import numpy as np
import pytest
import torch
from torch import nn

from avatarforge.errors import MissingDependencyError
from avatarforge.models.base import ConfigModule
from avatarforge.models.registry import register_model
from avatarforge.train import checkpoint as ck
from avatarforge.train.ema import ema_beta, update_ema
from avatarforge.train.guard import NaNEvents, NonFiniteWarning, StopSignal, TrainingDiverged, all_finite
from avatarforge.train.loading import load_network
from avatarforge.train.losses import d_loss, g_loss, r1_penalty, r1_weight
from avatarforge.train.metrics_log import MetricsLog, read_metrics, truncate_metrics
from avatarforge.train.rundir import allocate_run_dir, run_number, sanitize_desc


@register_model("test-ckpt-toy", role="generator")
class Toy(ConfigModule):
    """A tiny network with a buffer, for checkpoint tests."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.lin = nn.Linear(3, width)
        self.register_buffer("avg", torch.zeros(width))

    def forward(self, x):
        return self.lin(x)


def _trained_state(seed: int = 0):
    torch.manual_seed(seed)
    model = Toy()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.5, 0.9))
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 3)).square().mean().backward()
        opt.step()
    model.avg.add_(1.5)
    gens = {"latent": torch.Generator().manual_seed(7)}
    torch.randn(3, generator=gens["latent"])  # advance it
    return model, opt, gens


def _write(root, step, model, opt, gens, extra=None):
    ot, om = ck.optimizer_state(opt, "g")
    rt, rm = ck.capture_rng(gens)
    meta = {"optimizers": {"g": om}, "rng": rm, **(extra or {})}
    return ck.save_checkpoint(root, step, models={"g": model}, tensors={**ot, **rt}, meta=meta)


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_restores_everything(tmp_path):
    model, opt, gens = _trained_state()
    np.random.seed(3)
    random.seed(4)
    path = _write(tmp_path, 12, model, opt, gens, {"nimg": 96, "lr_scale": 0.5})
    assert path.name == "ckpt-00000012" and (tmp_path / "latest").read_text().strip() == path.name
    expect_next = (torch.randn(4, generator=gens["latent"]), torch.rand(2), np.random.rand(), random.random())

    # Scramble every piece of state, then restore.
    model2, opt2, gens2 = _trained_state(seed=1)
    torch.randn(100)
    np.random.seed(99)
    random.seed(99)
    snap = ck.load_snapshot(tmp_path)  # resolves the root via `latest`
    model2.load_state_dict(snap.models["g"])
    ck.restore_optimizer(opt2, "g", snap.tensors, snap.meta["optimizers"]["g"])
    ck.restore_rng(gens2, snap.tensors, snap.meta["rng"])
    assert snap.step == 12 and snap.meta["nimg"] == 96 and snap.meta["lr_scale"] == 0.5
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    sd, sd2 = opt.state_dict(), opt2.state_dict()
    assert sd["param_groups"] == sd2["param_groups"] and sd2["param_groups"][0]["betas"] == (0.5, 0.9)
    for pid, st in sd["state"].items():
        for key, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(sd2["state"][pid][key])), (pid, key)
    got_next = (torch.randn(4, generator=gens2["latent"]), torch.rand(2), np.random.rand(), random.random())
    assert torch.equal(expect_next[0], got_next[0]) and torch.equal(expect_next[1], got_next[1])
    assert expect_next[2:] == got_next[2:]
    # load_generator-style access and the JSON side are plain files.
    net = load_network(path, which="g")
    assert not net.training and torch.equal(net.lin.weight, model.lin.weight)
    assert json.loads((path / ck.STATE_JSON).read_text())["format"] == ck.FORMAT_NAME


def test_loading_never_unpickles(tmp_path, monkeypatch):
    model, opt, gens = _trained_state()
    _write(tmp_path, 1, model, opt, gens)

    def forbidden(*a, **k):
        raise AssertionError("torch.load/pickle must not be used on checkpoint files")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr("pickle.load", forbidden)
    monkeypatch.setattr("pickle.loads", forbidden)
    snap = ck.load_snapshot(tmp_path)
    assert "g" in snap.models


def test_crash_mid_write_leaves_previous_checkpoint_usable(tmp_path, monkeypatch):
    model, opt, gens = _trained_state()
    first = _write(tmp_path, 5, model, opt, gens)

    real = ck.atomic_write_json

    def crash(path, obj, *a, **k):
        if path.name == ck.STATE_JSON:
            raise OSError("disk full (simulated)")
        return real(path, obj, *a, **k)

    monkeypatch.setattr(ck, "atomic_write_json", crash)
    with torch.no_grad():
        model.lin.weight.add_(1.0)
    with pytest.raises(OSError, match="simulated"):
        _write(tmp_path, 10, model, opt, gens)
    monkeypatch.undo()
    assert not (tmp_path / "ckpt-00000010").exists()
    assert ck.find_checkpoint(tmp_path) == first
    # A process killed mid-write leaves a hidden partial directory (no cleanup ran) and a
    # `latest` that may name a checkpoint that never appeared: both are ignored.
    partial = tmp_path / ".ckpt-00000015.abc.partial"
    partial.mkdir()
    (partial / "g_model.safetensors").write_bytes(b"torn")
    (tmp_path / "latest").write_text("ckpt-00000015\n")
    assert ck.find_checkpoint(tmp_path) == first
    snap = ck.load_snapshot(tmp_path)
    assert snap.step == 5 and not torch.equal(snap.models["g"]["lin.weight"], model.lin.weight)
    ck.prune_checkpoints(tmp_path, keep_last=3)
    assert not partial.exists() and first.exists()


def test_keep_last_k_and_best(tmp_path):
    model, opt, gens = _trained_state()
    paths = [_write(tmp_path, s, model, opt, gens) for s in (10, 20, 30, 40)]
    best = ck.save_best(tmp_path, paths[1], {"metric": "fid", "value": 3.0})
    removed = ck.prune_checkpoints(tmp_path, keep_last=2)
    assert sorted(p.name for p in removed) == ["ckpt-00000010", "ckpt-00000020"]
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["ckpt-00000030", "ckpt-00000040"]
    # best/ is a complete checkpoint of its own: pruning its source does not affect it.
    assert json.loads((best / "best.json").read_text())["source"] == "ckpt-00000020"
    assert ck.load_snapshot(best).step == 20
    assert torch.equal(load_network(best, which="g").lin.weight, model.lin.weight)
    # Re-saving best replaces it atomically.
    ck.save_best(tmp_path, paths[3], {"metric": "fid", "value": 2.0})
    assert ck.load_snapshot(tmp_path / "best").step == 40


def test_manifest_lists_every_file_with_size_and_sha256(tmp_path):
    import hashlib

    model, opt, gens = _trained_state()
    path = _write(tmp_path, 3, model, opt, gens)
    manifest = json.loads((path / ck.MANIFEST_NAME).read_text())
    files = sorted(p.name for p in path.iterdir() if p.name != ck.MANIFEST_NAME)
    assert sorted(manifest["files"]) == files
    for name, rec in manifest["files"].items():
        data = (path / name).read_bytes()
        assert rec == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert json.loads((path / ck.STATE_JSON).read_text())["manifest"] == ck.MANIFEST_NAME
    ck.verify_checkpoint(path)


def test_every_bit_flip_of_a_manifest_is_detected(tmp_path):
    """All 8 bits of every byte of ``manifest.json``: each flip is reported, none accepted."""
    import os

    model, opt, gens = _trained_state()
    path = _write(tmp_path, 3, model, opt, gens)
    manifest = path / ck.MANIFEST_NAME
    original = manifest.read_bytes()
    accepted = []
    fd = os.open(manifest, os.O_RDWR)
    try:
        for pos in range(len(original) - 1):  # the trailing newline is not part of the JSON
            for bit in range(8):
                os.pwrite(fd, bytes([original[pos] ^ (1 << bit)]), pos)  # in place: cheaper than rewriting
                try:
                    ck.verify_checkpoint(path)
                except ck.CheckpointError as e:
                    assert "\n" not in str(e)
                else:
                    accepted.append((pos, bit))
                os.pwrite(fd, original[pos : pos + 1], pos)
    finally:
        os.close(fd)
    assert manifest.read_bytes() == original
    ck.verify_checkpoint(path)
    assert accepted == []


def test_damaged_state_files_raise_checkpoint_errors_naming_them(tmp_path):
    model, opt, gens = _trained_state()
    path = _write(tmp_path, 3, model, opt, gens)
    (path / ck.MANIFEST_NAME).unlink()  # what the parser alone catches (older checkpoints)
    state = json.loads((path / ck.STATE_JSON).read_text())
    del state["manifest"]
    (path / ck.STATE_JSON).write_text(json.dumps(state))
    tensors = path / ck.STATE_TENSORS
    tensors.write_bytes(tensors.read_bytes()[:-5])
    with pytest.raises(ck.CheckpointError, match=rf"{ck.STATE_TENSORS}: truncated") as err:
        ck.load_snapshot(path, verify=False)  # even unverified, no raw SafetensorError
    assert isinstance(err.value, ValueError)
    tensors.write_bytes(b"\x80\x04\x95 pickle bytes, not safetensors")
    with pytest.raises(ck.CheckpointError, match="not a safetensors file"):
        ck.verify_checkpoint(path)
    (path / ck.STATE_JSON).write_text('{"format": ')
    with pytest.raises(
        ck.CheckpointError, match=rf"{ck.STATE_JSON}: damaged, not valid JSON \(Expecting value"
    ):
        ck.load_snapshot(path, verify=False)


def test_find_checkpoint_errors_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ck.find_checkpoint(tmp_path)


# ----------------------------------------------------------------------------- run dirs
def test_run_dir_numbering(tmp_path):
    a = allocate_run_dir(tmp_path, "dcgan-64")
    b = allocate_run_dir(tmp_path, "my run/../x")
    assert a.name == "00000-dcgan-64" and b.name == "00001-my-run-..-x"
    (tmp_path / "00041-old").mkdir()
    (tmp_path / "notes").mkdir()
    assert allocate_run_dir(tmp_path, "c").name == "00042-c"
    assert run_number(b) == 1 and run_number(tmp_path / "notes") is None
    assert "/" not in sanitize_desc("a/b c") and sanitize_desc("") == "run"


def test_run_dir_allocation_is_race_free(tmp_path):
    out: list = []
    threads = [
        threading.Thread(target=lambda i=i: out.append(allocate_run_dir(tmp_path, f"t{i}"))) for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(run_number(p) for p in out) == list(range(8))


# ----------------------------------------------------------------------------- EMA
def test_ema_beta_half_life_and_rampup():
    # After ema_kimg * 1000 images the old weights count for one half.
    beta = ema_beta(batch_size=32, cur_nimg=10**6, ema_kimg=10, rampup=None)
    assert beta ** (10_000 / 32) == pytest.approx(0.5)
    # Ramp-up: the half-life is capped at rampup * images seen.
    assert ema_beta(32, 1000, 10, rampup=0.05) == pytest.approx(0.5 ** (32 / 50))
    assert ema_beta(32, 0, 10, rampup=0.05) == 0.0  # first step copies
    assert ema_beta(32, 10, 10, rampup=0.05, fixed_beta=0.999) == 0.999


def test_update_ema_math_and_buffers():
    torch.manual_seed(0)
    model, ema = Toy(), Toy()
    model.avg.fill_(3.0)
    before = [p.detach().clone() for p in ema.parameters()]
    update_ema(ema, model, beta=0.9)
    for e0, e1, p in zip(before, ema.parameters(), model.parameters()):
        torch.testing.assert_close(e1, 0.9 * e0 + 0.1 * p, rtol=0, atol=1e-6)
    assert torch.equal(ema.avg, model.avg)  # buffers are copied, not averaged
    update_ema(ema, model, beta=0.0)
    assert all(torch.equal(a, b) for a, b in zip(ema.parameters(), model.parameters()))


# ----------------------------------------------------------------------------- losses
def test_losses():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sp = torch.nn.functional.softplus
    assert d_loss(real, fake, "logistic") == pytest.approx(float(sp(fake).mean() + sp(-real).mean()))
    assert g_loss(fake, "logistic") == pytest.approx(float(sp(-fake).mean()))
    assert d_loss(real, fake, "hinge") == pytest.approx((0 + 2) / 2 + (1.5 + 0) / 2)
    assert g_loss(fake, "hinge") == pytest.approx(1.25)
    with pytest.raises(ValueError, match="logistic, hinge"):
        d_loss(real, fake, "wgan")
    # R1 of a linear D(x) = <w, x>: ||w||^2 per sample, whatever x is.
    w = torch.randn(1, 3, 4, 4)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    assert r1_penalty(x, (x * w).sum(dim=[1, 2, 3])).item() == pytest.approx(
        w.square().sum().item(), rel=1e-5
    )
    assert r1_weight(10.0, 16) == 80.0


# ----------------------------------------------------------------------------- metrics, guard
def test_metrics_log_append_read_truncate(tmp_path):
    with MetricsLog(tmp_path) as log:
        for s in (10, 20, 30):
            log.append(
                {"kind": "train", "step": s, "kimg": s / 1000, "loss_g": float("nan") if s == 30 else 1.0}
            )
    recs = read_metrics(tmp_path, kind="train")
    assert [r["step"] for r in recs] == [10, 20, 30] and recs[2]["loss_g"] == "nan"
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"kind": "tr')  # torn last line
    assert len(read_metrics(tmp_path)) == 3
    assert truncate_metrics(tmp_path, 15) == 3
    assert [r["step"] for r in read_metrics(tmp_path)] == [10]


def test_tensorboard_missing_is_a_clear_error(tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match="pip install tensorboard"):
            MetricsLog(tmp_path, tensorboard=True)
    else:
        MetricsLog(tmp_path, tensorboard=True).close()
        assert (tmp_path / "tensorboard").is_dir()


def test_guard_pieces():
    assert all_finite([torch.ones(3), torch.zeros(0)])
    assert not all_finite([torch.ones(3), torch.tensor([float("inf")])])
    events = NaNEvents(max_events=3)
    with pytest.warns(NonFiniteWarning, match="halved"):
        events.record("loss_g", step=5)
    assert events.lr_scale == 0.5
    with pytest.warns(NonFiniteWarning):
        events.record("loss_g", step=6)
    with pytest.raises(TrainingDiverged, match="max_nan_events=3"):
        events.record("loss_g", step=7)
    stop = StopSignal(quiet=True)
    with stop:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGTERM)
    assert stop.requested and stop.signal_name == "SIGTERM"
