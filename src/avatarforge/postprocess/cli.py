"""``avatarforge post``: apply an op chain to image files and folders, optionally export a
sprite sheet and animations, or train the learned upscaler.

    avatarforge post IN... OUT [--ops CHAIN] [--sprite-sheet] [--apng FPS] ...
    avatarforge post --list-ops
    avatarforge post --train-sr DIR [--sr-scale 2] [--sr-steps 2000]

The command line wires :func:`add_post_arguments` into a sub-parser and calls
:func:`post_main`; everything it does is a call of the public Python API.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from avatarforge.errors import EXIT_OK, EXIT_PARTIAL
from avatarforge.postprocess.chain import DEFAULT_CHAIN, Chain, ChainLimits, describe_ops

__all__ = ["DEFAULT_MAX_OUTPUT_SIDE", "OUTPUT_FORMATS", "add_post_arguments", "post_main"]

#: ``--max-output-side`` default: larger than the server's 2048 (the machine is the user's
#: own), still a guard against a typo such as ``upscale=4,upscale=4`` on a big image (an
#: 8192 px RGBA image takes 256 MiB, and an op works on several float copies of it).
DEFAULT_MAX_OUTPUT_SIDE = 8192

#: ``--format`` choices (the suffix of each written image).
OUTPUT_FORMATS = ("png", "webp", "jpg")
_IMAGE_SUFFIXES = {".png", ".webp", ".jpg", ".jpeg"}
SHEET_NAME = "sprite_sheet.png"
ANIMATION_NAMES = {"apng": "animation.png", "webp": "animation.webp", "gif": "animation.gif"}
#: Files in an input folder that earlier commands derived from its images (skipped, with a note).
DERIVED_NAMES = {
    "grid.png": "a contact sheet written by 'generate --grid'",
    SHEET_NAME: "a sprite sheet written by 'post --sprite-sheet'",
    **{name: "an animation written by 'post'" for name in ANIMATION_NAMES.values()},
}


def add_post_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``post`` flags to ``parser`` (call :func:`post_main` with the parsed args)."""
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="IN... OUT: input image files and/or folders (searched recursively), then the output folder; "
        "OUT may be an image file (.png/.webp/.jpg) when there is one input file",
    )
    parser.add_argument(
        "--ops",
        default=DEFAULT_CHAIN,
        metavar="CHAIN",
        help=f"comma-separated ops, e.g. 'white_balance,saturation=1.2,sharpen=0.5,upscale=2' "
        f"(default: '{DEFAULT_CHAIN}'; '' = none); see --list-ops",
    )
    parser.add_argument(
        "--list-ops", action="store_true", help="list every op with its parameters and ranges, then exit"
    )
    parser.add_argument(
        "--max-output-side",
        type=int,
        default=DEFAULT_MAX_OUTPUT_SIDE,
        metavar="PX",
        help=f"refuse a chain that would make an image (or an intermediate one) larger than PX per side, "
        f"checked for every input before any is processed (default {DEFAULT_MAX_OUTPUT_SIDE})",
    )
    parser.add_argument(
        "--format",
        choices=OUTPUT_FORMATS,
        default="png",
        help="image format of the outputs in a folder (default png)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--quiet", action="store_true", help="print only errors and the summary")
    g = parser.add_argument_group("sheets and animations (of all processed images, in input order)")
    g.add_argument(
        "--sprite-sheet", action="store_true", help=f"also write OUT/{SHEET_NAME} with a JSON atlas beside it"
    )
    g.add_argument(
        "--columns", type=int, default=None, metavar="N", help="sprite sheet columns (default: near-square)"
    )
    g.add_argument(
        "--padding", type=int, default=0, metavar="PX", help="transparent pixels between sprites (default 0)"
    )
    g.add_argument(
        "--apng",
        type=float,
        default=None,
        metavar="FPS",
        help=f"also write OUT/{ANIMATION_NAMES['apng']} (APNG, 8-bit alpha)",
    )
    g.add_argument(
        "--webp",
        type=float,
        default=None,
        metavar="FPS",
        help=f"also write OUT/{ANIMATION_NAMES['webp']} (animated WebP, 8-bit alpha)",
    )
    g.add_argument(
        "--gif",
        type=float,
        default=None,
        metavar="FPS",
        help=f"also write OUT/{ANIMATION_NAMES['gif']} (GIF: alpha becomes binary)",
    )
    g.add_argument(
        "--loop", type=int, default=0, metavar="N", help="animation repetitions, 0 = forever (default)"
    )
    s = parser.add_argument_group("learned upscaler")
    s.add_argument(
        "--sr-model",
        default=None,
        metavar="DIR",
        help="use this trained model for every 'upscale' op that names none",
    )
    s.add_argument(
        "--train-sr",
        default=None,
        metavar="DIR",
        help="train a super-resolution model on procedural avatars, save it to DIR, exit",
    )
    s.add_argument(
        "--sr-scale", type=int, choices=(2, 3, 4), default=2, help="upscaling factor to train for (default 2)"
    )
    s.add_argument(
        "--sr-steps",
        type=int,
        default=2000,
        metavar="N",
        help="training steps (default 2000, about 1-2 min on a CPU)",
    )
    s.add_argument(
        "--sr-seed", type=int, default=0, metavar="S", help="seed of the training data and initialisation"
    )
    return parser


