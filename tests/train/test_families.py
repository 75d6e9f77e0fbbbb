"""``avatarforge.train.train(config)``: one entry point that trains every family with its
trainer on the one engine; and the ``avatarforge train`` command's one-line write errors."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from avatarforge.config import ConfigError, build_train_config
from avatarforge.train import family_of, make_trainer, register_family, train, trainer_class
from avatarforge.train.checkpoint import find_checkpoint
from avatarforge.train.cli import build_parser, train_main
from avatarforge.train.engine import Trainer
from tests.conftest import make_packed
from tests.train.fault_child import tiny_config as tiny_gan_config

QUIET = ["log.progress=false", "perf.num_threads=1", "log.num_samples=4", "log.sample_every_kimg=0"]


@pytest.fixture(scope="module")
def data(blobs) -> Path:
    return blobs


def _vae_config(data: Path, runs: Path):
    return build_train_config(
        cli={"model": {"name": "vae"}, "data": {"path": str(data)}},
        overrides=[
            *QUIET,
            "batch_size=8",
            "kimg=0.016",
            f"runs_dir={runs}",
            "model.kwargs.base_channels=8",
            "model.kwargs.max_channels=32",
            "model.z_dim=16",
        ],
    )


def _cyclegan_config(data: Path, tmp: Path):
    from avatarforge.style.train_cyclegan import build_cyclegan_config

    b = make_packed(tmp / "b", n=8, size=32, seed=1, labelled=False)
    return build_cyclegan_config(
        cli={"data": {"a": str(data), "b": str(b)}, "runs_dir": str(tmp / "runs")},
        overrides=[*QUIET, "model.ngf=8", "model.ndf=8", "model.n_blocks=1", "batch_size=2", "kimg=0.004"],
    )


def _animator_config(tmp: Path):
    from tests.animate.test_train import _config

    return _config(tmp, "kimg=0.016", "log.sample_every_kimg=0")


@pytest.mark.parametrize(
    ("family", "cls_name", "run_name"),
    [
        ("gan", "GANTrainer", "dcgan-32"),
        ("vae", "VAETrainer", "vae-32"),
        ("cyclegan", "CycleGANTrainer", "cyclegan-32"),
        ("animator", "AnimatorTrainer", "animator-32"),
    ],
)
def test_train_picks_the_family_trainer_and_trains(family, cls_name, run_name, data, tmp_path):
    config = {
        "gan": lambda: tiny_gan_config(data, tmp_path / "runs", "kimg=0.016"),
        "vae": lambda: _vae_config(data, tmp_path / "runs"),
        "cyclegan": lambda: _cyclegan_config(data, tmp_path),
        "animator": lambda: _animator_config(tmp_path),
    }[family]()
    assert family_of(config) == family
    cls = trainer_class(config)
    assert cls.__name__ == cls_name and issubclass(cls, Trainer)
    steps: list[int] = []
    run = train(config, step_hook=lambda t: steps.append(t.step))
    assert run.name.endswith(run_name) and (run / "config.yaml").is_file()
    assert find_checkpoint(run).name == f"ckpt-{steps[-1]:08d}" and steps == list(range(1, len(steps) + 1))
    # Resuming through the same entry point continues that run.
    resumed = make_trainer(config, resume=run)
    assert type(resumed) is cls and resumed.fit() == run and resumed.resumed_from == find_checkpoint(run)


def test_configs_of_no_family_and_metric_hooks_are_explicit(data, tmp_path):
    with pytest.raises(ConfigError, match="is not a training configuration"):
        family_of({"model": {"name": "dcgan"}})
    cfg = tiny_gan_config(data, tmp_path, "log.metrics=[swd]")
    # Evaluation sits above training: the caller composes the hook, log.metrics is never ignored.
    with pytest.raises(ConfigError, match=r"log\.metrics=\['swd'\] needs the metric hook"):
        make_trainer(cfg)
    from avatarforge.eval import metric_fn_from_config

    assert make_trainer(cfg, metric_fn=metric_fn_from_config(cfg)).metric_fn is not None
    assert metric_fn_from_config(tiny_gan_config(data, tmp_path)) is None
    with pytest.raises(ConfigError, match=r"log\.metrics: unknown"):
        metric_fn_from_config(tiny_gan_config(data, tmp_path, "log.metrics=[fdi]"))


def test_a_config_class_belongs_to_one_family():
    from avatarforge.animate.config import AnimatorConfig

    with pytest.raises(ValueError, match="is the config of training family 'animator'"):
        register_family("animator2", AnimatorConfig, lambda: Trainer)


def test_train_cli_write_error_is_one_line_with_exit_code_4(data, tmp_path, monkeypatch, capsys):
    """A full disk while writing a checkpoint: the trainer names the newest complete
    checkpoint, the command ends with one error line (no traceback) and exit code 4."""
    import avatarforge.train.engine as engine

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(engine, "save_checkpoint", full_disk)
    flags = ["--model", "dcgan", "--data", str(data), "--runs-dir", str(tmp_path), "--kimg", "0.016"]
    tiny = ["model.z_dim=16", "model.g_kwargs.base_channels=8", "model.d_kwargs.base_channels=8"]
    args = build_parser().parse_args(
        [*flags, "batch_size=8", "log.checkpoint_every_minutes=0", *QUIET, *tiny]
    )
    assert train_main(args) == 4
    out, err = capsys.readouterr()
    assert (
        "could not write the checkpoint of step 2" in out and "resume with: avatarforge train --resume" in out
    )
    assert "Traceback" not in err
    assert (
        err.strip().splitlines()[-1]
        == f"avatarforge train: error: [Errno {errno.ENOSPC}] {os.strerror(errno.ENOSPC)}"
    )


def test_train_main_without_a_metric_factory_sends_log_metrics_to_avatarforge_train(data, tmp_path, capsys):
    # `python -m avatarforge.train` passes no factory: training cannot import evaluation (it
    # sits above), so log.metrics is refused in one line naming the command that has them.
    flags = ["--model", "dcgan", "--data", str(data), "--runs-dir", str(tmp_path / "runs")]
    assert train_main(build_parser().parse_args([*flags, *QUIET, "log.metrics=[swd]"])) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("avatarforge train: error: log.metrics") and "\n" not in err, err
    assert "'avatarforge train'" in err and "'python -m avatarforge train'" in err
    assert not (tmp_path / "runs").exists()  # refused before a run directory is made
