"""Latent sliders for every generator family (issue 18, defect 2 / deliverable 2).

SeFa and GANSpace on the first layer's ``z`` weights for dcgan, cgan, infogan and the VAEs
(StyleGAN keeps its w-space methods, tested in test_personalise.py): tiny seeded untrained
models, so each case takes milliseconds; the CLI case uses the session's trained cgan run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avatarforge.generate import (
    GeneratorPipeline,
    apply_direction,
    ganspace_directions,
    sefa_directions,
    slide,
)
from avatarforge.generate.conditioning import LabelInfo
from avatarforge.generate.directions import _z_input_weights, load_directions, name_directions

HAIR = ("black", "pink", "blonde")


def _pipe(family: str) -> GeneratorPipeline:
    from avatarforge.models.cgan import CGANGenerator
    from avatarforge.models.dcgan import DCGANGenerator
    from avatarforge.models.infogan import InfoGANGenerator
    from avatarforge.models.vae import CVAE, VAE

    labels = LabelInfo(("hair_color",), (HAIR,), (3,), "test")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        if family == "dcgan":
            return GeneratorPipeline(DCGANGenerator(resolution=32, channels=4, z_dim=24, base_channels=8))
        if family == "dcgan-cond":
            G = DCGANGenerator(resolution=32, channels=4, z_dim=24, label_dims=[3], base_channels=8)
            return GeneratorPipeline(G, labels=labels)
        if family == "cgan":
            G = CGANGenerator(resolution=32, channels=4, z_dim=24, label_dims=[3], base_channels=8)
            return GeneratorPipeline(G, labels=labels)
        if family == "infogan":
            G = InfoGANGenerator(
                resolution=32, z_dim=24, code_dims={"categorical": [3], "continuous": 2}, base_channels=8
            )
            return GeneratorPipeline(G)
        if family == "vae":
            vae = VAE(resolution=32, z_dim=16, base_channels=8)
            return GeneratorPipeline(vae.decoder, vae=vae)
        vae = CVAE(resolution=32, z_dim=16, base_channels=8, label_dims=[3], label_values=[list(HAIR)])
        return GeneratorPipeline(vae.decoder, vae=vae, labels=labels)


FAMILIES = ["dcgan", "dcgan-cond", "cgan", "infogan", "vae", "cvae"]


@pytest.mark.parametrize("family", FAMILIES)
def test_sefa_on_the_first_layer_gives_orthonormal_z_sliders_that_move_the_image(family):
    pipe = _pipe(family)
    dirs = sefa_directions(pipe, k=4, n_samples=512)
    assert [d.id for d in dirs] == ["sefa0", "sefa1", "sefa2", "sefa3"]
    assert all(d.kind == "z" and d.method == "sefa" for d in dirs)
    V = torch.tensor([d.vector for d in dirs], dtype=torch.float64)  # (k, z_dim)
    assert V.shape[1] == pipe.z_dim
    assert torch.allclose(V @ V.T, torch.eye(4, dtype=torch.float64), atol=1e-5)  # orthonormal
    scores = [d.score for d in dirs]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]
    assert all(0.8 < d.scale < 1.2 for d in dirs)  # z ~ N(0, I): one std ~ one unit
    # the first direction is the unit z move the first layer answers most to
    A = _z_input_weights(pipe)
    rand = torch.nn.functional.normalize(torch.randn(64, pipe.z_dim, dtype=torch.float64), dim=1)
    assert (A @ V[0]).norm() >= (A @ rand.T).norm(dim=0).max()
    # moving along a direction changes the image (by a good part of what another seed's z
    # changes, in float output: untrained generators draw faint images); amount 0 keeps it
    lat = pipe.latents([3, 4])
    base = pipe.render_float(lat)
    other = (pipe.render_float(pipe.latents([5, 6])) - base).abs().mean()
    assert torch.equal(pipe.render_float(apply_direction(pipe, lat, dirs[0], 0.0)), base)
    for d in dirs[:2]:
        moved = pipe.render_float(apply_direction(pipe, lat, d, 3.0))
        assert (moved - base).abs().mean() > 0.05 * other, (family, d.id)
    base = pipe.render(lat)
    strip = slide(pipe, lat[:1], dirs[0], amounts=[-2.0, 0.0, 2.0])
    assert np.array_equal(strip.images[1], base[0]) and not np.array_equal(strip.images[0], strip.images[2])
    # the labels and codes are kept: only z moves
    moved = apply_direction(pipe, lat, dirs[0], 1.5)
    for field in ("labels", "codes"):
        a, b = getattr(moved, field), getattr(lat, field)
        assert (a is None and b is None) or torch.equal(a, b)
    dz = (moved.z - lat.z).double()
    assert torch.allclose(dz, 1.5 * dirs[0].scale * V[0].expand_as(dz), atol=1e-5)


@pytest.mark.parametrize("family", ["cgan", "vae"])
def test_ganspace_on_the_first_layer_features(family):
    pipe = _pipe(family)
    dirs = ganspace_directions(pipe, k=3, n_samples=2048)
    assert [d.id for d in dirs] == ["pca0", "pca1", "pca2"] and all(d.kind == "z" for d in dirs)
    V = torch.tensor([d.vector for d in dirs], dtype=torch.float64)
    assert torch.allclose(V.norm(dim=1), torch.ones(3, dtype=torch.float64), atol=1e-6)
    assert dirs[0].score >= dirs[1].score >= dirs[2].score > 0
    # with z ~ N(0, I) and a linear first layer, the top component is (up to sampling noise)
    # a z move the first layer answers to about as much as to SeFa's top direction
    A = _z_input_weights(pipe)
    sefa0 = torch.tensor(sefa_directions(pipe, k=1)[0].vector, dtype=torch.float64)
    assert (A @ V[0]).norm() > 0.9 * (A @ sefa0).norm()
    lat = pipe.latents([5])
    assert not np.array_equal(pipe.render(apply_direction(pipe, lat, dirs[0], 3.0)), pipe.render(lat))


def test_z_sliders_are_named_and_refuse_other_models():
    pipe = _pipe("cgan")

    def brightness(images):
        return {"brightness": {"": images[..., :3].mean(axis=(1, 2, 3)) / 255}}

    named = name_directions(pipe, sefa_directions(pipe, k=3), classifier=brightness, n=8, min_effect=0.0)
    assert (
        all(d.name.startswith("brightness") for d in named) and named[0].effect["attribute"] == "brightness"
    )
    with pytest.raises(ValueError, match="layers=\\(0,\\)"):
        sefa_directions(pipe, layers=(1,))
    vae = _pipe("vae")
    with pytest.raises(ValueError, match=r"has 24 entries; this model's z has 16"):
        apply_direction(vae, vae.latents([1]), named[0], 1.0)  # cgan's z has 24 entries


def test_edit_directions_and_slide_work_on_the_quickstart_like_cgan(cgan_run, tmp_path, capsys):
    """Issue 18, defect 2: 'edit directions --method sefa' / 'pca' on a trained cgan (the
    quickstart's family) used to fail with "GANSpace directions live in StyleGAN's w space"."""
    from tests.generate.test_cli import edit

    out = tmp_path / "sefa.json"
    assert edit(["directions", cgan_run, "--method", "sefa", "--k", "3", "--no-name", "--out", out]) == 0
    data = json.loads(out.read_text())
    assert [d["id"] for d in data["directions"]] == ["sefa0", "sefa1", "sefa2"]
    assert all(d["kind"] == "z" for d in data["directions"])
    pca = tmp_path / "pca.json"
    assert edit(["directions", cgan_run, "--method", "pca", "--k", "2", "--no-name", "--out", pca]) == 0
    slid = tmp_path / "slid"
    argv = ["slide", cgan_run, "--seed", "7", "--direction", "sefa0", "--directions", out]
    assert edit([*argv, "--amounts=-3,0,3", "--out", slid]) == 0
    files = sorted(slid.glob("*.png"))
    assert len(files) == 3
    from PIL import Image

    imgs = [np.asarray(Image.open(f)).astype(float) for f in files]
    assert np.abs(imgs[0] - imgs[2]).mean() > 1.0
    # computed on the fly too, and the server would load the same file next to the run
    on_the_fly = tmp_path / "fly"
    assert edit(["slide", cgan_run, "--seed", "7", "--direction", "sefa1", "--out", on_the_fly]) == 0
    pipe = GeneratorPipeline.from_pretrained(cgan_run)
    assert [d.id for d in load_directions(out, pipe)] == ["sefa0", "sefa1", "sefa2"]
    assert "wrote 3 directions" in capsys.readouterr().out