def _natural_key(path: Path) -> list[object]:
    """frame_2 before frame_10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.as_posix())]


def _collect(inputs: list[str]) -> list[tuple[Path, Path]]:
    """(file, relative name without suffix) for every input image, in input order."""
    from avatarforge.data.imagefile import IMAGE_EXTENSIONS

    found: list[tuple[Path, Path]] = []
    for text in inputs:
        p = Path(text)
        if p.is_dir():
            files = [f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS]
            files = [f for f in files if not any(part.startswith(".") for part in f.relative_to(p).parts)]
            # Contact sheets and earlier outputs in a folder of frames are not frames: `generate
            # --grid` writes grid.png beside the avatars, and a previous run its sheet/animations.
            derived = [f for f in files if f.name.lower() in DERIVED_NAMES]
            for f in derived:
                print(f"skipped {f}: {DERIVED_NAMES[f.name.lower()]}, not an input frame", file=sys.stderr)
            files = [f for f in files if f.name.lower() not in DERIVED_NAMES]
            found += [(f, f.relative_to(p).with_suffix("")) for f in sorted(files, key=_natural_key)]
        elif p.exists():
            found.append((p, Path(p.stem)))
        else:
            raise FileNotFoundError(f"input not found: {p}")
    if not found:
        raise ValueError(
            f"no images found in {', '.join(inputs)} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    # Two inputs with the same name (a.png from two folders): number the later ones.
    seen: dict[str, int] = {}
    unique = []
    for f, rel in found:
        key = rel.as_posix().lower()
        if key in seen:
            seen[key] += 1
            rel = rel.with_name(f"{rel.name}_{seen[key]}")
        else:
            seen[key] = 1
        unique.append((f, rel))
    return unique


def _train(a: argparse.Namespace) -> int:
    from avatarforge.models.base import WEIGHTS_NAME
    from avatarforge.postprocess.resample import train_sr

    out = Path(a.train_sr)
    if (out / WEIGHTS_NAME).exists() and not a.overwrite:
        raise FileExistsError(f"{out} already holds a model; pass --overwrite to replace it")
    if a.sr_steps < 1:
        raise ValueError(f"--sr-steps must be >= 1, got {a.sr_steps}")
    log = None if a.quiet else print
    r = train_sr(out, scale=a.sr_scale, steps=a.sr_steps, seed=a.sr_seed, log=log)
    print(
        f"saved x{a.sr_scale} model to {out} (held-out L1 {r.val_after:.5f} vs bicubic {r.val_bicubic:.5f}); "
        f"use it with --sr-model {out} or upscale(model='{out}')"
    )
    return 0


def _header_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` from the file's header (no pixels decoded), or None if unreadable
    (the decode reports why later, and the file is skipped)."""
    import warnings

    from PIL import Image

    from avatarforge.data.imagefile import SUPPORTED_FORMATS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # decompression-bomb warnings: load_image decides
            with Image.open(path, formats=SUPPORTED_FORMATS) as im:
                return int(im.size[0]), int(im.size[1])
    except Exception:
        return None


def _check_sizes(chain: Chain, inputs: list[tuple[Path, Path]], max_side: int) -> None:
    """Refuse the run before anything is written if any input would grow past ``max_side``."""
    limits = ChainLimits(max_side=max_side, names={"max_side": "--max-output-side"})
    for src, _ in inputs:
        size = _header_size(src)
        if size is None:
            continue
        try:
            chain.check(size, limits)
        except ValueError as e:
            raise ValueError(f"--ops: {src}: {e}") from None


def _save(path: Path, image: np.ndarray) -> None:
    from avatarforge.imageio import save_image
    from avatarforge.postprocess.background import composite

    if path.suffix.lower() in (".jpg", ".jpeg") and image.shape[2] == 4:
        image = composite(image)  # JPEG has no alpha: flatten onto white, never drop alpha
    kwargs = {"lossless": True} if path.suffix.lower() == ".webp" else {}
    save_image(path, image, **kwargs)


