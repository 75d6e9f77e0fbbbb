"""Typed training configuration: dataclasses, YAML presets and ``key=value`` overrides.

A configuration is a tree of dataclasses (:class:`TrainConfig` at the root). It is built in
layers, later layers win::

    dataclass defaults  <  preset (configs/<model>-<resolution>.yaml)  <  --config FILE.yaml
                        <  CLI flags (--data, --model, --kimg, ...)    <  key=value overrides

Every layer is a plain nested ``dict`` that is checked against the dataclass field types:
strings from the command line are coerced to the field's type (``optim.g_lr=1e-3`` becomes a
float, ``data.condition_on=[hair_color,eye_color]`` a list), unknown keys raise
:class:`ConfigError` naming the key and its closest matches, and bad values raise
:class:`ConfigError` naming the field and what it accepts.

The machinery (:func:`from_dict`, :func:`apply_overrides`, :func:`to_dict`) works on any
dataclass, so later model families (VAE, translation, animator) define their own config
dataclass and reuse it.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import sys
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

# ConfigError is defined on the ground floor (avatarforge.errors) so that layers below config
# (device selection) can raise it; avatarforge.config.ConfigError stays its documented name.
from avatarforge.errors import ConfigError

__all__ = [
    "ConfigError",
    "DataConfig",
    "EMAConfig",
    "LogConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "PerfConfig",
    "RunSettings",
    "TrainConfig",
    "accept_overrides_anywhere",
    "apply_overrides",
    "budget_checks",
    "build_train_config",
    "check_all",
    "checkpoint_minutes_check",
    "find_preset",
    "from_dict",
    "layered_config",
    "list_presets",
    "load_yaml",
    "normalize_override_argv",
    "parse_overrides",
    "to_dict",
    "to_yaml",
]

T = TypeVar("T")


# --------------------------------------------------------------------------- the schema
@dataclass
class ModelConfig:
    """Which architecture to build and its constructor arguments."""

    name: str = "dcgan"  # registry short name (``avatarforge models`` lists them)
    z_dim: int = 128  # latent size
    resolution: int | None = None  # None: the data set's resolution
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to G and D constructors
    g_kwargs: dict[str, Any] = field(default_factory=dict)  # generator only
    d_kwargs: dict[str, Any] = field(default_factory=dict)  # discriminator only
    # Registry name of the discriminator's family; "" = the same as ``name``. Pairs a generator
    # with another family's D, e.g. stylegan's G against dcgan's BatchNorm D (docs/training.md).
    discriminator: str = ""


@dataclass
class DataConfig:
    """The training data and what the model is conditioned on."""

    path: str = ""  # a packed data set directory
    # Categorical labels the model is conditioned on. None: every categorical label of the
    # data set; []: unconditional.
    condition_on: list[str] | None = None
    augment: str = ""  # DiffAugment policy, e.g. "color,translation,cutout"; "" = off
    # VAE trainer: probability of replacing each conditioning label by "unknown" in a
    # training step, so a conditional VAE also works when a label is not given.
    label_dropout: float = 0.0


@dataclass
class OptimConfig:
    """Adam settings for generator and discriminator."""

    g_lr: float = 2e-4
    d_lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    eps: float = 1e-8


@dataclass
class LossConfig:
    """Adversarial loss and regularisers."""

    kind: Literal["logistic", "hinge"] = "logistic"  # logistic = non-saturating
    r1_gamma: float = 0.0  # R1 penalty weight on real images; 0 = off
    r1_interval: int = 16  # lazy regularisation: apply R1 every N steps (scaled by N)
    info_lambda: float = 1.0  # InfoGAN mutual-information weight (models with codes only)
    # Self-supervised D (FastGAN): weight of the MSE between D's reconstruction of each real
    # it sees and that image at 32 px. Needs a D built with a decoder
    # (model.d_kwargs.recon_channels > 0 on the dcgan D); 0 = off.
    d_recon: float = 0.0
    # Conditional D with a projection head (cgan): weight of the cross-entropy of the
    # projection's class scores, on reals for D and on the requested labels for G (AC-GAN
    # with shared weights). Small labels (eye colour: a few pixels at 64 px) that the
    # adversarial term alone learns late are learned within minutes; 0 = off.
    class_weight: float = 0.0
    # Per-label multipliers of that cross-entropy, e.g. {eye_color: 4}: a label drawn in a few
    # pixels (the iris at 64 px) gets a larger share than the big colour patches; default 1.
    class_label_weights: dict[str, float] = field(default_factory=dict)
    # VAE family (docs/vae.md): loss = recon + beta * ramp(kimg) * KL (with free bits).
    recon: Literal["mse", "l1"] = "mse"  # per-image sum of squared / absolute errors in [-1, 1] units
    beta: float = 1.0  # KL weight after warm-up (beta-VAE when > 1)
    kl_warmup_kimg: float = 0.0  # linear ramp of the KL weight from 0 to beta over this many kimg
    free_bits: float = 0.0  # per-latent-dimension KL floor in nats (batch mean); 0 = off


@dataclass
class EMAConfig:
    """Exponential moving average of the generator weights (used for samples and export)."""

    kimg: float = 10.0  # half-life in thousands of images
    rampup: float | None = 0.05  # early on, half-life <= rampup * images seen; None = no ramp-up
    beta: float | None = None  # fixed per-step decay; overrides kimg/rampup when set
    enabled: bool = True  # VAE trainer: keep an EMA copy (presets: off); GAN trainers always do


@dataclass
class LogConfig:
    """What is written to the run directory, and how often."""

    every_steps: int = 50  # metrics.jsonl line, progress losses, NaN/Inf check
    sample_every_kimg: float = 10.0  # sample grid from the EMA generator; 0 = only at the end
    num_samples: int = 64  # images in a sample grid
    checkpoint_every_kimg: float = 50.0  # 0 = only at the end (and on signals)
    # Also checkpoint when this many minutes of wall time passed since the last checkpoint
    # (or the start), so a crash early in a long kimg interval does not lose the run; 0 = off.
    checkpoint_every_minutes: float = 10.0
    keep_last: int = 3  # checkpoints kept (plus best/ when best_metric is set)
    metric_every_kimg: float = 0.0  # run the metric hook every N kimg; 0 = only at the end
    # In-training evaluation from the CLI (avatarforge.eval.make_metric_fn): e.g. [swd] or
    # [swd, fid]; empty = no metric hook unless one is passed in Python.
    metrics: list[str] = field(default_factory=list)
    metric_images: int = 1000  # generated images per evaluation
    metric_extractor: str = "avatar"  # feature network for fid/kid/pr ("avatar" needs no weights)
    best_metric: str | None = None  # metric name (e.g. "fid") to keep checkpoints/best/ by
    best_mode: Literal["min", "max"] = "min"
    tensorboard: bool = False  # also write TensorBoard events (needs the tensorboard package)
    progress: bool = True  # tqdm progress bar


@dataclass
class PerfConfig:
    """Speed settings. See docs/training.md for what each one measured."""

    # auto: bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), else off
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    tf32: bool = True  # TF32 matmuls/convs on CUDA
    channels_last: bool = True  # NHWC memory format: measured +5-10% img/s on CPU (docs/training.md)
    num_threads: int | None = None  # torch intra-op threads; None = torch default
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on CUDA)


@dataclass
class RunSettings:
    """The run-level settings every training family's config ends with (speed, seed, budget,
    where the run goes, the NaN limit); each family overrides the defaults that differ.

    A family's root config lists it *first* among its bases, after its own sections:
    ``class XConfig(RunSettings, _XSections)``. A dataclass takes its bases' fields in reverse
    order of the bases, so the sections (``model``, ``data``, ...) lead and these follow, the
    key order of every saved ``config.yaml``; a field re-declared in the subclass to change
    its default keeps its place.
    """

    perf: PerfConfig = field(default_factory=PerfConfig)
    seed: int = 0
    batch_size: int = 32  # global batch (split over processes when distributed)
    kimg: float | None = 100.0  # stop after this many thousand images; None = no limit
    minutes: float | None = None  # stop after this many minutes (at a step boundary)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    runs_dir: str = "runs"
    desc: str = ""  # run directory suffix; default <family>-<resolution>
    max_nan_events: int = 3  # the N-th NaN/Inf event stops training (TrainingDiverged)


@dataclass
class _TrainSections:
    """The GAN/VAE config's own sections (they lead :class:`TrainConfig`)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    log: LogConfig = field(default_factory=LogConfig)


