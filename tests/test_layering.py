"""Import arrows, read from the sources with ``ast``: no cycles, layers point down.

Every ``import`` counts, those inside functions too (a lazy import hides a cycle
from Python, not from the design). Within ``streamser`` the layers, low to high,
are ``LAYERS``; a module may import its own layer and those below. Between the
packages the arrows are ``PACKAGE_ARROWS``: ``training`` and ``export`` import
``streamser``, never the reverse, and ``export`` imports ``training`` (model
classes, corpora, the Whisper prefix graph), never the reverse; that holds for
every module and for the packages and subpackages they form. In ``training`` and
``export`` a project import sits at the top of the module; one inside a function
must say why on its line, after ``LAZY_MARK`` (an optional heavy dependency).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO

PACKAGES = ("streamser", "export", "training")
LAYERS = (
    "errors",
    "labels",
    "audio",
    "recognition",
    "messages",
    "events",
    "analytics",
    "metrics",
    "pipeline",
    "sinks",
    "serve",
    "config",
    "console",
    "client",
    "daemon",
    "run",
    "cli",
)
PACKAGE_ARROWS = {
    ("training", "streamser"),
    ("export", "streamser"),
    ("export", "training"),
}
LAZY_MARK = "# lazy:"
RUNTIME_NEVER_IMPORTS = ("torch", "onnx", "training", "export", "sklearn", "librosa")
ONNX_GRAPH_BUILDERS = ("streamser.recognition.e5_onnx",)
"""Runtime modules that may import ``onnx`` (a core dependency) inside a function, to
build a graph into the cache; never at import time."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
    }


MODULES = _sources()


