"""The live rig: a high-resolution avatar cut into layers that the live controls move and redraw.

A neural animator re-draws the whole frame, which at 512 px costs far more than a busy
streamer's CPU can spare, and at 64 px blurs the very parts a viewer watches (eyes, mouth).
A rig instead does the work once per avatar: from the avatar image and its part map (the
renderer's, or the refiner's prediction for a generated avatar) it cuts

* a **plate**: the avatar with eyes, brows and mouth painted out with the surrounding skin;
* per eye, the **opening** (white of the eye, the iris painted out), the **iris**, and the
  **upper and lower lash** lines, with the lid curves (top, bottom, closed) per column;
* the **brows**; the **mouth** (its original pixels and the colours to draw new shapes);
* the **head geometry** (pivot at the neck, chin and shoulder lines).

Every frame is then a few cheap steps, done the same way here (:meth:`AvatarRig.render`,
numpy/OpenCV, for files, metrics and tests) and in the overlay page (``rig.js``, Canvas 2D
plus one WebGL pass, for live use):

1. the plate; the eye openings clipped by the lids (``eye_open_l/r``), the iris shifted by
   the gaze inside the opening, the upper lash moved down with the lid (a closed eye is the
   lash line on the closed curve: no iris is left); the brows moved by ``brow_y``; the mouth
   drawn as a shape from ``mouth_open``, ``smile`` and the vowels (the original mouth is kept
   at rest); face parts shift a little further than the head for yaw and pitch (parallax);
2. one smooth warp of the whole picture: the head turns and rolls about the neck
   (``head_yaw``, ``head_pitch``, ``head_tilt``), weighted from 1 above the chin to 0 at the
   shoulders; the figure sways (``body_sway``) and breathes (``breath``).

Geometry constants are fractions of the avatar size, so a rig means the same at any size.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avatarforge.data.procedural.schema import LIVE_CONTROLS, NEUTRAL_LIVE, PART_IDS

__all__ = [
    "RIG_CONSTANTS",
    "AvatarRig",
    "RigError",
    "check_live_controls",
]


class RigError(ValueError):
    """An avatar that cannot be rigged (no face found), or bad controls."""


#: How far each control moves things, as fractions of the avatar size (shared with rig.js
#: through :meth:`AvatarRig.to_json`, so the page and this module draw the same frame).
RIG_CONSTANTS: dict[str, float] = {
    "roll_deg": 10.0,  # head_tilt = 1 rolls the head this many degrees about the neck
    "yaw_shift": 0.030,  # head_yaw = 1 moves the head this far sideways
    "pitch_shift": 0.022,  # head_pitch = 1 moves the head this far up
    "parallax": 0.022,  # ... and the face parts this much further (they sit in front)
    "sway_shift": 0.045,  # body_sway = 1 moves the top of the figure this far
    "breath_lift": 0.012,  # breath = 1 lifts head and shoulders this far
    "gaze_x": 0.30,  # iris travel, as a fraction of the eye opening's half width
    "gaze_y": 0.22,  # ... and of its half height
    "closed_at": 0.70,  # the closed lid lies this far down the opening
    "brow_travel": 0.55,  # brow_y = 1 moves the brows this fraction of the brow-eye gap
    "smile_lid": 0.30,  # smile = 1 pushes the lower lid this far towards the closed line
    "lower_lid_from": 0.25,  # below this openness the lower lid rises to meet the upper one
    "mouth_width": 0.14,  # mouth half width (open), fraction of the eye distance
    "mouth_height": 0.33,  # mouth height at mouth_open = 1, fraction of the eye distance
    "mouth_fade": 0.12,  # the original mouth fades out as the mouth opens this much
}


def check_live_controls(controls: Mapping[str, Any] | None) -> dict[str, float]:
    """Every live control as a float: missing ones neutral, ``eye_open`` sets both eyes.

    Raises:
        RigError: an unknown name or a value outside its range (the message names both).
    """
    out = dict(NEUTRAL_LIVE)
    items = dict(controls or {})
    if "eye_open" in items:  # the animator's both-eyes control
        v = items.pop("eye_open")
        items.setdefault("eye_open_l", v)
        items.setdefault("eye_open_r", v)
    for name, value in items.items():
        if name not in LIVE_CONTROLS:
            raise RigError(f"unknown live control {name!r}; valid controls: {', '.join(LIVE_CONTROLS)}")
        lo, hi = LIVE_CONTROLS[name]
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise RigError(f"live control {name!r} must be a number in [{lo}, {hi}], got {value!r}") from None
        if not lo <= x <= hi:  # also rejects NaN
            raise RigError(f"live control {name!r} must be in [{lo}, {hi}], got {value!r}")
        out[name] = x
    return out


# --------------------------------------------------------------------------- small helpers
def _premul(rgba: np.ndarray) -> np.ndarray:
    """uint8 straight RGBA -> float32 premultiplied in [0, 1]."""
    x = rgba.astype(np.float32) / 255.0
    x[..., :3] *= x[..., 3:4]
    return x


def _unpremul(p: np.ndarray) -> np.ndarray:
    """float32 premultiplied -> uint8 straight RGBA."""
    a = p[..., 3:4]
    rgb = np.where(a > 1e-6, p[..., :3] / np.maximum(a, 1e-6), 0.0)
    out = np.concatenate([rgb, a], axis=-1)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def _over(dst: np.ndarray, src: np.ndarray, x: float, y: float) -> None:
    """Composite premultiplied ``src`` over ``dst`` at fractional offset (x, y), in place."""
    import cv2

    h, w = src.shape[:2]
    ix, iy = math.floor(x), math.floor(y)
    fx, fy = x - ix, y - iy
    if fx or fy:  # sub-pixel shift with a one-pixel margin, like the page's drawImage
        m = np.float32([[1, 0, fx], [0, 1, fy]])
        src = cv2.warpAffine(src, m, (w + 1, h + 1), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0))
        h, w = h + 1, w + 1
    H, W = dst.shape[:2]
    x0, y0, x1, y1 = max(ix, 0), max(iy, 0), min(ix + w, W), min(iy + h, H)
    if x0 >= x1 or y0 >= y1:
        return
    s = src[y0 - iy : y1 - iy, x0 - ix : x1 - ix]
    d = dst[y0:y1, x0:x1]
    d *= 1.0 - s[..., 3:4]
    d += s


def _bbox(mask: np.ndarray, pad: int, size: int) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return (
        max(int(xs.min()) - pad, 0),
        max(int(ys.min()) - pad, 0),
        min(int(xs.max()) + pad + 1, size),
        min(int(ys.max()) + pad + 1, size),
    )


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    import cv2

    if r <= 0:
        return mask.copy()
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask.astype(np.uint8), k).astype(bool)


def _png_b64(rgba: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG", compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fill_nan(v: np.ndarray) -> np.ndarray:
    """Columns without a value take the nearest column's (lash pixels past the eye corner)."""
    ok = np.isfinite(v)
    if ok.all() or not ok.any():
        return np.nan_to_num(v)
    idx = np.arange(len(v))
    return np.interp(idx, idx[ok], v[ok])


