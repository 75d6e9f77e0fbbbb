"""The ``avatarforge export`` command: 3D models of an avatar.

::

    avatarforge export vrm AVATAR OUT.vrm [--parts PARTS.png] [--format vrm1|vrm0|glb]
                           [--size 512] [--texture-size PX] [--name NAME] [--author NAME ...]
                           [--license-url URL] [--preview turntable.webp]

AVATAR is ``procedural:N`` or an RGBA PNG (its part map from ``--parts`` or ``NAME.parts.png``
beside it). Exit codes: 0 written; 2 a bad avatar, option or output path (nothing written).
See docs/3d.md.
"""

from __future__ import annotations

import argparse

__all__ = ["add_export_arguments", "export_main"]


def add_export_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``vrm`` sub-command to ``parser``."""
    parser.description = (
        "Export an avatar as a 3D model (VRM for VTuber apps, GLB for glTF viewers). See docs/3d.md."
    )
    sub = parser.add_subparsers(dest="export_cmd", metavar="{vrm}", required=True)
    v = sub.add_parser(
        "vrm",
        help="a textured 2.5D head-and-bust VRM (or GLB) with a humanoid skeleton and expressions",
        description="Cut the avatar into layers (back hair, body, face, front hair) by its part map, "
        "texture-map them onto shallow 3D shells on a humanoid skeleton, and bind blink, vowel and "
        "emotion expressions drawn by the live rig. Loads in VSeeFace (--format vrm0), Warudo, "
        "three-vrm and any glTF viewer (.glb).",
    )
    v.add_argument(
        "avatar",
        metavar="AVATAR",
        help="procedural:N, RUN:SEED, a quickstart folder, or an RGBA PNG (its part map: --parts, "
        "NAME.parts.png beside it, or --segmenter)",
    )
    v.add_argument("out", metavar="OUT", help="the file to write (.vrm, or .glb for plain glTF)")
    v.add_argument("--parts", default=None, help="the PNG's part map (one-channel PNG of part ids)")
    v.add_argument(
        "--segmenter",
        default=None,
        metavar="RUN",
        help="predict the PNG's part map with this part segmenter run or quickstart folder "
        "(default: the one a generated PNG's metadata names)",
    )
    v.add_argument(
        "--format",
        choices=["vrm1", "vrm0", "glb"],
        default=None,
        help="vrm1 (default for .vrm), vrm0 (VSeeFace and other 0.x apps), glb (default for .glb)",
    )
    v.add_argument("--size", type=int, default=512, help="render size of procedural:N avatars (default 512)")
    v.add_argument(
        "--texture-size",
        type=int,
        default=None,
        help="texture atlas side, a power of two (default: as needed)",
    )
    v.add_argument("--name", default=None, help="the model's name in its meta (default: the avatar's)")
    v.add_argument(
        "--author", action="append", default=None, help="an author for the meta (repeat for several)"
    )
    v.add_argument(
        "--license-url",
        default=None,
        help="licence URL in the meta (default: the VRM Public License 1.0, https://vrm.dev/licenses/1.0/)",
    )
    v.add_argument(
        "--preview",
        default=None,
        help="also write a CPU-rendered turntable + expression strip (.webp, .png, .gif)",
    )
    v.set_defaults(export_func=_cmd_vrm)
    return parser


def _cmd_vrm(a: argparse.Namespace) -> int:
    from avatarforge.avatar3d.vrm import VRM_LICENSE_URL, export_vrm

    report = export_vrm(
        a.avatar,
        a.out,
        parts=a.parts,
        segmenter=a.segmenter,
        fmt=a.format,
        size=a.size,
        texture_size=a.texture_size,
        name=a.name,
        authors=tuple(a.author or ("AvatarForge user",)),
        license_url=a.license_url or VRM_LICENSE_URL,
        preview=a.preview,
    )
    for w in report.warnings:
        print(f"warning: {w}")
    print(report.summary())
    return 0


def export_main(args: argparse.Namespace) -> int:
    """Run ``avatarforge export ...``; returns the exit code."""
    return args.export_func(args)
