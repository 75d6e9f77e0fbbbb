"""``avatarforge quickstart``: end to end with tiny models, resume, interrupts, bad input, CLI.

The module fixture runs one tiny quickstart (32 px, 48 avatars, a few seconds of training)
that is stopped by a signal during generator training and then rerun, so every test below
looks at the outputs of an interrupted-and-resumed quickstart.
"""

from __future__ import annotations

import functools
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from avatarforge.cli import main
from avatarforge.quickstart import (
    MANIFEST_NAME,
    QuickstartError,
    QuickstartInterrupted,
    read_manifest,
    run_quickstart,
)
from avatarforge.quickstart import pipeline as qs_pipeline
from avatarforge.quickstart.pipeline import DEFAULT_CONDITION_ON, GENERATOR_SHARE, STATE_NAME

TINY_G = [
    "model.kwargs.channel_base=256",
    "model.kwargs.channel_max=16",
    "model.z_dim=16",
    "model.g_kwargs.w_dim=16",
    "model.g_kwargs.mapping_layers=2",
    "batch_size=8",
    "log.every_steps=2",
    "log.num_samples=4",
    "perf.num_threads=1",
]
#: A refiner of a few thousand weights on a pool of 12 renders (256 px for the 32-px data).
TINY_R = [
    "data.pool=12",
    "data.heldout=2",
    "data.crop=64",
    "data.workers=0",
    "model.width=8",
    "model.blocks=1",
    "model.d_width=8",
    "model.d_layers=2",
    "batch_size=4",
    "log.sample_every_kimg=0",
]
#: A part segmenter of a few thousand weights on a pool of 48 renders.
TINY_P = [
    "data.pool=48",
    "data.heldout=8",
    "data.workers=0",
    "model.widths=[8,16]",
    "batch_size=8",
]
TINY_A = [
    "data.identities=6",
    "data.expressions=3",
    "data.heldout_identities=2",
    "log.eval_identities=1",
    "log.num_samples=2",
    "perf.num_threads=1",
    "model.widths=[4,8,8,16]",
    "model.ctrl_hidden=16",
    "model.d_width=8",
    "batch_size=8",
    "data.workers=0",
]
OUTPUTS = (
    "samples.png",
    "attributes.png",
    "interpolation.gif",
    "avatar.webp",
    "avatar.gif",
    "avatar.png",
    "avatars-512.webp",
    "metrics.json",
    "report.html",
    MANIFEST_NAME,
)


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    """A very small avatar attribute net (trained in about a second) standing in for the default one."""
    from avatarforge.eval.avatar_net import AvatarExtractor, AvatarNetRecipe

    recipe = AvatarNetRecipe(
        train_images=96, heldout_images=16, epochs=1.0, width=8, embed_dim=32, batch_size=32
    )
    return AvatarExtractor(recipe=recipe, cache_dir=tmp_path_factory.mktemp("avatar-cache"))


