"""``avatarforge serve`` in a subprocess for tests that need the real server: its uvicorn log,
real WebSocket handshakes, and its memory (``/proc/PID/status``).

Bound to 127.0.0.1 on an ephemeral port, one torch thread; the log (stdout and stderr) goes
to a file the test can read. Linux only (``/proc``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    proc: subprocess.Popen
    base: str
    log_path: Path
    started_s: float

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def status_mb(self) -> dict[str, float]:
        """``VmRSS`` (now) and ``VmHWM`` (peak since start or :meth:`reset_peak`) in MiB."""
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
        return out

    def reset_peak(self) -> bool:
        """Reset ``VmHWM`` to the current RSS (``/proc/PID/clear_refs``); False if not allowed."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True


@contextlib.contextmanager
def live_server(
    run: Path, *flags: str, log_dir: Path, env: dict[str, str] | None = None
) -> Iterator[LiveServer]:
    """Start the server, wait for ``/healthz``, yield it, terminate it."""
    import httpx

    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    environ = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = [sys.executable, "-m", "avatarforge", "serve", str(run), "--host", "127.0.0.1", "--port", str(port)]
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*cmd, "--threads", "1", *flags], env=environ, stdout=log, stderr=log)
    server = LiveServer(proc, f"http://127.0.0.1:{port}", log_path, 0.0)
    try:
        deadline = t0 + 180
        while True:
            try:
                if httpx.get(f"{server.base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, f"server exited:\n{server.log()}"
            assert time.monotonic() < deadline, f"server did not start:\n{server.log()}"
            time.sleep(0.3)
        server.started_s = time.monotonic() - t0
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ----------------------------------------------------------------------------- in-process
#: Debian's Chromium and its driver (never a browser download; .ci/run installs both).
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
HAVE_CHROMIUM = CHROMIUM.is_file() and CHROMEDRIVER.is_file()


@contextlib.contextmanager
def thread_server(app: Any, timeout: float = 30.0, ws: bool = True) -> Iterator[int]:
    """Serve ``app`` with uvicorn in a daemon thread on 127.0.0.1 (an ephemeral port), for
    browser tests and benchmarks that need the app object itself; yields the port.

    Raises:
        RuntimeError: uvicorn did not start within ``timeout`` seconds.
    """
    import threading

    import uvicorn

    port = free_port()
    kw = {"ws": "websockets"} if ws else {}
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **kw))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        if not srv.started:
            raise RuntimeError(f"uvicorn did not start in {timeout:g} s")
        yield port
    finally:
        srv.should_exit = True
        thread.join(10)


def headless_chromium(window: tuple[int, int], *args: str, performance_log: bool = False) -> Any:
    """A headless Debian Chromium (Selenium) with software WebGL (SwiftShader: no GPU here
    nor in CI), offline Selenium Manager, the window size, then ``args``; with
    ``performance_log`` the DevTools network log (for "no outside request" checks)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager download a driver
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    base = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={window[0]},{window[1]}",
            "--use-angle=swiftshader", "--enable-unsafe-swiftshader")  # fmt: skip
    for arg in (*base, *args):
        opts.add_argument(arg)
    if performance_log:
        opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