@dataclass
class TrainConfig(RunSettings, _TrainSections):
    """Everything a training run needs; saved as ``config.yaml``/``config.json`` in the run dir."""

    preset: str = ""  # informational: the preset file this config started from

    def validate(self) -> TrainConfig:
        """Check value ranges the types cannot express; returns self."""
        checks: list[tuple[bool, str]] = [
            *budget_checks(self),
            (self.model.z_dim >= 1, "model.z_dim must be >= 1"),
            (self.loss.r1_gamma >= 0, "loss.r1_gamma must be >= 0"),
            (self.loss.d_recon >= 0, "loss.d_recon must be >= 0 (0 = off)"),
            (self.loss.class_weight >= 0, "loss.class_weight must be >= 0 (0 = off)"),
            (
                all(v >= 0 for v in self.loss.class_label_weights.values()),
                "loss.class_label_weights values must be >= 0 (e.g. loss.class_label_weights.eye_color=4)",
            ),
            (self.loss.r1_interval >= 1, "loss.r1_interval must be >= 1"),
            (self.loss.beta >= 0, "loss.beta must be >= 0"),
            (self.loss.kl_warmup_kimg >= 0, "loss.kl_warmup_kimg must be >= 0"),
            (self.loss.free_bits >= 0, "loss.free_bits must be >= 0 (nats per latent dimension)"),
            (0 <= self.data.label_dropout < 1, "data.label_dropout must be in [0, 1)"),
            (self.optim.g_lr > 0 and self.optim.d_lr > 0, "optim.g_lr and optim.d_lr must be > 0"),
            (all(0 <= b < 1 for b in self.optim.betas), "optim.betas must be in [0, 1)"),
            (self.ema.kimg >= 0, "ema.kimg must be >= 0"),
            (self.ema.beta is None or 0 <= self.ema.beta < 1, "ema.beta must be in [0, 1)"),
            (self.log.every_steps >= 1, "log.every_steps must be >= 1"),
            (self.log.keep_last >= 1, "log.keep_last must be >= 1"),
            checkpoint_minutes_check(self.log.checkpoint_every_minutes),
            (self.log.num_samples >= 1, "log.num_samples must be >= 1"),
            (self.max_nan_events >= 1, "max_nan_events must be >= 1"),
            (
                self.device == "auto"
                or self.device in ("cpu", "cuda", "mps")
                or self.device.startswith("cuda:"),
                f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}",
            ),
        ]
        check_all(checks)
        return self


