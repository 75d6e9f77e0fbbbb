"""The ``avatarforge`` command line.

Thin by design: every subcommand parses its flags and calls one public library function,
so everything the CLI does is also available from Python.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from avatarforge import __version__
from avatarforge.commands import run_command
from avatarforge.errors import UsageError

__all__ = ["build_parser", "main"]


# --------------------------------------------------------------------------- data
def _cmd_data_builtin(a: argparse.Namespace) -> int:
    from avatarforge.data.builtin import build_builtin_dataset

    out = build_builtin_dataset(
        a.out,
        a.n,
        a.size,
        seed=a.seed,
        workers=a.workers,
        alpha=a.alpha,
        overwrite=a.overwrite,
        progress=not a.quiet,
    )
    print(f"wrote {a.n} avatars at {a.size}px to {out} (preview: {Path(out) / 'preview.png'})")
    return 0


def _cmd_data_prepare(a: argparse.Namespace) -> int:
    from avatarforge.data.prepare import prepare_dataset

    report = prepare_dataset(
        a.sources,
        a.out,
        a.size,
        fit=a.fit,
        alpha=a.alpha,
        labels=a.labels,
        dedupe=a.dedupe,
        near_threshold=a.near_threshold,
        min_side=a.min_side,
        max_pixels=a.max_pixels,
        workers=a.workers,
        overwrite=a.overwrite,
        progress=not a.quiet,
    )
    print(report.summary())
    print(f"report: {Path(a.out) / 'report.json'}")
    return 0


def _cmd_data_info(a: argparse.Namespace) -> int:
    import json

    from avatarforge.data.inspect import dataset_summary, format_summary

    summary = dataset_summary(a.dataset)
    print(json.dumps(summary, indent=2) if a.json else format_summary(summary))
    preview = Path(a.dataset) / "preview.png"
    if not a.json:
        print(
            f"sample grid: {preview if preview.exists() else 'run: avatarforge data grid ' + a.dataset + ' grid.png'}"
        )
    return 0


def _cmd_data_grid(a: argparse.Namespace) -> int:
    from avatarforge.data.inspect import save_dataset_grid

    out = save_dataset_grid(a.dataset, a.out, n=a.n, seed=a.seed)
    print(f"wrote {out}")
    return 0


def _cmd_data_render(a: argparse.Namespace) -> int:
    from avatarforge.data.procedural import render, sample_attributes
    from avatarforge.generate.conditioning import parse_assignments
    from avatarforge.imageio import save_image

    try:
        wanted = parse_assignments(a.attrs, what="--attrs")  # "--attrs item 'x' must look like name=value"
    except ValueError as e:
        raise UsageError(f"{e} (e.g. hair_color=pink)") from e
    try:
        attrs = sample_attributes(a.seed, **wanted)
    except (ValueError, KeyError) as e:
        raise UsageError(f"--attrs: {e}") from e
    img = render(attrs, a.size, background=a.background)
    save_image(a.out, img)
    print(f"wrote {a.out}: " + ", ".join(f"{k}={v}" for k, v in attrs.items()))
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="build, ingest and inspect packed data sets")
    dsub = p.add_subparsers(dest="data_cmd", metavar="COMMAND", required=True)

    b = dsub.add_parser("builtin", help="render a procedural avatar data set (no download needed)")
    b.add_argument("out", help="output data set directory")
    b.add_argument("--n", type=int, default=5000, help="number of avatars (default 5000)")
    b.add_argument("--size", type=int, default=64, help="image size in pixels, 32..512 (default 64)")
    b.add_argument("--seed", type=int, default=0, help="base seed; item i is reproducible on its own")
    b.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    b.add_argument(
        "--alpha",
        choices=["keep", "background"],
        default="keep",
        help="keep: transparent RGBA characters; background: composite on the drawn background (RGB)",
    )
    b.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=_cmd_data_builtin)

    r = dsub.add_parser(
        "prepare", help="ingest your own images (folders, zips, files) into a packed data set"
    )
    r.add_argument(
        "sources", nargs="+", metavar="SRC", help="folders (recursive), zip archives or image files"
    )
    r.add_argument("out", help="output data set directory")
    r.add_argument("--size", type=int, required=True, help="output size in pixels (square)")
    r.add_argument("--fit", choices=["crop", "pad"], default="crop", help="centre-crop or pad to a square")
    r.add_argument(
        "--alpha",
        default="keep",
        help="keep (RGBA), white, or a colour (#rrggbb, name, r,g,b) to composite on",
    )
    r.add_argument("--labels", default=None, help="CSV or JSON mapping file name -> attribute values")
    r.add_argument("--dedupe", choices=["exact", "near", "off"], default="exact", help="duplicate removal")
    r.add_argument(
        "--near-threshold", type=int, default=4, help="max Hamming distance (of 64 bits) for --dedupe near"
    )
    r.add_argument(
        "--min-side", type=int, default=None, help="skip images smaller than this (default: size/2)"
    )
    r.add_argument("--max-pixels", type=int, default=64_000_000, help="decompression-bomb limit in pixels")
    r.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    r.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=_cmd_data_prepare)

    i = dsub.add_parser("info", help="summarise a packed data set")
    i.add_argument("dataset")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=_cmd_data_info)

    g = dsub.add_parser("grid", help="write a PNG grid of samples from a data set")
    g.add_argument("dataset")
    g.add_argument("out", help="output PNG path")
    g.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    g.add_argument("--seed", type=int, default=0, help="which random images to show")
    g.set_defaults(func=_cmd_data_grid)

    d = dsub.add_parser("render", help="render one procedural avatar to an image file")
    d.add_argument("out", help="output image (.png keeps transparency)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--size", type=int, default=256)
    d.add_argument("--attrs", default=None, help="fixed attributes, e.g. hair_color=pink,accessory=cat_ears")
    d.add_argument("--background", action="store_true", help="draw the background instead of transparency")
    d.set_defaults(func=_cmd_data_render)


# --------------------------------------------------------------------------- commands
def _add_command(
    sub: argparse._SubParsersAction,
    name: str,
    help: str,
    add_arguments: Callable[[argparse.ArgumentParser], Any],
    func: Callable[[argparse.Namespace], int],
) -> None:
    """Add sub-command ``name``: its part's ``add_*_arguments`` and the function that runs it."""
    p = sub.add_parser(name, help=help)
    add_arguments(p)
    p.set_defaults(func=func)


