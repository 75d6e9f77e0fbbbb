"""Tiny models for the generation tests, built once per session.

* ``cgan_run``: a cgan trained for 160 steps at 32 px on 400 procedural avatars (on white,
  no accessories) conditioned on ``hair_color`` -- a real run directory from the trainer,
  about 6-10 s on one thread. Short, but enough for the requested hair colour to show.
* ``stylegan_ckpt``: an untrained RGBA StyleGAN (32 px, w_dim 64) saved as a checkpoint, its
  ``w_avg`` set to the mean ``w``; enough for the w-space mechanics (mixing, truncation,
  SeFa/GANSpace, inversion).
* ``infogan_ckpt``: an untrained InfoGAN (one 3-way categorical + two continuous codes).
* ``vae_ckpt``: an untrained VAE, for the encoder initialisation of inversion.

Everything runs on one CPU thread (the machine is shared).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avatarforge.data import procedural as P
from tests.conftest import TRAIN_SEED, save_tiny_stylegan

SIZE = 32
HAIR = list(P.HAIR_COLORS)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def on_white(rgba: np.ndarray) -> np.ndarray:
    a = rgba[..., 3:4] / 255.0
    return (rgba[..., :3] * a + 255 * (1 - a)).round().astype(np.uint8)


@pytest.fixture(scope="session")
def hair_data(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """400 avatars on white labelled by hair colour, and the region where >60 % have hair."""
    from avatarforge.data.packed import LabelSchema, PackedWriter

    ds = tmp_path_factory.mktemp("gen-data") / "avatars"
    freq = np.zeros((SIZE, SIZE))
    with PackedWriter(ds, size=SIZE, channels=3, schema=LabelSchema((P.SCHEMA["hair_color"],))) as w:
        for i in range(400):
            attrs = P.sample_attributes(i, accessory="none")
            img, parts = P.render(attrs, SIZE, return_parts=True)
            freq += parts["hair"]
            w.add(on_white(img), labels={"hair_color": attrs["hair_color"]})
    return ds, freq / 400 > 0.6


def read_hair(images: np.ndarray, region: np.ndarray) -> list[str]:
    """Nearest named hair colour of the median pixel in the hair region (tests/train's reader)."""
    return [P.nearest_color(np.median(im[region][:, :3], axis=0), P.HAIR_COLORS) for im in images]


def hair_distance(images: np.ndarray, region: np.ndarray, colour: str) -> np.ndarray:
    """RGB distance of each image's median hair-region colour to the named hair colour."""
    target = np.array(P.HAIR_COLORS[colour], float)
    med = np.stack([np.median(im[region][:, :3].astype(float), axis=0) for im in images])
    return np.linalg.norm(med - target, axis=1)


@pytest.fixture(scope="session")
def cgan_run(hair_data, tmp_path_factory) -> Path:
    from avatarforge.config import build_train_config
    from avatarforge.train.gan import GANTrainer

    ds, _ = hair_data
    runs = tmp_path_factory.mktemp("gen-runs")
    threads = torch.get_num_threads()
    cfg = build_train_config(
        cli={"model": {"name": "cgan"}, "data": {"path": str(ds)}},
        overrides=[
            "batch_size=32", "kimg=5.12", f"runs_dir={runs}", f"seed={TRAIN_SEED}",  # 160 steps
            "log.sample_every_kimg=0", "log.checkpoint_every_kimg=0", "log.progress=false",
            "perf.num_threads=1", "model.g_kwargs.base_channels=16", "model.d_kwargs.base_channels=16",
            "optim.g_lr=1e-3", "optim.d_lr=1e-3",
        ],
    )  # fmt: skip
    try:
        return GANTrainer(cfg).fit()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def stylegan_ckpt(tmp_path_factory) -> Path:
    # Untrained noise strengths are 0: 0.1 makes the noise visible.
    path = tmp_path_factory.mktemp("gen-stylegan") / "ckpt"
    return save_tiny_stylegan(
        path,
        1,
        resolution=SIZE,
        channel_base=512,
        channel_max=64,
        dim=64,
        w_avg_samples=512,
        noise_strength=0.1,
    )


@pytest.fixture(scope="session")
def infogan_ckpt(tmp_path_factory) -> Path:
    from avatarforge.models.infogan import InfoGANGenerator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        G = InfoGANGenerator(
            resolution=SIZE, z_dim=32, code_dims={"categorical": [3], "continuous": 2}, base_channels=16
        ).eval()
    path = tmp_path_factory.mktemp("gen-infogan") / "ckpt"
    G.save_pretrained(path, prefix="g_ema_")
    return path


@pytest.fixture(scope="session")
def vae_ckpt(tmp_path_factory) -> Path:
    from avatarforge.models.vae import VAE

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        vae = VAE(resolution=SIZE, z_dim=16, base_channels=8).eval()
    path = tmp_path_factory.mktemp("gen-vae") / "ckpt"
    vae.save_pretrained(path, prefix="vae_")
    return path


@pytest.fixture(scope="session")
def cgan_pipe(cgan_run):
    from avatarforge.generate import GeneratorPipeline

    return GeneratorPipeline.from_pretrained(cgan_run)


@pytest.fixture(scope="session")
def sg_pipe(stylegan_ckpt):
    from avatarforge.generate import GeneratorPipeline

    return GeneratorPipeline.from_pretrained(stylegan_ckpt)


@pytest.fixture(scope="session")
def info_pipe(infogan_ckpt):
    from avatarforge.generate import GeneratorPipeline

    return GeneratorPipeline.from_pretrained(infogan_ckpt)
