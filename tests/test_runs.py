"""avatarforge.runs: one module reads a trained run on disk, and every command takes the same paths.

A tiny quickstart-like folder (``quickstart.json`` naming a generator run and an animator run,
each a real run directory with a manifest-checked checkpoint) is built here; ``generate``,
``edit`` and ``animate`` take it as they take a run directory.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from avatarforge import runs
from avatarforge.train.checkpoint import save_checkpoint
from tests.conftest import save_tiny_stylegan

SIZE = 32


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _save_run(run: Path, model: torch.nn.Module, step: int = 10) -> Path:
    save_checkpoint(run / "checkpoints", step, models={"g": model, "g_ema": model}, meta={"nimg": 1000})
    return run


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> Path:
    """``OUT/quickstart.json`` + ``OUT/runs/00000-stylegan-32`` + ``OUT/runs/00001-animator-32``."""
    from avatarforge.models.animator import ExpressionAnimator
    from avatarforge.models.base import load_pretrained

    out = tmp_path_factory.mktemp("qs")
    saved = save_tiny_stylegan(out / "saved-g", 3, resolution=SIZE, channel_base=256, channel_max=32, dim=32)
    G = load_pretrained(saved, prefix="g_ema_")
    _save_run(out / "runs" / "00000-stylegan-32", G)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(8)
        anim = ExpressionAnimator(resolution=SIZE, widths=(4, 8, 8, 16), ctrl_hidden=16, enc_blocks=1)
    _save_run(out / "runs" / "00001-animator-32", anim.eval())
    (out / "quickstart.json").write_text(
        json.dumps({"generator_run": "runs/00000-stylegan-32", "animator_run": "runs/00001-animator-32"})
    )
    return out


# ------------------------------------------------------------------------------ resolving paths
def test_resolve_run_picks_the_quickstart_run_of_each_role(quickstart):
    assert runs.resolve_run(quickstart) == quickstart / "runs" / "00000-stylegan-32"
    assert runs.resolve_run(quickstart, "animator") == quickstart / "runs" / "00001-animator-32"
    run = quickstart / "runs" / "00000-stylegan-32"
    assert runs.resolve_run(run) == run  # a run directory is taken as it is
    assert runs.find_checkpoint(run).name == "ckpt-00000010"


def test_an_unfinished_quickstart_resolves_from_its_state(tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / runs.QUICKSTART_STATE).write_text(json.dumps({"runs": {"generator": {"run": "g"}}}))
    assert runs.resolve_run(tmp_path) == tmp_path / "g"
    with pytest.raises(FileNotFoundError, match="quickstart folder without a animator run yet"):
        runs.resolve_run(tmp_path, "animator")


def test_a_path_that_is_no_run_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; pass a run directory"):
        runs.resolve_run(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint in .*or a quickstart output folder"):
        runs.load_generator(tmp_path)


def test_split_run_seed():
    assert runs.split_run_seed("runs/quickstart:7") == ("runs/quickstart", 7)
    assert runs.split_run_seed("C:/x/run:12") == ("C:/x/run", 12)
    assert runs.split_run_seed("7") is None and runs.split_run_seed("run:x") is None


# ------------------------------------------------------------------------------ loading by role
def test_load_by_role_from_a_quickstart_folder(quickstart):
    from avatarforge.models.animator import ExpressionAnimator

    G = runs.load_generator(quickstart)
    assert G.resolution == SIZE and not G.training
    assert isinstance(runs.load_animator(quickstart), ExpressionAnimator)
    with pytest.raises(ValueError, match="not an expression animator"):
        runs.load_animator(quickstart / "runs" / "00000-stylegan-32")
    with pytest.raises(ValueError, match="which must be one of"):
        runs.load_network(quickstart, which="nope")


def test_loading_still_checks_the_manifest(quickstart, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(quickstart / "runs" / "00000-stylegan-32", run)
    cfg = runs.find_checkpoint(run) / "g_ema_config.json"
    cfg.write_text(cfg.read_text() + " ")
    with pytest.raises(runs.CheckpointError, match=r"g_ema_config\.json: .*manifest"):
        runs.load_network(run)


def test_train_keeps_its_names():
    from avatarforge.train import checkpoint, loading

    assert checkpoint.find_checkpoint is runs.find_checkpoint
    assert checkpoint.CheckpointError is runs.CheckpointError
    assert loading.load_generator is runs.load_generator


# ------------------------------------------------------------------------------ the commands
def _cli(add, main, argv) -> int:
    parser = argparse.ArgumentParser()
    add(parser)
    return main(parser.parse_args([str(a) for a in argv]))


def test_generate_and_edit_take_a_quickstart_folder(quickstart, tmp_path):
    from avatarforge.generate.cli import (
        add_generate_arguments,
        add_personalise_arguments,
        generate_main,
        personalise_main,
    )

    out = tmp_path / "g"
    assert _cli(add_generate_arguments, generate_main, [quickstart, "--seeds", "1-2", "--out", out]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["seed0001.png", "seed0002.png"]
    v = tmp_path / "v"
    argv = ["variations", quickstart, "--seed", "3", "--n", "2", "--out", v]
    assert _cli(add_personalise_arguments, personalise_main, argv) == 0
    assert sorted(p.name for p in v.iterdir()) == ["seed0003_var0000.png", "seed0003_var0001.png"]


def test_generate_a_path_that_is_no_run_says_what_to_pass(tmp_path, capsys):
    from avatarforge.cli import main

    with pytest.raises(SystemExit) as e:
        main(["generate", str(tmp_path), "--seeds", "1", "--out", str(tmp_path / "g")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "no checkpoint in" in err and "or a quickstart output folder" in err and len(err.splitlines()) == 1


def test_animate_takes_a_quickstart_folder_and_its_seeds(quickstart, tmp_path):
    from avatarforge.animate.cli import animate_main, build_parser

    out = tmp_path / "a.png"
    argv = [str(quickstart), "--avatar", f"{quickstart}:7", "--seconds", "0.2", "--out", str(out)]
    assert animate_main(build_parser().parse_args(argv)) == 0
    assert out.is_file() and out.stat().st_size > 0
