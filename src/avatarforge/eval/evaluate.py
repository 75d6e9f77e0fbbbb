"""The top-level evaluation API: :func:`evaluate` and the in-training hook :func:`make_metric_fn`.

::

    from avatarforge.eval import evaluate

    result = evaluate("runs/00003-stylegan-64", "data/avatars64",
                      metrics=["fid", "kid", "pr", "swd"], extractor="avatar", n=5000)
    print(result.summary())
    result.save("results.json")          # or evaluate(..., out="results.json")
    result.metrics["fid_avatar"]

Result keys: feature metrics computed with the ``inception`` extractor are named plainly
(``fid``, ``kid``, ``kid_std``, ``precision``, ``recall``); with any other extractor the
extractor name follows the metric name (``fid_avatar``, ``kid_avatar``, ``kid_avatar_std``,
``precision_avatar``), so scores from different feature spaces are never confused. SWD
(``swd``, ``swd_<res>``), attribute accuracy (``attr_acc``, ``attr_acc_<attribute>``) and
reconstruction (``mse``, ``psnr``, ``ssim``) do not depend on the extractor.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avatarforge import __version__
from avatarforge.device import resolve_device
from avatarforge.eval.extractors import FeatureExtractor, get_extractor
from avatarforge.eval.metrics import Metric, get_metric
from avatarforge.eval.sources import GeneratorSource, ImageSource, SourceError, open_source
from avatarforge.eval.stats_cache import FeatureSet, StatsCache, cache_key

__all__ = [
    "RESULT_FORMAT",
    "EvalResult",
    "Evaluator",
    "evaluate",
    "make_metric_fn",
    "metric_key",
]

RESULT_FORMAT = "avatarforge-eval"
_RESULT_VERSION = 1
DEFAULT_METRICS = ("fid", "kid", "pr")


def metric_key(key: str, extractor: str | None) -> str:
    """Result key of a feature metric for an extractor: ``fid`` / ``fid_avatar`` / ``kid_avatar_std``."""
    if not extractor or extractor == "inception":
        return key
    head, _, tail = key.partition("_")
    return f"{head}_{extractor}" + (f"_{tail}" if tail else "")


def _finite_or_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite_or_none(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite_or_none(x) for x in v]
    return v


# ============================================================================ result
@dataclass
class EvalResult:
    """What :func:`evaluate` returns.

    Attributes:
        metrics: every number, by result key (see the module docstring).
        settings: what was evaluated and how (metrics, extractor, counts, seed, ...).
        source, reference: descriptions of the two image sets (kind, path, count, hash).
        notes: warnings about the numbers (small sample counts, resizing, skipped labels).
        timing: seconds per phase.
    """

    metrics: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite numbers, e.g. the PSNR of identical images, become null)."""
        return _finite_or_none(
            {
                "format": RESULT_FORMAT,
                "version": _RESULT_VERSION,
                "metrics": self.metrics,
                "settings": self.settings,
                "source": self.source,
                "reference": self.reference,
                "notes": self.notes,
                "timing": self.timing,
                "versions": {
                    "avatarforge": __version__,
                    "torch": torch.__version__,
                    "numpy": np.__version__,
                    "scipy": _scipy_version(),
                    "python": platform.python_version(),
                },
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
        )

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_json` to ``path`` atomically."""
        from avatarforge.fileio import atomic_write_json

        return atomic_write_json(path, self.to_json())

    def summary(self) -> str:
        """A few human-readable lines: what was compared, each score, notes."""
        ext = self.settings.get("extractor") or {}
        lines = ["AvatarForge evaluation"]
        lines.append(f"  source     {_describe(self.source)}")
        if self.reference:
            lines.append(f"  reference  {_describe(self.reference)}")
        if ext:
            lines.append(f"  features   {ext.get('identity', ext.get('name'))} ({ext.get('feature_dim')}-d)")
        lines.append(f"  seed {self.settings.get('seed')}, truncation {self.settings.get('truncation')}")
        width = max((len(k) for k in self.metrics), default=0)
        for k, v in self.metrics.items():
            lines.append(f"  {k:<{width}}  {_fmt(v)}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _scipy_version() -> str:
    import scipy

    return scipy.__version__


def _describe(info: Mapping[str, Any]) -> str:
    what = info.get("path") or info.get("model") or info.get("kind")
    h = info.get("content_hash")
    extra = f", hash {h[:12]}" if h else ""
    return f"{what} ({info.get('kind')}, {info.get('images')} images, {info.get('resolution')} px{extra})"


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    a = abs(v)
    return f"{v:.6f}" if 0 < a < 0.01 else f"{v:.4f}"


# ============================================================================ the engine
def _resize_u8(batch: np.ndarray, size: int) -> np.ndarray:
    """(B, H, W, 3) uint8 -> (B, size, size, 3), bilinear with antialiasing."""
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _progress(it: Iterable[Any], total: int | None, desc: str, enabled: bool) -> Iterable[Any]:
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc, unit="batch", leave=False, file=sys.stderr)


class Evaluator:
    """Reusable evaluation against one reference: the reference's features and SWD
    descriptors are computed (or loaded from the cache) once, then any number of sources
    can be scored with :meth:`run`. :func:`evaluate` and :func:`make_metric_fn` use it.

    Args: see :func:`evaluate`.
    """

    def __init__(
        self,
        reference: str | Path | ImageSource | None,
        *,
        metrics: Sequence[str] = DEFAULT_METRICS,
        extractor: str | FeatureExtractor = "inception",
        weights: str | Path | None = None,
        n_ref: int | None = None,
        batch_size: int = 64,
        seed: int = 0,
        device: str | torch.device | None = "auto",
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        progress: bool = False,
        size: int | None = None,
    ) -> None:
        self.metric_names = _parse_metrics(metrics)
        self.metrics: list[Metric] = [get_metric(m) for m in self.metric_names]
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.device = resolve_device(device)
        self.cache = StatsCache(cache_dir) if use_cache else None
        self.cache_dir = cache_dir
        self.progress = progress
        self.notes: list[str] = []
        self.timing: dict[str, float] = {}
        kinds = {m.kind for m in self.metrics}
        self._extractor_spec = extractor
        self._weights = weights
        self._extractor: FeatureExtractor | None = None
        self._avatar: Any = None
        if "features" in kinds:
            self._extractor = self._build_extractor(extractor, weights)
        if kinds & {"features", "images", "reconstruction"} and reference is None:
            needs = [m.name for m in self.metrics if m.kind in ("features", "images", "reconstruction")]
            raise SourceError(
                f"metrics {', '.join(needs)} compare against reference images: pass a reference (--ref)"
            )
        self.reference: ImageSource | None = (
            open_source(reference, n=n_ref, seed=seed, device=self.device, size=size, what="reference")
            if reference is not None
            else None
        )
        self._ref_features: FeatureSet | None = None
        self._ref_images: dict[str, Any] = {}

    # ------------------------------------------------------------------ extractors
    def _build_extractor(self, spec: str | FeatureExtractor, weights: str | Path | None) -> FeatureExtractor:
        if isinstance(spec, FeatureExtractor):
            return spec.to(self.device)
        if spec == "auto":
            from avatarforge.eval.inception import default_weights_path

            spec = "inception" if weights is not None or default_weights_path().is_file() else "avatar"
            if spec == "avatar":
                self.notes.append(
                    f"extractor 'auto': no Inception weights at {default_weights_path()}, used the avatar extractor"
                )
        kwargs: dict[str, Any] = {}
        if spec == "avatar":
            kwargs = {"cache_dir": self.cache_dir, "progress": self.progress}
        t0 = time.perf_counter()
        ext = get_extractor(spec, weights=weights, device=self.device, **kwargs)
        self.timing["extractor_load_s"] = round(time.perf_counter() - t0, 3)
        return ext

    @property
    def extractor(self) -> FeatureExtractor | None:
        return self._extractor

    def avatar_extractor(self) -> Any:
        """The ``avatar`` extractor (for attribute accuracy), shared with the feature one if equal."""
        if self._avatar is None:
            spec = self._extractor_spec
            if self._extractor is not None and self._extractor.name == "avatar":
                self._avatar = self._extractor
            elif isinstance(spec, FeatureExtractor) and spec.name == "avatar":
                self._avatar = spec.to(self.device)
            else:
                self._avatar = get_extractor(
                    "avatar", device=self.device, cache_dir=self.cache_dir, progress=self.progress
                )
        return self._avatar

    # ------------------------------------------------------------------ scanning
    def _image_metrics(self) -> list[Metric]:
        return [m for m in self.metrics if m.kind == "images"]

    def _scan(
        self, source: ImageSource, *, features: bool, resolution: int | None, seed: int, desc: str
    ) -> tuple[FeatureSet | None, dict[str, Any]]:
        """One pass over ``source``: extractor features and/or image-metric accumulators."""
        accs: dict[str, Any] = {}
        res = resolution or source.resolution
        for m in self._image_metrics():
            assert m.accumulator is not None
            accs[m.name] = m.accumulator(res, seed=seed, expected_images=len(source))
        feats: list[torch.Tensor] = []
        total = math.ceil(len(source) / self.batch_size)
        for batch in _progress(source.batches(self.batch_size), total, desc, self.progress):
            if features:
                assert self._extractor is not None
                feats.append(self._extractor(batch))
            if accs:
                b = batch if batch.shape[1] == res else _resize_u8(batch, res)
                for acc in accs.values():
                    acc.feed(b)
        fs = None
        if features:
            fs = FeatureSet(
                torch.cat(feats).numpy(), {"source": source.info(), "extractor": self._extractor.identity}
            )  # type: ignore[union-attr]
        return fs, accs

    def _features_of(self, source: ImageSource, desc: str) -> tuple[FeatureSet, dict[str, Any]]:
        """Features of a fixed-content source through the cache; SWD accumulators if needed."""
        assert self._extractor is not None
        h = source.content_hash
        ref_res = self.reference.resolution if self.reference is not None else None
        need_images = bool(self._image_metrics())
        if h is None or self.cache is None:
            fs, accs = self._scan(source, features=True, resolution=ref_res, seed=self.seed, desc=desc)
            assert fs is not None
            return fs, accs
        key = cache_key(h, self._extractor.identity, {"images": len(source)})
        accs: dict[str, Any] = {}

        def compute() -> FeatureSet:
            fs, a = self._scan(source, features=True, resolution=ref_res, seed=self.seed, desc=desc)
            accs.update(a)
            assert fs is not None
            return fs

        fs = self.cache.get_or_compute(key, compute)
        if need_images and not accs:
            _, accs = self._scan(source, features=False, resolution=ref_res, seed=self.seed, desc=desc)
        return fs, accs

    def prepare_reference(self) -> None:
        """Compute (or load) what the metrics need from the reference; idempotent."""
        if self.reference is None or self._ref_features is not None or self._ref_images:
            return
        t0 = time.perf_counter()
        need_features = self._extractor is not None
        if need_features:
            ref = self.reference
            if ref.content_hash is not None and self.cache is not None:
                key = cache_key(ref.content_hash, self._extractor.identity, {"images": len(ref)})  # type: ignore[union-attr]
                accs: dict[str, Any] = {}

                def compute() -> FeatureSet:
                    fs, a = self._scan(ref, features=True, resolution=None, seed=self.seed, desc="reference")
                    accs.update(a)
                    assert fs is not None
                    return fs

                self._ref_features = self.cache.get_or_compute(key, compute)
                self._ref_images = accs
            else:
                self._ref_features, self._ref_images = self._scan(
                    ref, features=True, resolution=None, seed=self.seed, desc="reference"
                )
        if self._image_metrics() and not self._ref_images:
            _, self._ref_images = self._scan(
                self.reference, features=False, resolution=None, seed=self.seed, desc="reference"
            )
        self.timing["reference_s"] = round(time.perf_counter() - t0, 3)

    # ------------------------------------------------------------------ running
    def run(
        self,
        source: ImageSource,
        *,
        label_names: Sequence[str] | None = None,
        label_values: Sequence[Sequence[str]] | None = None,
        model: nn.Module | None = None,
    ) -> tuple[dict[str, float], list[str]]:
        """Score ``source`` against the reference; returns ``(metrics, notes)``.

        ``label_names``/``label_values`` describe a conditional generator's labels (for
        ``attr``); ``model`` is the VAE for ``recon`` (default: ``source.vae`` when the
        source is a VAE run).
        """
        self.prepare_reference()
        notes: list[str] = []
        out: dict[str, float] = {}
        t0 = time.perf_counter()
        kinds = {m.kind for m in self.metrics}
        fake_fs, fake_accs = None, {}
        if "features" in kinds:
            fake_fs, fake_accs = self._features_of(source, "source")
        elif "images" in kinds:
            ref_res = self.reference.resolution if self.reference is not None else None
            _, fake_accs = self._scan(
                source, features=False, resolution=ref_res, seed=self.seed, desc="source"
            )
        if (
            self.reference is not None
            and "images" in kinds
            and source.resolution != self.reference.resolution
        ):
            notes.append(
                f"source images ({source.resolution} px) were resized to the reference's "
                f"{self.reference.resolution} px for SWD"
            )
        self.timing["source_s"] = round(time.perf_counter() - t0, 3)
        t1 = time.perf_counter()
        ext_name = self._extractor.name if self._extractor is not None else None
        for m in self.metrics:
            if m.kind == "features":
                assert self._ref_features is not None and fake_fs is not None
                res = m.compute(self._ref_features, fake_fs, seed=self.seed)
                out.update({metric_key(k, ext_name): float(v) for k, v in res.items()})
            elif m.kind == "images":
                res = m.compute(self._ref_images[m.name], fake_accs[m.name], seed=self.seed)
                out.update({k: float(v) for k, v in res.items()})
            elif m.kind == "generator":
                res = m.compute(
                    source,
                    avatar=self.avatar_extractor,  # built by the metric once the source passes its checks
                    batch_size=self.batch_size,
                    label_names=label_names,
                    label_values=label_values,
                    notes=notes,
                )
                out.update(res)
            elif m.kind == "reconstruction":
                vae = model if model is not None else getattr(source, "vae", None)
                res = m.compute(
                    vae, self.reference, batch_size=self.batch_size, device=self.device, notes=notes
                )
                out.update(res)
        self.timing["metrics_s"] = round(time.perf_counter() - t1, 3)
        notes += _sample_count_notes(
            self.metric_names, len(source), len(self.reference) if self.reference else 0, self._extractor
        )
        return out, notes


def _parse_metrics(metrics: Sequence[str] | str) -> list[str]:
    names = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    if not names:
        raise ValueError("no metrics selected")
    for n in names:
        get_metric(n)  # KeyError naming the valid ones
    return list(dict.fromkeys(names))


def _sample_count_notes(
    metrics: Sequence[str], n_src: int, n_ref: int, extractor: FeatureExtractor | None
) -> list[str]:
    notes = []
    if "fid" in metrics and extractor is not None:
        n = min(n_src, n_ref)
        if n < 5000:
            notes.append(
                f"FID from {n} images is biased upward (the bias shrinks like 1/n); compare only scores "
                "computed with the same sample counts (the standard is 50000 generated images)"
            )
        if n <= extractor.feature_dim:
            notes.append(
                f"fewer images ({n}) than feature dimensions ({extractor.feature_dim}): the covariance is singular; "
                "KID is the more reliable distance at this size"
            )
    if "kid" in metrics and min(n_src, n_ref) < 1000:
        spread = (
            "both sets fit one subset, so kid_std is 0 (no spread estimate)"
            if n_src == n_ref
            else "expect a larger spread"
        )
        notes.append(f"KID subsets have {min(n_src, n_ref)} items (fewer than 1000): {spread}")
    return notes


# ============================================================================ the API
def evaluate(
    source: str | Path | nn.Module | ImageSource,
    reference: str | Path | ImageSource | None = None,
    *,
    metrics: Sequence[str] | str = DEFAULT_METRICS,
    extractor: str | FeatureExtractor = "inception",
    weights: str | Path | None = None,
    n: int = 5000,
    n_ref: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    truncation: float = 1.0,
    device: str | torch.device | None = "auto",
    out: str | Path | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = False,
    size: int | None = None,
    label_names: Sequence[str] | None = None,
    label_values: Sequence[Sequence[str]] | None = None,
) -> EvalResult:
    """Evaluate a generator, a folder or a data set against a reference.

    Args:
        source: a run directory or checkpoint (``n`` samples of its EMA generator / VAE
            decoder), a generator module, a folder of images or a packed data set (a seeded
            random subset of ``n`` images when larger).
        reference: a packed data set or a folder (all images, or ``n_ref``). Its features
            are cached by content hash and extractor (see :mod:`avatarforge.eval.stats_cache`).
        metrics: names from :func:`avatarforge.eval.metrics.list_metrics` (``fid``, ``kid``,
            ``pr``, ``swd``, ``attr``, ``recon``) or a comma-separated string.
        extractor: ``"inception"`` (standard FID; needs ``weights`` or the file in the cache
            directory), ``"avatar"`` (no download), ``"auto"`` (inception when its weights are
            found, else avatar), another registered name, or an instance.
        weights: the extractor's weight file (Inception) or directory (avatar).
        n: generated samples (or source images) to use.
        n_ref: reference images to use (default all).
        batch_size: images per forward pass.
        seed: seeds latents, subsets, KID subsets and SWD patches/projections.
        truncation: truncation psi for generated samples.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``.
        out: also write the JSON here (atomically).
        cache_dir: cache root (default ``$AVATARFORGE_CACHE`` or ``~/.cache/avatarforge``).
        use_cache: False recomputes reference features without reading or writing the cache.
        progress: progress bars on stderr.
        size: folder images are brought to this side (default: the first image's).
        label_names, label_values: the labels of a conditional generator passed as a module
            (run directories record them).

    Returns:
        :class:`EvalResult`; ``result.summary()`` is a human-readable version.

    Raises:
        SourceError (a ValueError): an input that cannot be evaluated (names it and the fix).
        KeyError: an unknown metric or extractor (lists the valid ones).
        FileNotFoundError: Inception weights missing (says where to put them).
    """
    t0 = time.perf_counter()
    dev = resolve_device(device)
    ev = Evaluator(
        reference,
        metrics=metrics,
        extractor=extractor,
        weights=weights,
        n_ref=n_ref,
        batch_size=batch_size,
        seed=seed,
        device=dev,
        cache_dir=cache_dir,
        use_cache=use_cache,
        progress=progress,
        size=size,
    )
    src = open_source(source, n=n, seed=seed, truncation=truncation, device=dev, size=size, what="source")
    values, notes = ev.run(src, label_names=label_names, label_values=label_values)
    ev.timing["total_s"] = round(time.perf_counter() - t0, 3)
    ext = ev.extractor
    settings: dict[str, Any] = {
        "metrics": ev.metric_names,
        "extractor": ext.info() if ext is not None else None,
        "n": len(src),
        "n_ref": len(ev.reference) if ev.reference is not None else 0,
        "batch_size": ev.batch_size,
        "seed": seed,
        "truncation": truncation,
        "device": str(dev),
    }
    if any(m.kind == "generator" for m in ev.metrics):
        settings["attribute_net"] = ev.avatar_extractor().info()
    result = EvalResult(
        metrics=values,
        settings=settings,
        source=src.info(),
        reference=ev.reference.info() if ev.reference is not None else None,
        notes=ev.notes + notes,
        timing=dict(ev.timing),
    )
    if ev._ref_features is not None:
        result.reference = {**(result.reference or {}), "features_cache": ev._ref_features.meta.get("cache")}
    if out is not None:
        result.save(out)
    return result


def make_metric_fn(
    reference: str | Path | ImageSource | None = None,
    metrics: Sequence[str] | str = ("swd",),
    num_images: int = 1000,
    extractor: str | FeatureExtractor = "avatar",
    *,
    weights: str | Path | None = None,
    n_ref: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    truncation: float = 1.0,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> Callable[[Any], dict[str, float]]:
    """An in-training metric hook for ``GANTrainer(..., metric_fn=...)`` / ``VAETrainer``.

    Returns ``metric_fn(trainer) -> {key: value}``: ``num_images`` samples of the trainer's
    EMA generator (``trainer.G_ema``; a VAE trainer's ``trainer.model.decoder``) drawn from
    the same ``seed`` every time (so successive values differ only by training), scored
    against ``reference`` (default: the training data set, ``trainer.dataset.path``).
    Reference features/descriptors are computed on the first call, on ``trainer.device``,
    and kept. Keys are those of :func:`evaluate` (``swd``, ``fid_avatar``, ...); name one as
    ``log.best_metric`` to keep ``checkpoints/best/`` by it (``best_mode: min`` for
    distances, ``max`` for ``attr_acc``/``precision``/``recall``).

    Example::

        trainer = GANTrainer(cfg, metric_fn=make_metric_fn(metrics=("swd", "fid"), num_images=1000))
    """
    names = _parse_metrics(metrics)
    state: dict[str, Any] = {}

    def metric_fn(trainer: Any) -> dict[str, float]:
        if "evaluator" not in state:
            ref = (
                reference
                if reference is not None
                else getattr(getattr(trainer, "dataset", None), "path", None)
            )
            state["evaluator"] = Evaluator(
                ref,
                metrics=names,
                extractor=extractor,
                weights=weights,
                n_ref=n_ref,
                batch_size=batch_size,
                seed=seed,
                device=trainer.device,
                cache_dir=cache_dir,
                progress=progress,
            )
        ev: Evaluator = state["evaluator"]
        G, vae = _trainer_models(trainer)
        src = GeneratorSource(G, num_images, seed=seed, truncation=truncation, device=trainer.device)
        values, _ = ev.run(
            src,
            label_names=list(getattr(trainer, "label_names", []) or []),
            label_values=_trainer_label_values(trainer),
            model=vae,
        )
        return {k: v for k, v in values.items() if math.isfinite(v)}

    return metric_fn


def _trainer_models(trainer: Any) -> tuple[nn.Module, nn.Module | None]:
    """(generator to sample from, VAE or None) of a GAN or VAE trainer."""
    if getattr(trainer, "G_ema", None) is not None:
        return trainer.G_ema, None
    model = getattr(trainer, "model", None)
    if model is not None and hasattr(model, "decoder"):
        return model.decoder, model
    raise TypeError("make_metric_fn: the trainer exposes neither G_ema (GAN) nor model.decoder (VAE)")


def _trainer_label_values(trainer: Any) -> list[list[str]]:
    schema = getattr(getattr(trainer, "dataset", None), "schema", None)
    names = list(getattr(trainer, "label_names", []) or [])
    if schema is None:
        return []
    return [list(schema[n].values) for n in names]
