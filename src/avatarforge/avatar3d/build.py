"""The layered 2.5D head-and-bust model: an avatar and its part map cut into textured shells.

From back to front (z towards the viewer, metres, VRM 1.0 orientation: the model faces +Z):

* **back hair**: the head's outline filled in hair colour, a flat card behind the head (what a
  turned head shows behind the face), and the hair and accessories outside the head's
  outline, a surface that starts at the head's edge and falls back to that card;
* **body**: outfit, neck and chest skin, a shallow half cylinder, with the neck continued
  under the chin (what shows when the head turns);
* **head**: face skin, eyes, brows and mouth on a shallow dome (an ellipsoid fitted to the
  face: eyes and nose sit in front of the cheeks, so they move with parallax as it turns);
* **front hair**: hair and accessories inside the head's outline (bangs), just in front of
  the face, following the dome;
* **expression patches** just in front of the face: for every expression, the pixels that
  :meth:`~avatarforge.animate.rig.AvatarRig.render` changes (closed eyes, vowel mouths, a
  smile...), cut from the rig's own renders (never hand-painted). Each patch is bound to one
  morph target: eyes and mouths open downwards from the patch's top edge (a lid closing, a
  jaw dropping: weight 0 is a zero-height strip, weight 1 the full picture), whole-face
  expressions and gaze move from just behind the face to just in front of it (they show
  from weight 0.5).

Every layer is a grid mesh (cells that touch its pixels) textured from one atlas (texture
mapping: a vertex's UV is its pixel in the avatar, moved to the layer's place in the atlas),
and skinned to a full humanoid skeleton (head layers to ``head``; body to ``chest``/``neck``
by height). In the front view every pixel is drawn by exactly the layer that owns it in the
part map, so the model looks like the 2D avatar from the front.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avatarforge.avatar3d.source import AvatarSource, check_avatar

__all__ = [
    "BONES",
    "EXPRESSIONS",
    "VRM0_PRESETS",
    "BuiltModel",
    "Piece",
    "build_model",
]

#: Humanoid bones (VRM names) -> parent; every bone VRM 0.x and 1.0 require, in joint order.
BONES: dict[str, str | None] = {
    "hips": None,
    "spine": "hips",
    "chest": "spine",
    "neck": "chest",
    "head": "neck",
    "leftUpperLeg": "hips",
    "leftLowerLeg": "leftUpperLeg",
    "leftFoot": "leftLowerLeg",
    "rightUpperLeg": "hips",
    "rightLowerLeg": "rightUpperLeg",
    "rightFoot": "rightLowerLeg",
    "leftUpperArm": "chest",
    "leftLowerArm": "leftUpperArm",
    "leftHand": "leftLowerArm",
    "rightUpperArm": "chest",
    "rightLowerArm": "rightUpperArm",
    "rightHand": "rightLowerArm",
}
JOINT = {name: i for i, name in enumerate(BONES)}

#: VRM 1.0 preset expression -> (the rig's live controls that draw it, how it appears).
#: "squash": opens downwards from its top edge as the weight grows; "pop": shows from 0.5.
#: lookLeft is the character's left = the image's right = gaze_x > 0.
EXPRESSIONS: dict[str, tuple[dict[str, float], str]] = {
    "blink": ({"eye_open_l": 0.0, "eye_open_r": 0.0}, "squash"),
    "blinkLeft": ({"eye_open_l": 0.0}, "squash"),
    "blinkRight": ({"eye_open_r": 0.0}, "squash"),
    "aa": ({"vowel_a": 1.0}, "squash"),
    "ih": ({"vowel_i": 1.0}, "squash"),
    "ou": ({"vowel_u": 1.0}, "squash"),
    "ee": ({"vowel_e": 1.0}, "squash"),
    "oh": ({"vowel_o": 1.0}, "squash"),
    "happy": ({"smile": 1.0, "mouth_open": 0.35, "brow_y": 0.3}, "pop"),
    "angry": ({"brow_y": -1.0, "smile": -0.8}, "pop"),
    "surprised": ({"brow_y": 1.0, "mouth_open": 0.55, "vowel_o": 0.6}, "pop"),
    "lookUp": ({"gaze_y": 1.0}, "pop"),
    "lookDown": ({"gaze_y": -1.0}, "pop"),
    "lookLeft": ({"gaze_x": 1.0}, "pop"),
    "lookRight": ({"gaze_x": -1.0}, "pop"),
}

#: VRM 1.0 preset -> (VRM 0.x group name, presetName).
VRM0_PRESETS: dict[str, tuple[str, str]] = {
    "blink": ("Blink", "blink"),
    "blinkLeft": ("Blink_L", "blink_l"),
    "blinkRight": ("Blink_R", "blink_r"),
    "aa": ("A", "a"),
    "ih": ("I", "i"),
    "ou": ("U", "u"),
    "ee": ("E", "e"),
    "oh": ("O", "o"),
    "happy": ("Joy", "joy"),
    "angry": ("Angry", "angry"),
    "surprised": ("surprised", "unknown"),  # not a 0.x preset: a custom group, named as in 1.0
    "lookUp": ("LookUp", "lookup"),
    "lookDown": ("LookDown", "lookdown"),
    "lookLeft": ("LookLeft", "lookleft"),
    "lookRight": ("LookRight", "lookright"),
}

#: Model scale: the head's half width, in metres (anime proportions: a big head).
HEAD_HALF_WIDTH_M = 0.09
#: Height of the head bone above the floor, metres (hips at ~0.9 m).
HEAD_Y_M = 1.36
#: The part ids that make each layer (hair-like parts split by the head outline).
_FACE_PARTS = ("eye_white", "iris", "eye_line", "eyebrow", "mouth")
_HAIR_PARTS = ("hair", "hair_tie", "accessory")


@dataclass
class Piece:
    """One textured, skinned piece of geometry cut from the avatar."""

    name: str
    rgba: np.ndarray  # (h, w, 4) uint8 texture crop (straight alpha)
    x0: int  # crop origin in avatar pixels
    y0: int
    px: np.ndarray  # (n, 2) float: each vertex's avatar pixel (texture coordinate)
    pos: np.ndarray  # (n, 3) float32 rest position, metres
    normal: np.ndarray  # (n, 3) float32
    tris: np.ndarray  # (m, 3) uint32
    joints: np.ndarray  # (n, 4) uint8 joint indices (JOINT)
    weights: np.ndarray  # (n, 4) float32, rows sum to 1
    expression: str | None = None  # the morph target this piece belongs to
    delta: np.ndarray | None = None  # (n, 3) float32 morph displacement at weight 1


@dataclass
class BuiltModel:
    """The layered model: base pieces, expression patches, skeleton and framing."""

    name: str
    size: int
    image: np.ndarray  # the source avatar (S, S, 4)
    pieces: list[Piece]  # back to front
    patches: list[Piece]
    expressions: list[str]  # morph target order of the expression mesh
    bones: dict[str, np.ndarray]  # world rest positions (metres)
    framing: dict[str, float]  # avatar pixel <-> metres (for front renders)
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers
def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    import cv2

    if r <= 0:
        return mask.copy()
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask.astype(np.uint8), k).astype(bool)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _bleed(rgba: np.ndarray, steps: int = 4) -> np.ndarray:
    """Colours spread into transparent texels (alpha unchanged), so texture filtering at a
    layer's edge never mixes in black."""
    import cv2

    out = rgba.copy()
    have = out[..., 3] > 0
    if have.all() or not have.any():
        return out
    rgb = out[..., :3].astype(np.float32) * have[..., None]
    w = have.astype(np.float32)
    k = np.ones((3, 3), np.float32)
    for _ in range(steps):
        s = cv2.filter2D(rgb, -1, k, borderType=cv2.BORDER_CONSTANT)
        n = cv2.filter2D(w, -1, k, borderType=cv2.BORDER_CONSTANT)
        grow = (n > 0) & (w == 0)
        rgb[grow] = s[grow] / n[grow, None]
        w = np.where(grow, 1.0, w)
    out[..., :3] = np.where(have[..., None], out[..., :3], np.clip(rgb, 0, 255).astype(np.uint8))
    return out


