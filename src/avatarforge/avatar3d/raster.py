"""A CPU software rasteriser for the written models: front views, turntables, expression strips.

It reads the GLB/VRM file itself (:func:`load_scene`), so what it draws is what the file
holds: morph targets weighted by the VRM expression binds (1.0 or 0.x), linear-blend skinning
with a posed head bone, the texture atlas sampled bilinearly, the material's alpha cut-out
(or, with ``soft=True``, the texture's alpha blended front to back) and a depth test.
Orthographic camera, framed like the source avatar (the ``avatarforge`` extras of the scene),
so a front view lines up with the 2D avatar pixel for pixel. Pure numpy, vectorised over
triangles (a 512-px view of a 512-px avatar takes a fraction of a second).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avatarforge.avatar3d.gltf import accessor_array, read_glb

__all__ = ["PREVIEW_EXPRESSIONS", "Scene", "load_scene", "preview_frames", "render_view", "write_preview"]

#: Expressions the preview strip cycles through ("neutral" = none).
PREVIEW_EXPRESSIONS = (
    "neutral",
    "blink",
    "blinkLeft",
    "aa",
    "ih",
    "ou",
    "ee",
    "oh",
    "happy",
    "angry",
    "surprised",
    "lookLeft",
)


@dataclass
class _Mesh:
    pos: np.ndarray  # (n, 3)
    uv: np.ndarray  # (n, 2)
    joints: np.ndarray  # (n, 4)
    weights: np.ndarray  # (n, 4)
    tris: np.ndarray  # (m, 3)
    targets: list[np.ndarray]  # each (n, 3)
    node: int
    mesh: int


@dataclass
class Scene:
    """What the rasteriser needs from one file."""

    meshes: list[_Mesh]
    texture: np.ndarray  # (T, T, 4) float32 premultiplied in [0, 1]
    cutoff: float | None  # alpha cut-out (MASK), None for blending
    joints: list[int]  # skin joint node indices
    ibm: np.ndarray  # (J, 4, 4)
    parents: dict[int, int]
    rest: dict[int, np.ndarray]  # node -> local translation
    bone_nodes: dict[str, int]
    expressions: dict[str, list[tuple[int, int, float]]]  # name -> (mesh index, target, weight 0..1)
    vrm0: bool
    framing: dict[str, Any]


def load_scene(data: bytes | str | os.PathLike) -> Scene:
    """Parse a GLB/VRM written by :func:`~avatarforge.avatar3d.vrm.model_to_glb`."""
    from PIL import Image

    if not isinstance(data, (bytes, bytearray)):
        data = Path(data).read_bytes()
    doc, binary = read_glb(bytes(data))
    mat = doc["materials"][0]
    tex_index = mat["pbrMetallicRoughness"]["baseColorTexture"]["index"]
    img = doc["images"][doc["textures"][tex_index]["source"]]
    bv = doc["bufferViews"][img["bufferView"]]
    png = binary[bv.get("byteOffset", 0) : bv.get("byteOffset", 0) + bv["byteLength"]]
    tex = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA")).astype(np.float32) / 255.0
    tex[..., :3] *= tex[..., 3:4]
    cutoff = mat.get("alphaCutoff", 0.5) if mat.get("alphaMode") == "MASK" else None

    meshes = []
    for ni, node in enumerate(doc["nodes"]):
        if "mesh" not in node:
            continue
        for prim in doc["meshes"][node["mesh"]]["primitives"]:
            at = prim["attributes"]
            meshes.append(
                _Mesh(
                    pos=accessor_array(doc, binary, at["POSITION"]).astype(np.float64),
                    uv=accessor_array(doc, binary, at["TEXCOORD_0"]).astype(np.float64),
                    joints=accessor_array(doc, binary, at["JOINTS_0"]).astype(np.int64),
                    weights=accessor_array(doc, binary, at["WEIGHTS_0"]).astype(np.float64),
                    tris=accessor_array(doc, binary, prim["indices"]).reshape(-1, 3).astype(np.int64),
                    targets=[
                        accessor_array(doc, binary, t["POSITION"]).astype(np.float64)
                        for t in prim.get("targets", [])
                    ],
                    node=ni,
                    mesh=node["mesh"],
                )
            )
    skin = doc["skins"][0]
    ibm = accessor_array(doc, binary, skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1)
    parents = {c: i for i, n in enumerate(doc["nodes"]) for c in n.get("children", [])}
    rest = {i: np.asarray(n.get("translation", [0, 0, 0]), np.float64) for i, n in enumerate(doc["nodes"])}

    ext = doc.get("extensions", {})
    expressions: dict[str, list[tuple[int, int, float]]] = {}
    bone_nodes: dict[str, int] = {}
    vrm0 = "VRM" in ext
    node_mesh = {i: n["mesh"] for i, n in enumerate(doc["nodes"]) if "mesh" in n}
    if "VRMC_vrm" in ext:
        v = ext["VRMC_vrm"]
        bone_nodes = {k: b["node"] for k, b in v["humanoid"]["humanBones"].items()}
        for name, e in v.get("expressions", {}).get("preset", {}).items():
            expressions[name] = [
                (node_mesh[b["node"]], b["index"], b["weight"]) for b in e["morphTargetBinds"]
            ]
    elif vrm0:
        from avatarforge.avatar3d.build import VRM0_PRESETS

        v = ext["VRM"]
        bone_nodes = {b["bone"]: b["node"] for b in v["humanoid"]["humanBones"]}
        by_group = {g: name for name, (g, _) in VRM0_PRESETS.items()}
        for g in v["blendShapeMaster"]["blendShapeGroups"]:
            name = by_group.get(g["name"], g["name"])
            expressions[name] = [(b["mesh"], b["index"], b["weight"] / 100.0) for b in g["binds"]]
    else:  # plain glTF: morph targets by name
        for m in meshes:
            names = doc["meshes"][m.mesh].get("extras", {}).get("targetNames", [])
            for i, name in enumerate(names):
                expressions[name] = [(m.mesh, i, 1.0)]
        bone_nodes = {
            doc["nodes"][j]["name"][0].lower() + doc["nodes"][j]["name"][1:]: j for j in skin["joints"]
        }
    framing = doc["scenes"][doc.get("scene", 0)].get("extras", {}).get("avatarforge", {})
    return Scene(
        meshes, tex, cutoff, list(skin["joints"]), ibm, parents, rest, bone_nodes, expressions, vrm0, framing
    )


def _rot_y(deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_x(deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _joint_matrices(scene: Scene, pose: Mapping[int, np.ndarray]) -> np.ndarray:
    """(J, 4, 4) skinning matrices for local rotations ``pose`` (node -> 3x3)."""
    world: dict[int, np.ndarray] = {}

    def get(n: int) -> np.ndarray:
        if n not in world:
            local = np.eye(4)
            local[:3, 3] = scene.rest[n]
            if n in pose:
                local[:3, :3] = pose[n]
            world[n] = get(scene.parents[n]) @ local if n in scene.parents else local
        return world[n]

    return np.stack([get(j) @ scene.ibm[k] for k, j in enumerate(scene.joints)])


def _fragments(
    xy: np.ndarray, z: np.ndarray, uv: np.ndarray, tris: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (pixel index, depth, uv) whose pixel centre lies in a triangle."""
    a, b, c = xy[tris[:, 0]], xy[tris[:, 1]], xy[tris[:, 2]]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    lo = np.minimum(np.minimum(a, b), c)
    hi = np.maximum(np.maximum(a, b), c)
    x0 = np.clip(np.ceil(lo[:, 0] - 0.5), 0, size).astype(np.int64)
    y0 = np.clip(np.ceil(lo[:, 1] - 0.5), 0, size).astype(np.int64)
    x1 = np.clip(np.floor(hi[:, 0] - 0.5), -1, size - 1).astype(np.int64)
    y1 = np.clip(np.floor(hi[:, 1] - 0.5), -1, size - 1).astype(np.int64)
    keep = (np.abs(area) > 1e-9) & (x1 >= x0) & (y1 >= y0)
    span = np.maximum(x1 - x0 + 1, y1 - y0 + 1)
    out_p, out_z, out_uv = [], [], []
    bucket = np.where(keep, np.ceil(np.log2(np.maximum(span, 1))).astype(np.int64), -1)
    for k in np.unique(bucket[bucket >= 0]):
        sel = np.nonzero(bucket == k)[0]
        B = 1 << int(k)
        oy, ox = np.divmod(np.arange(B * B), B)
        px = x0[sel, None] + ox[None, :]
        py = y0[sel, None] + oy[None, :]
        inb = (px <= x1[sel, None]) & (py <= y1[sel, None])
        cx, cy = px + 0.5, py + 0.5
        t = tris[sel]
        A, Bv, C = a[sel], b[sel], c[sel]
        ar = area[sel][:, None]
        w0 = (
            (Bv[:, 0, None] - cx) * (C[:, 1, None] - cy) - (Bv[:, 1, None] - cy) * (C[:, 0, None] - cx)
        ) / ar
        w1 = ((C[:, 0, None] - cx) * (A[:, 1, None] - cy) - (C[:, 1, None] - cy) * (A[:, 0, None] - cx)) / ar
        w2 = 1.0 - w0 - w1
        inside = inb & (w0 >= -1e-7) & (w1 >= -1e-7) & (w2 >= -1e-7)
        ti, pi = np.nonzero(inside)
        if not len(ti):
            continue
        W0, W1, W2 = w0[ti, pi], w1[ti, pi], w2[ti, pi]
        tt = t[ti]
        out_p.append(py[ti, pi] * size + px[ti, pi])
        out_z.append(W0 * z[tt[:, 0]] + W1 * z[tt[:, 1]] + W2 * z[tt[:, 2]])
        out_uv.append(W0[:, None] * uv[tt[:, 0]] + W1[:, None] * uv[tt[:, 1]] + W2[:, None] * uv[tt[:, 2]])
    if not out_p:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 2))
    return np.concatenate(out_p), np.concatenate(out_z), np.concatenate(out_uv)


