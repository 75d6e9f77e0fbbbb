"""The FID Inception-v3: architecture/key names, user-file loading, preprocessing, errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from avatarforge.eval.extractors import get_extractor
from avatarforge.eval.inception import (
    INCEPTION_WEIGHTS_NAME,
    FIDInceptionV3,
    InceptionExtractor,
    InceptionWeightsError,
    default_weights_path,
)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A randomly initialised FID Inception state dict saved the way the real file is (torch.save)."""
    torch.manual_seed(0)
    net = FIDInceptionV3()
    # Non-trivial BN statistics so the forward pass is not degenerate.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("w") / INCEPTION_WEIGHTS_NAME
    torch.save(net.state_dict(), path)
    return path


def test_key_names_match_the_pytorch_fid_file():
    sd = FIDInceptionV3().state_dict()
    for key in (
        "Conv2d_1a_3x3.conv.weight",
        "Conv2d_1a_3x3.bn.running_mean",
        "Conv2d_4a_3x3.bn.weight",
        "Mixed_5b.branch1x1.conv.weight",
        "Mixed_5b.branch_pool.conv.weight",
        "Mixed_6b.branch7x7dbl_5.conv.weight",
        "Mixed_7a.branch7x7x3_4.bn.running_var",
        "Mixed_7c.branch3x3dbl_3b.conv.weight",
        "fc.weight",
        "fc.bias",
    ):
        assert key in sd, key
    assert not any(k.startswith("AuxLogits") for k in sd)
    assert sd["fc.weight"].shape == (1008, 2048)
    assert sd["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert sd["Mixed_5b.branch_pool.conv.weight"].shape == (32, 192, 1, 1)
    assert sd["Mixed_6b.branch7x7_2.conv.weight"].shape == (128, 128, 1, 7)
    assert sd["Mixed_7b.branch3x3dbl_1.conv.weight"].shape == (448, 1280, 1, 1)
    # torchvision's Inception3 without the aux head, 1008 classes: 23.9M parameters.
    n = sum(p.numel() for p in FIDInceptionV3().parameters())
    assert 23_800_000 < n < 23_900_000


def test_loads_user_file_and_extracts_2048d_with_fid_preprocessing(weights_file):
    ext = get_extractor("inception", weights=weights_file, device="cpu")
    assert isinstance(ext, InceptionExtractor)
    assert (ext.feature_dim, ext.input_size) == (2048, 299)
    seen = {}

    def spy(module, inputs):
        seen["x"] = inputs[0].detach().clone()

    handle = ext.net.register_forward_pre_hook(spy)
    imgs = np.zeros((2, 32, 32, 3), np.uint8)
    imgs[1] = 255
    imgs[0, :16] = 255
    feats = ext(imgs)
    handle.remove()
    assert feats.shape == (2, 2048) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all() and (feats >= 0).all()  # pool of ReLU outputs
    x = seen["x"]
    assert x.shape == (2, 3, 299, 299)  # resized to 299 ...
    assert x[1].min().item() == pytest.approx(1.0) and x[0].min().item() == pytest.approx(
        -1.0
    )  # ... to [-1, 1]
    # Exactly pytorch-fid's preprocessing: bilinear (align_corners=False, no antialias) on [0, 1], then 2x - 1.
    u = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    ref = torch.nn.functional.interpolate(u, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    assert torch.allclose(x, ref, atol=1e-6)
    assert ext.identity.startswith("inception:") and len(ext.weights_sha256) == 64
    # Float input in [-1, 1] reaches the network as the equivalent uint8 does.
    from avatarforge.eval.extractors import to_unit_float

    as_float = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert torch.allclose(to_unit_float(as_float), to_unit_float(imgs), atol=1e-6)


def test_safetensors_and_default_location(weights_file, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    sd = torch.load(weights_file, weights_only=True)
    st = tmp_path / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    a = InceptionExtractor(weights=st)
    # The default location is under $AVATARFORGE_CACHE/weights/.
    monkeypatch.setenv("AVATARFORGE_CACHE", str(tmp_path / "cache"))
    assert default_weights_path() == tmp_path / "cache" / "weights" / INCEPTION_WEIGHTS_NAME
    default_weights_path().parent.mkdir(parents=True)
    default_weights_path().write_bytes(weights_file.read_bytes())
    b = InceptionExtractor()
    sa, sb = a.net.state_dict(), b.net.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.weights_sha256 != b.weights_sha256  # different files, same tensors


def test_missing_file_names_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("AVATARFORGE_CACHE", str(tmp_path / "c"))
    with pytest.raises(InceptionWeightsError) as e:
        InceptionExtractor()
    msg = str(e.value)
    assert str(tmp_path / "c" / "weights" / INCEPTION_WEIGHTS_NAME) in msg
    assert "--weights" in msg and "pytorch-fid" in msg and "--extractor avatar" in msg
    assert isinstance(e.value, FileNotFoundError)


def test_strict_keys(weights_file, tmp_path):
    sd = torch.load(weights_file, weights_only=True)
    missing = dict(sd)
    del missing["Mixed_6c.branch1x1.conv.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(
        InceptionWeightsError, match=r"missing 1 key\(s\), e.g. Mixed_6c.branch1x1.conv.weight"
    ):
        InceptionExtractor(weights=tmp_path / "missing.pth")
    extra = dict(sd)
    extra["AuxLogits.fc.weight"] = torch.zeros(1)
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(InceptionWeightsError, match="unexpected 1 key"):
        InceptionExtractor(weights=tmp_path / "extra.pth")
    bad_shape = dict(sd)
    bad_shape["fc.weight"] = torch.zeros(1000, 2048)
    torch.save(bad_shape, tmp_path / "shape.pth")
    with pytest.raises(RuntimeError, match="size mismatch"):
        InceptionExtractor(weights=tmp_path / "shape.pth")


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_refuses_pickled_objects(tmp_path):
    p = tmp_path / "evil.pth"
    with open(p, "wb") as f:
        pickle.dump({"x": _Evil()}, f)
    with pytest.raises(InceptionWeightsError, match="cannot read"):
        InceptionExtractor(weights=p)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InceptionWeightsError, match="cannot read"):
        InceptionExtractor(weights=tmp_path / "junk.pth")


def test_tf_patches_change_the_pooling():
    """The FID blocks pool without counting padding (A/C/E) and Mixed_7c max-pools."""
    net = FIDInceptionV3()
    assert net.Mixed_7c.max_pool and not net.Mixed_7b.max_pool
    from avatarforge.eval.inception import _tf_avg_pool

    x = torch.ones(1, 1, 4, 4)
    assert torch.equal(_tf_avg_pool(x), x)  # count_include_pad=True would give 4/9 in the corners
