"""Small seeded models and a server state for the overlay, studio and browser tests.

* :func:`tiny_pipe`: an untrained conditional RGBA StyleGAN at 32 px (``hair_color`` with three
  named classes). Its alpha channel already has fully transparent pixels (about 14%), which
  is what the PNG-with-alpha checks need; SeFa sliders come from its style weights.
* :func:`tiny_animator`: an untrained :class:`ExpressionAnimator` at 32 px whose controls
  FiLM layer is seeded random instead of zero, so the controls visibly change the frames
  (an untrained animator otherwise copies its input whatever the controls).
* :class:`ProceduralAnimator`: the procedural renderer behind the animator interface
  (``prepare`` / ``render_image``): a blink really closes the eyes, with the renderer's
  part masks to check it. It exercises the overlay's plumbing with a known ground truth.
* :class:`ProceduralGenerator` / :func:`procedural_pipe`: the procedural renderer behind the
  generator interface, at 64 px RGBA, conditioned on ``hair_color`` and ``outfit_color``
  (the renderer's classes): it really draws the requested classes, so the avatar attribute
  classifier can check what the studio made. Its first layer is a real ``Linear`` on ``z``
  (head tilt and smile), so SeFa sliders tilt the head while the attributes stay.
* :func:`make_state`: the API engineer's :class:`ServeState` when available, else a stand-in
  with the same attribute names.
"""

from __future__ import annotations

import threading
import zlib
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

SIZE = 32
HAIR = ("black", "pink", "blonde")


def tiny_pipe(seed: int = 1) -> Any:
    from avatarforge.generate import GeneratorPipeline
    from avatarforge.generate.conditioning import LabelInfo
    from avatarforge.models.stylegan import StyleGANGenerator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = StyleGANGenerator(
            resolution=SIZE,
            channels=4,
            channel_base=512,
            channel_max=64,
            z_dim=64,
            w_dim=64,
            mapping_layers=2,
            label_dims=[len(HAIR)],
        ).eval()
        with torch.no_grad():
            G.mapping.w_avg.copy_(G.mapping(torch.randn(256, 64), update_w_avg=False)[:, 0].mean(0))
    labels = LabelInfo(("hair_color",), (HAIR,), (len(HAIR),), "test")
    return GeneratorPipeline(G, labels=labels)


def tiny_animator(seed: int = 0) -> Any:
    from avatarforge.models.animator import ExpressionAnimator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        anim = ExpressionAnimator(resolution=SIZE, widths=(4, 8, 8, 16), ctrl_hidden=16, enc_blocks=1)
        with torch.no_grad():
            anim.ctrl_fc2.weight.normal_(0.0, 3.0)  # controls -> FiLM: no longer the identity
            anim.head.weight.mul_(10.0)
            anim.head.bias[4] = -1.0  # mask ~0.27: the decoder's controls-dependent output shows
    return anim.eval()


class ProceduralAnimator:
    """The procedural renderer as an "animator" of one identity (ignores the avatar image)."""

    def __init__(self, identity: int = 3, resolution: int = SIZE) -> None:
        self.identity = identity
        self.resolution = resolution
        self.calls = 0

    def prepare(self, avatar: Any) -> int:
        return self.identity

    def render_image(self, state: int, controls: Any) -> np.ndarray:
        from avatarforge.data.procedural import render_expressions

        self.calls += 1
        expr = {k: float(v) for k, v in dict(controls).items()}
        return render_expressions(state, [expr], self.resolution)[0]

    def eye_region(self) -> np.ndarray:
        """Where the eyes are drawn (open eyes, union of both), as a boolean mask."""
        from avatarforge.data import procedural as P

        _img, parts = P.render(P.sample_attributes(self.identity), self.resolution, return_parts=True)
        return (parts["eye_white"] > 0) | (parts["iris"] > 0)


