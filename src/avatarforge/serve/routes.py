"""The model endpoints under ``/v1/``.

Each endpoint is a plain ``def``: FastAPI runs it in its thread pool, so the event loop
stays free while torch works. Request parsing, token decoding and image encoding run
outside the model lock; only library calls that touch the shared models hold it (see
:mod:`avatarforge.serve.state`). Library functions validate their own inputs and raise
``ValueError`` with a message naming the problem; those become 422 naming the request field.
"""

from __future__ import annotations

import base64
import contextlib
import io
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import numpy as np
from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, create_model

from avatarforge.serve.errors import field_error
from avatarforge.serve.latents import LatentTokenError, decode_latent, encode_latent
from avatarforge.serve.schemas import (
    MAX_SEED,
    Amount,
    EditRequest,
    GenerateRequest,
    ImageOut,
    ImagesResponse,
    InterpolateRequest,
    Seed,
    VariationsRequest,
)
from avatarforge.serve.state import ServeState
from avatarforge.serve.uploads import receive_image

__all__ = ["VIDEO_MEDIA_TYPES", "add_latent_sliders", "build_router", "chain_limits", "encode_png"]

_DEFAULT_SLIDE_STEPS = 7

#: Response media type of each animation format.
VIDEO_MEDIA_TYPES = {"gif": "image/gif", "webp": "image/webp", "apng": "image/apng"}
_PNG = {200: {"content": {"image/png": {}}, "description": "a PNG image"}}
_VIDEO = {200: {"content": {t: {} for t in VIDEO_MEDIA_TYPES.values()}, "description": "an animation"}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or wrong API key"},
    413: {"description": "upload or body too large"},
    415: {"description": "upload is not a supported image"},
    422: {"description": "invalid field (the message names it)"},
}


def encode_png(image: np.ndarray) -> bytes:
    """``(H, W, 3|4)`` uint8 -> PNG bytes (alpha kept)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


@contextlib.contextmanager
def _as_field(field: str) -> Iterator[None]:
    """Library ``ValueError`` / ``KeyError`` inside the block -> 422 naming ``field``."""
    try:
        yield
    except LatentTokenError as e:
        raise field_error("latent", str(e)) from None
    except (ValueError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        raise field_error(field, str(msg)) from None


def _upload_limits(s: Any) -> dict[str, int]:
    return {"max_bytes": s.max_upload_bytes, "max_pixels": s.max_pixels, "max_side": s.max_image_side}


#: Most avatars per request at the refined sizes (256, 512): each is a refiner pass and ~1 MB.
MAX_N_LARGE = 8


def _limit(field: str, value: int, maximum: int, setting: str) -> None:
    if value > maximum:
        raise field_error(field, f"at most {maximum} on this server (its {setting}), got {value}")


def chain_limits(settings: Any) -> Any:
    """The :class:`~avatarforge.postprocess.chain.ChainLimits` of a server's settings (the
    messages name the settings, so an operator knows what to raise)."""
    from avatarforge.postprocess.chain import ChainLimits

    return ChainLimits(
        max_side=settings.max_output_side,
        max_work=settings.max_chain_pixels,
        max_ops=settings.max_chain_ops,
        names={
            "max_side": "the server's max_output_side",
            "max_work": "the server's max_chain_pixels",
            "max_ops": "the server's max_chain_ops",
        },
    )


def _colour_check(background: str | None) -> None:
    if background is not None:
        from avatarforge.generate.pipeline import parse_colour

        with _as_field("background"):
            parse_colour(background)


def _images_response(state: ServeState, result: Any, seeds: list[int] | None = None) -> ImagesResponse:
    pipe = state.pipe
    imgs = result.images
    out = []
    for i in range(len(result)):
        item = result.items[i] if result.items else {}
        codes = item.get("codes")
        out.append(
            ImageOut(
                png=base64.b64encode(encode_png(imgs[i])).decode("ascii"),
                latent=encode_latent(result.latent[i], pipe.model_sha256),
                seed=seeds[i] if seeds is not None else item.get("seed"),
                amount=item.get("amount"),
                attrs={str(k): str(v) for k, v in item["attrs"].items()} if item.get("attrs") else None,
                codes={str(k): float(v) for k, v in codes.items()} if codes else None,
            )
        )
    return ImagesResponse(
        width=int(imgs.shape[2]), height=int(imgs.shape[1]), channels=int(imgs.shape[3]), images=out
    )


def _conditioning(state: ServeState, req: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(attrs, codes)`` of a request as plain dicts, validated by the library (422 naming them)."""
    from avatarforge.generate.conditioning import encode_attrs, encode_codes

    attrs = (
        req.attrs.model_dump(by_alias=True, exclude_none=True)
        if isinstance(req.attrs, BaseModel)
        else req.attrs
    )
    with _as_field("attrs"):
        encode_attrs(state.pipe.labels, attrs)
    with _as_field("codes"):
        encode_codes(state.pipe.code_dims, req.codes)
    return dict(attrs), dict(req.codes)


