"""Training config: presets, overrides with type coercion, error messages, CLI dry-run."""

from __future__ import annotations

import argparse

import pytest
import yaml

from avatarforge.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    build_train_config,
    find_preset,
    from_dict,
    list_presets,
    load_yaml,
    to_dict,
    to_yaml,
)
from avatarforge.train.cli import add_train_arguments, build_parser, train_main
from tests.conftest import make_packed


def test_every_preset_loads_and_validates():
    presets = list_presets()
    for model in ("dcgan", "cgan", "infogan", "stylegan"):
        assert presets.get(model), f"no presets for {model}"
    for model, resolutions in presets.items():
        for res in resolutions:
            path, exact = find_preset(model, res)
            assert exact and path is not None and path.name == f"{model}-{res}.yaml"
            cfg = from_dict(TrainConfig, load_yaml(path)).validate()
            assert cfg.model.name == model


def test_family_presets_carry_the_published_recipes():
    dc = build_train_config(cli={"model": {"name": "dcgan"}}, dataset_resolution=64)
    assert (dc.optim.g_lr, dc.optim.betas, dc.loss.kind) == (2e-4, (0.5, 0.999), "logistic")
    assert dc.preset == "dcgan-64.yaml" and dc.data.condition_on == []
    sg = build_train_config(cli={"model": {"name": "stylegan"}}, dataset_resolution=128)
    assert (sg.optim.g_lr, sg.optim.betas, sg.loss.r1_interval) == (2.5e-3, (0.0, 0.99), 16)
    assert sg.loss.r1_gamma > 0 and sg.preset == "stylegan-128.yaml"
    assert build_train_config(cli={"model": {"name": "cgan"}}).data.condition_on is None  # all categorical


def test_preset_follows_dataset_resolution(tmp_path):
    ds = make_packed(tmp_path / "ds", n=4, size=32)
    notes: list[str] = []
    cfg = build_train_config(cli={"model": {"name": "dcgan"}, "data": {"path": str(ds)}}, notes=notes)
    assert cfg.preset == "dcgan-32.yaml" and notes == ["preset: dcgan-32.yaml"]
    # No exact preset: the nearest resolution, with a note saying so.
    notes.clear()
    cfg = build_train_config(cli={"model": {"name": "cgan"}}, dataset_resolution=128, notes=notes)
    assert cfg.preset == "cgan-64.yaml" and "nearest" in notes[0]


def test_overrides_coerce_to_field_types():
    cfg = build_train_config(
        cli={"model": {"name": "dcgan"}},
        overrides=[
            "batch_size=16",
            "optim.g_lr=1e-3",  # YAML would read 1e-3 as a string; the field type decides
            "optim.betas=[0.1, 0.9]",
            "log.tensorboard=yes",
            "kimg=null",
            "minutes=2.5",
            "data.condition_on=hair_color,eye_color",
            "model.g_kwargs.base_channels=16",
            "desc=007",  # str fields stay text
            "ema.beta=0.99",
        ],
    )
    assert cfg.batch_size == 16 and isinstance(cfg.batch_size, int)
    assert cfg.optim.g_lr == 1e-3 and cfg.optim.betas == (0.1, 0.9)
    assert cfg.log.tensorboard is True and cfg.kimg is None and cfg.minutes == 2.5
    assert cfg.data.condition_on == ["hair_color", "eye_color"]
    assert cfg.model.g_kwargs["base_channels"] == 16 and cfg.desc == "007" and cfg.ema.beta == 0.99
    # Later layers win: --config file < overrides.
    assert apply_overrides({"seed": 1}, TrainConfig, ["seed=5"])["seed"] == 5


def test_unknown_key_names_close_matches():
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.glr'.*optim\.g_lr"):
        build_train_config(overrides=["optim.glr=1"])
    with pytest.raises(ConfigError, match=r"'batchsize'.*batch_size"):
        build_train_config(overrides=["batchsize=3"])
    with pytest.raises(ConfigError, match=r"unknown config key 'loss.gama'.*loss\.r1_gamma"):
        from_dict(TrainConfig, {"loss": {"gama": 1}})


def test_bad_values_name_the_field_and_valid_values():
    with pytest.raises(ConfigError, match=r"loss\.kind.*'softmax'.*valid values: logistic, hinge"):
        build_train_config(overrides=["loss.kind=softmax"])
    with pytest.raises(ConfigError, match=r"batch_size.*'many'.*int"):
        build_train_config(overrides=["batch_size=many"])
    with pytest.raises(ConfigError, match=r"perf\.amp.*valid values: auto, off, bf16, fp16"):
        build_train_config(overrides=["perf.amp=fp8"])
    with pytest.raises(ConfigError, match=r"optim\.betas.*2 items"):
        build_train_config(overrides=["optim.betas=[0.5]"])
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        build_train_config(overrides=["batch_size=0"])
    with pytest.raises(ConfigError, match="optim is a section"):
        build_train_config(overrides=["optim=3"])
    with pytest.raises(ConfigError, match="key=value"):
        build_train_config(overrides=["seed"])


