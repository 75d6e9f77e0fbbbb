"""Command-line front ends: ``avatarforge generate``, ``interpolate`` and ``edit``.

Each ``add_*_arguments(parser)`` fills a parser and each ``*_main(args)`` runs it and
returns the exit code; user errors raise ``ValueError`` / ``FileNotFoundError`` with a
message naming the problem (the top-level CLI prints them without a traceback).

::

    avatarforge generate RUN --seeds 1-64 [--truncation 0.7] [--attrs hair_color=pink] \\
        [--codes c0=0.8] [--grid] [--rgba|--no-rgba] [--format png|webp] --out DIR
    avatarforge generate --from-png out/seed0007.png [RUN] --out DIR
    avatarforge interpolate RUN --seeds 1,5,9 --frames 60 --out morph.mp4|gif|webp|png
    avatarforge edit variations RUN --seed 7 --n 8 --strength 0.3 --out DIR
    avatarforge edit mix RUN --coarse 1,2 --fine 7-9 --crossover 4 --out DIR
    avatarforge edit directions RUN --method sefa --k 8 --out directions.json
    avatarforge edit slide RUN --seed 7 --direction hair_color:blonde+ --directions directions.json --out DIR
    avatarforge edit invert RUN photo.png --steps 300 --out DIR
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "add_generate_arguments",
    "add_interpolate_arguments",
    "add_personalise_arguments",
    "generate_main",
    "interpolate_main",
    "personalise_main",
]


# ----------------------------------------------------------------------------- shared options
def _add_model(p: argparse.ArgumentParser, optional: bool = False) -> None:
    if optional:
        p.add_argument("run", nargs="?", default=None, help="run directory or checkpoint (GAN or VAE)")
    else:
        p.add_argument("run", help="run directory or checkpoint (GAN or VAE)")
    p.add_argument("--which", choices=["ema", "g"], default="ema", help="EMA generator (default) or raw G")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, or auto (default cpu)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="images per forward pass (default 8); part of the reproducibility recipe, recorded",
    )
    p.add_argument(
        "--refiner",
        default="auto",
        metavar="REFINER_RUN",
        help="refiner run for sizes above the generator's (--size 256/512); default: a quickstart "
        "folder's own refiner; 'none' to use none",
    )


def _add_sampling(p: argparse.ArgumentParser) -> None:
    p.add_argument("--truncation", type=float, default=1.0, help="psi: 1 = none, 0 = the average avatar")
    p.add_argument(
        "--attrs", default=None, help="conditional models: fixed labels, e.g. hair_color=pink,eye_color=blue"
    )
    p.add_argument("--codes", default=None, help="InfoGAN codes, e.g. c0=0.8,cat0=3")
    p.add_argument(
        "--noise-mode",
        choices=["const", "random", "none"],
        default="const",
        help="StyleGAN noise (default const)",
    )


def _add_output(
    p: argparse.ArgumentParser, grid: bool = True, out: str = "output directory", required: bool = True
) -> None:
    """``--rgba``, ``--background``, ``--grid`` and ``--format`` (with ``grid``), and ``--out``
    (its help ``out``)."""
    p.add_argument(
        "--rgba",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--rgba: always write RGBA; --no-rgba: composite transparency onto --background; "
        "default: the model's channels",
    )
    p.add_argument(
        "--background", default=None, help="colour for --no-rgba / mp4 (name, #rrggbb, r,g,b; white)"
    )
    if grid:
        p.add_argument("--grid", action="store_true", help="also write grid.png with every image")
        p.add_argument(
            "--format", choices=["png", "webp"], default="png", help="image format (webp is lossless)"
        )
    p.add_argument("--out", required=required, help=out)


def _latent_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    """What picks the latents, from :func:`_add_sampling`'s flags: truncation, labels, codes."""
    return {"truncation": a.truncation, "attrs": a.attrs, "codes": a.codes}


