"""The package's shape (issue #17): no import circles, wire names spelled once.

Static checks over the source, read with :mod:`ast`: every ``import`` counts, at module level,
under ``TYPE_CHECKING`` or inside a function, since each is a dependency between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mcp_sessions
from mcp_sessions.core import names
from mcp_sessions.core.errors import (
    BodyTooLarge,
    InvalidRequest,
    MissingLegacySessionId,
    SessionNotFound,
)

PACKAGE = Path(mcp_sessions.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("mcp_sessions", *path.relative_to(PACKAGE).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            candidates = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        targets.update(c for c in candidates if c in modules and c != name)
    return targets


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
        for target in graph[node]:
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

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_circles() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    # the walk found the package, the gateway included
    assert {"mcp_sessions.server.session", "mcp_sessions.gateway.proxy"} <= graph.keys()
    assert _cycles(graph) == []


def test_cycle_finder_sees_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _string_literals(tree: ast.AST) -> list[str | bytes]:
    """String constants that are not docstrings (of modules, classes, functions or
    attributes: any string standing alone as a statement)."""
    docstrings = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str | bytes)
        and id(node) not in docstrings
    ]


def test_header_names_only_in_core_names() -> None:
    headers = [
        value.lower()
        for key, value in vars(names).items()
        if key.startswith("HEADER_") and isinstance(value, str)
    ]
    assert "mcp-session-id" in headers
    checked = list(PACKAGE.rglob("*.py"))  # every package: core, stores, server, gateway, client
    assert any(path.parent.name == "spawn" for path in checked)
    offenders = []
    for path in checked:
        if path == PACKAGE / "core" / "names.py":
            continue
        for literal in _string_literals(ast.parse(path.read_text())):
            text = literal.decode("latin-1") if isinstance(literal, bytes) else literal
            offenders += [(path.name, text) for h in headers if h in text.lower()]
    assert offenders == []


def test_standard_error_bodies() -> None:
    assert MissingLegacySessionId().response(7) == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {
            "code": -32600,
            "message": "Bad Request: missing Mcp-Session-Id header; send the id from the "
            "initialize response on every later request",
        },
    }
    assert MissingLegacySessionId.http_status == 400
    assert BodyTooLarge(1024).response() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32600, "message": "Request body over 1024 bytes"},
    }
    assert BodyTooLarge.http_status == 413
    assert SessionNotFound().response("a")["error"]["code"] == -31001
    assert InvalidRequest("Request Timeout").response() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32600, "message": "Request Timeout"},
    }
    assert isinstance(MissingLegacySessionId(), InvalidRequest)


def test_session_independent_methods() -> None:
    assert {"tools/list", "initialize", "ping"} <= names.SESSION_INDEPENDENT_METHODS
    assert "tools/call" not in names.SESSION_INDEPENDENT_METHODS
