"""3D avatars: the 2D avatar as a layered, texture-mapped 2.5D model, written as VRM or GLB.

* :mod:`.source`: what an AVATAR argument means (``procedural:N``, an RGBA image + part map);
* :mod:`.build`: the layered head-and-bust model, its expression patches and skeleton;
* :mod:`.gltf`: a small GLB writer and reader;
* :mod:`.vrm`: VRM 1.0 / 0.x / GLB files and :func:`export_vrm`, the export entry point;
* :mod:`.raster`: a CPU software rasteriser of the written file (front views, turntables).

See docs/3d.md.
"""

from __future__ import annotations

from avatarforge.lazy import lazy_attributes

_LAZY = {
    "Avatar3DError": "avatarforge.avatar3d.source",
    "load_avatar": "avatarforge.avatar3d.source",
    "build_model": "avatarforge.avatar3d.build",
    "EXPRESSIONS": "avatarforge.avatar3d.build",
    "export_vrm": "avatarforge.avatar3d.vrm",
    "model_to_glb": "avatarforge.avatar3d.vrm",
    "render_view": "avatarforge.avatar3d.raster",
    "write_preview": "avatarforge.avatar3d.raster",
}

__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
