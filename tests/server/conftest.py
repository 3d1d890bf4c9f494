"""Fixtures for the server tests: real servers on 127.0.0.1 and the official SDK client.

* ``make_target(transport, **options)`` — the test app (``_app.py``) in process, on uvicorn in
  a thread, or as a stdio subprocess, ready for ``target.client(version)``;
* ``serve(app)`` — any ASGI app on uvicorn in a thread, stopped at teardown;
* ``spawn(argv...)`` — a server subprocess (the ``mcp-sessions demo`` CLI or the test app) on
  a free port, stopped by its PID at teardown.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_sessions.core.sealing import KeyRing, SealingKey
from mcp_sessions.demo import StaticTokens

from . import _app
from ._app import build_app, http_app
from .helpers import (
    APP_SCRIPT,
    MCP_SESSIONS_CLI,
    ServerProcess,
    ShiftedClock,
    Target,
    ThreadedServer,
    start_process,
    stdio_params,
)

#: Tokens of the authenticated servers: bearer token → subject.
TOKENS = {"alice-token": "alice", "bob-token": "bob"}
ALICE = {"Authorization": "Bearer alice-token"}
BOB = {"Authorization": "Bearer bob-token"}


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(TOKENS), encoding="utf-8")
    return path


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.txt"
    path.write_text(SealingKey.generate().to_text() + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture
def serve() -> Iterator[Callable[[Any], ThreadedServer]]:
    servers: list[ThreadedServer] = []

    def start(app: Any) -> ThreadedServer:
        server = ThreadedServer(app).start()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def spawn(tmp_path: Path, framework: str) -> Iterator[Callable[..., ServerProcess]]:
    """``spawn("demo", *args)`` runs ``mcp-sessions demo``; ``spawn("app", *args)`` the test
    app. Both get ``--port`` on a free port and are stopped by PID at teardown."""
    processes: list[ServerProcess] = []

    def start(program: str, *args: str) -> ServerProcess:
        chosen = ["--framework", framework] if framework != "mcp" else []
        if program == "demo":
            argv = [str(MCP_SESSIONS_CLI), "demo", *args, *chosen]
        elif program == "app":
            argv = [sys.executable, str(APP_SCRIPT), *args, *chosen]
        else:
            raise ValueError(program)
        log = tmp_path / f"server-{len(processes)}.log"
        process = start_process(argv, log)
        processes.append(process)
        return process

    yield start
    for process in reversed(processes):
        process.stop()


#: The integrations the wire-driving tests run against (issue #14): the SDK's ``MCPServer``
#: and FastMCP. A test module that drives the wire sets ``pytestmark`` with
#: :data:`BOTH_FRAMEWORKS`; the others run on ``mcp`` alone.
FRAMEWORKS = ("mcp", "fastmcp")


@pytest.fixture
def framework(request: pytest.FixtureRequest) -> str:
    """The integration under test: ``mcp`` unless the test is parametrised over both."""
    return str(getattr(request, "param", "mcp"))


@pytest.fixture(autouse=True)
def _default_framework(framework: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``build_app()`` builds the test's framework (so each such test runs on both)."""
    monkeypatch.setattr(_app, "FRAMEWORK", framework)


@pytest.fixture
def make_target(
    tmp_path: Path, serve: Callable[[Any], ThreadedServer], framework: str
) -> Callable[..., Target]:
    """``make_target(transport, **options)``: the test app reachable over ``transport``.

    Options are those of :func:`tests.server._app.build_app` that a command line can carry:
    ``store`` (a URL), ``state``, ``lifecycle``, ``idle_ttl``, ``handle_ttl``, ``keys``,
    ``auth_tokens`` (HTTP only).
    """

    def make(transport: str, **options: Any) -> Target:
        if transport == "inproc":
            mcp, _sessions = build_app(framework=framework, **options)
            return Target("inproc", server=mcp)
        if transport == "http":
            mcp, sessions = build_app(framework=framework, **options)
            server = serve(http_app(mcp, sessions))
            return Target("http", url=server.url)
        if transport == "stdio":
            args = [*_cli_args(tmp_path, options), "--framework", framework]
            return Target("stdio", stdio=stdio_params(*args))
        raise ValueError(transport)

    return make


def _cli_args(tmp_path: Path, options: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for name, value in options.items():
        if name == "keys":
            assert isinstance(value, KeyRing)
            path = tmp_path / f"stdio-keys-{id(value)}.txt"
            path.write_text("\n".join(key.to_text() for key in value.keys) + "\n", encoding="utf-8")
            path.chmod(0o600)
            args += ["--key-file", str(path)]
        elif name == "auth_tokens":
            raise ValueError("stdio has no bearer tokens")
        else:
            args += [f"--{name.replace('_', '-')}", str(value)]
    return args


@pytest.fixture
def static_tokens() -> StaticTokens:
    return StaticTokens(dict(TOKENS))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> ShiftedClock:
    """Move time forward with ``clock.advance(seconds)``."""
    return ShiftedClock(monkeypatch)
