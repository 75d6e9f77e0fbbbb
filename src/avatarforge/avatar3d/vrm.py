"""Writing the layered model as VRM 1.0, VRM 0.x or plain glTF (GLB), and the export entry point.

* **VRM 1.0** (``VRMC_vrm``, the default): the model faces +Z; humanoid bones, meta,
  ``lookAt`` of type ``expression``, preset expressions bound to morph targets.
* **VRM 0.x** (``VRM``, ``--format vrm0``, for apps that read only 0.x such as VSeeFace): the
  same model turned to face -Z, as 0.x requires; blend-shape groups with weights 0-100; the
  glTF material used as it is (``VRM_USE_GLTFSHADER``).
* **GLB**: the same meshes, skeleton and morph targets without a VRM extension.

All three hold one material (unlit, alpha cut-out at 0.5, double sided) over one texture
atlas, two skinned meshes (``Body``: the layers; ``Face``: the expression patches with one
morph target per expression) and a thumbnail image. :func:`export_vrm` writes the file
atomically (a failed export never leaves a half-written file).
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avatarforge.avatar3d.build import BONES, VRM0_PRESETS, BuiltModel, Piece, build_model
from avatarforge.avatar3d.gltf import ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER, GltfBuilder
from avatarforge.avatar3d.source import Avatar3DError, load_avatar

__all__ = [
    "FORMATS",
    "VRM0_PRESETS",
    "VRM_LICENSE_URL",
    "ExportReport",
    "check_writable",
    "export_vrm",
    "model_to_glb",
]

FORMATS = ("vrm1", "vrm0", "glb")
#: The VRM Public License 1.0 (the VRM consortium's licence for avatars).
VRM_LICENSE_URL = "https://vrm.dev/licenses/1.0/"
_WHOLE_FACE = ("happy", "angry", "surprised")
#: Gaze angle (degrees) that gives a look* weight of 1 (they show from half of it).
LOOK_RANGE_DEG = 20.0


@dataclass
class ExportReport:
    """What :func:`export_vrm` wrote."""

    path: Path
    format: str
    bytes: int
    seconds: float
    texture_size: int
    vertices: int
    triangles: int
    expressions: list[str]
    warnings: list[str] = field(default_factory=list)
    preview: Path | None = None

    def summary(self) -> str:
        s = (
            f"wrote {self.path} ({self.format}, {self.bytes / 1e6:.2f} MB, {self.vertices} vertices, "
            f"{self.triangles} triangles, texture {self.texture_size} px, "
            f"{len(self.expressions)} expressions) in {self.seconds:.1f} s"
        )
        if self.preview is not None:
            s += f"; preview: {self.preview}"
        return s


# --------------------------------------------------------------------------- atlas
def _pack(pieces: list[Piece], pad: int = 2) -> tuple[int, list[tuple[int, int]]]:
    """Shelf-pack the pieces' crops: (atlas side, top-left of each), tallest first."""
    order = sorted(range(len(pieces)), key=lambda i: -pieces[i].rgba.shape[0])
    widest = max(p.rgba.shape[1] for p in pieces) + 2 * pad
    side = 64
    while side < widest:
        side *= 2
    while True:
        places: list[tuple[int, int] | None] = [None] * len(pieces)
        x = y = shelf = 0
        ok = True
        for i in order:
            h, w = pieces[i].rgba.shape[:2]
            if x + w + 2 * pad > side:
                x, y, shelf = 0, y + shelf, 0
            if y + h + 2 * pad > side:
                ok = False
                break
            places[i] = (x + pad, y + pad)
            x += w + 2 * pad
            shelf = max(shelf, h + 2 * pad)
        if ok:
            return side, places  # type: ignore[return-value]
        side *= 2


def _atlas(pieces: list[Piece], texture_size: int | None) -> tuple[np.ndarray, list[np.ndarray]]:
    """The atlas image (at ``texture_size``, default the packed size) and each piece's UVs."""
    from PIL import Image

    side, places = _pack(pieces)
    atlas = np.zeros((side, side, 4), np.uint8)
    uvs = []
    for p, (ax, ay) in zip(pieces, places):
        h, w = p.rgba.shape[:2]
        atlas[ay : ay + h, ax : ax + w] = p.rgba
        u = (ax + p.px[:, 0] - p.x0) / side
        v = (ay + p.px[:, 1] - p.y0) / side
        uvs.append(np.stack([u, v], 1).astype(np.float32))
    if texture_size and texture_size != side:
        atlas = np.asarray(
            Image.fromarray(atlas).resize((texture_size, texture_size), Image.Resampling.LANCZOS)
        )
    return atlas, uvs


