"""The avatar attribute net: accuracy on held-out procedural avatars, determinism, caching."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
import torch

from avatarforge.data import procedural as P
from avatarforge.eval import avatar_net as A
from avatarforge.eval.avatar_net import (
    DEFAULT_RECIPE,
    AvatarExtractor,
    load_or_train_avatar_net,
    train_avatar_net,
)
from tests.eval.conftest import procedural_images

# Outcome depends on trained weights / float rounding: rerun by `make test-numerics-fp32`.
pytestmark = pytest.mark.numerics

# A few seconds of training: enough to check plumbing, determinism and the cache.
TINY = dataclasses.replace(DEFAULT_RECIPE, train_images=96, heldout_images=32, epochs=1.0, batch_size=32)


def _state_hash(net: torch.nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for k, v in net.state_dict().items():
        h.update(k.encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()


def test_heldout_accuracy(avatar_extractor, record_number):
    """Floors set below the measured spread with a margin.

    Measured (tools/numerics_spread.py, docs/testing.md; bf16 and fp32/avx2 kernels, 1 and 2
    threads, idle and loaded, recipe seeds 0-3): hair 0.998-1.000, eye 0.807-0.841 (0.984-0.992
    with open eyes), skin 0.997-1.000, outfit colour 0.999-1.000, hair style 0.958-0.969.
    """
    rep = avatar_extractor.report
    acc = rep["accuracy"]
    print("held-out accuracy:", json.dumps(acc), "eye_color_eyes_open:", rep["eye_color_eyes_open"])
    for k, v in acc.items():
        record_number(k, v)
    record_number("eye_color_eyes_open", rep["eye_color_eyes_open"])
    assert acc["hair_color"] >= 0.95
    assert acc["eye_color"] >= 0.70  # closed eyes (15% of avatars) hide the iris
    assert rep["eye_color_eyes_open"] >= 0.9
    assert acc["skin_tone"] >= 0.95 and acc["outfit_color"] >= 0.95 and acc["hair_style"] >= 0.85
    assert rep["heldout_images"] == DEFAULT_RECIPE.heldout_images
    assert set(acc) == set(P.IDENTITY_ATTRIBUTES)


def test_predictions_on_fresh_avatars(avatar_extractor):
    """The public path (uint8 RGB in, probabilities out) on avatars the net never saw, at 64 and 128 px."""
    seeds = range(900_000, 900_048)
    attrs = [P.sample_attributes(s, eye_open=1.0) for s in seeds]
    for size in (64, 128):
        imgs = np.stack([P.render(a, size, background=True) for a in attrs])
        pred = avatar_extractor.attribute_predictions(imgs)
        assert pred["hair_color"].shape == (48, len(P.HAIR_COLORS))
        assert np.allclose(pred["hair_color"].sum(1), 1, atol=1e-5)
        assert pred["eye_open"].shape == (48,)
        names = avatar_extractor.class_names("hair_color")
        hair = np.mean([names[i] == a["hair_color"] for i, a in zip(pred["hair_color"].argmax(1), attrs)])
        eyes = np.mean(
            [
                avatar_extractor.class_names("eye_color")[i] == a["eye_color"]
                for i, a in zip(pred["eye_color"].argmax(1), attrs)
            ]
        )
        assert hair >= 0.9, (size, hair)
        assert eyes >= 0.8, (size, eyes)
    # Transparent avatars (evaluated on white) are recognised too.
    rgba = np.stack([P.render(a, 64) for a in attrs])
    pred = avatar_extractor.attribute_predictions(rgba, include_continuous=False)
    hair = np.mean([names[i] == a["hair_color"] for i, a in zip(pred["hair_color"].argmax(1), attrs)])
    assert hair >= 0.9 and "eye_open" not in pred


def test_features(avatar_extractor):
    imgs = procedural_images(8, 64)
    f = avatar_extractor(imgs)
    assert f.shape == (8, 256) and f.dtype == torch.float32
    assert avatar_extractor.feature_dim == 256 and avatar_extractor.identity.startswith("avatar:")
    # Float input in [-1, 1] and uint8 agree.
    g = avatar_extractor(torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1)
    assert torch.allclose(f, g, atol=1e-4)
    info = avatar_extractor.info()
    assert info["heldout_accuracy"]["hair_color"] >= 0.95 and len(info["weights_sha256"]) == 64


def test_training_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    torch.set_num_threads(2)  # training switches to one thread and back
    a, rep = train_avatar_net(TINY, workers=1)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.get_num_threads() == 2
    b, _ = train_avatar_net(TINY, workers=2)
    assert _state_hash(a) == _state_hash(b)
    assert rep["steps"] == 3 and rep["recipe_hash"] == TINY.hash()
    # Another seed is another network.
    c, _ = train_avatar_net(dataclasses.replace(TINY, seed=1), workers=1)
    assert _state_hash(c) != _state_hash(a)


def test_cache_is_reused(tmp_path, monkeypatch):
    net, rep, entry = load_or_train_avatar_net(TINY, tmp_path)
    assert entry == tmp_path / "avatar_net" / TINY.hash()
    assert {p.name for p in entry.iterdir()} == {"config.json", "model.safetensors", "report.json"}
    assert json.loads((entry / "report.json").read_text())["weights_sha256"] == rep["weights_sha256"]

    def boom(*a, **k):
        raise AssertionError("retrained although the cache holds the net")

    monkeypatch.setattr(A, "train_avatar_net", boom)
    t0 = time.perf_counter()
    net2, rep2, _ = load_or_train_avatar_net(TINY, tmp_path)
    assert time.perf_counter() - t0 < 5
    assert rep2["weights_sha256"] == rep["weights_sha256"] and _state_hash(net2) == _state_hash(net)
    # The extractor finds the same entry, by recipe or by directory.
    ext = AvatarExtractor(recipe=TINY, cache_dir=tmp_path)
    assert ext.weights_sha256 == rep["weights_sha256"]
    ext2 = AvatarExtractor(weights=entry)
    assert ext2.identity == ext.identity
    with pytest.raises(FileNotFoundError, match="--weights"):
        AvatarExtractor(weights=tmp_path)


def test_recipe_hash_changes_with_any_field():
    assert DEFAULT_RECIPE.hash() == A.AvatarNetRecipe().hash()
    assert DEFAULT_RECIPE.hash() != dataclasses.replace(DEFAULT_RECIPE, epochs=2.0).hash()
    assert (
        DEFAULT_RECIPE.hash()
        != dataclasses.replace(DEFAULT_RECIPE, version=DEFAULT_RECIPE.version + 1).hash()
    )