@dataclass
class Sprite:
    """A layer: straight-alpha uint8 pixels placed with their top-left corner at (x, y)."""

    x: int
    y: int
    rgba: np.ndarray  # (h, w, 4) uint8

    def to_json(self) -> dict[str, Any]:
        h, w = self.rgba.shape[:2]
        return {"x": self.x, "y": self.y, "w": w, "h": h, "png": _png_b64(self.rgba)}


@dataclass
class EyeRig:
    """One eye. Curves are per column of the box, in box pixels (y down)."""

    side: str  # "l" (character's left, image right) or "r"
    x: int
    y: int
    opening: np.ndarray  # (h, w, 4) uint8: white of the eye, iris painted out
    ring: np.ndarray  # (h, w, 4) uint8: the avatar's pixels the plate repainted around the eye
    iris: np.ndarray  # (h, w, 4) uint8: the iris alone
    upper: np.ndarray  # (h, w, 4) uint8: the upper lash line (moves with the lid)
    lower: np.ndarray  # (h, w, 4) uint8: the lower lash line (fades as the eye closes)
    top: np.ndarray  # (w,) top of the opening
    bottom: np.ndarray  # (w,) bottom of the opening
    closed: np.ndarray  # (w,) where the lid rests when closed
    travel: tuple[float, float]  # iris travel in px for gaze 1 (x, y)
    lid_colour: tuple[int, int, int] = (40, 30, 40)  # the drawn lid line (the lashes' darkest)
    lid_span: tuple[int, int] = (0, 0)  # columns [from, to) of the drawn lid line
    lid_width: float = 2.0

    def lids(self, eye_open: float, smile: float) -> tuple[np.ndarray, np.ndarray]:
        """(upper lid, lower lid) per column for an openness and a smile."""
        upper = self.closed + (self.top - self.closed) * eye_open
        # The lower lid meets the upper one on the closed line as the eye shuts (nothing of
        # the iris is left), and a smile pushes it up a little.
        rise = max(
            1.0 - eye_open / RIG_CONSTANTS["lower_lid_from"], RIG_CONSTANTS["smile_lid"] * max(smile, 0.0)
        )
        lower = self.bottom + (self.closed - self.bottom) * min(rise, 1.0)
        return upper, np.maximum(lower, upper)

    def draw(self, eye_open: float, gaze: tuple[float, float], smile: float) -> np.ndarray:
        """The eye's box, premultiplied float, for these controls."""
        import cv2

        h, w = self.opening.shape[:2]
        eye = _premul(self.opening)
        # The iris moves inside the opening ("source-atop": only where the opening is).
        dx, dy = gaze[0] * self.travel[0], -gaze[1] * self.travel[1]
        iris = cv2.warpAffine(
            _premul(self.iris),
            np.float32([[1, 0, dx], [0, 1, dy]]),
            (w, h),
            flags=cv2.INTER_LINEAR,
            borderValue=(0, 0, 0, 0),
        )
        iris *= eye[..., 3:4]
        eye = iris + eye * (1.0 - iris[..., 3:4])
        # Lids: keep the rows between the upper and the lower lid (anti-aliased edges).
        upper, lower = self.lids(eye_open, smile)
        ys = np.arange(h, dtype=np.float32)[:, None] + 0.5
        vis = np.clip(ys - upper[None, :], 0.0, 1.0) * np.clip(lower[None, :] + 1.0 - ys, 0.0, 1.0)
        eye *= vis[..., None]
        # The lower lash fades out as the eye closes (a closed eye is one line).
        lower_lash = _premul(self.lower) * min(1.0, 3.0 * eye_open)
        eye = lower_lash + eye * (1.0 - lower_lash[..., 3:4])
        # The upper lash moves down with the lid, column by column.
        shift = (upper - self.top).astype(np.float32)
        map_x = np.tile(np.arange(w, dtype=np.float32), (h, 1))
        map_y = np.arange(h, dtype=np.float32)[:, None] - shift[None, :]
        lash = cv2.remap(
            _premul(self.upper), map_x, map_y, interpolation=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0)
        )
        # The moving lash sprite fades out as the eye closes, and a lid line drawn along the
        # lid fades in: a soft (generated) avatar's "lash" pixels are a blur of eye colours,
        # which pushed down would read as a squashed eye rather than a closed one.
        eye = lash * eye_open + eye * (1.0 - lash[..., 3:4] * eye_open)
        fade = min(1.0, 2.0 * (1.0 - eye_open))
        if fade > 0.0:
            line = self._lid_line(upper)
            eye = line * fade + eye * (1.0 - line[..., 3:4] * fade)
        return eye

    def _lid_line(self, upper: np.ndarray) -> np.ndarray:
        """The lid line along ``upper`` (premultiplied float patch), 4x supersampled."""
        from PIL import Image, ImageDraw

        h, w = self.opening.shape[:2]
        ss = 4
        img = Image.new("RGBA", (w * ss, h * ss), (0, 0, 0, 0))
        a, b = self.lid_span
        pts = [((j + 0.5) * ss, float(upper[j]) * ss) for j in range(a, b)]
        if len(pts) >= 2:
            ImageDraw.Draw(img).line(
                pts, fill=(*self.lid_colour, 255), width=max(1, round(self.lid_width * ss)), joint="curve"
            )
        return _premul(np.asarray(img.resize((w, h), Image.Resampling.BOX)))

    def to_json(self) -> dict[str, Any]:
        h, w = self.opening.shape[:2]
        return {
            "side": self.side,
            "x": self.x,
            "y": self.y,
            "w": w,
            "h": h,
            "opening": _png_b64(self.opening),
            "ring": _png_b64(self.ring),
            "iris": _png_b64(self.iris),
            "upper": _png_b64(self.upper),
            "lower": _png_b64(self.lower),
            "top": [round(float(v), 3) for v in self.top],
            "bottom": [round(float(v), 3) for v in self.bottom],
            "closed": [round(float(v), 3) for v in self.closed],
            "travel": [round(float(v), 3) for v in self.travel],
            "lid_colour": list(self.lid_colour),
            "lid_span": list(self.lid_span),
            "lid_width": self.lid_width,
        }


