"""The live overlay: an OBS browser source fed by a WebSocket of animated frames.

:func:`mount_overlay` adds to a FastAPI app (``avatarforge serve``; docs/studio.md):

* ``GET /overlay`` -- a page with a transparent background and no margins showing the
  animated avatar; query parameters ``avatar`` (see below), ``size`` (pixels), ``fps``,
  ``idle`` (``0`` turns the random blinks and sway off), ``key`` (the API key, when one is
  set: a browser source cannot send headers). Keyboard controls work when the page has
  focus (OBS: *Interact*).
* ``GET /overlay/control`` -- a control panel for a normal browser tab: buttons, the same
  keys, sliders, and **microphone lip sync** (the page measures the loudness with WebAudio
  and sends ``mouth_open`` values; the audio never leaves the browser).
* ``WS /ws/overlay`` -- binary messages, one lossless WebP (or PNG) with alpha per frame;
  the client may send JSON control messages on the same socket.
* ``WS /ws/overlay/control`` and ``POST /overlay/control`` -- control messages only (a
  Stream Deck, a script, a chat bot), answered with the avatar's manual control state;
  ``GET /overlay/expressions`` lists the expression presets and one-shot animations.
* ``GET /tracker`` -- webcam face tracking in the page (MediaPipe face_mesh served from
  ``/tracker/mediapipe``, installed from npm; never a CDN), sending ``{"track": ...}``
  frames on the control socket (docs/tracking.md).

Avatars (``avatar=``): ``studio`` (default: the avatar last sent from the web studio, or
generator seed 0 until then), an integer ``N`` (the loaded generator's seed ``N``), or
``procedural:N`` (the procedural renderer's avatar ``N``, what the animator was trained on).

Control messages (JSON objects; :func:`apply_control`): ``{"set": {"mouth_open": 0.4}}``,
``{"clear": ["smile"]}`` or ``{"clear": true}``, ``{"action": "blink"}`` (also
``"reset"``, ``"play_audio"``), ``{"key": "b"}`` (:data:`KEY_BINDINGS`).

Design: one :class:`FrameLoop` per (avatar, size, fps) runs in a background thread while
at least one client watches it and stops when the last one leaves; every frame is
encoded once and handed to each client's bounded queue (the oldest frame is dropped for a
client that cannot keep up, so a slow socket never grows memory or slows the others). The
drivers of a loop are, in order (later ones win per control): :class:`IdleDriver`, a WAV
:class:`AudioDriver` (server side, :class:`OverlayOptions.audio`), a :class:`VMCDriver`
(:class:`OverlayOptions.vmc`; one UDP listener shared by all loops) and the avatar's
manual controls (keys, buttons, browser microphone), shared by all loops of that avatar.

The package, by idea (import from the package itself, its ``__init__`` is the public API):
:mod:`.protocol` (paths, close codes, ``avatar=`` specs, control messages, frame encoding),
:mod:`.hub` (options, frame loops, subscribers), :mod:`.pages` (the pages, whose HTML,
JavaScript and CSS are static files in ``avatarforge/serve/static/overlay``) and
:mod:`.routes` (:func:`mount_overlay`).
"""

from __future__ import annotations

from avatarforge.serve.overlay.hub import (
    AUDIO_ENV,
    MAX_CONTROLLED_AVATARS,
    VMC_ENV,
    OverlayHub,
    OverlayOptions,
    overlay_options,
)
from avatarforge.serve.overlay.pages import control_page_html, overlay_page_html
from avatarforge.serve.overlay.protocol import (
    BAD_REQUEST_CLOSE_CODE,
    KEY_BINDINGS,
    KEY_HELP,
    NO_ANIMATOR_CLOSE_CODE,
    NO_ANIMATOR_MESSAGE,
    TOO_MANY_LOOPS_CLOSE_CODE,
    UNAUTHORIZED_CLOSE_CODE,
    OverlayBusy,
    OverlayControls,
    OverlayError,
    apply_control,
    encode_frame,
    parse_avatar,
)
from avatarforge.serve.overlay.routes import mount_overlay

__all__ = [
    "AUDIO_ENV",
    "BAD_REQUEST_CLOSE_CODE",
    "KEY_BINDINGS",
    "KEY_HELP",
    "MAX_CONTROLLED_AVATARS",
    "NO_ANIMATOR_CLOSE_CODE",
    "NO_ANIMATOR_MESSAGE",
    "TOO_MANY_LOOPS_CLOSE_CODE",
    "UNAUTHORIZED_CLOSE_CODE",
    "VMC_ENV",
    "OverlayBusy",
    "OverlayControls",
    "OverlayError",
    "OverlayHub",
    "OverlayOptions",
    "apply_control",
    "control_page_html",
    "encode_frame",
    "mount_overlay",
    "overlay_options",
    "overlay_page_html",
    "parse_avatar",
]
