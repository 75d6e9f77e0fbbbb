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