def _png(rgba: np.ndarray, level: int = 6) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


# --------------------------------------------------------------------------- glTF assembly
def _turn(a: np.ndarray, vrm0: bool) -> np.ndarray:
    """VRM 0.x models face -Z: half a turn about the vertical axis."""
    if not vrm0:
        return a
    out = np.array(a, dtype=np.float32 if a.dtype != np.float64 else np.float64, copy=True)
    out[..., 0] *= -1
    out[..., 2] *= -1
    return out


def _primitive(
    b: GltfBuilder, pieces: list[Piece], uvs: list[np.ndarray], vrm0: bool
) -> tuple[dict[str, Any], list[int]]:
    """One primitive holding ``pieces`` (concatenated); returns it and each piece's first vertex."""
    starts, tris, n = [], [], 0
    for p in pieces:
        starts.append(n)
        tris.append(p.tris.astype(np.uint32) + n)
        n += len(p.pos)
    pos = _turn(np.concatenate([p.pos for p in pieces]).astype(np.float32), vrm0)
    nrm = _turn(np.concatenate([p.normal for p in pieces]).astype(np.float32), vrm0)
    joints = np.concatenate([p.joints for p in pieces]).astype(np.uint8)
    weights = np.concatenate([p.weights for p in pieces]).astype(np.float32)
    weights /= weights.sum(axis=1, keepdims=True)
    idx = np.concatenate(tris).reshape(-1)
    prim = {
        "attributes": {
            "POSITION": b.accessor(pos, target=ARRAY_BUFFER, min_max=True),
            "NORMAL": b.accessor(nrm, target=ARRAY_BUFFER),
            "TEXCOORD_0": b.accessor(np.concatenate(uvs).astype(np.float32), target=ARRAY_BUFFER),
            "JOINTS_0": b.accessor(joints, target=ARRAY_BUFFER),
            "WEIGHTS_0": b.accessor(weights, target=ARRAY_BUFFER),
        },
        "indices": b.accessor(idx, target=ELEMENT_ARRAY_BUFFER),
        "material": 0,
        "mode": 4,
    }
    return prim, starts