def test_yaml_round_trip():
    cfg = build_train_config(cli={"model": {"name": "stylegan"}}, overrides=["seed=9"])
    again = from_dict(TrainConfig, yaml.safe_load(to_yaml(cfg)))
    assert again == cfg and to_dict(again) == to_dict(cfg)


def _run_cli(argv, capsys):
    args = build_parser().parse_args(argv)
    code = train_main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_dry_run_prints_resolved_config(tmp_path, capsys):
    ds = make_packed(tmp_path / "ds", n=4, size=32)
    argv = ["--data", str(ds), "seed=4", "--model", "stylegan", "--optim.g_lr=0.01", "--loss.kind", "hinge"]
    code, out, _ = _run_cli([*argv, "--kimg", "3", "--dry-run", "batch_size=8"], capsys)
    assert code == 0
    assert out.startswith("# preset: stylegan-32.yaml\n")
    cfg = from_dict(TrainConfig, yaml.safe_load(out))
    assert (cfg.seed, cfg.batch_size, cfg.kimg, cfg.optim.g_lr, cfg.loss.kind) == (4, 8, 3.0, 0.01, "hinge")
    assert cfg.data.path == str(ds) and cfg.model.name == "stylegan"


def test_cli_errors_exit_2_with_message(tmp_path, capsys):
    ds = make_packed(tmp_path / "ds", n=4, size=32)
    code, _, err = _run_cli(["--data", str(ds), "--model", "dcgan", "--dry-run", "optim.lrr=1"], capsys)
    assert code == 2 and "optim.lrr" in err and "did you mean" in err
    code, _, err = _run_cli(["--data", str(ds), "--dry-run"], capsys)
    assert code == 2 and "--model is required" in err
    code, _, err = _run_cli(["--data", str(ds), "--model", "dcgna", "--dry-run"], capsys)
    assert code == 2 and "unknown model 'dcgna'; did you mean: dcgan" in err


def test_add_train_arguments_works_as_a_subcommand():
    # The main CLI adds these flags to a sub-parser; --a.b=c must survive the top-level parser.
    top = argparse.ArgumentParser(prog="avatarforge")
    sub = top.add_subparsers(dest="command")
    add_train_arguments(sub.add_parser("train"))
    args = top.parse_args(
        ["train", "--data", "d", "--optim.d_lr=3e-4", "--model", "dcgan", "seed=2", "--dry-run"]
    )
    assert args.data == "d" and args.model == "dcgan" and args.dry_run
    assert args.overrides == ["optim.d_lr=3e-4", "seed=2"]


def test_overrides_are_accepted_anywhere_among_the_flags():
    import argparse

    from avatarforge.config import accept_overrides_anywhere, normalize_override_argv

    p = argparse.ArgumentParser()
    p.add_argument("--data")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("rest", nargs="*")
    argv = ["a.b=1", "--data", "d", "--x.y=2", "pos", "--z.w", "3", "--dry-run", "--k=4", "--", "--raw"]
    assert normalize_override_argv(argv, p) == [
        "--data", "d", "--dry-run", "a.b=1", "x.y=2", "pos", "z.w=3", "k=4", "--raw",
    ]  # fmt: skip
    ns = accept_overrides_anywhere(p).parse_args(["--x.y", "5", "--data", "d", "q=1"])
    assert (ns.data, ns.rest) == ("d", ["x.y=5", "q=1"])
    with pytest.raises(SystemExit):
        p.parse_args(["--unknown-flag"])  # still an argparse error, not an override


def test_layered_config_orders_file_cli_overrides_and_validates(tmp_path):
    from avatarforge.config import ConfigError, layered_config
    from avatarforge.style.train_cyclegan import CycleGANConfig

    f = tmp_path / "c.yaml"
    f.write_text("batch_size: 2\nkimg: 5\n")
    cfg = layered_config(CycleGANConfig, config_file=f, cli={"kimg": 7}, overrides=["seed=3"])
    assert (cfg.batch_size, cfg.kimg, cfg.seed) == (2, 7, 3)  # file < cli < key=value
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        layered_config(CycleGANConfig, overrides=["batch_size=0"])


def test_every_log_key_is_in_the_training_docs_config_table():
    """docs/training.md's config key table documents every ``log.*`` key (e.g. checkpoint_every_minutes)."""
    import dataclasses
    from pathlib import Path

    from avatarforge.config import LogConfig

    text = (Path(__file__).parents[2] / "docs" / "training.md").read_text()
    table = text[text.index("### Config keys") : text.index("## The run directory")]
    keys = " ".join(line.split("|")[1] for line in table.splitlines() if line.startswith("| `"))
    missing = [f.name for f in dataclasses.fields(LogConfig) if f"`log.{f.name}`" not in keys]
    assert missing == []
