"""Face features: eyes (open, half-lidded, closed), eyebrows, nose, blush and mouth."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from avatarforge.data.procedural.body import FACE
from avatarforge.data.procedural.canvas import Canvas
from avatarforge.data.procedural.geometry import bez, ellipse, offset, stroke, taper
from avatarforge.data.procedural.palette import Palette

# eye_shape -> (half width, half height, inner corner dy, outer corner dy, upper-lid exponent,
#               lower-lid depth, lid droop for "sleepy")
EYE_OUTLINES: dict[str, tuple[float, float, float, float, float, float, float]] = {
    "round": (0.058, 0.072, 0.010, -0.004, 0.45, 0.95, 1.0),
    "almond": (0.061, 0.062, 0.012, -0.012, 0.42, 0.82, 1.0),
    "upturned": (0.061, 0.062, 0.018, -0.024, 0.45, 0.75, 1.0),
    "droopy": (0.060, 0.066, -0.006, 0.020, 0.45, 0.88, 1.0),
    "sleepy": (0.060, 0.068, 0.010, 0.0, 0.42, 0.90, 0.6),
}
EYE_Y = 0.51
EYE_DX = 0.098
# Iris shift at |gaze| = 1, in eye half widths / half heights.
_GAZE_X = 0.34
_GAZE_Y = 0.4
# Eyebrow lift at |brow_y| = 1 (about half the brow-to-eye gap), and the extra lift of the
# inner end (raised brows arch up in the middle of the face, lowered ones knit).
_BROW_LIFT = 0.016
_BROW_INNER = 0.006


def _eye_curves(
    shape: str, side: float, eye_open: float, smile: float, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float, float]]:
    """Upper lid, lower lid and closed-lid curves (x, y) from inner to outer corner."""
    w, h, ic, oc, k_up, k_lo, droop = EYE_OUTLINES[shape]
    cx = 0.5 + side * EYE_DX
    cy = EYE_Y
    u = np.linspace(-1.0, 1.0, n)
    corner = ic + (oc - ic) * (u + 1.0) * 0.5
    base = np.clip(1.0 - u * u, 0.0, 1.0)
    x = cx + side * u * w
    up = cy - h * base**k_up + corner
    lo = cy + h * k_lo * base**0.9 + corner
    closed = cy + h * 0.45 * base**0.8 + corner
    # Half-lidded shapes and smiling (cheeks push the lower lid up) narrow the eye.
    opening = eye_open * droop
    up = closed + (up - closed) * opening
    lo = lo + (closed - lo) * (0.3 * max(smile, 0.0))
    lo = np.maximum(lo, up)
    return (
        np.stack([x, up], 1),
        np.stack([x, lo], 1),
        np.stack([x, closed], 1),
        (cx, cy, w, h),
    )


def draw_eyes(cv: Canvas, a: Mapping[str, Any], pal: Palette) -> None:
    """Both eyes: lids, white, iris, highlights and lashes, or a closed-eye arc; each eye
    opens by its own ``eye_open_l`` / ``eye_open_r`` and the irises follow the gaze."""
    shape = a["eye_shape"]
    smile = float(a["smile"])
    yaw = float(a["head_yaw"])
    # Gaze moves the irises (clipped by the eye outline) by this much of the eye's half
    # width / half height.
    gx = float(a.get("gaze_x", 0.0)) * _GAZE_X
    gy = float(a.get("gaze_y", 0.0)) * _GAZE_Y
    for side in (-1.0, 1.0):
        # side +1 is the image-right eye: the character's left one (Live2D's "L").
        eye_open = float(a.get("eye_open_l" if side > 0 else "eye_open_r", a["eye_open"]))
        # The eye on the side the head turns towards comes closer and looks a bit bigger.
        scale = 1.0 + 0.1 * yaw * side
        up, lo, closed, (cx, cy, w, h) = _eye_curves(shape, side, eye_open, smile, 17)
        if scale != 1.0:
            for arr in (up, lo, closed):
                arr[:, 0] = cx + (arr[:, 0] - cx) * scale
        if eye_open > 0.06:
            outline = np.concatenate([up, lo[::-1][1:-1]])
            ix = cx + side * 0.04 * w
            iy = cy + 0.12 * h
            if gx or gy:
                ix += gx * w
                iy -= gy * h
            rx, ry = 0.74 * w * scale, 1.0 * h
            iris = ellipse(ix, iy, rx, ry, 28)
            top = iris.copy()
            top[:, 1] = np.minimum(top[:, 1], iy - 0.25 * ry)
            light = ellipse(ix, iy + 0.42 * ry, 0.72 * rx, 0.5 * ry, 20)
            lid_shadow = np.concatenate([up, offset(up, 0.0, 0.3 * h)[::-1]])
            hx = ix - 0.38 * rx
            items = [
                (ellipse(cx, cy, w * 2.0, h * 2.0, 8), pal.eye_white, "eye_white"),
                (lid_shadow, pal.eye_shadow, "eye_white"),
                (iris, pal.iris_dark, "iris"),
                (ellipse(ix, iy + 0.04 * ry, 0.86 * rx, 0.9 * ry, 24), pal.iris, "iris"),
                (light, pal.iris_light, "iris"),
                (top, pal.iris_dark, "iris"),
                (ellipse(ix, iy - 0.06 * ry, 0.36 * rx, 0.46 * ry, 16), pal.pupil, "iris"),
                (ellipse(hx, iy - 0.42 * ry, 0.3 * rx, 0.26 * ry, 14), pal.eye_white, "iris"),
                (ellipse(ix + 0.4 * rx, iy + 0.42 * ry, 0.13 * rx, 0.11 * ry, 10), pal.eye_white, "iris"),
            ]
            cv.clipped(outline, items, depth=1.0)
            # Upper lash line: thick at the outer corner, with a flick past it.
            n = len(up)
            wts = np.linspace(0.006, 0.015, n) * (0.6 + 0.4 * eye_open)
            cv.line(up, wts, pal.lash, "eye_line", depth=1.0)
            flick = np.array([up[-1] + (0.0, 0.003), up[-1] + (side * 0.018, -0.006), up[-3] + (0.0, -0.004)])
            cv.poly(flick, pal.lash, "eye_line", depth=1.0)
            # Lower lash: a short thin line near the outer corner.
            k = n // 2 + 2
            cv.line(lo[k:], taper(n - k, 0.001, 0.004, 0.002), pal.lash, "eye_line", depth=1.0)
        else:
            # Closed: a relaxed arc, or a happy "^" arc when smiling.
            pts = closed.copy()
            if smile > 0.4:
                pts[:, 1] = 2.0 * (cy + 0.2 * h) - pts[:, 1] - 0.6 * h
            cv.line(pts, taper(len(pts), 0.003, 0.009, 0.004), pal.lash, "eye_line", depth=1.0)
            cv.line(
                np.array([pts[-2], pts[-1] + (side * 0.012, 0.006)]), 0.004, pal.lash, "eye_line", depth=1.0
            )


# eyebrow style -> (width, inner dy, outer dy, arch)
_BROWS: dict[str, tuple[float, float, float, float]] = {
    "normal": (0.0055, 0.004, 0.006, 0.010),
    "thick": (0.010, 0.004, 0.006, 0.008),
    "thin": (0.0032, 0.002, 0.008, 0.012),
    "angry": (0.0065, 0.018, -0.006, 0.002),
    "worried": (0.0055, -0.014, 0.012, 0.006),
}


def draw_brows(cv: Canvas, a: Mapping[str, Any], pal: Palette) -> None:
    """Both eyebrows, raised a little by a smile and moved up / down by ``brow_y``."""
    width, din, dout, arch = _BROWS[a["eyebrows"]]
    lift = -0.006 * max(float(a["smile"]), 0.0)
    brow_y = float(a.get("brow_y", 0.0))
    if brow_y:
        lift -= _BROW_LIFT * brow_y
        din -= _BROW_INNER * brow_y
    for side in (-1.0, 1.0):
        w = EYE_OUTLINES[a["eye_shape"]][0]
        cx = 0.5 + side * (EYE_DX + 0.006)
        y = EYE_Y - 0.098 + lift
        p0 = (cx - side * w * 0.85, y + din)
        p2 = (cx + side * w * 0.95, y + dout)
        p1 = (cx, y - arch)
        pts = bez(p0, p1, p2, 10)
        cv.line(pts, taper(10, width * 0.8, width, width * 0.35), pal.brow, "eyebrow", depth=0.9)


def draw_nose(cv: Canvas, pal: Palette) -> None:
    """The nose: one short line."""
    cv.line(np.array([[0.505, 0.57], [0.501, 0.58]]), 0.004, pal.skin_line, "skin", depth=1.3)


def draw_blush(cv: Canvas, a: Mapping[str, Any], pal: Palette) -> None:
    """Cheek blush (none, light, strong or hatched lines)."""
    style = a["blush"]
    if style == "none":
        return
    items: list[tuple] = []
    for side in (-1.0, 1.0):
        cx, cy = 0.5 + side * 0.118, 0.585
        items.append((ellipse(cx, cy, 0.042, 0.017, 18), pal.blush, "skin"))
        if style == "strong":
            items.append((ellipse(cx, cy, 0.028, 0.011, 14), pal.blush_strong, "skin"))
        elif style == "lines":
            for k in (-1, 0, 1):
                x = cx + k * 0.016
                line = np.array([[x + 0.006, cy - 0.009], [x - 0.006, cy + 0.009]])
                items.append((stroke(line, np.full(2, max(0.003, cv.min_w))), pal.blush_strong, "skin"))
    if cv.pitch:
        # A nod moves the cheeks further than the face outline: keep the blush on the face.
        cv.clipped(FACE, items, depth=0.8, clip_depth=0.25)
    else:
        for pts, color, part in items:
            cv.poly(pts, color, part, depth=0.8)


# mouth style -> (half width, cat-shape flag)
_MOUTHS: dict[str, tuple[float, bool]] = {
    "normal": (0.026, False),
    "cat": (0.026, True),
    "small": (0.016, False),
    "wide": (0.038, False),
    "fang": (0.026, False),
}
_MOUTH_Y = 0.622
# vowel -> (width factor, opening-height factor, roundness, teeth): the mouth shape that
# vowel gives an open mouth. Roundness 1 is an oval (the upper lip arches up too), teeth 1
# shows upper and lower teeth, 0.5 the upper ones.
_VOWELS: dict[str, tuple[float, float, float, float]] = {
    "a": (1.25, 1.0, 0.15, 0.0),  # wide and tall
    "i": (1.55, 0.45, 0.0, 1.0),  # wide and flat, teeth showing
    "u": (0.55, 0.55, 1.0, 0.0),  # small round pout
    "e": (1.3, 0.62, 0.05, 0.5),  # medium wide, upper teeth
    "o": (0.75, 1.0, 0.85, 0.0),  # round and tall
}


def _vowel_shape(a: Mapping[str, Any]) -> tuple[float, tuple[float, float, float, float] | None]:
    """The opening the vowels ask for (their summed weight, at most 1) and the blended shape
    (None without vowels). Weights summing to less than 1 blend with the plain open mouth."""
    weights = {v: float(a.get(f"vowel_{v}", 0.0)) for v in _VOWELS}
    total = sum(weights.values())
    if total <= 0.0:
        return 0.0, None
    k = 1.0 / max(total, 1.0)
    neutral = (1.0, 1.0, 0.0, 0.0)
    shape = tuple(
        base + sum(w * k * (_VOWELS[v][j] - base) for v, w in weights.items())
        for j, base in enumerate(neutral)
    )
    return min(total, 1.0), shape  # type: ignore[return-value]


def draw_mouth(cv: Canvas, a: Mapping[str, Any], pal: Palette) -> None:
    """The mouth: a line when closed, an opening with tongue (and fang) when open, shaped by
    the vowels (which also open it by their weight when ``mouth_open`` is smaller)."""
    style = a["mouth"]
    mw, cat = _MOUTHS[style]
    m = float(a["mouth_open"])
    s = float(a["smile"])
    n = 15
    u = np.linspace(-1.0, 1.0, n)
    # Smile raises the corners relative to the middle; a frown lowers them.
    bend = 0.011 * s * (mw / 0.026) ** 0.5
    vowel_open, vowel = _vowel_shape(a)
    if vowel is not None:
        m = max(m, vowel_open)
        mw = mw * vowel[0]
    x = 0.5 + u * mw
    top = _MOUTH_Y - bend * (u * u - 0.35)
    if cat and m < 0.08:
        top = top + 0.006 * (1.0 - np.abs(np.abs(u) * 2.0 - 1.0) ** 2) - 0.004
    if m >= 0.08:
        depth_ = (0.012 + 0.05 * m) * (1.0 - u * u) ** 0.65
        flat_top = top - 0.003 * (1.0 - u * u) * (1.0 if not cat else -1.0)
        bottom = flat_top + depth_ + max(s, 0.0) * 0.008 * (1.0 - u * u)
        teeth = 0.0
        if vowel is not None:
            _, hf, rnd, teeth = vowel
            height = (0.012 + 0.05 * m) * hf
            prof = 1.0 - u * u
            # The lower lip drops less and the upper lip arches up as the mouth rounds.
            bottom = flat_top + height * (1.0 - 0.3 * rnd) * prof ** (0.65 - 0.15 * rnd)
            bottom = bottom + max(s, 0.0) * 0.008 * prof
            flat_top = flat_top - height * 0.3 * rnd * prof**0.5
        upper = np.stack([x, flat_top], 1)
        lower = np.stack([x, bottom], 1)
        shape = np.concatenate([upper, lower[::-1][1:-1]])
        tongue = np.concatenate([upper, lower[::-1][1:-1]])
        tongue[:, 1] = np.maximum(tongue[:, 1], (flat_top.mean() + bottom.max()) * 0.5 + 0.003)
        items = [(shape, pal.mouth_in, "mouth"), (tongue, pal.tongue, "mouth")]
        if teeth > 0.0:
            gap = bottom - flat_top
            band = np.concatenate([upper, (upper + np.stack([0.0 * x, 0.32 * teeth * gap], 1))[::-1]])
            items.append((band, pal.eye_white, "mouth"))
            if teeth > 0.5:
                low = np.stack([x, bottom - 0.4 * (teeth - 0.5) * gap], 1)
                items.append((np.concatenate([low, lower[::-1]]), pal.eye_white, "mouth"))
        if style == "fang":
            fx = 0.5 + 0.45 * mw
            fy = float(np.interp(fx, x, flat_top))
            items.append(
                (
                    np.array([[fx - 0.007, fy - 0.002], [fx + 0.007, fy - 0.002], [fx + 0.001, fy + 0.011]]),
                    pal.eye_white,
                    "mouth",
                )
            )
        cv.clipped(shape, items, depth=1.0)
        cv.outline(shape, pal.mouth_line, "mouth", 0.003, depth=1.0)
    else:
        pts = np.stack([x, top], 1)
        cv.line(pts, taper(n, 0.002, 0.0045, 0.002), pal.mouth_line, "mouth", depth=1.0)
        if style == "fang":
            fx = 0.5 + 0.45 * mw
            fy = float(np.interp(fx, x, top))
            cv.poly(
                np.array([[fx - 0.006, fy], [fx + 0.006, fy], [fx + 0.001, fy + 0.010]]),
                pal.eye_white,
                "mouth",
                depth=1.0,
            )
            cv.outline(
                np.array([[fx - 0.006, fy], [fx + 0.006, fy], [fx + 0.001, fy + 0.010]]),
                pal.mouth_line,
                "mouth",
                0.002,
                depth=1.0,
            )