def post_main(args: argparse.Namespace) -> int:
    """Run ``avatarforge post``; returns the exit code (0 ok, 1 some inputs failed).

    Raises:
        ValueError / FileNotFoundError / FileExistsError: user errors (bad chain, missing
            input, existing output without ``--overwrite``), with a message for people.
    """
    from avatarforge.data.imagefile import ImageRejected, load_image
    from avatarforge.postprocess.export import save_animation, save_sprite_sheet

    if args.list_ops:
        print(describe_ops())
        return 0
    if args.train_sr:
        if args.paths:
            raise ValueError("--train-sr trains and exits; run the processing as a separate command")
        return _train(args)
    if len(args.paths) < 2:
        raise ValueError("give at least one input and an output: avatarforge post IN... OUT (or --list-ops)")
    chain = Chain.parse(args.ops or "")
    if args.sr_model:
        from avatarforge.postprocess.resample import load_sr_model

        load_sr_model(args.sr_model)  # fail now, not after the first image (then cached)
        chain = Chain(
            op.with_params(model=args.sr_model)
            if op.name == "upscale" and op.params.get("model") is None
            else op
            for op in chain
        )
    max_side = getattr(args, "max_output_side", DEFAULT_MAX_OUTPUT_SIDE)
    if max_side < 1:
        raise ValueError(f"--max-output-side must be >= 1, got {max_side}")
    inputs = _collect(args.paths[:-1])
    out = Path(args.paths[-1])
    animations = {
        k: v for k, v in (("apng", args.apng), ("webp", args.webp), ("gif", args.gif)) if v is not None
    }
    single = out.suffix.lower() in _IMAGE_SUFFIXES and not out.is_dir()
    if single:
        if len(inputs) != 1:
            raise ValueError(
                f"{out} is an image file name but there are {len(inputs)} inputs; give a folder as OUT"
            )
        if args.sprite_sheet or animations:
            raise ValueError(
                "--sprite-sheet and animations are written into an output folder; give a folder as OUT"
            )
        targets = [out]
    else:
        targets = [out / f"{rel.as_posix()}.{args.format}" for _, rel in inputs]
    extra = ([out / SHEET_NAME, (out / SHEET_NAME).with_suffix(".json")] if args.sprite_sheet else []) + [
        out / ANIMATION_NAMES[k] for k in animations
    ]
    if not args.overwrite:
        existing = [str(t) for t in [*targets, *extra] if t.exists()]
        if existing:
            more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
            raise FileExistsError(
                f"output exists: {', '.join(existing[:3])}{more}; pass --overwrite to replace"
            )
    # Check the export flags now, not after every image has been processed.
    for kind, fps in animations.items():
        if not 0.1 <= fps <= 100:
            raise ValueError(f"--{kind} FPS must be from 0.1 to 100, got {fps:g}")
    if args.loop < 0:
        raise ValueError(f"--loop must be >= 0 (0 = forever), got {args.loop}")
    if not 0 <= args.padding <= 64 or (args.columns is not None and args.columns < 1):
        raise ValueError("--padding must be from 0 to 64 and --columns >= 1")
    _check_sizes(chain, inputs, max_side)
    keep = args.sprite_sheet or bool(animations)
    frames: list[np.ndarray] = []
    names: list[str] = []
    failed = 0
    for (src, rel), target in zip(inputs, targets):
        try:
            image = np.asarray(load_image(src))
        except ImageRejected as e:
            failed += 1
            print(f"skipped {src}: {e}", file=sys.stderr)
            continue
        # EXIF rotation can swap the sides the header gave: check the decoded size as well.
        result = chain.apply(
            image, limits=ChainLimits(max_side=max_side, names={"max_side": "--max-output-side"})
        )
        _save(target, result)
        if not args.quiet:
            print(
                f"{src} -> {target}  {image.shape[1]}x{image.shape[0]} -> {result.shape[1]}x{result.shape[0]}"
            )
        if keep:
            frames.append(result)
            names.append(rel.as_posix())
    if frames and animations and len({f.shape[:2] for f in frames}) > 1:
        # Check before writing anything, so a mixed folder leaves no half-written outputs behind.
        first = frames[0].shape[:2]
        odd = next(n for n, f in zip(names, frames) if f.shape[:2] != first)
        raise ValueError(
            f"animation frames must all have the same size: {names[0]} is {first[1]}x{first[0]}, "
            f"{odd} is not; leave it out of the inputs (or use --sprite-sheet alone)"
        )
    if frames and args.sprite_sheet:
        png, js = save_sprite_sheet(
            out / SHEET_NAME, frames, columns=args.columns, padding=args.padding, names=names
        )
        print(f"wrote {png} and {js}")
    for kind, fps in animations.items():
        if frames:
            path = save_animation(out / ANIMATION_NAMES[kind], frames, fps, loop=args.loop, format=kind)
            print(f"wrote {path} ({len(frames)} frames at {fps:g} fps)")
    done = len(inputs) - failed
    print(
        f"processed {done} image(s) with '{chain}'" + (f"; {failed} skipped" if failed else "") + f" -> {out}"
    )
    return EXIT_PARTIAL if failed else EXIT_OK
