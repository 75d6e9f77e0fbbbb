"""The VAE loop end to end on tiny models and data sets: loss math, learning, exact resume,
run directory, NaN guard, signals, CLI routing.

CPU, one intra-op thread (see tests/train/test_gan_trainer.py for why).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from avatarforge.config import ConfigError, build_train_config
from avatarforge.data.builtin import build_builtin_dataset
from avatarforge.train.checkpoint import find_checkpoint, list_checkpoints
from avatarforge.train.cli import build_parser, train_main
from avatarforge.train.guard import NonFiniteWarning
from avatarforge.train.loading import load_generator, load_vae
from avatarforge.train.metrics_log import read_metrics
from avatarforge.train.vae import VAETrainer, kl_per_dim, kl_term, kl_weight, recon_loss
from tests.conftest import make_packed

# Outcome depends on trained weights / float rounding: rerun by `make test-numerics-fp32`.
pytestmark = pytest.mark.numerics

TINY = ["model.kwargs.base_channels=8", "model.kwargs.max_channels=32", "model.z_dim=16"]
QUIET = ["log.progress=false", "perf.num_threads=1", "log.num_samples=4"]


@pytest.fixture(scope="module")
def avatars(tmp_path_factory) -> Path:
    """64 procedural avatars at 32 px, RGBA, with the procedural label schema."""
    out = tmp_path_factory.mktemp("vae") / "avatars"
    return build_builtin_dataset(out, 64, 32, seed=0, workers=1, progress=False)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory) -> Path:
    """16 RGB blobs with a categorical label ("color", some unknown) and a continuous one."""
    return make_packed(tmp_path_factory.mktemp("vae") / "blobs", n=16, size=32)


def _config(model: str, data: Path, runs: Path, *overrides: str):
    base = ["batch_size=8", f"runs_dir={runs}", "log.sample_every_kimg=0", "log.checkpoint_every_kimg=0"]
    return build_train_config(
        cli={"model": {"name": model}, "data": {"path": str(data)}},
        overrides=[*base, *QUIET, *TINY, *overrides],
    )


# ----------------------------------------------------------------------------- loss math
def test_kl_matches_the_closed_form_of_torch_distributions():
    mu, logvar = torch.randn(6, 5), torch.randn(6, 5)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(5), torch.ones(5))
    assert torch.allclose(kl_per_dim(mu, logvar), torch.distributions.kl_divergence(q, p), atol=1e-5)
    assert torch.equal(kl_per_dim(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2, 3))  # q = prior
    assert torch.allclose(kl_term(kl_per_dim(mu, logvar)), kl_per_dim(mu, logvar).sum(1).mean())


def test_kl_warmup_is_a_linear_ramp_to_beta():
    assert kl_weight(0, beta=4.0, warmup_kimg=2.0) == 0.0
    assert kl_weight(500, beta=4.0, warmup_kimg=2.0) == 1.0
    assert kl_weight(1000, beta=4.0, warmup_kimg=2.0) == 2.0
    assert kl_weight(2000, beta=4.0, warmup_kimg=2.0) == kl_weight(10**6, 4.0, 2.0) == 4.0
    assert kl_weight(0, beta=0.5, warmup_kimg=0.0) == 0.5  # no warm-up


def test_free_bits_floor_each_dimension_and_stop_its_gradient():
    # Batch-mean KL per dimension: 0.5 * mu^2 (logvar = 0): dims at 0.02, 0.5, 2.0 nats.
    mu = torch.tensor([[0.2, 1.0, 2.0], [-0.2, -1.0, -2.0]], requires_grad=True)
    logvar = torch.zeros(2, 3, requires_grad=True)
    kl = kl_per_dim(mu, logvar)
    assert torch.allclose(kl.mean(0), torch.tensor([0.02, 0.5, 2.0]))
    assert torch.isclose(kl_term(kl, free_bits=0.0), torch.tensor(2.52))
    term = kl_term(kl, free_bits=1.0)  # max(1, .02) + max(1, .5) + max(1, 2)
    assert torch.isclose(term, torch.tensor(4.0))
    term.backward()
    # Dimensions under the floor get no gradient: the encoder may use them for free.
    assert torch.equal(mu.grad[:, :2], torch.zeros(2, 2))
    assert torch.allclose(mu.grad[:, 2], torch.tensor([1.0, -1.0]))  # d/dmu mean(0.5 mu^2) = mu / B


def test_reconstruction_loss_sums_per_image_and_averages_over_the_batch():
    x = torch.zeros(2, 3, 4, 4)
    x_hat = torch.full_like(x, 0.5)
    x_hat[1] = -1.0
    # Image 0: 48 values off by 0.5; image 1: 48 values off by 1.
    assert torch.isclose(recon_loss(x_hat, x, "mse"), torch.tensor((48 * 0.25 + 48 * 1.0) / 2))
    assert torch.isclose(recon_loss(x_hat, x, "l1"), torch.tensor((48 * 0.5 + 48 * 1.0) / 2))
    with pytest.raises(ValueError, match="mse"):
        recon_loss(x_hat, x, "bce")


# ----------------------------------------------------------------------------- learning
def test_reconstruction_error_falls_during_a_short_run(avatars, tmp_path):
    """150 steps on 64 procedural avatars at 32 px: the held-fixed reconstruction MSE drops."""
    seen: dict[int, dict[str, float]] = {}

    def record(trainer):
        if trainer.step in (1, 150):
            seen[trainer.step] = trainer.evaluate()

    cfg = _config(
        "vae",
        avatars,
        tmp_path,
        "batch_size=16",
        "kimg=2.4",
        "log.every_steps=25",
        "log.num_samples=16",
        "model.kwargs.base_channels=16",
        "model.kwargs.max_channels=64",
        "loss.kl_warmup_kimg=1",
    )
    run = VAETrainer(cfg, step_hook=record).fit()
    start, end = seen[1]["eval_mse"], seen[150]["eval_mse"]
    print(f"eval MSE ([0,1] units) step 1: {start:.4f}, step 150: {end:.4f}, ratio {end / start:.2f}")
    assert end < 0.4 * start, (start, end)
    train = read_metrics(run, kind="train")
    assert train[-1]["recon"] < 0.5 * train[0]["recon"]
    assert [r["kl_weight"] for r in train][:2] == [0.4, 0.8] and train[-1]["kl_weight"] == 1.0  # warm-up


# ----------------------------------------------------------------------------- exact resume
def test_resume_is_bit_identical(blobs, tmp_path):
    """8 steps in one go == 4 steps, stop, resume through the CLI, 4 more.

    A cvae with label dropout and an EMA, so every random stream and the EMA are covered.
    """
    opts = ["data.label_dropout=0.3", "ema.enabled=true", "ema.kimg=0.01", "log.every_steps=3"]
    full = VAETrainer(_config("cvae", blobs, tmp_path / "a", "kimg=0.064", *opts)).fit()
    half = VAETrainer(_config("cvae", blobs, tmp_path / "b", "kimg=0.032", *opts)).fit()
    args = build_parser().parse_args(["--resume", str(half), "--kimg", "0.064"])
    assert train_main(args) == 0

    a, b = find_checkpoint(full), find_checkpoint(half)
    assert a.name == b.name == "ckpt-00000008"
    for prefix in ("vae", "vae_ema"):
        wa, wb = (
            load_file(str(a / f"{prefix}_model.safetensors")),
            load_file(str(b / f"{prefix}_model.safetensors")),
        )
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), f"{prefix}.{k} differs after resume"
    sa = load_file(str(a / "training_state.safetensors"))
    sb = load_file(str(b / "training_state.safetensors"))
    assert {"rng/reparam", "rng/label_dropout"} <= sa.keys()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)  # Adam moments, RNGs
    assert [r["step"] for r in read_metrics(full, kind="train")] == [3, 6, 8]
    assert [r["step"] for r in read_metrics(half, kind="train")] == [3, 4, 6, 8]


# ----------------------------------------------------------------------------- run directory
def test_run_directory_layout_samples_metrics_checkpoints_and_best(avatars, tmp_path):
    values = iter([1.0, 2.0, 3.0])

    def metric_fn(trainer):
        torch.rand(3)  # a hook drawing random numbers must not shift training
        return {"extra": next(values)}

    cfg = _config(
        "vae",
        avatars,
        tmp_path / "runs",
        "kimg=0.048",
        "log.every_steps=2",
        "log.sample_every_kimg=0.016",
        "log.checkpoint_every_kimg=0.016",
        "log.keep_last=2",
        "log.metric_every_kimg=0.016",
        "log.best_metric=eval_loss",
        "log.num_samples=6",
    )
    assert cfg.preset == "vae-32.yaml" and cfg.ema.enabled is False
    run = VAETrainer(cfg, metric_fn=metric_fn).fit()
    assert run.name == "00000-vae-32"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved == json.loads((run / "config.json").read_text())
    assert saved["data"]["path"] == str(avatars.resolve()) and saved["loss"]["beta"] == 1.0

    train = read_metrics(run, kind="train")
    assert [r["step"] for r in train] == [2, 4, 6]
    for key in ("loss", "recon", "kl", "kl_weight", "mse", "img_per_s", "lr", "kimg", "time_s"):
        assert key in train[0], key
    assert all(r["loss"] == pytest.approx(r["recon"] + r["kl_weight"] * r["kl"], rel=1e-4) for r in train)
    metric = read_metrics(run, kind="metric")
    assert [r["step"] for r in metric] == [2, 4, 6] and [r["extra"] for r in metric] == [1.0, 2.0, 3.0]
    assert {"eval_loss", "eval_recon", "eval_kl", "eval_mse", "eval_psnr"} <= metric[0].keys()

    samples = sorted(p.name for p in (run / "samples").iterdir())
    assert samples == ["fakes_000000.png", "reals.png", "recon_000000.png"]  # kimg < 1 overwrites
    ckpts = [p.name for p in list_checkpoints(run / "checkpoints")]
    assert ckpts == ["ckpt-00000004", "ckpt-00000006"]
    assert sorted(p.name for p in (run / "checkpoints" / "ckpt-00000006").iterdir()) == [
        "manifest.json",
        "training_state.json",
        "training_state.safetensors",
        "vae_config.json",
        "vae_model.safetensors",
    ]
    best = json.loads((run / "checkpoints" / "best" / "best.json").read_text())
    best_value = min(r["eval_loss"] for r in metric)
    assert best["metric"] == "eval_loss" and best["value"] == best_value
    assert best["step"] == next(r["step"] for r in metric if r["eval_loss"] == best_value)

    vae = load_vae(run)
    assert not vae.training and not any(p.requires_grad for p in vae.parameters())
    assert (vae.resolution, vae.channels, vae.label_dims) == (32, 4, [])
    saved_w = load_file(str(run / "checkpoints" / "ckpt-00000006" / "vae_model.safetensors"))
    assert all(torch.equal(v, saved_w[k]) for k, v in vae.state_dict().items())
    G = load_generator(run)  # the decoder, through the generator loader
    assert G is not None and G(G.sample_z(2)).shape == (2, 4, 32, 32)
    assert load_vae(run / "checkpoints" / "best").z_dim == 16
    with pytest.raises(FileNotFoundError, match="EMA"):
        load_vae(run, which="ema")


def test_conditional_run_on_data_with_unknown_labels(blobs, tmp_path):
    cfg = _config("cvae", blobs, tmp_path, "kimg=0.016", "data.label_dropout=0.5", "log.num_samples=9")
    trainer = VAETrainer(cfg)
    run = trainer.fit()
    vae = load_vae(run)
    assert vae.label_names == ["color"] and vae.label_dims == [3]
    assert vae.label_values == [["red", "green", "blue"]]
    assert trainer._fixed["z_labels"][:, 0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # a class per row
    assert (run / "samples" / "recon_000000.png").is_file()


# ----------------------------------------------------------------------------- NaN guard, signals
def test_nan_restores_last_checkpoint_and_halves_lr(blobs, tmp_path):
    fired: list[int] = []

    def corrupt(trainer):
        if trainer.step == 5 and not fired:
            fired.append(trainer.step)
            with torch.no_grad():
                w = next(trainer.vae.parameters())
                w[(0,) * w.dim()] = float("nan")

    cfg = _config(
        "vae", blobs, tmp_path, "kimg=0.064", "log.every_steps=2", "log.checkpoint_every_kimg=0.032"
    )
    trainer = VAETrainer(cfg, step_hook=corrupt)
    with pytest.warns(NonFiniteWarning, match="halved"):
        run = trainer.fit()
    assert fired == [5] and trainer.nan.count == 1 and trainer.step == 8
    assert trainer.opt.param_groups[0]["lr"] == cfg.optim.g_lr / 2
    (event,) = read_metrics(run, kind="event")
    assert event["step"] == 6 and "vae." in event["what"]
    assert [r["step"] for r in read_metrics(run, kind="train")] == [2, 4, 6, 8]
    state = json.loads((find_checkpoint(run) / "training_state.json").read_text())
    assert state["nan_events"] == 1 and state["lr_scale"] == 0.5


def test_sigterm_checkpoints_and_stops_cleanly(blobs, tmp_path, capsys):
    def send(trainer):
        if trainer.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal, caught by the trainer's handler

    cfg = _config("vae", blobs, tmp_path, "kimg=1000", "log.every_steps=100")
    trainer = VAETrainer(cfg, step_hook=send)
    run = trainer.fit()
    assert trainer.stopped_by == "signal:SIGTERM" and trainer.step == 3
    assert find_checkpoint(run).name == "ckpt-00000003"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler removed again
    assert f"--resume {run}" in capsys.readouterr().out
    assert not read_metrics(run, kind="metric")  # no evaluation after a signal


def test_minutes_limit_stops_with_checkpoint(blobs, tmp_path):
    trainer = VAETrainer(_config("vae", blobs, tmp_path, "kimg=1000", "minutes=0.0001"))
    run = trainer.fit()
    assert trainer.stopped_by == "time" and find_checkpoint(run).name == f"ckpt-{trainer.step:08d}"


# ----------------------------------------------------------------------------- CLI and config
def test_cli_routes_vae_models_to_the_vae_trainer(blobs, avatars, tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = ["--data", str(blobs), "--runs-dir", str(runs), "--kimg", "0.016", "batch_size=8", *QUIET, *TINY]
    assert train_main(build_parser().parse_args(["--model", "cvae", *argv])) == 0
    (run,) = runs.glob("0*-cvae-32")
    assert (find_checkpoint(run) / "vae_model.safetensors").is_file()
    assert "preset: cvae-64.yaml (no cvae-32 preset; nearest resolution used)" in capsys.readouterr().err

    assert train_main(build_parser().parse_args(["--model", "vae", "--data", str(avatars), "--dry-run"])) == 0
    out = capsys.readouterr().out
    assert "# preset: vae-32.yaml" in out and "kl_warmup_kimg: 10.0" in out

    assert train_main(build_parser().parse_args(["--model", "vea", *argv])) == 2
    assert "did you mean: vae" in capsys.readouterr().err
    assert train_main(build_parser().parse_args(["--model", "vae", *argv, "data.augment=color"])) == 2
    assert "does not use it" in capsys.readouterr().err
    unlabelled = make_packed(tmp_path / "unlabelled", n=8, labelled=False)
    bad = [
        "--model",
        "cvae",
        "--data",
        str(unlabelled),
        "--runs-dir",
        str(runs),
        *QUIET,
        "data.condition_on=[]",
    ]
    assert train_main(build_parser().parse_args(bad)) == 2
    assert "label-conditional" in capsys.readouterr().err


def test_vae_config_values_are_validated():
    for bad, msg in (
        ("loss.beta=-1", "loss.beta"),
        ("loss.free_bits=-0.1", "free_bits"),
        ("data.label_dropout=1", "label_dropout"),
        ("loss.recon=bce", "valid values: mse, l1"),
    ):
        with pytest.raises(ConfigError, match=msg):
            build_train_config(cli={"model": {"name": "vae"}}, overrides=[bad])


# ----------------------------------------------------------------------------- 2 processes
_WORKER = """
import os, sys
import torch
from safetensors.torch import save_file
from avatarforge.config import build_train_config
from avatarforge.train.vae import VAETrainer

