"""``avatarforge serve``: flags, API key from the environment, loopback warning, a real server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from avatarforge.cli import build_parser
from avatarforge.serve.cli import API_KEY_ENV, is_loopback, serve_main, settings_from_args


def _args(*argv: str):
    return build_parser().parse_args(["serve", *argv])


def test_defaults_bind_loopback_without_key():
    a = _args("runs/x")
    s = settings_from_args(a, environ={})
    assert (s.host, s.port, s.api_key) == ("127.0.0.1", 8000, None)
    assert s.max_upload_bytes == 8 * 1024 * 1024 and s.max_n == 64 and s.max_frames == 240


def test_api_key_flag_and_environment():
    assert settings_from_args(_args("r"), environ={API_KEY_ENV: "env-key"}).api_key == "env-key"
    assert settings_from_args(_args("r", "--api-key", "flag"), environ={API_KEY_ENV: "env"}).api_key == "flag"
    assert settings_from_args(_args("r"), environ={API_KEY_ENV: ""}).api_key is None


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--max-upload-mb", "0"], "--max-upload-mb"),
        (["--max-n", "0"], "--max-n"),
        (["--port", "99999"], "--port"),
        (["--api-key", " "], "--api-key"),
        (["--threads", "0"], "--threads"),
        (["--batch-size", "0"], "--batch-size"),
        (["--overlay-fps", "0"], "--overlay-fps"),
        (["--overlay-audio", "no-such.wav"], "--overlay-audio"),
    ],
)
def test_bad_flags_name_the_flag(argv, flag):
    with pytest.raises(ValueError, match=flag):
        settings_from_args(_args("r", *argv), environ={})


def test_overlay_flags_reach_the_overlay(tmp_path):
    from avatarforge.serve.overlay import overlay_options as _overlay_options

    wav = tmp_path / "speech.wav"
    wav.write_bytes(b"RIFF")  # only its existence is checked here
    s = settings_from_args(
        _args("r", "--vmc", "--overlay-audio", str(wav), "--overlay-fps", "24"), environ={}
    )
    assert (s.vmc, s.overlay_audio, s.overlay_fps) == ("127.0.0.1:39539", str(wav), 24.0)
    assert settings_from_args(_args("r", "--vmc", "40001"), environ={}).vmc == "40001"
    assert settings_from_args(_args("r"), environ={}).vmc is None

    class State:  # the overlay reads only the settings here
        settings = s

    opts = _overlay_options(State(), None)
    assert (opts.vmc, opts.audio, opts.fps) == ("127.0.0.1:39539", str(wav), 24.0)


def test_bad_flag_exits_2_with_message(capsys, serve_run):
    from avatarforge.cli import main

    with pytest.raises(SystemExit) as e:
        main(["serve", str(serve_run), "--max-n", "0"])
    assert e.value.code == 2 and "--max-n" in capsys.readouterr().err


@pytest.mark.parametrize(
    "host, loop",
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False), ("10.1.2.3", False)],
)
def test_is_loopback(host, loop):
    assert is_loopback(host) is loop


def _run_serve_main(monkeypatch, argv, environ=None):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    for k in (API_KEY_ENV,):
        monkeypatch.delenv(k, raising=False)
    for k, v in (environ or {}).items():
        monkeypatch.setenv(k, v)
    assert serve_main(_args(*argv)) == 0
    return seen


def test_serve_main_loads_once_and_warns_on_public_host_without_key(
    monkeypatch, capsys, serve_run, animator_dir
):
    seen = _run_serve_main(
        monkeypatch, [str(serve_run), "--animator", str(animator_dir), "--host", "0.0.0.0"]
    )
    err = capsys.readouterr().err
    assert "WARNING" in err and "WITHOUT an API key" in err
    assert seen["host"] == "0.0.0.0" and seen["port"] == 8000
    state = seen["app"].state.serve
    assert state.animator is not None and state.settings.api_key is None
    assert state.generator_run == serve_run


def test_start_up_prints_the_studio_overlay_and_docs_urls_never_the_key(monkeypatch, capsys, serve_run):
    """Issue 18, defect 3: the start-up lines name /studio, /overlay and /docs."""
    _run_serve_main(monkeypatch, [str(serve_run), "--port", "8123"])
    err = capsys.readouterr().err
    assert "http://127.0.0.1:8123/studio" in err
    assert "http://127.0.0.1:8123/overlay?avatar=studio" in err
    assert "http://127.0.0.1:8123/docs" in err
    secret = "never-print-this-key-42"
    seen = _run_serve_main(monkeypatch, [str(serve_run), "--host", "0.0.0.0"], {API_KEY_ENV: secret})
    err = capsys.readouterr().err
    assert seen["app"].state.serve.settings.api_key == secret
    assert secret not in err
    assert "http://127.0.0.1:8000/docs?key=KEY" in err and "/overlay?avatar=studio&key=KEY" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_real_server_subprocess(serve_run):
    """Start ``python -m avatarforge serve`` and talk HTTP to it (imports take ~10 s: slow)."""
    import httpx

    port = _free_port()
    env = {**os.environ, API_KEY_ENV: "secret", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "avatarforge", "serve", str(serve_run), "--port", str(port), "--threads", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.3)
        assert httpx.post(f"{base}/v1/generate", json={"seeds": [1]}).status_code == 401
        r = httpx.post(
            f"{base}/v1/generate", json={"seeds": [1]}, headers={"X-API-Key": "secret"}, timeout=60
        )
        assert r.status_code == 200 and len(r.json()["images"]) == 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_missing_serve_extra_is_a_clear_error(monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_uvicorn(name, *a, **kw):
        if name == "uvicorn":
            raise ModuleNotFoundError("No module named 'uvicorn'", name="uvicorn")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_uvicorn)
    assert serve_main(_args("runs/x")) == 2
    err = capsys.readouterr().err
    assert "uvicorn is missing" in err and "avatarforge[serve]" in err


def test_tracking_and_state_flags_reach_the_settings_and_the_overlay(monkeypatch, tmp_path):
    from avatarforge.serve.overlay.hub import overlay_options

    monkeypatch.setenv("AVATARFORGE_CACHE", str(tmp_path))
    s = settings_from_args(_args("r"), environ={})
    assert s.state_dir == str(tmp_path / "serve")  # kept across restarts by default
    assert settings_from_args(_args("r", "--state-dir", ""), environ={}).state_dir is None
    s = settings_from_args(
        _args("r", "--listen", "0.0.0.0", "--ifacialmocap", "--vmc-send", "--ifacialmocap-phone", "10.0.0.5"),
        environ={},
    )
    assert (s.listen, s.ifacialmocap, s.vmc_send, s.ifacialmocap_phone) == ("0.0.0.0", "1", "1", "10.0.0.5")
    opts = overlay_options(type("State", (), {"settings": s})())
    assert opts.ifacialmocap == "0.0.0.0:49983" and opts.vmc_send == "127.0.0.1:39540"
    assert opts.ifacialmocap_phone == "10.0.0.5"
