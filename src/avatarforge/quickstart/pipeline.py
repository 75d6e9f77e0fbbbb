"""The quickstart stages and their bookkeeping (resume, budget, progress).

Stages, in order (each one a method of :class:`_Quickstart`)::

    data        render the built-in procedural data set (reused when its options match)
    generator   train a conditional generator for ~60 % of the budget (resumes its run)
    refiner     train the x8 refiner (64 -> 512 px) for ~20 % of the budget (resumes)
    parts       train the part segmenter (the live rig's part maps) for ~8 % (resumes)
    evaluate    SWD, FID with the avatar extractor, attribute accuracy -> eval.json
    animator    train the 64-px expression animator for ~5 % of the budget (resumes its run)
    samples     samples.png, attributes.png, interpolation.gif, avatars-512.webp
    animation   a generated avatar rigged at 512 px blinking, winking, talking (vowels),
                smiling and turning its head: avatar.webp (alpha), avatar.gif, avatar.png
    report      metrics.json, report.html, quickstart.json

Resume: ``quickstart-state.json`` (written atomically after every stage) records for each
finished stage a fingerprint of its inputs and the files it wrote. A stage is skipped when
its fingerprint is unchanged and its files exist; training stages find their run directory
under ``OUT/runs`` and continue from its last checkpoint, so an interrupted quickstart
(Ctrl-C, a crash, a reboot) picks up where it stopped. Training budgets are totals: the
time already spent in earlier sessions (recorded in each checkpoint) is subtracted, and
rerunning with a larger ``--minutes`` trains further.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avatarforge.data.procedural.schema import IDENTITY_ATTRIBUTES
from avatarforge.fileio import atomic_write_json

__all__ = [
    "DEFAULT_CONDITION_ON",
    "MANIFEST_NAME",
    "STATE_NAME",
    "QuickstartError",
    "QuickstartInterrupted",
    "QuickstartResult",
    "budget_split",
    "read_manifest",
    "run_quickstart",
]

STATE_NAME = "quickstart-state.json"
MANIFEST_NAME = "quickstart.json"
MANIFEST_FORMAT = "avatarforge-quickstart"
_STATE_VERSION = 1

#: Every attribute of the renderer a creator picks for a transparent avatar: all of the
#: schema's categorical labels but the background's, which a transparent avatar does not draw
#: (the studio and ``post`` add a background as an op). 12 labels, in schema order.
DEFAULT_CONDITION_ON: tuple[str, ...] = tuple(
    n for n in IDENTITY_ATTRIBUTES if not n.startswith("background")
)

#: Shares of ``minutes`` for the training stages; the rest covers data, evaluation and the
#: outputs (about a minute on 2 cores at the defaults). The refiner makes the 512-px avatar
#: and its part maps (the live rig animates that one); the 64-px animator only serves the
#: overlay's frames mode, so it gets little.
GENERATOR_SHARE = 0.55
REFINER_SHARE = 0.2
PARTS_SHARE = 0.08
ANIMATOR_SHARE = 0.05

#: Generator families the quickstart can train, and its overrides on top of their 64 px
#: presets for a budget of minutes rather than days (docs/quickstart.md, "Time and quality").
#: stylegan: the data set is seen only a few times, so the discriminator cannot overfit it
#: and DiffAugment only slows learning down. cgan: a narrow conditional DCGAN (about 30x
#: cheaper per image than the stylegan preset on a CPU) with a higher learning rate; it
#: reaches recognisable, hair-colour-following avatars within minutes on 2 cores.
GENERATOR_OVERRIDES: dict[str, tuple[str, ...]] = {
    "stylegan": ("data.augment=",),
    "cgan": (
        "model.g_kwargs.base_channels=32",
        "model.d_kwargs.base_channels=32",
        "optim.g_lr=1e-3",
        "optim.d_lr=1e-3",
        "batch_size=32",
        # The projection read as a classifier (train/gan.py). At equal kimg (52, 12 labels,
        # classifier accuracy on 1000 avatars): weight 4 lifted skin tone 0.93 -> 0.98, bangs
        # 0.53 -> 0.58, eye colour 0.12 -> 0.22 (weight 1 changed little); eye colour x4 on top
        # (the iris is ~3x4 px) lifted it to 0.71 with skin 0.97, bangs 0.55, accessory 0.50;
        # x10 gave eye colour 0.82 but skin 0.78, bangs 0.42, accessory 0.42.
        "loss.class_weight=4",
        "loss.class_label_weights.eye_color=4",
    ),
}
MODELS = ("auto", *GENERATOR_OVERRIDES)

#: The animator's pair cache for the quickstart: 600 identities x 6 renders render in
#: ~20 s on 2 cores (the default 2000 take ~1 min) and are enough for a few minutes of training.
ANIMATOR_OVERRIDES: tuple[str, ...] = ("data.identities=600",)

#: The refiner's recipe in the quickstart: the shipped x8 config (refiner-512px.yaml) with a
#: pool of renders that builds in ~30 s on 2 cores.
REFINER_OVERRIDES: tuple[str, ...] = ("data.pool=160",)
#: The part segmenter's: the shipped config (parts-64px.yaml) on a 2000-avatar pool (~15 s).
PARTS_OVERRIDES: tuple[str, ...] = ("data.pool=2000",)

#: Torch intra-op threads on a CPU. Measured on the 2-core development machine while other
#: jobs ran: the cgan quickstart generator trained at 55-63 images/s on 1 thread and 2.3 on
#: 2 (OpenMP threads spin-waiting for a busy core); on an idle machine a second thread
#: would gain at most ~1.6x. One thread is the robust choice for a laptop that is also doing
#: other things; ``threads=`` overrides it.
CPU_THREADS = 1

#: Truncation psi of the report's samples: trades a little variety for cleaner avatars.
TRUNCATION = 0.7


class QuickstartError(ValueError):
    """A bad quickstart argument; the message names the argument and the fix."""


class QuickstartInterrupted(RuntimeError):
    """A training stage stopped on SIGINT/SIGTERM after checkpointing; rerun to resume."""


@dataclass
class QuickstartResult:
    """What :func:`run_quickstart` returns.

    Attributes:
        out: the output directory.
        generator_run, animator_run: the two training run directories.
        metrics: the contents of ``metrics.json``.
        files: output name -> path (``samples``, ``attributes``, ``interpolation``,
            ``animation``, ``animation_gif``, ``avatar``, ``metrics``, ``report``, ``manifest``).
        seconds: wall time of this call; cpu_seconds: CPU time of this process.
        ran, skipped: stage names run in this call / skipped as up to date.
    """

    out: Path
    generator_run: Path
    animator_run: Path
    metrics: dict[str, Any]
    files: dict[str, Path]
    seconds: float
    cpu_seconds: float
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def budget_split(minutes: float) -> dict[str, float]:
    """Training minutes per stage for a total budget: ``{"generator", "refiner", "parts", "animator"}``."""
    return {
        "generator": minutes * GENERATOR_SHARE,
        "refiner": minutes * REFINER_SHARE,
        "parts": minutes * PARTS_SHARE,
        "animator": minutes * ANIMATOR_SHARE,
    }


def read_manifest(out: str | os.PathLike) -> dict[str, Any]:
    """``OUT/quickstart.json`` with its run paths resolved against ``OUT``.

    Raises FileNotFoundError naming the fix when ``out`` holds no finished quickstart.
    """
    path = Path(out) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {out} is not a finished quickstart; run: avatarforge quickstart --out {out}"
        )
    data = json.loads(path.read_text("utf-8"))
    for key in ("generator_run", "refiner_run", "parts_run", "animator_run", "data"):
        if data.get(key):
            data[key] = str((Path(out) / data[key]).resolve())
    return data


# ============================================================================ helpers
def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path.resolve())


def _fmt_s(seconds: float) -> str:
    seconds = max(0, round(seconds))
    m, s = divmod(seconds, 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _checkpoint_info(run: Path) -> dict[str, Any] | None:
    """``{"name", "step", "kimg", "elapsed_s"}`` of a run's latest checkpoint, or None."""
    from avatarforge.runs import find_checkpoint, read_training_state

    try:
        ckpt = find_checkpoint(run)
    except (FileNotFoundError, ValueError):
        return None
    meta = read_training_state(ckpt)
    return {
        "name": ckpt.name,
        "step": int(meta.get("step", 0)),
        "kimg": float(meta.get("nimg", 0)) / 1000,
        "elapsed_s": float(meta.get("elapsed_s", 0.0)),
    }