@dataclass
class MouthRig:
    """Where the mouth is and the colours a new mouth shape is drawn in."""

    cx: float
    cy: float
    half_width: float  # open mouth, px
    height: float  # at mouth_open = 1, px
    line_width: float
    line: tuple[int, int, int]
    inside: tuple[int, int, int]
    tongue: tuple[int, int, int]
    original: Sprite | None  # the avatar's own mouth, shown at rest

    def shape(self, c: Mapping[str, float]) -> dict[str, float]:
        """The drawn shape's numbers (shared with rig.js): corners, lip middles, openness."""
        va, vi, vu, ve, vo = (c[f"vowel_{v}"] for v in "aiueo")
        m = max(c["mouth_open"], va, vi, vu, ve, vo)
        vsum = va + vi + vu + ve + vo
        if vsum > 0:  # the vowel mix, normalised, shapes the open mouth
            va, vi, vu, ve, vo = (v / vsum for v in (va, vi, vu, ve, vo))
        fw = 1.0 + 0.35 * vi + 0.15 * ve - 0.40 * vu - 0.20 * vo
        fh = 1.0 + 0.15 * va - 0.55 * vi - 0.15 * vu - 0.30 * ve + 0.10 * vo
        s = c["smile"]
        hw = self.half_width * fw * (0.75 + 0.25 * m) * (1.0 + 0.15 * max(s, 0.0))
        hh = self.height * m * fh
        lift = s * 0.35 * self.half_width  # corners up for a smile, down for a frown
        return {
            "open": m,
            "hw": hw,
            "corner_y": self.cy - lift,
            "upper_y": self.cy - 0.30 * hh - 0.25 * lift,
            "lower_y": self.cy + 0.70 * hh + 0.25 * lift,
            "teeth": 0.5 * (vi + ve) if vsum > 0 else 0.0,
            "fade": min(1.0, max(m, abs(s)) / RIG_CONSTANTS["mouth_fade"]),
        }

    def draw(self, c: Mapping[str, float], size: int) -> tuple[np.ndarray, int, int]:
        """The drawn mouth (premultiplied float patch) and its top-left corner."""
        from PIL import Image, ImageDraw

        sh = self.shape(c)
        ss = 4  # supersampling: the page's canvas anti-aliases its paths
        pad = int(self.half_width * 2 + self.height + self.line_width * 2 + 4)
        x0, y0 = int(self.cx) - pad, int(self.cy) - pad
        n = 2 * pad
        img = Image.new("RGBA", (n * ss, n * ss), (0, 0, 0, 0))
        d = ImageDraw.Draw(img)

        def pt(x: float, y: float) -> tuple[float, float]:
            return ((x - x0) * ss, (y - y0) * ss)

        def curve(mid_y: float, k: int = 24) -> list[tuple[float, float]]:
            # Quadratic Bezier from the left corner to the right one through mid_y at the middle.
            ctrl = 2.0 * mid_y - sh["corner_y"]
            t = np.linspace(0.0, 1.0, k)
            xs = self.cx - sh["hw"] + 2.0 * sh["hw"] * t
            ys = (1 - t) ** 2 * sh["corner_y"] + 2 * (1 - t) * t * ctrl + t**2 * sh["corner_y"]
            return [pt(x, y) for x, y in zip(xs, ys)]

        lw = max(1, round(self.line_width * ss))
        if sh["open"] < 0.04:
            mid = self.cy + (self.cy - sh["corner_y"])  # the closed line sags where the corners lift
            d.line(curve(0.5 * (mid + self.cy)), fill=(*self.line, 255), width=lw, joint="curve")
        else:
            up, lo = curve(sh["upper_y"]), curve(sh["lower_y"])
            outline = up + lo[::-1]
            d.polygon(outline, fill=(*self.inside, 255))
            # Tongue: an ellipse in the lower part, clipped to the mouth.
            mask = Image.new("L", img.size, 0)
            ImageDraw.Draw(mask).polygon(outline, fill=255)
            tongue = Image.new("RGBA", img.size, (0, 0, 0, 0))
            ty = sh["lower_y"] - 0.2 * (sh["lower_y"] - sh["upper_y"])
            rx, ry = 0.6 * sh["hw"], 0.35 * (sh["lower_y"] - sh["upper_y"])
            ImageDraw.Draw(tongue).ellipse(
                [pt(self.cx - rx, ty - ry), pt(self.cx + rx, ty + ry)], fill=(*self.tongue, 255)
            )
            if sh["teeth"] > 0:
                th = sh["teeth"] * 0.35 * (sh["lower_y"] - sh["upper_y"])
                ImageDraw.Draw(tongue).rectangle(
                    [pt(self.cx - sh["hw"], sh["upper_y"] - 4), pt(self.cx + sh["hw"], sh["upper_y"] + th)],
                    fill=(250, 250, 250, 255),
                )
            img.paste(tongue, (0, 0), Image.composite(tongue, Image.new("RGBA", img.size), mask))
            d.line([*outline, outline[0]], fill=(*self.line, 255), width=lw, joint="curve")
        small = img.resize((n, n), Image.Resampling.BOX)
        return _premul(np.asarray(small)), x0, y0

    def to_json(self) -> dict[str, Any]:
        return {
            "cx": self.cx,
            "cy": self.cy,
            "half_width": self.half_width,
            "height": self.height,
            "line_width": self.line_width,
            "line": list(self.line),
            "inside": list(self.inside),
            "tongue": list(self.tongue),
            "original": self.original.to_json() if self.original is not None else None,
        }


