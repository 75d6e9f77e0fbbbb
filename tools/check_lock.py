"""Fail if the running environment differs from requirements.lock (CI prints and checks it).

Usage: python tools/check_lock.py [requirements.lock]
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(argv: list[str]) -> int:
    lock = Path(argv[1] if len(argv) > 1 else "requirements.lock")
    want: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            want[_norm(name)] = version.strip()
    have = {_norm(d.metadata["Name"]): d.version for d in metadata.distributions()}
    have.pop("avatarforge", None)
    bad = []
    for name, version in sorted(want.items()):
        got = have.get(name)
        # A local label (torch's "+cpu") is the same release.
        if got is None or got.split("+")[0] != version:
            bad.append(f"  {name}: locked {version}, installed {got or 'nothing'}")
    extra = sorted(set(have) - set(want))
    for name in extra:
        bad.append(f"  {name}: installed {have[name]}, not in {lock}")
    print(f"{len(have)} packages installed; lock {lock}: {len(want)} pinned")
    if bad:
        print("environment differs from the lock:\n" + "\n".join(bad))
        return 1
    print("environment matches the lock")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
