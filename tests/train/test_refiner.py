"""The refiner's pairs, degradations, config checks and trainer (on the one engine)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from avatarforge.config import ConfigError
from avatarforge.data.refine_pairs import (
    Degradation,
    RefinePairs,
    area_downsample,
    build_render_pool,
    degrade,
)
from avatarforge.models.refiner import Refiner
from avatarforge.runs import load_refiner
from avatarforge.train.cli import build_parser, config_from_args
from avatarforge.train.families import family_of, make_trainer
from avatarforge.train.refiner import refiner_metrics
from avatarforge.train.refiner_config import build_refiner_config
from tests.conftest import make_packed

TINY = [
    "data.size=64",
    "data.scale=4",
    "data.crop=32",
    "data.pool=6",
    "data.heldout=2",
    "data.workers=0",
    "model.width=8",
    "model.blocks=1",
    "model.d_width=8",
    "model.d_layers=2",
    "batch_size=4",
    "minutes=null",
    "kimg=0.048",
    "perf.amp=off",
    "perf.num_threads=1",
    "log.progress=false",
    "log.every_steps=2",
    "log.num_samples=2",
    "loss.adv_start_kimg=0.016",
    "loss.adv_ramp_kimg=0.016",
    "optim.lr=3e-3",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("refiner-cache")


def _cfg(tmp_path: Path, cache: Path, *extra: str):
    return build_refiner_config(
        overrides=[*TINY, f"runs_dir={tmp_path / 'runs'}", f"data.cache_dir={cache}", *extra]
    )


# ------------------------------------------------------------------------------------ pairs
def test_pool_is_cached_and_pairs_are_a_function_of_seed_and_step(cache):
    pool = build_render_pool(3, 64, 0, cache_dir=cache)
    assert pool.images.shape == (3, 64, 64, 4) and pool.parts.shape == (3, 64, 64)
    again = build_render_pool(3, 64, 0, cache_dir=cache)  # read back from the cache
    assert np.array_equal(pool.images, again.images) and np.array_equal(pool.parts, again.parts)
    pairs = RefinePairs(pool.images, pool.parts, scale=4, crop=32, seed=5, degradation=None)
    a, b, c = pairs.batch(7, 4), pairs.batch(7, 4), pairs.batch(8, 4)
    assert a.lr.shape == (4, 4, 8, 8) and a.hr.shape == (4, 4, 32, 32) and a.parts.shape == (4, 32, 32)
    assert torch.equal(a.hr, b.hr) and torch.equal(a.parts, b.parts) and not torch.equal(a.hr, c.hr)
    assert torch.allclose(a.lr, area_downsample(a.hr, 4))  # clean inputs are the area downsample
    assert (a.hr[:, 3] > 0).any()  # crops find the character


def test_degradations_are_seeded_and_do_what_they_say():
    x = torch.full((2, 4, 16, 16), -1.0)
    x[:, :, 4:12, 4:12] = torch.tensor([0.2, -0.4, 0.6, 1.0])[:, None, None]  # an opaque square
    strong = Degradation(specks_prob=1.0, specks=0.5, alpha_dip=0.1, noise_prob=1.0, blur_prob=1.0)
    a = degrade(x, strong, torch.Generator().manual_seed(1))
    b = degrade(x, strong, torch.Generator().manual_seed(1))
    c = degrade(x, strong, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    alpha = a[:, 3].add(1).div(2)
    outside = torch.ones(16, 16, dtype=torch.bool)
    outside[2:14, 2:14] = False  # beyond the blur's reach
    assert (alpha[:, outside] > 0.01).any() and alpha[:, outside].max() < 0.36  # faint specks
    assert alpha[:, 7:9, 7:9].max() < 1.0  # the body is a little transparent, as a GAN draws it
    off = Degradation(blur_prob=0, noise_prob=0, blocky_prob=0, color=0, specks_prob=0, alpha_dip=0)
    assert torch.allclose(degrade(x, off, torch.Generator().manual_seed(3)), x, atol=1e-5)


def test_metrics():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 256, (2, 16, 16, 4), dtype=np.uint8)
    t[..., 3] = 255
    same = refiner_metrics(t, t, t[..., 0] % 3, t[..., 0] % 3)
    assert same["psnr"] > 100 and same["sharpness"] == pytest.approx(1.0) and same["part_acc"] == 1.0
    flat = np.broadcast_to(t.mean((1, 2), keepdims=True).astype(np.uint8), t.shape)
    assert refiner_metrics(flat, t)["sharpness"] < 0.01


# ------------------------------------------------------------------------------------ config
def test_bad_config_values_name_the_field(tmp_path, cache):
    for override, msg in [
        ("data.scale=3", "data.scale: 3 is not supported; use 2, 4 or 8"),
        ("data.size=66", "data.size: 66 is not a multiple of data.scale=4; use 64 or 68"),
        ("data.crop=30", "data.crop: 30 must be a multiple of data.scale=4"),
        ("model.up_widths=[8]", "model.up_widths: needs 2"),
        ("model.name=dcgan", "model.name"),
    ]:
        with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")) as e:
            _cfg(tmp_path, cache, override)
        assert msg in str(e.value)
    packed = make_packed(tmp_path / "small", n=4, size=32)
    with pytest.raises(
        ConfigError, match=r"data\.source: the data set's images are 32px, smaller than data\.size=64"
    ):
        make_trainer(_cfg(tmp_path, cache, f"data.source={packed}")).setup()


def test_cli_takes_a_refiner_yaml_file(tmp_path):
    args = build_parser().parse_args(
        ["src/avatarforge/configs/refiner-512px.yaml", "data.scale=4", "--minutes", "2", "--dry-run"]
    )
    cfg = config_from_args(args)
    assert family_of(cfg) == "refiner" and cfg.data.scale == 4 and cfg.minutes == 2 and cfg.data.size == 512
    args = build_parser().parse_args(
        ["--model", "refiner", "--data", str(tmp_path), "data.size=96", "data.scale=2", "data.crop=64"]
    )
    cfg = config_from_args(args)
    assert cfg.data.source == str(tmp_path) and cfg.data.size == 96


# ------------------------------------------------------------------------------------ training
def _loss(model: Refiner, batch) -> float:
    from avatarforge.train.refiner import _pm

    out = _pm(model(batch.lr))
    hr = _pm(batch.hr)
    return float((out - hr).abs().mean())


def _weights(ckpt: Path, prefix: str) -> dict[str, torch.Tensor]:
    return load_file(ckpt / f"{prefix}_model.safetensors")


def test_training_lowers_the_loss_and_resumes_exactly(tmp_path, cache):
    straight = make_trainer(_cfg(tmp_path, cache, "kimg=0.096"))
    run = straight.fit()
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["kind"] == "train"]
    assert "loss_d" in train[-1] and "loss_d" not in train[0]  # D on after the warm-up
    # The loss on fixed held-back pairs: the trained refiner against an untrained one (bilinear).
    fixed = straight.pairs.batch(10**6, 32)
    untrained = Refiner(**straight.G.config).eval()
    with torch.no_grad():
        before, after = (_loss(m, fixed) for m in (untrained, straight.G.eval()))
    assert after < 0.95 * before, (before, after)
    assert any(r["kind"] == "metric" and "eval_psnr" in r and "eval_part_acc" in r for r in recs)
    assert list((run / "samples").glob("refine_*.png"))

    half = make_trainer(_cfg(tmp_path, cache, "kimg=0.048")).fit()
    resumed = make_trainer(_cfg(tmp_path, cache, "kimg=0.096"), resume=half).fit()
    assert resumed == half
    a, b = run / "checkpoints" / "ckpt-00000024", half / "checkpoints" / "ckpt-00000024"
    for prefix in ("g", "g_ema", "d"):
        wa, wb = _weights(a, prefix), _weights(b, prefix)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), prefix

    r = load_refiner(run)  # EMA weights, from safetensors + JSON config
    assert isinstance(r, Refiner) and not r.training and r.scale == 4 and r.part_classes == 11
    ema = straight.G_ema.state_dict()
    assert all(torch.equal(v, ema[k]) for k, v in r.state_dict().items())
    with pytest.raises(ValueError, match="which must be"):
        load_refiner(run, which="d")


def test_trains_on_a_packed_data_set(tmp_path, cache):
    packed = make_packed(tmp_path / "rgb", n=10, size=32)
    tr = make_trainer(
        _cfg(
            tmp_path,
            cache,
            f"data.source={packed}",
            "data.size=32",
            "data.scale=2",
            "data.crop=16",
            "kimg=0.016",
        )
    )
    run = tr.fit()
    assert tr.G.channels == 3 and tr.G.parts is None and tr.heldout_images.shape == (2, 32, 32, 3)
    cfg = json.loads((run / "config.json").read_text())
    assert Path(cfg["data"]["source"]).is_absolute()


def test_part_class_weights_cover_every_part():
    from avatarforge.data.procedural.schema import PART_NAMES
    from avatarforge.train.refiner import PART_CLASS_WEIGHTS

    assert len(PART_CLASS_WEIGHTS) == len(PART_NAMES)
    small = [PART_NAMES.index(p) for p in ("eye_white", "iris", "eye_line", "eyebrow", "mouth")]
    assert min(PART_CLASS_WEIGHTS[i] for i in small) > max(PART_CLASS_WEIGHTS[:3])
