"""The shape of the code: which part of AvatarForge may import which (issue #16).

The house reads, bottom to top: the foundation (``errors``, ``device``, ``fileio``,
``imageio``, ``lazy``, ``commands``) ->
``data`` -> ``config``/``models`` -> ``runs`` -> ``train`` -> ``eval`` -> ``generate`` ->
``postprocess``/``style`` -> ``animate`` -> ``serve`` -> ``quickstart`` -> the command line.
An import may point down the house, never back up, and never in a circle. Library code
(``models``, ``data``, ``runs``, ``train``, ``eval``, ``generate``, ``postprocess``) never imports a
command-line module or the server.

Imports are read with ``ast`` from the source, so function-level (lazy) imports count as
much as module-level ones, and so do ``TYPE_CHECKING`` imports and modules imported by
name (a string that is exactly a module's dotted name, as ``importlib.import_module`` takes).
Nothing is imported, so the test needs no torch and runs in well under a second.

``KNOWN_EXCEPTIONS`` lists the imports that still break a rule, each with why it is still
there; the tests fail when one of them disappears, so the list shrinks with the code.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT_PACKAGE = "avatarforge"

#: Rank of each top-level part (a subpackage, or a module directly under avatarforge/): an
#: import from one part to another must not point to a higher rank. Equal ranks may import
#: each other as long as no circle forms.
HOUSE: dict[str, int] = {
    "avatarforge": 0,  # the package's __init__ (version)
    "errors": 0,
    "device": 0,
    "fileio": 0,
    "imageio": 0,
    "lazy": 0,
    "commands": 0,  # running a command: what it raises -> one line and an exit code
    "cli_args": 4,  # the flags every training command shares (looks a resumed run up in runs)
    "data": 1,
    "config": 2,
    "models": 2,
    "runs": 3,  # a trained run on disk: finding, checking and loading its checkpoints
    "train": 4,
    "eval": 5,
    "generate": 6,
    "postprocess": 7,
    "style": 7,
    "animate": 8,
    "avatar3d": 8,  # 3D models (VRM/GLB) cut from an avatar with the live rig's renders
    "serve": 9,
    "quickstart": 10,
    "cli": 11,
    "__main__": 11,
}

#: Parts whose modules are library code: they must not import a CLI module or the server.
LIBRARY = ("models", "data", "runs", "train", "eval", "generate", "postprocess")

#: (importer, imported module or package) pairs that still break a rule. Remove an entry with the
#: import it excuses; the tests below fail on an entry that no longer happens.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}

#: Imports that close a circle between modules on purpose, allowed by the module-level check
#: only (they stay within their package). A registry's lookup imports its package inside a
#: function, so every built-in registers itself before the first lookup; the architectures
#: import the registry's decorator at import time. Not debt: the way plugin registries load.
REGISTRY_LOADS: dict[tuple[str, str], str] = {
    # registry._ensure_loaded imports the package, whose __init__ imports every architecture
    ("avatarforge.models.registry", "avatarforge.models"): "model registry",
    # the same for the post-processing ops
    ("avatarforge.postprocess.registry", "avatarforge.postprocess"): "op registry",
}


@dataclass(frozen=True)
class Import:
    """One import statement (or module named by a string) found in the source."""

    importer: str
    target: str
    line: int

    def __str__(self) -> str:
        return f"{self.importer}:{self.line} -> {self.target}"


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package __init__) for every module under src/avatarforge."""
    out = {}
    for f in sorted((SRC / ROOT_PACKAGE).rglob("*.py")):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, (path, _) in MODULES.items()}


