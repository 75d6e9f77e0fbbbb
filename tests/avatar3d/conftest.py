"""One export per format, shared by the 3D tests (a 512-px avatar takes about a second)."""

from __future__ import annotations

import pytest

AVATAR = "procedural:3"


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """``{fmt: (path, ExportReport)}`` for vrm1, vrm0 and glb of :data:`AVATAR` at 512 px."""
    from avatarforge.avatar3d.vrm import export_vrm

    d = tmp_path_factory.mktemp("vrm")
    out = {}
    for fmt, name in (("vrm1", "avatar.vrm"), ("vrm0", "avatar0.vrm"), ("glb", "avatar.glb")):
        report = export_vrm(AVATAR, d / name, fmt=fmt, name="Test Avatar", authors=("Ada", "Bo"))
        out[fmt] = (d / name, report)
    return out


@pytest.fixture(scope="session")
def source_avatar():
    from avatarforge.avatar3d.source import load_avatar

    return load_avatar(AVATAR)
