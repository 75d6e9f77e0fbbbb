"""Shared fixtures. Tests run on CPU with small, seeded models."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED_FACES = ROOT.parent / "shared" / "data" / "anime-faces-96"

#: Seed of the small training runs whose results the ``numerics`` tests assert on. Another
#: seed is another training trajectory, as another CPU's rounding gives: the thresholds were set
#: from the spread over ``AF_TEST_SEED=0..3`` on two emulated CPUs (tools/numerics_spread.py,
#: docs/testing.md). Leave it unset for a normal run.
TRAIN_SEED = int(os.environ.get("AF_TEST_SEED", "0"))


@pytest.fixture
def record_number(record_property):
    """``record_number(name, value)``: keep a measured value in the JUnit XML report (read by
    tools/numerics_spread.py to measure a threshold's margin across CPUs, threads and seeds)."""

    def record(name: str, value: float) -> None:
        record_property(name, float(value))

    return record


@pytest.fixture(autouse=True)
def _seed_everything():
    # Tests must not depend on what ran before them.
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def shared_faces() -> Path:
    """The shared real anime-faces folder; tests using it skip cleanly when it is absent."""
    if not SHARED_FACES.is_dir():
        pytest.skip(f"shared data set not found at {SHARED_FACES} (only present beside the project checkout)")
    return SHARED_FACES


@pytest.fixture(scope="session")
def eval_cache(tmp_path_factory) -> Path:
    """The session's cache directory (also set as $AVATARFORGE_CACHE for every eval test)."""
    return tmp_path_factory.mktemp("avatarforge-cache")


@pytest.fixture(scope="session")
def avatar_extractor(eval_cache):
    """The default-recipe avatar extractor, trained once into the session cache.

    Set ``AVATARFORGE_TEST_AVATAR_CACHE=DIR`` to keep the trained net in DIR between test
    sessions (it is keyed by the recipe hash; bump ``AvatarNetRecipe.version`` when changing
    the training code, or the old net is reused).
    """
    from avatarforge.eval.avatar_net import DEFAULT_RECIPE, AvatarExtractor

    root = os.environ.get("AVATARFORGE_TEST_AVATAR_CACHE") or eval_cache
    recipe = dataclasses.replace(DEFAULT_RECIPE, seed=TRAIN_SEED) if TRAIN_SEED else None
    ext = AvatarExtractor(cache_dir=root, recipe=recipe)
    print(
        f"\navatar net report: {ext.report.get('accuracy')} "
        f"eye_color_eyes_open={ext.report.get('eye_color_eyes_open')} "
        f"train_s={ext.report.get('train_seconds')} render_s={ext.report.get('render_seconds')}"
    )
    return ext


def make_packed(
    path: Path, n: int = 16, size: int = 32, channels: int = 3, seed: int = 0, labelled: bool = True
):
    """A tiny packed data set of seeded random blobs with two labels (for tests of other modules)."""
    from avatarforge.data.packed import LabelField, LabelSchema, PackedWriter

    rng = np.random.default_rng(seed)
    schema = LabelSchema(
        (LabelField("color", "categorical", ("red", "green", "blue")), LabelField("smile", "continuous"))
    )
    with PackedWriter(path, size=size, channels=channels, schema=schema) as w:
        for i in range(n):
            img = np.zeros((size, size, channels), np.uint8)
            c = i % 3
            yy, xx = np.mgrid[:size, :size]
            cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
            blob = (yy - cy) ** 2 + (xx - cx) ** 2 < (size // 4) ** 2
            img[blob, c] = 255
            if channels == 4:
                img[blob, 3] = 255
            labels = {"color": c, "smile": float(rng.random())} if labelled and i % 4 else None
            w.add(img, source=f"blob{i}.png", labels=labels)
    return path


def save_tiny_stylegan(
    path: Path,
    seed: int,
    *,
    resolution: int,
    channel_base: int,
    channel_max: int,
    dim: int,
    label_dims: list[int] | None = None,
    w_avg_samples: int = 256,
    noise_strength: float | None = None,
) -> Path:
    """An untrained RGBA StyleGAN generator saved as an EMA checkpoint (``g_ema_*``) in ``path``.

    ``w_avg`` is set to the mean w of ``w_avg_samples`` latents (random labels for a
    conditional model), so truncation pulls toward a real centre; ``noise_strength`` makes
    the (untrained, zero) noise inputs visible. Seeded and independent of the global RNG.
    """
    from avatarforge.models.stylegan import StyleGANGenerator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = StyleGANGenerator(
            resolution=resolution,
            channels=4,
            channel_base=channel_base,
            channel_max=channel_max,
            z_dim=dim,
            w_dim=dim,
            mapping_layers=2,
            label_dims=label_dims,
        ).eval()
        with torch.no_grad():
            labels = None
            if label_dims:
                labels = torch.stack([torch.randint(k, (w_avg_samples,)) for k in label_dims], 1)
            z = torch.randn(w_avg_samples, dim)
            G.mapping.w_avg.copy_(G.mapping(z, labels, update_w_avg=False)[:, 0].mean(0))
            if noise_strength is not None:
                for name, p in G.named_parameters():
                    if name.endswith("noise_strength"):
                        p.fill_(noise_strength)
    G.save_pretrained(path, prefix="g_ema_")
    return path


def fit_through_nan_event(
    trainer_cls: type, cfg: Any, poisoned: Callable[[Any], torch.Tensor]
) -> tuple[Any, Path]:
    """Train ``cfg`` with ``poisoned(trainer)`` filled with NaN after step 2 and a stop request
    at step 4, and check what every trainer must do about it: warn, roll back once (one event,
    at step 2) and stop at step 4 with a checkpoint. ``(trainer, run_dir)`` for the family's
    own checks (its learning rate, its weights)."""
    from avatarforge.train.checkpoint import find_checkpoint
    from avatarforge.train.guard import NonFiniteWarning
    from avatarforge.train.metrics_log import read_metrics

    fired = False

    def hook(trainer: Any) -> None:
        nonlocal fired
        if trainer.step == 2 and not fired:
            fired = True
            with torch.no_grad():
                poisoned(trainer).fill_(float("nan"))
        if trainer.step == 4:
            trainer.stop.request("test")

    trainer = trainer_cls(cfg, step_hook=hook)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = trainer.fit()
    assert any(issubclass(w.category, NonFiniteWarning) for w in caught)
    assert trainer.stopped_by == "signal:test" and trainer.step == 4
    assert find_checkpoint(run).name == "ckpt-00000004"
    events = read_metrics(run, kind="event")
    assert len(events) == 1 and events[0]["step"] == 2
    return trainer, run