@dataclass
class HeadRig:
    """Neck pivot and the rows where the head's weight falls from 1 (chin) to 0 (shoulders)."""

    pivot_x: float
    pivot_y: float
    chin_y: float
    shoulder_y: float

    def weight(self, y: np.ndarray) -> np.ndarray:
        t = np.clip((self.shoulder_y - y) / max(self.shoulder_y - self.chin_y, 1.0), 0.0, 1.0)
        return t * t * (3.0 - 2.0 * t)  # smoothstep


@dataclass
class AvatarRig:
    """A rigged avatar: :meth:`from_parts` builds it, :meth:`render` draws a frame."""

    size: int
    plate: np.ndarray  # (S, S, 4) uint8
    eyes: dict[str, EyeRig]
    brows: Sprite | None
    brow_gap: float
    mouth: MouthRig | None
    head: HeadRig
    warnings: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_parts(cls, image: np.ndarray, parts: np.ndarray, require_face: bool = True) -> AvatarRig:
        """Rig an ``(S, S, 4)`` uint8 RGBA avatar from its ``(S, S)`` part-id map.

        Part ids are :data:`~avatarforge.data.procedural.schema.PART_IDS` (the renderer's
        ``return_parts`` masks, or the refiner's prediction). ``require_face=False`` accepts
        a part map without eyes: the rig then only moves the whole avatar (head pose, sway,
        breath) and says so in :attr:`warnings`.

        Raises:
            RigError: not RGBA, shapes that differ, or (``require_face``) no eyes in the part map.
        """
        import cv2

        if image.ndim != 3 or image.shape[2] != 4 or image.dtype != np.uint8:
            raise RigError(f"a rig needs a (S, S, 4) uint8 RGBA avatar, got {image.shape} {image.dtype}")
        S = image.shape[0]
        if image.shape[:2] != (S, S) or parts.shape != (S, S):
            raise RigError(f"image {image.shape[:2]} and part map {parts.shape} must be the same square size")
        P = {name: parts == i for name, i in PART_IDS.items()}
        feature = P["eye_white"] | P["iris"] | P["eye_line"]
        if feature.sum() < 8:
            if require_face:
                raise RigError("no eyes in the part map: the rig needs an avatar with a visible face")
            return cls._pose_only(image)
        warnings: list[str] = []
        ys, xs = np.nonzero(feature)
        mid_x = 0.5 * (xs.min() + xs.max())

        # Plate: eyes and mouth painted out with the surrounding skin (hair and outlines
        # next to them must not bleed in), then the brows with whatever is around them
        # (anime brows are often drawn over the fringe).
        skin = P["skin"]
        skin_rgb = image[skin][:, :3]
        skin_colour = np.median(skin_rgb, axis=0) if len(skin_rgb) else np.array([240.0, 210.0, 190.0])
        grow = max(2, S // 100)  # past the anti-aliased edge of each part
        plate = image.copy()
        # What the plate repaints; the sprites below cover exactly these pixels with the
        # avatar's own at rest, so a rig at rest is the avatar (no halo where the repaint
        # differs from a soft original).
        removed_face = _dilate(feature | P["mouth"], grow)
        removed_brows = _dilate(P["eyebrow"], grow)
        for remove, skin_only in ((removed_face, True), (removed_brows, False)):
            if not remove.any():
                continue
            src = plate[..., :3].copy()
            if skin_only:
                ring = _dilate(remove, max(4, S // 64)) & ~remove
                # Blush and shadows are skin in the part map but must not smear into the lid.
                far = np.abs(src.astype(np.float32) - skin_colour).sum(axis=-1) > 30
                src[ring & (~skin | far)] = skin_colour.astype(np.uint8)
            filled = cv2.inpaint(src, remove.astype(np.uint8), max(3, S // 100), cv2.INPAINT_TELEA)
            plate[remove, :3] = filled[remove]

        # Eyes, one per side of the face.
        eyes: dict[str, EyeRig] = {}
        hole_all = P["eye_white"] | P["iris"]
        cols = np.arange(S)[None, :]
        for side, on_side in (("r", cols < mid_x), ("l", cols >= mid_x)):
            region = feature & on_side
            hole = hole_all & on_side
            if hole.sum() < max(6, (S // 64) ** 2):
                warnings.append(
                    f"the avatar's {'left' if side == 'l' else 'right'} eye is closed in the picture: "
                    "it cannot open (rig an avatar with open eyes)"
                )
                continue
            x0, y0, x1, y1 = _bbox(_dilate(region, 1), grow + 2, S)
            box = (slice(y0, y1), slice(x0, x1))
            h_, w_ = y1 - y0, x1 - x0
            hb = hole[box]
            top = np.full(w_, np.nan)
            bottom = np.full(w_, np.nan)
            any_col = hb.any(axis=0)
            rows = np.arange(h_)
            top[any_col] = np.array([rows[hb[:, j]].min() for j in np.nonzero(any_col)[0]])
            bottom[any_col] = np.array([rows[hb[:, j]].max() + 1 for j in np.nonzero(any_col)[0]])
            top, bottom = _fill_nan(top), _fill_nan(bottom)
            closed = top + RIG_CONSTANTS["closed_at"] * (bottom - top)
            crop = image[box]
            lash = P["eye_line"][box]
            upper_m = lash & (rows[:, None] < 0.5 * (top + bottom)[None, :])
            lower_m = lash & ~upper_m
            # Soft edges: one pixel of the neighbouring colours at half strength.
            opening = np.zeros_like(crop)
            white = image[P["eye_white"] & on_side][:, :3]
            white_c = np.median(white, axis=0) if len(white) else np.array([250.0, 250.0, 252.0])
            opening[..., :3] = crop[..., :3]
            opening[P["iris"][box], :3] = white_c.astype(np.uint8)
            opening[..., 3] = np.where(_dilate(hb, 1), 255, 0).astype(np.uint8)
            # The repainted ring around this eye, the avatar's own pixels: shown while the eye
            # is open (a rig at rest is the avatar, no halo where the repaint differs from a
            # soft original), faded out as it closes (no ghost of the open eye's outline).
            ring_m = removed_face[box] & on_side[:, x0:x1] & ~P["mouth"][box] & ~_dilate(hb, 1) & ~lash
            ring = crop.copy()
            ring[..., 3] = np.where(ring_m, crop[..., 3], 0)
            iris = crop.copy()
            iris[..., 3] = np.where(P["iris"][box], crop[..., 3], 0)
            upper = crop.copy()
            upper[..., 3] = np.where(_dilate(upper_m, 1) & ~hb, crop[..., 3], 0)
            upper[upper_m, 3] = crop[upper_m, 3]
            lower = crop.copy()
            lower[..., 3] = np.where(lower_m, crop[..., 3], 0)
            half_w = max(float(any_col.sum()) / 2.0, 1.0)
            cols_with = np.nonzero(any_col)[0]
            dark = crop[(lash | hb) & (crop[..., 3] > 0)][:, :3].astype(np.float64)
            lum = dark @ np.array([0.3, 0.59, 0.11]) if len(dark) else np.zeros(0)
            lid_colour = (
                tuple(int(v) for v in np.median(dark[lum <= np.percentile(lum, 15)], axis=0) * 0.8)
                if len(dark)
                else (40, 30, 40)
            )
            half_h = max(float(np.median((bottom - top)[any_col])) / 2.0, 1.0)
            eyes[side] = EyeRig(
                side=side,
                x=x0,
                y=y0,
                opening=opening,
                ring=ring,
                iris=iris,
                upper=upper,
                lower=lower,
                top=top.astype(np.float32),
                bottom=bottom.astype(np.float32),
                closed=closed.astype(np.float32),
                travel=(RIG_CONSTANTS["gaze_x"] * half_w, RIG_CONSTANTS["gaze_y"] * half_h),
                lid_colour=lid_colour,
                lid_span=(int(cols_with[0]), int(cols_with[-1]) + 1),
                lid_width=max(1.0, S / 170),
            )

        # Eye centres (for the mouth and head geometry), from the eye regions.
        centres = []
        for on_side in (xs < mid_x, xs >= mid_x):
            if on_side.any():
                centres.append((float(xs[on_side].mean()), float(ys[on_side].mean())))
        cx = float(np.mean([c[0] for c in centres]))
        eye_y = float(np.mean([c[1] for c in centres]))
        eye_dist = abs(centres[-1][0] - centres[0][0]) if len(centres) == 2 else 0.2 * S

        # Brows.
        brows = None
        brow_gap = 0.04 * S
        if P["eyebrow"].any():
            bx0, by0, bx1, by1 = _bbox(removed_brows, 1, S)
            crop = image[by0:by1, bx0:bx1].copy()
            crop[..., 3] = np.where(removed_brows[by0:by1, bx0:bx1], crop[..., 3], 0)
            brows = Sprite(bx0, by0, crop)
            eye_top = min((e.y + float(e.top.min()) for e in eyes.values()), default=eye_y - 0.03 * S)
            brow_gap = max(eye_top - by1, 0.02 * S)

        # Mouth: the avatar's own at rest, drawn shapes when it moves.
        if P["mouth"].any():
            mys, mxs = np.nonzero(P["mouth"])
            mcx, mcy = 0.5 * (mxs.min() + mxs.max()), 0.5 * (mys.min() + mys.max())
            pix = image[P["mouth"]][:, :3].astype(np.float64)
            lum = pix @ np.array([0.3, 0.59, 0.11])
            line = np.median(pix[lum <= np.percentile(lum, 40)], axis=0)
            mouth_ring = _dilate(P["mouth"], grow) & removed_face
            mx0, my0, mx1, my1 = _bbox(mouth_ring, 1, S)
            crop = image[my0:my1, mx0:mx1].copy()
            crop[..., 3] = np.where(mouth_ring[my0:my1, mx0:mx1], crop[..., 3], 0)
            original: Sprite | None = Sprite(mx0, my0, crop)
        else:
            mcx, mcy = cx, eye_y + 0.62 * eye_dist
            line = skin_colour * 0.45
            original = None
            warnings.append("no mouth in the part map: the mouth is drawn at its usual place")
        line_t = tuple(int(v) for v in np.clip(line, 0, 255))
        mouth = MouthRig(
            cx=float(mcx),
            cy=float(mcy),
            half_width=RIG_CONSTANTS["mouth_width"] * eye_dist,
            height=RIG_CONSTANTS["mouth_height"] * eye_dist,
            line_width=max(1.0, S / 256),
            line=line_t,  # type: ignore[arg-type]
            inside=(112, 34, 48),
            tongue=(226, 112, 124),
            original=original,
        )

        chin = mcy + 0.45 * (mcy - eye_y)
        head = HeadRig(pivot_x=cx, pivot_y=chin + 0.03 * S, chin_y=chin, shoulder_y=chin + 0.10 * S)
        return cls(
            size=S,
            plate=plate,
            eyes=eyes,
            brows=brows,
            brow_gap=float(brow_gap),
            mouth=mouth,
            head=head,
            warnings=warnings,
        )

    @classmethod
    def _pose_only(cls, image: np.ndarray) -> AvatarRig:
        """No face found: a rig that moves the whole picture (pivot from the silhouette)."""
        S = image.shape[0]
        ys, xs = np.nonzero(image[..., 3] > 0)
        cx = float(xs.mean()) if len(xs) else S / 2
        top = float(ys.min()) if len(ys) else 0.0
        chin = top + 0.55 * (S - top)
        return cls(
            size=S,
            plate=image.copy(),
            eyes={},
            brows=None,
            brow_gap=0.04 * S,
            mouth=None,
            head=HeadRig(pivot_x=cx, pivot_y=chin + 0.03 * S, chin_y=chin, shoulder_y=chin + 0.10 * S),
            warnings=[
                "no face found in the part map: the rig moves the whole avatar only (no blinks or mouth)"
            ],
        )

    # ------------------------------------------------------------------ drawing
    def face(self, c: Mapping[str, float]) -> np.ndarray:
        """Step 1: the unwarped picture (premultiplied float) with the face parts drawn."""
        S = self.size
        k = RIG_CONSTANTS
        out = _premul(self.plate)
        px = c["head_yaw"] * k["parallax"] * S
        py = -c["head_pitch"] * k["parallax"] * S
        for side, eye in self.eyes.items():
            _over(out, _premul(eye.ring) * c[f"eye_open_{side}"], eye.x + px, eye.y + py)
            patch = eye.draw(c[f"eye_open_{side}"], (c["gaze_x"], c["gaze_y"]), c["smile"])
            _over(out, patch, eye.x + px, eye.y + py)
        if self.brows is not None:
            lift = c["brow_y"] * k["brow_travel"] * self.brow_gap + 0.006 * S * max(c["smile"], 0.0)
            _over(out, _premul(self.brows.rgba), self.brows.x + px, self.brows.y - lift + py)
        if self.mouth is None:
            return out
        sh = self.mouth.shape(c)
        if self.mouth.original is not None and sh["fade"] < 1.0:
            o = self.mouth.original
            _over(out, _premul(o.rgba) * (1.0 - sh["fade"]), o.x + px, o.y + py)
        if sh["fade"] > 0.0 or self.mouth.original is None:
            patch, x0, y0 = self.mouth.draw(c, S)
            fade = sh["fade"] if self.mouth.original is not None else 1.0
            _over(out, patch * fade, x0 + px, y0 + py)
        return out

    def warp_maps(self, c: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """Step 2's inverse map: for every output pixel, the source pixel (float32 maps).

        Forward: a source pixel at row y moves by the head transform weighted by
        ``w(y)`` (rotation about the neck pivot plus a shift), then by the body's sway and
        breath. The inverse is found by fixed-point iteration on the source row (the weight
        varies slowly, three steps converge to well under a pixel).
        """
        S = self.size
        k = RIG_CONSTANTS
        hd = self.head
        yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
        sy = yy.copy()
        for _ in range(3):
            w = hd.weight(sy)
            sway, lift = self._body(sy, c)
            ang = np.deg2rad(k["roll_deg"] * c["head_tilt"]) * w
            tx = c["head_yaw"] * k["yaw_shift"] * S * w + sway
            ty = -c["head_pitch"] * k["pitch_shift"] * S * w - lift
            # Undo: shift back, then rotate back about the pivot.
            qx, qy = xx - tx - hd.pivot_x, yy - ty - hd.pivot_y
            ca, sa = np.cos(-ang), np.sin(-ang)
            sx_ = ca * qx - sa * qy + hd.pivot_x
            sy = (sa * qx + ca * qy + hd.pivot_y).astype(np.float32)
        return sx_.astype(np.float32), sy

    def _body(self, y: np.ndarray, c: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """Sway (x shift, more at the top) and breath (lift, from 0 at the bottom edge)."""
        S = self.size
        k = RIG_CONSTANTS
        up = np.clip((S - y) / S, 0.0, 1.0)
        sway = c["body_sway"] * k["sway_shift"] * S * up
        chest = np.clip((S - y) / max(S - self.head.shoulder_y, 1.0), 0.0, 1.0)
        lift = c["breath"] * k["breath_lift"] * S * chest
        return sway, lift

    def render(self, controls: Mapping[str, Any] | None = None) -> np.ndarray:
        """One frame, ``(S, S, 4)`` uint8 straight RGBA, for these live controls."""
        import cv2

        c = check_live_controls(controls)
        face = self.face(c)
        if any(c[n] for n in ("head_yaw", "head_pitch", "head_tilt", "body_sway", "breath")):
            mx, my = self.warp_maps(c)
            # Replicate: the figure goes on below the frame (the body's cut edge stays filled).
            face = cv2.remap(face, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return _unpremul(face)

    # ------------------------------------------------------------------ the page's copy
    def to_json(self) -> dict[str, Any]:
        """Everything the overlay page needs to draw frames itself (PNG layers as data URLs)."""
        return {
            "format": "avatarforge-rig",
            "version": 1,
            "size": self.size,
            "constants": RIG_CONSTANTS,
            "controls": {n: list(r) for n, r in LIVE_CONTROLS.items()},
            "neutral": NEUTRAL_LIVE,
            "plate": _png_b64(self.plate),
            "eyes": {s: e.to_json() for s, e in self.eyes.items()},
            "brows": self.brows.to_json() if self.brows is not None else None,
            "brow_gap": self.brow_gap,
            "mouth": self.mouth.to_json() if self.mouth is not None else None,
            "head": {
                "pivot_x": self.head.pivot_x,
                "pivot_y": self.head.pivot_y,
                "chin_y": self.head.chin_y,
                "shoulder_y": self.head.shoulder_y,
            },
            "warnings": self.warnings,
        }
