"""``avatarforge vae ...``: use a trained VAE from the command line.

::

    avatarforge vae encode RUN IMAGES... --out latents.npy
    avatarforge vae decode RUN latents.npy --out DIR
    avatarforge vae reconstruct RUN IMAGES... --out DIR
    avatarforge vae sample RUN --n 16 --seed 0 --out grid.png        (or a directory)
    avatarforge vae interpolate RUN A.png B.png --frames 16 --mode slerp --out strip.png|DIR|x.gif
    avatarforge vae edit RUN IMAGE --data DATASET --attribute accessory --from none --to glasses \\
                         --strength 1.0 --out out.png

``RUN`` is a run directory (its latest checkpoint), a ``ckpt-*`` directory or
``checkpoints/best``. Images are read like ``avatarforge data prepare`` reads them
(validated, centre-cropped and resized to the model's resolution; ``--fit pad`` keeps the
whole picture). RGBA models keep transparency in PNG/WebP outputs; GIFs are composited onto
white. Conditional models take ``--label name=value`` (repeatable); labels not given are
"unknown".

``add_vae_arguments(parser)`` adds the sub-commands to any parser and ``vae_main(args)``
runs them, returning the exit code: 0 done, 2 a usage error (bad file, value, shape; the
message says which).

This module imports only argparse at import time; torch is imported when a command runs.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from avatarforge.commands import run_command
from avatarforge.errors import EXIT_OK, UsageError

__all__ = ["add_vae_arguments", "build_parser", "main", "vae_main"]

_IMAGE_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg", ".gif")


def add_vae_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``encode/decode/reconstruct/sample/interpolate/edit`` sub-commands to ``parser``."""
    parser.description = parser.description or (
        "Use a trained VAE (vae/cvae run): encode images to latents, decode latents, reconstruct, "
        "sample, interpolate between two images, edit an attribute."
    )
    sub = parser.add_subparsers(dest="vae_command", metavar="COMMAND", required=True)

    def common(p: argparse.ArgumentParser, labels: bool = True) -> None:
        p.add_argument("run", metavar="RUN", help="run directory or checkpoint of a vae/cvae")
        p.add_argument(
            "--which",
            choices=["auto", "ema", "vae"],
            default="auto",
            help="weights: auto = EMA if the run kept one",
        )
        p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
        if labels:
            p.add_argument(
                "--label",
                action="append",
                default=[],
                metavar="NAME=VALUE",
                help="conditional models: a label value (repeatable), e.g. hair_color=blonde",
            )

    def images_in(p: argparse.ArgumentParser) -> None:
        p.add_argument("--fit", choices=["crop", "pad"], default="crop", help="square the input: crop or pad")

    p = sub.add_parser("encode", help="images -> latents.npy (posterior means, one row per image)")
    common(p)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    images_in(p)
    p.add_argument("--out", required=True, metavar="FILE.npy", help="(N, z_dim) float32 posterior means")
    p.add_argument("--logvar", metavar="FILE.npy", help="also write the (N, z_dim) log-variances")

    p = sub.add_parser("decode", help="latents.npy -> images in a directory")
    common(p)
    p.add_argument("latents", metavar="LATENTS.npy", help="(N, z_dim) or (z_dim,) array")
    p.add_argument(
        "--out", required=True, metavar="DIR|GRID.png", help="directory (one PNG each) or a grid image"
    )

    p = sub.add_parser("reconstruct", help="images -> their reconstructions")
    common(p)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    images_in(p)
    p.add_argument(
        "--out", required=True, metavar="DIR|GRID.png", help="directory (<name>.png each) or a grid"
    )

    p = sub.add_parser("sample", help="random images from the prior")
    common(p)
    p.add_argument("--n", type=int, default=16, help="number of images (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--temperature", type=float, default=1.0, help="scale of the prior draws (<1: more typical)"
    )
    p.add_argument("--out", required=True, metavar="GRID.png|DIR")

    p = sub.add_parser("interpolate", help="morph between two images through latent space")
    common(p, labels=False)
    p.add_argument("image_a", metavar="A")
    p.add_argument("image_b", metavar="B")
    images_in(p)
    p.add_argument("--frames", type=int, default=8, help="frames including both ends (default 8)")
    p.add_argument("--mode", choices=["slerp", "lerp"], default="slerp")
    p.add_argument("--label-a", action="append", default=[], metavar="NAME=VALUE", help="labels of A (cvae)")
    p.add_argument("--label-b", action="append", default=[], metavar="NAME=VALUE", help="labels of B (cvae)")
    p.add_argument("--fps", type=float, default=8.0, help="GIF frame rate (default 8)")
    p.add_argument("--out", required=True, metavar="STRIP.png|DIR|ANIM.gif")

    p = sub.add_parser("edit", help="change one attribute of an image (e.g. add glasses)")
    common(p)
    p.add_argument("image", metavar="IMAGE")
    images_in(p)
    p.add_argument(
        "--data", required=True, metavar="DATASET", help="packed data set labelled with the attribute"
    )
    p.add_argument("--attribute", required=True, help="categorical label, e.g. accessory, hair_color")
    p.add_argument("--from", dest="value_from", default="*", help="value to move away from ('*': any other)")
    p.add_argument("--to", dest="value_to", required=True, help="value to move to")
    p.add_argument(
        "--strength", type=float, default=1.0, help="multiple of the direction (0 = reconstruction)"
    )
    p.add_argument("--max-images", type=int, default=2000, help="images per group for the direction")
    p.add_argument("--out", required=True, metavar="OUT.png")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """A standalone parser (``python -m avatarforge.generate.vae_cli``)."""
    return add_vae_arguments(argparse.ArgumentParser(prog="avatarforge vae"))


