"""``avatarforge serve RUN``: the HTTP API (and the overlay/studio when installed) with uvicorn.

``add_serve_arguments(parser)`` adds the flags to any ``argparse`` parser (the main CLI's
``serve`` command); ``serve_main(args)`` loads the models once and runs the server until
Ctrl-C. Building the parser imports nothing heavy.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from typing import Any

__all__ = [
    "API_KEY_ENV",
    "add_serve_arguments",
    "is_loopback",
    "serve_main",
    "settings_from_args",
    "startup_message",
]

#: Environment variable read for the API key when ``--api-key`` is not given (keeps the key
#: out of the process list and shell history).
API_KEY_ENV = "AVATARFORGE_API_KEY"


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``RUN`` and the server flags to ``parser``."""
    parser.description = parser.description or (
        "Serve a trained model over HTTP (FastAPI): generate, variations, interpolate, edit, post-process, "
        "style transfer, animate. See docs/serving.md."
    )
    parser.add_argument(
        "run", metavar="RUN", help="generator run directory, checkpoint, or quickstart output"
    )
    parser.add_argument(
        "--animator",
        metavar="RUN",
        default=None,
        help="expression animator run/checkpoint or .onnx (enables /v1/animate)",
    )
    parser.add_argument(
        "--refiner",
        metavar="RUN",
        default=None,
        help="refiner run (avatarforge train .../refiner-512px.yaml): 512-px avatars and the overlay's "
        "live rig for generated avatars; default: a quickstart folder's own",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help=f"require this key (X-API-Key or Authorization: Bearer); default: ${API_KEY_ENV} if set, else open",
    )
    parser.add_argument("--max-upload-mb", type=float, default=8.0, help="largest upload in MiB (default 8)")
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=16_000_000,
        help="most pixels of an uploaded image, read from its header before decoding (default 16000000)",
    )
    parser.add_argument(
        "--max-output-side",
        type=int,
        default=2048,
        metavar="PX",
        help="longest side of a post-processing result or any intermediate image of its chain, "
        "checked before any work (default 2048)",
    )
    parser.add_argument("--max-n", type=int, default=64, help="most images per request (default 64)")
    parser.add_argument("--max-frames", type=int, default=240, help="most frames per animation (default 240)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="generator batch (default 8: the same bytes as 'avatarforge generate'; 1: one-seed requests "
        "~4x cheaper on a CPU, outputs differ from the CLI's by float rounding)",
    )
    parser.add_argument(
        "--vmc",
        nargs="?",
        const="127.0.0.1:39539",
        default=None,
        metavar="[HOST:]PORT",
        help="live overlay: listen for VMC face tracking (OSC/UDP; default 127.0.0.1:39539 when given bare)",
    )
    parser.add_argument(
        "--ifacialmocap",
        nargs="?",
        const="1",
        default=None,
        metavar="[HOST:]PORT",
        help="live overlay: listen for iPhone face tracking from the iFacialMocap app (UDP 49983 when given bare)",
    )
    parser.add_argument(
        "--ifacialmocap-phone",
        default=None,
        metavar="IP",
        help="the phone's address (asks it to start sending)",
    )
    parser.add_argument(
        "--listen",
        default=None,
        metavar="ADDR",
        help="address the tracking listeners bind to (default 127.0.0.1; e.g. 0.0.0.0 for a phone on the LAN)",
    )
    parser.add_argument(
        "--vmc-send",
        nargs="?",
        const="1",
        default=None,
        metavar="HOST:PORT",
        help="send the live controls out as VMC (default 127.0.0.1:39540 when given bare)",
    )
    parser.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help="where the studio's last pick and the overlay's avatar are kept across restarts "
        "(default $AVATARFORGE_CACHE/serve; '' keeps nothing)",
    )
    parser.add_argument(
        "--overlay-audio", default=None, metavar="WAV", help="live overlay: a WAV to lip-sync to (key P)"
    )
    parser.add_argument(
        "--overlay-fps", type=float, default=None, help="live overlay: default frame rate (default 30)"
    )
    parser.add_argument("--device", default="cpu", help="torch device of the models (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    return parser


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def settings_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Any:
    """The :class:`~avatarforge.serve.state.ServeSettings` the flags (and environment) describe."""
    from avatarforge.serve.state import ServeSettings

    env = os.environ if environ is None else environ
    key = args.api_key if args.api_key is not None else (env.get(API_KEY_ENV) or None)
    if not args.max_upload_mb > 0:
        raise ValueError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    for flag, v in (
        ("--max-n", args.max_n),
        ("--max-frames", args.max_frames),
        ("--max-pixels", getattr(args, "max_pixels", 1)),
        ("--max-output-side", getattr(args, "max_output_side", 1)),
    ):
        if v < 1:
            raise ValueError(f"{flag} must be >= 1, got {v}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    try:
        return ServeSettings(
            host=args.host,
            port=args.port,
            api_key=key,
            max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
            max_pixels=getattr(args, "max_pixels", 16_000_000),
            max_output_side=getattr(args, "max_output_side", 2048),
            max_n=args.max_n,
            max_frames=args.max_frames,
            device=args.device,
            threads=args.threads,
            batch_size=args.batch_size,
            vmc=getattr(args, "vmc", None),
            overlay_audio=getattr(args, "overlay_audio", None),
            overlay_fps=getattr(args, "overlay_fps", None),
            state_dir=_state_dir(getattr(args, "state_dir", None)),
            listen=getattr(args, "listen", None),
            ifacialmocap=getattr(args, "ifacialmocap", None),
            ifacialmocap_phone=getattr(args, "ifacialmocap_phone", None),
            vmc_send=getattr(args, "vmc_send", None),
        )
    except ValueError as e:
        raise ValueError(f"--{str(e).split()[0].replace('_', '-')}: {e}") from None


def _state_dir(flag: str | None) -> str | None:
    """``--state-dir``: the default state directory when not given, none for ``''``."""
    if flag is None:
        from avatarforge.serve.persist import default_state_dir

        return str(default_state_dir())
    return flag or None


def _browser_host(host: str) -> str:
    """The address a browser on this machine opens for a server bound to ``host``."""
    h = host.strip()
    if h in ("", "0.0.0.0"):
        return "127.0.0.1"
    if h in ("::", "[::]"):
        return "[::1]"
    return f"[{h}]" if ":" in h and not h.startswith("[") else h


def startup_message(settings: Any, state: Any, app: Any) -> str:
    """What ``avatarforge serve`` prints at start: the model and the studio, overlay and API
    docs URLs. Never the API key: with one, the URLs say where to add it."""
    anim = f", animator {state.animator_run}" if state.animator is not None else ", no animator"
    base = f"http://{_browser_host(settings.host)}:{settings.port}"
    mounted = getattr(app.state, "mounted", [])
    keyed = settings.api_key is not None
    studio = f"{base}/studio" if "studio" in mounted else "not available (pip install 'avatarforge[ui]')"
    if "studio" in mounted and keyed:
        studio += "  (log in with the API key as the password)"
    overlay = f"{base}/overlay?avatar=studio" + ("&key=KEY" if keyed else "")
    if "overlay" not in mounted:
        overlay = "not available"
    docs = f"{base}/docs" + ("?key=KEY" if keyed else "")
    if getattr(app.state, "swagger_ui", None) is None:
        docs += (
            "  (Swagger UI not installed: run 'make install' in the checkout; the schema is /openapi.json)"
        )
    lines = [
        f"serving {state.generator_run} ({state.pipe.family}, {state.pipe.resolution} px{anim}) on {base}",
        f"  studio:   {studio}",
        f"  overlay:  {overlay}",
        f"  API docs: {docs}",
    ]
    if keyed:
        lines.append("  (KEY: this server's API key, from --api-key or $" + API_KEY_ENV + ")")
    return "\n".join(lines)


def serve_main(args: argparse.Namespace) -> int:
    """Load the models, print where the server listens, run uvicorn until interrupted.

    Returns 2 (with a message naming the install command) when FastAPI/uvicorn are missing.
    """
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as e:
        from avatarforge.commands import report_error

        # Reported here, not raised: serve_main's other errors end in the top-level command's
        # SystemExit, but this one has always been a returned 2.
        return report_error(
            "avatarforge",
            f"'serve' needs FastAPI and uvicorn ({e.name} is missing): pip install 'avatarforge[serve]'",
        )

    from avatarforge.serve.app import create_app
    from avatarforge.serve.state import ServeState

    settings = settings_from_args(args)
    if settings.listen and not is_loopback(settings.listen):
        print(
            f"WARNING: tracking listeners bind to {settings.listen}: any device on that network can drive "
            "the avatar (no key protects UDP input); use it on a network you trust",
            file=sys.stderr,
        )
    if not is_loopback(settings.host) and settings.api_key is None:
        print(
            f"WARNING: binding to {settings.host} WITHOUT an API key: anyone who can reach this port can use "
            f"the models. Set --api-key or ${API_KEY_ENV}, or bind to 127.0.0.1.",
            file=sys.stderr,
        )
    state = ServeState.load(args.run, animator=args.animator, settings=settings, refiner=args.refiner)
    app = create_app(state)
    print(startup_message(settings, state, app), file=sys.stderr)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level)
    return 0
