"""The ``avatarforge animate`` command: render an animation, train an animator, export ONNX.

``add_animate_arguments(parser)`` adds the sub-commands to any ``argparse`` parser (the main
CLI's ``animate`` command); ``animate_main(args)`` runs the chosen one and returns the exit
code::

    avatarforge animate RUN --avatar IMG|SEED|GEN_RUN:SEED [--script blink,talk] [--audio speech.wav]
                        [--vmc [HOST:]PORT] [--mic] --out OUT.webp|png|apng|gif|webm|mp4
                        [--fps 30] [--seconds 5] [--size PX] [--background COLOUR]
    avatarforge animate train [--minutes M] [--kimg K] [--size 64] [--resume RUN] [KEY=VALUE ...]
    avatarforge animate export-onnx RUN OUT.onnx [--opset 17] [--no-check]

``animate RUN ...`` is short for ``animate render RUN ...``. ``RUN`` is a run directory (its
latest checkpoint's EMA animator), a checkpoint, or an exported ``.onnx`` file (then
onnxruntime renders). Exit codes: 0 done; 2 usage, configuration or input error; 3 training
diverged.

Building the parser imports nothing heavy; torch is imported when a command runs.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from avatarforge import cli_args
from avatarforge.commands import run_command
from avatarforge.config import accept_overrides_anywhere
from avatarforge.errors import EXIT_OK, UsageError

__all__ = ["add_animate_arguments", "animate_main", "build_parser", "main"]

COMMANDS = ("render", "train", "export-onnx")
#: Output suffixes written with transparency (by :func:`avatarforge.postprocess.export.save_animation`).
ALPHA_FORMATS = (".png", ".apng", ".webp", ".gif")
#: Output suffixes written as video: .webm is VP9 with an alpha channel (PyAV,
#: :func:`avatarforge.imageio.save_webm`), .mp4 (OpenCV) is composited on ``--background``.
VIDEO_FORMATS = {".webm": "VP90", ".mp4": "mp4v"}


# =============================================================================== parser
def add_animate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``render`` (the default), ``train`` and ``export-onnx`` to ``parser``."""
    parser.description = parser.description or (
        "Animate avatars with a trained expression animator: blinks, talking (from a WAV file or a "
        "script), VMC face tracking. 'animate RUN ...' is short for 'animate render RUN ...'. "
        "See docs/animate.md."
    )
    # The metavar names every sub-command, render included (the description says that
    # 'animate RUN ...' is short for it): help that showed RUN but listed 'render' confused users.
    sub = parser.add_subparsers(dest="animate_cmd", metavar="{render,train,export-onnx}", required=True)

    r = sub.add_parser(
        "render",
        help="render an animation (the default: 'animate RUN ...' = 'animate render RUN ...')",
        description="Animate one avatar with RUN's animator and write an animation file. APNG (.png/.apng), "
        "WebP and WebM (VP9) keep 8-bit transparency, GIF binary transparency; .mp4 has no alpha "
        "channel, so its frames are composited on --background.",
    )
    r.add_argument("run", metavar="RUN", help="run directory, checkpoint, or exported .onnx file")
    r.add_argument(
        "--avatar",
        required=True,
        metavar="IMG|SEED|GEN_RUN:SEED",
        help="an image file (PNG with alpha works best), an integer seed of a procedural avatar, or "
        "GEN_RUN:SEED: sample SEED of a generator run directory or checkpoint (avatarforge generate)",
    )
    r.add_argument(
        "--out", required=True, metavar="OUT", help="output: .webp .png .apng .gif .webm (alpha) or .mp4"
    )
    r.add_argument(
        "--script",
        metavar="ACTIONS",
        help="comma-separated actions: idle, blink, sway, talk, smile, look, nod (default: idle, "
        "or blink when --audio/--vmc/--mic drive the rest)",
    )
    r.add_argument("--audio", metavar="WAV", help="PCM WAV file whose loudness opens the mouth")
    r.add_argument(
        "--vmc",
        nargs="?",
        const="127.0.0.1:39539",
        metavar="[HOST:]PORT",
        help="receive VMC protocol (OSC/UDP) face tracking, default 127.0.0.1:39539; frames are paced in real time",
    )
    r.add_argument("--vmc-mirror", action="store_true", help="mirror VMC head yaw and tilt")
    r.add_argument(
        "--mic", action="store_true", help="microphone loudness opens the mouth (needs sounddevice)"
    )
    r.add_argument("--fps", type=float, default=30.0, help="frames per second (default 30)")
    r.add_argument(
        "--seconds", type=float, default=None, help="length (default: the audio's length, else 5 s)"
    )
    r.add_argument(
        "--size",
        type=int,
        default=None,
        help="output size in pixels (default: the animator's). Sizes above the animator's (256, 512) are "
        "drawn crisp by the rig (every live control: winks, gaze, vowels, brows, head pose, breath) from a "
        "built-in avatar (--avatar N) or GEN_RUN:SEED / an image with RUN's refiner (a quickstart folder has one)",
    )
    r.add_argument(
        "--background",
        default="white",
        metavar="COLOUR",
        help=".mp4 only: colour behind the avatar (default white; '#00ff00' for chroma key)",
    )
    r.add_argument("--seed", type=int, default=0, help="seed of the scripted actions (default 0)")
    r.add_argument("--device", default="cpu", help="torch device (default cpu)")
    r.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch / onnxruntime threads (default 1: a batch-1 frame gains little from more, and on a "
        "shared machine extra threads make frames much slower)",
    )
    r.set_defaults(animate_func=_cmd_render)

    t = sub.add_parser(
        "train",
        help="train an expression animator on procedural pairs",
        description="Train the expression animator on pairs rendered by the procedural renderer. Runs go to "
        "RUNS/NNNNN-animator-<size>/. Config keys (KEY=VALUE): see docs/animate.md or --dry-run.",
    )
    t.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. batch_size=32 optim.lr=5e-4"
    )
    cli_args.add_stop_arguments(t, "pairs")
    t.add_argument("--size", type=int, metavar="PX", help="training resolution (data.size, default 64)")
    t.add_argument("--workers", type=int, metavar="N", help="render processes for the pair cache / stream")
    cli_args.add_resume_arguments(t)
    cli_args.add_run_dir_arguments(t, "animator-<size>")
    t.set_defaults(animate_func=_cmd_train)
    accept_overrides_anywhere(t)

    e = sub.add_parser(
        "export-onnx",
        help="export a trained animator to ONNX (render + prepare graphs)",
        description="Write OUT.onnx (per-frame render graph) and OUT.prepare.onnx (once-per-avatar graph) and "
        "check them against torch with onnxruntime. Needs: pip install onnx onnxruntime.",
    )
    e.add_argument("run", metavar="RUN", help="run directory or checkpoint")
    e.add_argument("out", metavar="OUT.onnx", help="the render graph's path")
    e.add_argument("--which", choices=["ema", "g"], default="ema", help="EMA (default) or raw weights")
    e.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 16, default 17)")
    e.add_argument("--no-check", action="store_true", help="skip the onnxruntime vs torch check")
    e.set_defaults(animate_func=_cmd_export)

    _install_default_command(parser)
    return parser