# --------------------------------------------------------------------------- generic machinery
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_optional(tp: Any) -> tuple[bool, Any]:
    """(True, X) for ``X | None`` / ``Optional[X]``; (False, tp) otherwise."""
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return True, (args[0] if len(args) == 1 else Union[tuple(args)])  # noqa: UP007
    return False, tp


def _type_name(tp: Any) -> str:
    opt, inner = _is_optional(tp)
    if opt:
        return f"{_type_name(inner)} or null"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple, dict):
        return repr(tp).replace("typing.", "")
    return getattr(tp, "__name__", repr(tp))


_NULLS = {"null", "none", "~", ""}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _parse_scalar_text(text: str) -> Any:
    """YAML-parse a command-line value; fall back to the raw text when it is not valid YAML."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` (from YAML or the command line) to type ``tp`` or raise ConfigError.

    ``where`` is the dotted field name, used in error messages.
    """
    if tp is Any:
        return _parse_scalar_text(value) if isinstance(value, str) else value
    opt, inner = _is_optional(tp)
    if opt:
        if value is None or (isinstance(value, str) and value.strip().lower() in _NULLS):
            return None
        return coerce(value, inner, where)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} is a section; give its keys (e.g. {where}.KEY=VALUE), not {value!r}")
        return from_dict(tp, value, prefix=where)

    def bad(extra: str = "") -> ConfigError:
        return ConfigError(f"{where}: invalid value {value!r}; expected {_type_name(tp)}{extra}")

    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        for c in choices:
            if value == c or (isinstance(value, str) and str(c) == value.strip()):
                return c
        raise ConfigError(
            f"{where}: invalid value {value!r}; valid values: {', '.join(str(c) for c in choices)}"
        )
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise bad(" (true/false)")
    if tp is int:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            s = value.strip().replace("_", "")
            try:
                return int(s)
            except ValueError:
                try:
                    f = float(s)
                except ValueError:
                    raise bad() from None
                if f.is_integer():
                    return int(f)
        raise bad()
    if tp is float:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                f = float(value.strip())
            except ValueError:
                raise bad() from None
            if math.isnan(f):
                raise bad()
            return f
        raise bad()
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad()
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if isinstance(value, str):
            s = value.strip()
            if s.startswith("[") or s.startswith("("):
                parsed = _parse_scalar_text("[" + s[1:-1] + "]") if s.endswith(("]", ")")) else None
                if not isinstance(parsed, list):
                    raise bad()
                value = parsed
            else:
                value = [v.strip() for v in s.split(",")] if s else []
        if not isinstance(value, (list, tuple)):
            raise bad()
        if origin is list:
            item_t = args[0] if args else Any
            return [coerce(v, item_t, f"{where}[{i}]") for i, v in enumerate(value)]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(value) != len(args):
            raise bad(f" ({len(args)} items, got {len(value)})")
        return tuple(coerce(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(zip(value, args)))
    if origin is dict:
        if isinstance(value, str):
            value = _parse_scalar_text(value) if value.strip() else {}
        if not isinstance(value, Mapping):
            raise bad(" (a mapping, e.g. {a: 1, b: 2})")
        return {str(k): v for k, v in value.items()}
    raise ConfigError(f"{where}: unsupported field type {tp!r}")  # pragma: no cover - schema bug


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a config dataclass, sections included."""
    out: list[str] = []
    for name, tp in _hints(cls).items():
        key = f"{prefix}{name}"
        out.append(key)
        if dataclasses.is_dataclass(tp):
            out.extend(_all_keys(tp, key + "."))
    return out


def _unknown_key(key: str, cls: type, root: type | None = None, prefix: str = "") -> ConfigError:
    candidates = _all_keys(root, "") if root is not None else _all_keys(cls, f"{prefix}." if prefix else "")
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    # Also match on the last component, so "glr" finds "optim.g_lr".
    last = key.rsplit(".", 1)[-1]
    by_leaf = {c.rsplit(".", 1)[-1]: c for c in candidates}
    close += [by_leaf[m] for m in difflib.get_close_matches(last, list(by_leaf), n=3, cutoff=0.6)]
    close = list(dict.fromkeys(close))[:3]
    hint = f"; did you mean: {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested mapping, coercing and validating every value.

    Missing keys take the dataclass defaults.
    """
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in hints:
            raise _unknown_key(f"{prefix}.{key}" if prefix else str(key), cls, prefix=prefix)
        where = f"{prefix}.{key}" if prefix else key
        kwargs[key] = coerce(value, hints[key], where)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as a plain nested dict of JSON/YAML types (tuples become lists)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        return v

    return conv(cfg)


def to_yaml(cfg: Any) -> str:
    """The config as YAML text (what ``--dry-run`` prints and ``config.yaml`` holds)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)


def deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base`` (mappings merge, other values replace)."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def parse_overrides(items: Iterable[str]) -> list[tuple[str, str]]:
    """``["a.b=c", "--d=e"]`` -> ``[("a.b", "c"), ("d", "e")]``; raises ConfigError on junk."""
    out: list[tuple[str, str]] = []
    for item in items:
        text = item[2:] if item.startswith("--") else item
        if "=" not in text:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.g_lr=1e-3)")
        key, value = text.split("=", 1)
        key = key.strip().replace("-", "_")
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        out.append((key, value))
    return out


def _set_path(data: dict[str, Any], cls: type, key: str, raw: str, root: type) -> None:
    """Set dotted ``key`` in nested dict ``data`` following dataclass ``cls``'s schema."""
    parts = key.split(".")
    cur_cls: Any = cls
    cur = data
    for i, part in enumerate(parts):
        hints = _hints(cur_cls)
        if part not in hints:
            raise _unknown_key(key, cur_cls, root)
        tp = hints[part]
        last = i == len(parts) - 1
        if dataclasses.is_dataclass(tp):
            if last:
                raise ConfigError(
                    f"{key} is a section; set one of its keys, e.g. {key}.{next(iter(_hints(tp)))}=..."
                )
            sub = cur.get(part)
            cur[part] = dict(sub) if isinstance(sub, Mapping) else {}
            cur, cur_cls = cur[part], tp
            continue
        if last:
            # Strings stay raw for str fields ("desc=001" must not become 1); everything else
            # goes through coerce() which parses the text by the field type.
            cur[part] = coerce(raw, tp, key)
            return
        # A dotted key into a free-form dict field: model.g_kwargs.width=16
        _, inner = _is_optional(tp)
        if typing.get_origin(inner) is not dict:
            raise ConfigError(f"{'.'.join(parts[: i + 1])} is not a section; cannot set {key}")
        sub = cur.get(part)
        d = dict(sub) if isinstance(sub, Mapping) else {}
        node = d
        for p in parts[i + 1 : -1]:
            node[p] = dict(node[p]) if isinstance(node.get(p), Mapping) else {}
            node = node[p]
        node[parts[-1]] = _parse_scalar_text(raw)
        cur[part] = d
        return


def apply_overrides(
    data: Mapping[str, Any], cls: type, overrides: Iterable[str | tuple[str, str]]
) -> dict[str, Any]:
    """Apply ``key=value`` overrides to the nested dict ``data`` (schema ``cls``); returns a new dict.

    Values are coerced to the field types here, so errors name the override's key.
    """
    out = _deep_copy(data)
    pairs = [o if isinstance(o, tuple) else parse_overrides([o])[0] for o in overrides]
    for key, raw in pairs:
        _set_path(out, cls, key, raw, cls)
    return out


def _deep_copy(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in d.items()}


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (empty file -> {}); raises ConfigError with the file name on errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text("utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, got {type(data).__name__}")
    return data


def check_all(checks: Iterable[tuple[bool, str]]) -> None:
    """Raise :class:`ConfigError` with the message of the first failed ``(ok, message)`` check
    (config dataclasses' ``validate`` methods list their range checks this way)."""
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)


