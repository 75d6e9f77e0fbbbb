"""The ``avatarforge train`` command: flags -> :class:`~avatarforge.config.TrainConfig` -> :func:`avatarforge.train.train`.

GAN families (``dcgan``, ``cgan``, ``infogan``, ``stylegan``) train with
:class:`~avatarforge.train.gan.GANTrainer`, VAE families (``vae``, ``cvae``: models
registered with role ``"vae"``) with :class:`~avatarforge.train.vae.VAETrainer`
(:func:`~avatarforge.train.families.trainer_class` picks); both write the same run directory
layout and resume the same way.

``add_train_arguments(parser)`` adds the flags to any ``argparse`` parser (the main CLI's
``train`` sub-command, or this module's own parser for ``python -m avatarforge.train``);
``train_main(args, metric_fn_factory)`` runs it (through
:func:`avatarforge.commands.run_command`) and returns the exit code:

* 0: finished, or stopped by ``--minutes`` / SIGINT / SIGTERM with a checkpoint written;
* 2: a usage or configuration error (message names the key/flag and what is accepted);
* 3: training diverged (NaN/Inf kept coming back, see ``max_nan_events``);
* 4: the run could not be written (e.g. a full disk while writing a checkpoint): one line
  naming the error, after the trainer's line naming the newest complete checkpoint.

Only this module's light imports run when the parser is built; torch is imported by
``train_main``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from avatarforge.cli_args import add_run_dir_arguments, add_stop_arguments, resumed_config, run_settings
from avatarforge.commands import run_command
from avatarforge.config import (
    ConfigError,
    accept_overrides_anywhere,
    build_train_config,
    list_presets,
    parse_overrides,
    to_yaml,
)
from avatarforge.errors import EXIT_OK, EXIT_WRITE, UsageError

__all__ = [
    "add_train_arguments",
    "build_parser",
    "config_from_args",
    "dry_run_or_train",
    "main",
    "train_main",
]


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``avatarforge train``'s flags and the trailing ``KEY=VALUE`` overrides to ``parser``.

    ``--a.b=c`` style overrides are accepted too: the parser's ``parse_known_args`` is wrapped
    to rewrite them as ``a.b=c`` (and to move overrides after the flags, where argparse's
    positional ``nargs='*'`` can collect them wherever they were typed).
    """
    presets = ", ".join(f"{m} ({'/'.join(map(str, r))}px)" for m, r in list_presets().items())
    parser.description = parser.description or (
        "Train a GAN or VAE on a packed data set. Settings come from the preset for the model and the data "
        "set's resolution, then --config FILE, then the flags, then KEY=VALUE overrides "
        "(e.g. optim.g_lr=1e-3 loss.kind=hinge; --dry-run shows the result)."
    )
    parser.add_argument("--data", metavar="DATASET", help="packed data set directory")
    parser.add_argument("--model", metavar="NAME", help=f"model family; presets: {presets}")
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML config file (overrides the preset)")
    add_stop_arguments(parser, "images")
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a run (its config and latest checkpoint)"
    )
    add_run_dir_arguments(parser, "<model>-<resolution>", device_help="default: auto (CUDA if available)")
    parser.add_argument(
        "--tensorboard", action="store_true", help="also log to TensorBoard (needs tensorboard)"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. batch_size=16 optim.g_lr=1e-3",
    )
    accept_overrides_anywhere(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The standalone parser of ``python -m avatarforge.train``."""
    return add_train_arguments(argparse.ArgumentParser(prog="avatarforge train"))


def config_from_args(args: argparse.Namespace, notes: list[str] | None = None) -> Any:
    """Resolve the :class:`~avatarforge.config.TrainConfig` the flags describe.

    Raises:
        ConfigError: a bad flag, key or value (the message says which and what is accepted).
    """
    _config_file_from_overrides(args)
    if _is_refiner(args):
        return _refiner_config(args, notes)
    if _is_parts(args):
        return _parts_config(args, notes)
    cli: dict[str, Any] = {}
    if args.data:
        cli.setdefault("data", {})["path"] = args.data
    if args.model:
        cli.setdefault("model", {})["name"] = args.model
    cli.update(run_settings(args))
    if args.tensorboard:
        cli.setdefault("log", {})["tensorboard"] = True
    overrides = parse_overrides(args.overrides or [])
    config_file = args.config
    if args.resume:
        run_dir, config_file = resumed_config(args.resume, config_file)
        if notes is not None:
            notes.append(f"resuming {run_dir} (config: {config_file})")
        return build_train_config(
            config_file=config_file, cli=cli, overrides=overrides, use_preset=False, notes=notes
        )
    if not args.model and not (config_file and _file_names_model(config_file)):
        models = ", ".join(list_presets()) or "see 'avatarforge models'"
        raise ConfigError(f"--model is required ({models})")
    if not args.data and not any(k == "data.path" for k, _ in overrides) and not config_file:
        raise ConfigError("--data is required: a packed data set directory (see 'avatarforge data builtin')")
    cfg = build_train_config(config_file=config_file, cli=cli, overrides=overrides, notes=notes)
    _check_model_name(cfg.model.name)
    return cfg


def _config_file_from_overrides(args: argparse.Namespace) -> None:
    """``avatarforge train FILE.yaml``: a positional YAML file is the ``--config`` file."""
    files = [o for o in args.overrides or [] if "=" not in o and o.lower().endswith((".yaml", ".yml"))]
    if not files:
        return
    if len(files) > 1 or args.config:
        raise ConfigError(
            f"one config file, please: got {', '.join(files + ([args.config] if args.config else []))}"
        )
    args.config = files[0]
    args.overrides = [o for o in args.overrides if o != files[0]]


def _names_family(args: argparse.Namespace, family: str) -> bool:
    """Whether ``--model``, or the config file (``--config``, or the resumed run's), names ``family``."""
    from avatarforge.config import config_names_model

    if args.model:
        return args.model == family
    config_file = args.config
    if args.resume:
        _, config_file = resumed_config(args.resume, config_file)
    return bool(config_file) and config_names_model(config_file, family)


def _family_config_file(args: argparse.Namespace, preset: Path, notes: list[str] | None) -> str | Path | None:
    """The config file of a family with a shipped preset: ``--config``, else the resumed run's
    ``config.yaml``, else ``preset``; ``notes`` gets a line saying which."""
    config_file = args.config
    if args.resume:
        run_dir, config_file = resumed_config(args.resume, config_file)
        if notes is not None:
            notes.append(f"resuming {run_dir} (config: {config_file})")
    elif config_file is None:
        config_file = preset
        if notes is not None:
            notes.append(f"config: {preset.name}")
    return config_file


def _is_refiner(args: argparse.Namespace) -> bool:
    """Whether the command trains the refiner (``--model refiner`` or a config naming it)."""
    return _names_family(args, "refiner")


def _refiner_config(args: argparse.Namespace, notes: list[str] | None) -> Any:
    """The :class:`~avatarforge.train.refiner_config.RefinerConfig` the flags describe:
    ``--data`` is ``data.source``; without ``--config`` the shipped ``refiner-512px.yaml``."""
    from avatarforge.train.refiner_config import build_refiner_config, refiner_preset

    cli: dict[str, Any] = dict(run_settings(args))
    if args.data:
        cli["data"] = {"source": args.data}
    if args.tensorboard:
        raise ConfigError("--tensorboard is not supported by the refiner trainer (see metrics.jsonl)")
    config_file = _family_config_file(args, refiner_preset("refiner-512px.yaml"), notes)
    return build_refiner_config(
        config_file=config_file, cli=cli, overrides=parse_overrides(args.overrides or [])
    )


def _is_parts(args: argparse.Namespace) -> bool:
    """Whether the command trains the part segmenter (``--model parts`` or a config naming it)."""
    return _names_family(args, "parts")


def _parts_config(args: argparse.Namespace, notes: list[str] | None) -> Any:
    """The :class:`~avatarforge.train.parts_config.PartsConfig` the flags describe (built-in
    renderer only); without ``--config`` the shipped ``parts-64px.yaml``."""
    from avatarforge.train.parts_config import build_parts_config, parts_preset

    if args.data:
        raise ConfigError("--data: the part segmenter trains on the built-in renderer; drop --data")
    if args.tensorboard:
        raise ConfigError("--tensorboard is not supported by the part-segmenter trainer (see metrics.jsonl)")
    config_file = _family_config_file(args, parts_preset("parts-64px.yaml"), notes)
    return build_parts_config(
        config_file=config_file, cli=dict(run_settings(args)), overrides=parse_overrides(args.overrides or [])
    )


def _check_model_name(name: str) -> None:
    """Reject a model name the registry does not know, suggesting close ones."""
    import difflib

    from avatarforge.models.registry import list_models

    # Families trained by this command: a GAN pair or a VAE that ships a preset. Other
    # registered pairs (cyclegan, the animator) have their own commands.
    gans = [m for m in list_models("discriminator") if m in list_models("generator")]
    trainable = sorted(m for m in {*gans, *list_models("vae")} if m in list_presets())
    if name not in trainable:
        close = difflib.get_close_matches(name, trainable, n=2)
        own_command = {"cyclegan": "avatarforge style train", "animator": "avatarforge animate train"}
        if name in own_command:
            raise ConfigError(f"{name!r} is trained with '{own_command[name]}', not 'avatarforge train'")
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown model {name!r}{hint} (trainable models: {', '.join(trainable)})")


def _file_names_model(path: str | Path) -> bool:
    from avatarforge.config import load_yaml

    model = load_yaml(path).get("model")
    return isinstance(model, dict) and bool(model.get("name"))


#: Builds the in-training metric hook from a config (None when ``log.metrics`` is empty):
#: :func:`avatarforge.eval.metric_fn_from_config`, passed in by the ``avatarforge`` command.
MetricFnFactory = Callable[[Any], "Callable[[Any], dict[str, float]] | None"]


def train_main(args: argparse.Namespace, metric_fn_factory: MetricFnFactory | None = None) -> int:
    """Run ``avatarforge train`` for parsed ``args``; returns the process exit code.

    Args:
        args: the parsed flags (:func:`add_train_arguments`).
        metric_fn_factory: builds the in-training metric hook ``log.metrics`` asks for.
            Evaluation sits above training, so the caller composes it: ``avatarforge
            train`` passes :func:`avatarforge.eval.metric_fn_from_config`; without one
            (``python -m avatarforge.train``) a config that sets ``log.metrics`` is a usage
            error naming the command that computes them.
    """
    # A failed write (ENOSPC, EFBIG, EACCES, ...) exits 4: the trainer has already named the
    # newest complete checkpoint and the resume command; a traceback would add nothing.
    return run_command("avatarforge train", lambda: _train(args, metric_fn_factory), os_error_code=EXIT_WRITE)


def _train(args: argparse.Namespace, metric_fn_factory: MetricFnFactory | None) -> int:
    notes: list[str] = []
    cfg = config_from_args(args, notes)
    if args.dry_run:
        print("".join(f"# {n}\n" for n in notes) + to_yaml(cfg), end="")
        return EXIT_OK
    if metric_fn_factory is None and getattr(cfg.log, "metrics", None):
        raise UsageError(
            "log.metrics needs the evaluation package, which 'python -m avatarforge.train' does not "
            "load: run 'avatarforge train' (or 'python -m avatarforge train') for in-training metrics"
        )
    for n in notes:
        print(n, file=sys.stderr)
    from avatarforge.train.families import train

    metric_fn = metric_fn_factory(cfg) if metric_fn_factory is not None else None
    train(cfg, resume=args.resume, metric_fn=metric_fn)
    return EXIT_OK


def dry_run_or_train(cfg: Any, args: argparse.Namespace) -> int:
    """The last step of ``style train`` and ``animate train``: ``--dry-run`` prints ``cfg`` as
    YAML, else it trains (resuming ``--resume``); returns the exit code."""
    if args.dry_run:
        print(to_yaml(cfg), end="")
        return EXIT_OK
    from avatarforge.train.families import train

    train(cfg, resume=args.resume)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m avatarforge.train``."""
    return train_main(build_parser().parse_args(argv))
