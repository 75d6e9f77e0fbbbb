"""The reference training loop for the throughput benchmark: the classic DCGAN recipe.

Written the way the common tutorials do it (Radford et al. architecture; a plain
``Dataset`` that opens and decodes one JPEG file per item; ``DataLoader``; per step: D on
real, D on ``fake.detach()``, then D on fake again for G's loss with D's weight gradients
computed and thrown away; BCE losses; ``.item()`` every step for logging). It is the
baseline AvatarForge's trainer is compared against, in the same run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn


class JpegFolder(torch.utils.data.Dataset):
    """One decode per item, like torchvision's ImageFolder + ToTensor + Normalize."""

    def __init__(self, root: Path, size: int):
        self.files = sorted(Path(root).glob("*.jpg"))
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = Image.open(self.files[i]).convert("RGB")
        if img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1) / 255.0
        return (x - 0.5) / 0.5


def make_generator(nz: int = 100, ngf: int = 64, nc: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
        nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh(),
    )  # fmt: skip


def make_discriminator(ndf: int = 64, nc: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid(),
    )  # fmt: skip


def _init(m: nn.Module) -> None:
    name = type(m).__name__
    if "Conv" in name:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def train_reference(
    jpeg_dir: Path,
    steps: int,
    batch_size: int = 64,
    workers: int = 1,
    warmup: int = 2,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Run the classic loop for ``steps`` steps at 64 px; returns training images/s
    (real images consumed per second, after ``warmup`` steps).

    ``clock=time.thread_time`` with ``workers=0`` (decoding in this thread) gives images per
    CPU-second of the whole recipe, decoding included."""
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(
        JpegFolder(jpeg_dir, 64), batch_size=batch_size, shuffle=True, num_workers=workers,
        drop_last=True, persistent_workers=workers > 0,
    )  # fmt: skip
    G, D = make_generator(), make_discriminator()
    G.apply(_init)
    D.apply(_init)
    crit = nn.BCELoss()
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    done, t0 = 0, 0.0
    while done < steps + warmup:
        for real in loader:
            if done == warmup:
                t0 = clock()
            b = real.size(0)
            D.zero_grad()
            out = D(real).view(-1)
            err_real = crit(out, torch.ones(b))
            err_real.backward()
            noise = torch.randn(b, 100, 1, 1)
            fake = G(noise)
            out = D(fake.detach()).view(-1)
            err_fake = crit(out, torch.zeros(b))
            err_fake.backward()
            opt_d.step()
            G.zero_grad()
            out = D(fake).view(-1)
            err_g = crit(out, torch.ones(b))
            err_g.backward()
            opt_g.step()
            _ = (err_real + err_fake).item(), err_g.item()  # per-step logging, as in the recipe
            done += 1
            if done >= steps + warmup:
                break
    return steps * batch_size / (clock() - t0)
