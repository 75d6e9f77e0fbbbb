"""Pydantic request and response models of the JSON endpoints.

The ``Field`` bounds here are hard caps that hold for every server; the configurable limits
of :class:`~avatarforge.serve.state.ServeSettings` (``max_n``, ``max_frames``, ...) are at
most these and are checked again per request (422 naming the field). Multipart endpoints
(postprocess, style, animate) declare their form fields in :mod:`.routes`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from avatarforge.serve.latents import MAX_TOKEN_CHARS

__all__ = [
    "HARD_MAX_FRAMES",
    "HARD_MAX_N",
    "MAX_SEED",
    "Amount",
    "EditRequest",
    "GenerateRequest",
    "ImageOut",
    "ImagesResponse",
    "InterpolateRequest",
    "Seed",
    "VariationsRequest",
]

MAX_SEED = 2**63 - 1
HARD_MAX_N = 256
HARD_MAX_FRAMES = 1200

Seed = Annotated[int, Field(ge=0, le=MAX_SEED, description="a non-negative integer seed")]
Amount = Annotated[float, Field(ge=-100.0, le=100.0)]
Token = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_TOKEN_CHARS,
        description="the 'latent' string of an image in an earlier response",
    ),
]
NoiseMode = Literal["const", "random", "none"]
VideoFormat = Literal["gif", "webp", "apng"]
Attrs = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=64)]],
    Field(max_length=32, description='fixed attribute values, e.g. {"hair_color": "pink"} (see /v1/info)'),
]
Codes = Annotated[
    dict[Annotated[str, Field(max_length=16)], Annotated[float, Field(ge=-1e3, le=1e3)]],
    Field(max_length=32, description='InfoGAN codes, e.g. {"c0": 0.8, "cat0": 2} (see /v1/info)'),
]


class _Output(BaseModel):
    """Options shared by every image-producing request."""

    model_config = ConfigDict(extra="forbid")

    truncation: float = Field(1.0, ge=0.0, le=2.0, description="psi: 1 = none, 0 = the average avatar")
    attrs: Attrs = Field(default_factory=dict)
    codes: Codes = Field(default_factory=dict)
    noise_mode: NoiseMode = Field("const", description="StyleGAN noise: const, random (per seed), none")
    rgba: bool | None = Field(
        None,
        description="null: the model's channels; true: add alpha to RGB; false: composite onto background",
    )
    background: str | None = Field(
        None, max_length=32, description="colour for rgba=false: a name, #rrggbb or r,g,b (default white)"
    )


class GenerateRequest(_Output):
    """One image per seed (``n`` alone means seeds 0..n-1)."""

    seeds: list[Seed] | None = Field(None, min_length=1, max_length=HARD_MAX_N)
    n: int | None = Field(None, ge=1, le=HARD_MAX_N)
    size: int | None = Field(
        None,
        ge=16,
        le=4096,
        description="output size in pixels: one of /v1/info's model.sizes (default the generator's)",
    )

    @model_validator(mode="after")
    def _one_source(self) -> GenerateRequest:
        if self.seeds is None and self.n is None:
            raise ValueError("give seeds (e.g. [1, 2, 3]) or n")
        if self.seeds is not None and self.n is not None:
            raise ValueError("give either seeds or n, not both")
        return self


class _OneSource(_Output):
    seed: Seed | None = Field(None, description="start from this seed's image")
    latent: Token | None = Field(None, description="or from an earlier image's latent token")

    @model_validator(mode="after")
    def _one_source(self) -> _OneSource:
        if (self.seed is None) == (self.latent is None):
            raise ValueError("give exactly one of seed or latent")
        return self


class VariationsRequest(_OneSource):
    """``n`` variations of one image."""

    n: int = Field(8, ge=1, le=HARD_MAX_N)
    strength: float = Field(0.3, ge=0.0, le=1.0, description="0 = the source itself, 1 = unrelated samples")
    variation_seed: Seed = Field(0, description="seeds the random latents the variations move toward")


class EditRequest(_OneSource):
    """One image moved along a slider (``GET /v1/info`` lists the sliders)."""

    direction: str = Field(..., min_length=1, max_length=128, description="a slider id or name from /v1/info")
    amount: float | None = Field(None, ge=-100.0, le=100.0, description="one amount")
    amounts: list[Amount] | None = Field(
        None, min_length=1, max_length=HARD_MAX_N, description="or several (one image each)"
    )

    @model_validator(mode="after")
    def _one_amount(self) -> EditRequest:
        if self.amount is not None and self.amounts is not None:
            raise ValueError("give either amount or amounts, not both")
        return self


class InterpolateRequest(_Output):
    """A video through two or more seeds or latents."""

    seeds: list[Seed] | None = Field(None, min_length=2, max_length=32)
    latents: list[Token] | None = Field(None, min_length=2, max_length=32)
    frames: int = Field(48, ge=2, le=HARD_MAX_FRAMES)
    fps: float = Field(24.0, ge=1.0, le=100.0)
    loop: bool = Field(False, description="return to the first key (seamless loop)")
    format: VideoFormat = "webp"

    @model_validator(mode="after")
    def _one_source(self) -> InterpolateRequest:
        if (self.seeds is None) == (self.latents is None):
            raise ValueError("give exactly one of seeds or latents (two or more)")
        return self


class ImageOut(BaseModel):
    """One image of a JSON response."""

    png: str = Field(description="the image as base64 PNG")
    latent: str = Field(description="its latent token: pass it back as 'latent' to refine this image")
    seed: int | None = None
    amount: float | None = None
    attrs: dict[str, str] | None = None
    codes: dict[str, float] | None = None


class ImagesResponse(BaseModel):
    """Images of a generate/variations/edit request, in request order."""

    width: int
    height: int
    channels: int
    images: list[ImageOut]
