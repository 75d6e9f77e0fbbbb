"""VRM export of a 512-px avatar (issue #20): time, file size, front-view fidelity.

- export time: ``export_vrm("procedural:N", out)`` end to end (render the avatar and its
  part map, rig it, cut the layers and expression patches, pack the atlas, write the file),
  median over a few avatars, target <= 5 s on 2 cores;
- file size: largest of those files, target <= 5 MB;
- front view: the software rasteriser's render of the written file against the 2D avatar,
  PSNR on the face box, target >= 25 dB (lowest over the avatars);
- preview: one turntable + expression strip (24 frames, 256 px), seconds (no target).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import Result


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    def grey(x):
        al = x[..., 3:4] / 255.0
        return x[..., :3] * al + 128.0 * (1.0 - al)

    mse = float(((grey(a) - grey(b)) ** 2).mean())
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def run(quick: bool) -> list[Result]:
    from avatarforge.avatar3d.raster import load_scene, render_view, write_preview
    from avatarforge.avatar3d.source import load_avatar
    from avatarforge.avatar3d.vrm import export_vrm

    seeds = [3, 5] if quick else [1, 2, 3, 5, 8]
    times, sizes, psnrs = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        export_vrm("procedural:0", Path(tmp) / "warm.vrm")  # imports, caches
        for s in seeds:
            out = Path(tmp) / f"a{s}.vrm"
            t0 = time.perf_counter()
            report = export_vrm(f"procedural:{s}", out)
            times.append(time.perf_counter() - t0)
            sizes.append(report.bytes)
            scene = load_scene(out)
            x0, y0, x1, y1 = (round(v) for v in scene.framing["face_box"])
            src = load_avatar(f"procedural:{s}").image
            psnrs.append(_psnr(render_view(scene)[y0:y1, x0:x1], src[y0:y1, x0:x1]))
        t0 = time.perf_counter()
        write_preview(Path(tmp) / f"a{seeds[0]}.vrm", Path(tmp) / "turntable.webp")
        preview_s = time.perf_counter() - t0
    return [
        Result(
            "VRM export, 512-px avatar",
            float(np.median(times)),
            "s",
            target=5.0,
            higher_is_better=False,
            notes=f"median of {len(seeds)} avatars, end to end (render, rig, layers, atlas, write)",
            extra={"seconds": [round(t, 3) for t in times]},
        ),
        Result("VRM file size", max(sizes) / 1e6, "MB", target=5.0, higher_is_better=False),
        Result(
            "VRM front view vs avatar, face PSNR",
            float(min(psnrs)),
            "dB",
            target=25.0,
            notes="software rasteriser of the written file; 99 = identical",
        ),
        Result("VRM preview (turntable + expressions)", preview_s, "s", notes="24 frames, 256 px"),
    ]