def tiny_kwargs(tmp: Path, extractor) -> dict:
    return dict(
        model="stylegan",
        minutes=0.1,  # 4.2 s generator, 1.2 s animator
        n_images=48,
        size=32,
        generator_overrides=TINY_G,
        animator_overrides=[*TINY_A, f"data.cache_dir={tmp / 'pairs'}"],
        refiner_overrides=[*TINY_R, f"data.cache_dir={tmp / 'refiner-pool'}"],
        parts_overrides=[*TINY_P, f"data.cache_dir={tmp / 'parts-pool'}"],
        eval_images=24,
        extractor=extractor,
        grid_seeds=8,
        interp_frames=6,
        anim_seconds=1.0,
        anim_fps=10.0,
        upscale=1,
        progress=False,
    )


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, extractor):
    """A tiny quickstart interrupted by a stop request at generator step 3, then rerun."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("qs")
    out = tmp / "out"
    kw = tiny_kwargs(tmp, extractor)

    def stop_at_3(stage, trainer):
        if stage == "generator" and trainer.step == 3:
            trainer.stop.request("SIGINT")

    with pytest.raises(QuickstartInterrupted, match="rerun"):
        run_quickstart(out, _step_hook=stop_at_3, **kw)
    state = json.loads((out / STATE_NAME).read_text())
    interrupted = {"stages": sorted(state["stages"]), "run": state["runs"]["generator"]["run"]}
    result = run_quickstart(out, **kw)
    return {"out": out, "tmp": tmp, "kw": kw, "result": result, "interrupted": interrupted}


def test_interrupted_training_resumes_in_the_same_run(resumed):
    out, res, before = resumed["out"], resumed["result"], resumed["interrupted"]
    # The interrupted call finished only the data stage and left a checkpointed generator run.
    assert before["stages"] == ["data"]
    assert res.generator_run == out / before["run"]
    assert "data" in res.skipped and "generator" in res.ran
    state = json.loads((out / STATE_NAME).read_text())
    ckpt_step = int(state["stages"]["generator"]["checkpoint"].split("-")[1])
    assert ckpt_step > 3  # training continued past the interrupt's checkpoint
    assert len(list((out / "runs").glob("*-generator"))) == 1


def test_every_output_exists_and_decodes(resumed):
    out = resumed["out"]
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    grid = Image.open(out / "samples.png")
    assert grid.size[0] > 4 * 32
    attrs = np.asarray(Image.open(out / "attributes.png").convert("RGB"))
    from avatarforge.data.procedural import HAIR_COLORS

    # The default conditioning: every attribute a transparent avatar draws, not the backdrop's.
    assert len(DEFAULT_CONDITION_ON) == 12 and {"hair_color", "eye_color", "eyebrows"} <= set(
        DEFAULT_CONDITION_ON
    )
    assert not {"background_kind", "background_color"} & set(DEFAULT_CONDITION_ON)
    # One row per attribute: height = rows * (32 px cell + 14 px caption + 2) + 2; the widest
    # row holds the 11 hair colours: a 2 px gap each, after the names column.
    assert attrs.shape[0] == len(DEFAULT_CONDITION_ON) * 48 + 2
    assert attrs.shape[1] > len(HAIR_COLORS) * 34
    # Within a row only the attribute changes: the hair row's cells differ from each other.
    first = attrs[2:34]
    cells = [first[:, -(k + 1) * 34 : -(k + 1) * 34 + 32] for k in range(2)]
    assert not np.array_equal(cells[0], cells[1])
    gif = Image.open(out / "interpolation.gif")
    assert gif.n_frames >= 2


def test_animation_is_transparent_and_moves(resumed):
    out = resumed["out"]
    webp = Image.open(out / "avatar.webp")
    assert webp.n_frames >= 2  # identical consecutive frames may be merged
    frames = []
    for i in range(webp.n_frames):
        webp.seek(i)
        frames.append(np.asarray(webp.convert("RGBA")))
    assert frames[0].shape == (256, 256, 4)  # the refiner's size: the rig animates the large avatar
    # The alpha channel is the model's own (an untrained tiny model's is not crisp): what
    # matters is that it survived into the file rather than being flattened to opaque.
    assert webp.mode == "RGBA"
    assert frames[0][..., 3].min() < 128
    assert any(not np.array_equal(frames[0], f) for f in frames[1:])
    gif = Image.open(out / "avatar.gif")
    assert gif.n_frames >= 2 and "transparency" in gif.info


def test_metrics_json_holds_the_numbers(resumed):
    m = json.loads((resumed["out"] / "metrics.json").read_text())
    ev = m["evaluation"]
    for key in ("swd", "fid_avatar", "attr_acc", "attr_acc_hair_color"):
        assert isinstance(ev[key], float) and math.isfinite(ev[key]), key
    assert 0.0 <= ev["attr_acc"] <= 1.0
    from avatarforge.data.procedural import HAIR_COLORS

    assert m["chance"]["attr_acc_hair_color"] == pytest.approx(1 / len(HAIR_COLORS), abs=1e-3)
    # Every conditioned attribute has its accuracy, chance, target and the judge's own accuracy.
    attrs = m["attributes"]
    assert set(attrs) == set(DEFAULT_CONDITION_ON)
    assert attrs["hair_color"]["target"] == 0.8 and attrs["eye_color"]["target"] == 0.8
    assert attrs["accessory"]["target"] == pytest.approx(3 / 7, abs=1e-3)
    for a in attrs.values():
        assert 0.0 <= a["measured"] <= 1.0 and 0.0 <= a["classifier_on_renders"] <= 1.0
    html = (resumed["out"] / "report.html").read_text()
    assert "<code>eyebrows</code>" in html and "classifier on renders" in html
    assert m["generator"]["kimg"] > 0 and m["generator"]["train_seconds"] > 0
    assert m["animator"]["kimg"] > 0 and math.isfinite(m["animator"]["eval_ratio"])
    assert m["refiner"]["kimg"] > 0 and math.isfinite(m["refiner"]["psnr"])
    assert m["avatar"]["size"] == 256  # the 32-px generator x8
    assert set(m["stage_seconds"]) >= {
        "data", "generator", "refiner", "parts", "evaluate", "animator", "samples", "animation",
    }  # fmt: skip
    assert resumed["result"].metrics == m


def test_report_is_self_contained_and_shows_the_metrics(resumed):
    out = resumed["out"]
    text = (out / "report.html").read_text("utf-8")
    # Everything embedded: no resource loaded from anywhere; the only http links are the
    # local server's pages the "how to continue" section points to.
    sources = re.findall(r"""\bsrc\s*=\s*["']([^"']*)""", text)
    assert len(sources) == len(re.findall(r"\bsrc\s*=", text)) >= 5
    assert all(s.startswith("data:") for s in sources)
    assert "<link" not in text and "<script" not in text and "@import" not in text
    for url in re.findall(r"""href\s*=\s*["']([^"']+)""", text):
        assert url.startswith("http://127.0.0.1:8000/"), url
    # samples, data, attributes, 512-px avatars, animation, interpolation; the VRM turntable
    # when the part map had a face to build the model from
    assert text.count('src="data:image/') == 6 + (out / "avatar.vrm").is_file()
    m = json.loads((out / "metrics.json").read_text())
    assert f"{m['evaluation']['swd']:.4g}" in text
    assert "<svg" in text and "<polyline" in text  # loss curves
    for cmd in ("avatarforge serve", "/studio", "/overlay", "avatarforge data prepare", "avatarforge train"):
        assert cmd in text


def test_manifest_names_loadable_runs(resumed):
    from avatarforge.animate import load_animator
    from avatarforge.data.procedural import SCHEMA
    from avatarforge.train import load_generator

    man = read_manifest(resumed["out"])
    G = load_generator(man["generator_run"])
    # conditioned on every attribute of DEFAULT_CONDITION_ON, in that order
    assert G.label_dims == [len(SCHEMA[n].values) for n in DEFAULT_CONDITION_ON]
    assert load_animator(man["animator_run"]).resolution == 32
    from avatarforge.runs import load_refiner

    assert load_refiner(man["refiner_run"]).scale == 8
    from avatarforge.runs import load_segmenter

    assert load_segmenter(man["parts_run"]).channels == 4
    raw = json.loads((resumed["out"] / MANIFEST_NAME).read_text())
    assert not Path(raw["generator_run"]).is_absolute()  # relative: the folder can move
    # `avatarforge serve OUT` finds both models through quickstart.json.
    state = pytest.importorskip("avatarforge.serve.state")
    gen, anim = state.resolve_run(resumed["out"])
    assert gen.resolve() == Path(man["generator_run"]) and anim.resolve() == Path(man["animator_run"])


def test_rerun_skips_every_stage_and_keeps_the_outputs(resumed):
    out = resumed["out"]
    before = {n: (out / n).read_bytes() for n in OUTPUTS}
    again = run_quickstart(out, **resumed["kw"])
    assert again.ran == [] and len(again.skipped) == 9
    assert {n: (out / n).read_bytes() for n in OUTPUTS} == before


def test_failure_in_a_later_stage_then_rerun_completes(resumed, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(resumed["out"], out)
    # a new grid size (samples) and frame rate (animation): both and the report rerun
    kw = {**resumed["kw"], "upscale": 2, "anim_fps": 8.0}
    with pytest.raises(RuntimeError, match="injected failure in stage 'animation'"):
        run_quickstart(out, _fail_at="animation", **kw)
    state = json.loads((out / STATE_NAME).read_text())
    assert (
        state["stages"]["samples"]["inputs"]
        != json.loads((resumed["out"] / STATE_NAME).read_text())["stages"]["samples"]["inputs"]
    )
    done = run_quickstart(out, **kw)
    assert done.ran == ["animation", "report"]  # samples finished before the failure: kept
    assert (out / "report.html").is_file()


def test_more_minutes_trains_further_in_the_same_run(resumed, tmp_path):
    out = tmp_path / "longer"
    shutil.copytree(resumed["out"], out)
    first = json.loads((out / STATE_NAME).read_text())["stages"]["generator"]
    kw = {**resumed["kw"], "minutes": 0.15}
    res = run_quickstart(out, **kw)
    assert {"generator", "animator", "evaluate", "report"} <= set(res.ran) and "data" in res.skipped
    later = json.loads((out / STATE_NAME).read_text())["stages"]["generator"]
    assert later["run"] == first["run"] and later["kimg"] > first["kimg"]
    assert later["train_seconds"] >= 0.15 * GENERATOR_SHARE * 60 * 0.99


@pytest.mark.parametrize("minutes", [0, -1, float("nan"), float("inf"), "10", True])
def test_bad_minutes_is_a_clear_error(minutes, tmp_path):
    with pytest.raises(QuickstartError, match=r"--minutes must be"):
        run_quickstart(tmp_path / "out", minutes=minutes, progress=False)
    assert not (tmp_path / "out").exists()


def test_bad_out_is_a_clear_error(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(QuickstartError, match=r"--out .* is a file"):
        run_quickstart(f, minutes=1, progress=False)
    d = tmp_path / "busy"
    d.mkdir()
    (d / "mine.txt").write_text("x")
    with pytest.raises(QuickstartError, match="not a quickstart"):
        run_quickstart(d, minutes=1, progress=False)


def test_cli_help_and_bad_minutes(capsys):
    with pytest.raises(SystemExit) as e:
        main(["quickstart", "--help"])
    assert e.value.code == 0
    assert "--minutes" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["quickstart", "--minutes", "-2"])
    assert e.value.code == 2
    assert "--minutes: must be > 0" in capsys.readouterr().err


def test_cli_runs_the_quickstart_and_demo_is_an_alias(resumed, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cli"
    shutil.copytree(resumed["out"], out)
    kw = {k: v for k, v in resumed["kw"].items() if k not in ("minutes", "n_images", "progress")}
    calls = []
    real = functools.partial(qs_pipeline.run_quickstart, **kw)

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    # The CLI's own flags go through; the tiny model settings (no CLI flags) are added here.
    monkeypatch.setattr(qs_pipeline, "run_quickstart", spy)
    assert (
        main(["quickstart", "--out", str(out), "--minutes", "0.1", "--images", "48", "--model", "stylegan"])
        == 0
    )
    printed = capsys.readouterr().out
    assert str(out / "report.html") in printed and "quickstart done" in printed
    assert calls[-1]["minutes"] == 0.1 and calls[-1]["n_images"] == 48 and calls[-1]["progress"] is True
    assert (
        main(
            [
                "demo",
                "--out",
                str(out),
                "--minutes",
                "0.1",
                "--images",
                "48",
                "--model",
                "stylegan",
                "--quiet",
            ]
        )
        == 0
    )
    assert calls[-1]["progress"] is False


def test_a_call_interrupted_in_its_first_stage_is_resumable(tmp_path, extractor):
    out = tmp_path / "early"
    kw = tiny_kwargs(tmp_path, extractor)
    for _ in range(2):  # the second call is not refused as "a non-empty directory"
        with pytest.raises(RuntimeError, match="injected failure in stage 'data'"):
            run_quickstart(out, _fail_at="data", **kw)
    assert (out / STATE_NAME).is_file() and (out / "data" / "manifest.json").is_file()


@pytest.mark.slow
@pytest.mark.timeout(1200)  # minutes of training, evaluation and rendering on a busy 2-core machine
def test_default_settings_for_one_minute(tmp_path):
    """The real configuration (64 px, stylegan-64 preset, default animator, the cached or
    freshly trained default avatar classifier), shortened to one minute and 300 avatars."""
    res = run_quickstart(tmp_path / "qs", minutes=1.0, n_images=300, progress=False)
    for name in OUTPUTS:
        assert (res.out / name).is_file(), name
    m = res.metrics
    assert m["generator"]["train_seconds"] >= 0.7 * 60 * 0.99
    assert m["animator"]["train_seconds"] >= 0.2 * 60 * 0.99
    assert 0.0 <= m["evaluation"]["attr_acc_hair_color"] <= 1.0
    assert math.isfinite(m["evaluation"]["fid_avatar"]) and math.isfinite(m["evaluation"]["swd"])
    assert Image.open(res.out / "avatar.webp").size == (64, 64)


def test_cgan_generator_in_a_new_run(resumed, tmp_path):
    """``model="cgan"`` (what ``auto`` picks on a CPU): a new generator run, everything downstream redone."""
    out = tmp_path / "cgan"
    shutil.copytree(resumed["out"], out)
    tiny_cgan = ["model.g_kwargs.base_channels=8", "model.d_kwargs.base_channels=8", "log.every_steps=2"]
    kw = {**resumed["kw"], "model": "cgan", "generator_overrides": tiny_cgan}
    res = run_quickstart(out, **kw)
    assert res.ran == ["generator", "evaluate", "samples", "animation", "report"]
    assert res.generator_run != resumed["result"].generator_run  # the stylegan run is kept beside it
    assert res.metrics["generator"]["model"] == "cgan" and res.metrics["generator"]["kimg"] > 0
    assert json.loads((out / MANIFEST_NAME).read_text())["model"] == "cgan"
    assert "DCGAN" in (out / "report.html").read_text("utf-8")


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(QuickstartError, match="--model must be one of auto, stylegan, cgan"):
        run_quickstart(tmp_path / "out", model="biggan", progress=False)


def test_named_sliders_are_written_for_the_studio(resumed):
    # The quickstart names eight SeFa directions with the avatar classifier and saves them in
    # the generator run, where `serve` finds them (loaded for this model only).
    from avatarforge.generate import GeneratorPipeline
    from avatarforge.generate.directions import load_directions

    out = resumed["out"]
    man = read_manifest(out)
    pipe = GeneratorPipeline.from_pretrained(man["generator_run"], refiner=None, segmenter=None)
    dirs = load_directions(Path(man["generator_run"]) / "directions.json", pipe)
    assert [d.id for d in dirs] == [f"sefa{i}" for i in range(8)]
    for d in dirs:
        # Named after the attribute it changes most when that change is large enough, else its id.
        assert d.effect is not None and set(d.effect) == {"attribute", "class", "delta"}
        assert d.name == d.id or d.name.rstrip("~0123456789").endswith(("+", "-"))
    state = json.loads((out / STATE_NAME).read_text())
    assert "runs/00000-generator/directions.json" in state["stages"]["samples"]["outputs"]