def _image_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    """How latents become images, from ``--noise-mode`` and :func:`_add_output`'s flags."""
    return {"noise_mode": a.noise_mode, "rgba": a.rgba, "background": a.background}


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _pipeline(a: argparse.Namespace) -> Any:
    from avatarforge.generate.pipeline import GeneratorPipeline

    if a.run is None:
        raise ValueError("give the model: a run directory or checkpoint")
    if not Path(a.run).exists():
        raise FileNotFoundError(f"{a.run}: no such run directory or checkpoint")
    refiner = getattr(a, "refiner", "auto")
    if refiner not in ("auto", "none") and not Path(refiner).exists():
        raise FileNotFoundError(f"--refiner {refiner}: no such refiner run or checkpoint")
    return GeneratorPipeline.from_pretrained(
        a.run,
        which=a.which,
        device=_device(a.device),
        batch_size=a.batch_size,
        refiner=None if refiner == "none" else refiner,
    )


def _require_out(a: argparse.Namespace) -> Path:
    if not a.out:
        raise ValueError("--out is required (an output directory)")
    return Path(a.out)


def _report(paths: Sequence[Path], what: str) -> None:
    if not paths:
        return
    print(f"wrote {len(paths)} file(s) ({what}) to {paths[0].parent}")


# ----------------------------------------------------------------------------- generate
def add_generate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of ``avatarforge generate``."""
    _add_model(parser, optional=True)
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--n", type=int, default=None, help="number of avatars (seeds 0..N-1)")
    src.add_argument("--seeds", default=None, help="seeds: 1-64, 1,5,9 or 3")
    src.add_argument(
        "--from-png",
        metavar="FILE",
        default=None,
        help="regenerate an image from its metadata (RUN defaults to the model recorded in it)",
    )
    _add_sampling(parser)
    _add_output(parser, required=False)
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help="output size in pixels: the generator's resolution (default), or 128/256/512 through the "
        "refiner (--refiner; a quickstart folder has one)",
    )
    return parser


def generate_main(args: argparse.Namespace) -> int:
    """Run ``avatarforge generate``; returns the exit code."""
    import numpy as np

    from avatarforge.generate.metadata import save_with_metadata
    from avatarforge.generate.regenerate import regenerate_from_png

    out = _require_out(args)
    if args.from_png:
        src = Path(args.from_png)
        if not src.is_file():
            raise FileNotFoundError(f"--from-png {src}: no such file")
        image, record = regenerate_from_png(src, model=args.run, device=_device(args.device))
        out.mkdir(parents=True, exist_ok=True)
        dest = save_with_metadata(out / f"{src.stem}{src.suffix.lower()}", image, record)
        from PIL import Image

        with Image.open(src) as im:
            orig = np.asarray(im.convert("RGBA" if image.shape[-1] == 4 else "RGB"))
        same = orig.shape == image.shape and bool(np.array_equal(orig, image))
        print(f"wrote {dest} (pixels identical to {src}: {'yes' if same else 'NO'})")
        return 0 if same else 1
    if args.n is None and args.seeds is None:
        raise ValueError("give --n N or --seeds (e.g. 1-64), or --from-png FILE")
    pipe = _pipeline(args)
    result = pipe(
        seeds=args.seeds,
        n=args.n,
        **_latent_kwargs(args),
        **_image_kwargs(args),
        size=args.size,
    )
    paths = result.save(out, format=args.format, grid=args.grid)
    _report(paths, f"{len(result)} avatars, {pipe.family} {args.size or pipe.resolution}px")
    return 0


# ----------------------------------------------------------------------------- interpolate
def add_interpolate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of ``avatarforge interpolate``."""
    _add_model(parser)
    parser.add_argument("--seeds", required=True, help="keyframe seeds, at least two: 1,5,9 or 1-4")
    parser.add_argument("--frames", type=int, default=60, help="frames in the video (default 60)")
    parser.add_argument("--fps", type=float, default=24.0, help="frames per second (default 24)")
    parser.add_argument("--loop", action="store_true", help="return to the first seed (seamless loop)")
    _add_sampling(parser)
    _add_output(parser, grid=False, out="video file: .mp4, .gif, .webp or .png (APNG)")
    return parser


