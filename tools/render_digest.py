"""One sha256 over many procedural renders: proof that a refactor of the renderer kept its pixels.

Run it before and after a change to ``avatarforge.data.procedural``; the digests must match.
It covers every supersampling factor (sizes 32 to 512), backgrounds, part masks, every
categorical value fixed explicitly, extreme and random expressions, and the sampled
attribute dicts themselves (so the seeded values are checked too, not only the drawing).

    .venv/bin/python tools/render_digest.py            # about half a minute on one core
    .venv/bin/python tools/render_digest.py --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import hashlib
import json

import numpy as np

from avatarforge.data import procedural as P


def digest(quick: bool = False) -> tuple[str, int]:
    """The sha256 of a fixed list of renders (and their attribute dicts), and how many went in."""
    h = hashlib.sha256()
    n = 0

    def add(arr: np.ndarray) -> None:
        nonlocal n
        h.update(str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
        n += 1

    seeds = range(40 if quick else 2000)
    for seed in seeds:
        attrs = P.sample_attributes(seed)
        h.update(json.dumps(attrs, sort_keys=True).encode())
        add(P.render(attrs, 32 + (seed % 3) * 16))  # 32, 48, 64: supersampling 4
    sizes = (32, 64, 96, 97, 128, 192, 193, 256, 512) if not quick else (32, 97, 193)
    for i, size in enumerate(sizes):
        for seed in range(i, i + (4 if size > 256 else 12)):
            img, parts = P.render(P.sample_attributes(seed), size, return_parts=True)
            add(img)
            for name in P.PART_NAMES:
                add(parts[name])
            add(P.render(P.sample_attributes(seed), size, background=True))
            add(P.render_background(P.sample_attributes(seed), size))
    for field in P.SCHEMA.categorical:
        for j, value in enumerate(field.values):
            add(P.render_avatar(1000 + j, 64, background=True, **{field.name: value}))
    extremes = [
        {"eye_open": 0.0},
        {"eye_open": 0.5, "mouth_open": 1.0},
        {"smile": -1.0, "mouth_open": 0.4},
        {"smile": 1.0},
        {"head_yaw": -1.0, "head_tilt": 1.0},
        {"head_yaw": 1.0, "head_tilt": -1.0},
    ]
    rng = np.random.default_rng(5)
    randoms = [P.random_expression(rng) for _ in range(4 if quick else 12)]
    for seed in range(3 if quick else 10):
        add(P.render_expressions(seed, extremes + randoms, 64))
        add(P.render_expressions(seed, extremes, 128, background=True))
    h.update(P.nearest_color((120, 30, 200), P.HAIR_COLORS).encode())
    return h.hexdigest(), n


def main() -> None:
    """Print the digest and the number of arrays it covers."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smaller set (seconds)")
    args = ap.parse_args()
    d, n = digest(args.quick)
    print(f"{d}  ({n} arrays)")


if __name__ == "__main__":
    main()
