"""Stream-ready avatars (issue 17): the issue's "Numbers" table, measured side by side in one run.

Every part records the 1-minute load average when it starts (the box is a shared 2-core
machine: compare the figures of one run, not across runs); ``run.py`` records the machine.

**1. Overlay frame rate.** The real server (``create_app`` in a uvicorn thread of this process,
one torch thread, as ``avatarforge serve`` runs) and the ``/overlay`` page in headless Debian
Chromium at 512 x 512 with software WebGL (``--use-angle=swiftshader``). While a ``while True:
pass`` process keeps the other core busy (a streamer's game), the page's own figures
(``window.overlayStats()``: frames shown per second = 1000 / mean interval between shown
frames, p99 of those intervals) over a few seconds, for

* rig mode (``mode=rig``, the renderer's avatar 3: the page draws every 512-px frame itself
  from the rig and the controls the server streams at the default 30 per second);
* frames mode (``mode=frames``): an untrained 64-px ``ExpressionAnimator`` (the same cost per
  frame as a trained one) renders every frame on the server at 60 requested FPS, encoded and
  sent at 512 px (``size=512``); the full run adds the same at its native 64 px (CSS-scaled;
  the issue's "13.7 FPS" configuration).

Idle life is on (blinks, breathing, sway). Also recorded: CPU seconds per second of this
process (server) and of the browser's process tree over the window. Targets: >= 30 FPS,
p99 <= 50 ms.

**2. Expressions.** The fraction of a 512-px frame whose premultiplied RGBA changes by more
than 24/255 when the eyes close (``eye_open=0``), the mouth opens (``mouth_open=1``) or the
avatar smiles (``smile=1``), as a ratio of the same figure for the procedural renderer drawing
the same request on its own avatars: (a) renderer avatars rigged from their exact part maps
(:class:`~avatarforge.animate.rig.AvatarRig`, ratio against the renderer on the same
avatars); (b) generated avatars (the quickstart's generator, ``pipe.render_layers`` at 512:
the refiner's picture and its predicted part map), ratio against the renderer's mean effect
in (a). Targets >= 0.8 / 0.8 / 0.6. "Iris left with eyes closed": inside the eye region (the
open eye's eye-white, iris and lash parts, dilated 2 % of the size), pixels whose colour is
nearest the avatar's iris colour (among its skin, hair, eye-white, iris, lash and brow mean
colours, within 60/255) in the closed frame as a fraction of the open frame (target < 10 %;
the renderer's own closed eyes are given as the floor of the measure).

**3. Alpha.** Generated avatars as the pipeline hands them out, at 512 (the refiner) and at
the generator's size: pixels with alpha > 0 outside the largest 8-connected alpha > 0 region
(mean and max per avatar), and the share of the silhouette interior (alpha >= 128 eroded
2 px) at alpha 255 (:mod:`avatarforge.eval.alpha`). Next to them, the generator's raw output
(``pipe.clean_alpha = False``), i.e. what the issue measured. 1,000 avatars (quick: 48).

**4. Refiner quality.** The same generated avatars at 256 px three ways: the refiner's 512-px
output area-downsampled (premultiplied) to 256, Lanczos x4 of the 64-px output (Pillow,
premultiplied) and the ESPCN upscale op (``upscale=4`` with an ``SRNet``: the run in
``AVATARFORGE_BENCH_ESPCN``, else - full run only - one trained here with ``train_sr`` for
600 steps, shorter than the CLI's 2,000), each against as many held-out renderer avatars
(data-set seed 7, transparent, 256 px): FID in the avatar extractor's feature space
(``fid_avatar``; the net resizes to 64 px) and SWD (x1e3, Laplacian levels 256..16). Target
refiner <= 0.5 x Lanczos on both. The full run adds the noise floor (a second held-out
renderer set against the first). Sharpness (mean |dx| + |dy| of premultiplied colour inside
alpha >= 128, :func:`avatarforge.train.refiner.sharpness`) of the refined 512-px avatars / the
renderer's avatars at 512 (target >= 0.8), Lanczos x8 next to it.

**5. Real data** (full run only; skipped when ``../shared/data/anime-faces-96`` is absent):
the folder packed at 96 px on white (``prepare_dataset``, cached in ``.af-cache/bench``), the
refiner trained x2 (48 -> 96, ``refiner-96px.yaml``, 3 minutes of wall time, the last 256
images held out), then on the held-out faces area-downsampled to 48: PSNR and ``fid_avatar``
of the refiner vs Lanczos x2 against the originals.

**6. Pictures** (``benchmarks/results/stream-*.png``, full size; ``docs/images/stream-*.png``,
small): renderer avatars at 512 / Lanczos x8 / refiner x8 of their 64-px area downsample;
generated avatars Lanczos x8 / refiner; an expression strip of a generated avatar's rig
(neutral, blink, wink left and right, A I U E O, smile, head turn).

The generator comes from ``AVATARFORGE_BENCH_QUICKSTART`` (default ``runs/quickstart``) with
the refiner the folder names, or the one in ``AVATARFORGE_BENCH_REFINER``; without one, the
parts that need it are skipped with a note (a row with unit "skipped").
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tests.serve.live_server import HAVE_CHROMIUM

from benchmarks.common import QUICK_RESULTS, RESULTS, ROOT, Result, shared_faces

QUICKSTART_ENV = "AVATARFORGE_BENCH_QUICKSTART"
REFINER_ENV = "AVATARFORGE_BENCH_REFINER"
ESPCN_ENV = "AVATARFORGE_BENCH_ESPCN"
DOCS_IMAGES = ROOT / "docs" / "images"
CACHE = ROOT / ".af-cache" / "bench"

SIZE = 512
#: A pixel "changes" when its premultiplied RGBA moves by more than this (of 255).
CHANGE = 24
#: The expressions of the issue's table and their targets (ratio to the renderer's effect).
EXPRESSIONS: dict[str, dict[str, float]] = {
    "eye closing": {"eye_open": 0.0},
    "mouth opening": {"mouth_open": 1.0},
    "smile": {"smile": 1.0},
}
EXPRESSION_TARGETS = {"eye closing": 0.8, "mouth opening": 0.8, "smile": 0.6}
#: The expression strip: (label, live controls).
STRIP: list[tuple[str, dict[str, float]]] = [
    ("neutral", {}),
    ("blink", {"eye_open": 0.0}),
    ("wink L", {"eye_open_l": 0.0}),
    ("wink R", {"eye_open_r": 0.0}),
    *[(v.upper(), {f"vowel_{v}": 1.0}) for v in "aiueo"],
    ("smile", {"smile": 1.0}),
    ("head turn", {"head_yaw": 0.8, "gaze_x": 0.7}),
]
REF_SEED = 7  # data-set seed of the held-out renderer avatars (the quickstart trains on seed 0)


def _load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def _skip(name: str, why: str) -> Result:
    return Result(name, 0.0, "skipped", None, True, why)


# ------------------------------------------------------------------------------ image helpers
def _premul255(x: np.ndarray) -> np.ndarray:
    """uint8 straight RGBA -> float32 premultiplied RGBA in 0..255."""
    f = x.astype(np.float32)
    f[..., :3] *= f[..., 3:4] / 255.0
    return f


def changed_fraction(a: np.ndarray, b: np.ndarray, threshold: float = CHANGE) -> float:
    """Share of pixels whose premultiplied RGBA differs by more than ``threshold`` (of 255)."""
    return float((np.abs(_premul255(a) - _premul255(b)).max(axis=-1) > threshold).mean())


def iris_pixels(image: np.ndarray, parts: np.ndarray, reference: np.ndarray | None = None) -> int:
    """Pixels of ``image`` in the eye region whose colour is one of the iris's own colours.

    The eye region and the colour palette come from ``parts`` on ``reference`` (default
    ``image``), the open-eyed avatar: the eye region is its eye white, iris and lash line
    dilated by 2 % of the size; the palette holds the colours of its skin, hair, eye white,
    iris, lash line and brows. Iris colours closer than 12/255 to a colour of another part
    are dropped (a dark pupil that looks like the lash line). A pixel of ``image`` counts
    when it is drawn (alpha >= 128) and its nearest palette colour, within 30/255, is an
    iris colour. Returns -1 when the part map has no (distinct) iris.
    """
    import cv2
    from scipy.spatial import cKDTree

    from avatarforge.data.procedural.schema import PART_IDS

    ref = image if reference is None else reference
    S = parts.shape[0]
    iris_id = PART_IDS["iris"]
    eye = np.isin(parts, [PART_IDS["eye_white"], iris_id, PART_IDS["eye_line"]])
    if (parts == iris_id).sum() < 4:
        return -1
    r = max(1, round(0.02 * S))
    region = cv2.dilate(eye.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)).astype(bool)
    drawn = ref[..., 3] >= 128

    def palette(ids: list[int]) -> np.ndarray:
        c = ref[np.isin(parts, ids) & drawn][:, :3]
        return np.unique(c, axis=0).astype(np.float32) if len(c) else np.zeros((0, 3), np.float32)

    others = palette([PART_IDS[n] for n in ("skin", "hair", "eye_white", "eye_line", "eyebrow")])
    iris = palette([iris_id])
    if len(others):
        iris = iris[cKDTree(others).query(iris)[0] > 12.0]
    if not len(iris):
        return -1
    pal = np.concatenate([iris, others])
    px = image[region & (image[..., 3] >= 128)][:, :3].astype(np.float32)
    if not len(px):
        return 0
    dist, idx = cKDTree(pal).query(px)
    return int(((idx < len(iris)) & (dist <= 30.0)).sum())


def lanczos(images: np.ndarray, size: int) -> np.ndarray:
    """Pillow Lanczos resize of uint8 RGBA/RGB images (Pillow resamples RGBA premultiplied)."""
    from PIL import Image

    mode = "RGBA" if images.shape[-1] == 4 else "RGB"
    return np.stack(
        [
            np.asarray(Image.fromarray(im, mode).resize((size, size), Image.Resampling.LANCZOS))
            for im in images
        ]
    )


def on_grey(rgba: np.ndarray, grey: int = 200) -> np.ndarray:
    """Composite straight RGBA over a flat light grey (pictures)."""
    if rgba.shape[-1] == 3:
        return rgba
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    return (rgba[..., :3] * a + grey * (1.0 - a)).round().astype(np.uint8)


def _tile(rows: list[list[np.ndarray]], pad: int = 4) -> np.ndarray:
    """Rows of equally sized RGB tiles -> one picture with white gaps."""
    h, w = rows[0][0].shape[:2]
    ncol = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        for j, t in enumerate(r):
            out[
                pad + i * (h + pad) : pad + i * (h + pad) + h, pad + j * (w + pad) : pad + j * (w + pad) + w
            ] = t
    return out


def _label(rgb: np.ndarray, text: str) -> np.ndarray:
    """``text`` in the lower left corner of a tile (dark on a white box)."""
    import cv2

    out = np.ascontiguousarray(rgb.copy())
    scale = rgb.shape[0] / 400
    (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
    y = rgb.shape[0] - round(10 * scale)
    cv2.rectangle(
        out, (0, y - h - round(8 * scale)), (w + round(16 * scale), rgb.shape[0]), (255, 255, 255), -1
    )
    cv2.putText(
        out, text, (round(8 * scale), y), cv2.FONT_HERSHEY_SIMPLEX, scale, (30, 30, 30), 2, cv2.LINE_AA
    )
    return out


def _save_png(path: Path, rgb: np.ndarray, max_width: int | None = None) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(rgb)
    if max_width is not None and im.width > max_width:
        im = im.resize((max_width, round(im.height * max_width / im.width)), Image.Resampling.LANCZOS)
    tmp = path.with_suffix(".tmp.png")
    im.save(tmp, optimize=True)
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------ the generator
def load_pipeline() -> tuple[Any | None, str]:
    """The quickstart's pipeline with its refiner, or ``(None, why not)``."""
    path = Path(os.environ.get(QUICKSTART_ENV) or ROOT / "runs" / "quickstart")
    if not path.exists():
        return None, f"no quickstart folder at {path} (set {QUICKSTART_ENV} or run 'make demo')"
    from avatarforge.generate import GeneratorPipeline

    refiner: Any = os.environ.get(REFINER_ENV) or "auto"
    try:
        pipe = GeneratorPipeline.from_pretrained(path, refiner=refiner)
    except Exception as e:
        return None, f"cannot load {path}: {type(e).__name__}: {e}"
    if not pipe.has_layers or SIZE not in pipe.sizes:
        return None, f"{path} has no refiner with a part head making {SIZE} px (sizes {pipe.sizes})"
    src = f"{path}" + (f" + refiner {refiner}" if refiner != "auto" else "")
    return pipe, f"{pipe.family} {pipe.resolution} px from {src}"


