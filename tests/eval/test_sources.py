"""Image sources: packed data sets, image folders, run directories and generator objects."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from avatarforge.data.dataset import PackedDataset
from avatarforge.eval.sources import (
    FolderSource,
    GeneratorSource,
    PackedSource,
    SourceError,
    composite_on_white,
    open_source,
)
from avatarforge.imageio import save_image
from avatarforge.models.dcgan import DCGANGenerator
from tests.conftest import make_packed


def _collect(src, batch=7) -> np.ndarray:
    out = list(src.batches(batch))
    assert all(b.dtype == np.uint8 and b.ndim == 4 and b.shape[-1] == 3 for b in out)
    assert all(len(b) <= batch for b in out)
    return np.concatenate(out)


def test_packed_source_rgb_and_rgba(tmp_path):
    rgb = make_packed(tmp_path / "rgb", n=20, size=32, channels=3)
    src = open_source(rgb)
    assert isinstance(src, PackedSource) and len(src) == 20 and src.resolution == 32
    assert np.array_equal(_collect(src), PackedDataset(rgb).images_uint8(np.arange(20)))
    rgba = make_packed(tmp_path / "rgba", n=20, size=32, channels=4)
    got = _collect(open_source(rgba))
    raw = np.load(rgba / "images.npy")
    assert np.array_equal(got, composite_on_white(raw))
    assert (got[raw[..., 3] == 0] == 255).all()  # transparent -> white


def test_packed_content_hash_and_subset(tmp_path):
    a = make_packed(tmp_path / "a", n=20, size=32, seed=0)
    a2 = make_packed(tmp_path / "a2", n=20, size=32, seed=0)  # same pixels, another directory
    b = make_packed(tmp_path / "b", n=20, size=32, seed=1)
    assert PackedSource(a).content_hash == PackedSource(a2).content_hash
    assert PackedSource(a).content_hash != PackedSource(b).content_hash
    sub = PackedSource(a, n=8, seed=3)
    assert len(sub) == 8 and sub.content_hash != PackedSource(a).content_hash
    assert np.array_equal(sub.indices, np.sort(sub.indices))
    assert np.array_equal(PackedSource(a, n=8, seed=3).indices, sub.indices)
    assert not np.array_equal(PackedSource(a, n=8, seed=4).indices, sub.indices)
    imgs, labels = next(sub.batches_with_labels(4))
    assert imgs.shape == (4, 32, 32, 3) and labels.shape == (4, 2)


def test_folder_source(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 24, 24, 3), dtype=np.uint8)
    (tmp_path / "sub").mkdir()
    for i, im in enumerate(imgs):
        save_image(tmp_path / ("sub" if i % 2 else ".") / f"img{i}.png", im)
    (tmp_path / "notes.txt").write_text("not an image")
    src = open_source(tmp_path)
    assert isinstance(src, FolderSource) and len(src) == 5 and src.resolution == 24
    got = _collect(src, batch=2)
    # Sorted by relative path: img0, img2, img4 at the top, then sub/img1, sub/img3.
    assert np.array_equal(got, imgs[[0, 2, 4, 1, 3]])
    h = src.content_hash
    assert FolderSource(tmp_path).content_hash == h
    os.utime(tmp_path / "img0.png", ns=(1, 1))  # touched file -> new hash
    assert FolderSource(tmp_path).content_hash != h
    assert len(FolderSource(tmp_path, n=3)) == 3


def test_folder_resizes_odd_sizes_and_composites_alpha(tmp_path):
    save_image(tmp_path / "a.png", np.zeros((16, 16, 3), np.uint8))
    rgba = np.zeros((32, 40, 4), np.uint8)  # non-square, fully transparent
    save_image(tmp_path / "b.png", rgba)
    got = _collect(FolderSource(tmp_path))
    assert got.shape == (2, 16, 16, 3)
    assert (got[1] == 255).all()
    assert _collect(FolderSource(tmp_path, size=8)).shape == (2, 8, 8, 3)


def test_folder_errors(tmp_path):
    with pytest.raises(SourceError, match="no image files"):
        FolderSource(tmp_path)
    save_image(tmp_path / "wide.png", np.zeros((10, 20, 3), np.uint8))
    with pytest.raises(SourceError, match="not square"):
        FolderSource(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(SourceError, match=r"bad\.png"):
        _collect(FolderSource(tmp_path, size=16))
    with pytest.raises(SourceError, match="does not exist"):
        open_source(tmp_path / "nope", what="--ref")


def test_generator_source_is_seeded(tmp_path):
    torch.manual_seed(0)
    G = DCGANGenerator(resolution=32, z_dim=16, base_channels=8, channels=4).eval()
    a = _collect(GeneratorSource(G, 10, seed=1), batch=4)
    b = _collect(GeneratorSource(G, 10, seed=1), batch=10)
    c = _collect(GeneratorSource(G, 10, seed=2))
    assert a.shape == (10, 32, 32, 3)  # RGBA generator -> composited RGB
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    trunc = _collect(GeneratorSource(G, 10, seed=1, truncation=0.0))
    assert (trunc == trunc[0]).all()  # psi = 0: every sample is the mean latent's image
    assert G.training is False
    with pytest.raises(SourceError, match="n must be"):
        GeneratorSource(G, 0)


def test_run_directory_source(tmp_path):
    from avatarforge.data.procedural import SCHEMA
    from avatarforge.models.dcgan import DCGANDiscriminator
    from avatarforge.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    # A bare checkpoint directory holding only the EMA generator (what load_generator reads).
    G = DCGANGenerator(resolution=32, z_dim=16, base_channels=8)
    G.save_pretrained(tmp_path / "bare", prefix="g_ema_")
    src = open_source(tmp_path / "bare", n=6, seed=0)
    assert isinstance(src, GeneratorSource) and len(src) == 6 and src.content_hash is None
    assert np.array_equal(_collect(src), _collect(GeneratorSource(G, 6, seed=0)))
    with pytest.raises(SourceError, match=r"pass n \(CLI: --n\)"):
        open_source(tmp_path / "bare")
    # A run directory written by the trainer's checkpoint code, conditional on hair_color.
    dims = [SCHEMA["hair_color"].num_classes]
    Gc = DCGANGenerator(resolution=32, z_dim=16, base_channels=8, label_dims=dims)
    D = DCGANDiscriminator(resolution=32, base_channels=8, label_dims=dims)
    save_checkpoint(
        tmp_path / "run" / "checkpoints",
        5,
        models={"g": Gc, "g_ema": Gc, "d": D},
        meta={"label_names": ["hair_color"]},
    )
    src = open_source(tmp_path / "run", n=4)
    assert src.label_names == ["hair_color"] and src.vae is None
    images, labels = next(src.float_batches(4))
    assert images.shape == (4, 3, 32, 32) and labels.shape == (4, 1)
    assert src.info()["model"] == "dcgan"