def interpolate_main(args: argparse.Namespace) -> int:
    """Run ``avatarforge interpolate``; returns the exit code."""
    from avatarforge.generate.interpolate import VIDEO_FORMATS, interpolate, save_video

    out = Path(args.out)
    if out.suffix.lower() not in VIDEO_FORMATS:
        raise ValueError(f"--out {out.name}: use a .mp4, .gif, .webp or .png (APNG) file name")
    pipe = _pipeline(args)
    frames = interpolate(
        pipe,
        args.seeds,
        frames=args.frames,
        loop=args.loop,
        **_latent_kwargs(args),
        **_image_kwargs(args),
    )
    save_video(out, frames, fps=args.fps, background=args.background)
    print(
        f"wrote {out}: {len(frames)} frames at {args.fps:g} fps ({pipe.family}, {'w lerp' if pipe.is_stylegan else 'z slerp'})"
    )
    return 0


# ----------------------------------------------------------------------------- edit
def add_personalise_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Subcommands of ``avatarforge edit``: variations, mix, directions, slide, invert."""
    sub = parser.add_subparsers(dest="edit_cmd", metavar="COMMAND", required=True)

    def source(p: argparse.ArgumentParser) -> None:
        g = p.add_mutually_exclusive_group(required=True)
        g.add_argument("--seed", type=int, default=None, help="start from this seed")
        g.add_argument(
            "--from-png", metavar="FILE", default=None, help="start from an image made by avatarforge"
        )

    v = sub.add_parser("variations", help="variations around one avatar (pick and refine)")
    _add_model(v)
    source(v)
    v.add_argument("--n", type=int, default=8, help="number of variations (default 8)")
    v.add_argument(
        "--strength", type=float, default=0.3, help="0 = the source .. 1 = unrelated (default 0.3)"
    )
    v.add_argument("--var-seed", type=int, default=0, help="seed of the random directions (default 0)")
    _add_sampling(v)
    _add_output(v)

    m = sub.add_parser("mix", help="StyleGAN style mixing: coarse layers from one seed, fine from another")
    _add_model(m)
    m.add_argument("--coarse", required=True, help="seeds giving pose/shape (rows)")
    m.add_argument("--fine", required=True, help="seeds giving colours/detail (columns)")
    m.add_argument("--crossover", type=int, required=True, help="styles taken from --coarse (0..num_ws)")
    _add_sampling(m)
    _add_output(m)

    d = sub.add_parser("directions", help="find attribute sliders and name them with the avatar classifier")
    _add_model(d)
    d.add_argument(
        "--method",
        choices=["auto", "sefa", "pca", "labels", "codes"],
        default="auto",
        help="auto: labels (conditional), codes (InfoGAN), else SeFa; sefa/pca work for every "
        "generator (StyleGAN: w space; dcgan, cgan, infogan, VAEs: z space, on the first layer)",
    )
    d.add_argument("--k", type=int, default=8, help="unsupervised directions to keep (default 8)")
    d.add_argument(
        "--layers", default="0", help="SeFa on a StyleGAN: style indices whose weights define A (default 0)"
    )
    d.add_argument(
        "--no-name", action="store_true", help="skip naming (naming trains the classifier once, ~1 min)"
    )
    d.add_argument("--samples", type=int, default=16, help="avatars used to name each direction (default 16)")
    d.add_argument(
        "--min-effect", type=float, default=0.1, help="smallest probability change that names a direction"
    )
    d.add_argument("--out", required=True, help="directions JSON file")

    s = sub.add_parser("slide", help="move an avatar along a slider")
    _add_model(s)
    source(s)
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument(
        "--direction", default=None, help="name or id from --directions (or sefa0, pca2 computed on the fly)"
    )
    g.add_argument("--attr", default=None, help="label slider toward a class: hair_color=blonde")
    g.add_argument("--code", default=None, help="InfoGAN code slider: c0 or cat0=3")
    s.add_argument("--directions", default=None, help="JSON written by 'edit directions'")
    s.add_argument(
        "--amounts",
        default=None,
        help="comma-separated amounts, e.g. --amounts=-3,0,3 (default: --steps over the slider range)",
    )
    s.add_argument("--steps", type=int, default=7, help="images along the slider (default 7)")
    _add_sampling(s)
    _add_output(s)

    i = sub.add_parser("invert", help="find the latent of your image (then edit it with slide --from-png)")
    _add_model(i)
    i.add_argument("image", help="the image to invert")
    i.add_argument("--steps", type=int, default=300, help="optimisation steps (default 300)")
    i.add_argument(
        "--space", choices=["auto", "w+", "w", "z"], default="auto", help="latent space (auto: w+ / z)"
    )
    i.add_argument("--lr", type=float, default=0.1, help="peak learning rate (default 0.1)")
    i.add_argument("--init", choices=["auto", "encoder", "random"], default="auto", help="initialisation")
    i.add_argument(
        "--candidates", type=int, default=64, help="random latents tried to initialise (default 64)"
    )
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--attrs", default=None, help="fixed labels of a conditional model")
    i.add_argument("--fit", choices=["crop", "pad"], default="crop", help="how the image is made square")
    i.add_argument("--out", required=True, help="output directory")
    return parser


def _source_latent(pipe: Any, a: argparse.Namespace) -> tuple[Any, str]:
    from avatarforge.generate.regenerate import latent_from_png

    if a.from_png:
        if not Path(a.from_png).is_file():
            raise FileNotFoundError(f"--from-png {a.from_png}: no such file")
        return latent_from_png(a.from_png, pipe), Path(a.from_png).stem
    lat = pipe.map(pipe.latents([a.seed], a.attrs, a.codes, a.truncation))
    return lat, f"seed{a.seed:04d}"


def _direction(pipe: Any, a: argparse.Namespace) -> Any:
    from avatarforge.generate import directions as D
    from avatarforge.generate.conditioning import parse_assignments

    if a.attr:
        items = parse_assignments(a.attr, "--attr")
        if len(items) != 1:
            raise ValueError("--attr takes one attribute=value, e.g. hair_color=blonde")
        ((name, value),) = items.items()
        i = pipe.labels.index(name)
        value = pipe.labels.class_name(i, pipe.labels.class_index(i, value))
        return D.find_direction(D.label_directions(pipe, [name]), f"{name}={value}")
    if a.code:
        return D.find_direction(D.code_directions(pipe), a.code)
    if a.directions:
        return D.find_direction(D.load_directions(a.directions, pipe), a.direction)
    if a.direction.startswith("sefa"):
        return D.find_direction(D.sefa_directions(pipe, k=int(a.direction[4:] or 0) + 1), a.direction)
    if a.direction.startswith("pca"):
        return D.find_direction(D.ganspace_directions(pipe, k=int(a.direction[3:] or 0) + 1), a.direction)
    raise ValueError(
        f"--direction {a.direction!r}: pass --directions FILE (from 'avatarforge edit directions'), "
        "or use sefaN / pcaN, --attr or --code"
    )


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--amounts {text!r}: give comma-separated numbers, e.g. -3,-1.5,0,1.5,3") from None


def personalise_main(args: argparse.Namespace) -> int:
    """Run ``avatarforge edit <command>``; returns the exit code."""
    from avatarforge.generate import directions as D
    from avatarforge.generate.invert import invert
    from avatarforge.generate.variations import style_mix, variations

    cmd = args.edit_cmd
    pipe = _pipeline(args)
    if cmd == "variations":
        latent, stem = _source_latent(pipe, args)
        res = variations(
            pipe,
            latent,
            n=args.n,
            strength=args.strength,
            seed=args.var_seed,
            **_image_kwargs(args),
        )
        paths = res.save(args.out, format=args.format, grid=args.grid, prefix=f"{stem}_var")
        _report(paths, f"{len(res)} variations of {stem}, strength {args.strength:g}")
    elif cmd == "mix":
        res = style_mix(
            pipe,
            args.coarse,
            args.fine,
            args.crossover,
            truncation=args.truncation,
            attrs=args.attrs,
            **_image_kwargs(args),
        )
        paths = res.save(args.out, format=args.format, grid=args.grid, prefix="mix", nrow=res.params["cols"])
        _report(paths, f"{res.params['rows']} x {res.params['cols']} style mixes, crossover {args.crossover}")
    elif cmd == "directions":
        method = args.method
        if method == "auto":
            method = "labels" if pipe.label_dims else "codes" if pipe.has_codes else "sefa"
        if method == "labels":
            found = D.label_directions(pipe)
        elif method == "codes":
            found = D.code_directions(pipe)
        elif method == "pca":
            found = D.ganspace_directions(pipe, k=args.k)
        else:
            layers = [int(x) for x in args.layers.split(",") if x.strip()]
            found = D.sefa_directions(pipe, k=args.k, layers=layers)
        if not args.no_name:
            found = D.name_directions(pipe, found, n=args.samples, min_effect=args.min_effect)
        path = D.save_directions(args.out, found, pipe)
        for d in found:
            eff = (
                f"  ({d.effect['attribute']}:{d.effect['class']} {d.effect['delta']:+.2f})"
                if d.effect
                else ""
            )
            print(f"{d.id:<16} {d.name}{eff}")
        print(f"wrote {len(found)} directions to {path}")
    elif cmd == "slide":
        latent, stem = _source_latent(pipe, args)
        direction = _direction(pipe, args)
        amounts = _floats(args.amounts) if args.amounts else None
        res = D.slide(
            pipe,
            latent,
            direction,
            amounts=amounts,
            steps=args.steps,
            **_image_kwargs(args),
        )
        paths = res.save(args.out, format=args.format, grid=args.grid, prefix=f"{stem}_slide", nrow=len(res))
        _report(paths, f"{stem} along {direction.name}")
    elif cmd == "invert":
        res = invert(
            pipe,
            args.image,
            steps=args.steps,
            space=args.space,
            lr=args.lr,
            init=args.init,
            candidates=args.candidates,
            seed=args.seed,
            attrs=_attrs(args.attrs),
            fit=args.fit,
        )
        stem = Path(args.image).stem
        paths = res.as_result(pipe).save(args.out, prefix=f"{stem}_inverted")
        print(
            f"reconstruction PSNR {res.psnr:.2f} dB (start {res.init_psnr:.2f} dB), SSIM {res.ssim:.3f}; "
            f"wrote {paths[0]} (edit it: avatarforge edit slide {args.run} --from-png {paths[0]} ...)"
        )
    else:  # pragma: no cover - argparse restricts the choices
        raise ValueError(f"unknown edit command {cmd!r}")
    return 0


def _attrs(text: str | None) -> dict[str, str] | None:
    from avatarforge.generate.conditioning import parse_assignments

    return parse_assignments(text) or None


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone parser with the three commands (for ``python -m avatarforge.generate.cli``)."""
    parser = argparse.ArgumentParser(prog="avatarforge-generate")
    sub = parser.add_subparsers(dest="command", required=True)
    add_generate_arguments(sub.add_parser("generate")).set_defaults(func=generate_main)
    add_interpolate_arguments(sub.add_parser("interpolate")).set_defaults(func=interpolate_main)
    add_personalise_arguments(sub.add_parser("edit")).set_defaults(func=personalise_main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m avatarforge.generate.cli``."""
    from avatarforge.commands import run_command

    args = build_parser().parse_args(argv)
    return run_command("avatarforge", lambda: args.func(args), exit=True)


if __name__ == "__main__":
    raise SystemExit(main())