def _sample(tex: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear texture lookup (clamp to edge), premultiplied RGBA."""
    T = tex.shape[0]
    x = np.clip(uv[:, 0] * T - 0.5, 0, T - 1)
    y = np.clip(uv[:, 1] * T - 0.5, 0, T - 1)
    xi, yi = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    xj, yj = np.minimum(xi + 1, T - 1), np.minimum(yi + 1, T - 1)
    fx, fy = (x - xi)[:, None], (y - yi)[:, None]
    top = tex[yi, xi] * (1 - fx) + tex[yi, xj] * fx
    bot = tex[yj, xi] * (1 - fx) + tex[yj, xj] * fx
    return top * (1 - fy) + bot * fy


def render_view(
    model: bytes | str | os.PathLike | Scene,
    *,
    size: int | None = None,
    yaw: float = 0.0,
    head_yaw: float = 0.0,
    head_pitch: float = 0.0,
    expressions: Mapping[str, float] | None = None,
    soft: bool = False,
    zoom: float = 1.0,
) -> np.ndarray:
    """One view of the model: ``(size, size, 4)`` uint8 straight RGBA.

    Args:
        model: the file (bytes or path) or a :class:`Scene`.
        size: output side in pixels (default: the source avatar's size).
        yaw: turn the whole model about its vertical axis, degrees (+: it turns to its left).
        head_yaw, head_pitch: rotate the head bone, degrees.
        expressions: VRM expression name -> weight in [0, 1] (unknown names raise KeyError).
        soft: blend the texture's alpha (anti-aliased edges) instead of the material's cut-out.
        zoom: > 1 shows a smaller region around the head.
    """
    scene = model if isinstance(model, Scene) else load_scene(model)
    fr = scene.framing
    S = float(fr.get("size", 512))
    size = int(size or S)
    m = float(fr.get("metres_per_pixel", 0.6 / S))
    ox, oy = float(fr.get("origin_x", S / 2)), float(fr.get("origin_y", S / 2))
    head_y = float(fr.get("head_y", 1.36))

    weights: dict[tuple[int, int], float] = {}
    for name, w in (expressions or {}).items():
        if name == "neutral":
            continue
        if name not in scene.expressions:
            raise KeyError(
                f"unknown expression {name!r}; the model has {', '.join(sorted(scene.expressions))}"
            )
        for mesh, idx, bw in scene.expressions[name]:
            weights[(mesh, idx)] = weights.get((mesh, idx), 0.0) + float(w) * bw

    pose = {}
    if (head_yaw or head_pitch) and "head" in scene.bone_nodes:
        rot = _rot_y(head_yaw) @ _rot_x(-head_pitch)
        if scene.vrm0:  # the same turn seen from the model's own front (it faces -Z)
            flip = np.diag([-1.0, 1.0, -1.0])
            rot = flip @ rot @ flip
        pose[scene.bone_nodes["head"]] = rot
    J = _joint_matrices(scene, pose)
    view = _rot_y(yaw + (180.0 if scene.vrm0 else 0.0))
    scale = size / S * zoom
    frags_p, frags_z, frags_uv = [], [], []
    for mesh in scene.meshes:
        p = mesh.pos.copy()
        for k, t in enumerate(mesh.targets):
            w = weights.get((mesh.mesh, k), 0.0)
            if w:
                p += w * t
        M = J[mesh.joints]  # (n, 4, 4, 4)
        skin = np.einsum("nk,nkij->nij", mesh.weights, M)
        world = np.einsum("nij,nj->ni", skin[:, :3, :3], p) + skin[:, :3, 3]
        v = world @ view.T
        sx = (v[:, 0] / m + ox - S / 2) * scale + size / 2
        sy = (oy + (head_y - v[:, 1]) / m - S / 2) * scale + size / 2
        fp, fz, fuv = _fragments(np.stack([sx, sy], 1), v[:, 2], mesh.uv, mesh.tris, size)
        frags_p.append(fp)
        frags_z.append(fz)
        frags_uv.append(fuv)
    pix = np.concatenate(frags_p)
    z = np.concatenate(frags_z)
    col = _sample(scene.texture, np.concatenate(frags_uv))
    out = np.zeros((size * size, 4))
    if len(pix):
        cutoff = None if soft else scene.cutoff
        if cutoff is not None:
            ok = col[:, 3] >= cutoff
            pix, z, col = pix[ok], z[ok], col[ok]
            col = np.concatenate([col[:, :3] / np.maximum(col[:, 3:4], 1e-6), np.ones((len(col), 1))], 1)
        order = np.lexsort((-z, pix))
        pix, col = pix[order], col[order]
        if cutoff is not None:
            first = np.unique(pix, return_index=True)[1]
            out[pix[first]] = col[first]
        else:
            a = np.clip(col[:, 3], 0.0, 1.0 - 1e-6)
            la = np.log1p(-a)
            cs = np.cumsum(la)
            starts = np.unique(pix, return_index=True)[1]
            group = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(pix))))
            before = cs - la - (cs[starts] - la[starts])[group]
            contrib = col * np.exp(before)[:, None]
            for ch in range(4):
                out[:, ch] = np.bincount(pix, weights=contrib[:, ch], minlength=size * size)
    out = out.reshape(size, size, 4)
    a = out[..., 3:4]
    rgb = np.where(a > 1e-6, out[..., :3] / np.maximum(a, 1e-6), 0.0)
    return np.clip(np.rint(np.concatenate([rgb, a], -1) * 255), 0, 255).astype(np.uint8)


def _label(img: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    im = Image.fromarray(img)
    d = ImageDraw.Draw(im)
    d.rectangle([0, img.shape[0] - 14, img.shape[1], img.shape[0]], fill=(0, 0, 0, 140))
    d.text((4, img.shape[0] - 13), text, fill=(255, 255, 255, 255))
    return np.asarray(im)


def preview_frames(
    model: bytes | str | os.PathLike | Scene,
    *,
    size: int = 256,
    frames: int = 24,
    max_yaw: float = 30.0,
    expressions: Sequence[str] = PREVIEW_EXPRESSIONS,
) -> list[np.ndarray]:
    """Turntable (left: the model turning +-``max_yaw``) beside the expressions (right), RGBA."""
    scene = model if isinstance(model, Scene) else load_scene(model)
    names = [e for e in expressions if e == "neutral" or e in scene.expressions]
    stills = {e: _label(render_view(scene, size=size, expressions={e: 1.0}), e) for e in names}
    out = []
    for k in range(frames):
        yaw = max_yaw * math.sin(2 * math.pi * k / frames)
        left = _label(render_view(scene, size=size, yaw=yaw), f"yaw {yaw:+.0f}")
        right = stills[names[k * len(names) // frames]]
        out.append(np.concatenate([left, right], axis=1))
    return out


def write_preview(
    model: bytes | str | os.PathLike | Scene, path: str | os.PathLike, *, size: int = 256, frames: int = 24
) -> Path:
    """Write the turntable + expression animation (WebP/APNG/GIF by suffix; a still PNG strip
    for any other suffix) atomically."""
    from avatarforge.imageio import ANIMATION_FORMATS, save_animation, save_image

    path = Path(path)
    imgs = preview_frames(model, size=size, frames=frames)
    if path.suffix.lower() in ANIMATION_FORMATS:
        save_animation(path, imgs, fps=8)
    else:
        save_image(path, np.concatenate(imgs[:: max(1, len(imgs) // 4)], axis=0))
    return path