def _crop(arr: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """``arr[y0:y0+h, x0:x0+w]``, zero-padded where it runs past the edge."""
    out = np.zeros((h, w, *arr.shape[2:]), arr.dtype)
    H, W = arr.shape[:2]
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
    if xa < xb and ya < yb:
        out[ya - y0 : yb - y0, xa - x0 : xb - x0] = arr[ya:yb, xa:xb]
    return out


def _grid(mask: np.ndarray, cell: int) -> tuple[int, int, int, int, np.ndarray, np.ndarray] | None:
    """A grid mesh over ``mask``: (x0, y0, w, h, vertex pixels (n, 2), triangles (m, 3)).

    Cells are ``cell`` px squares; a cell is kept when any pixel of it is in the mask. The
    box (x0, y0, w, h) is a whole number of cells. Triangles wind counter-clockwise seen from
    the front (+Z, y up).
    """
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    x0, y0 = int(xs.min()), int(ys.min())
    nx = (int(xs.max()) - x0) // cell + 1
    ny = (int(ys.max()) - y0) // cell + 1
    w, h = nx * cell, ny * cell
    sub = _crop(mask, x0, y0, w, h)
    used = sub.reshape(ny, cell, nx, cell).any(axis=(1, 3))
    corner = np.zeros((ny + 1, nx + 1), bool)
    corner[:-1, :-1] |= used
    corner[1:, :-1] |= used
    corner[:-1, 1:] |= used
    corner[1:, 1:] |= used
    ids = np.full(corner.shape, -1, np.int64)
    ids[corner] = np.arange(int(corner.sum()))
    vi, vj = np.nonzero(corner)
    px = np.stack([x0 + vj * cell, y0 + vi * cell], axis=1).astype(np.float64)
    ci, cj = np.nonzero(used)
    tl, tr = ids[ci, cj], ids[ci, cj + 1]
    bl, br = ids[ci + 1, cj], ids[ci + 1, cj + 1]
    tris = np.concatenate([np.stack([tl, bl, br], 1), np.stack([tl, br, tr], 1)]).astype(np.uint32)
    return x0, y0, w, h, px, tris


@dataclass
class _Geometry:
    """Avatar pixels -> metres, and the depth of each layer's surface."""

    S: int
    m: float  # metres per pixel
    ox: float  # pixel column of the head bone (x = 0)
    oy: float  # pixel row of the head bone
    head_y: float
    hcx: float  # head ellipse (pixels)
    hcy: float
    rx: float
    ry: float
    body_rx: float

    @property
    def rxm(self) -> float:
        return self.rx * self.m

    def xy(self, px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (px[:, 0] - self.ox) * self.m, self.head_y - (px[:, 1] - self.oy) * self.m

    def dome(self, px: np.ndarray) -> np.ndarray:
        """0 at and outside the head's outline, 1 at its middle."""
        r2 = ((px[:, 0] - self.hcx) / self.rx) ** 2 + ((px[:, 1] - self.hcy) / self.ry) ** 2
        return np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))

    def z(self, layer: str, px: np.ndarray) -> np.ndarray:
        r = self.rxm
        if layer == "fill":
            return np.full(len(px), -0.5 * r)
        if layer == "side":  # from the head's edge (in front) back to the fill's depth
            rr = np.sqrt(((px[:, 0] - self.hcx) / self.rx) ** 2 + ((px[:, 1] - self.hcy) / self.ry) ** 2)
            t = np.clip((rr - 1.0) / 0.35, 0.0, 1.0)
            return r * (0.38 * (1.0 - t) - 0.45 * t)
        if layer == "body":
            t = np.clip(1.0 - ((px[:, 0] - self.ox) / self.body_rx) ** 2, 0.0, 1.0)
            return r * (-0.3 + 0.5 * np.sqrt(t))
        head = r * (0.35 + 0.65 * self.dome(px))
        if layer == "head":
            return head
        if layer == "patch":
            return head + 0.03 * r
        if layer == "front":
            return head + 0.06 * r
        raise KeyError(layer)

    def positions(self, layer: str, px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions, normals) of vertices at avatar pixels ``px`` on ``layer``'s surface."""
        x, y = self.xy(px)
        z = self.z(layer, px)
        e = 1.0
        dx, dy = np.array([e, 0.0]), np.array([0.0, e])
        dzdx = (self.z(layer, px + dx) - self.z(layer, px - dx)) / (2 * e * self.m)
        dzdy = -(self.z(layer, px + dy) - self.z(layer, px - dy)) / (2 * e * self.m)
        n = np.stack([-np.clip(dzdx, -4, 4), -np.clip(dzdy, -4, 4), np.ones_like(z)], 1)
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        return np.stack([x, y, z], 1).astype(np.float32), n.astype(np.float32)