@contextmanager
def _threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ------------------------------------------------------------------------------ 1. overlay
def _tiny_pipe() -> Any:
    """A tiny untrained RGBA generator: the server needs one, the overlay's avatars do not."""
    from avatarforge.generate import GeneratorPipeline
    from avatarforge.models.stylegan import StyleGANGenerator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G = StyleGANGenerator(
            resolution=32, channels=4, channel_base=512, channel_max=64, z_dim=64, w_dim=64, mapping_layers=2
        ).eval()
    return GeneratorPipeline(G)


def _proc_cpu(pid: int) -> float:
    """utime + stime of one process in seconds (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    total, todo = 0.0, [root]
    while todo:
        p = todo.pop()
        total += _proc_cpu(p)
        todo += children.get(p, [])
    return total


def _overlay(quick: bool, pipe: Any | None) -> list[Result]:
    if not HAVE_CHROMIUM:
        return [_skip("overlay at 512 px", "needs /usr/bin/chromium and /usr/bin/chromedriver")]
    try:
        import selenium  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        return [_skip("overlay at 512 px", f"needs uvicorn and selenium ({e})")]
    import contextlib

    # The same in-thread server and headless Chromium as the browser tests.
    from tests.serve.live_server import headless_chromium, thread_server

    from avatarforge.models.animator import ExpressionAnimator
    from avatarforge.serve.app import create_app
    from avatarforge.serve.state import ServeState

    seconds = 4.0 if quick else 10.0
    modes: list[tuple[str, str, str]] = [
        ("rig mode", "mode=rig", "the page draws 512-px frames from the rig; controls streamed at 30/s"),
        (
            "frames mode, 64-px animator sent at 512 px",
            "mode=frames&size=512&fps=60",
            "server renders 64 px, resizes to 512 and encodes (WebP lossless) every frame; 60 FPS asked",
        ),
    ]
    if not quick:
        modes.append(
            (
                "frames mode, 64-px animator sent at 64 px",
                "mode=frames&fps=60",
                "server renders and encodes 64 px, the page scales it to 512 (the issue's 'today'); 60 FPS asked",
            )
        )
    results: list[Result] = []
    with _threads(1):
        anim = ExpressionAnimator(resolution=64).eval()
        state = ServeState.from_pipeline(pipe if pipe is not None else _tiny_pipe(), animator=anim)
        app = create_app(state)
        driver = None
        server = contextlib.ExitStack()
        try:
            try:
                port = server.enter_context(thread_server(app))
            except RuntimeError as e:
                return [_skip("overlay at 512 px", str(e))]
            driver = headless_chromium((SIZE, SIZE))
            service = driver.service
            base = f"http://127.0.0.1:{port}/overlay?avatar=procedural:3"
            for name, query, how in modes:
                load = _load()
                driver.get(f"{base}&{query}")
                t_end = time.monotonic() + 60
                while time.monotonic() < t_end and not driver.execute_script(
                    "return window.overlayFrames > 5"
                ):
                    time.sleep(0.1)
                size = driver.execute_script(
                    "const c = document.getElementById('avatar-rig'), i = document.getElementById('avatar');"
                    "return c.style.display === 'block' ? [c.width, 'canvas'] : [i.naturalWidth, 'img'];"
                )
                time.sleep(2.0)  # warm-up: first frames, shader compilation, image decoding
                for burn in (True,) if quick else (True, False):
                    load = _load()
                    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if burn else None
                    try:
                        time.sleep(1.0)
                        driver.execute_script("window.overlayResetStats()")
                        c_srv, c_br, t0 = (
                            time.process_time(),
                            _tree_cpu(service.process.pid),
                            time.monotonic(),
                        )
                        time.sleep(seconds)
                        stats = driver.execute_script("return window.overlayStats()")
                        dt = time.monotonic() - t0
                        cpu_srv = (time.process_time() - c_srv) / dt
                        cpu_br = (_tree_cpu(service.process.pid) - c_br) / dt
                    finally:
                        if burner is not None:
                            burner.kill()
                            burner.wait()
                    extra = {
                        **{k: round(float(v), 2) for k, v in stats.items()},
                        "server_cpu_cores": round(cpu_srv, 2),
                        "browser_cpu_cores": round(cpu_br, 2),
                        "shown_px": size,
                        "url": f"/overlay?avatar=procedural:3&{query}",
                        "burner": burn,
                    }
                    cond = "other core busy (burner)" if burn else "no burner of ours (context, no target)"
                    note = (
                        f"{how}; shown {size[0]} px ({size[1]}); {stats['samples']} intervals in {seconds:g} s, "
                        f"{cond}; CPU cores used: server {cpu_srv:.2f}, browser {cpu_br:.2f}; {load}"
                    )
                    label = name if burn else f"{name}, no burner"
                    results.append(
                        Result(
                            f"overlay FPS, {label}",
                            stats["fps"],
                            "frames/s",
                            30.0 if burn else None,
                            True,
                            note,
                            extra,
                        )
                    )
                    results.append(
                        Result(
                            f"overlay p99 frame interval, {label}",
                            stats["p99_ms"],
                            "ms",
                            50.0 if burn else None,
                            False,
                            f"max {stats['max_ms']:.0f} ms; {load}",
                        )
                    )
        finally:
            if driver is not None:
                driver.quit()
            server.close()
            hub = getattr(app.state, "overlay_hub", None)
            if hub is not None:
                hub.close()
    return results


# ------------------------------------------------------------------------------ 2. expressions
def _rig_effects(rig: Any) -> dict[str, float]:
    rest = rig.render({})
    return {name: changed_fraction(rig.render(c), rest) for name, c in EXPRESSIONS.items()}


def _expressions(quick: bool, pipe: Any | None) -> tuple[list[Result], Any]:
    from avatarforge.animate.rig import AvatarRig, RigError
    from avatarforge.animate.rig_sources import procedural_layers
    from avatarforge.data.procedural import render_expressions

    n_proc, n_gen = (3, 4) if quick else (16, 24)
    load = _load()
    renderer: dict[str, list[float]] = {k: [] for k in EXPRESSIONS}
    rigged: dict[str, list[float]] = {k: [] for k in EXPRESSIONS}
    iris_rig, iris_ren, rest_diff = [], [], []
    for seed in range(1000, 1000 + n_proc):
        img, parts = procedural_layers(seed, SIZE)
        frames = render_expressions(seed, [{}, *EXPRESSIONS.values()], SIZE)
        for name, f in zip(EXPRESSIONS, frames[1:]):
            renderer[name].append(changed_fraction(f, frames[0]))
        rig = AvatarRig.from_parts(img, parts)
        rest_diff.append(changed_fraction(rig.render({}), img))
        for name, v in _rig_effects(rig).items():
            rigged[name].append(v)
        open_n = iris_pixels(img, parts)
        if open_n > 0:
            iris_rig.append(iris_pixels(rig.render({"eye_open": 0.0}), parts, img) / open_n)
            iris_ren.append(iris_pixels(frames[1], parts, img) / open_n)
    ren_mean = {k: float(np.mean(v)) for k, v in renderer.items()}
    results: list[Result] = []
    src = f"{n_proc} renderer avatars at {SIZE} px rigged from their exact part maps"
    for name in EXPRESSIONS:
        results.append(
            Result(
                f"{name} effect / renderer's, renderer avatars (exact part maps)",
                float(np.mean(rigged[name])) / max(ren_mean[name], 1e-9),
                "x",
                EXPRESSION_TARGETS[name],
                True,
                f"changed {np.mean(rigged[name]) * 100:.2f} % of the frame vs the renderer's "
                f"{ren_mean[name] * 100:.2f} %; {src}; {load}",
                {
                    "rig": [round(v, 5) for v in rigged[name]],
                    "renderer": [round(v, 5) for v in renderer[name]],
                },
            )
        )
    results.append(
        Result(
            "iris left with eyes closed / open, renderer avatars (exact part maps)",
            float(np.mean(iris_rig)) if iris_rig else 0.0,
            "fraction",
            0.10,
            False,
            f"the renderer's own closed eyes score {np.mean(iris_ren) if iris_ren else 0:.3f} on this measure "
            f"(its floor); rig at rest vs the avatar: {np.mean(rest_diff) * 100:.2f} % of pixels changed; {src}",
            {"rig": [round(v, 4) for v in iris_rig], "renderer": [round(v, 4) for v in iris_ren]},
        )
    )
    if pipe is None:
        return results, None
    load = _load()
    gen: dict[str, list[float]] = {k: [] for k in EXPRESSIONS}
    iris_gen: list[float] = []
    failures: list[str] = []
    strip_rig = None
    seeds = list(range(n_gen))
    for s in range(0, n_gen, 8):
        chunk = seeds[s : s + 8]
        images, parts = pipe.render_layers(pipe.latents(chunk), SIZE)
        for seed, img, lab in zip(chunk, images, parts):
            try:
                rig = AvatarRig.from_parts(img, lab)
            except RigError as e:
                failures.append(f"seed {seed}: {e}")
                continue
            if strip_rig is None:
                strip_rig = (seed, rig)
            for name, v in _rig_effects(rig).items():
                gen[name].append(v)
            open_n = iris_pixels(img, lab)
            if open_n > 0:
                iris_gen.append(iris_pixels(rig.render({"eye_open": 0.0}), lab, img) / open_n)
    src = f"{len(gen['smile'])} of {n_gen} generated avatars rigged from the refiner's part maps" + (
        f" ({len(failures)} could not be rigged)" if failures else ""
    )
    for name in EXPRESSIONS:
        v = float(np.mean(gen[name])) if gen[name] else 0.0
        results.append(
            Result(
                f"{name} effect / renderer's, generated avatars (predicted part maps)",
                v / max(ren_mean[name], 1e-9),
                "x",
                EXPRESSION_TARGETS[name],
                True,
                f"changed {v * 100:.2f} % of the frame vs the renderer's {ren_mean[name] * 100:.2f} % "
                f"on its own avatars; {src}; {load}",
                {"rig": [round(x, 5) for x in gen[name]], "failures": failures},
            )
        )
    if not iris_gen:
        results.append(
            _skip(
                "iris left with eyes closed / open, generated avatars (predicted part maps)",
                f"no rigged generated avatar has a predicted iris; {src}",
            )
        )
        return results, strip_rig
    results.append(
        Result(
            "iris left with eyes closed / open, generated avatars (predicted part maps)",
            float(np.mean(iris_gen)) if iris_gen else 0.0,
            "fraction",
            0.10,
            False,
            f"{len(iris_gen)} avatars with a predicted iris; {src}",
            {"per_avatar": [round(v, 4) for v in iris_gen]},
        )
    )
    return results, strip_rig


# ------------------------------------------------------------------------------ 3 + 4. alpha and quality
def _espcn(quick: bool, tmp: Path) -> tuple[Any | None, str]:
    from avatarforge.postprocess.resample import load_sr_model, train_sr

    path = os.environ.get(ESPCN_ENV)
    if path:
        return load_sr_model(path), f"ESPCN from {path}"
    if quick:
        return None, f"ESPCN skipped in --quick (set {ESPCN_ENV} to a model saved by 'post --train-sr')"
    t0 = time.monotonic()
    with _threads(max(1, torch.get_num_threads())):
        r = train_sr(tmp / "espcn", scale=2, steps=600, seed=0)
    return r.model, f"ESPCN x2 (run twice) trained here: train_sr 600 steps, {time.monotonic() - t0:.0f} s"


class _Scores:
    """Avatar-extractor features and an SWD accumulator of one image set at 256 px."""

    def __init__(self, extractor: Any, n: int) -> None:
        from avatarforge.eval.metrics import get_metric

        self.extractor = extractor
        self.feats: list[torch.Tensor] = []
        self.swd = get_metric("swd").accumulator(256, seed=0, expected_images=n)

    def feed(self, images: np.ndarray) -> None:
        self.feats.append(self.extractor(images))
        self.swd.feed(images)

    def against(self, ref: _Scores) -> dict[str, float]:
        from avatarforge.eval.metrics import feature_statistics, frechet_distance, get_metric

        a = feature_statistics(torch.cat(ref.feats).numpy())
        b = feature_statistics(torch.cat(self.feats).numpy())
        fid = frechet_distance(a[0], a[1], b[0], b[1])
        swd = get_metric("swd").compute(ref.swd, self.swd, seed=0)["swd"]
        return {"fid_avatar": float(fid), "swd": float(swd)}


def _quality(quick: bool, pipe: Any | None, tmp: Path) -> list[Result]:
    from avatarforge.data.builtin import render_item
    from avatarforge.eval.alpha import opaque_interior_fraction, stray_alpha_pixels
    from avatarforge.eval.extractors import get_extractor
    from avatarforge.postprocess.resample import upscale
    from avatarforge.train.refiner import downsample_u8, sharpness

    if pipe is None:
        return []
    n = 48 if quick else 1000
    n_sharp = 8 if quick else 64
    results: list[Result] = []
    load = _load()
    espcn, espcn_note = _espcn(quick, tmp)
    extractor = get_extractor("avatar")
    t0 = time.monotonic()
    ref = _Scores(extractor, n)
    for s in range(0, n, 50):
        ref.feed(np.stack([render_item(REF_SEED, i, 256, "keep")[0] for i in range(s, min(n, s + 50))]))
    floor = None
    if not quick:
        floor = _Scores(extractor, n)
        for s in range(n, 2 * n, 50):
            floor.feed(
                np.stack([render_item(REF_SEED, i, 256, "keep")[0] for i in range(s, min(2 * n, s + 50))])
            )
    ren512 = np.stack([render_item(REF_SEED, i, SIZE, "keep")[0] for i in range(n_sharp)])
    sharp_ren = sharpness(ren512, ren512[..., 3] >= 128)
    t_ref = time.monotonic() - t0

    sets = {"refiner": _Scores(extractor, n), "Lanczos x4": _Scores(extractor, n)}
    if espcn is not None:
        sets["ESPCN x4"] = _Scores(extractor, n)
    stray: dict[str, list[np.ndarray]] = {"512": [], "64": [], "64 raw": []}
    interior: dict[str, list[np.ndarray]] = {"512": [], "64": [], "64 raw": []}
    sharp_sum = {"refiner": 0.0, "Lanczos x8": 0.0}
    sharp_cnt = {"refiner": 0, "Lanczos x8": 0}
    t_refine = 0.0
    t0 = time.monotonic()
    for s in range(0, n, 25):
        lat = pipe.latents(list(range(s, min(n, s + 25))))
        pipe.clean_alpha = False
        try:
            raw64 = pipe.render(lat)
        finally:
            pipe.clean_alpha = True
        img64 = pipe.render(lat)
        t1 = time.monotonic()
        img512 = pipe.render(lat, size=SIZE)
        t_refine += time.monotonic() - t1
        for key, imgs in (("512", img512), ("64", img64), ("64 raw", raw64)):
            stray[key].append(stray_alpha_pixels(imgs))
            interior[key].append(opaque_interior_fraction(imgs))
        for key, imgs in (("refiner", img512), ("Lanczos x8", lanczos(img64, SIZE))):
            m = imgs[..., 3] >= 128
            sharp_sum[key] += sharpness(imgs, m) * m.sum()
            sharp_cnt[key] += int(m.sum())
        sets["refiner"].feed(downsample_u8(img512, SIZE // 256))
        sets["Lanczos x4"].feed(lanczos(img64, 256))
        if espcn is not None:
            sets["ESPCN x4"].feed(
                np.stack([upscale(im, 256 // pipe.resolution, model=espcn) for im in img64])
            )
    t_gen = time.monotonic() - t0
    how = f"{n} generated avatars ({pipe.resolution} px generator + refiner); {load}"

    # 3. alpha
    for key, label in (("512", f"{SIZE} px (refiner)"), ("64", f"{pipe.resolution} px"), ("64 raw", "")):
        st = np.concatenate(stray[key])
        inner = np.concatenate(interior[key])
        if key == "64 raw":
            label = f"{pipe.resolution} px, generator output before clean_alpha (reference, not handed out)"
        tgt = None if key == "64 raw" else 0.0
        results.append(
            Result(
                f"stray alpha pixels per avatar, mean, {label}",
                float(st.mean()),
                "pixels",
                tgt,
                False,
                f"max {int(st.max())}, {int((st > 0).sum())} avatars with any; {how}",
                {"max": int(st.max()), "avatars_with_strays": int((st > 0).sum())},
            )
        )
        results.append(
            Result(f"stray alpha pixels per avatar, max, {label}", float(st.max()), "pixels", tgt, False, how)
        )
        results.append(
            Result(
                f"opaque interior fraction (alpha 255), {label}",
                float(np.nanmean(inner)),
                "fraction",
                None if key == "64 raw" else 0.99,
                True,
                f"min {np.nanmin(inner):.3f}; interior = alpha >= 128 eroded 2 px; {how}",
            )
        )

    # 4. quality at 256 px
    scores = {k: v.against(ref) for k, v in sets.items()}
    extra = {k: {m: round(x, 4) for m, x in v.items()} for k, v in scores.items()}
    if floor is not None:
        extra["renderer vs renderer (noise floor)"] = {m: round(x, 4) for m, x in floor.against(ref).items()}
    q_note = (
        f"at 256 px vs {n} held-out renderer avatars (transparent, data-set seed {REF_SEED}); "
        f"{n} generated avatars; {espcn_note}; {load}"
    )
    for metric in ("fid_avatar", "swd"):
        for k, v in scores.items():
            results.append(Result(f"{metric} at 256 px, {k}", v[metric], "", None, False, q_note, extra))
        ratio = scores["refiner"][metric] / max(scores["Lanczos x4"][metric], 1e-9)
        results.append(
            Result(
                f"{metric} at 256 px, refiner / Lanczos x4",
                ratio,
                "x",
                0.5,
                False,
                f"refiner {scores['refiner'][metric]:.3g} vs Lanczos {scores['Lanczos x4'][metric]:.3g}"
                + (f", ESPCN {scores['ESPCN x4'][metric]:.3g}" if "ESPCN x4" in scores else "")
                + (
                    f"; noise floor {extra['renderer vs renderer (noise floor)'][metric]:.3g}"
                    if floor
                    else ""
                ),
                extra,
            )
        )
    for key, tgt in (("refiner", 0.8), ("Lanczos x8", None)):
        v = sharp_sum[key] / max(sharp_cnt[key], 1) / max(sharp_ren, 1e-9)
        results.append(
            Result(
                f"sharpness at {SIZE} px / renderer's, {key} of generated avatars",
                v,
                "x",
                tgt,
                True,
                f"mean |dx|+|dy| inside alpha >= 128: renderer {sharp_ren:.4f} ({n_sharp} avatars); {how}",
            )
        )
    results.append(
        Result(
            f"refiner time per avatar at {SIZE} px (pipeline, incl. generator and clean_alpha)",
            t_refine / n * 1000,
            "ms",
            None,
            False,
            f"whole part {t_gen:.0f} s, references {t_ref:.0f} s; {how}",
        )
    )
    return results


# ------------------------------------------------------------------------------ 5. real data
def _real_data(tmp: Path) -> list[Result]:
    faces = shared_faces()
    if faces is None:
        return [
            _skip(
                "real data: refiner x2 on anime-faces-96",
                f"{ROOT.parent / 'shared/data/anime-faces-96'} absent",
            )
        ]
    from avatarforge.data.prepare import prepare_dataset
    from avatarforge.eval.extractors import get_extractor
    from avatarforge.eval.metrics import feature_statistics, frechet_distance
    from avatarforge.models.refiner import refine_images
    from avatarforge.runs import load_refiner
    from avatarforge.train import make_trainer
    from avatarforge.train.refiner import downsample_u8, refiner_metrics
    from avatarforge.train.refiner_config import build_refiner_config, refiner_preset

    load = _load()
    data = CACHE / "anime-faces-96-white"
    t0 = time.monotonic()
    if not (data / "manifest.json").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        prepare_dataset([faces], data, 96, alpha="white", overwrite=True, progress=False)
    t_prep = time.monotonic() - t0
    heldout = 256
    cfg = build_refiner_config(
        config_file=refiner_preset("refiner-96px.yaml"),
        overrides=[
            f"data.source={data}", f"data.heldout={heldout}", "minutes=3", f"runs_dir={tmp / 'real-runs'}",
            "log.progress=false", "log.sample_every_kimg=0", "log.checkpoint_every_kimg=0", "seed=0",
        ],
    )  # fmt: skip
    t0 = time.monotonic()
    trainer = make_trainer(cfg)
    run = trainer.fit()
    t_train = time.monotonic() - t0
    target = np.asarray(trainer.heldout_images)
    small = downsample_u8(target, 2)
    model = load_refiner(run)
    refined = refine_images(model, small)
    lz = lanczos(small, target.shape[1])
    m_ref = refiner_metrics(refined, target)
    m_lz = refiner_metrics(lz, target)
    ext = get_extractor("avatar")
    ft = feature_statistics(ext(target).numpy())

    def fid(x: np.ndarray) -> float:
        f = feature_statistics(ext(x).numpy())
        return float(frechet_distance(ft[0], ft[1], f[0], f[1]))

    f_ref, f_lz = fid(refined), fid(lz)
    kimg = getattr(trainer, "nimg", 0) / 1000
    note = (
        f"{len(target)} held-out faces (96 px, on white) area-downsampled to 48; refiner x2 trained "
        f"{t_train / 60:.1f} min wall ({kimg:.1f} kimg) on the other faces of {data.name}; "
        f"packing {t_prep:.0f} s; {load}"
    )
    return [
        Result("real data: PSNR, refiner x2", m_ref["psnr"], "dB", m_lz["psnr"], True,
               f"Lanczos x2 {m_lz['psnr']:.2f} dB (the target); {note}", {"refiner": m_ref, "lanczos": m_lz}),
        Result("real data: PSNR, Lanczos x2", m_lz["psnr"], "dB", None, True, note),
        Result("real data: fid_avatar, refiner x2", f_ref, "", f_lz, False,
               f"Lanczos x2 {f_lz:.3g} (the target); features of the avatar extractor vs the originals; {note}"),
        Result("real data: fid_avatar, Lanczos x2", f_lz, "", None, False, note),
        Result("real data: sharpness / original, refiner x2", m_ref["sharpness"], "x", None, True,
               f"Lanczos x2 {m_lz['sharpness']:.3f}; {note}"),
    ]  # fmt: skip


# ------------------------------------------------------------------------------ 6. pictures
def _pictures(quick: bool, pipe: Any | None, strip_rig: Any) -> list[Result]:
    from avatarforge.animate.rig import AvatarRig
    from avatarforge.animate.rig_sources import procedural_layers
    from avatarforge.data.builtin import render_item
    from avatarforge.imageio import clean_alpha
    from avatarforge.models.refiner import refine_images
    from avatarforge.train.refiner import downsample_u8

    out_dir = QUICK_RESULTS if quick else RESULTS
    saved: list[str] = []
    crop = slice(3 * SIZE // 16, 3 * SIZE // 16 + SIZE // 2)  # docs: the face (rows 96-352, columns 128-384)
    cols = slice(SIZE // 4, 3 * SIZE // 4)
    if pipe is not None:
        ren = np.stack([render_item(REF_SEED, i, SIZE, "keep")[0] for i in (3, 8, 21)])
        small = downsample_u8(ren, SIZE // pipe.resolution)
        rows = [ren, lanczos(small, SIZE), clean_alpha(refine_images(pipe.refiner, small))]
        full = _tile([[on_grey(x) for x in r] for r in rows])
        saved.append(str(_save_png(out_dir / "stream-refiner-renderer.png", full).relative_to(ROOT)))
        saved.append(
            str(
                _save_png(
                    DOCS_IMAGES / "stream-refiner-renderer.png",
                    _tile([[on_grey(x[crop, cols]) for x in r] for r in rows]),
                ).relative_to(ROOT)
            )
        )
        lat = pipe.latents([0, 1, 2, 3])
        g64 = pipe.render(lat)
        rows = [lanczos(g64, SIZE), pipe.render(lat, size=SIZE)]
        full = _tile([[on_grey(x) for x in r] for r in rows])
        saved.append(str(_save_png(out_dir / "stream-refiner-generated.png", full).relative_to(ROOT)))
        saved.append(
            str(
                _save_png(
                    DOCS_IMAGES / "stream-refiner-generated.png",
                    _tile([[on_grey(x[crop, cols]) for x in r] for r in rows]),
                ).relative_to(ROOT)
            )
        )
    # Expression strip: a generated avatar's rig (the first that rigs with a face; else, as the
    # quickstart does, seed 0 rigged for pose only), and the renderer's avatar 3 on its exact
    # part map as the reference row.
    strips: list[tuple[str, Any]] = []
    if strip_rig is not None:
        strips.append((f"generated avatar (seed {strip_rig[0]}), refiner's part map", strip_rig[1]))
    elif pipe is not None:
        images, parts = pipe.render_layers(pipe.latents([0]), SIZE)
        rig = AvatarRig.from_parts(images[0], parts[0], require_face=False)
        strips.append(("generated avatar (seed 0), pose-only rig: " + "; ".join(rig.warnings), rig))
    strips.append(("renderer avatar 3, exact part map", AvatarRig.from_parts(*procedural_layers(3, SIZE))))
    rows = [[_label(on_grey(rig.render(c)), name) for name, c in STRIP] for _, rig in strips]
    saved.append(str(_save_png(out_dir / "stream-expressions.png", _tile(rows)).relative_to(ROOT)))
    # docs: the face of each frame (rows 64-448, columns 64-448), 11 per row
    face = slice(SIZE // 8, 7 * SIZE // 8)
    small = [[_label(on_grey(rig.render(c))[face, face], name) for name, c in STRIP] for _, rig in strips]
    saved.append(
        str(_save_png(DOCS_IMAGES / "stream-expressions.png", _tile(small), max_width=1600).relative_to(ROOT))
    )
    what = " / ".join(w for w, _ in strips)
    note = (
        "; ".join(saved)
        + f". Strip rows: {what}; frames {', '.join(n for n, _ in STRIP)}. Refiner grids: rows renderer "
        f"{SIZE} px / Lanczos x8 / refiner x8 of the 64-px area downsample (renderer avatars), and "
        f"Lanczos x8 / refiner (generated avatars); docs copies are crops of the face"
    )
    return [Result("pictures", float(len(saved)), "files", None, True, note, {"files": saved})]


# ------------------------------------------------------------------------------ run
def _plain(v: Any) -> Any:
    """``v`` with NumPy scalars and arrays as Python numbers and lists, NaN/inf as None."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_plain(x) for x in v]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    return v