def _upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """``(N, H, W, C)`` uint8 -> ``factor`` x larger (Lanczos; Pillow resizes RGBA premultiplied)."""
    if factor == 1:
        return frames
    from PIL import Image

    h, w = frames.shape[1:3]
    mode = "RGBA" if frames.shape[-1] == 4 else "RGB"
    return np.stack(
        [
            np.asarray(Image.fromarray(f, mode).resize((w * factor, h * factor), Image.Resampling.LANCZOS))
            for f in frames
        ]
    )


def _attribute_sheet(rows: Sequence[tuple[str, Sequence[str], np.ndarray]], padding: int = 2) -> np.ndarray:
    """One row per attribute: its name, then the same avatar drawn with each of its values,
    each cell captioned with the value (RGB, transparency on a checkerboard).

    ``rows``: ``(attribute, values, images (len(values), S, S, 4 or 3) uint8)``.
    """
    from PIL import Image, ImageDraw, ImageFont

    from avatarforge.imageio import make_grid

    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    cell = rows[0][2].shape[1]
    caption = 14
    name_w = max(int(measure.textlength(name, font=font)) for name, _, _ in rows) + 10
    cols = max(len(values) for _, values, _ in rows)
    row_h = cell + caption + padding
    canvas = Image.new(
        "RGB", (name_w + cols * (cell + padding) + padding, len(rows) * row_h + padding), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for r, (name, values, images) in enumerate(rows):
        y = padding + r * row_h
        draw.text((4, y + cell // 2), name, fill=(20, 20, 20), font=font, anchor="lm")
        strip = make_grid(images, nrow=len(values), padding=padding, alpha_backdrop="checker")
        canvas.paste(Image.fromarray(strip[padding:-padding, :, :3]), (name_w, y))
        for c, value in enumerate(values):
            x = name_w + padding + c * (cell + padding) + cell // 2
            draw.text((x, y + cell + 1), value, fill=(60, 60, 60), font=font, anchor="mt")
    return np.asarray(canvas)


# ============================================================================ progress
class _Progress:
    """The overall line (stage k/n, elapsed, ETA) and per-stage bars."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def header(self, k: int, n: int, title: str, remaining_s: float) -> None:
        if self.enabled:
            print(
                f"[{k}/{n}] {title}  (elapsed {_fmt_s(self.elapsed())}, ETA {_fmt_s(remaining_s)})",
                file=sys.stderr,
                flush=True,
            )

    def note(self, msg: str) -> None:
        if self.enabled:
            print(f"      {msg}", file=sys.stderr, flush=True)

    def bar(self, total: float | None, desc: str, unit: str = "it") -> Any:
        from tqdm.auto import tqdm

        return tqdm(
            total=total,
            desc=f"      {desc}",
            unit=unit,
            disable=not self.enabled,
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} {unit} [{elapsed}<{remaining}{postfix}]"
            if unit == "s"
            else None,
        )


# ============================================================================ the runner
@dataclass(frozen=True)
class _Options:
    minutes: float
    model: str
    threads: int | None
    device: str
    seed: int
    n_images: int
    size: int
    condition_on: tuple[str, ...]
    generator_overrides: tuple[str, ...]
    animator_overrides: tuple[str, ...]
    refiner_overrides: tuple[str, ...]
    parts_overrides: tuple[str, ...]
    eval_images: int
    eval_metrics: tuple[str, ...]
    grid_seeds: int
    interp_frames: int
    anim_seconds: float
    anim_fps: float
    upscale: int


_STAGES = ("data", "generator", "refiner", "parts", "evaluate", "animator", "samples", "animation", "report")
_TITLES = {
    "data": "built-in procedural data set",
    "generator": "train the conditional generator",
    "refiner": "train the 512-px refiner",
    "parts": "train the part segmenter (eyes, brows, mouth for the live rig)",
    "evaluate": "evaluate the generator",
    "animator": "train the expression animator",
    "samples": "sample grid, attribute grid, interpolation, 512-px avatars",
    "animation": "transparent 512-px animated avatar (blink, wink, vowels, smile, head turn)",
    "report": "metrics.json, report.html, quickstart.json",
}


class _Quickstart:
    def __init__(
        self,
        out: Path,
        opts: _Options,
        progress: bool,
        extractor: Any = None,
        fail_at: str | None = None,
        step_hook: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.out = out
        self.o = opts
        self.p = _Progress(progress)
        self.progress = progress
        self.extractor = extractor
        self.fail_at = fail_at  # tests: raise in this stage, after its work, before it is recorded
        self.step_hook = step_hook  # tests: step_hook(stage, trainer) after every training step
        self.state_path = out / STATE_NAME
        self.state = self._load_state()
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.budget = budget_split(opts.minutes)
        self.fps: dict[str, str] = {}  # stage -> input fingerprint of this call

    # ------------------------------------------------------------------ state file
    def _load_state(self) -> dict[str, Any]:
        if self.state_path.is_file():
            try:
                data = json.loads(self.state_path.read_text("utf-8"))
                if data.get("version") == _STATE_VERSION:
                    return data
            except (OSError, json.JSONDecodeError):
                pass  # a damaged state file only costs re-checking the stages
        return {"version": _STATE_VERSION, "stages": {}}

    def _save_state(self) -> None:
        atomic_write_json(self.state_path, self.state)

    def _fresh(self, name: str) -> bool:
        rec = self.state["stages"].get(name)
        return bool(
            rec
            and rec.get("inputs") == self.fps[name]
            and all((self.out / f).exists() for f in rec.get("outputs", []))
        )

    def _record(self, name: str, outputs: Sequence[Path], seconds: float, **info: Any) -> None:
        if self.fail_at == name:
            raise RuntimeError(f"injected failure in stage {name!r} (test)")
        self.state["stages"][name] = {
            "inputs": self.fps[name],
            "outputs": [_rel(p, self.out) for p in outputs],
            "seconds": round(seconds, 2),
            **info,
        }
        self._save_state()

    def _record_training(
        self, name: str, run: Path, info: dict[str, Any], seconds: float, **extra: Any
    ) -> None:
        """Record a training stage: ``extra``, then its run, newest checkpoint, kimg and the
        wall and CPU seconds it trained (``info`` is :meth:`_train`'s)."""
        self._record(
            name,
            [run / "checkpoints" / info["name"]],
            seconds,
            **extra,
            run=_rel(run, self.out),
            checkpoint=info["name"],
            kimg=info["kimg"],
            train_seconds=info["elapsed_s"],
            train_cpu_seconds=sum(self.state.get("cpu_seconds", {}).get(name, [])),
            load_avg=_load_avg(),
        )

    def _run_overrides(self, minutes: float, desc: str) -> list[str]:
        """The overrides of a training stage's budget and bookkeeping: ``minutes`` this session
        (no kimg limit), the quickstart's seed, device and threads, a run in ``OUT/runs``."""
        o = self.o
        return [
            "kimg=null",
            f"minutes={minutes}",
            f"seed={o.seed}",
            f"device={o.device}",
            f"perf.num_threads={o.threads if o.threads else 'null'}",
            f"runs_dir={self.out / 'runs'}",
            f"desc={desc}",
        ]

    def info(self, name: str) -> dict[str, Any]:
        return self.state["stages"].get(name, {})

    # ------------------------------------------------------------------ planning
    def _avatar_net_cached(self) -> bool:
        from avatarforge.eval.avatar_net import DEFAULT_RECIPE
        from avatarforge.fileio import default_cache_dir

        return (default_cache_dir() / "avatar_net" / DEFAULT_RECIPE.hash() / "model.safetensors").is_file()

    def _estimate(self, name: str) -> float:
        """Rough seconds a stage will take on 2 cores (for the ETA only)."""
        o = self.o
        if name == "data":
            return 5 + o.n_images / 250
        if name in ("generator", "refiner", "parts", "animator"):
            run = self._find_run(name)
            info = _checkpoint_info(run) if run is not None else None
            done = info["elapsed_s"] if info else 0.0
            setup = {"generator": 5, "refiner": 30, "parts": 20, "animator": 25}[name]
            return setup + max(0.0, self.budget[name] * 60 - done)
        if name == "evaluate":
            net = 0 if self.extractor is not None or self._avatar_net_cached() else 90
            return 10 + net + o.eval_images / 25 + 2 * o.eval_images / 100
        if name == "samples":
            return 10 + (o.grid_seeds + 10 * 8 + o.interp_frames) / 20
        if name == "animation":
            return 10 + o.anim_seconds * o.anim_fps / 15
        return 2

    def _eta(self, from_index: int) -> float:
        total = 0.0
        for s in _STAGES[from_index:]:
            # Provisional fingerprint from the state as it is now; recomputed before the stage runs.
            self._set_fingerprint(s)
            total += 0.0 if self._fresh(s) else self._estimate(s)
        return total

    # ------------------------------------------------------------------ driver
    def run(self) -> QuickstartResult:
        t0, c0 = time.monotonic(), time.process_time()
        self.out.mkdir(parents=True, exist_ok=True)
        # Written first, so a call interrupted in its first stage leaves a directory that the
        # next call recognises as a quickstart (and does not refuse as someone else's).
        self._save_state()
        steps: list[tuple[str, Callable[[], None]]] = [
            ("data", self.stage_data),
            ("generator", self.stage_generator),
            ("refiner", self.stage_refiner),
            ("parts", self.stage_parts),
            ("evaluate", self.stage_evaluate),
            ("animator", self.stage_animator),
            ("samples", self.stage_samples),
            ("animation", self.stage_animation),
            ("report", self.stage_report),
        ]
        for k, (name, fn) in enumerate(steps, 1):
            self._set_fingerprint(name)
            self.p.header(k, len(steps), _TITLES[name], self._eta(k - 1))
            if self._fresh(name):
                self.p.note("up to date (skipped)")
                self.skipped.append(name)
                continue
            fn()
            self.ran.append(name)
        seconds = time.monotonic() - t0
        cpu = time.process_time() - c0
        metrics = json.loads((self.out / "metrics.json").read_text("utf-8"))
        files = {
            k: self.out / v
            for k, v in {
                "samples": "samples.png",
                "attributes": "attributes.png",
                "interpolation": "interpolation.gif",
                "animation": "avatar.webp",
                "animation_gif": "avatar.gif",
                "avatar": "avatar.png",
                "avatars_512": "avatars-512.webp",
                "metrics": "metrics.json",
                "report": "report.html",
                "manifest": MANIFEST_NAME,
                "eval": "eval.json",
            }.items()
        }
        if self.progress:
            print(
                f"\nquickstart done in {_fmt_s(seconds)} (CPU time {_fmt_s(cpu)}; "
                f"ran {', '.join(self.ran) or 'nothing'}; up to date: {', '.join(self.skipped) or 'none'})\n"
                f"report:    {files['report']}\n"
                f"generator: {self.out / self.info('generator')['run']}\n"
                f"refiner:   {self.out / self.info('refiner')['run']}\n"
                f"parts:     {self.out / self.info('parts')['run']}\n"
                f"animator:  {self.out / self.info('animator')['run']}\n"
                f"next:      avatarforge serve {self.out}   (studio: http://127.0.0.1:8000/studio)",
                flush=True,
            )
        return QuickstartResult(
            out=self.out,
            generator_run=self.out / self.info("generator")["run"],
            animator_run=self.out / self.info("animator")["run"],
            metrics=metrics,
            files=files,
            seconds=seconds,
            cpu_seconds=cpu,
            ran=self.ran,
            skipped=self.skipped,
        )

    def _set_fingerprint(self, name: str) -> None:
        """Inputs of ``name``: its options plus what the upstream stages produced."""
        o = self.o
        st = self.state["stages"]

        def up(stage: str) -> Any:
            rec = st.get(stage, {})
            return [rec.get("inputs"), rec.get("checkpoint")]

        if name == "data":
            inputs: Any = {"n": o.n_images, "size": o.size, "seed": o.seed, "alpha": "keep"}
        elif name == "generator":
            inputs = [self._generator_model_inputs(), self.budget["generator"]]
        elif name == "evaluate":
            inputs = [up("generator"), o.eval_images, o.eval_metrics, o.seed, self.extractor is not None]
        elif name == "animator":
            inputs = [self._animator_model_inputs(), self.budget["animator"]]
        elif name == "refiner":
            inputs = [self._refiner_model_inputs(), self.budget["refiner"]]
        elif name == "parts":
            inputs = [self._parts_model_inputs(), self.budget["parts"]]
        elif name == "samples":
            inputs = [
                up("generator"), up("refiner"), o.grid_seeds, o.interp_frames, o.upscale, TRUNCATION, o.seed,
            ]  # fmt: skip
        elif name == "animation":
            from avatarforge.animate.showcase import SHOWCASE_VERSION

            inputs = [
                up("generator"), up("refiner"), up("parts"), o.anim_seconds, o.anim_fps, o.seed, SHOWCASE_VERSION,
            ]  # fmt: skip
        else:
            inputs = [up(s) for s in _STAGES[:-1]] + [o.minutes]
        self.fps[name] = _fingerprint(inputs)

    # ------------------------------------------------------------------ data
    def stage_data(self) -> None:
        from avatarforge.data.builtin import build_builtin_dataset
        from avatarforge.data.packed import PackedFormatError
        from avatarforge.data.packed import read_manifest as read_packed

        t = time.monotonic()
        o = self.o
        data = self.out / "data"
        want = {"n": o.n_images, "size": o.size, "seed": o.seed, "alpha": "keep"}
        try:
            have = read_packed(data).get("options") if (data / "manifest.json").exists() else None
        except PackedFormatError:
            have = None
        if have is not None and all(have.get(k) == v for k, v in want.items()):
            self.p.note(f"reusing {data}")
        else:
            build_builtin_dataset(
                data, o.n_images, o.size, seed=o.seed, alpha="keep", overwrite=True, progress=self.progress
            )
        self._record("data", [data / "manifest.json"], time.monotonic() - t)

    # ------------------------------------------------------------------ training
    def _generator_model_inputs(self) -> Any:
        o = self.o
        return {
            "model": o.model,
            "data": [o.n_images, o.size, o.seed],
            "condition_on": list(o.condition_on),
            # The built-in recipe too: a changed recipe must not resume an incompatible run.
            "overrides": [*GENERATOR_OVERRIDES[o.model], *o.generator_overrides],
            "seed": o.seed,
        }

    def _animator_model_inputs(self) -> Any:
        o = self.o
        return {"size": o.size, "overrides": [*ANIMATOR_OVERRIDES, *o.animator_overrides], "seed": o.seed}

    def _refiner_model_inputs(self) -> Any:
        o = self.o
        return {"size": o.size * 8, "overrides": [*REFINER_OVERRIDES, *o.refiner_overrides], "seed": o.seed}

    def _parts_model_inputs(self) -> Any:
        o = self.o
        return {"size": o.size, "overrides": [*PARTS_OVERRIDES, *o.parts_overrides], "seed": o.seed}

    def _model_inputs(self, name: str) -> Any:
        return {
            "generator": self._generator_model_inputs,
            "refiner": self._refiner_model_inputs,
            "parts": self._parts_model_inputs,
            "animator": self._animator_model_inputs,
        }[name]()

    def _find_run(self, name: str) -> Path | None:
        """The stage's run directory, if an earlier call started one for the same model inputs.

        The run is recorded in the state file at its first training step (from the step
        hook), so a call killed mid-training still leaves it findable.
        """
        rec = self.state.get("runs", {}).get(name)
        model_fp = _fingerprint(self._model_inputs(name))
        if rec and rec.get("model") == model_fp:
            run = self.out / rec["run"]
            if run.is_dir():
                return run
        return None

    def _remember_run(self, name: str, run: Path) -> None:
        model_fp = _fingerprint(self._model_inputs(name))
        self.state.setdefault("runs", {})[name] = {"run": _rel(run, self.out), "model": model_fp}
        self._save_state()

    @contextmanager
    def _time_bar(self, name: str, budget_s: float, done_s: float) -> Iterator[Callable[[Any], None]]:
        """A stage bar in seconds of the training budget, driven from the trainer's step hook."""
        # Estimated seconds of the stages after this one, for the overall ETA on the bar.
        later = self._eta(_STAGES.index(name) + 1)
        bar = self.p.bar(budget_s, f"{name} (budget {_fmt_s(budget_s)})", unit="s")
        bar.update(min(done_s, budget_s))
        state: dict[str, Any] = {"t": time.monotonic(), "done": done_s, "run": None, "shown": 0.0}

        def hook(trainer: Any) -> None:
            if state["run"] is None and getattr(trainer, "run_dir", None) is not None:
                state["run"] = trainer.run_dir
                self._remember_run(name, Path(trainer.run_dir))
                # The trainers' clocks start at their first step, after set-up (the animator
                # renders its pairs then); so does this bar.
                state["t"] = time.monotonic()
            now = state["done"] + time.monotonic() - state["t"]
            bar.n = min(now, budget_s)
            overall = max(0.0, budget_s - now) + later
            bar.set_postfix_str(
                f"{trainer.nimg / 1000:.2f} kimg, overall ETA {_fmt_s(overall)}", refresh=False
            )
            if self.step_hook is not None:
                self.step_hook(name, trainer)
            if time.monotonic() - state["shown"] > 0.5:
                bar.refresh()
                state["shown"] = time.monotonic()

        try:
            yield hook
        finally:
            bar.close()

    def _train(
        self, name: str, make_trainer: Callable[[float, Path | None], Any]
    ) -> tuple[Path, dict[str, Any]]:
        """Train (or resume) to the stage's total budget; returns (run, checkpoint info)."""
        budget_s = self.budget[name] * 60
        run = self._find_run(name)
        info = _checkpoint_info(run) if run is not None else None
        done_s = info["elapsed_s"] if info else 0.0
        # Less than a second (or 1 %) left: the last session used the budget up.
        if info is not None and budget_s - done_s <= max(1.0, 0.01 * budget_s):
            self.p.note(f"{run.name}: budget used ({_fmt_s(done_s)} of {_fmt_s(budget_s)} trained)")
            return run, info
        remaining_min = (budget_s - done_s) / 60
        if info is not None:
            self.p.note(f"resuming {run.name} at {info['kimg']:.2f} kimg ({_fmt_s(done_s)} trained)")
        cpu0 = time.process_time()
        with self._time_bar(name, budget_s, done_s) as hook:
            trainer = make_trainer(remaining_min, run if info is not None else None)
            trainer.step_hook = hook
            run = trainer.fit()
        # CPU seconds of this process (all threads) per session: on a shared machine the wall
        # clock alone says little about how much work the budget bought.
        self.state.setdefault("cpu_seconds", {}).setdefault(name, []).append(
            round(time.process_time() - cpu0, 1)
        )
        self._remember_run(name, run)
        if trainer.stopped_by and trainer.stopped_by.startswith("signal"):
            raise QuickstartInterrupted(
                f"stopped by {trainer.stopped_by.split(':', 1)[1]} during {name} training (checkpoint saved); "
                f"rerun the same command (same --out {self.out} and options) to resume"
            )
        info = _checkpoint_info(run)
        assert info is not None
        return run, info

    def stage_generator(self) -> None:
        from avatarforge.config import build_train_config
        from avatarforge.eval import metric_fn_from_config
        from avatarforge.train import make_trainer

        t = time.monotonic()
        o = self.o

        def make(minutes: float, resume: Path | None) -> Any:
            cfg = build_train_config(
                cli={"model": {"name": o.model}, "data": {"path": str(self.out / "data")}},
                overrides=[
                    f"data.condition_on=[{','.join(o.condition_on)}]",
                    *GENERATOR_OVERRIDES[o.model],
                    *o.generator_overrides,
                    # Budget and bookkeeping last: they are what the quickstart controls.
                    *self._run_overrides(minutes, "generator"),
                    "log.progress=false",
                    # About a minute of CPU training between checkpoints: a killed quickstart
                    # (no chance to checkpoint on a signal) loses little on resume.
                    "log.checkpoint_every_kimg=10",
                ],
            )
            return make_trainer(cfg, resume=resume, metric_fn=metric_fn_from_config(cfg))

        run, info = self._train("generator", make)
        self._record_training("generator", run, info, time.monotonic() - t, model=o.model)

    def stage_refiner(self) -> None:
        from avatarforge.train import make_trainer
        from avatarforge.train.refiner_config import build_refiner_config, refiner_preset

        t = time.monotonic()
        o = self.o

        def make(minutes: float, resume: Path | None) -> Any:
            cfg = build_refiner_config(
                config_file=refiner_preset(),
                overrides=[
                    f"data.size={o.size * 8}",
                    "data.scale=8",
                    "data.workers=2",
                    *REFINER_OVERRIDES,
                    *o.refiner_overrides,
                    *self._run_overrides(minutes, "refiner"),
                    "log.progress=false",
                    "log.checkpoint_every_kimg=2",
                ],
            )
            return make_trainer(cfg, resume=resume)

        self.p.note("training pairs come from the procedural renderer at 512 px (rendered once, then cached)")
        run, info = self._train("refiner", make)
        self._record_training("refiner", run, info, time.monotonic() - t, **_refiner_eval(run))

    def stage_parts(self) -> None:
        from avatarforge.train import make_trainer
        from avatarforge.train.parts_config import build_parts_config, parts_preset

        t = time.monotonic()
        o = self.o

        def make(minutes: float, resume: Path | None) -> Any:
            cfg = build_parts_config(
                config_file=parts_preset(),
                overrides=[
                    f"data.size={o.size}",
                    "data.workers=2",
                    *PARTS_OVERRIDES,
                    *o.parts_overrides,
                    *self._run_overrides(minutes, "parts"),
                    "log.progress=false",
                ],
            )
            return make_trainer(cfg, resume=resume)

        self.p.note(
            "the part segmenter learns from procedural avatars and their part maps (rendered once, then cached)"
        )
        run, info = self._train("parts", make)
        self._record_training("parts", run, info, time.monotonic() - t, **_parts_eval(run))

    def stage_animator(self) -> None:
        from avatarforge.animate.config import build_animator_config
        from avatarforge.train import make_trainer

        t = time.monotonic()
        o = self.o

        def make(minutes: float, resume: Path | None) -> Any:
            cfg = build_animator_config(
                overrides=[
                    f"data.size={o.size}",
                    *ANIMATOR_OVERRIDES,
                    *o.animator_overrides,
                    *self._run_overrides(minutes, "animator"),
                    "data.workers=2",
                    "log.progress=false",
                    "log.checkpoint_every_kimg=4",
                ]
            )
            return make_trainer(cfg, resume=resume)

        self.p.note("training pairs come from the procedural renderer (rendered once, then cached)")
        run, info = self._train("animator", make)
        self._record_training("animator", run, info, time.monotonic() - t)

    # ------------------------------------------------------------------ evaluation
    def stage_evaluate(self) -> None:
        from avatarforge.eval import evaluate

        t = time.monotonic()
        o = self.o
        run = self.out / self.info("generator")["run"]
        out = self.out / "eval.json"
        if "attr" in o.eval_metrics and self.extractor is None and not self._avatar_net_cached():
            self.p.note("first use of the avatar extractor: training it once (~1-2 min, then cached)")
        evaluate(
            run,
            self.out / "data",
            metrics=list(o.eval_metrics),
            extractor=self.extractor if self.extractor is not None else "avatar",
            n=o.eval_images,
            # A seeded subset of the data: the reference scan costs as much as the generated
            # images, and 2x their number keeps its share of the metrics' noise small.
            n_ref=min(o.n_images, 2 * o.eval_images),
            seed=o.seed,
            device=o.device,
            out=out,
            progress=self.progress,
        )
        self._record("evaluate", [out], time.monotonic() - t)

    # ------------------------------------------------------------------ outputs
    def _pipeline(self) -> Any:
        from avatarforge.generate import GeneratorPipeline

        run = self.out / self.info("generator")["run"]
        dev = (
            "cuda"
            if self.o.device == "auto" and _cuda()
            else ("cpu" if self.o.device == "auto" else self.o.device)
        )
        refiner = self.out / self.info("refiner")["run"] if self.info("refiner").get("run") else None
        parts = self.out / self.info("parts")["run"] if self.info("parts").get("run") else None
        return GeneratorPipeline.from_pretrained(run, device=dev, refiner=refiner, segmenter=parts)

    def stage_samples(self) -> None:
        from avatarforge.generate import interpolate, save_video
        from avatarforge.imageio import make_grid, save_image
        from avatarforge.postprocess.export import save_animation

        t = time.monotonic()
        o = self.o
        pipe = self._pipeline()
        cols = 8
        bar = self.p.bar(5, "grids, interpolation, 512-px avatars, named sliders")
        # -- sample grid: seeds 0..N-1, labels random per seed
        res = pipe(seeds=list(range(o.seed, o.seed + o.grid_seeds)), truncation=TRUNCATION)
        samples = save_image(
            self.out / "samples.png",
            make_grid(_upscale(res.images, o.upscale), nrow=cols, alpha_backdrop="checker"),
        )
        bar.update()
        # -- attribute sheet: one row per conditioning label, one avatar (seed) throughout, each
        # row drawing it with every value of that label (the others stay the seed's own)
        sheet = []
        for label in o.condition_on:
            values = list(pipe.labels.values[pipe.labels.index(label)])
            images = [
                pipe(seeds=[o.seed + 100], truncation=TRUNCATION, attrs={label: v}).images[0] for v in values
            ]
            sheet.append((label, values, _upscale(np.stack(images), o.upscale)))
        attributes = save_image(self.out / "attributes.png", _attribute_sheet(sheet))
        bar.update()
        # -- interpolation: a loop through 6 seeds, on white (GIF alpha is 1-bit)
        frames = interpolate(
            pipe,
            seeds=list(range(o.seed, o.seed + 6)),
            frames=o.interp_frames,
            truncation=TRUNCATION,
            loop=True,
            rgba=False,
        )
        interp = save_video(self.out / "interpolation.gif", _upscale(frames, o.upscale), fps=12)
        bar.update()
        # -- the same seeds at the refiner's size: what a creator downloads and streams
        big = pipe(seeds=list(range(o.seed, o.seed + 4)), truncation=TRUNCATION, size=pipe.sizes[-1]).images
        avatars = save_animation(
            self.out / "avatars-512.webp",
            [make_grid(big, nrow=4, alpha_backdrop=None)],
            fps=1,
            lossless=False,
        )
        bar.update()
        # -- the studio's latent sliders, named after what they change: SeFa directions of the
        # generator's first layer, each named by the avatar classifier ("hair_style:long+",
        # "smile+"); `serve` reads the run's directions.json, `edit slide --directions` takes it.
        directions = self._named_directions(pipe)
        bar.update()
        bar.close()
        self._record(
            "samples",
            [samples, attributes, interp, avatars, directions],
            time.monotonic() - t,
            attribute_labels=list(o.condition_on),
        )

    def _named_directions(self, pipe: Any) -> Path:
        """Eight SeFa slider directions named by the avatar classifier, into the generator
        run's ``directions.json`` (what ``avatarforge edit directions --method sefa`` writes)."""
        from avatarforge.generate.directions import (
            avatar_classifier,
            name_directions,
            save_directions,
            sefa_directions,
        )

        found = sefa_directions(pipe, k=8, n_samples=256, seed=self.o.seed)
        named = name_directions(pipe, found, classifier=avatar_classifier(self.extractor, str(pipe.device)))
        run = self.out / self.info("generator")["run"]
        return save_directions(run / "directions.json", named, pipe)

    def stage_animation(self) -> None:
        from avatarforge.animate.showcase import SHOWCASE_SECONDS, showcase_controls
        from avatarforge.imageio import save_image
        from avatarforge.postprocess.export import save_animation

        t = time.monotonic()
        o = self.o
        pipe = self._pipeline()
        size = pipe.sizes[-1]
        seed, rig, image, parts = _pick_rigged_avatar(pipe, o.seed, size)
        if rig.warnings:
            self.p.note("; ".join(rig.warnings))
        n = max(2, round(min(o.anim_seconds, SHOWCASE_SECONDS) * o.anim_fps))
        # The showcase runs at its own pace; a shorter animation samples it more sparsely.
        times = np.linspace(0.0, SHOWCASE_SECONDS, n, endpoint=False)
        bar = self.p.bar(n, f"rendering {size}-px frames", unit="frame")
        frames = []
        for tt in times:
            frames.append(rig.render(showcase_controls(float(tt))))
            bar.update()
        bar.close()
        fps = n / SHOWCASE_SECONDS
        # Lossy colour (alpha stays exact): a tenth of the lossless size, and the report embeds it.
        webp = save_animation(self.out / "avatar.webp", frames, fps=fps, lossless=False)
        half = [_downsample_u8(f, 2) for f in frames]  # GIF: 1-bit alpha and 256 colours; 256 px is plenty
        gif = save_animation(self.out / "avatar.gif", half, fps=fps)
        still = save_image(self.out / "avatar.png", rig.render({}))
        outputs = [webp, gif, still, *self._vrm(image, parts)]
        self._record("animation", outputs, time.monotonic() - t, frames=len(frames), seed=seed, size=size)

    def _vrm(self, image: np.ndarray, parts: np.ndarray) -> list[Path]:
        """``avatar.vrm`` (docs/3d.md) and its turntable preview, from the rigged avatar and its
        part map; skipped with a note when the part map has no face to build one from."""
        from avatarforge.avatar3d import export_vrm
        from avatarforge.avatar3d.source import Avatar3DError
        from avatarforge.imageio import save_image

        src = save_image(self.out / "avatar-512.png", image)
        part_png = save_image(self.out / "avatar.parts.png", parts[..., None])  # one channel: part ids
        try:
            export_vrm(src, self.out / "avatar.vrm", parts=part_png, preview=self.out / "turntable.webp")
        except Avatar3DError as e:
            self.p.note(f"no avatar.vrm: {e}")
            return [src, part_png]
        return [src, part_png, self.out / "avatar.vrm", self.out / "turntable.webp"]

    def stage_report(self) -> None:
        from avatarforge.quickstart.report import build_metrics, write_report

        t = time.monotonic()
        metrics = build_metrics(self.out, self.state, self.o.minutes)
        mpath = atomic_write_json(self.out / "metrics.json", metrics)
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": 1,
            "generator_run": self.info("generator")["run"],
            "refiner_run": self.info("refiner")["run"],
            "parts_run": self.info("parts")["run"],
            "animator_run": self.info("animator")["run"],
            "avatar_seed": self.info("animation").get("seed"),
            "data": "data",
            "report": "report.html",
            "metrics": "metrics.json",
            "model": self.o.model,
            "condition_on": list(self.o.condition_on),
            "size": self.o.size,
            "truncation": TRUNCATION,
        }
        man = atomic_write_json(self.out / MANIFEST_NAME, manifest)
        report = write_report(self.out, metrics, self.state)
        self._record("report", [mpath, man, report], time.monotonic() - t)


def _held_out(run: Path, keys: Sequence[str]) -> dict[str, Any]:
    """``keys`` of a run's newest held-out evaluation (``eval_KEY`` in its metrics.jsonl)."""
    from avatarforge.quickstart.report import last_metric_line

    line = last_metric_line(run)
    return {k: round(float(line[f"eval_{k}"]), 4) for k in keys if f"eval_{k}" in line}


def _refiner_eval(run: Path) -> dict[str, Any]:
    """The refiner's held-out PSNR, sharpness and part accuracy (and bicubic's)."""
    return _held_out(
        run, ("psnr", "psnr_bicubic", "sharpness", "sharpness_bicubic", "part_acc", "part_acc_fg")
    )


def _parts_eval(run: Path) -> dict[str, Any]:
    """The part segmenter's held-out mean IoU (all parts, face parts) and face-found rate."""
    return _held_out(run, ("miou", "miou_face", "face_found"))


def _pick_rigged_avatar(pipe: Any, seed: int, size: int, tries: int = 16) -> tuple[int, Any, Any, Any]:
    """The first seed from ``seed`` whose avatar rigs with both eyes open (a generated avatar
    may blink or squint: a rig cannot open eyes it never saw); else the first that rigs.
    Returns ``(seed, rig, image, part map)``."""
    from avatarforge.animate.rig import AvatarRig, RigError

    first = None
    for s in range(seed, seed + tries):
        images, parts = pipe.render_layers(pipe.map(pipe.latents([s], truncation=TRUNCATION)), size)
        try:
            rig = AvatarRig.from_parts(images[0], parts[0])
        except RigError:
            continue
        if len(rig.eyes) == 2 and not rig.warnings:
            return s, rig, images[0], parts[0]
        first = first or (s, rig, images[0], parts[0])
    if first is None:  # an undertrained part map: the avatar still moves, and the note says why
        images, parts = pipe.render_layers(pipe.map(pipe.latents([seed], truncation=TRUNCATION)), size)
        return seed, AvatarRig.from_parts(images[0], parts[0], require_face=False), images[0], parts[0]
    return first


def _downsample_u8(image: np.ndarray, k: int) -> np.ndarray:
    """Area-average an RGBA uint8 image by ``k`` in premultiplied alpha."""
    x = image.astype(np.float32)
    x[..., :3] *= x[..., 3:4] / 255.0
    h, w = x.shape[0] // k, x.shape[1] // k
    x = x[: h * k, : w * k].reshape(h, k, w, k, -1).mean(axis=(1, 3))
    a = x[..., 3:4]
    x[..., :3] = np.where(a > 0, x[..., :3] * 255.0 / np.maximum(a, 1e-6), 0.0)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _load_avg() -> float | None:
    """The 1-minute load average (None where the OS has none): recorded next to timings."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# ============================================================================ the API
def _check_out(out: str | os.PathLike) -> Path:
    if not str(out).strip():
        raise QuickstartError("--out is empty: give an output directory, e.g. --out runs/quickstart")
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise QuickstartError(
            f"--out {p} is a file, not a directory: choose another path (e.g. runs/quickstart)"
        )
    if p.is_dir() and any(p.iterdir()) and not (p / STATE_NAME).is_file():
        raise QuickstartError(
            f"--out {p} is a non-empty directory that is not a quickstart (no {STATE_NAME}): "
            "choose a new or empty directory, e.g. --out runs/quickstart"
        )
    return p


def run_quickstart(
    out: str | os.PathLike = "runs/quickstart",
    minutes: float = 10.0,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    *,
    model: str = "auto",
    threads: int | None = None,
    n_images: int = 5000,
    size: int = 64,
    condition_on: Sequence[str] = DEFAULT_CONDITION_ON,
    generator_overrides: Sequence[str] = (),
    animator_overrides: Sequence[str] = (),
    refiner_overrides: Sequence[str] = (),
    parts_overrides: Sequence[str] = (),
    eval_images: int = 1000,
    eval_metrics: Sequence[str] = ("swd", "fid", "attr"),
    extractor: Any = None,
    grid_seeds: int = 64,
    interp_frames: int = 72,
    anim_seconds: float = 6.0,
    anim_fps: float = 20.0,
    upscale: int = 1,
    _fail_at: str | None = None,
    _step_hook: Callable[[str, Any], None] | None = None,
) -> QuickstartResult:
    """Run (or resume) the whole quickstart into ``out``; see the module docstring.

    Args:
        out: output directory (new, empty, or an earlier quickstart's to resume it).
        minutes: total budget in minutes (> 0); training gets 55 % (generator) + 20 %
            (refiner) + 8 % (part segmenter) + 5 % (animator), data/evaluation/outputs use the rest.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        seed: seeds the data set, training and the report's samples.
        progress: stage lines, progress bars and the final summary on the terminal.
        model: the generator family: ``stylegan`` (the stylegan-64 preset, conditional),
            ``cgan`` (a narrow conditional DCGAN), or ``auto``: stylegan with CUDA, cgan on a
            CPU, where 10 minutes of the stylegan preset do not reach recognisable avatars
            (docs/quickstart.md, "Time and quality").
        threads: torch threads (default: 1 on a CPU, see :data:`CPU_THREADS`; torch's
            default with CUDA).

    Keyword-only (smaller settings for tests and experiments):
        n_images, size: the built-in data set (procedural avatars, 32 or 64 px).
        condition_on: categorical labels the generator is conditioned on; the first one
            is the attribute grid's rows.
        generator_overrides, animator_overrides, refiner_overrides, parts_overrides: ``key=value``
            config overrides.
        eval_images, eval_metrics: generated images and metrics of the evaluation.
        extractor: an avatar feature extractor instance (default: the cached one).
        grid_seeds, interp_frames, anim_seconds, anim_fps, upscale: output sizes.

    Returns:
        :class:`QuickstartResult`.

    Raises:
        QuickstartError: a bad argument (the message names it and the fix).
        QuickstartInterrupted: training was stopped by a signal (its checkpoint is saved;
            rerun to resume).
    """
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not math.isfinite(minutes):
        raise QuickstartError(f"--minutes must be a number > 0 (e.g. --minutes 10), got {minutes!r}")
    if minutes <= 0:
        raise QuickstartError(
            f"--minutes must be > 0 (the total time budget, e.g. --minutes 10), got {minutes:g}"
        )
    if size not in (32, 64):
        raise QuickstartError(f"size must be 32 or 64 (the built-in presets' sizes), got {size!r}")
    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 16:
        raise QuickstartError(f"n_images must be an integer >= 16, got {n_images!r}")
    if not condition_on:
        raise QuickstartError("condition_on must name at least one label (e.g. hair_color)")
    if device != "auto" and device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise QuickstartError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    for name, value in (
        ("eval_images", eval_images),
        ("grid_seeds", grid_seeds),
        ("interp_frames", interp_frames),
    ):
        if value < 2:
            raise QuickstartError(f"{name} must be >= 2, got {value}")
    if model not in MODELS:
        raise QuickstartError(f"--model must be one of {', '.join(MODELS)}, got {model!r}")
    on_gpu = device.startswith("cuda") or (device == "auto" and _cuda())
    if model == "auto":
        model = "stylegan" if on_gpu else "cgan"
    if threads is None:
        threads = None if on_gpu else CPU_THREADS
    elif isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise QuickstartError(f"threads must be an integer >= 1, got {threads!r}")
    opts = _Options(
        minutes=float(minutes),
        model=model,
        threads=threads,
        device=str(device),
        seed=int(seed),
        n_images=int(n_images),
        size=int(size),
        condition_on=tuple(condition_on),
        generator_overrides=tuple(generator_overrides),
        animator_overrides=tuple(animator_overrides),
        refiner_overrides=tuple(refiner_overrides),
        parts_overrides=tuple(parts_overrides),
        eval_images=int(eval_images),
        eval_metrics=tuple(eval_metrics),
        grid_seeds=int(grid_seeds),
        interp_frames=int(interp_frames),
        anim_seconds=float(anim_seconds),
        anim_fps=float(anim_fps),
        upscale=int(upscale),
    )
    runner = _Quickstart(
        _check_out(out), opts, progress, extractor=extractor, fail_at=_fail_at, step_hook=_step_hook
    )
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)  # evaluation and rendering too, not only the trainers
    try:
        return runner.run()
    finally:
        torch.set_num_threads(before)