def budget_checks(cfg: Any) -> list[tuple[bool, str]]:
    """The ``(ok, message)`` checks of ``batch_size``, ``kimg`` and ``minutes`` every trainer's
    config shares (``kimg: null`` needs ``minutes``)."""
    return [
        (cfg.batch_size >= 1, "batch_size must be >= 1"),
        (cfg.kimg is None or cfg.kimg > 0, "kimg must be > 0 (or null with minutes set)"),
        (cfg.minutes is None or cfg.minutes > 0, "minutes must be > 0"),
        (cfg.kimg is not None or cfg.minutes is not None, "set kimg or minutes (or both)"),
    ]


def checkpoint_minutes_check(minutes: float) -> tuple[bool, str]:
    """The ``(ok, message)`` check of ``log.checkpoint_every_minutes`` every trainer's config
    shares (finite: a YAML ``.inf`` would never checkpoint; 0 = off)."""
    return math.isfinite(minutes) and minutes >= 0, "log.checkpoint_every_minutes must be >= 0 (0 = off)"


def shipped_config(name: str, shipped: Sequence[str], what: str) -> Path:
    """The path of a config file shipped in ``avatarforge/configs`` (one of ``shipped``).

    Raises:
        ConfigError: ``name`` is not one of them (the message lists them).
    """
    if name not in shipped:
        raise ConfigError(f"no {what} config {name!r}; shipped: {', '.join(shipped)}")
    return Path(str(resources.files("avatarforge") / "configs" / name))


