"""The ``avatarforge eval`` command: flags -> :func:`avatarforge.eval.evaluate` -> summary + JSON.

``add_eval_arguments(parser)`` adds the flags to any ``argparse`` parser (the main CLI's
``eval`` sub-command, or this module's own parser for ``python -m avatarforge.eval.cli``);
``eval_main(args)`` runs it and returns the exit code: 0 on success, 2 for a usage error
(the message names the option or input and the fix).

Building the parser imports nothing heavy; torch is imported by ``eval_main``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from avatarforge.commands import run_command
from avatarforge.errors import EXIT_OK, UsageError

__all__ = ["add_eval_arguments", "build_parser", "eval_main", "main"]

_METRIC_HELP = (
    "comma-separated: fid, kid, pr (precision/recall), swd (sliced Wasserstein), attr (attribute "
    "accuracy of a conditional model), recon (VAE reconstruction MSE/PSNR/SSIM); default fid,kid,pr"
)


def add_eval_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``avatarforge eval``'s positional SOURCE and flags to ``parser``; returns it."""
    parser.description = parser.description or (
        "Score generated avatars against reference images: FID/KID/precision-recall in a feature "
        "space (Inception-v3 or the built-in avatar network), SWD on pixels, attribute accuracy, "
        "VAE reconstruction. Reference features are cached by content hash."
    )
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="what to evaluate: a run directory or checkpoint (samples --n images), an image folder, "
        "or a packed data set",
    )
    parser.add_argument("--ref", metavar="REF", help="reference images: a packed data set or an image folder")
    parser.add_argument("--metrics", default="fid,kid,pr", metavar="LIST", help=_METRIC_HELP)
    parser.add_argument(
        "--extractor",
        default="auto",
        metavar="NAME",
        help="feature space for fid/kid/pr: inception (standard FID; needs the weight file), avatar "
        "(built-in, no download), or auto (default: inception if its weights are found, else avatar)",
    )
    parser.add_argument(
        "--weights",
        metavar="PATH",
        help="extractor weights: pt_inception-2015-12-05-6726825d.pth for inception (default: "
        "$AVATARFORGE_CACHE/weights/), a saved net directory for avatar",
    )
    parser.add_argument(
        "--n", type=int, default=5000, help="generated samples / source images (default 5000)"
    )
    parser.add_argument("--n-ref", type=int, default=None, metavar="N", help="reference images (default all)")
    parser.add_argument("--batch", type=int, default=64, help="images per forward pass (default 64)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of latents, subsets, KID and SWD (default 0)"
    )
    parser.add_argument(
        "--truncation", type=float, default=1.0, help="truncation psi for sampling (default 1)"
    )
    parser.add_argument("--out", metavar="FILE.json", help="write all numbers and settings as JSON")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    parser.add_argument(
        "--size", type=int, default=None, help="bring folder images to this side (default: first image's)"
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="cache directory (default $AVATARFORGE_CACHE or ~/.cache/avatarforge)",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="neither read nor write cached reference features"
    )
    parser.add_argument("--json", action="store_true", help="print the JSON result instead of the summary")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _resolve_extractor(args: argparse.Namespace, notes: list[str]) -> str:
    name = args.extractor
    if name != "auto":
        return name
    from avatarforge.eval.inception import default_weights_path

    if args.weights or default_weights_path().is_file():
        return "inception"
    notes.append(
        f"--extractor auto: no Inception weights at {default_weights_path()}, using the avatar extractor "
        "(scores are fid_avatar, ...; see docs/evaluation.md to use the standard Inception FID)"
    )
    return "avatar"


def _validate(args: argparse.Namespace) -> None:
    from avatarforge.eval.extractors import list_extractors
    from avatarforge.eval.metrics import get_metric

    if args.n < 1:
        raise UsageError(f"--n must be >= 1, got {args.n}")
    if args.n_ref is not None and args.n_ref < 2:
        raise UsageError(f"--n-ref must be >= 2, got {args.n_ref}")
    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {args.batch}")
    if not args.truncation > 0:
        raise UsageError(f"--truncation must be > 0 (1 = no truncation), got {args.truncation}")
    if args.size is not None and args.size < 16:
        raise UsageError(f"--size must be >= 16 pixels, got {args.size}")
    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if not names:
        raise UsageError(f"--metrics is empty; choose from {_METRIC_HELP}")
    kinds = set()
    for m in names:
        try:
            kinds.add(get_metric(m).kind)
        except KeyError as e:
            raise UsageError(f"--metrics: {e.args[0]}") from None
    if args.extractor != "auto" and args.extractor not in list_extractors():
        raise UsageError(
            f"--extractor: unknown {args.extractor!r}; choose from auto, {', '.join(list_extractors())}"
        )
    if not Path(args.source).exists():
        raise UsageError(
            f"SOURCE {args.source} does not exist (a run directory, image folder or packed data set)"
        )
    if kinds & {"features", "images", "reconstruction"} and not args.ref:
        needing = [m for m in names if get_metric(m).kind in ("features", "images", "reconstruction")]
        raise UsageError(
            f"--ref is required for {', '.join(needing)}: pass reference images (a packed data set or a folder)"
        )
    if args.ref and not Path(args.ref).exists():
        raise UsageError(f"--ref {args.ref} does not exist (a packed data set or an image folder)")
    if args.weights and not Path(args.weights).exists():
        raise UsageError(f"--weights {args.weights} does not exist")
    if args.device not in ("auto", "cpu") and not args.device.startswith("cuda"):
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {args.device!r}")


def eval_main(args: argparse.Namespace) -> int:
    """Run ``avatarforge eval`` for parsed ``args``; returns the process exit code (0, or 2
    with one line naming the problem: :func:`avatarforge.commands.run_command`)."""
    return run_command("avatarforge eval", lambda: _eval(args))


def _eval(args: argparse.Namespace) -> int:
    from avatarforge.eval.evaluate import evaluate

    _validate(args)
    notes: list[str] = []
    extractor = _resolve_extractor(args, notes)
    for n in notes:
        print(n, file=sys.stderr)
    result = evaluate(
        args.source,
        args.ref,
        metrics=args.metrics,
        extractor=extractor,
        weights=args.weights,
        n=args.n,
        n_ref=args.n_ref,
        batch_size=args.batch,
        seed=args.seed,
        truncation=args.truncation,
        device=args.device,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
        progress=not args.quiet,
        size=args.size,
    )
    result.notes[:0] = notes
    if args.out:
        result.save(args.out)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(result.summary())
        if args.out:
            print(f"results: {args.out}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """A standalone parser (``python -m avatarforge.eval.cli``)."""
    return add_eval_arguments(argparse.ArgumentParser(prog="avatarforge eval"))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m avatarforge.eval.cli``."""
    return eval_main(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