class _Imports(ast.NodeVisitor):
    """Absolute names a module imports, each with whether it runs at import time and
    the lines of its statement."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[tuple[str, bool, range]] = []
        self._depth = 0

    def _deferred(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _deferred

    def _add(self, name: str, node: ast.stmt) -> None:
        lines = range(node.lineno, (node.end_lineno or node.lineno) + 1)
        self.found.append((name, self._depth == 0, lines))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            anchor = self.package.split(".")
            anchor = anchor[: len(anchor) - node.level + 1]
            base = ".".join([*anchor, *([base] if base else [])])
        for alias in node.names:
            # ``from package import submodule`` imports the submodule
            self._add(f"{base}.{alias.name}", node)


def _resolve(name: str) -> str | None:
    """The project module ``name`` refers to (a module, or the object's module)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> Iterator[tuple[str, str, bool]]:
    """(raw name, project module or "", at import time) for each import."""
    for name, target, eager, _ in _imports_with_lines(module):
        yield name, target, eager


def _imports_with_lines(module: str) -> Iterator[tuple[str, str, bool, range]]:
    """``_imports`` with the line numbers of each import statement."""
    path = MODULES[module]
    visitor = _Imports(module, path.name == "__init__.py")
    visitor.visit(ast.parse(path.read_text("utf-8"), str(path)))
    for name, eager, lines in visitor.found:
        yield name, _resolve(name) or "", eager, lines


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _graph(*, eager_only: bool) -> dict[str, set[str]]:
    """Module -> project modules it imports. At import time Python also runs each
    target's parent packages (those not already the importer's own)."""
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for module in MODULES:
        for _, target, eager in _imports(module):
            if not target or target == module or (eager_only and not eager):
                continue
            graph[module].add(target)
            if eager_only:
                own = set(_ancestors(module))
                graph[module].update(a for a in _ancestors(target) if a not in own)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_sources_are_found() -> None:
    assert {"streamser.cli", "export.checkpoint", "training.acoustic"} <= set(MODULES)


@pytest.mark.parametrize("eager_only", [False, True], ids=["every-import", "eager"])
def test_no_import_cycle(eager_only: bool) -> None:
    assert _cycles(_graph(eager_only=eager_only)) == []


def test_cycle_finder_finds_one() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def _builds_a_graph(module: str, name: str, eager: bool) -> bool:
    return name.split(".")[0] == "onnx" and module in ONNX_GRAPH_BUILDERS and not eager


def test_runtime_never_imports_training_export_or_torch() -> None:
    bad = [
        (module, name)
        for module in MODULES
        if module.split(".")[0] == "streamser"
        for name, _, eager in _imports(module)
        if name.split(".")[0] in RUNTIME_NEVER_IMPORTS
        and not _builds_a_graph(module, name, eager)
    ]
    assert bad == []


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "streamser" or len(parts) < 2 or parts[1] not in LAYERS:
        return None  # the package's facade (__init__, __main__) sits above all;
        # importing it from below would be a cycle (test_no_import_cycle)
    return LAYERS.index(parts[1])


def test_streamser_layers_point_down() -> None:
    upward = []
    for module in MODULES:
        own = _layer(module)
        if own is None:
            continue
        for _, target, _ in _imports(module):
            layer = _layer(target) if target else None
            if layer is not None and layer > own:
                upward.append((module, target))
    assert upward == []


def _package(module: str, depth: int) -> str:
    """The package ``module`` sits in, ``depth`` names deep (a package is its own)."""
    parts = module.split(".")
    if MODULES[module].name != "__init__.py":
        parts.pop()
    return ".".join(parts[:depth]) if len(parts) >= depth else ""


def _package_graph(depth: int) -> dict[str, set[str]]:
    """Package -> packages its modules import, for packages ``depth`` names deep."""
    graph: dict[str, set[str]] = {}
    for module, targets in _graph(eager_only=False).items():
        source = _package(module, depth)
        if not source:
            continue
        graph.setdefault(source, set())
        for target in targets:
            package = _package(target, depth)
            if package and package != source:
                graph[source].add(package)
                graph.setdefault(package, set())
    return graph


def test_package_arrows_are_the_allowed_ones() -> None:
    arrows = {
        (source, target)
        for source, targets in _package_graph(1).items()
        for target in targets
    }
    assert arrows <= PACKAGE_ARROWS


def test_no_module_imports_against_the_package_arrows() -> None:
    against = []
    for module in MODULES:
        for _, target, _ in _imports(module):
            arrow = (module.split(".")[0], target.split(".")[0])
            if target and arrow[0] != arrow[1] and arrow not in PACKAGE_ARROWS:
                against.append((module, target))
    assert against == []


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_no_package_cycle(depth: int) -> None:
    assert _cycles(_package_graph(depth)) == []


def _unmarked_lazy_imports(source: str, module: str) -> list[int]:
    """First lines of the function-local project imports in ``source`` (the text of
    ``module``) whose statement gives no reason after ``LAZY_MARK``."""
    visitor = _Imports(module, is_package=False)
    visitor.visit(ast.parse(source))
    lines = source.splitlines()
    found: list[int] = []
    for name, eager, span in visitor.found:
        reason = any(lines[n - 1].partition(LAZY_MARK)[2].strip() for n in span)
        if _resolve(name) and not eager and not reason and span.start not in found:
            found.append(span.start)
    return found


def _lazy_project_imports() -> list[str]:
    """``path:line`` of each unmarked function-local project import in training and
    export."""
    return [
        f"{path.relative_to(REPO)}:{line}"
        for module, path in MODULES.items()
        if module.split(".")[0] in ("training", "export")
        for line in _unmarked_lazy_imports(path.read_text("utf-8"), module)
    ]


def test_lazy_import_finder_needs_a_reason_on_the_line() -> None:
    source = (
        "import numpy\n"
        "from training import metrics\n"
        "def f():\n"
        "    import json\n"
        "    from training.datasets import load_dataset\n"
        "    from export import card  # lazy: onnx only for --card\n"
        "    from training import (  # lazy:\n"
        "        metrics,\n"
        "    )\n"
    )
    assert _unmarked_lazy_imports(source, "training.example") == [5, 7]


def test_training_and_export_import_the_project_at_the_top() -> None:
    assert _lazy_project_imports() == []
