"""The supersampled drawing surface: head pose, polygons, lines, clipping and the part-id map."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from avatarforge.data.procedural.geometry import stroke
from avatarforge.data.procedural.schema import PART_IDS, PART_NAMES

# Head turn: horizontal shift (unit coordinates) per unit of depth at |yaw| = 1.
_YAW_SHIFT = 0.045
# Head roll at |tilt| = 1, in radians, about the neck.
_TILT_RAD = math.radians(12.0)
_PIVOT = (0.5, 0.70)
# Head nod: vertical shift (unit coordinates) per unit of depth at |pitch| = 1 (+ = up), and
# the vertical squash of the head (about _PITCH_CY) that goes with it.
_PITCH_SHIFT = 0.035
_PITCH_SQUASH = 0.06
_PITCH_CY = 0.45
# Body sway: the whole figure leans about a point below the picture (the hips), in radians
# at |sway| = 1: the head moves ~3.8 % of the width, the shoulders ~2.3 %.
_SWAY_RAD = 0.045
_SWAY_PIVOT = (0.5, 1.3)
# Breath: the head, neck and shoulders rise this much (unit coordinates) at breath = 1; the
# chest below stretches so that the bottom edge stays put.
_BREATH_LIFT = 0.014
_BREATH_Y = (0.8, 1.0)


class Canvas:
    """A supersampled RGBA picture plus (optionally) a part-id map drawn with the same shapes."""

    def __init__(
        self,
        size: int,
        ss: int,
        yaw: float,
        tilt: float,
        parts: bool,
        *,
        pitch: float = 0.0,
        sway: float = 0.0,
        breath: float = 0.0,
    ) -> None:
        self.size = size
        self.ss = ss
        self.S = size * ss
        # Every shape is opaque, so each supersampled pixel is (0, 0, 0, 0) or has alpha
        # 255: the picture is already premultiplied. Drawing in "RGBa" lets the box filter
        # run without Pillow's premultiply pass; only the small result is converted.
        self.img = Image.new("RGBa", (self.S, self.S), (0, 0, 0, 0))
        self.draw = ImageDraw.Draw(self.img)
        self.lab = Image.new("L", (self.S, self.S), 0) if parts else None
        self.ldraw = ImageDraw.Draw(self.lab) if self.lab is not None else None
        self.shift = yaw * _YAW_SHIFT * self.S
        # Head parts: rotate about the neck pivot, then scale to pixels, as one affine map
        # p @ A + b (plus a per-depth horizontal shift for the turn).
        ang = tilt * _TILT_RAD
        c, s = math.cos(ang), math.sin(ang)
        rot_t = np.array([[c, s], [-s, c]])  # transpose of the rotation matrix
        pivot = np.array(_PIVOT)
        self.head_a = rot_t * self.S
        self.head_b = (pivot - pivot @ rot_t) * self.S
        # Line widths below one supersampled pixel vanish; this keeps thin lines visible.
        self.min_w = 1.0 / self.S
        # The live pose (nod, sway, breath). All zero: xf is exactly the expression-only map,
        # so neutral pictures stay bit-identical.
        self.pitch, self.sway, self.breath = float(pitch), float(sway), float(breath)
        self.posed = bool(self.pitch or self.sway or self.breath)
        ang = self.sway * _SWAY_RAD
        self._sway_rot_t = np.array([[math.cos(ang), math.sin(ang)], [-math.sin(ang), math.cos(ang)]])

    def xf(self, pts: np.ndarray, depth: float, head: bool = True) -> np.ndarray:
        """Unit coordinates -> canvas pixels, with the head pose applied to head parts."""
        if self.posed:
            return self._xf_posed(np.asarray(pts, dtype=np.float64), depth, head)
        if not head:
            return np.asarray(pts, dtype=np.float64) * self.S
        return np.asarray(pts, dtype=np.float64) @ self.head_a + (
            self.head_b[0] + self.shift * depth,
            self.head_b[1],
        )

    def _xf_posed(self, p: np.ndarray, depth: float, head: bool) -> np.ndarray:
        """xf with the live pose: nod (head parts), then the breath lift, then the sway lean."""
        if head:
            if self.pitch:
                # Nodding squashes the head vertically and moves parts up (+) by their depth.
                p = p.copy()
                p[:, 1] = _PITCH_CY + (p[:, 1] - _PITCH_CY) * (1.0 - _PITCH_SQUASH * abs(self.pitch))
                p[:, 1] -= self.pitch * _PITCH_SHIFT * depth
            out = p @ self.head_a + (self.head_b[0] + self.shift * depth, self.head_b[1])
            out[:, 1] -= self.breath * _BREATH_LIFT * self.S
        else:
            out = p * self.S
            if self.breath:
                y0, y1 = _BREATH_Y
                out[:, 1] -= (
                    self.breath * _BREATH_LIFT * self.S * np.clip((y1 - p[:, 1]) / (y1 - y0), 0.0, 1.0)
                )
        if self.sway:
            pivot = np.array(_SWAY_PIVOT) * self.S
            out = (out - pivot) @ self._sway_rot_t + pivot
        return out

    def w(self, width: float) -> float:
        """A line width of at least one supersampled pixel."""
        return max(width, self.min_w)

    def poly(self, pts: np.ndarray, color: tuple, part: str, depth: float = 0.0, head: bool = True) -> None:
        """Fill a polygon, and its part id in the part map."""
        xy = self.xf(pts, depth, head).ravel().tolist()
        self.draw.polygon(xy, fill=color)
        if self.ldraw is not None:
            self.ldraw.polygon(xy, fill=PART_IDS[part])

    def outline(
        self,
        pts: np.ndarray,
        color: tuple,
        part: str,
        width: float,
        depth: float = 0.0,
        head: bool = True,
    ) -> None:
        """A closed line of constant width along a polygon (line art, glasses rims).

        Drawn into the part map as well: half the line lies outside the polygon, and
        those pixels must not count as background (alpha > 0 there).
        """
        xy = self.xf(pts, depth, head)
        xy = np.concatenate([xy, xy[:1]]).ravel().tolist()
        px = max(1, round(width * self.S))
        self.draw.line(xy, fill=color, width=px, joint="curve")
        if self.ldraw is not None:
            self.ldraw.line(xy, fill=PART_IDS[part], width=px, joint="curve")

    def line(
        self,
        pts: np.ndarray,
        widths: np.ndarray | float,
        color: tuple,
        part: str,
        depth: float = 0.0,
        head: bool = True,
    ) -> None:
        """A variable-width line along ``pts`` (drawn as its outline polygon)."""
        w = np.maximum(np.asarray(widths, dtype=np.float64), self.min_w)
        self.poly(stroke(np.asarray(pts, dtype=np.float64), w), color, part, depth, head)

    def clipped(
        self,
        clip: np.ndarray,
        items: list[tuple],
        depth: float,
        head: bool = True,
        clip_depth: float | None = None,
    ) -> None:
        """Draw ``items`` (pts, color, part) only inside the polygon ``clip`` (placed at
        ``clip_depth`` if given, else at the items' ``depth``)."""
        c = self.xf(clip, depth if clip_depth is None else clip_depth, head)
        x0 = max(0, math.floor(c[:, 0].min()) - 1)
        y0 = max(0, math.floor(c[:, 1].min()) - 1)
        x1 = min(self.S, math.ceil(c[:, 0].max()) + 2)
        y1 = min(self.S, math.ceil(c[:, 1].max()) + 2)
        if x1 <= x0 or y1 <= y0:
            return
        off = np.array([x0, y0], dtype=np.float64)
        mask = Image.new("L", (x1 - x0, y1 - y0), 0)
        ImageDraw.Draw(mask).polygon((c - off).ravel().tolist(), fill=255)
        box = (x0, y0, x1, y1)
        patch = self.img.crop(box)
        pd = ImageDraw.Draw(patch)
        lpatch = self.lab.crop(box) if self.lab is not None else None
        lpd = ImageDraw.Draw(lpatch) if lpatch is not None else None
        for pts, color, part in items:
            xy = (self.xf(pts, depth, head) - off).ravel().tolist()
            pd.polygon(xy, fill=color)
            if lpd is not None:
                lpd.polygon(xy, fill=PART_IDS[part])
        self.img.paste(patch, (x0, y0), mask)
        if self.lab is not None and lpatch is not None:
            self.lab.paste(lpatch, (x0, y0), mask)

    def finish(self) -> np.ndarray:
        """Box-filter down to the output size: (size, size, 4) uint8, straight alpha."""
        small = self.img.resize((self.size, self.size), Image.Resampling.BOX) if self.ss > 1 else self.img
        out = np.asarray(small.convert("RGBA"), dtype=np.uint8).copy()
        out[out[..., 3] == 0, :3] = 0
        return out

    def part_masks(self) -> dict[str, np.ndarray]:
        """Boolean (size, size) mask per part; the masks partition the image.

        ``background`` is exactly the fully transparent pixels (alpha 0); every other pixel
        goes to the part covering most of it (ties to the earlier name in PART_NAMES).
        """
        assert self.lab is not None
        lab = np.asarray(self.lab).reshape(self.size, self.ss, self.size, self.ss)
        counts = np.stack([(lab == i).sum(axis=(1, 3), dtype=np.int32) for i in range(len(PART_NAMES))])
        winner = counts[1:].argmax(axis=0) + 1
        winner[counts[0] == self.ss * self.ss] = 0
        return {name: winner == i for i, name in enumerate(PART_NAMES)}


def supersample(size: int) -> int:
    """Supersampling factor: enough for smooth edges, small enough to stay fast."""
    if size <= 96:
        return 4
    if size <= 192:
        return 3
    return 2