def run(quick: bool) -> list[Result]:
    parts: dict[str, dict[str, float]] = {}

    def timed(name: str, fn: Callable[..., Any], *args: Any) -> Any:
        t0, c0, load = time.monotonic(), time.process_time(), os.getloadavg()[0]
        out = fn(*args)
        parts[name] = {
            "wall_s": round(time.monotonic() - t0, 1),
            "cpu_s": round(time.process_time() - c0, 1),
            "load_at_start": round(load, 2),
        }
        print(f"   [{name}: {parts[name]['wall_s']:.0f} s, load {load:.2f}]", flush=True)
        return out

    pipe, how = load_pipeline()
    results: list[Result] = [
        Result(
            "generator used",
            float(pipe.resolution) if pipe is not None else 0.0,
            "px" if pipe is not None else "skipped",
            None,
            True,
            how if pipe is not None else f"generated-avatar parts skipped: {how}",
        )
    ]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        results += timed("overlay", _overlay, quick, pipe)
        expr, strip_rig = timed("expressions", _expressions, quick, pipe)
        results += expr
        results += timed("alpha and quality", _quality, quick, pipe, tmp)
        if quick:
            results.append(_skip("real data: refiner x2 on anime-faces-96", "full run only"))
        else:
            results += timed("real data", _real_data, tmp)
        results += timed("pictures", _pictures, quick, pipe, strip_rig)
    results[0].extra["parts"] = parts
    results[0].extra["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    for r in results:  # plain JSON: Python floats (NumPy scalars compare to NumPy bools), no NaN
        r.value = _plain(float(r.value))
        r.target = None if r.target is None else float(r.target)
        r.extra = _plain(r.extra)
    return results
