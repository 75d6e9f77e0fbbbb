"""Training pairs: deterministic caches and batches, augmentations, streaming."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatarforge.animate.pairs import (
    HELDOUT,
    TRAIN,
    PairCache,
    PairSpec,
    StreamingPairs,
    build_or_open_cache,
    group_expressions,
    identity_seed,
    part_mask,
)
from avatarforge.data.procedural import NEUTRAL_EXPRESSION, PART_NAMES, render
from avatarforge.models.animator import CONTROL_NAMES

SPEC = PairSpec(size=32, identities=6, expressions=3, seed=5)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> PairCache:
    return build_or_open_cache(tmp_path_factory.mktemp("pairs"), SPEC)


def test_cache_contents_match_the_renderer(cache, tmp_path):
    assert cache.images.shape == (6, 3, 32, 32, 4) and cache.parts.shape == (6, 3, 32, 32)
    assert cache.controls.shape == (6, 3, len(CONTROL_NAMES))
    exprs = group_expressions(5, TRAIN, 4, 3)
    assert exprs[0] == NEUTRAL_EXPRESSION  # expression 0 is neutral
    from avatarforge.data.procedural import sample_attributes

    img, parts = render({**sample_attributes(identity_seed(5, TRAIN, 4)), **exprs[2]}, 32, return_parts=True)
    assert np.array_equal(cache.images[4, 2], img)
    assert np.array_equal(cache.parts[4, 2] == PART_NAMES.index("iris"), parts["iris"])
    assert cache.controls[4, 2].tolist() == pytest.approx([exprs[2][n] for n in CONTROL_NAMES])
    # Built in parallel or reopened: the same bytes.
    again = PairCache.build(tmp_path / "c", SPEC, workers=2)
    assert np.array_equal(again.images, cache.images) and np.array_equal(again.parts, cache.parts)
    assert build_or_open_cache(cache.path.parent.parent, SPEC).path == cache.path
    assert identity_seed(5, TRAIN, 0) != identity_seed(5, HELDOUT, 0)


def test_batches_are_pure_functions_of_the_step(cache):
    a, b, c = cache.batch(7, 8, seed=1), cache.batch(7, 8, seed=1), cache.batch(8, 8, seed=1)
    for f in ("source", "target", "controls", "source_parts"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert not torch.equal(a.source, c.source)
    assert a.source.shape == (8, 4, 32, 32) and a.source.dtype == torch.float32
    assert a.source.min() >= -1 and a.source.max() <= 1 and a.controls.shape == (8, 5)


def test_flip_negates_yaw_and_tilt_and_backgrounds_are_opaque(cache):
    plain = cache.batch(3, 16, seed=0, flip=False)
    flipped = cache.batch(3, 16, seed=0, flip=True)
    yaw, tilt = CONTROL_NAMES.index("head_yaw"), CONTROL_NAMES.index("head_tilt")
    f = ~torch.isclose(flipped.source, plain.source).flatten(1).all(1)
    assert 0 < f.sum() < 16
    assert torch.equal(flipped.source[f], plain.source[f].flip(-1))
    assert torch.equal(flipped.controls[f, yaw], -plain.controls[f, yaw])
    assert torch.equal(flipped.controls[f, tilt], -plain.controls[f, tilt])
    assert torch.equal(flipped.controls[~f], plain.controls[~f])
    bg = cache.batch(3, 16, seed=0, flip=False, background_prob=1.0)
    assert bool((bg.source[:, 3] == 1).all() and (bg.target[:, 3] == 1).all())
    inside = plain.source[:, 3] == 1  # opaque character pixels are unchanged
    assert torch.equal(
        bg.source[:, :3][inside[:, None].expand(-1, 3, -1, -1)],
        plain.source[:, :3][inside[:, None].expand(-1, 3, -1, -1)],
    )


def test_streaming_pairs_are_deterministic_in_any_order():
    with StreamingPairs(32, 4, seed=2, expressions=3, prefetch=2) as s:
        first = [s.batch(i) for i in range(3)]
        again = s.batch(1)  # a jump back (NaN roll-back) re-renders the same batch
    assert torch.equal(first[1].source, again.source) and torch.equal(first[1].controls, again.controls)
    with StreamingPairs(32, 4, seed=2, expressions=3, workers=2) as s:
        assert torch.equal(s.batch(2).target, first[2].target)
    assert not torch.equal(first[0].source, first[1].source)
    mouth = part_mask(first[0].target_parts, ("mouth",))
    assert mouth.any() and mouth.dtype == torch.bool
