"""Every attribute is a control (issue #18): per-attribute accuracy of the quickstart generator.

The quickstart's generator (``AVATARFORGE_BENCH_QUICKSTART``, default ``runs/quickstart``)
draws 1,000 avatars (500 with ``--quick``), each asked for random values of every attribute it
is conditioned on; the avatar classifier (``avatarforge.eval``'s ``attr`` metric) says how often
it sees the value asked for. Each attribute is one row: measured accuracy against its target
(0.8 for colours, three times chance for the rest: ``avatarforge.eval.metrics.attribute_target``),
with chance and the classifier's own held-out accuracy on the renderer's avatars in the notes.
That last figure bounds what can be judged: an attribute the classifier cannot read on the
renderer's 64-px avatars (eyebrow or mouth shape, a pixel or two) cannot be judged on generated
ones either. Skipped, saying why, without a quickstart folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.common import ROOT, Result

QUICKSTART_ENV = "AVATARFORGE_BENCH_QUICKSTART"


def run(quick: bool) -> list[Result]:
    import torch

    from avatarforge.data.procedural import SCHEMA
    from avatarforge.eval import evaluate
    from avatarforge.eval.metrics import attribute_target
    from avatarforge.runs import resolve_run

    path = Path(os.environ.get(QUICKSTART_ENV) or ROOT / "runs" / "quickstart")
    if not path.exists():
        return [
            Result(
                "attribute accuracy (skipped)",
                float("nan"),
                "",
                notes=f"no quickstart folder at {path} (set {QUICKSTART_ENV} or run 'make demo')",
            )
        ]
    run_dir = resolve_run(path)
    n = 500 if quick else 1000
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = evaluate(run_dir, None, metrics="attr", n=n, seed=1, device="cpu", truncation=1.0)
    finally:
        torch.set_num_threads(before)
    ceiling = res.settings.get("attribute_net", {}).get("heldout_accuracy", {})
    out = []
    for key, value in res.metrics.items():
        if not key.startswith("attr_acc_"):
            continue
        name = key[len("attr_acc_") :]
        k = len(SCHEMA[name].values)
        judge = ceiling.get(name)
        out.append(
            Result(
                f"attribute accuracy: {name}",
                float(value),
                "",
                target=round(attribute_target(name, k), 4),
                notes=f"chance {1 / k:.3f}; classifier on renders {judge if judge is not None else 'n/a'}",
                extra={"chance": round(1 / k, 4), "classifier_on_renders": judge, "n": n},
            )
        )
    met = sum(bool(r.passed) for r in out)
    out.append(
        Result(
            "attributes at target",
            float(met),
            f"of {len(out)}",
            notes=f"{run_dir} ({n} avatars); " + "; ".join(res.notes),
        )
    )
    return out
