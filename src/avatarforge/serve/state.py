"""What the HTTP server loads once at start, and the limits it enforces.

* :class:`ServeSettings` -- bind address, API key and every request limit (upload bytes,
  pixels, counts, frames). One dataclass, so the CLI, the tests and the studio share them.
* :class:`ServeState` -- the loaded models and what they offer (the
  :class:`~avatarforge.generate.GeneratorPipeline`, an optional expression animator, the
  slider directions, the post-processing ops) plus the lock that serialises torch work on
  them. Build it with :meth:`ServeState.load`.

Concurrency: the server runs blocking model calls in a thread pool. The models are shared
and PyTorch modules are not documented as thread-safe for concurrent forward passes (label
blending, for one, installs forward hooks on the generator for the duration of a call), so
every call that touches a model holds :attr:`ServeState.lock`. A second request waits for
the first instead of corrupting it; on a CPU server a model call uses all intra-op threads
anyway, so serialising costs little throughput.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["QUICKSTART_FILE", "ServeSettings", "ServeState", "resolve_run"]

#: Written by ``avatarforge quickstart`` into its output directory: ``{"generator_run": ...,
#: "animator_run": ...}``, paths relative to that directory (read by :mod:`avatarforge.runs`).
QUICKSTART_FILE = "quickstart.json"

_MiB = 1024 * 1024


@dataclass
class ServeSettings:
    """Server options and request limits.

    Attributes:
        host, port: where uvicorn binds (loopback by default: nothing outside the machine
            can reach the server unless you choose so).
        api_key: when set, every ``/v1/`` request needs ``X-API-Key: KEY`` or
            ``Authorization: Bearer KEY``; ``None`` leaves the API open.
        max_upload_bytes: largest accepted upload (checked while reading, before decoding).
        max_pixels: largest accepted upload in pixels (decompression-bomb guard, checked from
            the header before the pixel data is decoded).
        max_image_side: longest side of an accepted upload (read from the header, before
            any pixel is decoded: 413 over it), which bounds the work per request.
        max_output_side: longest side of a post-processing result and of every
            intermediate image of its chain (planned from the upload's header size before
            any work: 422 naming ``ops`` over it).
        max_chain_pixels: most pixels one post-processing chain may process (each op counts
            the larger of its input and output): bounds the time of a chain.
        max_chain_ops: most ops in one post-processing chain.
        max_concurrent_images: most requests decoding and processing uploaded images at
            once (post-processing, style, animate uploads); the others wait their turn. With
            the limits above this bounds the server's memory: each slot needs at most a few
            hundred MB (docs/serving.md, "Memory").
        max_n: most images per generate/variations request.
        max_frames: most frames per interpolate/animate request.
        max_fps: highest frame rate of a video response.
        max_steps: most optimisation steps of a neural style request.
        max_style_size: largest working size (longer side, px) of a neural style request:
            time and memory grow with its square (L-BFGS keeps 100 image-sized vectors), so
            the default 256 bounds a worst request to ~1 min and ~300 MB on one CPU core.
        device: torch device of the models.
        threads: torch intra-op threads (``None``: leave torch's default).
        batch_size: the generator's fixed batch (see :class:`~avatarforge.generate.GeneratorPipeline`):
            the default 8 gives the same bytes as the CLI and Python defaults; 1 makes
            one-seed requests about 4x cheaper on a CPU, with outputs that differ from the
            CLI's by float rounding (still deterministic per seed on this server).
        vmc: the live overlay's VMC (OSC over UDP) listener, ``HOST:PORT`` or ``PORT``
            (``None``: off; ``avatarforge serve --vmc`` gives ``127.0.0.1:39539``).
        overlay_audio: a WAV the overlay lip-syncs to (the control page's "play" key).
        overlay_fps: the overlay's default frame rate (``None``: the overlay's own default).
        state_dir: the serve state directory, where the studio's last pick and slider state
            and the overlay's ``studio`` avatar are kept across restarts (one folder per
            generator, :mod:`avatarforge.serve.persist`); ``None``: nothing is kept
            (``avatarforge serve`` uses ``$AVATARFORGE_CACHE/serve``, see
            :func:`avatarforge.serve.persist.default_state_dir`).
        listen: the address the tracking listeners (VMC, iFacialMocap) bind to (``None``:
            127.0.0.1; a LAN address lets a phone send, with a warning at start-up).
        ifacialmocap: iFacialMocap (iPhone ARKit) listener, ``HOST:PORT`` or ``1`` for port 49983.
        ifacialmocap_phone: the phone's address, to ask it to start sending.
        vmc_send: send our live controls as VMC to ``HOST:PORT`` (``1``: 127.0.0.1:39540).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_upload_bytes: int = 8 * _MiB
    max_pixels: int = 16_000_000
    max_image_side: int = 1024
    max_output_side: int = 2048
    max_chain_pixels: int = 32_000_000
    max_chain_ops: int = 32
    max_concurrent_images: int = 2
    max_n: int = 64
    max_frames: int = 240
    max_fps: int = 60
    max_steps: int = 200
    max_style_size: int = 256
    device: str = "cpu"
    threads: int | None = None
    batch_size: int = 8
    vmc: str | None = None
    overlay_audio: str | None = None
    overlay_fps: float | None = None
    state_dir: str | None = None
    listen: str | None = None
    ifacialmocap: str | None = None
    ifacialmocap_phone: str | None = None
    vmc_send: str | None = None

    def __post_init__(self) -> None:
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key must not be empty; leave it unset (None) for an open API")
        for name in (
            "max_upload_bytes",
            "max_pixels",
            "max_image_side",
            "max_output_side",
            "max_chain_pixels",
            "max_chain_ops",
            "max_concurrent_images",
            "max_style_size",
            "max_n",
            "max_frames",
            "max_fps",
            "batch_size",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0 <= int(self.port) <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.overlay_fps is not None and not 0 < float(self.overlay_fps) <= self.max_fps:
            raise ValueError(f"overlay_fps must be in (0, max_fps={self.max_fps}], got {self.overlay_fps}")
        if self.overlay_audio is not None and not Path(self.overlay_audio).is_file():
            raise ValueError(f"overlay_audio {self.overlay_audio!r} is not a file; give a PCM WAV file")


def resolve_run(
    run: str | os.PathLike, animator: str | os.PathLike | None = None
) -> tuple[Path, Path | None]:
    """``(generator run, animator run or None)`` for a run directory or a quickstart output.

    A quickstart output directory holds ``quickstart.json`` naming both runs relative to it;
    an explicit ``animator`` wins over the one it names.
    """
    root = Path(run)
    if not root.exists():
        raise FileNotFoundError(
            f"RUN {root} does not exist; pass a run directory, checkpoint or quickstart output"
        )
    from avatarforge.runs import quickstart_runs

    found = quickstart_runs(root)
    if found is not None and "generator" in found:
        anim = Path(animator) if animator is not None else found.get("animator")
        return found["generator"], anim
    return root, Path(animator) if animator is not None else None


@dataclass
class ServeState:
    """Everything the server loads once: models, their sliders, the post-processing ops.

    Attributes:
        pipe: the generator pipeline (on ``settings.device``).
        settings: limits and options.
        animator: an ``ExpressionAnimator``, ``OnnxAnimator`` or ``None`` (then animate
            endpoints answer 503).
        directions: slider directions by id (label sliders of conditional models, code
            sliders of InfoGAN, SeFa sliders of StyleGAN, plus ``directions.json`` of the
            run when present).
        post_ops: names of the post-processing ops (:func:`avatarforge.postprocess.list_ops`).
        lock: held around every model call (see the module docstring).
        generator_run, animator_run: where the models came from.
    """

    pipe: Any
    settings: ServeSettings = field(default_factory=ServeSettings)
    animator: Any = None
    directions: dict[str, Any] = field(default_factory=dict)
    post_ops: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: Bounds concurrent upload decoding/processing (see :meth:`image_slot`); shared by
    #: :meth:`with_settings` copies like the lock. Made from the settings when not given.
    image_slots: threading.BoundedSemaphore | None = field(default=None, repr=False)
    generator_run: Path | None = None
    animator_run: Path | None = None
    _feature_net: Any = field(default=None, repr=False)

    @classmethod
    def load(
        cls,
        run: str | os.PathLike,
        animator: str | os.PathLike | None = None,
        settings: ServeSettings | None = None,
        refiner: str | os.PathLike | None = None,
    ) -> ServeState:
        """Load the generator of ``run`` (run dir, checkpoint or quickstart output) and the animator.

        ``animator``: a run directory/checkpoint of ``avatarforge animate train`` or an
        exported ``.onnx``; defaults to the quickstart's ``animator_run`` if any.
        ``refiner``: a refiner run (512-px avatars and the overlay's rigs); defaults to the
        quickstart's ``refiner_run`` if any.
        """
        from avatarforge.generate import GeneratorPipeline

        settings = settings or ServeSettings()
        gen_run, anim_run = resolve_run(run, animator)
        segmenter = None
        if Path(run).is_dir():
            from avatarforge.runs import quickstart_runs

            found = quickstart_runs(run) or {}
            refiner = refiner if refiner is not None else found.get("refiner")
            segmenter = found.get("parts")
        if settings.threads is not None:
            import torch

            torch.set_num_threads(int(settings.threads))
        pipe = GeneratorPipeline.from_pretrained(
            gen_run,
            device=settings.device,
            batch_size=settings.batch_size,
            refiner=refiner,
            segmenter=segmenter,
        )
        anim = None
        if anim_run is not None:
            from avatarforge.animate.loading import load_animator

            anim = load_animator(str(anim_run), device=settings.device, threads=settings.threads)
        return cls.from_pipeline(
            pipe, animator=anim, settings=settings, generator_run=gen_run, animator_run=anim_run
        )

    @classmethod
    def from_pipeline(
        cls,
        pipe: Any,
        animator: Any = None,
        settings: ServeSettings | None = None,
        generator_run: Path | None = None,
        animator_run: Path | None = None,
    ) -> ServeState:
        """A state around already-loaded models (tests, embedding the app in another program)."""
        from avatarforge.postprocess import list_ops

        return cls(
            pipe=pipe,
            settings=settings or ServeSettings(),
            animator=animator,
            directions=_available_directions(pipe, generator_run),
            post_ops=list(list_ops()),
            generator_run=generator_run,
            animator_run=animator_run,
        )

    @property
    def avatar_layers(self) -> Any:
        """``(avatar, size, image) -> (RGBA, part map)`` for the overlay's rigs, or None when the
        pipeline cannot make part maps (no refiner with a part head). ``avatar``: a seed
        (``"7"``) or ``"studio"``; ``image``: the generator-resolution picture shown for it
        (the studio's pick), refined instead of a seed's sample when given."""
        if not getattr(self.pipe, "has_layers", False):
            return None

        def layers(avatar: str, size: int, image: Any = None) -> tuple[Any, Any]:
            import numpy as np

            if image is not None and np.asarray(image).shape[:2] == (self.pipe.resolution,) * 2:
                img = np.asarray(image)
                if img.shape[-1] == 3:
                    img = np.concatenate([img, np.full((*img.shape[:2], 1), 255, np.uint8)], axis=-1)
                big, parts = self.pipe.layers_of(img[None], size)
            else:
                seed = 0 if avatar == "studio" else int(avatar)
                big, parts = self.pipe.render_layers(self.pipe.latents([seed]), size)
            return big[0], parts[0]

        return layers

    def with_settings(self, **changes: Any) -> ServeState:
        """A state sharing these models *and their lock* (and image slots), with some settings changed.

        For a second app on the same models (e.g. one with an API key, or smaller limits):
        sharing the lock keeps concurrent requests of both apps safe.
        """
        from dataclasses import replace

        settings = replace(self.settings, **changes)
        # The image slots are shared too, unless their number changes.
        same = settings.max_concurrent_images == self.settings.max_concurrent_images
        return replace(self, settings=settings, image_slots=self.image_slots if same else None)

    @contextlib.contextmanager
    def model_lock(self) -> Iterator[None]:
        """Hold the model lock for one model call.

        Autograd is left as it is: the pipeline disables it itself, and Gatys/AdaIN style
        transfer optimise an image and need it.
        """
        with self.lock:
            yield

    def __post_init__(self) -> None:
        if self.image_slots is None:
            self.image_slots = threading.BoundedSemaphore(self.settings.max_concurrent_images)

    @contextlib.contextmanager
    def image_slot(self) -> Iterator[None]:
        """Hold one of ``settings.max_concurrent_images`` slots while decoding and processing
        uploaded images: requests beyond that wait here instead of each holding decoded
        pixels (and a chain's working copies) at the same time."""
        assert self.image_slots is not None  # set by __post_init__
        with self.image_slots:
            yield

    def feature_net(self) -> Any:
        """The seeded random-weights CNN of neural style transfer (built once, then cached).

        Call under :meth:`model_lock`. :meth:`load` builds it at start so the first style
        request does not pay for it.
        """
        if self._feature_net is None:
            from avatarforge.style.features import load_feature_net

            self._feature_net = load_feature_net(None, seed=0, device=self.settings.device)
        return self._feature_net

    def info(self) -> dict[str, Any]:
        """What ``GET /v1/info`` returns: the model, its attributes, codes, sliders, ops, limits."""
        pipe = self.pipe
        labels = pipe.labels
        attributes = {
            name: [labels.class_name(i, c) for c in range(labels.dims[i])]
            for i, name in enumerate(labels.names)
        }
        code_dims = pipe.code_dims
        s = self.settings
        return {
            "model": {
                "family": pipe.family,
                "resolution": pipe.resolution,
                "sizes": list(getattr(pipe, "sizes", [pipe.resolution])),
                "channels": pipe.channels,
                "rgba": pipe.channels == 4,
                "stylegan": bool(pipe.is_stylegan),
                "sha256": pipe.model_sha256,
                "batch_size": pipe.batch_size,
            },
            "attributes": attributes,
            "codes": {
                "categorical": list(code_dims.get("categorical", [])),
                "continuous": int(code_dims.get("continuous", 0)),
            },
            "sliders": [
                {"id": d.id, "name": d.name, "kind": d.kind, "range": list(d.range)}
                for d in self.directions.values()
            ],
            "post_ops": list(self.post_ops),
            "animator": self.animator is not None,
            "limits": {
                "max_upload_bytes": s.max_upload_bytes,
                "max_pixels": s.max_pixels,
                "max_image_side": s.max_image_side,
                "max_output_side": s.max_output_side,
                "max_chain_pixels": s.max_chain_pixels,
                "max_chain_ops": s.max_chain_ops,
                "max_n": s.max_n,
                "max_frames": s.max_frames,
                "max_fps": s.max_fps,
                "max_steps": s.max_steps,
                "max_style_size": s.max_style_size,
            },
            "auth": s.api_key is not None,
        }


def _available_directions(pipe: Any, run: Path | None) -> dict[str, Any]:
    """Slider directions the model supports, by id (first one wins on an id clash)."""
    from avatarforge.generate import directions as D

    found: list[Any] = []
    if run is not None:
        # A directions.json written by 'avatarforge edit directions' into the run directory
        # gives named sliders; directions of another model are refused by load_directions.
        cand = run / "directions.json"
        if cand.is_file():
            found += D.load_directions(cand, pipe)
    if pipe.labels.dims:
        found += D.label_directions(pipe)
    if pipe.has_codes:
        found += D.code_directions(pipe)
    if pipe.is_stylegan:
        # SeFa is closed-form (eigenvectors of the first modulation's weights): cheap at start.
        found += D.sefa_directions(pipe, k=8, n_samples=256)
    out: dict[str, Any] = {}
    for d in found:
        out.setdefault(d.id, d)
    return out
