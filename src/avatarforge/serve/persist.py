"""What the server keeps across restarts: the studio's last pick and the overlay's avatar.

Under the serve state directory (:attr:`ServeSettings.state_dir
<avatarforge.serve.state.ServeSettings>`; ``avatarforge serve`` uses
:func:`default_state_dir`, ``$AVATARFORGE_CACHE/serve``), one folder per generator (the first
16 hex digits of its weights' sha256: a latent only means something for the model that made
it):

* ``studio.json`` -- the studio's last session: the pick, the grid, each refine step's
  choice and the undo trail (as latent tokens, :mod:`avatarforge.serve.latents`), and the
  controls (attributes, sliders, style, chain, download size and format);
* ``overlay-studio.png`` -- the image the overlay shows as ``avatar=studio`` (what "Send to
  overlay" sent), RGBA.

Every write is atomic (:mod:`avatarforge.fileio`: a temporary sibling renamed into place), so
a server killed mid-write leaves the previous state. Files that cannot be read (corrupt,
another version, another model) are ignored with a warning: the server starts as if nothing
was kept.

The overlay hub (:class:`~avatarforge.serve.overlay.hub.OverlayHub`) is wired with
:func:`attach_overlay`: it shows the kept avatars again and keeps every later
``hub.set_avatar``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "STUDIO_FILE",
    "ServeStore",
    "attach_overlay",
    "default_state_dir",
    "store_for",
]

log = logging.getLogger(__name__)

#: The studio's session file in a model's state folder.
STUDIO_FILE = "studio.json"
#: Version of ``studio.json`` (files of another version are ignored).
STUDIO_VERSION = 1
#: Overlay avatars that are kept (seeds and procedural avatars need nothing kept).
KEPT_AVATARS = ("studio",)
_NAME = re.compile(r"^[a-z0-9_-]{1,40}$")


def default_state_dir() -> Path:
    """``$AVATARFORGE_CACHE/serve`` (default ``~/.cache/avatarforge/serve``)."""
    from avatarforge.fileio import default_cache_dir

    return default_cache_dir() / "serve"


class ServeStore:
    """The state folder of one model under ``root`` (created on the first write).

    Args:
        root: the serve state directory.
        model_sha256: the generator's weights hash (names the folder).
    """

    def __init__(self, root: str | os.PathLike, model_sha256: str) -> None:
        self.root = Path(root).expanduser()
        self.dir = self.root / str(model_sha256)[:16]

    # ------------------------------------------------------------------ studio
    @property
    def studio_path(self) -> Path:
        return self.dir / STUDIO_FILE

    def save_studio(self, record: Mapping[str, Any]) -> Path:
        """Write the studio's session record (atomically)."""
        from avatarforge.fileio import atomic_write_json

        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.studio_path, {"version": STUDIO_VERSION, **record})
        return self.studio_path

    def load_studio(self) -> dict[str, Any] | None:
        """The kept session record, or ``None`` (nothing kept, or unreadable: logged)."""
        path = self.studio_path
        if not path.is_file():
            return None
        try:
            rec = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as e:
            log.warning("ignoring the studio's kept state %s: %s", path, e)
            return None
        if not isinstance(rec, dict) or rec.get("version") != STUDIO_VERSION:
            log.warning("ignoring the studio's kept state %s: not a version-%d record", path, STUDIO_VERSION)
            return None
        return rec

    # ------------------------------------------------------------------ overlay
    def avatar_path(self, avatar: str) -> Path:
        if not _NAME.match(avatar):
            raise ValueError(f"cannot keep avatar {avatar!r}")
        return self.dir / f"overlay-{avatar}.png"

    def save_avatar(self, avatar: str, image: np.ndarray) -> Path:
        """Keep the overlay's ``avatar`` image (an RGBA or RGB uint8 PNG, atomically)."""
        from PIL import Image

        from avatarforge.fileio import atomic_write_bytes

        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=1)
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.avatar_path(avatar)
        atomic_write_bytes(path, buf.getvalue())
        return path

    def load_avatars(self) -> dict[str, np.ndarray]:
        """The kept overlay avatars ``{name: uint8 image}`` (unreadable files skipped, logged)."""
        from PIL import Image

        out: dict[str, np.ndarray] = {}
        for name in KEPT_AVATARS:
            path = self.avatar_path(name)
            if not path.is_file():
                continue
            try:
                with Image.open(path) as im:
                    im.load()
                    img = np.asarray(im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB"))
            except (OSError, ValueError) as e:
                log.warning("ignoring the overlay's kept avatar %s: %s", path, e)
                continue
            out[name] = img
        return out


def store_for(state: Any) -> ServeStore | None:
    """The store of ``state``'s model, or ``None`` when its settings keep nothing
    (``state_dir`` unset)."""
    root = getattr(getattr(state, "settings", None), "state_dir", None)
    pipe = getattr(state, "pipe", None)
    if not root or pipe is None:
        return None
    return ServeStore(root, pipe.model_sha256)


def attach_overlay(hub: Any, state: Any = None) -> bool:
    """Show the kept overlay avatars on ``hub`` again and keep every later ``hub.set_avatar``.

    Returns whether a store is in use (``False``: the settings keep nothing). Idempotent: a
    second call does nothing. The hub's own ``set_avatar`` is wrapped, so the avatar is kept
    whoever sets it (the studio's "Send to overlay", Python code).
    """
    store = store_for(state if state is not None else hub.state)
    if store is None:
        return False
    if getattr(hub, "_persist_store", None) is not None:
        return True
    for name, image in store.load_avatars().items():
        try:
            hub.set_avatar(name, image)
        except ValueError as e:  # OverlayError: not an avatar image
            log.warning("ignoring the overlay's kept avatar %r: %s", name, e)
    original = hub.set_avatar

    def set_avatar(avatar: str, image: np.ndarray) -> None:
        original(avatar, image)
        name = str(avatar).strip()
        if name in KEPT_AVATARS:
            try:
                store.save_avatar(name, np.asarray(image))
            except OSError as e:  # a full disk must not break the live overlay
                log.warning("could not keep the overlay's %r avatar: %s", name, e)

    hub.set_avatar = set_avatar
    hub._persist_store = store
    return True