def _metric_fn_from_config(cfg: Any) -> Any:
    # In-training metrics come from the evaluation package, which sits above training: the
    # top-level command composes them (train/cli.py must not import eval), imported only
    # when a run starts so that building the parser stays light.
    from avatarforge.eval import metric_fn_from_config

    return metric_fn_from_config(cfg)


def _cmd_train(a: argparse.Namespace) -> int:
    from avatarforge.train.cli import train_main

    return train_main(a, metric_fn_factory=_metric_fn_from_config)


def _add_part_commands(sub: argparse._SubParsersAction) -> None:
    """The sub-commands each part's own CLI module defines (flags there, work in the library)."""
    from avatarforge.animate.cli import add_animate_arguments, animate_main
    from avatarforge.avatar3d.cli import add_export_arguments, export_main
    from avatarforge.eval.cli import add_eval_arguments, eval_main
    from avatarforge.generate.cli import (
        add_generate_arguments,
        add_interpolate_arguments,
        add_personalise_arguments,
        generate_main,
        interpolate_main,
        personalise_main,
    )
    from avatarforge.generate.vae_cli import add_vae_arguments, vae_main
    from avatarforge.postprocess.cli import add_post_arguments, post_main
    from avatarforge.serve.cli import add_serve_arguments, serve_main
    from avatarforge.style.cli import add_style_arguments, style_main
    from avatarforge.train.cli import add_train_arguments

    # (name, help, add_arguments, func), in the order `avatarforge --help` lists them.
    commands: list[tuple[str, str, Callable[[argparse.ArgumentParser], Any], Callable[..., int]]] = [
        ("train", "train a model (GAN or VAE family) on a packed data set", add_train_arguments, _cmd_train),
        (
            "vae",
            "use a trained VAE: encode, decode, reconstruct, sample, interpolate, edit",
            add_vae_arguments,
            vae_main,
        ),
        (
            "eval",
            "evaluate a model or image set: FID, KID, precision/recall, SWD, ...",
            add_eval_arguments,
            eval_main,
        ),
        (
            "generate",
            "generate avatars from a trained model (seeds, truncation, attributes)",
            add_generate_arguments,
            generate_main,
        ),
        (
            "interpolate",
            "interpolation videos between seeds (mp4, gif, webp, apng)",
            add_interpolate_arguments,
            interpolate_main,
        ),
        (
            "edit",
            "personalise: variations, style mixing, latent directions, inversion",
            add_personalise_arguments,
            personalise_main,
        ),
        (
            "style",
            "style transfer: colour, histogram, Gatys, AdaIN; CycleGAN train/apply",
            add_style_arguments,
            style_main,
        ),
        (
            "post",
            "alpha-preserving post-processing chains, sprite sheets, APNG",
            add_post_arguments,
            post_main,
        ),
        (
            "animate",
            "expression animator: train, animate an avatar, export ONNX",
            add_animate_arguments,
            animate_main,
        ),
        (
            "export",
            "3D models: a textured VRM (VSeeFace, Warudo, three-vrm) or GLB of an avatar",
            add_export_arguments,
            export_main,
        ),
        (
            "serve",
            "HTTP API (FastAPI): generate, edit, post-process, style, animate",
            add_serve_arguments,
            serve_main,
        ),
    ]
    for name, help, add_arguments, func in commands:
        _add_command(sub, name, help, add_arguments, func)


