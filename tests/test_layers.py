"""The import structure of calix: no cycle among module-level imports, and every import goes
down (or sideways) the layer table below. docs/architecture.md describes the same layers.

Imports are read from the source (``ast``), not by importing: ``from calix.x import y``
counts as an import of ``calix.x.y`` when that is a module, else of ``calix.x``. Imports at
module level (including inside ``try``/``if`` at the top) are checked separately from imports
inside functions (lazy imports), which may go upward only where ALLOWED_UPWARD lists them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

#: Lowest layer first. A module may import modules of its own layer or of the layers before
#: it. "calix.x.*" names the package calix.x and all its modules.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("calix._io", "calix._random", "calix._validation", "calix._stats",
                    "calix._progress", "calix.exceptions", "calix._registry", "calix._names",
                    "calix.nets")),
    ("models and data", ("calix.models", "calix.data", "calix.groundtruth")),
    ("engine and training", ("calix.perturb.*", "calix.train", "calix.zoo", "calix.model_io",
                             "calix")),
    ("calibrators and explainers", ("calix.calibrate.*", "calix.explain.*",
                                    "calix.uncertainty.*")),
    ("metrics", ("calix.metrics.*",)),
    ("procedures", ("calix.procedures", "calix.recipes", "calix.plot", "calix.parallel",
                    "calix._dask_plugin", "calix.conformal", "calix.quantus_compat")),
    ("applications", ("calix.studies.*", "calix.report", "calix.demo", "calix.cli",
                      "calix._apidoc")),
]

#: Lazy (function-level) imports that go up the table, each with its reason.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {
    ("calix.metrics._base", "calix.procedures"):
        "procedures_getattr: the old import paths calix.metrics(.calibration/.faithfulness)"
        ".calibration_by_level / roar_* resolve on first use",
    ("calix.uncertainty.curves", "calix.metrics.faithfulness"):
        "distribution_curves: deletion/insertion curves of an explanation distribution",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted((SRC / "calix").rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(importer: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The calix modules one import statement loads."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "calix"]
    if node.level:
        base = importer.split(".") if _is_package(importer) else importer.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    if module.split(".")[0] != "calix":
        return []
    out = []
    for alias in node.names:
        sub = f"{module}.{alias.name}"
        out.append(sub if sub in MODULES else module)
    return out


def _imports(name: str) -> tuple[set[str], set[str]]:
    """(module-level, function-level) calix imports of module ``name``."""
    top: set[str] = set()
    lazy: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                (lazy if in_function else top).update(
                    m for m in _resolve(name, child) if m != name)
            visit(child, in_function or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    visit(ast.parse(MODULES[name].read_text(encoding="utf-8")), False)
    return top, lazy


GRAPH = {name: _imports(name) for name in MODULES}


def _layer(name: str) -> int | None:
    for i, (_, members) in enumerate(LAYERS):
        for m in members:
            if name == m or (m.endswith(".*") and (name == m[:-2] or
                                                   name.startswith(m[:-1]))):
                return i
    return None


def _layer_name(name: str) -> str:
    return LAYERS[_layer(name)][0]


def test_every_module_has_a_layer():
    missing = sorted(m for m in MODULES if _layer(m) is None)
    assert not missing, f"give these modules a layer in tests/test_layers.py: {missing}"


def test_no_cycle_among_module_level_imports():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for dep in sorted(GRAPH[m][0]):
            if dep not in GRAPH:
                continue
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                pytest.fail("module-level import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        path.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("level", ["module", "function"])
def test_imports_follow_the_layers(level):
    bad = []
    for m, (top, lazy) in sorted(GRAPH.items()):
        for dep in sorted(top if level == "module" else lazy):
            if dep not in MODULES or _layer(dep) <= _layer(m):
                continue
            if level == "function" and (m, dep) in ALLOWED_UPWARD:
                continue
            bad.append(f"{m} ({_layer_name(m)}) imports {dep} ({_layer_name(dep)}) "
                       f"at {level} level")
    assert not bad, "imports up the layer table:\n" + "\n".join(bad)


def test_allowed_upward_imports_still_exist():
    stale = [pair for pair in ALLOWED_UPWARD if pair[1] not in GRAPH[pair[0]][1]]
    assert not stale, f"remove these from ALLOWED_UPWARD, they are gone: {stale}"


def test_the_table_reads_the_imports():
    """The reader itself: a relative, a package-level and a submodule import resolve."""
    assert "calix.models" in GRAPH["calix.perturb.engine"][0]
    assert "calix.zoo" in GRAPH["calix.procedures"][0]  # from calix import zoo
    assert "calix.explain.base" in GRAPH["calix.explain"][0]
    assert _layer("calix.explain.shapley") == _layer("calix.explain")
