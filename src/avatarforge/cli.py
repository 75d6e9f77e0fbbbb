"""The ``avatarforge`` command line.

Thin by design: every subcommand parses its flags and calls one public library function,
so everything the CLI does is also available from Python.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from avatarforge import __version__

__all__ = ["build_parser", "main"]


class CLIError(Exception):
    """A user error: printed as ``avatarforge: error: ...`` with exit code 2, no traceback."""


def _parse_attrs(text: str | None) -> dict[str, str]:
    """``hair_color=pink,eye_color=blue`` -> dict; raises CLIError naming the bad item."""
    out: dict[str, str] = {}
    if not text:
        return out
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise CLIError(f"--attrs item {item!r} must look like name=value (e.g. hair_color=pink)")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


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
    from avatarforge.imageio import save_image

    try:
        attrs = sample_attributes(a.seed, **_parse_attrs(a.attrs))
    except (ValueError, KeyError) as e:
        raise CLIError(f"--attrs: {e}") from e
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


# --------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    from avatarforge.train.cli import add_train_arguments, train_main

    p = sub.add_parser("train", help="train a model (GAN or VAE family) on a packed data set")
    add_train_arguments(p)
    p.set_defaults(func=train_main)


def _add_vae(sub: argparse._SubParsersAction) -> None:
    from avatarforge.generate.vae_cli import add_vae_arguments, vae_main

    p = sub.add_parser(
        "vae", help="use a trained VAE: encode, decode, reconstruct, sample, interpolate, edit"
    )
    add_vae_arguments(p)
    p.set_defaults(func=vae_main)


def _add_generate(sub: argparse._SubParsersAction) -> None:
    from avatarforge.generate.cli import (
        add_generate_arguments,
        add_interpolate_arguments,
        add_personalise_arguments,
        generate_main,
        interpolate_main,
        personalise_main,
    )

    p = sub.add_parser(
        "generate", help="generate avatars from a trained model (seeds, truncation, attributes)"
    )
    add_generate_arguments(p)
    p.set_defaults(func=generate_main)
    p = sub.add_parser("interpolate", help="interpolation videos between seeds (mp4, gif, webp, apng)")
    add_interpolate_arguments(p)
    p.set_defaults(func=interpolate_main)
    p = sub.add_parser("edit", help="personalise: variations, style mixing, latent directions, inversion")
    add_personalise_arguments(p)
    p.set_defaults(func=personalise_main)


def _add_style(sub: argparse._SubParsersAction) -> None:
    from avatarforge.style.cli import add_style_arguments, style_main

    p = sub.add_parser("style", help="style transfer: colour, histogram, Gatys, AdaIN; CycleGAN train/apply")
    add_style_arguments(p)
    p.set_defaults(func=style_main)


def _add_animate(sub: argparse._SubParsersAction) -> None:
    from avatarforge.animate.cli import add_animate_arguments, animate_main

    p = sub.add_parser("animate", help="expression animator: train, animate an avatar, export ONNX")
    add_animate_arguments(p)
    p.set_defaults(func=animate_main)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    from avatarforge.eval.cli import add_eval_arguments, eval_main

    p = sub.add_parser("eval", help="evaluate a model or image set: FID, KID, precision/recall, SWD, ...")
    add_eval_arguments(p)
    p.set_defaults(func=eval_main)


def _add_post(sub: argparse._SubParsersAction) -> None:
    from avatarforge.postprocess.cli import add_post_arguments, post_main

    p = sub.add_parser("post", help="alpha-preserving post-processing chains, sprite sheets, APNG")
    add_post_arguments(p)
    p.set_defaults(func=post_main)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from avatarforge.serve.cli import add_serve_arguments, serve_main

    p = sub.add_parser("serve", help="HTTP API (FastAPI): generate, edit, post-process, style, animate")
    add_serve_arguments(p)
    p.set_defaults(func=serve_main)


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
    _add_train(sub)
    _add_vae(sub)
    _add_eval(sub)
    _add_generate(sub)
    _add_style(sub)
    _add_post(sub)
    _add_animate(sub)
    _add_serve(sub)
    m = sub.add_parser("models", help="list the registered model architectures")
    m.set_defaults(func=_cmd_models)
    _add_quickstart(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``avatarforge`` and ``python -m avatarforge``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CLIError as e:
        parser.exit(2, f"avatarforge: error: {e}\n")
    except (FileExistsError, FileNotFoundError, ValueError, KeyError) as e:
        # Library errors carry messages that name the problem and the fix; no traceback.
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        parser.exit(2, f"avatarforge: error: {msg}\n")
    except BrokenPipeError:
        # The reader closed the pipe early (``avatarforge post --list-ops | head``): it has
        # what it wanted. Point stdout at /dev/null so the interpreter's final flush cannot
        # raise again, and exit 0, since stdout only ever carries reports, never results.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
