"""Run every benchmark: ``python -m benchmarks.run [--quick] [--only NAME ...]``.

Writes ``benchmarks/results/<module>.json`` per module (``benchmarks/results/quick/`` for
``--quick`` runs, so a quick check never replaces the figures of a full run) and
``benchmarks/REPORT.md``, which shows each module's full-run figures, or its quick-run ones
(marked "quick") when it has never had a full run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback

import torch

from avatarforge.fileio import atomic_write_json, atomic_write_text
from benchmarks.common import QUICK_RESULTS, RESULTS, ROOT, Result


def discover() -> list[str]:
    return sorted(p.stem for p in (ROOT / "benchmarks").glob("bench_*.py"))


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "torch": torch.__version__,
        "torch_threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }


def fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller workloads (finishes in under 10 minutes)")
    ap.add_argument("--only", nargs="*", default=None, help="module names, e.g. bench_render")
    args = ap.parse_args(argv)
    out_dir = QUICK_RESULTS if args.quick else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    mods = [m for m in discover() if not args.only or m in args.only]
    info = machine()
    failed = []
    t_all = time.time()
    for name in mods:
        print(f"== {name}", flush=True)
        t0 = time.time()
        try:
            results: list[Result] = importlib.import_module(f"benchmarks.{name}").run(quick=args.quick)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        for r in results:
            status = {True: "ok", False: "BELOW TARGET", None: ""}[r.passed]
            print(f"   {r.name}: {fmt(r.value)} {r.unit} (target {r.target}) {status}", flush=True)
        atomic_write_json(
            out_dir / f"{name}.json",
            {
                "module": name,
                "quick": args.quick,
                "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "machine": info,
                "seconds": round(time.time() - t0, 1),
                "results": [r.to_json() for r in results],
            },
        )
    write_report(info)
    print(f"all benchmarks: {time.time() - t_all:.0f} s; report: benchmarks/REPORT.md", flush=True)
    if failed:
        print(f"benchmarks that raised: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def write_report(info: dict[str, str]) -> None:
    lines = [
        "# Benchmark report",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
        "",
        "Each module's figures come from its last run (see `benchmarks/results/*.json` for when and how);",
        "targets that depend on free cores are noisy on a shared machine: rerun `make bench` on an idle one.",
        "",
    ]
    paths = {p.stem: p for p in sorted(QUICK_RESULTS.glob("bench_*.json"))}
    paths.update({p.stem: p for p in sorted(RESULTS.glob("bench_*.json"))})  # full runs win
    for _, path in sorted(paths.items()):
        data = json.loads(path.read_text())
        when = ", ".join(
            x
            for x in (
                data.get("date", ""),
                f"{data['seconds']:.0f} s",
                f"load average {data['load_average'][0]}" if "load_average" in data else "",
            )
            if x
        )
        lines += [
            f"## {data['module']}" + (" (quick)" if data.get("quick") else ""),
            "",
            f"Run: {when}.",
            "",
            "| figure | value | unit | target | status | notes |",
            "|---|---|---|---|---|---|",
        ]
        for r in data["results"]:
            tgt = "" if r["target"] is None else ("≥ " if r["higher_is_better"] else "≤ ") + fmt(r["target"])
            status = {True: "pass", False: "**below target**", None: ""}[r["passed"]]
            lines.append(
                f"| {r['name']} | {fmt(r['value'])} | {r['unit']} | {tgt} | {status} | {r['notes']} |"
            )
        lines.append("")
    atomic_write_text(ROOT / "benchmarks" / "REPORT.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