# --------------------------------------------------------------------------- misc
def _cmd_models(a: argparse.Namespace) -> int:
    from avatarforge.models.registry import registered_models

    by_name: dict[str, list[tuple[str, type]]] = {}
    for name, role, cls in registered_models():
        if not name.startswith("test-"):
            by_name.setdefault(name, []).append((role, cls))
    for name, entries in by_name.items():
        entries.sort(key=lambda e: e[0] != "generator")  # describe a family by its generator
        doc_lines = (entries[0][1].__doc__ or "").strip().splitlines()
        roles = "/".join(r for r, _ in entries)
        print(f"{name:<18} {roles:<24} {doc_lines[0] if doc_lines else ''}")
    return 0


def _add_quickstart(sub: argparse._SubParsersAction) -> None:
    from avatarforge.quickstart.cli import add_quickstart_arguments

    p = sub.add_parser(
        "quickstart", help="the main job: data, train, evaluate, animate, report (what `make demo` runs)"
    )
    add_quickstart_arguments(p)
    p = sub.add_parser("demo", help="alias of quickstart")
    add_quickstart_arguments(p)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="avatarforge",
        description="AvatarForge: make VTuber avatars with generative models (data, train, generate).",
    )
    parser.add_argument("--version", action="version", version=f"avatarforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_data(sub)
    _add_part_commands(sub)
    m = sub.add_parser("models", help="list the registered model architectures")
    m.set_defaults(func=_cmd_models)
    _add_quickstart(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``avatarforge`` and ``python -m avatarforge``; returns the exit code.

    A sub-command's own errors end in its return code; one that reaches here ends like
    argparse's usage errors, with :class:`SystemExit` (:func:`avatarforge.commands.run_command`).
    """
    args = build_parser().parse_args(argv)
    return run_command("avatarforge", lambda: args.func(args), exit=True)


if __name__ == "__main__":
    sys.exit(main())