def _skin_weights(names: list[str], w: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    n = len(w[0])
    joints = np.zeros((n, 4), np.uint8)
    weights = np.zeros((n, 4), np.float32)
    for k, (name, wk) in enumerate(zip(names, w)):
        joints[:, k] = JOINT[name]
        weights[:, k] = wk
    weights /= weights.sum(axis=1, keepdims=True)
    return joints, weights


# --------------------------------------------------------------------------- building
def _fill_unlabelled(labels: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Visible pixels without a part (anti-aliased edges) take their nearest part's id."""
    import cv2

    known = labels > 0
    todo = (alpha > 0) & ~known
    if not todo.any() or not known.any():
        return labels
    _, lab = cv2.distanceTransformWithLabels(
        (~known).astype(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL
    )
    lut = np.zeros(int(lab.max()) + 1, np.uint8)
    lut[lab[known]] = labels[known]
    out = labels.copy()
    out[todo] = lut[lab[todo]]
    return out


def build_model(
    source: AvatarSource,
    *,
    cell: int | None = None,
    expressions: dict[str, tuple[dict[str, float], str]] | None = None,
) -> BuiltModel:
    """Cut ``source`` into the layered model (see the module doc).

    Args:
        source: the avatar and its part map (:func:`~avatarforge.avatar3d.source.load_avatar`).
        cell: grid cell of the layer meshes in avatar pixels (default ``S / 64``).
        expressions: expression name -> (rig controls, "squash" | "pop"); default
            :data:`EXPRESSIONS`.

    Raises:
        Avatar3DError: a bad image or part map, or no face to rig (no eyes in the part map).
    """
    import cv2

    from avatarforge.animate.rig import AvatarRig, RigError
    from avatarforge.avatar3d.source import Avatar3DError
    from avatarforge.data.procedural.schema import PART_IDS

    image, labels = source.image, source.parts
    check_avatar(image, labels, source.origin)
    S = image.shape[0]
    cell = cell or max(2, S // 64)
    alpha = image[..., 3]
    labels = _fill_unlabelled(labels, alpha)
    try:
        rig = AvatarRig.from_parts(image, labels)
    except RigError as e:
        raise Avatar3DError(f"{source.origin}: {e}") from None
    warnings = list(rig.warnings)
    P = {name: (labels == i) & (alpha > 0) for name, i in PART_IDS.items()}

    # Head outline: an ellipse from the eyes, chin and face width.
    feat = P["eye_white"] | P["iris"] | P["eye_line"]
    fy, fx = np.nonzero(feat)
    eye_y = float(fy.mean())
    cx = float(rig.head.pivot_x)
    chin = float(rig.head.chin_y)
    span = max(chin - eye_y, 0.05 * S)
    rows = slice(int(eye_y), int(min(chin, S - 1)) + 1)
    _sk_y, sk_x = np.nonzero(P["skin"][rows])
    near = np.abs(sk_x - cx) < 0.35 * S
    face_half = float(np.abs(sk_x[near] - cx).max()) if near.any() else 0.6 * span
    eye_half = 0.5 * (fx.max() - fx.min())
    rx = 1.08 * max(face_half, eye_half * 1.15, 0.04 * S)
    top = eye_y - 1.6 * span
    ry = 0.5 * (chin - top)
    hcy = chin - ry
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) + 0.5
    inside = ((xx - cx) / rx) ** 2 + ((yy - hcy) / ry) ** 2 <= 1.0

    # Layers: each visible pixel belongs to exactly one.
    face = np.zeros((S, S), bool)
    for n in _FACE_PARTS:
        face |= P[n]
    hairlike = np.zeros((S, S), bool)
    for n in _HAIR_PARTS:
        hairlike |= P[n]
    head_own = face | (P["skin"] & (yy < chin))
    front_own = hairlike & inside & ~head_own
    visible = alpha > 0
    back_own = visible & hairlike & ~inside
    body_own = visible & ~(head_own | front_own | back_own)

    bottom_row = P["outfit"] | body_own
    widths = np.nonzero(bottom_row[max(S - max(2, S // 16), 0) :].any(axis=0))[0]
    body_rx = max(0.5 * (widths.max() - widths.min()) if len(widths) else 0.45 * S, rx)
    m = HEAD_HALF_WIDTH_M / rx
    geo = _Geometry(S, m, cx, float(rig.head.pivot_y), HEAD_Y_M, cx, hcy, rx, ry, body_rx)

    # Layer textures: own pixels, plus a rim under the layers in front (no cracks between
    # layers where texture filtering meets), plus what a turned head uncovers.
    rim = max(1, S // 200)
    src = image.copy()
    hair_px = image[P["hair"] & back_own][:, :3]
    if len(hair_px) < 16:
        hair_px = image[P["hair"]][:, :3] if P["hair"].any() else image[visible][:, :3]
    hair_colour = (np.median(hair_px, axis=0) * 0.9).astype(np.uint8)
    neck_px = image[P["skin"] & (yy > chin)][:, :3]
    skin_px = neck_px if len(neck_px) else image[P["skin"]][:, :3] if P["skin"].any() else hair_px
    neck_colour = (np.median(skin_px, axis=0) * 0.92).astype(np.uint8)

    def layer_rgba(own: np.ndarray, under: np.ndarray, fill: np.ndarray | None, colour) -> np.ndarray:
        out = np.zeros_like(src)
        keep = own | (_dilate(own, rim) & under)
        out[keep] = src[keep]
        if fill is not None:
            f = fill & ~keep
            out[f, :3] = colour
            out[f, 3] = 255
        return out

    neck_row = int(min(chin + 0.04 * S, S - 1))
    nx_ = np.nonzero(P["skin"][neck_row])[0]
    nx_ = nx_[np.abs(nx_ - cx) < rx]
    neck_half = 0.5 * (nx_.max() - nx_.min() + 1) if len(nx_) > 1 else 0.35 * rx
    neck_fill = (np.abs(xx - cx) < neck_half) & (yy > chin - 0.45 * span) & (yy < neck_row + 1)
    back_fill = ((xx - cx) / (0.97 * rx)) ** 2 + ((yy - hcy) / (0.97 * ry)) ** 2 <= 1.0
    fill_rgba = np.zeros_like(src)
    fill_only = back_fill & ~back_own
    fill_rgba[fill_only, :3] = hair_colour
    fill_rgba[fill_only, 3] = 255
    layers = {
        "fill": fill_rgba,
        "side": layer_rgba(back_own, body_own | head_own | front_own, None, None),
        "body": layer_rgba(body_own, head_own | front_own, neck_fill, neck_colour),
        "head": layer_rgba(head_own, front_own, None, None),
        "front": layer_rgba(front_own, np.zeros_like(front_own), None, None),
    }

    shoulder = float(rig.head.shoulder_y)
    pieces: list[Piece] = []
    for name, rgba in layers.items():
        g = _grid(rgba[..., 3] > 0, cell)
        if g is None:
            continue
        x0, y0, w, h, px, tris = g
        pos, nrm = geo.positions(name, px)
        row = px[:, 1]
        if name in ("head", "front"):
            joints, weights = _skin_weights(["head"], [np.ones(len(px))])
        else:
            t = _smoothstep((shoulder - row) / max(shoulder - chin, 1.0))
            upper = "neck" if name == "body" else "head"
            joints, weights = _skin_weights([upper, "chest"], [t + 1e-6, 1.0 - t + 1e-6])
        pieces.append(
            Piece(name, _bleed(_crop(rgba, x0, y0, w, h)), x0, y0, px, pos, nrm, tris, joints, weights)
        )

    # Expression patches, from the rig's renders.
    def premul(x: np.ndarray) -> np.ndarray:
        return x[..., :3].astype(np.float32) * (x[..., 3:4] / 255.0)

    base = premul(rig.render({}))
    pcell = max(2, S // 128)
    grow = max(1, S // 256)
    patches: list[Piece] = []
    names: list[str] = []
    for ename, (controls, mode) in (expressions or EXPRESSIONS).items():
        frame = rig.render(controls)
        changed = np.abs(premul(frame) - base).max(axis=-1) > 6.0
        changed = cv2.morphologyEx(changed.astype(np.uint8), cv2.MORPH_OPEN, np.ones((2, 2), np.uint8)) > 0
        if changed.sum() < 4:
            warnings.append(f"expression {ename!r} changes nothing on this avatar: left out")
            continue
        names.append(ename)
        mask = _dilate(changed, grow) & visible
        n_groups, groups = cv2.connectedComponents(_dilate(mask, max(2, S // 40)).astype(np.uint8))
        for gi in range(1, n_groups):
            gm = mask & (groups == gi)
            g = _grid(gm, pcell)
            if g is None:
                continue
            x0, y0, w, h, px, tris = g
            rgba = _crop(frame, x0, y0, w, h)
            rgba[..., 3] = np.where(_crop(gm, x0, y0, w, h), rgba[..., 3], 0)
            full, nrm = geo.positions("patch", px)
            if mode == "squash":
                top_px = np.stack([px[:, 0], np.full(len(px), float(y0))], 1)
                rest, _ = geo.positions("patch", top_px)
            else:
                rest = full.copy()
                rest[:, 2] -= 0.06 * geo.rxm
            joints, weights = _skin_weights(["head"], [np.ones(len(px))])
            patches.append(
                Piece(
                    f"{ename}.{gi}",
                    _bleed(rgba),
                    x0,
                    y0,
                    px,
                    rest,
                    nrm,
                    tris,
                    joints,
                    weights,
                    expression=ename,
                    delta=(full - rest).astype(np.float32),
                )
            )

    # Skeleton (T-pose, translations only), from the avatar's proportions.
    hy = HEAD_Y_M
    neck_y = hy - 0.06
    chest_y = neck_y - 0.16
    spine_y = chest_y - 0.12
    hips_y = spine_y - 0.12
    arm = max(body_rx * 0.8 * m, 0.12)
    leg = 0.09
    bones = {
        "hips": (0.0, hips_y, 0.0),
        "spine": (0.0, spine_y, 0.0),
        "chest": (0.0, chest_y, 0.0),
        "neck": (0.0, neck_y, 0.0),
        "head": (0.0, hy, 0.0),
        "leftUpperLeg": (leg, hips_y - 0.06, 0.0),
        "leftLowerLeg": (leg, 0.48, 0.0),
        "leftFoot": (leg, 0.08, 0.0),
        "rightUpperLeg": (-leg, hips_y - 0.06, 0.0),
        "rightLowerLeg": (-leg, 0.48, 0.0),
        "rightFoot": (-leg, 0.08, 0.0),
        "leftUpperArm": (arm, chest_y + 0.12, 0.0),
        "leftLowerArm": (arm + 0.26, chest_y + 0.12, 0.0),
        "leftHand": (arm + 0.50, chest_y + 0.12, 0.0),
        "rightUpperArm": (-arm, chest_y + 0.12, 0.0),
        "rightLowerArm": (-arm - 0.26, chest_y + 0.12, 0.0),
        "rightHand": (-arm - 0.50, chest_y + 0.12, 0.0),
    }
    framing = {
        "size": float(S),
        "metres_per_pixel": m,
        "origin_x": float(cx),
        "origin_y": float(rig.head.pivot_y),
        "head_y": hy,
        "eye_y_m": float(hy - (eye_y - rig.head.pivot_y) * m),
        "eye_z_m": float(geo.z("head", np.array([[cx, eye_y]]))[0]),
        "face_box": [
            float(max(cx - rx, 0)),
            float(max(eye_y - 0.9 * span, 0)),
            float(min(cx + rx, S)),
            float(min(chin, S)),
        ],
    }
    return BuiltModel(
        name=source.name,
        size=S,
        image=image,
        pieces=pieces,
        patches=patches,
        expressions=names,
        bones={k: np.asarray(v, np.float64) for k, v in bones.items()},
        framing=framing,
        warnings=warnings,
        stats={"head_ellipse_px": [cx, hcy, rx, ry], "cell_px": cell, "patch_cell_px": pcell},
    )
