"""The web studio: a Gradio app mounted on the server at ``/studio`` (extra ``[ui]``).

Pick and refine: generate a grid of 16 (seed box, "new batch"), click one to pick it,
"refine" shows 16 variations around the pick (strength slider), repeat. Then attribute
dropdowns (the model's label values), latent sliders (the server's directions), style
(colour transfer / histogram matching towards a reference avatar or an uploaded image)
and a post-processing chain, a live expression preview through the animator, "send to
overlay", and a download of the exact RGBA PNG (with its generation record).

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
    "export_png",
    "expression_preview",
    "finished_latent",
    "generate_grid",
    "mount_studio",
    "pick",
    "refine",
    "slider_directions",
]

#: Images per grid (generate and refine).
GRID_SIZE = 16
#: Style methods offered (the weight-free ones: instant on a CPU, no downloads).
STYLE_METHODS = ("none", "colour_transfer", "histogram_match")
#: Dropdown value meaning "random per seed".
RANDOM = "(random)"
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
        history: what happened (``"generate 0-15"``, ``"pick 3"``, ``"refine 0.3"``), for the record.
    """

    latents: Any = None
    images: np.ndarray | None = None
    seeds: list[int] | None = None
    picked: Any = None
    round: int = 0
    history: list[str] = field(default_factory=list)


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
    return replace(session, picked=session.latents[i], history=[*session.history, f"pick {label}"])


def refine(
    state: Any, session: StudioSession, strength: float = 0.3, n: int = GRID_SIZE
) -> tuple[StudioSession, list[np.ndarray]]:
    """``n`` variations around the pick (:func:`avatarforge.generate.variations`); the grid becomes them.

    The first cell is the pick itself, so picking it again keeps it. ``strength``: 0 = the
    pick, 1 = unrelated avatars with the same attributes; 0.2-0.4 refines.
    """
    from avatarforge.generate import variations

    if session.picked is None:
        raise StudioError("pick an avatar first (click one in the grid), then refine it")
    if not 0.0 < float(strength) <= 1.0:
        raise StudioError(f"strength must be in (0, 1] (0.3 is a good start), got {strength}")
    if not 2 <= int(n) <= _max_n(state):
        raise StudioError(f"n must be from 2 to {_max_n(state)}, got {n}")
    rnd = session.round + 1
    with _locked(state):
        var = variations(
            state.pipe, session.picked, n=int(n) - 1, strength=float(strength), seed=rnd, rgba=True
        )
    from avatarforge.generate.pipeline import Latent

    latents = Latent.cat([session.picked, var.latent])
    images = np.concatenate([_rgba(state, session.picked), var.images])
    new = replace(
        session,
        latents=latents,
        images=images,
        seeds=None,
        round=rnd,
        history=[*session.history, f"refine strength={float(strength):g}"],
    )
    return new, list(images)


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


