"""State that survives restarts (issue 18, deliverable 5 and defect 6): the overlay's studio
avatar and the studio's last session, kept under the serve state directory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatarforge.serve.persist import ServeStore, attach_overlay, store_for
from avatarforge.serve.studio import (
    StudioSession,
    apply_finish,
    edit_picked,
    generate_grid,
    load_session,
    pick,
    refine,
    save_session,
    slider_directions,
    undo,
)
from tests.serve.fixtures_studio import make_state, tiny_animator, tiny_pipe


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipe()


def _studio_image(seed: int = 5) -> np.ndarray:
    """A recognisable RGBA image (not any seed of the generator)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)
    img[:4, :, 3] = 0
    return img


def test_the_overlay_shows_the_studio_avatar_after_a_restart(pipe, tmp_path):
    """Defect 6: overlay?avatar=studio fell back to generator seed 0 after a restart."""
    pytest.importorskip("fastapi")
    from avatarforge.serve.app import create_app

    anim = tiny_animator()
    sent = _studio_image()
    app = create_app(make_state(pipe, anim, state_dir=str(tmp_path)))
    hub = app.state.overlay_hub
    seed0 = hub.avatar_image("studio")  # nothing sent yet: seed 0
    hub.set_avatar("studio", sent)  # what the studio's "Send to overlay" does
    hub.close()
    kept = list(tmp_path.glob("*/overlay-studio.png"))
    assert len(kept) == 1 and kept[0].parent.name == pipe.model_sha256[:16]
    assert not list(tmp_path.glob("*/.*.tmp"))  # written atomically: no temporary left

    restarted = create_app(make_state(pipe, anim, state_dir=str(tmp_path)))  # a new server process
    try:
        assert np.array_equal(restarted.state.overlay_hub.avatar_image("studio"), sent)
    finally:
        restarted.state.overlay_hub.close()
    # without a state directory nothing is kept (tests, embedding)
    assert store_for(make_state(pipe, anim)) is None and not np.array_equal(seed0, sent)


def test_attach_overlay_keeps_later_avatars_and_skips_bad_files(pipe, tmp_path, caplog):
    class Hub:
        def __init__(self, state):
            self.state, self.avatars = state, {}

        def set_avatar(self, name, image):
            self.avatars[name] = np.asarray(image)

    state = make_state(pipe, state_dir=str(tmp_path))
    store = store_for(state)
    store.dir.mkdir(parents=True)
    store.avatar_path("studio").write_bytes(b"not a png")
    hub = Hub(state)
    assert attach_overlay(hub) and hub.avatars == {}  # the broken file is ignored, logged
    assert "ignoring the overlay's kept avatar" in caplog.text
    hub.set_avatar("7", _studio_image(1))  # generator seeds need nothing kept
    hub.set_avatar("studio", _studio_image(2))
    assert attach_overlay(hub)  # idempotent: not wrapped twice
    again = Hub(state)
    attach_overlay(again)
    assert set(again.avatars) == {"studio"} and np.array_equal(again.avatars["studio"], _studio_image(2))


def test_the_studio_session_survives_a_restart(pipe, tmp_path):
    """The pick, each step's choice, the undo trail and the controls come back in a new
    server, and the studio's page-load event shows the same finished avatar."""
    gr = pytest.importorskip("gradio")
    from avatarforge.serve.studio import build_studio

    st = make_state(pipe, state_dir=str(tmp_path))
    d = slider_directions(st)[0]
    sess, _ = generate_grid(st, StudioSession(), 20, n=8, truncation=0.8)
    sess = pick(sess, 2)
    sess, grid = refine(st, sess, 0.3, step="palette")
    sess = pick(sess, 6)
    controls = {
        "sliders": {d.id: 1.2},
        "attrs": {"hair_color": "pink"},
        "chain": "saturation=1.3",
        "size": 32,
    }
    assert save_session(st, sess, controls) == tmp_path / pipe.model_sha256[:16] / "studio.json"
    shown = edit_picked(st, sess, {d.id: 1.2}, {"hair_color": "pink"})

    fresh = make_state(pipe, state_dir=str(tmp_path))  # the restarted server
    back, kept = load_session(fresh)
    assert kept == controls
    assert back.choices == [["pick", "seed 22"], ["palette", "cell 6"]] and back.history == sess.history
    assert torch.equal(back.picked.ws, sess.picked.ws) and np.array_equal(back.images, np.stack(grid))
    assert np.array_equal(edit_picked(fresh, back, {d.id: 1.2}, {"hair_color": "pink"}), shown)
    first, _ = undo(fresh, back)  # the trail came back too: undo renders the seed grid again
    assert first.choices == [["pick", "seed 22"]] and first.seeds == list(range(20, 28))

    # the page-load event of a new studio restores the controls and the finished avatar
    demo = build_studio(fresh, download_dir=tmp_path / "dl")
    load = next(f for f in demo.fns.values() if any(t[1] == "load" for t in f.targets))
    outs = dict(zip([o._id for o in load.outputs], load.fn(StudioSession())))
    by_id = {getattr(b, "elem_id", None): b._id for b in demo.blocks.values()}
    assert slider_directions(fresh)[0].id == d.id and outs[by_id["slider-0"]] == pytest.approx(1.2)
    assert outs[by_id["attr-hair_color"]] == "pink" and outs[by_id["chain"]] == "saturation=1.3"
    finals = [v for v in outs.values() if isinstance(v, np.ndarray) and v.shape == (32, 32, 4)]
    assert finals and np.array_equal(finals[0], apply_finish(fresh, shown, chain="saturation=1.3"))
    assert any(isinstance(v, gr.DownloadButton) for v in outs.values())


def test_unusable_or_foreign_state_is_ignored(pipe, tmp_path, caplog):
    st = make_state(pipe, state_dir=str(tmp_path))
    sess = pick(generate_grid(st, StudioSession(), 0, n=4)[0], 1)
    save_session(st, sess, {})
    # another model finds nothing of this one's (one folder per model)
    other = make_state(tiny_pipe(seed=2), state_dir=str(tmp_path))
    assert load_session(other) is None
    # a corrupt file or another version: the studio starts empty, with a warning
    path = store_for(st).studio_path
    path.write_text("{ not json")
    assert load_session(st) is None and "ignoring the studio's kept state" in caplog.text
    ServeStore(tmp_path, pipe.model_sha256).save_studio({"session": {"picked": "garbage"}})
    assert load_session(st) is None
    path.write_text('{"version": 99}')
    assert load_session(st) is None
    # saving without controls keeps the controls saved last
    save_session(st, sess, {"chain": "sharpen"})
    save_session(st, sess)
    assert load_session(st)[1] == {"chain": "sharpen"}
