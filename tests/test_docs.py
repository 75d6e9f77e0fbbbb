"""The documentation's examples run.

A fenced ``python`` or ``bash`` block in ``README.md`` or ``docs/*.md`` whose previous line is
the (invisible when rendered) comment ``<!-- doctest -->`` is executed, as written:

* all marked blocks of one page run in order, in one fresh working directory, so a later
  block may use files and (python) names made by an earlier one -- a page reads as a
  session a user could type;
* python blocks run in this process, in one namespace per page;
* bash blocks run with ``bash -euo pipefail``, with this virtualenv's ``bin/`` first on
  ``PATH`` (so ``avatarforge`` is the installed console script).

A page opts in by marking its examples; pages with none are simply not collected. The
test fails on any exception or non-zero exit and shows the block's line number.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = "<!-- doctest -->"
FENCE = re.compile(r"^\s*```(\w+)\s*$")


@dataclass
class Block:
    lang: str
    code: str
    line: int  # 1-based line of the opening fence


def marked_blocks(text: str) -> list[Block]:
    """The marked, fenced python/bash blocks of a markdown text, in order."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        prev = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        if m and prev == MARK:
            lang = m.group(1)
            body: list[str] = []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise ValueError(f"unclosed code block after {MARK} at line {len(body)}")
            if lang not in ("python", "bash"):
                raise ValueError(f"{MARK} marks a {lang!r} block; only python and bash run")
            code = textwrap.dedent("\n".join(body))
            blocks.append(Block(lang, code, i - len(body)))
        i += 1
    return blocks


def test_marked_blocks_parser():
    text = "x\n<!-- doctest -->\n```python\na = 1\n```\n```python\nnot = run\n```\n<!-- doctest -->\n\n```bash\necho hi\n```\n"
    blocks = marked_blocks(text)
    assert [(b.lang, b.code, b.line) for b in blocks] == [("python", "a = 1", 3), ("bash", "echo hi", 11)]
    with pytest.raises(ValueError, match="only python and bash"):
        marked_blocks("<!-- doctest -->\n```json\n{}\n```\n")


PAGES_WITH_EXAMPLES = [p for p in PAGES if MARK in p.read_text(encoding="utf-8")]


@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import torch

    blocks = marked_blocks(page.read_text(encoding="utf-8"))
    assert blocks, f"{page.name} has {MARK} but no block after it"
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the examples are tiny; the CI box has 2 shared cores
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    namespace: dict[str, object] = {"__name__": f"doctest_{page.stem}"}
    rel = page.relative_to(ROOT)
    try:
        for b in blocks:
            where = f"{rel}:{b.line}"
            if b.lang == "python":
                try:
                    exec(compile(b.code, where, "exec"), namespace)
                except Exception as e:
                    raise AssertionError(f"example at {where} raised {type(e).__name__}: {e}") from e
            else:
                proc = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", b.code],
                    cwd=tmp_path,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=240,
                )
                assert proc.returncode == 0, (
                    f"example at {where} exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}"
                    f"\n--- stderr\n{proc.stderr[-3000:]}"
                )
    finally:
        torch.set_num_threads(threads)