def _source_latent(state: ServeState, req: Any) -> Any:
    """A one-image latent from ``req.seed`` (with its attrs/codes/truncation) or ``req.latent``."""
    pipe = state.pipe
    if req.latent is not None:
        with _as_field("latent"):
            return decode_latent(req.latent, pipe)
    attrs, codes = _conditioning(state, req)
    with state.model_lock(), _as_field("seed"):
        return pipe.map(pipe.latents([req.seed], attrs, codes, req.truncation))


def attributes_model(labels: Any) -> type[BaseModel]:
    """A pydantic model of ``{attribute: class name}`` for one model's labels.

    Each attribute is an optional field whose value is one of that attribute's class names
    (or ``unknown``), so the OpenAPI schema lists the valid names and values, clients get
    them in ``/docs``, and a wrong one is a 422 naming ``attrs.<attribute>``.
    """
    from avatarforge.generate.conditioning import UNKNOWN

    fields: dict[str, Any] = {}
    for i, name in enumerate(labels.names):
        values = tuple(dict.fromkeys([labels.class_name(i, c) for c in range(labels.dims[i])] + [UNKNOWN]))
        fields[f"attr{i}"] = (
            Optional[Literal[values]],  # noqa: UP045 -- Literal built at run time
            Field(
                None, alias=name, description=f"{name}: one of {', '.join(values)}; unset = random per seed"
            ),
        )
    return create_model("Attributes", __config__=ConfigDict(extra="forbid", populate_by_name=False), **fields)


def _specialise(base: type[BaseModel], attrs: type[BaseModel], **fields: Any) -> type[BaseModel]:
    """``base`` with ``attrs`` typed by :func:`attributes_model` and the server's limits in ``fields``.

    Putting this server's limits (``max_n``, ``max_frames``, ...) into the schema tells
    clients (and the fuzzer) the real bounds; the handlers check them again regardless.
    """
    return create_model(
        base.__name__,
        __base__=base,
        __doc__=base.__doc__,
        attrs=(attrs, Field(default_factory=attrs, description="fixed attribute values (see /v1/info)")),
        **fields,
    )


def _request_models(state: ServeState) -> dict[str, type[BaseModel]]:
    """This server's request models: its attributes and limits in the OpenAPI schema."""
    s = state.settings
    attrs = attributes_model(state.pipe.labels)
    per = f"at most {s.max_n} on this server (max_n)"
    frames = f"at most {s.max_frames} on this server (max_frames)"
    return {
        "generate": _specialise(
            GenerateRequest,
            attrs,
            seeds=(Optional[list[Seed]], Field(None, min_length=1, max_length=s.max_n, description=per)),  # noqa: UP045
            n=(Optional[int], Field(None, ge=1, le=s.max_n, description=f"seeds 0..n-1; {per}")),  # noqa: UP045
        ),
        "variations": _specialise(
            VariationsRequest, attrs, n=(int, Field(min(8, s.max_n), ge=1, le=s.max_n, description=per))
        ),
        "edit": _specialise(
            EditRequest,
            attrs,
            amounts=(
                Optional[list[Amount]],  # noqa: UP045
                Field(None, min_length=1, max_length=s.max_n, description=f"one image each; {per}"),
            ),
        ),
        "interpolate": _specialise(
            InterpolateRequest,
            attrs,
            frames=(
                int,
                Field(max(2, min(48, s.max_frames)), ge=2, le=max(2, s.max_frames), description=frames),
            ),
            fps=(float, Field(float(min(24, s.max_fps)), ge=1.0, le=float(s.max_fps))),
        ),
    }


