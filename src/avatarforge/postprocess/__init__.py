"""Alpha-preserving post-processing of avatar images.

Every op takes an ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA uint8 array (straight alpha) and
returns a new array of the same dtype and channel count; alpha is returned bit-exact by
every op except those whose job is alpha (``remove_background``, ``composite``, and
``upscale``, which resamples it with the colour). Spatial filters never let the hidden
colour of transparent pixels into visible edges (premultiplied / alpha-weighted filtering).
Ops are pure, deterministic functions of NumPy arrays, and validate their parameters.

>>> from avatarforge.postprocess import apply_chain, saturation, upscale
>>> out = apply_chain(image, "white_balance,saturation=1.2,sharpen=0.5,upscale=2")

See ``docs/postprocess.md`` for every op, its parameters and ranges.
"""

from avatarforge.postprocess.alpha import check_image, fill_transparent, premultiply, unpremultiply
from avatarforge.postprocess.background import (
    BACKGROUND_METHODS,
    composite,
    estimate_key_color,
    remove_background,
)
from avatarforge.postprocess.chain import DEFAULT_CHAIN, Chain, Op, apply_chain, describe_ops, parse_chain
from avatarforge.postprocess.color import (
    WB_METHODS,
    brightness,
    clahe,
    contrast,
    gamma,
    hue_shift,
    saturation,
    temperature,
    white_balance,
)
from avatarforge.postprocess.detail import DENOISE_METHODS, cel_shade, denoise, guided_filter, unsharp_mask
from avatarforge.postprocess.export import (
    ANIMATION_FORMATS,
    load_animation,
    load_sprite_sheet,
    save_animation,
    save_sprite_sheet,
    sprite_sheet,
)
from avatarforge.postprocess.registry import OpSpec, Param, get_op, list_ops
from avatarforge.postprocess.resample import (
    UPSCALE_FACTORS,
    SRNet,
    SRTrainResult,
    load_sr_model,
    train_sr,
    upscale,
)

__all__ = [
    "ANIMATION_FORMATS",
    "BACKGROUND_METHODS",
    "DEFAULT_CHAIN",
    "DENOISE_METHODS",
    "UPSCALE_FACTORS",
    "WB_METHODS",
    "Chain",
    "Op",
    "OpSpec",
    "Param",
    "SRNet",
    "SRTrainResult",
    "apply_chain",
    "brightness",
    "cel_shade",
    "check_image",
    "clahe",
    "composite",
    "contrast",
    "denoise",
    "describe_ops",
    "estimate_key_color",
    "fill_transparent",
    "gamma",
    "get_op",
    "guided_filter",
    "hue_shift",
    "list_ops",
    "load_animation",
    "load_sprite_sheet",
    "load_sr_model",
    "parse_chain",
    "premultiply",
    "remove_background",
    "saturation",
    "save_animation",
    "save_sprite_sheet",
    "sprite_sheet",
    "temperature",
    "train_sr",
    "unpremultiply",
    "unsharp_mask",
    "upscale",
    "white_balance",
]