def _install_default_command(parser: argparse.ArgumentParser) -> None:
    """``animate RUN ...`` -> ``animate render RUN ...`` (when the first token is no command)."""
    original = parser.parse_known_args

    def parse_known_args(args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        first = next((i for i, tok in enumerate(argv) if not tok.startswith("-")), None)
        if (
            first is not None
            and argv[first] not in COMMANDS
            and not any(tok in ("-h", "--help") for tok in argv[:first])
        ):
            argv.insert(first, "render")
        return original(argv, namespace)

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def build_parser() -> argparse.ArgumentParser:
    """A standalone ``avatarforge animate`` parser (tests, ``python -m avatarforge.animate.cli``)."""
    return add_animate_arguments(argparse.ArgumentParser(prog="avatarforge animate"))


# =============================================================================== helpers
def load_any_animator(run: str, device: str = "cpu", threads: int | None = None) -> Any:
    """An :class:`ExpressionAnimator` from a run/checkpoint/quickstart folder, or an
    :class:`OnnxAnimator` for ``.onnx`` (:func:`avatarforge.animate.loading.load_animator`)."""
    from avatarforge.animate.loading import load_animator

    return load_animator(run, device=device, threads=threads)


def load_avatar(spec: str, size: int) -> Any:
    """``--avatar``: an image file, an integer seed of a procedural avatar rendered at
    ``size``, or ``GEN_RUN:SEED``: sample ``SEED`` of a generator run directory or checkpoint
    (:class:`~avatarforge.generate.GeneratorPipeline`, the same image ``avatarforge generate
    GEN_RUN --seeds SEED`` writes)."""
    import numpy as np

    p = Path(spec)
    if p.is_file():
        from avatarforge.data.imagefile import ImageRejected, load_image

        try:
            return np.asarray(load_image(p))
        except ImageRejected as e:
            raise UsageError(f"--avatar {spec}: {e.message}") from None
    if re.fullmatch(r"\d+", spec.strip()):
        from avatarforge.data.procedural import render_avatar

        return render_avatar(int(spec), max(32, min(512, size)))
    run, sep, seed = spec.rpartition(":")
    if sep and re.fullmatch(r"\d+", seed.strip()) and run:
        if not Path(run).exists():
            raise UsageError(
                f"--avatar {spec}: no generator run or checkpoint at {run!r} (GEN_RUN:SEED takes a run "
                "directory of avatarforge train, e.g. runs/00000-stylegan-64:42)"
            )
        from avatarforge.generate import GeneratorPipeline

        try:
            pipe = GeneratorPipeline.from_pretrained(run)
        except (FileNotFoundError, ValueError, KeyError) as e:
            raise UsageError(f"--avatar {spec}: cannot load a generator from {run}: {e}") from None
        return pipe.render(pipe.latents([int(seed)]))[0]
    raise UsageError(
        f"--avatar {spec!r} is neither an image file, an integer seed, nor GEN_RUN:SEED (a generator "
        "run directory and a sample seed)"
    )


def _resize_frames(frames: list[Any], size: int) -> list[Any]:
    import numpy as np
    from PIL import Image

    if frames[0].shape[0] == size:
        return frames
    # Pillow resizes RGBA in premultiplied alpha, so edges do not pick up the black of
    # transparent pixels.
    return [
        np.asarray(Image.fromarray(f, "RGBA").resize((size, size), Image.Resampling.LANCZOS)) for f in frames
    ]


def write_video(path: Path, frames: list[Any], fps: float, background: tuple[int, int, int]) -> Path:
    """Write frames as .webm (VP9 with alpha) or .mp4 (MPEG-4 part 2, composited on ``background``)
    with OpenCV's FFmpeg back end, atomically (a temporary file renamed into place).

    Raises:
        UsageError: this OpenCV cannot write the format (the message suggests .webp/.png/.gif).
    """
    suffix = path.suffix.lower()
    if suffix == ".webm":  # VP9 with alpha through a real encoder (PyAV), not OpenCV's fallback
        from avatarforge.imageio import save_webm

        return save_webm(path, frames, fps)
    import cv2
    import numpy as np

    codec = VIDEO_FORMATS[suffix]
    alpha = suffix == ".webm"
    h, w = frames[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    params: list[int] = []
    if alpha:
        prop = getattr(cv2, "VIDEOWRITER_PROP_ENABLE_ALPHA", None)
        if prop is None:
            raise UsageError(
                f"this OpenCV ({cv2.__version__}) cannot write video with alpha (it needs "
                "VIDEOWRITER_PROP_ENABLE_ALPHA, OpenCV >= 4.11 with FFmpeg); write .webp, .png (APNG) or "
                ".gif for transparency, or .mp4 composited on --background"
            )
        params = [prop, 1]
    writer = cv2.VideoWriter(
        str(tmp), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*codec), float(fps), (w, h), params
    )
    if not writer.isOpened():
        tmp.unlink(missing_ok=True)
        what = "VP9 video with alpha" if alpha else f"{suffix} ({codec}) video"
        raise UsageError(
            f"OpenCV cannot write {what} here (no FFmpeg back end or encoder); write .webp, .png (APNG) "
            "or .gif instead"
        )
    bg = np.array(background, np.float32)
    try:
        for f in frames:
            if alpha:  # straight-alpha RGBA -> BGRA, as the FFmpeg writer takes it
                writer.write(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGBA2BGRA))
            else:
                a = f[..., 3:4].astype(np.float32) / 255.0
                rgb = f[..., :3].astype(np.float32) * a + bg * (1 - a)
                writer.write(cv2.cvtColor(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    if not tmp.is_file() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"OpenCV wrote no {suffix} data; write .webp, .png (APNG) or .gif instead")
    tmp.replace(path)
    return path


# =============================================================================== render
def _renderer(a: argparse.Namespace) -> tuple[Any, int]:
    """``(controls -> frame, frame size)``: the rig at ``--size`` when it is larger than the
    animator draws (crisp, every live control), else the neural animator of RUN."""
    from avatarforge.animate.loop import AvatarRenderer

    animator = None
    resolution = None
    try:
        animator = load_any_animator(a.run, a.device, a.threads)
        resolution = int(animator.resolution)
    except (FileNotFoundError, ValueError, KeyError) as e:
        if a.size is None:
            raise UsageError(
                f"{a.run}: no animator ({e}); give --size 256 or 512 to animate with the rig"
            ) from None
    if a.size is not None and (resolution is None or a.size > resolution) and a.size >= 128:
        from avatarforge.animate.rig import RigError
        from avatarforge.animate.rig_sources import rig_for

        try:
            rig = rig_for(a.avatar, a.size, generator=a.run)
        except RigError as e:
            raise UsageError(f"--avatar {a.avatar} at --size {a.size}: {e}") from None
        for w in rig.warnings:
            print(f"note: {w}", file=sys.stderr)
        return rig.render, a.size
    assert animator is not None and resolution is not None
    return AvatarRenderer(animator, load_avatar(a.avatar, resolution)), resolution


def _cmd_render(a: argparse.Namespace) -> int:
    from avatarforge.animate.drivers import AudioDriver, MicrophoneDriver, ScriptedDriver, VMCDriver
    from avatarforge.animate.loop import FrameLoop

    out = Path(a.out)
    suffix = out.suffix.lower()
    if suffix not in ALPHA_FORMATS and suffix not in VIDEO_FORMATS:
        raise UsageError(
            f"--out {out.name}: unknown format; use .webp, .png/.apng, .gif, .webm (with transparency) or .mp4"
        )
    if not 0 < a.fps <= 100:
        raise UsageError(f"--fps must be in (0, 100], got {a.fps}")
    if a.size is not None and not 16 <= a.size <= 2048:
        raise UsageError(f"--size must be from 16 to 2048, got {a.size}")
    background = (255, 255, 255)
    if suffix == ".mp4":
        from avatarforge.data.imagefile import parse_color

        background = parse_color(a.background)
    if a.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {a.threads}")
    import torch

    torch.set_num_threads(a.threads)

    render, resolution = _renderer(a)
    drivers: list[Any] = []
    live = bool(a.vmc or a.mic)
    script = a.script or ("blink" if (a.audio or live) else "idle")
    try:
        drivers.append(ScriptedDriver(script, seed=a.seed))
        audio = AudioDriver(a.audio) if a.audio else None
        if audio is not None:
            drivers.append(audio)
        if a.mic:
            drivers.append(MicrophoneDriver())
        if a.vmc:
            host, _, port = a.vmc.rpartition(":")
            try:
                vmc = VMCDriver(host or "127.0.0.1", int(port), mirror=a.vmc_mirror)
            except ValueError:
                raise UsageError(f"--vmc {a.vmc!r}: expected [HOST:]PORT, e.g. 127.0.0.1:39539") from None
            drivers.append(vmc)
            print(f"listening for VMC on {vmc.host}:{vmc.port}", file=sys.stderr)
        seconds = a.seconds if a.seconds is not None else (audio.duration if audio is not None else 5.0)
        if not 0 < seconds <= 3600:
            raise UsageError(f"--seconds must be in (0, 3600], got {seconds}")
        loop = FrameLoop(render, drivers, fps=a.fps, realtime=live)
        frames = loop.collect(seconds=seconds)
    finally:
        for d in drivers:
            d.close()
    if a.size is not None and a.size != resolution:
        frames = _resize_frames(frames, a.size)
    if suffix in VIDEO_FORMATS:
        path = write_video(out, frames, a.fps, background)
        if suffix == ".mp4":
            print(
                f"note: .mp4 video has no alpha channel: composited on {a.background} "
                "(write .webm, .webp or .png for transparency)",
                file=sys.stderr,
            )
    else:
        from avatarforge.postprocess.export import save_animation

        path = save_animation(out, frames, fps=a.fps)
    s = loop.stats.summary()
    print(
        f"wrote {path} ({len(frames)} frames, {frames[0].shape[1]} px, {a.fps:g} fps; render "
        f"p50 {s['render_ms_p50']:.1f} ms, p99 {s['render_ms_p99']:.1f} ms)"
    )
    return EXIT_OK


# =============================================================================== train
def _cmd_train(a: argparse.Namespace) -> int:
    from avatarforge.animate.config import build_animator_config
    from avatarforge.config import ConfigError, parse_overrides
    from avatarforge.train.cli import dry_run_or_train

    bad = [t for t in a.overrides if not cli_args.OVERRIDE_RE.match(t)]
    if bad:
        raise ConfigError(f"animate train takes KEY=VALUE overrides, got {' '.join(bad)}")
    overrides = parse_overrides(a.overrides)
    cli = cli_args.run_settings(a)
    if a.size is not None:
        cli.setdefault("data", {})["size"] = a.size
    if a.workers is not None:
        cli.setdefault("data", {})["workers"] = a.workers
    config_file = cli_args.config_file(a)
    cfg = build_animator_config(
        config_file=config_file, cli=cli, overrides=[f"{k}={v}" for k, v in overrides]
    )
    return dry_run_or_train(cfg, a)


# =============================================================================== export
def _cmd_export(a: argparse.Namespace) -> int:
    from avatarforge.animate.loading import load_animator
    from avatarforge.animate.onnx_export import export_onnx

    animator = load_animator(a.run, which=a.which)
    render_path, prepare_path = export_onnx(animator, a.out, opset=a.opset, check=not a.no_check)
    checked = "" if a.no_check else " (checked against torch with onnxruntime)"
    print(f"wrote {render_path} (per frame) and {prepare_path} (per avatar){checked}")
    return EXIT_OK


# =============================================================================== entry points
def animate_main(args: argparse.Namespace) -> int:
    """Run the ``avatarforge animate`` sub-command in ``args``; returns the process exit code
    (:func:`avatarforge.commands.run_command`: 2 for a usage error, 3 if training diverged)."""
    return run_command("avatarforge animate", lambda: args.animate_func(args))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m avatarforge.animate.cli ...`` (the same as ``avatarforge animate ...``)."""
    return animate_main(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