def _render_options(req: Any) -> dict[str, Any]:
    """How an image request wants its pixels: ``noise_mode``, ``rgba``, ``background``."""
    return {"noise_mode": req.noise_mode, "rgba": req.rgba, "background": req.background}


def _body(model: type[BaseModel]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    # The request models are built per server (their attrs depend on the model), so they are
    # local values; FastAPI reads parameter types from __annotations__, set here.
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__annotations__["req"] = model
        return fn

    return deco


def _encode_animation(frames: list[np.ndarray] | np.ndarray, fps: float, fmt: str) -> bytes:
    from avatarforge.postprocess.export import save_animation

    suffix = {"gif": ".gif", "webp": ".webp", "apng": ".png"}[fmt]
    with tempfile.TemporaryDirectory(prefix="avatarforge-serve-") as tmp:
        path = save_animation(Path(tmp) / f"out{suffix}", list(frames), fps=float(fps), format=fmt)
        return path.read_bytes()


def _video_response(data: bytes, fmt: str, name: str) -> Response:
    ext = {"apng": "png"}.get(fmt, fmt)
    return Response(
        content=data,
        media_type=VIDEO_MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'inline; filename="{name}.{ext}"'},
    )


def _interpolation_keys_latents(state: ServeState, req: InterpolateRequest) -> Any:
    """The frame latents of a path through decoded latent tokens (seeds use the library)."""
    from avatarforge.generate.interpolate import latent_path
    from avatarforge.generate.pipeline import Latent

    pipe = state.pipe
    assert req.latents is not None
    keys_list = []
    for i, tok in enumerate(req.latents):
        try:
            keys_list.append(decode_latent(tok, pipe))
        except LatentTokenError as e:
            raise field_error(f"latents.{i}", str(e)) from None
    if not pipe.is_stylegan and any(k.label_t is not None for k in keys_list):
        raise field_error("latents", "slider-edited latents of this model cannot be interpolated; use seeds")
    truncs = {k.truncation for k in keys_list}
    # Latent.cat needs one truncation; the ws (StyleGAN) already carry each key's own.
    keys_list = (
        [replace(k, truncation=keys_list[0].truncation) for k in keys_list] if len(truncs) > 1 else keys_list
    )
    with state.model_lock():
        keys = pipe.map(Latent.cat([replace(k, labels_to=None, label_t=None) for k in keys_list]))
    return latent_path(pipe, keys, req.frames, req.loop)


# ----------------------------------------------------------------------------- the router
def add_latent_sliders(state: ServeState, k: int = 8) -> None:
    """Give every generator family latent sliders: closed-form SeFa on the first layer's
    ``z`` weights for dcgan, cgan, infogan and the VAEs (StyleGAN's ``w``-space SeFa sliders
    come from :class:`ServeState` itself). Added only when the state has no ``w``/``z``
    sliders yet (e.g. from a ``directions.json``); ids that exist are kept."""
    if state.pipe.is_stylegan or any(d.kind in ("w", "z") for d in state.directions.values()):
        return
    from avatarforge.generate.directions import sefa_directions

    with state.model_lock():
        found = sefa_directions(state.pipe, k=k, n_samples=256)
    for d in found:
        state.directions.setdefault(d.id, d)


