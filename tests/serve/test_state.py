"""ServeSettings validation, ServeState loading (run dir, quickstart output), info(), auth helpers."""

from __future__ import annotations

import json

import pytest

from avatarforge.serve.auth import check_api_key, presented_key
from avatarforge.serve.state import ServeSettings, ServeState, resolve_run

from .conftest import EYES, HAIR, SIZE


def test_settings_defaults_bind_loopback():
    s = ServeSettings()
    assert s.host == "127.0.0.1" and s.api_key is None
    assert s.max_upload_bytes == 8 * 1024 * 1024


@pytest.mark.parametrize(
    "kw, field",
    [({"api_key": "  "}, "api_key"), ({"max_n": 0}, "max_n"), ({"port": 70000}, "port")],
)
def test_settings_reject_bad_values_naming_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        ServeSettings(**kw)


def test_state_loads_generator_animator_and_sliders(serve_state):
    st = serve_state
    assert st.pipe.resolution == SIZE and st.pipe.channels == 4
    assert st.animator is not None
    ids = set(st.directions)
    assert {f"hair_color={h}" for h in HAIR} <= ids and {f"eye_color={e}" for e in EYES} <= ids
    assert {f"sefa{i}" for i in range(8)} <= ids  # StyleGAN: SeFa sliders computed at start
    assert "sharpen" in st.post_ops and "upscale" in st.post_ops


def test_info_describes_model(serve_state):
    info = serve_state.info()
    assert info["model"]["rgba"] is True and info["model"]["resolution"] == SIZE
    assert info["attributes"] == {"hair_color": HAIR, "eye_color": EYES}
    assert info["animator"] is True and info["auth"] is False
    assert info["limits"]["max_n"] == serve_state.settings.max_n
    json.dumps(info)  # JSON-serialisable as is


def test_quickstart_dir_resolves_both_runs(tmp_path, serve_run, animator_dir):
    (tmp_path / "quickstart.json").write_text(
        json.dumps({"generator_run": str(serve_run), "animator_run": str(animator_dir)})
    )
    gen, anim = resolve_run(tmp_path)
    assert gen == serve_run and anim == animator_dir
    st = ServeState.load(tmp_path)
    assert st.animator is not None and st.generator_run == serve_run


def test_quickstart_relative_paths_and_explicit_animator_wins(tmp_path):
    (tmp_path / "quickstart.json").write_text(json.dumps({"generator_run": "gen", "animator_run": "anim"}))
    assert resolve_run(tmp_path) == (tmp_path / "gen", tmp_path / "anim")
    assert resolve_run(tmp_path, "/x/other")[1].as_posix() == "/x/other"


def test_quickstart_file_errors_name_the_key(tmp_path):
    (tmp_path / "quickstart.json").write_text(json.dumps({"animator_run": "a"}))
    with pytest.raises(ValueError, match="generator_run"):
        resolve_run(tmp_path)
    (tmp_path / "quickstart.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        resolve_run(tmp_path)


def test_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ServeState.load(tmp_path / "nope")


def test_api_key_helpers():
    assert check_api_key(None, None)  # no key configured: open
    assert not check_api_key("k", None)
    assert not check_api_key("k", "K")
    assert check_api_key("k", "k")
    assert check_api_key("kéy", "kéy")  # non-ASCII keys compare as UTF-8 bytes
    assert presented_key({"x-api-key": "a"}) == "a"
    assert presented_key({"authorization": "Bearer b"}) == "b"
    assert presented_key({"authorization": "Basic b"}) is None
    assert presented_key({}) is None


def test_onnx_animator_serves_the_same_frames(serve_run, serve_state, client, tmp_path):
    """``--animator X.onnx`` (onnxruntime) animates like the torch animator it was exported from."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import numpy as np
    from fastapi.testclient import TestClient

    from avatarforge.animate.onnx_export import export_onnx
    from avatarforge.postprocess.export import load_animation
    from avatarforge.serve.app import create_app

    onnx_path, _ = export_onnx(serve_state.animator, tmp_path / "anim.onnx", check=False)
    st = ServeState.load(serve_run, animator=onnx_path)
    assert type(st.animator).__name__ == "OnnxAnimator"
    form = {"seed": "4", "seconds": "0.25", "fps": "8", "format": "apng", "script": "talk"}
    with TestClient(create_app(st)) as c:
        responses = {"onnx": c.post("/v1/animate", data=form), "torch": client.post("/v1/animate", data=form)}
    frames = {}
    for name, r in responses.items():
        assert r.status_code == 200, r.text
        (tmp_path / f"{name}.png").write_bytes(r.content)
        frames[name] = np.stack(load_animation(tmp_path / f"{name}.png")[0]).astype(int)
    assert frames["onnx"].shape == frames["torch"].shape
    assert np.abs(frames["onnx"] - frames["torch"]).max() <= 2  # float differences only


def test_batch_size_one_is_deterministic_and_close_to_the_default(serve_run, serve_state):
    import numpy as np

    st = ServeState.load(serve_run, settings=ServeSettings(batch_size=1))
    assert st.info()["model"]["batch_size"] == 1 and serve_state.info()["model"]["batch_size"] == 8
    together = st.pipe(seeds=[3, 11]).images
    np.testing.assert_array_equal(st.pipe(seeds=[11]).images[0], together[1])  # alone = among others
    default = serve_state.pipe(seeds=[3, 11]).images
    assert np.abs(together.astype(int) - default.astype(int)).max() <= 2  # float rounding only
