"""The built-in data set builder: a valid packed set, labels, worker-independent output."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from avatarforge.data import procedural as P
from avatarforge.data.builtin import build_builtin_dataset, item_seed, render_item
from avatarforge.data.packed import read_manifest, read_schema


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The same small data set built with one worker and with two."""
    root = tmp_path_factory.mktemp("builtin")
    one = build_builtin_dataset(root / "one", 70, 32, seed=3, workers=1, progress=False)
    two = build_builtin_dataset(root / "two", 70, 32, seed=3, workers=2, progress=False)
    return one, two


def test_valid_packed_set(built):
    path, _ = built
    manifest = read_manifest(path)
    assert manifest["count"] == 70 and manifest["size"] == 32 and manifest["channels"] == 4
    assert manifest["producer"] == "builtin"
    assert manifest["options"] == {"n": 70, "size": 32, "seed": 3, "alpha": "keep"}
    images = np.load(path / "images.npy", mmap_mode="r")
    assert images.shape == (70, 32, 32, 4) and images.dtype == np.uint8
    # Transparent pixels carry no colour.
    assert (images[..., :3][images[..., 3] == 0] == 0).all()
    assert read_schema(path) == P.SCHEMA
    labels = np.load(path / "labels.npy")
    assert labels.shape == (70, len(P.SCHEMA)) and not np.isnan(labels).any()
    preview = Image.open(path / "preview.png")
    assert preview.mode == "RGB" and preview.size[0] > 8 * 32
    assert len(manifest["items"]) == 70


def test_labels_and_pixels_match_the_sampled_avatars(built):
    path, _ = built
    schema = read_schema(path)
    labels = np.load(path / "labels.npy")
    images = np.load(path / "images.npy", mmap_mode="r")
    for i in (0, 1, 33, 69):
        expect = P.sample_attributes(item_seed(3, i))
        got = schema.decode(labels[i])
        for name in P.IDENTITY_ATTRIBUTES:
            assert got[name] == expect[name]
        for name in P.EXPRESSION_ATTRIBUTES:
            assert got[name] == pytest.approx(expect[name], abs=1e-6)
        img, attrs = render_item(3, i, 32, "keep")
        assert attrs == expect
        assert np.array_equal(images[i], img)


def test_output_independent_of_worker_count(built):
    one, two = built
    assert (one / "images.npy").read_bytes() == (two / "images.npy").read_bytes()
    assert (one / "labels.npy").read_bytes() == (two / "labels.npy").read_bytes()
    items = [json.loads((p / "manifest.json").read_text())["items"] for p in (one, two)]
    assert items[0] == items[1]


def test_background_mode_and_overwrite(tmp_path):
    out = tmp_path / "bg"
    build_builtin_dataset(out, 5, 32, seed=1, workers=1, alpha="background", progress=False)
    images = np.load(out / "images.npy")
    assert images.shape == (5, 32, 32, 3)
    assert np.array_equal(images[2], P.render(P.sample_attributes(item_seed(1, 2)), 32, background=True))
    with pytest.raises(FileExistsError, match="overwrite"):
        build_builtin_dataset(out, 5, 32, workers=1, progress=False)
    build_builtin_dataset(out, 3, 32, workers=1, overwrite=True, progress=False)
    assert read_manifest(out)["count"] == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n must be"),
        ({"n": 4, "alpha": "premultiplied"}, "alpha must be"),
        ({"n": 4, "size": 16}, "size"),
        ({"n": 4, "seed": -2}, "seed"),
        ({"n": 4, "workers": 0}, "workers"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_builtin_dataset(tmp_path / "x", progress=False, **kwargs)
    assert not (tmp_path / "x").exists()
