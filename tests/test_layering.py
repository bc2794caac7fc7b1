"""Import arrows, read from the sources with ``ast``: no cycles, layers point down.

Every ``import`` counts, those inside functions too (a lazy import hides a cycle
from Python, not from the design). Within ``streamser`` the layers, low to high,
are ``LAYERS``; a module may import its own layer and those below. ``training``
and ``export`` import ``streamser``, never the reverse; ``export`` imports
``training`` (model classes, corpora), and ``training`` imports from ``export``
only ``export.whisper_prefix``, the graph its encoder features are computed with,
which imports nothing of ``training``.
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
TRAINING_MAY_IMPORT_FROM_EXPORT = {"export.whisper_prefix"}
RUNTIME_NEVER_IMPORTS = ("torch", "onnx", "training", "export", "sklearn", "librosa")


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
    """Absolute names a module imports, each with whether it runs at import time."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[tuple[str, bool]] = []
        self._depth = 0

    def _deferred(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _deferred

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, self._depth == 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            anchor = self.package.split(".")
            anchor = anchor[: len(anchor) - node.level + 1]
            base = ".".join([*anchor, *([base] if base else [])])
        for alias in node.names:
            # ``from package import submodule`` imports the submodule
            self.found.append((f"{base}.{alias.name}", self._depth == 0))


def _resolve(name: str) -> str | None:
    """The project module ``name`` refers to (a module, or the object's module)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> Iterator[tuple[str, str, bool]]:
    """(raw name, project module or "", at import time) for each import."""
    path = MODULES[module]
    visitor = _Imports(module, path.name == "__init__.py")
    visitor.visit(ast.parse(path.read_text("utf-8"), str(path)))
    for name, eager in visitor.found:
        yield name, _resolve(name) or "", eager


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


def test_runtime_never_imports_training_export_or_torch() -> None:
    bad = [
        (module, name)
        for module in MODULES
        if module.split(".")[0] == "streamser"
        for name, _, _ in _imports(module)
        if name.split(".")[0] in RUNTIME_NEVER_IMPORTS
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


def test_training_imports_only_whisper_prefix_from_export() -> None:
    used = {
        target
        for module in MODULES
        if module.split(".")[0] == "training"
        for _, target, _ in _imports(module)
        if target.split(".")[0] == "export"
    }
    assert used <= TRAINING_MAY_IMPORT_FROM_EXPORT
    for module in TRAINING_MAY_IMPORT_FROM_EXPORT:
        assert not [
            target
            for _, target, _ in _imports(module)
            if target.split(".")[0] == "training"
        ]
