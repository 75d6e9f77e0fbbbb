"""Registry-wide smoke test: every registered network, found from a fresh process.

For each ``(name, role)``: build a tiny instance through the registry, run a forward pass
(shape, finite), a backward pass (finite gradients reach the parameters) and a
save_pretrained / load_pretrained round trip that gives identical weights and outputs.
A network registered without a row in ``CASES`` fails ``test_every_registered_model_has_a_case``,
so a new architecture cannot skip this test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch

from avatarforge.models import create_model, load_pretrained
from avatarforge.models.gan_api import code_features
from avatarforge.models.registry import registered_models

B = 2
LABEL_DIMS = [3, 4]


def _labels() -> torch.Tensor:
    return torch.tensor([[0, 1], [2, 3]])


def _gan(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "resolution": 32,
        "channels": 4,
        "label_dims": LABEL_DIMS,
        "base_channels": 8,
        "max_channels": 16,
        **extra,
    }


CODE_DIMS = {"categorical": [3], "continuous": 1}


def _gan_g_inputs(model: Any) -> tuple[tuple, dict]:
    kw: dict[str, Any] = {"labels": _labels()}
    if code_features(model.code_dims):  # InfoGAN needs its codes; the others take none
        kw["codes"] = model.sample_codes(B)
    return (torch.randn(B, model.z_dim),), kw


def _image(c: int, s: int) -> Callable[[Any], tuple[tuple, dict]]:
    return lambda model: ((torch.rand(B, c, s, s) * 2 - 1,), {})


# (name, role) -> (tiny constructor kwargs, inputs from the built model, expected output shape)
CASES: dict[tuple[str, str], tuple[dict[str, Any], Callable[[Any], tuple[tuple, dict]], tuple[int, ...]]] = {
    ("adain", "decoder"): ({"in_channels": 8, "widths": [8, 4]}, _image(8, 4), (B, 3, 16, 16)),
    ("animator", "generator"): (
        {"resolution": 32, "widths": [4, 4, 8, 8], "ctrl_hidden": 8},
        lambda m: ((torch.rand(B, 4, 32, 32) * 2 - 1, torch.rand(B, 5)), {}),
        (B, 4, 32, 32),
    ),
    ("animator", "discriminator"): (
        {"width": 8, "layers": 2},
        lambda m: ((torch.rand(B, 4, 32, 32), torch.rand(B, 4, 32, 32), torch.rand(B, 5)), {}),
        None,
    ),
    ("avatar_attributes", "extractor"): ({"size": 16, "width": 4, "embed_dim": 8}, _image(3, 16), None),
    ("cgan", "generator"): (_gan("cgan", z_dim=8), _gan_g_inputs, (B, 4, 32, 32)),
    ("cgan", "discriminator"): (
        _gan("cgan"),
        lambda m: ((torch.rand(B, 4, 32, 32),), {"labels": _labels()}),
        (B,),
    ),
    ("cvae", "vae"): (
        {**_gan("cvae", z_dim=8), "embed_dim": 4},
        lambda m: ((torch.rand(B, 4, 32, 32) * 2 - 1,), {"labels": _labels()}),
        None,
    ),
    ("cyclegan", "generator"): ({"ngf": 4, "n_blocks": 1, "max_channels": 8}, _image(3, 16), (B, 3, 16, 16)),
    ("cyclegan", "discriminator"): ({"ndf": 4, "n_layers": 2}, _image(3, 16), None),
    ("dcgan", "generator"): (_gan("dcgan", z_dim=8), _gan_g_inputs, (B, 4, 32, 32)),
    ("dcgan", "discriminator"): (
        _gan("dcgan"),
        lambda m: ((torch.rand(B, 4, 32, 32),), {"labels": _labels()}),
        (B,),
    ),
    ("espcn", "upscaler"): ({"scale": 2, "features": 8}, _image(4, 8), (B, 4, 16, 16)),
    ("infogan", "generator"): (_gan("infogan", z_dim=8, code_dims=CODE_DIMS), _gan_g_inputs, (B, 4, 32, 32)),
    ("infogan", "discriminator"): (
        _gan("infogan", code_dims=CODE_DIMS),
        lambda m: ((torch.rand(B, 4, 32, 32),), {"labels": _labels()}),
        (B,),
    ),
    ("parts", "segmenter"): ({"widths": [8, 8], "out_scale": 2}, _image(4, 16), (B, 11, 32, 32)),
    ("refiner", "refiner"): ({"scale": 2, "width": 8, "blocks": 1}, _image(4, 8), (B, 4, 16, 16)),
    ("refiner", "discriminator"): ({"width": 8, "layers": 2}, _image(4, 16), (B, 1, 4, 4)),
    ("stylegan", "generator"): (
        {
            "resolution": 32,
            "channels": 4,
            "z_dim": 8,
            "w_dim": 8,
            "mapping_layers": 2,
            "channel_base": 64,
            "channel_max": 16,
            "label_dims": LABEL_DIMS,
        },
        _gan_g_inputs,
        (B, 4, 32, 32),
    ),
    ("stylegan", "discriminator"): (
        {
            "resolution": 32,
            "channels": 4,
            "channel_base": 64,
            "channel_max": 16,
            "label_dims": LABEL_DIMS,
            "mbstd_group_size": 2,
        },
        lambda m: ((torch.rand(B, 4, 32, 32),), {"labels": _labels()}),
        (B,),
    ),
    ("vae", "vae"): (
        {"resolution": 32, "channels": 4, "z_dim": 8, "base_channels": 8, "max_channels": 16},
        _image(4, 32),
        None,
    ),
}


def _fresh_process_registry() -> list[list[str]]:
    """``registered_models()`` as a fresh interpreter sees it (nothing imported beforehand)."""
    code = (
        "import json, avatarforge.models as m; from avatarforge.models.registry import registered_models;"
        "print(json.dumps({'names': m.list_models(), 'pairs': [[n, r] for n, r, _ in registered_models()]}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


FRESH = _fresh_process_registry()


def test_fresh_process_lists_every_network():
    # The animator used to be registered only once avatarforge.animate had been imported.
    assert "animator" in FRESH["names"] and ["animator", "generator"] in FRESH["pairs"]
    assert sorted(FRESH["names"]) == sorted({n for n, _ in CASES})
    # This process (after whatever the suite imported; tests may register test-only models)
    # sees every one of them too.
    here = {(n, r) for n, r, _ in registered_models()}
    assert {tuple(p) for p in FRESH["pairs"]} <= here


def test_every_registered_model_has_a_case():
    missing = [tuple(p) for p in FRESH["pairs"] if tuple(p) not in CASES]
    assert not missing, f"add a tiny case to CASES for {missing}"


def _first_tensor(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _scalar(out: Any) -> torch.Tensor:
    items = out if isinstance(out, (tuple, list)) else [out]
    return sum(t.float().square().mean() for t in items if isinstance(t, torch.Tensor))


@pytest.mark.parametrize("name,role", [tuple(p) for p in FRESH["pairs"]], ids=lambda v: str(v))
def test_build_forward_backward_save_load(name, role, tmp_path):
    kwargs, inputs, shape = CASES[(name, role)]
    torch.manual_seed(0)
    model = create_model(name, role, **kwargs)
    model.train()
    args, kw = inputs(model)
    out = model(*args, **kw)
    first = _first_tensor(out)
    if shape is not None:
        assert tuple(first.shape) == shape
    assert first.shape[0] == B
    for t in out if isinstance(out, (tuple, list)) else [out]:
        if isinstance(t, torch.Tensor):
            assert torch.isfinite(t).all(), f"{name}/{role} output has NaN/inf"
    _scalar(out).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads), "no gradient reached the parameters"
    assert all(torch.isfinite(g).all() for g in grads if g is not None)

    model.eval()
    model.save_pretrained(tmp_path)
    loaded = load_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    assert loaded.config == model.config
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    with torch.no_grad():
        torch.manual_seed(1)
        a = _first_tensor(model(*args, **kw))
        torch.manual_seed(1)
        b = _first_tensor(loaded(*args, **kw))
    assert torch.equal(a, b)
