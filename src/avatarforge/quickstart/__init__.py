"""``avatarforge quickstart`` (what ``make demo`` runs): from nothing to a trained avatar
generator, an expression animator and a self-contained HTML report, on a 2-core CPU.

::

    from avatarforge.quickstart import run_quickstart

    result = run_quickstart("runs/quickstart", minutes=10)
    print(result.files["report"])          # runs/quickstart/report.html
    print(result.metrics["evaluation"])    # swd, fid_avatar, attr_acc, ...

Stages (:mod:`.pipeline`): built-in procedural data, a conditional StyleGAN trained for
most of the budget, evaluation, the expression animator, sample / attribute grids, an
interpolation GIF, a transparent blinking and talking animation, ``metrics.json``,
``report.html`` (:mod:`.report`) and ``quickstart.json`` (what ``avatarforge serve DIR``
reads). Rerunning resumes: finished stages whose inputs did not change are skipped, and
training continues from its last checkpoint. See docs/quickstart.md.
"""

from __future__ import annotations

from avatarforge.lazy import lazy_attributes

__all__ = [
    "MANIFEST_NAME",
    "QuickstartError",
    "QuickstartInterrupted",
    "QuickstartResult",
    "read_manifest",
    "run_quickstart",
]

_LAZY = {
    "MANIFEST_NAME": "avatarforge.quickstart.pipeline",
    "QuickstartError": "avatarforge.quickstart.pipeline",
    "QuickstartInterrupted": "avatarforge.quickstart.pipeline",
    "QuickstartResult": "avatarforge.quickstart.pipeline",
    "read_manifest": "avatarforge.quickstart.pipeline",
    "run_quickstart": "avatarforge.quickstart.pipeline",
}


# Lazy, so building the CLI parser does not import torch.
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