def export_png(
    state: Any,
    image: np.ndarray,
    directory: str | os.PathLike,
    session: StudioSession | None = None,
    settings: Mapping[str, Any] | None = None,
    latent: Any = None,
) -> Path:
    """Write ``image`` as an RGBA PNG (atomically) with its record; returns the path.

    The record (``iTXt`` chunk ``avatarforge``, see docs/generation.md) has ``kind:
    "studio"``, the model, the ``settings`` (attributes, sliders, style, chain), the pick
    history and a latent: ``latent`` (the finished one, :func:`finished_latent`: attributes
    and sliders applied; its ``attrs`` are the classes shown) or else the pick's. ``avatarforge
    generate --from-png`` reproduces the avatar before style and post-processing from it.
    """
    from avatarforge import __version__
    from avatarforge.generate.metadata import save_with_metadata

    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
        raise StudioError(f"nothing to download yet (image {arr.dtype} {arr.shape})")
    if arr.shape[2] == 3:
        arr = np.concatenate([arr, np.full((*arr.shape[:2], 1), 255, np.uint8)], axis=2)
    record: dict[str, Any] = {
        "avatarforge_version": __version__,
        **state.pipe.record_params("studio"),
        "studio": dict(settings or {}),
    }
    if session is not None and session.picked is not None:
        record["history"] = list(session.history)
        record["picked_latent"] = session.picked.to_json()
        if latent is None:
            latent = session.picked
    if latent is not None:
        record.update(state.pipe.describe(latent[0]))  # "attrs": the classes shown, codes
        record["latent"] = latent[0].to_json()
    digest = hashlib.sha1(arr.tobytes()).hexdigest()[:10]
    return save_with_metadata(Path(directory) / f"avatar-{digest}.png", arr, record)


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

    from avatarforge.models.animator import CONTROL_NAMES, CONTROL_RANGES, NEUTRAL_CONTROLS
    from avatarforge.postprocess.registry import get_op, list_ops
    from avatarforge.serve.routes import add_latent_sliders

    add_latent_sliders(state)  # SeFa sliders for every generator family (no-op when present)
    choices = attribute_choices(state)
    sliders = slider_directions(state)
    if download_dir is None:
        # Finished images are served from here; remove the folder when the server exits.
        download_dir = tempfile.mkdtemp(prefix="avatarforge-studio-")
        atexit.register(shutil.rmtree, download_dir, True)
    out_dir = Path(download_dir)
    has_anim = getattr(state, "animator", None) is not None

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
            "## AvatarForge studio\nGenerate 16, click one to pick it, refine it, finish it, download it."
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
            strength = gr.Slider(0.05, 1.0, value=0.3, step=0.05, label="refine strength", elem_id="strength")
            refine_btn = gr.Button("Refine the pick", elem_id="refine")
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
                download = gr.DownloadButton(
                    "Download PNG (with alpha)", elem_id="download", interactive=False
                )
                send_btn = gr.Button("Send to overlay", elem_id="send-overlay", interactive=hub is not None)
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

        def do_generate(sess: StudioSession, s: float, psi: float, *attr_vals: Any) -> tuple[Any, ...]:
            try:
                sess, images = generate_grid(state, sess, int(s or 0), GRID_SIZE, psi, attrs_of(attr_vals))
            except StudioError as e:
                raise err(e) from None
            return sess, images, f"seeds {sess.seeds[0]}-{sess.seeds[-1]}: click one to pick it"

        def do_new_batch(sess: StudioSession, s: float, psi: float, *attr_vals: Any) -> tuple[Any, ...]:
            nxt = int(s or 0) + GRID_SIZE
            return (*do_generate(sess, nxt, psi, *attr_vals), nxt)

        def finish(sess: StudioSession, *vals: Any) -> tuple[Any, ...]:
            k = len(sliders)
            amounts = {d.id: float(v) for d, v in zip(sliders, vals[:k])}
            method, ref_seed, ref_img, s_strength, chain_text = vals[k : k + 5]
            attrs = attrs_of(vals[k + 5 :])
            if sess.picked is None:
                return None, None, gr.DownloadButton(interactive=False)
            try:
                latent = finished_latent(state, sess, amounts, attrs)
                base = _rgba(state, latent)[0]
                ref = ref_img if ref_img is not None else ref_seed
                img = apply_finish(state, base, method, ref, s_strength, chain_text or "")
                settings = {
                    "attrs": {k: v for k, v in attrs.items() if v not in (None, "", RANDOM)},
                    "sliders": amounts,
                    "style": method,
                    "style_strength": s_strength,
                    "chain": chain_text,
                }
                if method != "none":
                    settings["style_reference"] = "upload" if ref_img is not None else int(ref_seed)
                path = export_png(state, img, out_dir, sess, settings, latent)
                _prune(out_dir, keep=KEEP_DOWNLOADS)
            except StudioError as e:
                raise err(e) from None
            return img, img, gr.DownloadButton(value=str(path), interactive=True)

        finish_inputs = [
            session,
            *slider_boxes,
            style_method,
            style_seed,
            style_upload,
            style_strength,
            chain,
            *attr_boxes,  # a conditional model's pick takes the chosen classes
        ]
        finish_outputs = [final, picked_img, download]

        def do_pick(sess: StudioSession, evt: gr.SelectData) -> tuple[Any, ...]:
            try:
                sess = pick(sess, evt.index)
            except StudioError as e:
                raise err(e) from None
            return (
                sess,
                f"picked {sess.history[-1].removeprefix('pick ')}: refine it, or finish it on the right",
            )

        # Gradio finds the event-data parameter by its annotation object; this module's
        # annotations are strings (``from __future__ import annotations``).
        do_pick.__annotations__["evt"] = gr.SelectData

        def do_refine(sess: StudioSession, st: float) -> tuple[Any, ...]:
            try:
                sess, images = refine(state, sess, st)
            except StudioError as e:
                raise err(e) from None
            return (
                sess,
                images,
                f"round {sess.round}: the first cell is your pick; click the one you like best",
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

        gen_inputs = [session, seed, truncation, *attr_boxes]
        gen_btn.click(do_generate, gen_inputs, [session, grid, status])
        new_btn.click(do_new_batch, gen_inputs, [session, grid, status, seed])
        grid.select(do_pick, [session], [session, status]).then(finish, finish_inputs, finish_outputs).then(
            do_expr, [final, *ctl_boxes], [expr_img]
        )
        refine_btn.click(do_refine, [session, strength], [session, grid, status])
        for box in slider_boxes:
            box.release(finish, finish_inputs, finish_outputs).then(do_expr, [final, *ctl_boxes], [expr_img])
        for box in attr_boxes:  # a conditional model's pick takes the chosen class
            box.change(finish, finish_inputs, finish_outputs).then(do_expr, [final, *ctl_boxes], [expr_img])
        apply_btn.click(finish, finish_inputs, finish_outputs).then(do_expr, [final, *ctl_boxes], [expr_img])
        add_btn.click(do_add, [chain, op_name, op_params], [chain])
        op_name.change(lambda op: get_op(op).signature(), [op_name], [op_help])
        for box in ctl_boxes:
            # always_last: a dragged slider fires many changes; render only the latest one
            box.change(
                do_expr, [final, *ctl_boxes], [expr_img], show_progress="hidden", trigger_mode="always_last"
            )
        if hub is not None:
            send_btn.click(do_send, [final], [status])
    return demo


def mount_studio(app: Any, state: Any, path: str = "/studio") -> Any:
    """Mount the studio on ``app`` at ``path`` (``gr.mount_gradio_app``); returns the app.

    With an API key configured, Gradio's login page asks for it: any user name, the key as
    the password (a browser cannot add an ``X-API-Key`` header to a page it navigates to).
    The overlay hub (``app.state.overlay_hub``, from :func:`~avatarforge.serve.overlay.mount_overlay`)
    receives "send to overlay".
    """
    import gradio as gr

    hub = getattr(app.state, "overlay_hub", None)
    key = getattr(getattr(state, "settings", None), "api_key", None)
    auth = None
    if key is not None:
        import hmac

        def auth(username: str, password: str) -> bool:
            return hmac.compare_digest(str(password).encode("utf-8"), str(key).encode("utf-8"))

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
