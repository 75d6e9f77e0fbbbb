"""Procedural anime-style avatars: the built-in data set that needs no download.

Every avatar is a bust portrait (back hair, shoulders with an outfit, neck, head, large anime
eyes, mouth, front hair with bangs, accessories) drawn with polygons by PIL at a
supersampled resolution and box-filtered down to the requested size, so edges are
antialiased and the alpha channel is an exact coverage mask of the character.

An avatar is fully described by an attribute dict (see :data:`SCHEMA`): categorical identity
attributes (hair colour and style, eye colour and shape, ...) and continuous expression
controls (``eye_open``, ``mouth_open``, ``smile``, ``head_yaw``, ``head_tilt``). :func:`render`
also draws the live (rig) parameter set, :data:`LIVE_CONTROLS` (per-eye blinks, gaze,
vowels, brows, nod, body sway, breath): render-only controls, not labels; at their
neutral values (:data:`NEUTRAL_LIVE`) the pictures are bit-identical to those drawn without.
:func:`sample_attributes` draws such a dict from a seed with a private
``numpy.random.Generator(PCG64(seed))``, so the same seed gives the same avatar, byte for
byte, on every run; :func:`render` is a pure function of the dict and the size.

Geometry is written in unit coordinates (the image is ``[0, 1]^2``, y pointing down). Each
drawn part has a *depth*: ``head_yaw`` shifts a part horizontally in proportion to its depth
(eyes and nose more than the face outline, back hair the other way) which gives a cheap
parallax turn; ``head_tilt`` rotates every head part about the neck.

The package is split by idea; this module is its front door and the only import path the
rest of AvatarForge uses (``from avatarforge.data import procedural as P``):

* :mod:`.schema`: sizes, named colours, categorical values, :data:`SCHEMA`, part ids;
* :mod:`.attributes`: drawing an attribute dict from a seed and validating one;
* :mod:`.palette`, :mod:`.geometry`, :mod:`.canvas`: colours, curves, the drawing surface;
* :mod:`.body`, :mod:`.face`, :mod:`.hair`, :mod:`.accessories`: the parts, back to front;
* :mod:`.render`: :func:`render` and the other public drawing functions.

``tools/render_digest.py`` hashes thousands of renders; its digest must not change when
the code here is only reorganised.
"""

from __future__ import annotations

from avatarforge.data.procedural.attributes import random_expression, sample_attributes
from avatarforge.data.procedural.render import render, render_avatar, render_background, render_expressions

# The value tuples (HAIR_STYLES, ...) and Color are imported only so that they stay
# importable from here, as before (hence the noqa); they are not in __all__.
from avatarforge.data.procedural.schema import (  # noqa: F401
    ACCENT_COLORS,
    ACCESSORIES,
    BACKGROUND_COLORS,
    BACKGROUND_KINDS,
    BANGS_STYLES,
    BLUSH_STYLES,
    EXPRESSION_ATTRIBUTES,
    EYE_COLORS,
    EYE_SHAPES,
    EYEBROW_STYLES,
    HAIR_COLORS,
    HAIR_STYLES,
    IDENTITY_ATTRIBUTES,
    LIVE_CONTROLS,
    MAX_SIZE,
    MIN_SIZE,
    MOUTH_STYLES,
    NEUTRAL_EXPRESSION,
    NEUTRAL_LIVE,
    OUTFIT_COLORS,
    OUTFIT_STYLES,
    PART_NAMES,
    SCHEMA,
    SKIN_TONES,
    Color,
    check_size,
    nearest_color,
)

# The same public API as when this was one module.
__all__ = [
    "ACCENT_COLORS",
    "BACKGROUND_COLORS",
    "EXPRESSION_ATTRIBUTES",
    "EYE_COLORS",
    "HAIR_COLORS",
    "IDENTITY_ATTRIBUTES",
    "LIVE_CONTROLS",
    "MAX_SIZE",
    "MIN_SIZE",
    "NEUTRAL_EXPRESSION",
    "NEUTRAL_LIVE",
    "OUTFIT_COLORS",
    "PART_NAMES",
    "SCHEMA",
    "SKIN_TONES",
    "check_size",
    "nearest_color",
    "random_expression",
    "render",
    "render_avatar",
    "render_background",
    "render_expressions",
    "sample_attributes",
]