def config_names_model(path: str | os.PathLike, model: str) -> bool:
    """True if the YAML file names ``model`` (``model: {name: MODEL}``): which family a
    config file belongs to."""
    entry = load_yaml(path).get("model")
    return isinstance(entry, dict) and entry.get("name") == model


def layered_config(
    cls: type[T],
    *,
    config_file: str | Path | None = None,
    cli: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
) -> T:
    """A config dataclass from its layers, validated: defaults < ``config_file`` (YAML, e.g. a
    run's ``config.yaml``) < ``cli`` dict < ``key=value`` overrides. For configs without
    presets (CycleGAN, the animator); :func:`build_train_config` adds the presets."""
    layered = load_yaml(config_file) if config_file else {}
    layered = deep_merge(layered, dict(cli or {}))
    layered = apply_overrides(layered, cls, list(overrides))
    return from_dict(cls, layered).validate()


def normalize_override_argv(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """Reorder a command line so argparse accepts config overrides anywhere among the flags.

    Flags (and their values) come first, then every other token in its order: positional
    arguments and ``key=value`` overrides. ``--a.b=c`` and ``--a.b c`` become ``a.b=c``, as
    does ``--key=value`` for a key that is not one of ``parser``'s options; everything after
    a literal ``--`` is kept as positional tokens. argparse's ``nargs="*"`` positional would
    otherwise stop at the first flag.
    """
    known = {s for act in parser._actions for s in act.option_strings}
    takes_value = {s for act in parser._actions for s in act.option_strings if act.nargs != 0}
    argv = list(argv)
    flags: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        name = tok.split("=", 1)[0]
        if tok == "--":
            rest.extend(argv[i + 1 :])
            break
        if tok in takes_value and i + 1 < len(argv):
            flags += [tok, argv[i + 1]]
            i += 2
            continue
        if tok.startswith("--") and len(name) > 2 and name not in known and ("=" in tok or "." in name):
            if "=" in tok:
                rest.append(tok[2:])
            elif i + 1 < len(argv):
                rest.append(f"{tok[2:]}={argv[i + 1]}")
                i += 1
            else:
                rest.append(tok[2:])  # parse_overrides names the missing value
        elif tok.startswith("-"):
            flags.append(tok)  # argparse reports an unknown one
        else:
            rest.append(tok)
        i += 1
    return [*flags, *rest]


def accept_overrides_anywhere(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make ``parser`` take ``key=value`` / ``--a.b=c`` / ``--a.b c`` overrides anywhere on the
    command line (see :func:`normalize_override_argv`); returns ``parser``."""
    original = parser.parse_known_args

    def parse_known_args(args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        return original(normalize_override_argv(argv, parser), namespace)

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]
    return parser


# --------------------------------------------------------------------------- presets
def _preset_dir() -> Path:
    """``avatarforge/configs/`` (package data, so presets ship with the wheel)."""
    return Path(str(resources.files("avatarforge") / "configs"))


def list_presets() -> dict[str, list[int]]:
    """``{model: [resolutions...]}`` of the shipped presets (``configs/<model>-<res>.yaml``)."""
    out: dict[str, list[int]] = {}
    for p in sorted(_preset_dir().glob("*.yaml")):
        model, _, res = p.stem.rpartition("-")
        if model and res.isdigit():
            out.setdefault(model, []).append(int(res))
    return {k: sorted(v) for k, v in out.items()}


def find_preset(model: str, resolution: int | None) -> tuple[Path | None, bool]:
    """The preset for ``model`` closest to ``resolution`` (log scale) and whether it is exact.

    Returns ``(None, False)`` when no preset exists for the model.
    """
    available = list_presets().get(model, [])
    if not available:
        return None, False
    if resolution is None:
        res = 64 if 64 in available else available[0]
    else:
        res = min(available, key=lambda r: (abs(math.log2(r) - math.log2(max(resolution, 1))), r))
    return _preset_dir() / f"{model}-{res}.yaml", res == resolution


def build_train_config(
    *,
    config_file: str | Path | None = None,
    cli: Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
    dataset_resolution: int | None = None,
    use_preset: bool = True,
    notes: list[str] | None = None,
) -> TrainConfig:
    """Resolve a :class:`TrainConfig` from its layers (see the module docstring).

    Args:
        config_file: a user YAML file (may be a full ``config.yaml`` from a run directory).
        cli: nested dict of values from CLI flags (e.g. ``{"data": {"path": ...}}``).
        overrides: ``key=value`` strings.
        dataset_resolution: picks the preset when ``model.resolution`` is not set; when
            None and ``data.path`` is a packed data set, its manifest is read.
        use_preset: False skips the preset layer (e.g. when resuming from a saved config).
        notes: if given, human-readable notes (which preset, fallbacks) are appended.
    """
    user = load_yaml(config_file) if config_file else {}
    user = deep_merge(user, dict(cli or {}))
    # Validate the user layers early, so a typo is reported before any file is read.
    user = apply_overrides(user, TrainConfig, overrides)
    from_dict(TrainConfig, user)

    layered: dict[str, Any] = {}
    if use_preset:
        model = str(user.get("model", {}).get("name", ModelConfig.name))
        res = user.get("model", {}).get("resolution")
        if res is None:
            res = dataset_resolution
        data_path = user.get("data", {}).get("path")
        if res is None and data_path:
            res = _dataset_resolution(data_path)
        path, exact = find_preset(model, res)
        if path is not None:
            layered = load_yaml(path)
            layered["preset"] = path.name
            if notes is not None:
                if exact or res is None:
                    notes.append(f"preset: {path.name}")
                else:
                    notes.append(f"preset: {path.name} (no {model}-{res} preset; nearest resolution used)")
        elif notes is not None:
            have = ", ".join(sorted(list_presets())) or "none"
            notes.append(f"no preset for model {model!r} (presets exist for: {have}); using defaults")
    cfg = from_dict(TrainConfig, deep_merge(layered, user))
    return cfg.validate()


def _dataset_resolution(path: str | Path) -> int | None:
    """The image size from a packed data set's manifest, or None if it cannot be read."""
    from avatarforge.data.packed import PackedFormatError, read_manifest

    try:
        return int(read_manifest(path)["size"])
    except (PackedFormatError, OSError, KeyError, ValueError):
        return None
