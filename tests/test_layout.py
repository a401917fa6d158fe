"""The import graph follows the architecture: common/ depends on nothing of ours, the client
library on common/ only, gateway/ and decoder/ on common/ and themselves, and no module of one
package imports another that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("common", "client", "gateway", "decoder", "stt")
ALLOWED = {
    "common": {"common"},
    "client": {"client", "common"},
    "gateway": {"gateway", "common"},
    "decoder": {"decoder", "common"},
    "stt": set(PACKAGES),
}


def imports(path: Path) -> set[str]:
    """Every module of ours that `path` imports (at any depth, type-checking imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {"%s.%s" % (node.module, alias.name) for alias in node.names}
    return {name for name in found if name.split(".")[0] in PACKAGES}


def module_graph() -> dict[str, set[str]]:
    graph = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            graph[name] = imports(path)
    modules = set(graph)
    return {name: {m for m in deps if m in modules} for name, deps in graph.items()}


def test_packages_depend_only_on_what_the_architecture_allows() -> None:
    wrong = [
        "%s imports %s" % (name, dep)
        for name, deps in module_graph().items()
        for dep in deps
        if dep.split(".")[0] not in ALLOWED[name.split(".")[0]]
    ]
    assert wrong == []


def test_no_import_cycles() -> None:
    graph = module_graph()
    done: set[str] = set()
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for dep in sorted(graph[node]):
            if dep in path:
                cycles.append(" -> ".join([*path[path.index(dep) :], dep]))
            elif dep not in done:
                visit(dep, [*path, dep])
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    assert cycles == []
