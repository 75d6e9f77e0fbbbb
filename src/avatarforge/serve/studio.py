"""The web studio: a Gradio app mounted on the server at ``/studio`` (extra ``[ui]``).

Pick and refine in steps (the Waifu Labs flow): generate a grid of 16 (seed box, "new
batch"), click one to pick it, then refine it step by step -- a grid of variations that
keep the character and vary its colour palette, then its details, then its pose and
expression (:func:`avatarforge.generate.variations.refine_step`) -- clicking the best of
each; every step's choice is kept and "undo" goes back to the previous step. Every control
applies to the current pick: attribute dropdowns (the model's label values; a chosen class
is pinned through the steps), latent sliders (the server's directions), style (colour
transfer / histogram matching towards a reference avatar or an uploaded image) and a
post-processing chain; a live expression preview through the animator, "send to overlay",
and a download of the exact RGBA PNG or WebP at the sizes the pipeline makes (with its
generation record). The last session survives restarts (:mod:`avatarforge.serve.persist`).

Every callback is a plain function of :class:`StudioSession` and plain values (numbers,
strings, dicts, uint8 arrays), so tests call them without a browser; :func:`build_studio`
only wires them to Gradio components. Model calls hold the server's model lock.

Authentication: when the server has an API key, the studio asks for it on Gradio's login
page (any user name, the API key as the password; :func:`mount_studio`).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "GRID_SIZE",
    "STYLE_METHODS",
    "StudioError",
    "StudioSession",
    "add_post_op",
    "apply_finish",
    "attribute_choices",
    "build_studio",
    "edit_picked",
    "export_image",
    "export_png",
    "expression_preview",
    "finished_latent",
    "generate_grid",
    "load_session",
    "mount_studio",
    "next_step",
    "pick",
    "refine",
    "regenerate_download",
    "render_finished",
    "save_session",
    "session_from_json",
    "session_to_json",
    "slider_directions",
    "undo",
]

#: Images per grid (generate and refine).
GRID_SIZE = 16
#: Style methods offered (the weight-free ones: instant on a CPU, no downloads).
STYLE_METHODS = ("none", "colour_transfer", "histogram_match")
#: Dropdown value meaning "random per seed".
RANDOM = "(random)"
#: Download formats (both keep the alpha channel; WebP lossless).
DOWNLOAD_FORMATS = ("png", "webp")
#: Most latent sliders shown (the first ones by the server's order).
MAX_SLIDERS = 12
#: The studio's stylesheet (package data: ``avatarforge/serve/static/studio/studio.css``).
STUDIO_CSS_FILE = Path(__file__).resolve().parent / "static" / "studio" / "studio.css"


class StudioError(ValueError):
    """A studio action that cannot run as asked; the message says what to do."""


@dataclass
class StudioSession:
    """One browser tab's state (kept in a ``gr.State``; plain data, no Gradio objects).

    Attributes:
        latents: the grid's latents (a :class:`~avatarforge.generate.Latent` of up to 16).
        images: the grid's images ``(N, H, W, C)`` uint8.
        seeds: the grid's seeds (``None`` for variations).
        picked: the picked latent (one image), or ``None``.
        round: refinements so far (seeds each refinement's random directions).
        history: what happened (``"generate 0-15"``, ``"pick seed 3"``, ``"refine palette
            strength=0.3"``, ``"undo palette"``), for the record.
        step: the grid shown: 0 = generated from seeds, then ``1 + REFINE_STEPS.index(step)``.
        choices: each step's choice so far, ``[["pick", "seed 3"], ["palette", "cell 5"], ...]``
            (a refine step starts at ``"cell 0"``: the pick itself).
        trail: what :func:`undo` goes back to: one snapshot per refine step (the grid, pick,
            choices and the controls as they were before it).
    """

    latents: Any = None
    images: np.ndarray | None = None
    seeds: list[int] | None = None
    picked: Any = None
    round: int = 0
    history: list[str] = field(default_factory=list)
    step: int = 0
    choices: list[list[str]] = field(default_factory=list)
    trail: list[dict[str, Any]] = field(default_factory=list)


# =============================================================================== helpers
@contextlib.contextmanager
def _locked(state: Any) -> Iterator[None]:
    """The server's model lock (and inference mode) around one model call."""
    ml = getattr(state, "model_lock", None)
    if callable(ml):
        with ml():
            yield
        return
    import torch

    lock = getattr(state, "lock", None)
    with lock if lock is not None else contextlib.nullcontext(), torch.inference_mode():
        yield


def attribute_choices(state: Any) -> dict[str, list[str]]:
    """``{attribute: [class names]}`` of a conditional model (empty for unconditional ones)."""
    labels = state.pipe.labels
    out = {}
    for i, name in enumerate(labels.names):
        vals = labels.values[i] if i < len(labels.values) and labels.values[i] else ()
        out[name] = list(vals) if vals else [str(k) for k in range(labels.dims[i])]
    return out


def slider_directions(state: Any, limit: int = MAX_SLIDERS) -> list[Any]:
    """The latent sliders shown: the server's non-label directions (attributes have dropdowns)."""
    dirs = list(getattr(state, "directions", {}).values())
    return [d for d in dirs if d.kind != "label"][:limit]


def _attrs(state: Any, attrs: Mapping[str, str] | None) -> dict[str, str]:
    choices = attribute_choices(state)
    out = {}
    for k, v in (attrs or {}).items():
        if v in (None, "", RANDOM):
            continue
        if k not in choices:
            raise StudioError(f"unknown attribute {k!r}; this model has: {', '.join(choices) or 'none'}")
        if str(v) not in choices[k]:
            raise StudioError(f"attribute {k}: unknown value {v!r}; valid values: {', '.join(choices[k])}")
        out[k] = str(v)
    return out


def _rgba(state: Any, latent: Any) -> np.ndarray:
    """Render latents as RGBA uint8 (RGB models get an opaque alpha)."""
    with _locked(state):
        return state.pipe.render(latent, rgba=True)


def _max_n(state: Any) -> int:
    return int(getattr(getattr(state, "settings", None), "max_n", GRID_SIZE))


# =============================================================================== pick and refine
def generate_grid(
    state: Any,
    session: StudioSession,
    seed: int,
    n: int = GRID_SIZE,
    truncation: float = 1.0,
    attrs: Mapping[str, str] | None = None,
) -> tuple[StudioSession, list[np.ndarray]]:
    """Generate ``n`` avatars from seeds ``seed .. seed + n - 1`` (deterministic by seed).

    Returns the new session (the pick is kept) and the RGBA images.

    Raises:
        StudioError: a seed that is not a non-negative integer, ``n`` above the server's
            ``max_n``, truncation outside [0, 1], unknown attributes.
    """
    try:
        seed_i = int(seed)
    except (TypeError, ValueError):
        raise StudioError(f"seed must be a whole number, got {seed!r}") from None
    if seed_i < 0 or seed_i != float(seed):
        raise StudioError(f"seed must be a whole number >= 0, got {seed!r}")
    if not 1 <= int(n) <= _max_n(state):
        raise StudioError(f"n must be from 1 to {_max_n(state)} (the server's max_n), got {n}")
    if not 0.0 <= float(truncation) <= 1.0:
        raise StudioError(f"truncation must be from 0 to 1, got {truncation}")
    seeds = list(range(seed_i, seed_i + int(n)))
    a = _attrs(state, attrs)
    with _locked(state):
        out = state.pipe(seeds=seeds, truncation=float(truncation), attrs=a or None, rgba=True)
    new = replace(
        session,
        latents=out.latent,
        images=out.images,
        seeds=seeds,
        step=0,
        history=[*session.history, f"generate {seeds[0]}-{seeds[-1]} psi={float(truncation):g}"],
    )
    return new, list(out.images)


def pick(session: StudioSession, index: int | None) -> StudioSession:
    """Pick grid image ``index`` (what a gallery click does)."""
    if session.latents is None:
        raise StudioError("generate a grid first, then click an avatar to pick it")
    if index is None or not 0 <= int(index) < len(session.latents):
        raise StudioError(f"pick an avatar of the grid (index 0..{len(session.latents) - 1}), got {index!r}")
    i = int(index)
    label = f"seed {session.seeds[i]}" if session.seeds else f"cell {i}"
    choices = [list(c) for c in session.choices]
    if session.step == 0:  # a pick from seeds starts a new character
        choices, trail = [["pick", label]], []
    else:
        choices[-1][1] = label
        trail = session.trail
    return replace(
        session,
        picked=session.latents[i],
        choices=choices,
        trail=trail,
        history=[*session.history, f"pick {label}"],
    )


def next_step(session: StudioSession) -> str:
    """The refine step that follows the grid shown: palette after the seeds, then details,
    then pose (and pose again)."""
    from avatarforge.generate.variations import REFINE_STEPS

    return REFINE_STEPS[min(session.step, len(REFINE_STEPS) - 1)]


def refine(
    state: Any,
    session: StudioSession,
    strength: float = 0.3,
    n: int = GRID_SIZE,
    step: str | None = None,
    sliders: Mapping[str, float] | None = None,
    attrs: Mapping[str, str] | None = None,
) -> tuple[StudioSession, list[np.ndarray]]:
    """One refine step: ``n`` variations of the current pick; the grid becomes them.

    ``step``: ``"palette"`` (colours), ``"details"``, ``"pose"`` (pose and expression; see
    :func:`~avatarforge.generate.variations.refine_step`), ``"all"`` (everything: the plain
    :func:`~avatarforge.generate.variations`), or ``None``: the next one (:func:`next_step`).
    The variations start from the *finished* pick (:func:`finished_latent`: ``attrs`` and
    ``sliders`` applied, so the grid keeps them; the sliders are then part of the pick and
    go back to 0); chosen ``attrs`` stay pinned. The first cell is the pick itself, so
    picking it again keeps it. ``strength``: 0 = the pick, 1 = that aspect drawn afresh;
    0.2-0.4 refines. :func:`undo` goes back to the grid and pick before this step.
    """
    from avatarforge.generate import variations
    from avatarforge.generate.pipeline import Latent
    from avatarforge.generate.variations import REFINE_STEPS, refine_step

    if session.picked is None:
        raise StudioError("pick an avatar first (click one in the grid), then refine it")
    if not 0.0 < float(strength) <= 1.0:
        raise StudioError(f"strength must be in (0, 1] (0.3 is a good start), got {strength}")
    if not 2 <= int(n) <= _max_n(state):
        raise StudioError(f"n must be from 2 to {_max_n(state)}, got {n}")
    step = step or next_step(session)
    if step not in (*REFINE_STEPS, "all"):
        raise StudioError(f"step must be one of {', '.join(REFINE_STEPS)} or all, got {step!r}")
    pinned = _attrs(state, attrs)
    source = finished_latent(state, session, sliders, pinned)
    rnd = session.round + 1
    with _locked(state):
        source = state.pipe.map(source)
        if step == "all":
            var = variations(state.pipe, source, n=int(n) - 1, strength=float(strength), seed=rnd, rgba=True)
        else:
            var = refine_step(
                state.pipe, source, step, int(n) - 1, float(strength), seed=rnd, keep=list(pinned), rgba=True
            )
    latents = Latent.cat([source, var.latent])
    images = np.concatenate([_rgba(state, source), var.images])
    snapshot = {
        "latents": session.latents,
        "images": session.images,
        "seeds": session.seeds,
        "picked": session.picked,
        "step": session.step,
        "choices": [list(c) for c in session.choices],
        "sliders": {k: float(v) for k, v in (sliders or {}).items()},
        "attrs": dict(pinned),
    }
    new = replace(
        session,
        latents=latents,
        images=images,
        seeds=None,
        picked=source,
        round=rnd,
        step=1 + REFINE_STEPS.index(step) if step != "all" else max(session.step, 1),
        choices=[*[list(c) for c in session.choices], [step, "cell 0"]],
        trail=[*session.trail, snapshot],
        history=[*session.history, f"refine {step} strength={float(strength):g}"],
    )
    return new, list(images)


def undo(state: Any, session: StudioSession) -> tuple[StudioSession, dict[str, Any]]:
    """Back to the previous step: the grid and the pick (with its choices) as they were before
    the last refine. Returns the session and the controls of that moment (``{"sliders":
    {...}, "attrs": {...}}``: the sliders were part of the refined pick, so they come back).

    Raises:
        StudioError: nothing to undo (no refine step since the last pick from seeds).
    """
    if not session.trail:
        raise StudioError("nothing to undo: refine the pick first (undo goes back one refine step)")
    snap = session.trail[-1]
    images = snap.get("images")
    if images is None and snap.get("latents") is not None:
        images = _rgba(state, snap["latents"])  # a session restored from disk keeps latents only
    undone = session.choices[-1][0] if session.choices else "step"
    new = replace(
        session,
        latents=snap["latents"],
        images=images,
        seeds=snap["seeds"],
        picked=snap["picked"],
        step=int(snap["step"]),
        choices=[list(c) for c in snap["choices"]],
        trail=session.trail[:-1],
        history=[*session.history, f"undo {undone}"],
    )
    return new, {"sliders": dict(snap.get("sliders") or {}), "attrs": dict(snap.get("attrs") or {})}


def finished_latent(
    state: Any,
    session: StudioSession,
    sliders: Mapping[str, float] | None = None,
    attrs: Mapping[str, str] | None = None,
) -> Any:
    """The pick's latent with the attribute dropdowns and latent sliders applied.

    ``attrs`` (``{"hair_color": "pink"}``) moves a conditional model's pick to those classes,
    all together (:func:`~avatarforge.generate.directions.move_to_classes`: exactly the class,
    the rest of the avatar kept); ``"(random)"`` or a missing attribute leaves it as generated.
    ``sliders`` are ``{direction id: amount}`` of the server's directions, applied after.
    """
    from avatarforge.generate import apply_direction
    from avatarforge.generate.directions import move_to_classes

    if session.picked is None:
        raise StudioError("pick an avatar first (click one in the grid)")
    dirs = getattr(state, "directions", {})
    chosen = _attrs(state, attrs)
    moves = [(k, float(v)) for k, v in (sliders or {}).items() if v]
    for did, _ in moves:
        if did not in dirs:
            raise StudioError(f"unknown slider {did!r}; sliders: {', '.join(dirs) or 'none'}")
    latent = session.picked
    with _locked(state):
        latent = move_to_classes(state.pipe, latent, chosen)
        for did, amount in moves:
            latent = apply_direction(state.pipe, latent, dirs[did], amount)
    return latent


def edit_picked(
    state: Any,
    session: StudioSession,
    sliders: Mapping[str, float] | None = None,
    attrs: Mapping[str, str] | None = None,
) -> np.ndarray:
    """The pick rendered with latent slider amounts ``{direction id: amount}`` (RGBA uint8).

    ``attrs`` (``{"hair_color": "pink"}``) moves a conditional model's pick to those classes
    (see :func:`finished_latent`).
    """
    return _rgba(state, finished_latent(state, session, sliders, attrs))[0]


# =============================================================================== style and post
def add_post_op(chain: str, op: str, params: str = "") -> str:
    """Append ``op`` (with ``params`` text such as ``"factor=1.2"``) to chain text, validated.

    Raises:
        StudioError: unknown op or parameter, value out of range (the post-processing
            parser's message, which names the op, parameter and range).
    """
    from avatarforge.postprocess.chain import Chain

    if not op:
        raise StudioError("choose an operation to add")
    item = f"{op}({params.strip()})" if params.strip() else op
    text = f"{chain.strip()}, {item}" if chain.strip() else item
    try:
        return str(Chain.parse(text))
    except ValueError as e:
        raise StudioError(str(e)) from None


def apply_finish(
    state: Any,
    image: np.ndarray,
    style_method: str = "none",
    style_reference: np.ndarray | int | None = None,
    style_strength: float = 1.0,
    chain: str = "",
) -> np.ndarray:
    """Style (towards a reference image, or the generator's avatar of a seed) then the post chain.

    Both keep the alpha channel (the style functions and every colour/detail op return it
    unchanged; see docs/postprocess.md). The chain is held to the server's post-processing
    limits (``max_output_side``, ``max_chain_pixels``, ``max_chain_ops``), checked before it runs.
    """
    from avatarforge.postprocess.chain import Chain

    out = np.asarray(image)
    if style_method not in STYLE_METHODS:
        raise StudioError(f"style method must be one of {', '.join(STYLE_METHODS)}, got {style_method!r}")
    if style_method != "none":
        if style_reference is None or (isinstance(style_reference, str) and not style_reference.strip()):
            raise StudioError("style needs a reference: a seed of the generator or an uploaded image")
        if isinstance(style_reference, (int, float, str)):
            try:
                ref_seed = int(style_reference)
            except ValueError:
                raise StudioError(
                    f"style reference seed must be a whole number, got {style_reference!r}"
                ) from None
            with _locked(state):
                ref = state.pipe(seeds=[ref_seed], rgba=True).images[0]
        else:
            ref = np.asarray(style_reference)
        if not 0.0 <= float(style_strength) <= 1.0:
            raise StudioError(f"style strength must be from 0 to 1, got {style_strength}")
        from avatarforge import style as S

        fn = S.colour_transfer if style_method == "colour_transfer" else S.histogram_match
        try:
            out = fn(out, ref, strength=float(style_strength))
        except ValueError as e:
            raise StudioError(f"style: {e}") from None
    if chain and chain.strip():
        settings = getattr(state, "settings", None)
        limits = None
        if hasattr(settings, "max_output_side"):
            from avatarforge.serve.routes import chain_limits

            limits = chain_limits(settings)  # the API's limits: planned before any work
        try:
            out = Chain.parse(chain).apply(out, limits=limits)
        except ValueError as e:
            raise StudioError(f"post-processing: {e}") from None
    return out


# =============================================================================== expression and export
class _PreparedCache:
    """The animator's prepared state of the last image (preparing is the expensive half)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[int, str] | None = None
        self._state: Any = None

    def get(self, animator: Any, image: np.ndarray, state: Any) -> Any:
        key = (id(animator), hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest())
        with self._lock:
            if self._key == key:
                return self._state
        with _locked(state):
            prepared = animator.prepare(image)
        with self._lock:
            self._key, self._state = key, prepared
        return prepared


_PREPARED = _PreparedCache()


def expression_preview(state: Any, image: np.ndarray, controls: Mapping[str, float]) -> np.ndarray:
    """``image`` re-rendered by the server's animator with ``controls`` (RGBA at the animator's size).

    Raises:
        StudioError: no animator is loaded (the message says how to load one).
    """
    from avatarforge.animate.drivers import clamp_controls

    anim = getattr(state, "animator", None)
    if anim is None:
        raise StudioError("no animator loaded: start the server with --animator ANIMATOR_RUN for the preview")
    try:
        ctl = clamp_controls({k: float(v) for k, v in controls.items()})
    except ValueError as e:
        raise StudioError(str(e)) from None
    prepared = _PREPARED.get(anim, np.asarray(image), state)
    with _locked(state):
        return anim.render_image(prepared, ctl)


def export_image(
    state: Any,
    image: np.ndarray,
    directory: str | os.PathLike,
    session: StudioSession | None = None,
    settings: Mapping[str, Any] | None = None,
    latent: Any = None,
    fmt: str = "png",
    size: int | None = None,
) -> Path:
    """Write ``image`` as an RGBA PNG or lossless WebP (atomically) with its record; returns the path.

    The record (PNG ``iTXt`` chunk / WebP XMP ``avatarforge``, see docs/generation.md) has
    ``kind: "studio"``, the model (and refiner), ``rgba: true``, ``size`` (when not the
    generator's resolution), the ``studio`` settings (attributes, sliders, style, chain,
    size, format), the pick history, each step's choice (``steps``) and a latent:
    ``latent`` (the finished one, :func:`finished_latent`: attributes and sliders applied;
    its ``attrs`` are the classes shown) or else the pick's. ``avatarforge generate
    --from-png`` renders the avatar before style and post-processing from it;
    :func:`regenerate_download` makes the whole download again.
    """
    from avatarforge import __version__
    from avatarforge.generate.metadata import save_with_metadata

    fmt = str(fmt).lower()
    if fmt not in DOWNLOAD_FORMATS:
        raise StudioError(f"format must be one of {', '.join(DOWNLOAD_FORMATS)}, got {fmt!r}")
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
        raise StudioError(f"nothing to download yet (image {arr.dtype} {arr.shape})")
    if arr.shape[2] == 3:
        arr = np.concatenate([arr, np.full((*arr.shape[:2], 1), 255, np.uint8)], axis=2)
    record: dict[str, Any] = {
        "avatarforge_version": __version__,
        **state.pipe.record_params("studio", rgba=True, noise_mode="const"),
        "studio": dict(settings or {}),
    }
    if size is not None and int(size) != state.pipe.resolution:
        record["size"] = int(size)
    if session is not None and session.picked is not None:
        record["history"] = list(session.history)
        record["steps"] = [{"step": s, "choice": c} for s, c in session.choices]
        record["picked_latent"] = session.picked.to_json()
        if latent is None:
            latent = session.picked
    if latent is not None:
        record.update(state.pipe.describe(latent[0]))  # "attrs": the classes shown, codes
        record["latent"] = latent[0].to_json()
    digest = hashlib.sha1(arr.tobytes()).hexdigest()[:10]
    return save_with_metadata(Path(directory) / f"avatar-{digest}.{fmt}", arr, record)


def export_png(
    state: Any,
    image: np.ndarray,
    directory: str | os.PathLike,
    session: StudioSession | None = None,
    settings: Mapping[str, Any] | None = None,
    latent: Any = None,
) -> Path:
    """:func:`export_image` as PNG at the image's own size."""
    return export_image(state, image, directory, session, settings, latent)


def render_finished(
    state: Any,
    latent: Any,
    settings: Mapping[str, Any],
    size: int | None = None,
    style_upload: np.ndarray | None = None,
) -> np.ndarray:
    """The finished avatar of ``latent`` at ``size`` (one of ``pipe.sizes``): rendered, then
    the ``settings``' style and chain (:func:`apply_finish`). RGBA uint8."""
    try:
        size = state.pipe.check_size(None if size is None else int(size))
    except ValueError as e:
        raise StudioError(str(e)) from None
    with _locked(state):
        base = state.pipe.render(latent, rgba=True, size=size)[0]
    method = settings.get("style", "none") or "none"
    ref: Any = None
    if method != "none":
        ref = style_upload if settings.get("style_reference") == "upload" else settings.get("style_reference")
        if isinstance(ref, (int, float)) and size != state.pipe.resolution:
            with _locked(state):
                ref = state.pipe(seeds=[int(ref)], rgba=True, size=size).images[0]
    return apply_finish(
        state,
        base,
        method,
        ref,
        float(settings.get("style_strength", 1.0)),
        str(settings.get("chain") or ""),
    )


def regenerate_download(state: Any, record: Mapping[str, Any]) -> np.ndarray:
    """A studio download made again from its record (the latent, size, style and chain).

    Exact for everything but a style towards an uploaded image (the upload is not stored).

    Raises:
        StudioError: not a studio record, another model, or an uploaded style reference.
    """
    from avatarforge.generate.pipeline import Latent

    if record.get("kind") != "studio" or "latent" not in record:
        raise StudioError("not a studio download (its record has no kind 'studio' and latent)")
    want = (record.get("model") or {}).get("sha256")
    if want and want != state.pipe.model_sha256:
        raise StudioError("the download was made by another model; load that model to make it again")
    settings = dict(record.get("studio") or {})
    if settings.get("style_reference") == "upload":
        raise StudioError("the download was styled towards an uploaded image, which is not stored")
    latent = state.pipe.map(Latent.from_json(record["latent"]))
    return render_finished(state, latent, settings, record.get("size"))


# =============================================================================== persistence
def session_to_json(state: Any, session: StudioSession) -> dict[str, Any]:
    """The session as JSON (latents as tokens, :mod:`avatarforge.serve.latents`; no images)."""
    from avatarforge.serve.latents import encode_latent

    sha = state.pipe.model_sha256

    def one(lat: Any) -> str | None:
        return None if lat is None else encode_latent(lat[0], sha)

    def many(lat: Any) -> list[str] | None:
        return None if lat is None else [encode_latent(lat[i], sha) for i in range(len(lat))]

    return {
        "picked": one(session.picked),
        "latents": many(session.latents),
        "seeds": session.seeds,
        "round": session.round,
        "step": session.step,
        "history": list(session.history)[-200:],
        "choices": [list(c) for c in session.choices],
        "trail": [
            {
                "latents": many(t["latents"]),
                "seeds": t["seeds"],
                "picked": one(t["picked"]),
                "step": t["step"],
                "choices": t["choices"],
                "sliders": t.get("sliders", {}),
                "attrs": t.get("attrs", {}),
            }
            for t in session.trail
        ],
    }


def session_from_json(state: Any, doc: Mapping[str, Any]) -> StudioSession:
    """A session written by :func:`session_to_json`, checked against this model; the grid is
    rendered again (trail grids when undo reaches them).

    Raises:
        StudioError: a malformed record, or latents of another model.
    """
    from avatarforge.generate.pipeline import Latent
    from avatarforge.serve.latents import decode_latent

    def one(tok: Any) -> Any:
        return None if tok is None else state.pipe.map(decode_latent(tok, state.pipe))

    def many(toks: Any) -> Any:
        if toks is None:
            return None
        if not isinstance(toks, list) or not toks or len(toks) > _max_n(state):
            raise StudioError("the kept grid is malformed")
        return Latent.cat([one(t) for t in toks])

    try:
        latents = many(doc.get("latents"))
        trail = [
            {
                "latents": many(t.get("latents")),
                "images": None,
                "seeds": t.get("seeds"),
                "picked": one(t.get("picked")),
                "step": int(t.get("step", 0)),
                "choices": [[str(a), str(b)] for a, b in t.get("choices", [])],
                "sliders": {str(k): float(v) for k, v in (t.get("sliders") or {}).items()},
                "attrs": {str(k): str(v) for k, v in (t.get("attrs") or {}).items()},
            }
            for t in doc.get("trail", [])
        ]
        seeds = doc.get("seeds")
        return StudioSession(
            latents=latents,
            images=_rgba(state, latents) if latents is not None else None,
            seeds=[int(x) for x in seeds] if seeds is not None else None,
            picked=one(doc.get("picked")),
            round=int(doc.get("round", 0)),
            history=[str(h) for h in doc.get("history", [])],
            step=int(doc.get("step", 0)),
            choices=[[str(a), str(b)] for a, b in doc.get("choices", [])],
            trail=trail,
        )
    except StudioError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise StudioError(f"the kept studio session cannot be used: {e}") from None


def save_session(
    state: Any, session: StudioSession, controls: Mapping[str, Any] | None = None
) -> Path | None:
    """Keep the session (and the controls: attributes, sliders, style, chain, size, format)
    under the serve state directory; ``None`` when the server keeps nothing. ``controls``
    ``None`` keeps the controls saved last."""
    from avatarforge.serve.persist import store_for

    store = store_for(state)
    if store is None:
        return None
    if controls is None:
        controls = (store.load_studio() or {}).get("controls", {})
    try:
        return store.save_studio({"session": session_to_json(state, session), "controls": dict(controls)})
    except OSError as e:  # a full disk must not break the studio
        import logging

        logging.getLogger(__name__).warning("could not keep the studio's state: %s", e)
        return None


def load_session(state: Any) -> tuple[StudioSession, dict[str, Any]] | None:
    """The kept session and controls (:func:`save_session`), or ``None`` (nothing kept, or
    unusable: logged)."""
    from avatarforge.serve.persist import store_for

    store = store_for(state)
    rec = store.load_studio() if store is not None else None
    if not rec or not isinstance(rec.get("session"), dict):
        return None
    try:
        return session_from_json(state, rec["session"]), dict(rec.get("controls") or {})
    except StudioError as e:
        import logging

        logging.getLogger(__name__).warning("ignoring the studio's kept state: %s", e)
        return None


# =============================================================================== Gradio
#: Finished images kept in the studio's download folder (older ones are deleted).
KEEP_DOWNLOADS = 200


def _prune(directory: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest PNGs (every finish writes one; a session makes many)."""
    files = sorted(directory.glob("avatar-*.png"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        with contextlib.suppress(OSError):
            old.unlink()


def build_studio(state: Any, hub: Any = None, download_dir: str | os.PathLike | None = None) -> Any:
    """The studio as a ``gr.Blocks`` (see the module docstring); ``hub`` = the overlay hub."""
    import gradio as gr

    from avatarforge.generate.variations import REFINE_STEPS
    from avatarforge.models.animator import CONTROL_NAMES, CONTROL_RANGES, NEUTRAL_CONTROLS
    from avatarforge.postprocess.registry import get_op, list_ops
    from avatarforge.serve.routes import add_latent_sliders

    add_latent_sliders(state)  # SeFa sliders for every generator family (no-op when present)
    choices = attribute_choices(state)
    sliders = slider_directions(state)
    sizes = [int(x) for x in getattr(state.pipe, "sizes", [state.pipe.resolution])]
    if download_dir is None:
        # Finished images are served from here; remove the folder when the server exits.
        download_dir = tempfile.mkdtemp(prefix="avatarforge-studio-")
        atexit.register(shutil.rmtree, download_dir, True)
    out_dir = Path(download_dir)
    has_anim = getattr(state, "animator", None) is not None
    step_label = {"palette": "colour palette", "details": "details", "pose": "pose and expression"}

    def err(e: Exception) -> Exception:
        return gr.Error(str(e)) if isinstance(e, StudioError) else e

    def rgba_view(label: str, elem_id: str) -> Any:
        """A read-only RGBA image (sent as PNG, so its alpha survives)."""
        return gr.Image(
            label=label,
            type="numpy",
            image_mode="RGBA",
            format="png",
            interactive=False,
            height=280,
            elem_id=elem_id,
        )

    with gr.Blocks(title="AvatarForge studio", analytics_enabled=False) as demo:
        session = gr.State(StudioSession())
        final = gr.State(None)  # the finished RGBA image (numpy)
        gr.Markdown(
            "## AvatarForge studio\nGenerate 16 and click one to pick it; refine it step by step "
            "(colour palette, details, pose and expression: click the best of each, *Undo* goes back "
            "a step); adjust it on the right; download it."
        )
        with gr.Row():
            seed = gr.Number(value=0, precision=0, minimum=0, label="first seed", elem_id="seed")
            truncation = gr.Slider(0.0, 1.0, value=0.8, step=0.05, label="truncation (lower = more typical)")
            attr_boxes = [
                gr.Dropdown([RANDOM, *vals], value=RANDOM, label=name, elem_id=f"attr-{name}")
                for name, vals in choices.items()
            ]
        with gr.Row():
            gen_btn = gr.Button("Generate 16", variant="primary", elem_id="generate")
            new_btn = gr.Button("New batch", elem_id="new-batch")
            step_box = gr.Radio(
                [(step_label[s], s) for s in REFINE_STEPS],
                value=REFINE_STEPS[0],
                label="refine step (moves on by itself)",
                elem_id="step",
            )
            strength = gr.Slider(0.05, 1.0, value=0.3, step=0.05, label="refine strength", elem_id="strength")
            refine_btn = gr.Button("Refine the pick", elem_id="refine")
            undo_btn = gr.Button("Undo step", elem_id="undo")
        grid = gr.Gallery(
            label="click an avatar to pick it",
            columns=8,
            rows=2,
            height=330,
            format="png",
            object_fit="contain",
            allow_preview=False,
            elem_id="grid",
        )
        status = gr.Markdown("", elem_id="status")
        with gr.Row():
            with gr.Column(scale=1):
                picked_img = rgba_view("your avatar", "picked")
                with gr.Row():
                    size_box = gr.Dropdown(sizes, value=sizes[-1], label="download size (px)", elem_id="size")
                    fmt_box = gr.Radio(
                        [("PNG", "png"), ("WebP", "webp")], value="png", label="format", elem_id="format"
                    )
                download = gr.DownloadButton("Download (with alpha)", elem_id="download", interactive=False)
                send_btn = gr.Button("Send to overlay", elem_id="send-overlay", interactive=hub is not None)
                gr.HTML(
                    '<a id="open-3d" href="../view3d?avatar=studio" target="_blank">3D view (VRM) of the avatar '
                    "sent to the overlay</a> (with an API key, add <code>&amp;key=KEY</code>)"
                )
            with gr.Column(scale=2):
                with gr.Accordion("latent sliders", open=bool(sliders)):
                    slider_boxes = [
                        gr.Slider(
                            float(d.range[0]),
                            float(d.range[1]),
                            value=0.0,
                            step=0.05,
                            label=d.name or d.id,
                            elem_id=f"slider-{i}",
                        )
                        for i, d in enumerate(sliders)
                    ]
                    if not sliders:
                        gr.Markdown("This model has no latent sliders.")
                with gr.Accordion("style and post-processing", open=False):
                    with gr.Row():
                        style_method = gr.Dropdown(list(STYLE_METHODS), value="none", label="style")
                        style_seed = gr.Number(value=1, precision=0, label="reference: generator seed")
                        style_strength = gr.Slider(0.0, 1.0, value=1.0, step=0.05, label="style strength")
                    style_upload = gr.Image(
                        label="or a reference image", type="numpy", image_mode="RGBA", sources=["upload"]
                    )
                    with gr.Row():
                        op_name = gr.Dropdown(list_ops(), value="saturation", label="operation")
                        op_params = gr.Textbox(value="factor=1.2", label="parameters (name=value, ...)")
                        add_btn = gr.Button("Add to chain")
                    op_help = gr.Markdown(get_op("saturation").signature())
                    chain = gr.Textbox(value="", label="post-processing chain", elem_id="chain")
                    apply_btn = gr.Button("Apply style and chain", elem_id="apply")
                with gr.Accordion("expression preview", open=has_anim):
                    if not has_anim:
                        gr.Markdown(
                            "No animator loaded: start the server with `--animator RUN` for the preview."
                        )
                    ctl_boxes = [
                        gr.Slider(
                            float(CONTROL_RANGES[n][0]),
                            float(CONTROL_RANGES[n][1]),
                            value=float(NEUTRAL_CONTROLS[n]),
                            step=0.05,
                            label=n,
                            interactive=has_anim,
                            elem_id=f"ctl-{n}",
                        )
                        for n in CONTROL_NAMES
                    ]
                    expr_img = rgba_view("expression", "expression")

        # ---------------------------------------------------------------- callbacks
        def attrs_of(values: Sequence[Any]) -> dict[str, str]:
            return {name: v for name, v in zip(choices, values)}

        def amounts_of(values: Sequence[Any]) -> dict[str, float]:
            return {d.id: float(v or 0.0) for d, v in zip(sliders, values)}

        def steps_text(sess: StudioSession) -> str:
            return " → ".join(f"{s}: {c}" for s, c in sess.choices)

        def do_generate(sess: StudioSession, s: float, psi: float, *attr_vals: Any) -> tuple[Any, ...]:
            try:
                sess, images = generate_grid(state, sess, int(s or 0), GRID_SIZE, psi, attrs_of(attr_vals))
            except StudioError as e:
                raise err(e) from None
            save_session(state, sess)
            return sess, images, f"seeds {sess.seeds[0]}-{sess.seeds[-1]}: click one to pick it"

        def do_new_batch(sess: StudioSession, s: float, psi: float, *attr_vals: Any) -> tuple[Any, ...]:
            nxt = int(s or 0) + GRID_SIZE
            return (*do_generate(sess, nxt, psi, *attr_vals), nxt)

        def finish(sess: StudioSession, *vals: Any) -> tuple[Any, ...]:
            k = len(sliders)
            amounts = amounts_of(vals[:k])
            method, ref_seed, ref_img, s_strength, chain_text, size, fmt = vals[k : k + 7]
            attrs = attrs_of(vals[k + 7 :])
            if sess.picked is None:
                return None, None, gr.DownloadButton(interactive=False)
            settings = {
                "attrs": {a: v for a, v in attrs.items() if v not in (None, "", RANDOM)},
                "sliders": amounts,
                "style": method,
                "style_strength": float(s_strength),
                "chain": chain_text or "",
                "size": int(size or state.pipe.resolution),
                "format": str(fmt or "png"),
            }
            if method != "none":
                settings["style_reference"] = "upload" if ref_img is not None else int(ref_seed or 0)
            try:
                latent = finished_latent(state, sess, amounts, attrs)
                upload = None if ref_img is None else np.asarray(ref_img)
                img = render_finished(state, latent, settings, None, upload)
                out = img
                if settings["size"] != state.pipe.resolution:
                    out = render_finished(state, latent, settings, settings["size"], upload)
                path = export_image(
                    state, out, out_dir, sess, settings, latent, settings["format"], settings["size"]
                )
                _prune(out_dir, keep=KEEP_DOWNLOADS)
            except StudioError as e:
                raise err(e) from None
            save_session(state, sess, {**settings, "style_seed": int(ref_seed or 0)})
            return img, img, gr.DownloadButton(value=str(path), interactive=True)

        finish_inputs = [
            session,
            *slider_boxes,
            style_method,
            style_seed,
            style_upload,
            style_strength,
            chain,
            size_box,
            fmt_box,
            *attr_boxes,  # a conditional model's pick takes the chosen classes
        ]
        finish_outputs = [final, picked_img, download]

        def do_pick(sess: StudioSession, evt: gr.SelectData) -> tuple[Any, ...]:
            try:
                sess = pick(sess, evt.index)
            except StudioError as e:
                raise err(e) from None
            what = sess.history[-1].removeprefix("pick ")
            hint = (
                "refine it, or finish it on the right" if sess.step == 0 else "refine on, undo, or finish it"
            )
            return sess, f"picked {what}: {hint} ({steps_text(sess)})"

        # Gradio finds the event-data parameter by its annotation object; this module's
        # annotations are strings (``from __future__ import annotations``).
        do_pick.__annotations__["evt"] = gr.SelectData

        def do_refine(sess: StudioSession, st: float, step: str, *vals: Any) -> tuple[Any, ...]:
            k = len(sliders)
            try:
                sess, images = refine(
                    state, sess, st, step=step, sliders=amounts_of(vals[:k]), attrs=attrs_of(vals[k:])
                )
            except StudioError as e:
                raise err(e) from None
            done = sess.choices[-1][0]
            return (
                sess,
                images,
                f"round {sess.round}, {step_label.get(done, done)}: the first cell is your pick; "
                f"click the one you like best ({steps_text(sess)})",
                next_step(sess),
                *[0.0 for _ in sliders],  # the sliders are part of the refined pick now
            )

        def do_undo(sess: StudioSession, *attr_vals: Any) -> tuple[Any, ...]:
            try:
                sess, controls = undo(state, sess)
            except StudioError as e:
                raise err(e) from None
            back = [float(controls["sliders"].get(d.id, 0.0)) for d in sliders]
            where = f"back to {steps_text(sess)}" if sess.choices else "back to the grid"
            grid_images = list(sess.images) if sess.images is not None else []
            return (sess, grid_images, f"undone: {where}", next_step(sess), *back)

        def do_restore(sess: StudioSession) -> tuple[Any, ...]:
            kept = load_session(state) if sess.picked is None and sess.latents is None else None
            n_out = 13 + len(sliders) + len(attr_boxes)
            if kept is None:
                return tuple(gr.update() for _ in range(n_out))
            sess, c = kept
            grid_images = list(sess.images) if sess.images is not None else []
            vals = [float((c.get("sliders") or {}).get(d.id, 0.0)) for d in sliders]
            chosen = [(c.get("attrs") or {}).get(name, RANDOM) for name in choices]
            size = int(c.get("size") or sizes[-1])
            size = size if size in sizes else sizes[-1]
            # an uploaded style reference is not kept: its style is not restored
            method = "none" if c.get("style_reference") == "upload" else c.get("style", "none")
            ref_seed, s_strength = int(c.get("style_seed", 1)), float(c.get("style_strength", 1.0))
            chain_text, fmt = str(c.get("chain", "")), str(c.get("format", "png"))
            # the finished avatar in the same event (a download value set by a load event's
            # follow-up is not picked up by Gradio's download button)
            outs = finish(sess, *vals, method, ref_seed, None, s_strength, chain_text, size, fmt, *chosen)
            return (
                sess,
                grid_images,
                "restored your last session" + (f" ({steps_text(sess)})" if sess.choices else ""),
                next_step(sess),
                chain_text,
                method,
                ref_seed,
                s_strength,
                size,
                fmt,
                *vals,
                *chosen,
                *outs,
            )

        def do_expr(img: Any, *vals: Any) -> Any:
            if img is None or not has_anim:
                return None
            try:
                return expression_preview(state, img, dict(zip(CONTROL_NAMES, vals)))
            except StudioError as e:
                raise err(e) from None

        def do_add(chain_text: str, op: str, params: str) -> str:
            try:
                return add_post_op(chain_text or "", op, params or "")
            except StudioError as e:
                raise err(e) from None

        def do_send(img: Any) -> str:
            if img is None:
                raise gr.Error("pick an avatar first")
            hub.set_avatar("studio", np.asarray(img))
            return "sent to the overlay: /overlay?avatar=studio shows it now"

        def finished() -> Any:
            return {"fn": finish, "inputs": finish_inputs, "outputs": finish_outputs}

        gen_inputs = [session, seed, truncation, *attr_boxes]
        gen_btn.click(do_generate, gen_inputs, [session, grid, status])
        new_btn.click(do_new_batch, gen_inputs, [session, grid, status, seed])
        grid.select(do_pick, [session], [session, status]).then(**finished()).then(
            do_expr, [final, *ctl_boxes], [expr_img]
        )
        refine_btn.click(
            do_refine,
            [session, strength, step_box, *slider_boxes, *attr_boxes],
            [session, grid, status, step_box, *slider_boxes],
        ).then(**finished()).then(do_expr, [final, *ctl_boxes], [expr_img])
        undo_btn.click(do_undo, [session], [session, grid, status, step_box, *slider_boxes]).then(
            **finished()
        ).then(do_expr, [final, *ctl_boxes], [expr_img])
        for box in slider_boxes:
            box.release(**finished()).then(do_expr, [final, *ctl_boxes], [expr_img])
        for box in attr_boxes:  # a conditional model's pick takes the chosen class
            box.input(**finished()).then(do_expr, [final, *ctl_boxes], [expr_img])
        for box in (size_box, fmt_box):
            box.input(**finished())
        apply_btn.click(**finished()).then(do_expr, [final, *ctl_boxes], [expr_img])
        add_btn.click(do_add, [chain, op_name, op_params], [chain])
        op_name.change(lambda op: get_op(op).signature(), [op_name], [op_help])
        for box in ctl_boxes:
            # always_last: a dragged slider fires many changes; render only the latest one
            box.change(
                do_expr, [final, *ctl_boxes], [expr_img], show_progress="hidden", trigger_mode="always_last"
            )
        if hub is not None:
            send_btn.click(do_send, [final], [status])
        # a new page shows the last session kept under the serve state directory
        demo.load(
            do_restore,
            [session],
            [
                session,
                grid,
                status,
                step_box,
                chain,
                style_method,
                style_seed,
                style_strength,
                size_box,
                fmt_box,
                *slider_boxes,
                *attr_boxes,
                *finish_outputs,
            ],
        ).then(do_expr, [final, *ctl_boxes], [expr_img])
    return demo


def mount_studio(app: Any, state: Any, path: str = "/studio") -> Any:
    """Mount the studio on ``app`` at ``path`` (``gr.mount_gradio_app``); returns the app.

    With an API key configured, Gradio's login page asks for it: any user name, the key as
    the password (a browser cannot add an ``X-API-Key`` header to a page it navigates to).
    The overlay hub (``app.state.overlay_hub``, from :func:`~avatarforge.serve.overlay.mount_overlay`)
    receives "send to overlay"; with a serve state directory (``settings.state_dir``) it shows
    the avatar kept from the last run and keeps new ones (:func:`avatarforge.serve.persist.attach_overlay`).
    """
    import gradio as gr

    hub = getattr(app.state, "overlay_hub", None)
    key = getattr(getattr(state, "settings", None), "api_key", None)
    auth = None
    if key is not None:
        import hmac

        def auth(username: str, password: str) -> bool:
            return hmac.compare_digest(str(password).encode("utf-8"), str(key).encode("utf-8"))

    if hub is not None:
        from avatarforge.serve.persist import attach_overlay

        attach_overlay(hub, state)  # the overlay shows the kept studio avatar, and keeps new ones
    demo = build_studio(state, hub=hub)
    return gr.mount_gradio_app(
        app,
        demo,
        path=path,
        auth=auth,
        auth_message="Enter the server's API key as the password (any user name)." if auth else None,
        footer_links=[],
        ssr_mode=False,
        css_paths=[STUDIO_CSS_FILE],
    )