data, runs, out, *extra = sys.argv[1:]
torch.set_num_threads(1)
cfg = build_train_config(
    cli={"model": {"name": "cvae"}, "data": {"path": data}},
    overrides=[f"runs_dir={runs}", "batch_size=8", "kimg=0.032", "device=cpu", "data.label_dropout=0.3",
               "log.every_steps=2", "log.sample_every_kimg=0", "log.checkpoint_every_kimg=0",
               "log.progress=false", "log.num_samples=4", *extra],
)
trainer = VAETrainer(cfg)
trainer.fit()
state = {k: v.detach().contiguous() for k, v in trainer.vae.state_dict().items()}
save_file(state, os.path.join(out, f"rank{os.environ['RANK']}.safetensors"))
"""


@pytest.mark.slow  # ~14 s (two processes start torch); keeps this file under 30 s
def test_two_process_gloo_training(blobs, tmp_path):
    """torchrun, 2 CPU processes: gradients all-reduced, so both ranks end with the weights
    rank 0 checkpointed; every rank's random streams are in the checkpoint."""
    import subprocess
    import sys

    worker = tmp_path / "worker.py"
    worker.write_text(_WORKER)
    runs, out = tmp_path / "runs", tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:0", str(worker), str(blobs), str(runs), str(out), *TINY]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    (run,) = runs.glob("0*")
    ckpt = find_checkpoint(run)
    state = json.loads((ckpt / "training_state.json").read_text())
    assert (state["step"], state["world_size"], state["nimg"]) == (4, 2, 32)
    tensors = load_file(str(ckpt / "training_state.safetensors"))
    assert {"rng/reparam", "rank1/rng/reparam", "rank1/rng/label_dropout"} <= tensors.keys()
    assert not torch.equal(tensors["rng/reparam"], tensors["rank1/rng/reparam"])  # own noise per rank
    r0, r1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    saved = load_file(str(ckpt / "vae_model.safetensors"))
    assert r0.keys() == r1.keys() == saved.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"{k} differs between ranks"
        assert torch.equal(r0[k], saved[k]), f"{k} differs from the checkpoint"
    assert [r["step"] for r in read_metrics(run, kind="train")] == [2, 4]  # rank 0 logs alone
