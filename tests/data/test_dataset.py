"""The packed data set loader: PackedDataset, sharding, the fast batch path."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from avatarforge.data.dataset import (
    PackedDataset,
    ShardedSampler,
    infinite_batches,
    label_indices,
    shard_indices,
)
from avatarforge.data.packed import LabelField, LabelSchema, PackedFormatError, PackedWriter
from avatarforge.imageio import from_uint8

SCHEMA = LabelSchema(
    (
        LabelField("hair", "categorical", ("black", "pink", "blue")),
        LabelField("smile", "continuous"),
        LabelField("eyes", "categorical", ("red", "green")),
    )
)


def _write(path, n=37, size=8, channels=3, seed=0):
    """A packed set of random pixels whose first pixel encodes the index (to check order)."""
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    imgs[:, 0, 0, 0] = np.arange(n) % 256
    with PackedWriter(path, size=size, channels=channels, schema=SCHEMA) as w:
        for i in range(n):
            labels = {"hair": i % 3, "smile": i / n, "eyes": i % 2} if i % 5 else {"smile": 0.5}
            w.add(imgs[i], labels=labels)
    return imgs


@pytest.fixture
def packed(tmp_path):
    imgs = _write(tmp_path / "ds")
    return PackedDataset(tmp_path / "ds"), imgs


def _ids(x: torch.Tensor) -> list[int]:
    """Item indices encoded in the first pixel of each image of a (B, C, H, W) batch."""
    return ((x[:, 0, 0, 0] + 1) * 127.5).round().long().tolist()


def test_item_shapes_dtypes_and_exact_mapping(packed):
    ds, imgs = packed
    assert len(ds) == 37 and ds.size == 8 and ds.channels == 3 and ds.schema == SCHEMA
    assert ds.labels.shape == (37, 3) and ds.labels.dtype == np.float32
    assert ds.manifest["count"] == 37
    x, y = ds[3]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32
    assert y.shape == (3,) and y.dtype == torch.float32 and y.tolist() == pytest.approx([0, 3 / 37, 1])
    assert torch.equal(x, from_uint8(imgs[3])[0])
    assert torch.isnan(ds[5][1][[0, 2]]).all()  # unknown labels stay NaN
    assert torch.equal(ds[-1][0], ds[36][0])
    with pytest.raises(IndexError):
        ds[37]


def test_exact_endpoints(tmp_path):
    out = tmp_path / "ds"
    with PackedWriter(out, size=2, channels=3) as w:
        w.add(np.array([[[0, 255, 1], [254, 128, 127]]] * 2, np.uint8))
    x, _ = PackedDataset(out)[0]
    assert x[0, 0, 0].item() == -1.0 and x[1, 0, 0].item() == 1.0
    assert x.min() >= -1 and x.max() <= 1


def test_images_uint8_restores_request_order(packed):
    ds, imgs = packed
    idx = [30, 2, 2, 17, 0, 36]
    assert np.array_equal(ds.images_uint8(idx), imgs[idx])
    assert np.array_equal(ds.images_uint8(np.arange(4, 9)), imgs[4:9])  # contiguous fast path
    assert ds.images_uint8([]).shape == (0, 8, 8, 3)
    with pytest.raises(IndexError):
        ds.images_uint8([0, 37])


def test_channel_conversion(tmp_path):
    rgba = np.zeros((1, 2, 2, 4), np.uint8)
    rgba[0, 0, 0] = [10, 20, 30, 255]  # opaque
    rgba[0, 0, 1] = [10, 20, 30, 0]  # transparent -> white
    rgba[0, 1, 0] = [0, 0, 0, 128]  # half black on white -> ~127
    with PackedWriter(tmp_path / "a", size=2, channels=4) as w:
        w.add(rgba[0])
    rgb = PackedDataset(tmp_path / "a", channels=3).images_uint8([0])
    assert rgb.shape == (1, 2, 2, 3)
    assert rgb[0, 0, 0].tolist() == [10, 20, 30] and rgb[0, 0, 1].tolist() == [255, 255, 255]
    assert rgb[0, 1, 0].tolist() == [127, 127, 127]
    assert PackedDataset(tmp_path / "a").channels == 4
    with PackedWriter(tmp_path / "b", size=2, channels=3) as w:
        w.add(rgba[0, ..., :3])
    x, _ = PackedDataset(tmp_path / "b", channels=4)[0]
    assert x.shape == (4, 2, 2) and (x[3] == 1).all()
    with pytest.raises(ValueError, match="channels"):
        PackedDataset(tmp_path / "b", channels=2)


def test_format_errors(tmp_path):
    with pytest.raises(PackedFormatError, match="avatarforge data prepare"):
        PackedDataset(tmp_path)
    _write(tmp_path / "ds", n=4)
    np.save(tmp_path / "ds" / "labels.npy", np.zeros((3, 3), np.float32))
    with pytest.raises(PackedFormatError, match="re-create"):
        PackedDataset(tmp_path / "ds")
    _write(tmp_path / "ds2", n=4)
    np.save(tmp_path / "ds2" / "images.npy", np.zeros((4, 8, 8, 4), np.uint8))
    with pytest.raises(PackedFormatError, match="manifest says"):
        PackedDataset(tmp_path / "ds2")


def test_pickle_drops_memmap(packed):
    ds, imgs = packed
    blob = pickle.dumps(ds)
    assert len(blob) < imgs.nbytes  # pixels are not shipped to workers
    ds2 = pickle.loads(blob)
    assert ds2._images is None
    assert torch.equal(ds2[7][0], ds[7][0])


def test_dataloader_workers_and_sampler(packed):
    ds, imgs = packed
    sampler = ShardedSampler(ds, rank=1, world_size=2, seed=3)
    sampler.set_epoch(2)
    dl = DataLoader(ds, batch_size=8, sampler=sampler, num_workers=2)
    got_x, got_y = [], []
    for x, y in dl:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 8, 8) and y.shape[1:] == (3,)
        got_x.append(x)
        got_y.append(y)
    x, y = torch.cat(got_x), torch.cat(got_y)
    expect = shard_indices(37, seed=3, epoch=2, rank=1, world_size=2)
    assert len(sampler) == len(expect) == 19 and len(x) == 19
    assert torch.equal(x, from_uint8(imgs[expect]))
    assert torch.allclose(y, torch.from_numpy(ds.labels[expect]), equal_nan=True)
    # The fast path sees the same items in the same order.
    fast = torch.cat([b for b, _ in ds.batches(8, seed=3, epoch=2, rank=1, world_size=2, drop_last=False)])
    assert torch.equal(fast, x)


def test_shuffle_determinism(packed):
    ds, _ = packed
    a = [_ids(x) for x, _ in ds.batches(8, seed=1, epoch=0)]
    b = [_ids(x) for x, _ in ds.batches(8, seed=1, epoch=0)]
    c = [_ids(x) for x, _ in ds.batches(8, seed=1, epoch=1)]
    d = [_ids(x) for x, _ in ds.batches(8, seed=2, epoch=0)]
    assert a == b and a != c and a != d
    assert len(a) == ds.steps_per_epoch(8) == 4  # 37 // 8, incomplete batch dropped
    assert len({i for batch in a for i in batch}) == 32
    unshuffled = [_ids(x) for x, _ in ds.batches(8, shuffle=False, drop_last=False)]
    assert [i for batch in unshuffled for i in batch] == list(range(37))


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [37, 3, 0])
def test_shards_disjoint_and_covering(n, world_size):
    shards = [shard_indices(n, seed=5, epoch=1, rank=r, world_size=world_size) for r in range(world_size)]
    per_rank = -(-n // world_size)
    assert all(len(s) == per_rank and s.dtype == np.int64 for s in shards)
    allv = np.concatenate(shards)
    assert set(allv.tolist()) == set(range(n))  # covering
    # Padding repeats exactly per_rank * world_size - n items, once each.
    assert len(allv) - len(set(allv.tolist())) == per_rank * world_size - n
    dropped = [
        shard_indices(n, seed=5, epoch=1, rank=r, world_size=world_size, drop_last=True)
        for r in range(world_size)
    ]
    flat = np.concatenate(dropped)
    assert len(flat) == len(set(flat.tolist())) == (n // world_size) * world_size  # strictly disjoint
    if world_size > 1 and n == 37:
        assert not np.array_equal(shards[0], shard_indices(n, seed=5, epoch=2, rank=0, world_size=world_size))


def test_steps_per_epoch_equal_across_ranks(packed):
    ds, _ = packed
    for ws in (1, 2, 3, 4):
        counts = [sum(1 for _ in ds.batches(4, rank=r, world_size=ws)) for r in range(ws)]
        assert counts == [ds.steps_per_epoch(4, ws)] * ws
    assert ds.steps_per_epoch(4, 3) == 3 and ds.steps_per_epoch(4, 3, drop_last=False) == 4
    with pytest.raises(ValueError):
        shard_indices(10, seed=0, epoch=0, rank=2, world_size=2)


def test_start_batch_equals_skipping(packed):
    ds, _ = packed
    full = [_ids(x) for x, _ in ds.batches(5, seed=9, epoch=4, rank=0, world_size=2)]
    resumed = [_ids(x) for x, _ in ds.batches(5, seed=9, epoch=4, rank=0, world_size=2, start_batch=2)]
    assert resumed == full[2:] and len(full) == 3


def test_infinite_batches_resume(packed):
    ds, _ = packed
    steps = ds.steps_per_epoch(8)
    it = infinite_batches(ds, 8, seed=4)
    seq = [_ids(next(it)[0]) for _ in range(2 * steps + 2)]
    assert seq[:steps] == [_ids(x) for x, _ in ds.batches(8, seed=4, epoch=0)]
    assert seq[steps : 2 * steps] == [_ids(x) for x, _ in ds.batches(8, seed=4, epoch=1)]
    k = steps + 1
    it2 = infinite_batches(ds, 8, seed=4, start_step=k)
    assert [_ids(next(it2)[0]) for _ in range(len(seq) - k)] == seq[k:]
    with pytest.raises(ValueError, match="fewer than one batch"):
        next(infinite_batches(ds, 64, seed=0))


def test_batches_labels_and_channels_last(packed):
    ds, imgs = packed
    x, y = next(ds.batches(6, seed=0, channels_last=True))
    assert x.is_contiguous(memory_format=torch.channels_last)
    ids = _ids(x)
    assert torch.equal(x, from_uint8(imgs[ids]))
    assert torch.allclose(y, torch.from_numpy(ds.labels[ids]), equal_nan=True)


def test_getitems_collates(packed):
    ds, imgs = packed
    dl = DataLoader(ds, batch_size=5, shuffle=False)
    x, y = next(iter(dl))
    assert x.shape == (5, 3, 8, 8) and y.shape == (5, 3)
    assert torch.equal(x, from_uint8(imgs[:5]))


def test_label_indices(packed):
    ds, _ = packed
    labels = torch.from_numpy(ds.labels[:6])
    idx = label_indices(labels, ds.schema, ["eyes", "hair"])
    assert idx.dtype == torch.long and idx.shape == (6, 2)
    # Item 0 and 5 have unknown hair/eyes -> num_classes (2 for eyes, 3 for hair).
    assert idx.tolist() == [[2, 3], [1, 1], [0, 2], [1, 0], [0, 1], [2, 3]]
    assert label_indices(labels, ds.schema, []).shape == (6, 0)
    with pytest.raises(ValueError, match="continuous"):
        label_indices(labels, ds.schema, ["smile"])
    with pytest.raises(KeyError):
        label_indices(labels, ds.schema, ["nope"])
