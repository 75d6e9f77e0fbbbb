"""HTTP API under load: ``avatarforge serve`` in a subprocess, concurrent clients on loopback.

**Setup.** An untrained RGBA conditional StyleGAN at 64 px (the default architecture of the
``stylegan-64`` family's size class: speed does not depend on the weights) is saved as a
checkpoint, or ``AVATARFORGE_SERVE_RUN`` names a real run to serve instead. The server is
started exactly as a user would (``python -m avatarforge serve RUN --port P --api-key ...
--threads 1``) on a free loopback port; the time until ``/healthz`` answers is reported
(imports + model load + SeFa sliders + style feature net).

**Load.** From this process (a second process, as a real client), ``N`` requests are sent
with ``C`` in flight at a time (full: 200 requests, 16 at a time; quick: 60, 8) through one
pooled ``httpx.Client``: 60 % ``POST /v1/generate`` (one seed each, distinct seeds) and 40 %
``POST /v1/postprocess`` (a 64 px RGBA avatar, ``denoise=0.3,sharpen=0.5``). Reported:
errors (non-200 or transport errors; target 0), p50/p99 latency over all requests and per
kind, and requests per second. The first 40 requests are also sent one at a time for the
service time without queueing; with the server's model lock, concurrent latency is about
``C x`` the service time while throughput should stay about the same -- the ratio of the
two throughputs is reported. The two phases alternate in 4 rounds (a quarter of each per
round) so that load from other jobs on the shared machine hits both alike.

**Correctness under load.** Every concurrent ``generate`` response is compared with the
sequential one of the same seed: they must be byte-identical (reported as the count of
mismatches; target 0).

Load: the 1-minute load average at the start is in the notes (the machine is shared).
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import ROOT, Result

API_KEY = "bench-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _make_checkpoint(tmp: Path) -> Path:
    import json

    import torch

    from avatarforge.models.stylegan import StyleGANGenerator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G = StyleGANGenerator(resolution=64, channels=4, label_dims=[4, 3]).eval()
    path = tmp / "ckpt"
    G.save_pretrained(path, prefix="g_ema_")
    schema = [
        {"name": "hair_color", "values": ["black", "pink", "blonde", "blue"]},
        {"name": "eye_color", "values": ["blue", "green", "red"]},
    ]
    (path / "training_state.json").write_text(json.dumps({"label_schema": schema}))
    return path


def _avatar_png() -> bytes:
    from PIL import Image

    from avatarforge.data.procedural import render_avatar

    buf = io.BytesIO()
    Image.fromarray(render_avatar(5, 64)).save(buf, format="PNG")
    return buf.getvalue()


def _start_server(run: Path, port: int) -> tuple[subprocess.Popen, float]:
    import httpx

    env = {
        **os.environ,
        "AVATARFORGE_API_KEY": API_KEY,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT / "src"),
    }
    cmd = [sys.executable, "-m", "avatarforge", "serve", str(run), "--port", str(port), "--threads", "1"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, time.perf_counter() - t0
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        if time.perf_counter() - t0 > 300:
            proc.kill()
            raise RuntimeError("server did not answer /healthz within 300 s")
        time.sleep(0.2)


def _requests(n: int) -> list[tuple[str, int]]:
    # 60 % generate, 40 % postprocess, interleaved deterministically.
    return [("generate" if (i % 5) < 3 else "postprocess", i) for i in range(n)]


def _send(client: Any, kind: str, i: int, avatar: bytes) -> tuple[str, int, float, int, bytes]:
    t0 = time.perf_counter()
    try:
        if kind == "generate":
            r = client.post("/v1/generate", json={"seeds": [1000 + i]})
            payload = r.json()["images"][0]["png"].encode() if r.status_code == 200 else b""
        else:
            r = client.post(
                "/v1/postprocess", files={"image": ("a.png", avatar)}, data={"ops": "denoise=0.3,sharpen=0.5"}
            )
            payload = r.content if r.status_code == 200 else b""
        status = r.status_code
    except Exception:  # a transport error counts as an error, never aborts the run
        status, payload = -1, b""
    return kind, i, (time.perf_counter() - t0) * 1000.0, status, payload


def _run_load(base: str, reqs: list[tuple[str, int]], concurrency: int, avatar: bytes) -> tuple[list, float]:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=base, headers={"X-API-Key": API_KEY}, timeout=120, limits=limits) as client:
        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(concurrency) as pool:
            out = list(pool.map(lambda kr: _send(client, kr[0], kr[1], avatar), reqs))
        return out, time.perf_counter() - t0


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def run(quick: bool = False) -> list[Result]:
    n_req, conc = (60, 8) if quick else (200, 16)
    load = os.getloadavg()[0]
    avatar = _avatar_png()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        run_dir = (
            Path(os.environ["AVATARFORGE_SERVE_RUN"]) if os.environ.get("AVATARFORGE_SERVE_RUN") else None
        )
        run_dir = run_dir or _make_checkpoint(Path(tmp))
        port = _free_port()
        proc, startup = _start_server(run_dir, port)
        base = f"http://127.0.0.1:{port}"
        try:
            reqs = _requests(n_req)
            _run_load(base, reqs[:4], 1, avatar)  # warm-up: first-call allocations
            # Concurrent and sequential phases alternate in rounds so that load from other jobs
            # on the shared machine hits both alike; walls are summed per phase.
            conc_out, seq_out, conc_wall, seq_wall = [], [], 0.0, 0.0
            seq_reqs = reqs[:40]
            rounds = 4
            for k in range(rounds):
                out, wall = _run_load(base, reqs[k::rounds], conc, avatar)
                conc_out += out
                conc_wall += wall
                out, wall = _run_load(base, seq_reqs[k::rounds], 1, avatar)
                seq_out += out
                seq_wall += wall
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    errors = sum(1 for o in conc_out if o[3] != 200)
    lat = [o[2] for o in conc_out]
    by_kind = {k: [o[2] for o in conc_out if o[0] == k] for k in ("generate", "postprocess")}
    seq_lat = {k: [o[2] for o in seq_out if o[0] == k] for k in ("generate", "postprocess")}
    seq_bytes = {(o[0], o[1]): o[4] for o in seq_out}
    mismatches = sum(1 for o in conc_out if (o[0], o[1]) in seq_bytes and o[4] != seq_bytes[(o[0], o[1])])
    rps, seq_rps = len(conc_out) / conc_wall, len(seq_out) / seq_wall
    note = f"{n_req} requests, {conc} at a time, loopback, server --threads 1; load {load:.1f}"
    return [
        Result("api_errors", errors, "requests", target=0, higher_is_better=False, notes=note),
        Result(
            "api_p50_ms",
            _pct(lat, 50),
            "ms",
            notes=f"all requests at concurrency {conc} (queueing behind the model lock included)",
        ),
        Result("api_p99_ms", _pct(lat, 99), "ms", notes=f"all requests at concurrency {conc}"),
        Result("api_requests_per_s", rps, "req/s", notes=note),
        Result(
            "api_generate_p50_ms",
            _pct(by_kind["generate"], 50),
            "ms",
            notes=f"p99 {_pct(by_kind['generate'], 99):.0f} ms; one 64 px RGBA image",
        ),
        Result(
            "api_postprocess_p50_ms",
            _pct(by_kind["postprocess"], 50),
            "ms",
            notes=f"p99 {_pct(by_kind['postprocess'], 99):.0f} ms; 64 px RGBA upload, denoise+sharpen",
        ),
        Result(
            "api_sequential_p50_ms",
            _pct([o[2] for o in seq_out], 50),
            "ms",
            notes=f"one at a time (service time): generate p50 {_pct(seq_lat['generate'], 50):.0f} ms, "
            f"postprocess p50 {_pct(seq_lat['postprocess'], 50):.0f} ms",
        ),
        Result(
            "api_concurrent_vs_sequential_throughput",
            rps / seq_rps,
            "x",
            notes=f"{rps:.1f} vs {seq_rps:.1f} req/s, same run",
        ),
        Result(
            "api_concurrent_byte_mismatches",
            mismatches,
            "responses",
            target=0,
            higher_is_better=False,
            notes="concurrent responses that differ from the sequential response to the same request",
        ),
        Result(
            "api_server_startup_s", startup, "s", notes="process start to /healthz 200 (imports, model load)"
        ),
    ]


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(f"{r.name}: {r.value:.4g} {r.unit} {r.notes}")
