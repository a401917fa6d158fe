"""The import graph follows the architecture: common/ depends on nothing of ours, the client
library on common/ only, gateway/ and decoder/ on common/ and themselves, and no module of one
package imports another that imports it back. Inside the gateway: the session core
(gateway/core/) decides and does no I/O, so it imports neither Redis nor anything of the
network, nor the gateway's other parts; the wire protocols know the core, not the transport;
the Redis store knows neither; only the transport (server, connections, drivers, router) ties
them together."""

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


# Inside the gateway: which of its parts each part may import (leaf modules of the gateway
# package itself, such as gateway.metrics, are open to all).
GATEWAY_PARTS = {
    "gateway.core": {"gateway.core"},
    "gateway.protocols": {"gateway.core", "gateway.protocols"},
    "gateway.store": {"gateway.store"},
    "gateway.files": {"gateway.core", "gateway.files", "gateway.store"},
    "gateway.transport": {"gateway.core", "gateway.protocols", "gateway.store", "gateway.files", "gateway.transport"},
}
# What the session core never imports: no Redis, no network, no event loop, no clock of its own.
CORE_FORBIDDEN = {"redis", "fastapi", "starlette", "uvicorn", "websockets", "httpx", "socket", "asyncio", "time"}


def all_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def part_of(module: str) -> str | None:
    return next((p for p in GATEWAY_PARTS if module == p or module.startswith(p + ".")), None)


def test_the_gateways_parts_import_only_what_their_layer_allows() -> None:
    wrong = []
    for name, deps in module_graph().items():
        part = part_of(name)
        if part is None:
            continue
        for dep in deps:
            dep_part = part_of(dep)
            if dep_part is not None and dep_part not in GATEWAY_PARTS[part]:
                wrong.append("%s imports %s" % (name, dep))
    assert wrong == []


def test_the_session_core_does_no_io() -> None:
    wrong = []
    for path in sorted((ROOT / "gateway" / "core").rglob("*.py")):
        for name in all_imports(path):
            if name.split(".")[0] in CORE_FORBIDDEN:
                wrong.append("%s imports %s" % (path.relative_to(ROOT), name))
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
