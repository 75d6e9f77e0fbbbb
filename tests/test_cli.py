"""CLI tests: every subcommand's --help, the data commands end to end, and error handling."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from avatarforge.cli import build_parser, main

SUBCOMMANDS = [
    ["quickstart"],
    ["demo"],
    ["serve"],
    ["data"],
    ["data", "builtin"],
    ["data", "prepare"],
    ["data", "info"],
    ["data", "grid"],
    ["data", "render"],
    ["train"],
    ["vae"],
    ["vae", "sample"],
    ["post"],
    ["eval"],
    ["generate"],
    ["interpolate"],
    ["edit"],
    ["edit", "variations"],
    ["style"],
    ["animate"],
    ["models"],
]


@pytest.mark.parametrize("cmd", SUBCOMMANDS, ids=lambda c: " ".join(c))
def test_every_subcommand_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert "usage: avatarforge" in capsys.readouterr().out


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "avatarforge", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("avatarforge ")


def test_closed_stdout_pipe_exits_quietly():
    """``avatarforge post --list-ops | head -1``: a reader that stops early is no error."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe now fails with EPIPE
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "avatarforge", "post", "--list-ops"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_data_builtin_info_grid_round_trip(tmp_path, capsys):
    ds = tmp_path / "ds"
    assert main(["data", "builtin", str(ds), "--n", "12", "--size", "32", "--workers", "1", "--quiet"]) == 0
    assert (ds / "preview.png").is_file()
    images = np.load(ds / "images.npy")
    assert images.shape == (12, 32, 32, 4)
    assert str(ds) in capsys.readouterr().out

    assert main(["data", "info", str(ds), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["count"] == 12 and info["channels"] == 4
    assert sum(info["labels"]["hair_color"]["counts"].values()) == 12

    assert main(["data", "grid", str(ds), str(tmp_path / "g.png"), "--n", "4"]) == 0
    grid = Image.open(tmp_path / "g.png")
    assert grid.size == (2 * 32 + 3 * 2, 2 * 32 + 3 * 2)


def test_data_builtin_refuses_existing_output_without_overwrite(tmp_path, capsys):
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "keep.txt").write_text("precious")
    with pytest.raises(SystemExit) as e:
        main(["data", "builtin", str(ds), "--n", "2", "--size", "32", "--quiet"])
    assert e.value.code == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (ds / "keep.txt").read_text() == "precious"


def test_data_render_with_attrs_and_bad_attrs(tmp_path, capsys):
    out = tmp_path / "a.png"
    assert (
        main(["data", "render", str(out), "--seed", "3", "--size", "64", "--attrs", "hair_color=pink"]) == 0
    )
    assert "hair_color=pink" in capsys.readouterr().out
    assert Image.open(out).mode == "RGBA"
    with pytest.raises(SystemExit) as e:
        main(["data", "render", str(out), "--attrs", "hair_color=plaid"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "plaid" in err and "pink" in err  # names the bad value and lists the valid ones
    with pytest.raises(SystemExit):
        main(["data", "render", str(out), "--attrs", "hair_color"])
    assert "name=value" in capsys.readouterr().err


def test_data_prepare_cli_reports_skips(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (48, 40), (200, 30, 30)).save(src / "ok.png")
    (src / "broken.jpg").write_bytes(b"not a jpeg at all")
    out = tmp_path / "out"
    assert main(["data", "prepare", str(src), str(out), "--size", "32", "--workers", "1", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "report" in text
    report = json.loads((out / "report.json").read_text())
    assert len(report["skipped"]) == 1 and report["skipped"][0]["path"].endswith("broken.jpg")
    img = np.load(out / "images.npy")
    assert img.shape == (1, 32, 32, 4) and tuple(img[0, 16, 16]) == (200, 30, 30, 255)


def test_data_info_on_a_non_dataset_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", "info", str(tmp_path)])
    assert e.value.code == 2
    assert "avatarforge data prepare" in capsys.readouterr().err


def test_models_lists_every_registered_family(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("dcgan", "cgan", "infogan", "stylegan"):
        assert name in out


def test_parser_is_buildable_for_docs():
    assert build_parser().prog == "avatarforge"


def test_train_points_translation_models_to_their_own_command(capsys):
    assert main(["train", "--data", "x", "--model", "cyclegan"]) == 2
    assert "avatarforge style train" in capsys.readouterr().err


def test_package_functions_win_over_submodules_of_the_same_name():
    # `avatarforge.eval.evaluate` is both a function and a module; importing the module first
    # (as the quickstart does) must not replace the package's function by the module.
    code = (
        "import avatarforge.eval.evaluate, avatarforge.generate.variations, avatarforge.generate.invert\n"
        "from avatarforge.eval import evaluate\n"
        "from avatarforge.generate import variations, invert, interpolate\n"
        "import avatarforge.generate.interpolate\n"
        "import avatarforge.generate as g\n"
        "assert all(callable(f) and not hasattr(f, '__path__') and f.__class__.__name__ == 'function'\n"
        "           for f in (evaluate, variations, invert, interpolate, g.interpolate)), 'shadowed'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
