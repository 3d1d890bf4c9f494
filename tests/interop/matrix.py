"""The interop matrix (issue #11, item 5): which clients, which paths, which scenarios, how a
cell is run, and the table that docs/interop.md shows.

A *cell* is one client on one path. Its driver (tests/interop/clients/) is run once, in its
own process, with a plan on stdin; it runs every scenario with the client library's public
API and prints the outcome of each as JSON. The tests then assert one scenario each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from tests.conformance.harness import NODE, ROOT, TOOLS

HERE = Path(__file__).resolve().parent
CLIENTS = HERE / "clients"
DOC = ROOT / "docs" / "interop.md"
INSTALL_HINT = "run scripts/install-test-tools (it installs the interop clients into .tools/)"

PARALLEL = 20  # calls fired at once in the parallel scenario
REQUEST_TIMEOUT = 30.0  # seconds, each request inside a driver
CELL_TIMEOUT = 180.0  # seconds, a whole driver run (every scenario of one cell; ~45 s at most
#                       when healthy, on a busy 2-core machine)
MATRIX_BUDGET = 900.0  # seconds for all the driver runs together (~4 min when healthy): past
#                        it the cells left fail at once, so a hanging server cannot hold CI

LEGACY, MODERN = "2025-11-25", "2026-07-28"
Era = Literal["2025-11-25", "2026-07-28"]
Carrier = Literal["connection", "meta"]


# -- the clients --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientKind:
    """A third-party client and the driver that runs it."""

    id: str  # pytest id
    package: str  # its name in its registry
    era: Era  # the protocol version it negotiates with the demo
    runtime: Path  # node or a virtual environment's python
    driver: str  # file under clients/
    installed: Path  # a file that exists once scripts/install-test-tools installed it
    manifest: Path | None = None  # npm package.json that records its version
    extra: Mapping[str, str] = field(default_factory=dict)  # plan entries for the driver

    @property
    def command(self) -> list[str]:
        return [str(self.runtime), str(CLIENTS / self.driver)]

    def require(self) -> None:
        """Skip (or, under CI=true, fail) when the client is not installed."""
        for path in (self.runtime, self.installed):
            if path.exists():
                continue
            message = f"{self.package} is missing ({path.relative_to(ROOT)}): {INSTALL_HINT}"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"CI=true but {message}")
            pytest.skip(message)

    def version(self) -> str | None:
        if self.manifest is None:
            return None
        return str(json.loads(self.manifest.read_text(encoding="utf-8"))["version"])


def _npm(directory: str, package: str) -> Path:
    return TOOLS / directory / "node_modules" / package / "package.json"


def _site(venv: str, package: str) -> Path:
    """The package in a tools venv (made by whichever python3 scripts/install-test-tools ran)."""
    lib = TOOLS / venv / "lib"
    found = sorted(lib.glob(f"python3.*/site-packages/{package}/__init__.py"))
    return found[0] if found else lib / "python3.X" / "site-packages" / package / "__init__.py"


INSPECTOR_JS = (
    (TOOLS / "inspector" / "node_modules" / "@modelcontextprotocol" / "inspector" / "clients")
    / "launcher"
    / "build"
    / "index.js"
)

CLIENT_KINDS: tuple[ClientKind, ...] = (
    ClientKind(
        "ts-sdk1",
        "@modelcontextprotocol/sdk",
        LEGACY,
        NODE,
        "ts_sdk1.mjs",
        _npm("ts-sdk1", "@modelcontextprotocol/sdk"),
        _npm("ts-sdk1", "@modelcontextprotocol/sdk"),
        {"packages": str(TOOLS / "ts-sdk1")},
    ),
    ClientKind(
        "ts-client2",
        "@modelcontextprotocol/client",
        MODERN,
        NODE,
        "ts_client2.mjs",
        _npm("ts-client2", "@modelcontextprotocol/client"),
        _npm("ts-client2", "@modelcontextprotocol/client"),
        {"packages": str(TOOLS / "ts-client2")},
    ),
    ClientKind(
        "inspector",
        "@modelcontextprotocol/inspector",
        MODERN,
        Path(sys.executable),
        "inspector.py",
        INSPECTOR_JS,
        _npm("inspector", "@modelcontextprotocol/inspector"),
        {"node": str(NODE), "inspector_js": str(INSPECTOR_JS)},
    ),
    ClientKind(
        "py-mcp1",
        "mcp 1.x",
        LEGACY,
        TOOLS / "py-mcp1" / "bin" / "python",
        "py_mcp1.py",
        _site("py-mcp1", "mcp"),
    ),
    ClientKind(
        "py-mcp2",
        "mcp 2.x (mcp.Client)",
        MODERN,
        Path(sys.executable),
        "py_mcp2.py",
        Path(sys.executable),
    ),
    ClientKind(
        "fastmcp",
        "fastmcp",
        MODERN,
        TOOLS / "py-fastmcp" / "bin" / "python",
        "py_fastmcp.py",
        _site("py-fastmcp", "fastmcp"),
    ),
)
CLIENTS_BY_ID = {kind.id: kind for kind in CLIENT_KINDS}


# -- the paths ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """How a client reaches the demo."""

    id: str
    label: str
    http: bool  # Streamable HTTP (else the client spawns the server over stdio)


ROUTES: tuple[Route, ...] = (
    Route("http", "Streamable HTTP → demo (SQLite)", http=True),
    Route("gateway-shared", "gateway → 2 demos sharing Redis", http=True),
    Route("gateway-memory", "gateway → 2 demos, memory:// each", http=True),
    Route("gateway-spawn", "gateway --spawn 'demo --stdio'", http=True),
    Route("stdio", "stdio (client spawns demo --stdio)", http=False),
)
ROUTES_BY_ID = {path.id: path for path in ROUTES}

SCENARIOS = (
    "connect",
    "count",
    "second_client",
    "parallel",
    "handle_count",
    "handle_vm",
    "no_carrier",
)
SCENARIO_TITLES = {
    "connect": "connect",
    "count": "count ×3 → 1,2,3",
    "second_client": "2nd client → 1",
    "parallel": "20 parallel → 1..20",
    "handle_count": "session_start + count(session=…)",
    "handle_vm": "init_vm → set_ram/set_cpu",
    "no_carrier": "no carrier: error names session_start",
}


def carrier_for(kind: ClientKind, path: Route) -> Carrier:
    """How the counting scenarios keep their session in this cell.

    A 2025-11-25 client keeps it on its connection (`Mcp-Session-Id` over HTTP, the process
    over stdio). Over stdio a 2026-07-28 SDK client sends nothing either: the connection is
    the session (issue #11 item 1). Over HTTP a 2026-07-28 client has no connection to lean
    on; every one here can put our id in `params._meta`, so it does. The Inspector opens a
    new connection (and over stdio a new server) per call, so it always needs the id.
    """
    if kind.id == "inspector":
        return "meta"
    if kind.era == LEGACY or not path.http:
        return "connection"
    return "meta"


def carrier_label(kind: ClientKind, path: Route) -> str:
    if carrier_for(kind, path) == "meta":
        return "`_meta` `dev.mcpsessions/sessionId`"
    if path.http:
        return "`Mcp-Session-Id` (2025-11-25 session)"
    return "the stdio connection"


def applies(kind: ClientKind, path: Route, scenario: str) -> bool:
    """`no_carrier` is asked of 2026-07-28 clients over HTTP: there a request with no session
    at all must get an error that tells a plain client what it can do (issue #11 item 3).
    Through `--spawn` too: HTTP requests with no session key come from any number of clients
    (the gateway gives them all one process), so the stdio connection is no session for
    them. Over stdio itself such a request has the connection's session (item 1)."""
    if scenario == "no_carrier":
        return kind.era == MODERN and path.http
    return True


# -- client-side failures: (client, path, scenario) → why, with the client's issue -------------

CLIENT_SIDE_FAILURES: dict[tuple[str, str, str], str] = {}


# -- running a cell -----------------------------------------------------------------------------


@dataclass
class CellRun:
    kind: ClientKind
    path: Route
    carrier: Carrier
    output: dict[str, Any]
    stderr: str

    @property
    def protocol(self) -> str | None:
        value = self.output.get("protocol")
        return str(value) if value is not None else None

    @property
    def version(self) -> str | None:
        value = self.output.get("version") or self.kind.version()
        return str(value) if value is not None else None

    def result(self, scenario: str) -> dict[str, Any]:
        results: dict[str, Any] = self.output.get("results", {})
        connect = results.get("connect", {})
        if scenario not in results and "error" in connect:
            return {"error": "not run (connect failed)"}
        assert scenario in results, (
            f"the {self.kind.id} driver reported no {scenario!r}; stderr:\n{self.stderr[-3000:]}"
        )
        outcome: dict[str, Any] = results[scenario]
        return outcome


def run_cell(kind: ClientKind, path: Route, target: Mapping[str, Any]) -> CellRun:
    """Run the client's driver once with every scenario; its parsed output. A driver that
    fails or runs past CELL_TIMEOUT raises AssertionError (the caller records it once)."""
    carrier = carrier_for(kind, path)
    plan = {
        "target": dict(target),
        "carrier": carrier,
        "ids": {name: str(uuid.uuid4()) for name in ("count", "second", "parallel")},
        "parallel": PARALLEL,
        "timeout_ms": int(REQUEST_TIMEOUT * 1000),
        "no_carrier": applies(kind, path, "no_carrier"),
        "version": kind.version(),
        **kind.extra,
    }
    try:
        proc = subprocess.run(
            kind.command,
            input=json.dumps(plan),
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=CELL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        message = f"{kind.id} on {path.id} ran past {CELL_TIMEOUT:g} s:\n{err[-3000:]}"
        raise AssertionError(message) from None
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, (
        f"{kind.id} driver exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    )
    return CellRun(kind, path, carrier, json.loads(lines[-1]), proc.stderr)
