"""Measure the spread of the numerics-sensitive tests' values across CPUs, threads, seeds, load.

Runs ``pytest -m numerics`` (or the tests named by ``-k``) once per setting and training seed
(``AF_TEST_SEED``: another seed is another training trajectory, as another CPU's rounding
gives), reads the values the tests keep with ``record_number`` from the JUnit XML, and writes
a table of min / max per value and setting. Thresholds in the tests are set below the minimum
(or above the maximum) of this table with a margin, and the measured range is written next to
each threshold.

Settings:
  bf16       this CPU's default kernels; bf16 autocast where it has native bf16
  fp32-avx2  ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2: a CPU without AVX-512 / bf16
  1thread    OMP_NUM_THREADS=1 (tests that pin one thread are unaffected)
  loaded     bf16 with a CPU-burning process on the other core

Usage:
  python tools/numerics_spread.py --seeds 0,1,2 --settings bf16,fp32-avx2 --out spread.json [-k EXPR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

SETTINGS: dict[str, dict[str, str]] = {
    "bf16": {},
    "fp32-avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "1thread": {"OMP_NUM_THREADS": "1"},
    "loaded": {},
}


def _burn(stop: float) -> None:
    x = 0
    while time.monotonic() < stop:
        x += 1


def read_junit(path: Path) -> dict[str, dict[str, float]]:
    """``{test id: {value name: value}}`` from a JUnit XML written with record_property."""
    out: dict[str, dict[str, float]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        props = {p.get("name"): float(p.get("value")) for p in case.iter("property")}
        failed = case.find("failure") is not None or case.find("error") is not None
        tid = f"{case.get('classname')}::{case.get('name')}"
        if props or failed:
            out[tid] = {**props, **({"FAILED": 1.0} if failed else {})}
    return out


def run(setting: str, seed: int, k: str | None, xml: Path) -> float:
    env = {**os.environ, **SETTINGS[setting], "AF_TEST_SEED": str(seed)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "numerics and not slow"]
    cmd += ["--junitxml", str(xml), *(["-k", k] if k else [])]
    burner = None
    t0 = time.monotonic()
    if setting == "loaded":
        burner = mp.Process(target=_burn, args=(time.monotonic() + 3600,), daemon=True)
        burner.start()
    try:
        subprocess.run(cmd, env=env, check=False, stdout=subprocess.DEVNULL)
    finally:
        if burner is not None:
            burner.terminate()
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--settings", default="bf16,fp32-avx2")
    ap.add_argument("-k", default=None, help="pytest -k expression (default: every numerics test)")
    ap.add_argument("--out", default="numerics_spread.json")
    ap.add_argument("--xml-dir", default=None, help="keep the JUnit XML files here")
    args = ap.parse_args()
    xml_dir = Path(args.xml_dir or Path(args.out).with_suffix(".xml.d"))
    xml_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(dict))
    for setting in args.settings.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            xml = xml_dir / f"{setting}-seed{seed}.xml"
            if not xml.exists():
                secs = run(setting, seed, args.k, xml)
                print(f"{setting} seed {seed}: {secs:.0f} s", flush=True)
            for tid, values in read_junit(xml).items():
                for name, v in values.items():
                    results[tid][name].setdefault(setting, []).append(v)
    Path(args.out).write_text(json.dumps(results, indent=1, sort_keys=True))
    for tid, values in sorted(results.items()):
        print(tid)
        for name, per in sorted(values.items()):
            cells = "  ".join(f"{s}: {min(v):.3f}..{max(v):.3f} (n={len(v)})" for s, v in per.items())
            print(f"    {name:24s} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
