"""Feature networks: VGG-19 from a torchvision-format user file, and the seeded random CNN."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from avatarforge.style.features import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VGG19_LAYER_INDEX,
    RandomMultiScaleCNN,
    VGG19Features,
    load_feature_net,
    load_vgg19,
)


@pytest.fixture(scope="module")
def vgg_state() -> dict[str, torch.Tensor]:
    """A random VGG-19 state dict with torchvision's keys, classifier included.

    The classifier tensors are small stand-ins (the real ones are 0.5 GB); the loader must
    ignore them whatever their shapes.
    """
    torch.manual_seed(1)
    state = {f"features.{k}": v.clone() for k, v in VGG19Features().features.state_dict().items()}
    state.update(
        {
            "classifier.0.weight": torch.randn(8, 16),
            "classifier.0.bias": torch.randn(8),
            "classifier.3.weight": torch.randn(8, 8),
            "classifier.3.bias": torch.randn(8),
            "classifier.6.weight": torch.randn(10, 8),
            "classifier.6.bias": torch.randn(10),
        }
    )
    return state


def test_vgg19_architecture_matches_torchvision_indices():
    net = VGG19Features()
    keys = list(net.state_dict())
    assert len(keys) == 32 and keys[0] == "features.0.weight" and keys[-1] == "features.34.bias"
    assert net.features[34].weight.shape == (512, 512, 3, 3)
    assert isinstance(net.features[36], torch.nn.MaxPool2d) and len(net.features) == 37
    assert VGG19_LAYER_INDEX["relu1_1"] == 1 and VGG19_LAYER_INDEX["relu4_1"] == 20
    assert VGG19_LAYER_INDEX["relu4_2"] == 22 and VGG19_LAYER_INDEX["relu5_1"] == 29


def test_vgg19_loads_a_torchvision_file_weights_only(vgg_state, tmp_path):
    path = tmp_path / "vgg19-test.pth"
    torch.save(vgg_state, path)
    net = load_vgg19(path)
    sd = net.state_dict()
    assert set(sd) == {k for k in vgg_state if k.startswith("features.")}
    for k, v in sd.items():
        assert v.shape == vgg_state[k].shape and torch.equal(v, vgg_state[k]), k
    assert not any(p.requires_grad for p in net.parameters())

    # ImageNet normalisation of [-1, 1] input, then the first conv + ReLU.
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    norm = ((x + 1) / 2 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1
    )
    assert torch.allclose(net.normalize(x), norm, atol=1e-6)
    feats = net(x, ["relu1_1", "relu2_1"])
    expected = torch.relu(
        torch.nn.functional.conv2d(
            norm, vgg_state["features.0.weight"], vgg_state["features.0.bias"], padding=1
        )
    )
    assert torch.allclose(feats["relu1_1"], expected, atol=1e-5)
    assert feats["relu2_1"].shape == (1, 128, 8, 8)

    # The same tensors as .safetensors.
    st = tmp_path / "vgg19.safetensors"
    save_file({k: v.contiguous() for k, v in vgg_state.items()}, str(st))
    assert load_feature_net(st).fingerprint() == net.fingerprint()


def _tiny(keys) -> dict[str, torch.Tensor]:
    # Right names, wrong (tiny) shapes: enough to test key handling without 80 MB files.
    return {k: torch.zeros(1) for k in keys}


class _NotATensor:
    """Pickled as a custom class: weights_only loading must refuse it."""


def test_vgg19_loader_errors(vgg_state, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not found.*--vgg"):
        load_vgg19(tmp_path / "missing.pth")
    evil = tmp_path / "evil.pth"
    torch.save({"features.0.weight": torch.zeros(1), "extra": _NotATensor()}, evil)
    with pytest.raises(ValueError, match="refused"):
        load_vgg19(evil)
    partial = tmp_path / "vgg16ish.pth"
    torch.save(_tiny(k for k in vgg_state if not k.startswith("features.34")), partial)
    with pytest.raises(ValueError, match=r"missing 2 of 32.*features\.34"):
        load_vgg19(partial)
    # Every key found (also under a {"state_dict": ...} wrapper with a DataParallel prefix),
    # so the loader gets as far as comparing shapes.
    shaped = tmp_path / "shapes.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in _tiny(vgg_state).items()}}, shaped)
    with pytest.raises(ValueError, match="shapes differ"):
        load_vgg19(shaped)
    junk = tmp_path / "junk.pth"
    Path(junk).write_bytes(b"this is not a weights file")
    with pytest.raises(ValueError, match="not a readable"):
        load_vgg19(junk)


def test_random_cnn_is_deterministic_and_vgg_shaped():
    a, b, c = RandomMultiScaleCNN(seed=0), RandomMultiScaleCNN(seed=0), RandomMultiScaleCNN(seed=1)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fa, fb = a(x, a.layer_names), b(x, b.layer_names)
    for name in a.layer_names:
        assert torch.equal(fa[name], fb[name])
        scale = a.scales[name]
        assert fa[name].shape == (2, a.channels[name], 32 // scale, 48 // scale)
        assert 0.2 < float(fa[name].square().mean().sqrt()) < 5.0, name  # calibrated scale
    # Bit-identical whatever the thread count (the layer gains are measured in float64 and
    # rounded), so a decoder's recorded encoder fingerprint is reproducible anywhere.
    torch.set_num_threads(2)
    try:
        assert RandomMultiScaleCNN(seed=0).fingerprint() == a.fingerprint()
    finally:
        torch.set_num_threads(1)
    # The global RNG is not consumed (constructing a network must not shift other streams).
    state = torch.get_rng_state()
    RandomMultiScaleCNN(seed=3)
    assert torch.equal(state, torch.get_rng_state())
    with pytest.raises(ValueError, match="unknown layer"):
        a(x, ["relu5_1"])