# --------------------------------------------------------------------------- helpers
def _parse_labels(items: Sequence[str]) -> dict[str, str] | None:
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--label {item!r} must look like name=value (e.g. hair_color=blonde)")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out or None


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in _IMAGE_SUFFIXES


def _save_many(out: Path, images: Any, names: Sequence[str]) -> list[Path]:
    """One PNG per image in directory ``out``, or a grid when ``out`` is an image file name."""
    from avatarforge.imageio import make_grid, save_image

    if _is_image_file(out):
        return [save_image(out, make_grid(images))]
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    paths = []
    for i, (img, name) in enumerate(zip(images, names)):
        stem = name if name not in used else f"{name}-{i}"
        used.add(stem)
        paths.append(save_image(out / f"{stem}.png", img))
    return paths


def _save_gif(path: Path, frames: Any, fps: float) -> Path:
    """Animated GIF (looping); transparency is composited onto white."""
    import numpy as np
    from PIL import Image

    from avatarforge.fileio import atomic_write_bytes

    if frames.shape[-1] == 4:
        a = frames[..., 3:4].astype(np.uint16)
        frames = ((frames[..., :3].astype(np.uint16) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    pics = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    pics[0].save(buf, "GIF", save_all=True, append_images=pics[1:], duration=round(1000 / fps), loop=0)
    return atomic_write_bytes(path, buf.getvalue())


def _save_npy(path: Path, array: Any) -> Path:
    import numpy as np

    from avatarforge.fileio import atomic_write_bytes

    buf = io.BytesIO()
    np.save(buf, array)
    return atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------- commands
def _cmd_encode(a: argparse.Namespace, vae: Any) -> list[Path]:
    from avatarforge.generate import vae_ops as V

    imgs = V.load_images(a.images, vae, fit=a.fit)
    mu, logvar = V.encode(vae, imgs, _parse_labels(a.label), return_logvar=True)
    paths = [_save_npy(Path(a.out), mu.numpy())]
    if a.logvar:
        paths.append(_save_npy(Path(a.logvar), logvar.numpy()))
    return paths


def _cmd_decode(a: argparse.Namespace, vae: Any) -> list[Path]:
    import numpy as np

    from avatarforge.generate import vae_ops as V

    try:
        z = np.load(a.latents, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UsageError(f"{a.latents}: not a readable .npy array ({e})") from None
    images = V.decode(vae, z.astype(np.float32), _parse_labels(a.label))
    return _save_many(Path(a.out), images, [f"{i:06d}" for i in range(len(images))])


def _cmd_reconstruct(a: argparse.Namespace, vae: Any) -> list[Path]:
    from avatarforge.generate import vae_ops as V

    images = V.reconstruct(vae, V.load_images(a.images, vae, fit=a.fit), _parse_labels(a.label))
    return _save_many(Path(a.out), images, [Path(p).stem for p in a.images])


def _cmd_sample(a: argparse.Namespace, vae: Any) -> list[Path]:
    from avatarforge.generate import vae_ops as V

    if a.n < 1:
        raise UsageError(f"--n must be >= 1, got {a.n}")
    images = V.sample(vae, a.n, seed=a.seed, labels=_parse_labels(a.label), temperature=a.temperature)
    return _save_many(Path(a.out), images, [f"{i:06d}" for i in range(len(images))])


def _cmd_interpolate(a: argparse.Namespace, vae: Any) -> list[Path]:
    import numpy as np

    from avatarforge.generate import vae_ops as V
    from avatarforge.imageio import make_grid, save_image

    imgs = V.load_images([a.image_a, a.image_b], vae, fit=a.fit)
    frames = V.interpolate(
        vae,
        imgs[0],
        imgs[1],
        frames=a.frames,
        mode=a.mode,
        labels_a=_parse_labels(a.label_a),
        labels_b=_parse_labels(a.label_b),
    )
    out = Path(a.out)
    if out.suffix.lower() == ".gif":
        return [_save_gif(out, np.asarray(frames), a.fps)]
    if _is_image_file(out):
        return [save_image(out, make_grid(frames, nrow=len(frames)))]  # one row: a strip
    return _save_many(out, frames, [f"{i:04d}" for i in range(len(frames))])


def _cmd_edit(a: argparse.Namespace, vae: Any) -> list[Path]:
    from avatarforge.generate import vae_ops as V
    from avatarforge.imageio import save_image

    img = V.load_images([a.image], vae, fit=a.fit)
    labels = _parse_labels(a.label) or {}
    if a.attribute in getattr(vae, "label_names", []):
        # The model is conditioned on the attribute: change the label itself, keep the latent.
        src = {**labels, a.attribute: None if a.value_from == V.ANY else a.value_from}
        out = V.relabel(vae, img, src, {**labels, a.attribute: a.value_to}, strength=a.strength)
        how = f"relabel {a.attribute}: {a.value_from} -> {a.value_to}"
    else:
        direction = V.attribute_vector(
            vae, a.data, a.attribute, a.value_from, a.value_to, max_images=a.max_images
        )
        out = V.apply_attribute(vae, img, direction, a.strength, labels or None)
        how = f"latent direction {a.attribute}: {a.value_from} -> {a.value_to} (norm {float(direction.norm()):.3g})"
    print(how, file=sys.stderr)
    return [save_image(Path(a.out), out[0])]


_COMMANDS = {
    "encode": _cmd_encode,
    "decode": _cmd_decode,
    "reconstruct": _cmd_reconstruct,
    "sample": _cmd_sample,
    "interpolate": _cmd_interpolate,
    "edit": _cmd_edit,
}


def vae_main(args: argparse.Namespace) -> int:
    """Run ``avatarforge vae <command>`` for parsed ``args``; returns the exit code (0, or 2
    with one line naming the problem: :func:`avatarforge.commands.run_command`)."""
    return run_command(f"avatarforge vae {args.vae_command}", lambda: _vae(args))


def _vae(args: argparse.Namespace) -> int:
    from avatarforge.runs import load_vae

    try:
        vae = load_vae(args.run, which=args.which, device=args.device)
    except KeyError as e:  # the checkpoint names a model this version does not have
        raise UsageError(f"{args.run}: {e.args[0] if e.args else e}") from None
    if not hasattr(vae, "encoder"):
        raise UsageError(f"{args.run} does not hold a VAE")
    for p in _COMMANDS[args.vae_command](args, vae):
        print(p)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m avatarforge.generate.vae_cli``."""
    return vae_main(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