def _absolute(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    """The absolute module of a (possibly relative) ``from ... import``."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _front_doors() -> dict[str, dict[str, str]]:
    """For each package: public name -> the module that defines it, from its ``__init__``
    (``from .x import name`` re-exports and the lazy ``{"name": "avatarforge.x.y"}`` tables)."""
    doors: dict[str, dict[str, str]] = {}
    for name, (_, is_pkg) in MODULES.items():
        if not is_pkg:
            continue
        table: dict[str, str] = {}
        for node in ast.walk(TREES[name]):
            if isinstance(node, ast.ImportFrom):
                src = _absolute(name, True, node)
                if src in MODULES and src != name:
                    for alias in node.names:
                        table[alias.asname or alias.name] = src
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values):
                    if isinstance(key, ast.Constant) and isinstance(value, ast.Constant):
                        where = str(value.value)
                        where = where if where in MODULES else f"{name}.{where}"
                        if isinstance(key.value, str) and where in MODULES:
                            table[key.value] = where
        doors[name] = table
    return doors


DOORS = _front_doors()


def _lazy_table_strings(tree: ast.Module) -> set[int]:
    """ids of the string constants that are values of a dict (the lazy tables): they name
    where a public name lives, they are not imports of their own."""
    return {
        id(v) for node in ast.walk(tree) if isinstance(node, ast.Dict) for v in node.values if v is not None
    }


def _imports() -> list[Import]:
    """Every import of an avatarforge module by an avatarforge module, resolved to the module
    that defines the imported name (through package front doors)."""
    found = []
    for name, (_, is_pkg) in MODULES.items():
        tree = TREES[name]
        table_strings = _lazy_table_strings(tree) if is_pkg else set()
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                src = _absolute(name, is_pkg, node)
                for alias in node.names:
                    sub = f"{src}.{alias.name}"
                    targets.append(sub if sub in MODULES else DOORS.get(src, {}).get(alias.name, src))
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value in MODULES
                and id(node) not in table_strings
            ):
                targets = [node.value]  # imported by name (importlib.import_module)
            for target in targets:
                if target in MODULES and target != name:
                    found.append(Import(name, target, getattr(node, "lineno", 0)))
    return found


IMPORTS = _imports()


def part(module: str) -> str:
    """The top-level part a module belongs to (``avatarforge.eval.metrics`` -> ``eval``)."""
    bits = module.split(".")
    return bits[1] if len(bits) > 1 else bits[0]


def is_cli(module: str) -> bool:
    """A command-line module: ``cli``, ``*_cli`` or ``__main__`` anywhere."""
    last = module.rsplit(".", 1)[-1]
    return last in ("cli", "__main__") or last.endswith("_cli")


def _matches(imp: Import, pair: tuple[str, str]) -> bool:
    """``imp`` is the exception ``pair``: same importer, target that module or inside it."""
    importer, target = pair
    return imp.importer == importer and (imp.target == target or imp.target.startswith(target + "."))


def _excused(imp: Import) -> bool:
    return any(_matches(imp, pair) for pair in KNOWN_EXCEPTIONS)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    nodes = sorted(set(edges) | {w for ws in edges.values() for w in ws})
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def _explain(cycle: list[str], key) -> str:
    members = set(cycle)
    lines = [
        str(i)
        for i in IMPORTS
        if key(i.importer) in members and key(i.target) in members and key(i.importer) != key(i.target)
    ]
    return " <-> ".join(cycle) + "\n  " + "\n  ".join(sorted(set(lines)))


def test_the_source_is_found():
    assert len(MODULES) > 100 and len(IMPORTS) > 300
    assert "avatarforge.data.procedural" in MODULES and "avatarforge.serve.overlay" in MODULES
    # function-level imports are seen (render_avatar is imported inside a function here)
    assert any(
        i.importer == "avatarforge.serve.overlay.hub" and i.target == "avatarforge.data.procedural.render"
        for i in IMPORTS
    )


def test_no_import_circles_between_packages():
    edges: dict[str, set[str]] = defaultdict(set)
    for imp in IMPORTS:
        a, b = part(imp.importer), part(imp.target)
        if a != b and not _excused(imp):
            edges[a].add(b)
    cycles = _cycles(edges)
    assert not cycles, "import circles between packages:\n" + "\n".join(_explain(c, part) for c in cycles)


def test_no_import_circles_between_modules():
    edges: dict[str, set[str]] = defaultdict(set)
    for imp in IMPORTS:
        if not _excused(imp) and (imp.importer, imp.target) not in REGISTRY_LOADS:
            edges[imp.importer].add(imp.target)
    cycles = _cycles(edges)
    assert not cycles, "import circles between modules:\n" + "\n".join(
        _explain(c, lambda m: m) for c in cycles
    )


def test_library_code_imports_no_cli_and_no_server():
    bad = [
        str(imp)
        for imp in IMPORTS
        if part(imp.importer) in LIBRARY
        and not is_cli(imp.importer)  # a package's own CLI may use another CLI's helpers
        and (is_cli(imp.target) or part(imp.target) == "serve")
        and not _excused(imp)
    ]
    assert not bad, "library modules importing a CLI module or the server:\n" + "\n".join(bad)


def test_imports_point_down_the_house():
    unknown = sorted({part(m) for m in MODULES} - set(HOUSE))
    assert not unknown, f"new top-level parts {unknown}: give them a place in HOUSE"
    bad = [
        f"{imp}  ({part(imp.importer)} {HOUSE[part(imp.importer)]} -> {part(imp.target)} {HOUSE[part(imp.target)]})"
        for imp in IMPORTS
        if HOUSE[part(imp.target)] > HOUSE[part(imp.importer)] and not _excused(imp)
    ]
    assert not bad, "imports pointing up the house:\n" + "\n".join(bad)


@pytest.mark.parametrize("pair", sorted(KNOWN_EXCEPTIONS) + sorted(REGISTRY_LOADS))
def test_known_exceptions_still_happen(pair):
    """An exception whose import is gone must leave the list (so the list only shrinks)."""
    assert any(_matches(i, pair) for i in IMPORTS), (
        f"{pair[0]} no longer imports {pair[1]}: remove it from KNOWN_EXCEPTIONS"
    )


def test_package_data_ships_the_static_files():
    """Every file the server serves from serve/static is matched by pyproject's package-data,
    so a wheel carries it."""
    if sys.version_info < (3, 11):
        pytest.skip("tomllib is new in Python 3.11")
    import tomllib

    cfg = tomllib.loads((SRC.parent / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = cfg["tool"]["setuptools"]["package-data"][ROOT_PACKAGE]
    base = SRC / ROOT_PACKAGE
    files = [p.relative_to(base) for p in (base / "serve" / "static").rglob("*") if p.is_file()]
    assert files
    # setuptools globs: '*' stays within one folder, as in PurePath.match
    missing = [
        f.as_posix() for f in files if not any(PurePosixPath(f.as_posix()).match(pat) for pat in patterns)
    ]
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"