def build_router(state: ServeState) -> APIRouter:
    """All ``/v1/`` model routes bound to ``state``."""
    router = APIRouter(responses=_ERRORS)
    s = state.settings

    def post_bytes(path: str, responses: dict[Any, Any], tag: str, summary: str) -> Any:
        """A POST route that answers with the bytes of a file (an image or an animation), not JSON."""
        return router.post(path, response_class=Response, responses=responses, tags=[tag], summary=summary)

    pipe = state.pipe
    models = _request_models(state)

    @router.post("/generate", response_model=ImagesResponse, tags=["generate"], summary="avatars from seeds")
    @_body(models["generate"])
    def generate(req: GenerateRequest) -> ImagesResponse:
        """One avatar per seed (deterministic: a seed always gives the same bytes), each with its
        latent token for ``/v1/variations``, ``/v1/edit``, ``/v1/interpolate`` and ``/v1/animate``."""
        if req.seeds is not None:
            _limit("seeds", len(req.seeds), s.max_n, "max_n")
        else:
            _limit("n", int(req.n or 0), s.max_n, "max_n")
        _colour_check(req.background)
        with _as_field("size"):
            size = pipe.check_size(req.size)
        if size > pipe.resolution:  # refined avatars: ~1 MB and a refiner pass each
            _limit("seeds" if req.seeds is not None else "n", len(req.seeds or []) or int(req.n or 0),
                   min(s.max_n, MAX_N_LARGE), f"limit of {MAX_N_LARGE} above the generator's size")  # fmt: skip
        attrs, codes = _conditioning(state, req)
        with state.model_lock(), _as_field("seeds"):
            result = pipe(
                seeds=req.seeds,
                n=req.n,
                truncation=req.truncation,
                attrs=attrs,
                codes=codes,
                size=size,
                **_render_options(req),
            )
        return _images_response(state, result)

    @router.post(
        "/variations", response_model=ImagesResponse, tags=["generate"], summary="variations of one avatar"
    )
    @_body(models["variations"])
    def variations(req: VariationsRequest) -> ImagesResponse:
        """``n`` avatars near one source (a seed or a latent token); ``strength`` says how near."""
        from avatarforge.generate.variations import variations as lib_variations

        _limit("n", req.n, s.max_n, "max_n")
        _colour_check(req.background)
        src = _source_latent(state, req)
        with state.model_lock(), _as_field("strength"):
            result = lib_variations(
                pipe,
                src,
                n=req.n,
                strength=req.strength,
                seed=req.variation_seed,
                **_render_options(req),
            )
        return _images_response(state, result)

    @router.post(
        "/edit", response_model=ImagesResponse, tags=["generate"], summary="move an avatar along a slider"
    )
    @_body(models["edit"])
    def edit(req: EditRequest) -> ImagesResponse:
        """The source at each amount along a slider (attribute, InfoGAN code or StyleGAN direction).

        Amount units: blend weight 0..1 for attribute sliders and categorical codes, the code
        value for continuous codes, standard deviations of ``w`` for SeFa/PCA sliders. No amount:
        the slider's default range in 7 steps.
        """
        from avatarforge.generate.directions import find_direction, slide

        amounts = (
            req.amounts if req.amounts is not None else ([req.amount] if req.amount is not None else None)
        )
        _limit("amounts", len(amounts) if amounts is not None else _DEFAULT_SLIDE_STEPS, s.max_n, "max_n")
        _colour_check(req.background)
        if not state.directions:
            raise field_error("direction", "this model has no sliders (see /v1/info)")
        with _as_field("direction"):
            direction = find_direction(list(state.directions.values()), req.direction)
        src = _source_latent(state, req)
        with state.model_lock(), _as_field("direction"):
            result = slide(
                pipe,
                src,
                direction,
                amounts=amounts,
                steps=_DEFAULT_SLIDE_STEPS,
                **_render_options(req),
            )
        return _images_response(state, result)

    @post_bytes("/interpolate", _VIDEO, "generate", "animation through seeds or latents")
    @_body(models["interpolate"])
    def interpolate(req: InterpolateRequest) -> Response:
        """An animation (GIF, WebP or APNG; alpha kept, binary in GIF) morphing through the keys."""
        from avatarforge.generate.interpolate import interpolate as lib_interpolate

        _limit("frames", req.frames, s.max_frames, "max_frames")
        _limit("fps", int(np.ceil(req.fps)), s.max_fps, "max_fps")
        _colour_check(req.background)
        if req.seeds is not None:
            attrs, codes = _conditioning(state, req)
            with state.model_lock(), _as_field("seeds"):
                frames = lib_interpolate(
                    pipe,
                    req.seeds,
                    frames=req.frames,
                    truncation=req.truncation,
                    attrs=attrs,
                    codes=codes,
                    loop=req.loop,
                    **_render_options(req),
                )
        else:
            lat = _interpolation_keys_latents(state, req)
            with state.model_lock():
                frames = pipe.render(lat, req.noise_mode, req.rgba, req.background)
        return _video_response(_encode_animation(frames, req.fps, req.format), req.format, "interpolation")

    @post_bytes("/postprocess", _PNG, "image", "post-process an image")
    def postprocess(
        image: Annotated[UploadFile, File(description="PNG/JPEG/WebP/BMP/GIF/TIFF; alpha is preserved")],
        ops: Annotated[
            str,
            Form(
                min_length=1,
                max_length=2000,
                description="chain text, e.g. 'white_balance,saturation=1.2,sharpen=0.5' (ops: /v1/info)",
            ),
        ],
    ) -> Response:
        """Run an alpha-preserving post-processing chain (``avatarforge post``'s ops) on one image.

        The chain is planned from the upload's header size before anything is decoded: an
        output or intermediate image over ``max_output_side`` px per side, more than
        ``max_chain_pixels`` pixels of work or more than ``max_chain_ops`` ops is a 422
        naming ``ops`` and the limit (see ``/v1/info`` ``limits``)."""
        from avatarforge.postprocess.chain import Chain

        chain = Chain(_parse_ops(ops))
        limits = chain_limits(s)
        pending = receive_image(image, "image", **_upload_limits(s))
        if pending.size is not None:
            with _as_field("ops"):
                chain.check(pending.size, limits)
        with state.image_slot():
            arr = pending.decode()
            with _as_field("ops"):
                # checked again on the decoded size (an unreadable header is only read here)
                out = chain.apply(arr, limits=limits)
            data = encode_png(out)
        return Response(content=data, media_type="image/png")

    @post_bytes("/style", _PNG, "image", "style transfer")
    def style(
        content: Annotated[
            UploadFile, File(description="the image to restyle (its alpha and size are kept)")
        ],
        style: Annotated[UploadFile, File(description="the image whose colours/texture to take")],
        method: Annotated[Literal["colour", "histogram", "gatys", "adain"], Form()] = "colour",
        strength: Annotated[float, Form(ge=0.0, le=1.0)] = 1.0,
        space: Annotated[Literal["rgb", "lab"], Form(description="histogram only")] = "rgb",
        steps: Annotated[int, Form(ge=1, le=1000, description="gatys/adain optimisation steps")] = 50,
        size: Annotated[
            int,
            Form(ge=16, le=512, description="gatys/adain working size (longer side); at most max_style_size"),
        ] = 128,
    ) -> Response:
        """Restyle ``content`` after ``style``: colour (Reinhard), histogram, or neural (Gatys,
        training-free AdaIN) with the seeded random-weights feature network."""
        from avatarforge.style import classical, neural

        if method in ("gatys", "adain"):
            _limit("steps", steps, s.max_steps, "max_steps")
            _limit("size", size, s.max_style_size, "max_style_size")
        pending_c = receive_image(content, "content", **_upload_limits(s))
        pending_s = receive_image(style, "style", **_upload_limits(s))
        if method in ("colour", "histogram"):
            with state.image_slot():
                c, st = pending_c.decode(), pending_s.decode()
                with _as_field("style"):
                    if method == "colour":
                        out = classical.colour_transfer(c, st, strength=strength)
                    else:
                        out = classical.histogram_match(c, st, space=space, strength=strength)
                data = encode_png(out)
            return Response(content=data, media_type="image/png")
        # Neural: the slot covers decoding only, not the wait for the model lock (a queue of
        # style requests must not hold every slot while post-processing could run).
        with state.image_slot():
            c, st = pending_c.decode(), pending_s.decode()
        fn = neural.gatys_transfer if method == "gatys" else neural.adain_transfer
        with state.model_lock(), _as_field("style"):
            out = fn(
                c, st, net=state.feature_net(), steps=steps, size=size, strength=strength, device=s.device
            )
        return Response(content=encode_png(out), media_type="image/png")

    @post_bytes(
        "/animate", {**_VIDEO, 503: {"description": "no animator loaded"}}, "animate", "animate an avatar"
    )
    def animate(
        avatar: Annotated[
            UploadFile | None, File(description="an avatar image (PNG with alpha works best)")
        ] = None,
        seed: Annotated[
            int | None, Form(ge=0, le=MAX_SEED, description="or the generator's avatar of this seed")
        ] = None,
        latent: Annotated[
            str | None, Form(max_length=262_144, description="or an earlier image's latent token")
        ] = None,
        script: Annotated[
            str, Form(max_length=200, description="actions: idle, blink, sway, talk, smile, look, nod")
        ] = "idle",
        seconds: Annotated[float, Form(gt=0.0, le=60.0)] = 2.0,
        fps: Annotated[float, Form(ge=1.0, le=100.0)] = 24.0,
        action_seed: Annotated[int, Form(ge=0, le=2**31 - 1, description="seed of the scripted actions")] = 0,
        format: Annotated[Literal["gif", "webp", "apng"], Form()] = "webp",
    ) -> Response:
        """Animate one avatar with the expression animator (scripted actions) -> GIF/WebP/APNG."""
        from avatarforge.animate.drivers import ScriptedDriver
        from avatarforge.animate.loop import AvatarRenderer, FrameLoop

        if state.animator is None:
            from fastapi import HTTPException

            raise HTTPException(
                503,
                "no animator is loaded on this server; start it with 'avatarforge serve RUN --animator ANIMATOR_RUN'",
            )
        sources = [n for n, v in (("avatar", avatar), ("seed", seed), ("latent", latent)) if v is not None]
        if len(sources) != 1:
            raise field_error("avatar", "give exactly one of avatar (upload), seed or latent")
        _limit("fps", int(np.ceil(fps)), s.max_fps, "max_fps")
        n_frames = max(1, round(seconds * fps))
        _limit("seconds", n_frames, s.max_frames, "max_frames: seconds x fps frames")
        with _as_field("script"):
            driver = ScriptedDriver(script, seed=action_seed)
        if avatar is not None:
            pending = receive_image(avatar, "avatar", **_upload_limits(s))
            with state.image_slot():
                img = pending.decode()
        else:
            if latent is not None:
                with _as_field("latent"):
                    lat = decode_latent(latent, pipe)
            else:
                with state.model_lock():
                    lat = pipe.map(pipe.latents([int(seed or 0)]))
            with state.model_lock():
                img = pipe.render(lat, rgba=True)[0]
        with state.model_lock(), _as_field("avatar"):
            loop = FrameLoop(AvatarRenderer(state.animator, img), [driver], fps=fps, realtime=False)
            frames = loop.collect(frames=n_frames)
        return _video_response(_encode_animation(frames, fps, format), format, "animation")

    return router


def _parse_ops(ops: str) -> list[Any]:
    """Parse chain text; ops that read server files (``path`` parameters) are refused.

    The refusal message is the same whether or not the named file exists, so the endpoint
    cannot be used to probe the server's file system.
    """
    from avatarforge.postprocess.chain import parse_chain

    refuse = "parameters that name a file on the server are not available over HTTP"
    try:
        chain = parse_chain(ops)
    except ValueError as e:
        if "no such file or folder" in str(e):
            raise field_error("ops", refuse) from None
        raise field_error("ops", str(e)) from None
    for op in chain:
        for name in op.params:
            if op.spec.param(name).kind == "path":
                raise field_error("ops", refuse)
    return chain