class ProceduralGenerator(torch.nn.Module):
    """Procedural avatars behind the GAN generator interface (a seeded, exact "generator").

    ``z`` (``z_dim`` 6) splits in two: ``z[:2]`` goes through :attr:`first` (a ``Linear`` whose
    weights are zero on the other inputs) to ``head_tilt`` and ``smile`` (``tanh``), so the
    first two SeFa directions of that layer are exactly ``e0`` (tilt, the larger weight) and
    ``e1`` (smile) and move nothing else; ``z[2:]`` (rounded to 1e-3) seeds the identity
    (:func:`~avatarforge.data.procedural.sample_attributes`), so any other move of ``z`` (a
    refine step's) draws another character. The labels fix ``hair_color`` and
    ``outfit_color`` (the "unknown" index leaves the identity's own class). Truncation scales
    the expression (``z[:2] * psi``), not the identity.
    """

    resolution, channels, z_dim = 64, 4, 6
    names = ("hair_color", "outfit_color")

    def __init__(self) -> None:
        from avatarforge.data import procedural as P

        super().__init__()
        self.values = tuple(tuple(P.SCHEMA[n].values) for n in self.names)
        self.label_dims = [len(v) for v in self.values]
        self.code_dims = {"categorical": [], "continuous": 0}
        self.first = torch.nn.Linear(self.z_dim, 2, bias=False)
        with torch.no_grad():
            self.first.weight.zero_()
            self.first.weight[0, 0] = 0.8  # z0 -> head_tilt
            self.first.weight[1, 1] = 0.3  # z1 -> smile

    def sample_z(self, n: int, generator: Any = None, device: Any = None) -> torch.Tensor:
        return torch.randn(n, self.z_dim, generator=generator).to(device or "cpu")

    def identity_seed(self, z: torch.Tensor) -> int:
        """The procedural seed of one latent: a hash of its identity part, ``z[2:]``."""
        key = np.round(z[2:].detach().double().cpu().numpy() * 1000).astype(np.int64)
        return zlib.crc32(key.tobytes())

    def forward(
        self, z: torch.Tensor, labels: Any = None, codes: Any = None, truncation_psi: float = 1.0
    ) -> torch.Tensor:
        from avatarforge.data import procedural as P

        if codes is not None:
            raise ValueError("this generator has no latent codes")
        pose = torch.tanh(self.first(z * truncation_psi)).tolist()
        out = []
        for i in range(len(z)):
            fixed: dict[str, Any] = {"head_tilt": round(pose[i][0], 4), "smile": round(pose[i][1], 4)}
            for col, (name, values) in enumerate(zip(self.names, self.values)):
                k = int(labels[i, col]) if labels is not None else len(values)
                if k < len(values):  # len(values): unknown, the identity's own class
                    fixed[name] = values[k]
            img = P.render(P.sample_attributes(self.identity_seed(z[i]), **fixed), self.resolution)
            out.append(torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1)
        return torch.stack(out).to(z.device)


def procedural_pipe() -> Any:
    """A :class:`GeneratorPipeline` of :class:`ProceduralGenerator` with its class names."""
    from avatarforge.generate import GeneratorPipeline
    from avatarforge.generate.conditioning import LabelInfo

    G = ProceduralGenerator()
    labels = LabelInfo(G.names, G.values, tuple(G.label_dims), "procedural")
    return GeneratorPipeline(G, labels=labels)


def make_state(pipe: Any, animator: Any = None, **settings: Any) -> Any:
    """A server state around in-memory models (the real ServeState when it exists)."""
    try:
        from avatarforge.serve.state import ServeSettings, ServeState
    except ImportError:  # before the API engineer's module lands
        from avatarforge.generate import directions as D

        dirs = {d.id: d for d in D.label_directions(pipe)} if pipe.labels.dims else {}
        if pipe.is_stylegan:
            dirs.update({d.id: d for d in D.sefa_directions(pipe, k=4, n_samples=128)})
        return SimpleNamespace(
            pipe=pipe,
            animator=animator,
            directions=dirs,
            settings=SimpleNamespace(api_key=settings.get("api_key"), max_fps=60, max_n=64),
            lock=threading.Lock(),
        )
    return ServeState.from_pipeline(pipe, animator=animator, settings=ServeSettings(**settings))
