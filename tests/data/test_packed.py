"""Round trips of the packed data set format (avatarforge.data.packed)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from avatarforge.data.packed import (
    FORMAT_NAME,
    FORMAT_VERSION,
    LabelField,
    LabelSchema,
    PackedFormatError,
    PackedWriter,
    pixel_hash,
    read_manifest,
    read_schema,
)

SCHEMA = LabelSchema(
    (
        LabelField("hair", "categorical", ("black", "pink", "blue")),
        LabelField("smile", "continuous", range=(0.0, 1.0), description="how much"),
    )
)


def _images(n: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


@pytest.mark.parametrize("count", [0, 1, 1000])
def test_round_trip_counts(tmp_path, count):
    """The .npy header is patched with the final count, including 0 and 1 (edge cases)."""
    size, channels = 8, 3
    imgs = _images(count, size, channels)
    out = tmp_path / "ds"
    with PackedWriter(
        out, size=size, channels=channels, schema=SCHEMA, options={"k": 1}, producer="test"
    ) as w:
        for i in range(count):
            labels = {"hair": ("black", "pink", "blue")[i % 3], "smile": i / 1000} if i % 2 == 0 else None
            assert w.add(imgs[i], source=f"img{i}.png", labels=labels) == i
    mm = np.load(out / "images.npy", mmap_mode="r")
    assert mm.shape == (count, size, size, channels) and mm.dtype == np.uint8
    assert np.array_equal(np.asarray(mm), imgs)
    labels = np.load(out / "labels.npy")
    assert labels.shape == (count, 2) and labels.dtype == np.float32
    for i in range(count):
        if i % 2 == 0:
            assert labels[i, 0] == i % 3 and labels[i, 1] == pytest.approx(i / 1000)
        else:
            assert np.isnan(labels[i]).all()
    m = read_manifest(out)
    assert m["format"] == FORMAT_NAME and m["format_version"] == FORMAT_VERSION
    assert (m["count"], m["size"], m["channels"], m["mode"]) == (count, size, channels, "RGB")
    assert m["options"] == {"k": 1} and m["producer"] == "test" and m["labels"] == ["hair", "smile"]
    assert len(m["items"]) == count
    if count:
        assert m["items"][0] == {"source": "img0.png", "sha256": pixel_hash(imgs[0])}
    assert read_schema(out) == SCHEMA
    # The file is exactly header + pixels: nothing stray was written.
    assert (out / "images.npy").stat().st_size == 256 + imgs.nbytes


def test_rgba_and_extra_files(tmp_path):
    imgs = _images(3, 4, 4)
    out = tmp_path / "ds"
    with PackedWriter(out, size=4, channels=4) as w:
        for im in imgs:
            w.add(im, content_hash="abc")
        w.write_json("report.json", {"skipped": 0})
    assert np.array_equal(np.load(out / "images.npy"), imgs)
    m = read_manifest(out)
    assert m["mode"] == "RGBA" and m["items"][1]["sha256"] == "abc"
    assert json.loads((out / "report.json").read_text()) == {"skipped": 0}
    assert np.load(out / "labels.npy").shape == (3, 0)


def test_aborted_writer_leaves_nothing(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(RuntimeError), PackedWriter(out, size=4, channels=3) as w:
        w.add(_images(1, 4, 3)[0])
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_refused_unless_overwrite(tmp_path):
    out = tmp_path / "ds"
    with PackedWriter(out, size=4, channels=3) as w:
        w.add(_images(1, 4, 3)[0])
    with pytest.raises(FileExistsError):
        PackedWriter(out, size=4, channels=3)
    with PackedWriter(out, size=4, channels=3, overwrite=True) as w:
        for im in _images(2, 4, 3, seed=1):
            w.add(im)
    assert read_manifest(out)["count"] == 2


def test_bad_labels_do_not_corrupt_pixels(tmp_path):
    """A rejected item (bad label) must leave no bytes behind, or later images would shift."""
    imgs = _images(3, 4, 3)
    out = tmp_path / "ds"
    with PackedWriter(out, size=4, channels=3, schema=SCHEMA) as w:
        w.add(imgs[0])
        with pytest.raises(ValueError):
            w.add(imgs[1], labels={"hair": "green"})
        with pytest.raises(KeyError):
            w.add(imgs[1], labels={"nope": 1})
        with pytest.raises(ValueError):
            w.add(imgs[1][:2])
        w.add(imgs[2])
    assert np.array_equal(np.load(out / "images.npy"), imgs[[0, 2]])
    assert read_manifest(out)["count"] == 2


def test_label_schema_encode_decode():
    row = SCHEMA.encode({"hair": "blue", "smile": 0.25})
    assert row.tolist() == [2.0, 0.25]
    assert SCHEMA.decode(row) == {"hair": "blue", "smile": 0.25}
    assert SCHEMA.decode(SCHEMA.encode(None)) == {"hair": None, "smile": None}
    assert SCHEMA.encode({"hair": 1})[0] == 1.0 and math.isnan(SCHEMA.encode({"hair": 1})[1])
    with pytest.raises(ValueError, match="index 3 out of range"):
        SCHEMA.encode({"hair": 3})
    assert LabelSchema.from_json(json.loads(json.dumps(SCHEMA.to_json()))) == SCHEMA
    assert SCHEMA["hair"].num_classes == 3 and SCHEMA.index("smile") == 1
    with pytest.raises(KeyError, match="no label named"):
        SCHEMA.index("x")


def test_read_manifest_errors(tmp_path):
    with pytest.raises(PackedFormatError, match=r"no manifest\.json"):
        read_manifest(tmp_path)
    out = tmp_path / "ds"
    with PackedWriter(out, size=4, channels=3) as w:
        w.add(_images(1, 4, 3)[0])
    m = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**m, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(PackedFormatError, match="upgrade avatarforge"):
        read_manifest(out)
    (out / "manifest.json").write_text(json.dumps(m))
    (out / "labels.npy").unlink()
    with pytest.raises(PackedFormatError, match=r"missing labels\.npy"):
        read_manifest(out)


def test_writer_validates_arguments(tmp_path):
    with pytest.raises(ValueError, match="channels"):
        PackedWriter(tmp_path / "a", size=4, channels=2)
    with pytest.raises(ValueError, match="size"):
        PackedWriter(tmp_path / "a", size=0, channels=3)
    with PackedWriter(tmp_path / "a", size=4, channels=3) as w, pytest.raises(ValueError, match="uint8"):
        w.add(np.zeros((4, 4, 3), np.float32))
