"""The part segmenter's data, config checks, metrics and trainer (on the one engine)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from avatarforge.config import ConfigError
from avatarforge.data.part_pairs import PartBatches, build_part_pool
from avatarforge.data.procedural.schema import PART_NAMES
from avatarforge.models.parts import PartSegmenter
from avatarforge.runs import load_segmenter
from avatarforge.train.cli import build_parser, config_from_args
from avatarforge.train.families import family_of, make_trainer
from avatarforge.train.parts import PART_CLASS_WEIGHTS, SMALL_PARTS, part_metrics
from avatarforge.train.parts_config import build_parts_config

TINY = [
    "data.size=32",
    "data.pool=8",
    "data.heldout=3",
    "data.workers=0",
    "data.shift=1",
    "model.widths=[8,8]",
    "batch_size=4",
    "minutes=null",
    "kimg=0.032",
    "perf.amp=off",
    "perf.num_threads=1",
    "log.progress=false",
    "log.every_steps=2",
    "log.num_samples=2",
    "optim.lr=3e-3",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("parts-cache")


def _cfg(tmp_path: Path, cache: Path, *extra: str):
    return build_parts_config(
        overrides=[*TINY, f"runs_dir={tmp_path / 'runs'}", f"data.cache_dir={cache}", *extra]
    )


# ------------------------------------------------------------------------------------ data
def test_pool_is_cached_and_batches_are_a_function_of_seed_and_step(cache):
    pool = build_part_pool(3, 32, 0, target_scale=2, cache_dir=cache)
    assert pool.images.shape == (3, 32, 32, 4) and pool.parts.shape == (3, 64, 64)
    again = build_part_pool(3, 32, 0, target_scale=2, cache_dir=cache)  # read back from the cache
    assert np.array_equal(pool.images, again.images) and np.array_equal(pool.parts, again.parts)
    assert pool.parts.max() < len(PART_NAMES) and (pool.parts > 0).any()
    batches = PartBatches(pool.images, pool.parts, seed=5, degradation=None, shift=2)
    a, b, c = batches.batch(7, 6), batches.batch(7, 6), batches.batch(8, 6)
    assert a.x.shape == (6, 4, 32, 32) and a.parts.shape == (6, 64, 64) and a.parts.dtype == torch.int64
    assert torch.equal(a.x, b.x) and torch.equal(a.parts, b.parts) and not torch.equal(a.x, c.x)
    # Flips and shifts move the picture and its map together: the character's pixels (alpha
    # in the 2x-downsampled map's footprint) match the map's non-background pixels.
    drawn = a.x[:, 3] > -0.99
    fg = F.avg_pool2d((a.parts > 0).float()[:, None], 2)[:, 0] > 0.5
    assert (drawn == fg).float().mean() > 0.95


# ------------------------------------------------------------------------------------ config
def test_bad_config_values_name_the_field(tmp_path, cache):
    for override, msg in [
        ("model.out_scale=4", "model.out_scale: 4 is not supported; use 1 or 2"),
        ("model.widths=[8]", "model.widths: [8] needs at least 2 positive widths"),
        ("data.size=34", "data.size: 34 must be from 16 to 256 and a multiple of 4"),
        ("loss.class_weights=[1,2]", "loss.class_weights: needs 11 weights"),
        ("data.pool=0", "data.pool: 0 must be >= 1"),
        ("model.name=refiner", "model.name"),
    ]:
        with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")) as e:
            _cfg(tmp_path, cache, override)
        assert msg in str(e.value)


def test_cli_takes_the_parts_yaml_file():
    args = build_parser().parse_args(
        ["src/avatarforge/configs/parts-64px.yaml", "model.out_scale=1", "--minutes", "2", "--dry-run"]
    )
    cfg = config_from_args(args)
    assert family_of(cfg) == "parts" and cfg.model.out_scale == 1 and cfg.minutes == 2 and cfg.data.size == 64
    cfg = config_from_args(build_parser().parse_args(["--model", "parts", "batch_size=8"]))
    assert family_of(cfg) == "parts" and cfg.batch_size == 8
    with pytest.raises(ConfigError, match="--data"):
        config_from_args(build_parser().parse_args(["--model", "parts", "--data", "x"]))


def test_metrics_and_weights():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 11, (2, 16, 16)).astype(np.uint8)
    same = part_metrics(t, t)
    assert same["miou"] == 1.0 and same["acc"] == 1.0 and same["miou_face"] == 1.0
    worse = part_metrics(np.zeros_like(t), t)
    assert worse["iou_background"] < 0.2 and worse["iou_mouth"] == 0.0
    assert len(PART_CLASS_WEIGHTS) == len(PART_NAMES)
    small = [PART_NAMES.index(p) for p in SMALL_PARTS]
    assert min(PART_CLASS_WEIGHTS[i] for i in small) > max(PART_CLASS_WEIGHTS[:3])


# ------------------------------------------------------------------------------------ training
def _ce(model: PartSegmenter, batch) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model(batch.x), batch.parts))


def test_training_lowers_the_loss_and_resumes_exactly(tmp_path, cache):
    straight = make_trainer(_cfg(tmp_path, cache, "kimg=0.064"))
    run = straight.fit()
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in recs if r["kind"] == "train"]
    fixed = straight.batches.batch(10**6, 16)
    untrained = PartSegmenter(**straight.G.config).eval()
    before, after = _ce(untrained, fixed), _ce(straight.G.eval(), fixed)
    assert after < 0.9 * before, (before, after)
    metric = [r for r in recs if r["kind"] == "metric"]
    assert metric and "eval_miou" in metric[-1] and "eval_face_found" in metric[-1]
    assert list((run / "samples").glob("parts_*.png"))

    half = make_trainer(_cfg(tmp_path, cache, "kimg=0.032")).fit()
    resumed = make_trainer(_cfg(tmp_path, cache, "kimg=0.064"), resume=half).fit()
    assert resumed == half
    a, b = run / "checkpoints" / "ckpt-00000016", half / "checkpoints" / "ckpt-00000016"
    for prefix in ("g", "g_ema"):
        wa, wb = load_file(a / f"{prefix}_model.safetensors"), load_file(b / f"{prefix}_model.safetensors")
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), prefix

    seg = load_segmenter(run)  # EMA weights, from safetensors + JSON config
    assert isinstance(seg, PartSegmenter) and not seg.training and seg.out_scale == 2
    ema = straight.G_ema.state_dict()
    assert all(torch.equal(v, ema[k]) for k, v in seg.state_dict().items())
    with pytest.raises(ValueError, match="which must be"):
        load_segmenter(run, which="d")
