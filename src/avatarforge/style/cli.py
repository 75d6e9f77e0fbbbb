"""The ``avatarforge style`` command: transfer, train, apply, train-decoder.

``add_style_arguments(parser)`` adds the sub-commands to any ``argparse`` parser (the main
CLI's ``style`` command); ``style_main(args)`` runs the chosen one and returns the exit code:

* 0: done (``train``: finished, or stopped by ``--minutes`` / SIGINT / SIGTERM with a checkpoint);
* 1: ``apply`` translated some images but could not read others (each one is reported);
* 2: a usage, configuration or input error (the message names it and the fix);
* 3: ``train`` diverged (NaN/Inf kept coming back).

Building the parser imports nothing heavy; torch is imported when a command runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from avatarforge import cli_args
from avatarforge.commands import run_command
from avatarforge.config import accept_overrides_anywhere
from avatarforge.errors import EXIT_OK, EXIT_PARTIAL, UsageError

__all__ = ["METHODS", "add_style_arguments", "build_parser", "main", "style_main"]

METHODS = ("colour", "histogram", "gatys", "adain")
_METHOD_ALIASES = {"color": "colour", "hist": "histogram"}


# ----------------------------------------------------------------------------- parser
def add_style_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``transfer``, ``train``, ``apply`` and ``train-decoder`` sub-commands to ``parser``."""
    parser.description = parser.description or (
        "Style transfer for avatars: weight-free colour/histogram transfer, neural (Gatys, AdaIN) "
        "transfer, and CycleGAN translation between two data sets. See docs/style.md."
    )
    sub = parser.add_subparsers(dest="style_cmd", metavar="COMMAND", required=True)

    t = sub.add_parser(
        "transfer",
        help="restyle one image after another (colour, histogram, gatys, adain)",
        description="Restyle CONTENT after STYLE. Only the RGB changes: the output keeps CONTENT's alpha and size.",
    )
    t.add_argument(
        "content", metavar="CONTENT", help="the image to restyle (PNG with alpha is kept transparent)"
    )
    t.add_argument("style", metavar="STYLE", help="the image whose colours/texture to take")
    t.add_argument("--out", required=True, metavar="OUT.png", help="output image (.png keeps transparency)")
    t.add_argument(
        "--method",
        default="colour",
        type=_method,
        help="colour (Reinhard Lab statistics, default), histogram (CDF matching), gatys (optimisation), "
        "adain (with --decoder: one pass; without: optimisation)",
    )
    t.add_argument("--strength", type=float, default=1.0, help="0..1, 0 = unchanged content (default 1)")
    t.add_argument(
        "--space", choices=["rgb", "lab"], default="rgb", help="histogram: colour space (default rgb)"
    )
    t.add_argument("--steps", type=int, default=200, help="gatys/adain optimisation steps (default 200)")
    t.add_argument(
        "--size", type=int, default=256, help="gatys/adain working size, longer side (default 256)"
    )
    t.add_argument("--content-weight", type=float, default=1.0, help="gatys/adain content weight (default 1)")
    t.add_argument(
        "--style-weight",
        type=float,
        default=None,
        help="gatys/adain style weight (default: gatys 1e5, adain optimisation 1)",
    )
    t.add_argument(
        "--optimizer", choices=["lbfgs", "adam"], default="lbfgs", help="gatys/adain (default lbfgs)"
    )
    t.add_argument(
        "--vgg",
        metavar="PATH",
        help="torchvision vgg19 weights (.pth state dict or .safetensors); default: the random-weights CNN",
    )
    t.add_argument("--decoder", metavar="DIR", help="adain: a decoder from 'style train-decoder'")
    t.add_argument("--seed", type=int, default=0, help="seed of the random-weights CNN (default 0)")
    cli_args.add_device_argument(t)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(style_func=_cmd_transfer)

    r = sub.add_parser(
        "train",
        help="train CycleGAN between two packed data sets",
        description="Train unpaired translation A <-> B (CycleGAN). Runs go to RUNS/NNNNN-cyclegan-<res>/. "
        "Config keys (KEY=VALUE): see docs/style.md or --dry-run.",
    )
    r.add_argument(
        "inputs",
        nargs="*",
        metavar="A B [KEY=VALUE ...]",
        help="two packed data sets (domain A, domain B), then config overrides, e.g. batch_size=8 loss.gan=hinge",
    )
    cli_args.add_stop_arguments(r, "images per domain")
    cli_args.add_resume_arguments(r)
    cli_args.add_run_dir_arguments(r, "cyclegan-<resolution>")
    r.set_defaults(style_func=_cmd_train)
    accept_overrides_anywhere(r)

    a = sub.add_parser(
        "apply",
        help="translate images with a trained CycleGAN run",
        description="Translate IMAGES with RUN's latest checkpoint; writes OUT/<name>.png with each input's alpha.",
    )
    a.add_argument("run", metavar="RUN", help="run directory (or checkpoint directory)")
    a.add_argument(
        "images", nargs="+", metavar="IMAGES", help="image files or folders (searched recursively)"
    )
    a.add_argument("--out", required=True, metavar="DIR", help="output folder")
    a.add_argument("--direction", choices=["a2b", "b2a"], default="a2b", help="a2b (default) or b2a")
    a.add_argument(
        "--size", type=int, default=None, help="working size, longer side (default: the training resolution)"
    )
    cli_args.add_device_argument(a)
    a.set_defaults(style_func=_cmd_apply)

    d = sub.add_parser(
        "train-decoder",
        help="train an AdaIN decoder (for 'transfer --method adain --decoder DIR')",
        description="Train an AdaIN decoder for the feature network (--vgg file, or the random CNN) on a content "
        "set and a style set (packed data sets, folders or image files).",
    )
    d.add_argument("content", metavar="CONTENT_SET", help="packed data set, folder or image")
    d.add_argument("style", metavar="STYLE_SET", help="packed data set, folder or image")
    d.add_argument(
        "--out", required=True, metavar="DIR", help="output directory (config.json + model.safetensors)"
    )
    d.add_argument("--vgg", metavar="PATH", help="torchvision vgg19 weights; default: the random-weights CNN")
    d.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    d.add_argument("--batch-size", type=int, default=8, help="images per step (default 8)")
    d.add_argument("--size", type=int, default=128, help="training image size, multiple of 8 (default 128)")
    d.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate (default 5e-4)")
    d.add_argument(
        "--style-weight", type=float, default=10.0, help="style loss weight (default 10, the paper's)"
    )
    d.add_argument(
        "--max-images", type=int, default=1000, help="images kept in memory per set (default 1000)"
    )
    d.add_argument("--seed", type=int, default=0, help="seed (random CNN, init, batches)")
    cli_args.add_device_argument(d)
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(style_func=_cmd_train_decoder)
    return parser