def model_to_glb(
    model: BuiltModel,
    fmt: str = "vrm1",
    *,
    name: str | None = None,
    authors: tuple[str, ...] | list[str] = ("AvatarForge user",),
    license_url: str = VRM_LICENSE_URL,
    texture_size: int | None = None,
    version: str = "1.0",
) -> tuple[bytes, dict[str, Any]]:
    """The file's bytes and a few numbers (texture size, vertex and triangle counts)."""
    from avatarforge import __version__

    if fmt not in FORMATS:
        raise Avatar3DError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if texture_size is not None and not (
        64 <= texture_size <= 4096 and texture_size & (texture_size - 1) == 0
    ):
        raise Avatar3DError(f"texture size must be a power of two from 64 to 4096, got {texture_size}")
    vrm0 = fmt == "vrm0"
    title = name or model.name
    b = GltfBuilder(f"AvatarForge {__version__}")
    everything = model.pieces + model.patches
    atlas, uvs = _atlas(everything, texture_size)
    tex_img = b.image_png(_png(atlas), "atlas")
    b.add("samplers", {"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071})
    b.add("textures", {"source": tex_img, "sampler": 0})
    material: dict[str, Any] = {
        "name": "avatar",
        "pbrMetallicRoughness": {
            "baseColorTexture": {"index": 0},
            "metallicFactor": 0.0,
            "roughnessFactor": 1.0,
        },
        "alphaMode": "MASK",
        "alphaCutoff": 0.5,
        "doubleSided": True,
        "extensions": {"KHR_materials_unlit": {}},
    }
    b.add("materials", material)
    b.json["extensionsUsed"] = ["KHR_materials_unlit"]

    # Skeleton: one node per bone (translation only, the T-pose), children by BONES' parents.
    node_of: dict[str, int] = {}
    for bone in BONES:
        node_of[bone] = b.add("nodes", {"name": bone[0].upper() + bone[1:]})
    for bone, parent in BONES.items():
        world = _turn(model.bones[bone], vrm0)
        local = world - (_turn(model.bones[parent], vrm0) if parent else 0.0)
        b.json["nodes"][node_of[bone]]["translation"] = [round(float(v), 6) for v in local]
        if parent:
            b.json["nodes"][node_of[parent]].setdefault("children", []).append(node_of[bone])
    ibm = np.zeros((len(BONES), 16), np.float32)
    for j, bone in enumerate(BONES):
        world = _turn(model.bones[bone], vrm0)
        mat = np.eye(4, dtype=np.float32)
        mat[:3, 3] = -world
        ibm[j] = mat.T.reshape(-1)  # column-major
    skin = b.add(
        "skins",
        {
            "name": "humanoid",
            "joints": [node_of[bone] for bone in BONES],
            "inverseBindMatrices": b.accessor(ibm),
            "skeleton": node_of["hips"],
        },
    )

    # Body: the layers, no morph targets.
    n_vert = sum(len(p.pos) for p in everything)
    n_tri = sum(len(p.tris) for p in everything)
    body_uvs, face_uvs = uvs[: len(model.pieces)], uvs[len(model.pieces) :]
    prim, _ = _primitive(b, model.pieces, body_uvs, vrm0)
    body_mesh = b.add("meshes", {"name": "Body", "primitives": [prim]})
    body_node = b.add("nodes", {"name": "Body", "mesh": body_mesh, "skin": skin})
    scene_nodes = [node_of["hips"], body_node]

    # Face: the expression patches, one morph target per expression.
    face_node = None
    exprs = list(model.expressions)
    if model.patches:
        prim, starts = _primitive(b, model.patches, face_uvs, vrm0)
        count = sum(len(p.pos) for p in model.patches)
        targets = []
        for ename in exprs:
            idx, vals = [], []
            for p, s in zip(model.patches, starts):
                if p.expression == ename and p.delta is not None:
                    idx.append(np.arange(s, s + len(p.pos)))
                    vals.append(_turn(p.delta, vrm0))
            targets.append({"POSITION": b.sparse_vec3(count, np.concatenate(idx), np.concatenate(vals))})
        prim["targets"] = targets
        prim["extras"] = {"targetNames": exprs}
        face_mesh = b.add(
            "meshes",
            {
                "name": "Face",
                "primitives": [prim],
                "weights": [0.0] * len(exprs),
                "extras": {"targetNames": exprs},
            },
        )
        face_node = b.add("nodes", {"name": "Face", "mesh": face_mesh, "skin": skin})
        scene_nodes.append(face_node)
    b.add(
        "scenes",
        {
            "name": title,
            "nodes": scene_nodes,
            "extras": {"avatarforge": {**model.framing, "format": fmt, "expressions": exprs}},
        },
    )
    b.json["scene"] = 0

    # Thumbnail: the 2D avatar (what apps show in their model lists).
    from PIL import Image

    thumb_size = min(model.size, 256)
    thumb = np.asarray(
        Image.fromarray(model.image).resize((thumb_size, thumb_size), Image.Resampling.LANCZOS)
    )
    thumb_img = b.image_png(_png(thumb), "thumbnail")

    eye_off = _turn(
        np.array(
            [0.0, model.framing["eye_y_m"] - model.bones["head"][1], model.framing["eye_z_m"]],
            np.float64,
        ),
        vrm0,
    )
    if fmt == "vrm1":
        preset = {}
        for ename in exprs:
            preset[ename] = {
                "morphTargetBinds": [{"node": face_node, "index": exprs.index(ename), "weight": 1.0}],
                "isBinary": ename in _WHOLE_FACE,
                "overrideBlink": "block" if ename in _WHOLE_FACE else "none",
                "overrideLookAt": "block" if ename in _WHOLE_FACE else "none",
                "overrideMouth": "block" if ename in _WHOLE_FACE else "none",
            }
        look = {"inputMaxValue": LOOK_RANGE_DEG, "outputScale": 1.0}
        b.json["extensionsUsed"].append("VRMC_vrm")
        b.json["extensions"] = {
            "VRMC_vrm": {
                "specVersion": "1.0",
                "meta": {
                    "name": title,
                    "version": version,
                    "authors": list(authors) or ["AvatarForge user"],
                    "licenseUrl": license_url,
                    "thumbnailImage": thumb_img,
                    "avatarPermission": "onlyAuthor",
                    "allowExcessivelyViolentUsage": False,
                    "allowExcessivelySexualUsage": False,
                    "commercialUsage": "personalNonProfit",
                    "allowPoliticalOrReligiousUsage": False,
                    "allowAntisocialOrHateUsage": False,
                    "creditNotation": "required",
                    "allowRedistribution": False,
                    "modification": "prohibited",
                },
                "humanoid": {"humanBones": {bone: {"node": node_of[bone]} for bone in BONES}},
                "firstPerson": {
                    "meshAnnotations": [
                        {"node": n, "type": "auto"} for n in (body_node, face_node) if n is not None
                    ]
                },
                "lookAt": {
                    "offsetFromHeadBone": [round(float(v), 5) for v in eye_off],
                    "type": "expression",
                    "rangeMapHorizontalInner": look,
                    "rangeMapHorizontalOuter": look,
                    "rangeMapVerticalDown": look,
                    "rangeMapVerticalUp": look,
                },
                "expressions": {"preset": preset, "custom": {}},
            }
        }
    elif fmt == "vrm0":
        thumb_tex = b.add("textures", {"source": thumb_img, "sampler": 0})
        groups = [
            {"name": "Neutral", "presetName": "neutral", "binds": [], "materialValues": [], "isBinary": False}
        ]
        for ename in exprs:
            gname, pname = VRM0_PRESETS[ename]
            groups.append(
                {
                    "name": gname,
                    "presetName": pname,
                    "binds": [
                        {
                            "mesh": b.json["nodes"][face_node]["mesh"],
                            "index": exprs.index(ename),
                            "weight": 100,
                        }
                    ],
                    "materialValues": [],
                    "isBinary": ename in _WHOLE_FACE,
                }
            )
        curve = {"curve": [0, 0, 0, 1, 1, 1, 1, 0], "xRange": LOOK_RANGE_DEG, "yRange": 1.0}
        b.json["extensionsUsed"].append("VRM")
        b.json["extensions"] = {
            "VRM": {
                "exporterVersion": f"AvatarForge-{__version__}",
                "specVersion": "0.0",
                "meta": {
                    "title": title,
                    "version": version,
                    "author": ", ".join(authors) or "AvatarForge user",
                    "contactInformation": "",
                    "reference": "",
                    "texture": thumb_tex,
                    "allowedUserName": "OnlyAuthor",
                    "violentUssageName": "Disallow",
                    "sexualUssageName": "Disallow",
                    "commercialUssageName": "Disallow",
                    "otherPermissionUrl": "",
                    "licenseName": "Other",
                    "otherLicenseUrl": license_url,
                },
                "humanoid": {
                    "humanBones": [
                        {"bone": bone, "node": node_of[bone], "useDefaultValues": True} for bone in BONES
                    ],
                    "armStretch": 0.05,
                    "legStretch": 0.05,
                    "upperArmTwist": 0.5,
                    "lowerArmTwist": 0.5,
                    "upperLegTwist": 0.5,
                    "lowerLegTwist": 0.5,
                    "feetSpacing": 0.0,
                    "hasTranslationDoF": False,
                },
                "firstPerson": {
                    "firstPersonBone": node_of["head"],
                    "firstPersonBoneOffset": {
                        "x": float(eye_off[0]),
                        "y": float(eye_off[1]),
                        "z": float(eye_off[2]),
                    },
                    "meshAnnotations": [
                        {"mesh": b.json["nodes"][n]["mesh"], "firstPersonFlag": "Auto"}
                        for n in (body_node, face_node)
                        if n is not None
                    ],
                    "lookAtTypeName": "BlendShape",
                    "lookAtHorizontalInner": curve,
                    "lookAtHorizontalOuter": curve,
                    "lookAtVerticalDown": curve,
                    "lookAtVerticalUp": curve,
                },
                "blendShapeMaster": {"blendShapeGroups": groups},
                "secondaryAnimation": {"boneGroups": [], "colliderGroups": []},
                # The glTF material as it is (unlit, alpha cut-out: KHR_materials_unlit, which
                # UniVRM reads as UniUnlit and three-vrm as MeshBasicMaterial).
                "materialProperties": [
                    {
                        "name": "avatar",
                        "shader": "VRM_USE_GLTFSHADER",
                        "renderQueue": 2450,
                        "floatProperties": {},
                        "vectorProperties": {},
                        "textureProperties": {},
                        "keywordMap": {},
                        "tagMap": {},
                    }
                ],
            }
        }
    else:
        b.json["asset"]["extras"] = {"title": title, "authors": list(authors), "license": license_url}
    info = {"texture_size": int(atlas.shape[0]), "vertices": n_vert, "triangles": n_tri}
    return b.glb(), info


# --------------------------------------------------------------------------- export
def _format_for(out: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise Avatar3DError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        return fmt
    return "glb" if out.suffix.lower() in (".glb", ".gltf") else "vrm1"


def check_writable(path: Path) -> None:
    """Raise before any work when ``path`` cannot be written (atomic writes need its folder)."""
    if path.is_dir():
        raise Avatar3DError(f"{path} is a folder; give a file name such as {path / 'avatar.vrm'}")
    parent = path.parent
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise PermissionError(f"cannot write {path}: {probe} is not a folder")
    try:  # a real probe: os.access says yes to root on read-only mounts and /proc
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise PermissionError(
            f"cannot write {path}: {probe} is not a writable folder ({e.strerror})"
        ) from None


def export_vrm(
    avatar: str | os.PathLike,
    out: str | os.PathLike,
    *,
    parts: str | os.PathLike | None = None,
    segmenter: str | os.PathLike | None = None,
    fmt: str | None = None,
    size: int = 512,
    texture_size: int | None = None,
    name: str | None = None,
    authors: tuple[str, ...] | list[str] = ("AvatarForge user",),
    license_url: str = VRM_LICENSE_URL,
    preview: str | os.PathLike | None = None,
    preview_size: int = 256,
) -> ExportReport:
    """Build the layered model of ``avatar`` and write it to ``out`` (atomically).

    Args:
        avatar: ``procedural:N`` or an RGBA image (see :func:`~avatarforge.avatar3d.source.load_avatar`).
        out: the file to write; ``fmt`` defaults to ``glb`` for ``.glb`` and ``vrm1`` otherwise.
        parts: the image's part map (a one-channel PNG of part ids).
        segmenter: a part segmenter run (or a quickstart folder) that predicts the part map
            of an image that has none.
        size: the render size of ``procedural:N`` avatars.
        texture_size: the atlas side in pixels (a power of two); default: what the layers
            need at the avatar's resolution (1024 for a 512-px avatar).
        preview: also write a turntable and expression strip (animated WebP/PNG/GIF).

    Raises:
        Avatar3DError: a bad avatar or option (the message says what to pass).
        PermissionError: ``out`` (or ``preview``) cannot be written; checked before any work.
    """
    from avatarforge.fileio import atomic_write_bytes

    t0 = time.perf_counter()
    out = Path(out)
    fmt = _format_for(out, fmt)
    check_writable(out)
    if preview is not None:
        check_writable(Path(preview))
    source = load_avatar(avatar, parts, size, segmenter=segmenter)
    model = build_model(source)
    data, info = model_to_glb(
        model, fmt, name=name, authors=authors, license_url=license_url, texture_size=texture_size
    )
    atomic_write_bytes(out, data)
    seconds = time.perf_counter() - t0
    preview_path = None
    if preview is not None:
        from avatarforge.avatar3d.raster import write_preview

        preview_path = write_preview(data, preview, size=preview_size)
    return ExportReport(
        path=out,
        format=fmt,
        bytes=len(data),
        seconds=seconds,
        texture_size=info["texture_size"],
        vertices=info["vertices"],
        triangles=info["triangles"],
        expressions=list(model.expressions),
        warnings=list(model.warnings),
        preview=preview_path,
    )