def _method(text: str) -> str:
    m = _METHOD_ALIASES.get(text.lower(), text.lower())
    if m not in METHODS:
        raise argparse.ArgumentTypeError(f"invalid method {text!r}; choose from {', '.join(METHODS)}")
    return m


def build_parser() -> argparse.ArgumentParser:
    """A standalone ``avatarforge style`` parser (tests, ``python -m avatarforge.style.cli``)."""
    return add_style_arguments(argparse.ArgumentParser(prog="avatarforge style"))


# ----------------------------------------------------------------------------- helpers
def _device(name: str) -> Any:
    from avatarforge.device import resolve_device

    return resolve_device(name, local_rank=0)


def _read_image(path: str, what: str) -> Any:
    """A validated RGB/RGBA uint8 array from a file (raises UsageError naming ``what``)."""
    import numpy as np

    from avatarforge.data.imagefile import ImageRejected, load_image

    try:
        img = load_image(path)
    except ImageRejected as e:
        raise UsageError(f"{what} {path}: {e.message}") from None
    return np.asarray(img)


def _write_image(path: str | Path, image: Any) -> Path:
    """Save; a JPEG output gets the image composited on white (JPEG has no alpha)."""
    import numpy as np

    from avatarforge.imageio import save_image

    path = Path(path)
    if path.suffix.lower() in (".jpg", ".jpeg") and image.shape[2] == 4:
        print(f"note: {path.name} is a JPEG, which has no transparency: composited on white", file=sys.stderr)
        a = image[..., 3:4].astype(np.uint16)
        image = ((image[..., :3].astype(np.uint16) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_image(path, image)


# ----------------------------------------------------------------------------- transfer
def _cmd_transfer(a: argparse.Namespace) -> int:
    from avatarforge.style import classical, neural

    content = _read_image(a.content, "content image")
    style = _read_image(a.style, "style image")
    t0 = time.perf_counter()
    if a.method == "colour":
        out = classical.colour_transfer(content, style, strength=a.strength)
    elif a.method == "histogram":
        out = classical.histogram_match(content, style, space=a.space, strength=a.strength)
    else:
        from avatarforge.style.features import load_feature_net

        device = _device(a.device)
        net = (
            load_feature_net(a.vgg, seed=a.seed, device=device)
            if (a.vgg or a.method == "gatys" or not a.decoder)
            else None
        )
        common: dict[str, Any] = {
            "size": a.size,
            "steps": a.steps,
            "content_weight": a.content_weight,
            "strength": a.strength,
            "optimizer": a.optimizer,
            "device": device,
            "seed": a.seed,
            "progress": not a.quiet,
        }
        if a.style_weight is not None:
            common["style_weight"] = a.style_weight
        if a.method == "gatys":
            if a.decoder:
                raise UsageError("--decoder is for --method adain")
            out = neural.gatys_transfer(content, style, net=net, **common)
        else:
            decoder = neural.load_adain_decoder(a.decoder, device=device) if a.decoder else None
            out = neural.adain_transfer(content, style, net=net, decoder=decoder, **common)
    dt = time.perf_counter() - t0
    path = _write_image(a.out, out)
    print(f"wrote {path} ({a.method}, {out.shape[1]}x{out.shape[0]}, {dt:.2f} s)")
    return EXIT_OK


# ----------------------------------------------------------------------------- train
def _cmd_train(a: argparse.Namespace) -> int:
    from avatarforge.config import ConfigError, parse_overrides
    from avatarforge.style.train_cyclegan import build_cyclegan_config
    from avatarforge.train.cli import dry_run_or_train

    data = [t for t in a.inputs if not cli_args.OVERRIDE_RE.match(t)]
    overrides = parse_overrides([t for t in a.inputs if cli_args.OVERRIDE_RE.match(t)])
    cli: dict[str, Any] = {}
    if data:
        if len(data) != 2:
            raise ConfigError(
                f"style train takes two data sets (A B), got {len(data)}: {' '.join(data)} "
                "(overrides look like key=value)"
            )
        cli["data"] = {"a": data[0], "b": data[1]}
    elif not a.resume:
        raise ConfigError("give two packed data sets: avatarforge style train A B (or --resume RUN)")
    cli.update(cli_args.run_settings(a))
    config_file = cli_args.config_file(a)
    cfg = build_cyclegan_config(config_file=config_file, cli=cli, overrides=overrides)
    return dry_run_or_train(cfg, a)


# ----------------------------------------------------------------------------- apply
def _collect_images(items: Sequence[str]) -> list[Path]:
    from avatarforge.data.imagefile import IMAGE_EXTENSIONS

    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            files.append(p)  # a missing file is reported by the loop below, with the others
    return files


def _cmd_apply(a: argparse.Namespace) -> int:
    from avatarforge.data.imagefile import ImageRejected, load_image
    from avatarforge.style.train_cyclegan import checkpoint_resolution, load_translator, translate_image

    device = _device(a.device)
    generator = load_translator(a.run, a.direction, device=device)
    size = a.size or checkpoint_resolution(a.run)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = _collect_images(a.images)
    if not files:
        raise UsageError(f"no images found in {', '.join(a.images)}")
    used: set[str] = set()
    failed = 0
    import numpy as np

    for f in files:
        try:
            image = np.asarray(load_image(f))
        except ImageRejected as e:
            print(f"skipped {f}: {e.message}", file=sys.stderr)
            failed += 1
            continue
        name = f.stem
        k = 1
        while name in used:  # the same file name from two folders: keep both
            name = f"{f.stem}_{k}"
            k += 1
        used.add(name)
        out = translate_image(generator, image, size=size, device=device)
        _write_image(out_dir / f"{name}.png", out)
    print(
        f"translated {len(files) - failed} image(s) {a.direction} into {out_dir}"
        + (f"; {failed} skipped" if failed else "")
    )
    return EXIT_PARTIAL if failed else EXIT_OK


# ----------------------------------------------------------------------------- train-decoder
def _cmd_train_decoder(a: argparse.Namespace) -> int:
    from avatarforge.style.features import load_feature_net
    from avatarforge.style.neural import train_adain_decoder

    device = _device(a.device)
    net = load_feature_net(a.vgg, seed=a.seed, device=device)
    decoder = train_adain_decoder(
        a.content,
        a.style,
        net=net,
        steps=a.steps,
        batch_size=a.batch_size,
        size=a.size,
        lr=a.lr,
        style_weight=a.style_weight,
        max_images=a.max_images,
        device=device,
        seed=a.seed,
        progress=not a.quiet,
    )
    out = decoder.save_pretrained(a.out)
    print(f"wrote AdaIN decoder for {net.describe()} to {out}; use: --method adain --decoder {out}")
    return EXIT_OK


# ----------------------------------------------------------------------------- entry points
def style_main(args: argparse.Namespace) -> int:
    """Run the ``avatarforge style`` sub-command in ``args``; returns the process exit code
    (:func:`avatarforge.commands.run_command`: 1 when some inputs failed, 2 for a usage
    error, 3 if training diverged)."""
    return run_command("avatarforge style", lambda: args.style_func(args))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m avatarforge.style.cli ...`` (the same as ``avatarforge style ...``)."""
    return style_main(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
