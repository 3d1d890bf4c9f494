"""Fixtures for the WebSocket tests: real servers on 127.0.0.1 (the ``mcp-sessions demo``
CLI in a subprocess, the test app on uvicorn in a thread with chosen limits)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.server._app import build_app
from tests.server.helpers import ServerProcess, ThreadedServer, start_demo

from mcp_sessions.core.websocket import WebSocketLimits
from mcp_sessions.serving import HTTPImplementation, HTTPLimits, uvicorn_config


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[ServerProcess]:
    """``mcp-sessions demo`` on a free port, memory store."""
    server = start_demo(tmp_path, "--store", "memory://")
    yield server
    server.stop()


@pytest.fixture
def app_server() -> Iterator[Callable[..., ThreadedServer]]:
    """``app_server(limits, http=..., http_limits=..., build=..., **build_options)``: the app
    with WebSocket ``limits`` on uvicorn in a thread, run with the project's ``uvicorn_config``
    (as ``serve`` runs it), stopped at teardown."""
    servers: list[ThreadedServer] = []

    def start(
        limits: WebSocketLimits | None = None,
        *,
        http: HTTPImplementation = "auto",
        http_limits: HTTPLimits | None = None,
        build: Callable[..., tuple[Any, Any]] = build_app,
        websocket: bool = True,
        **options: Any,
    ) -> ThreadedServer:
        mcp, sessions = build(**options)
        app = sessions.streamable_http_app(
            mcp, websocket=(limits or WebSocketLimits()) if websocket else None
        )
        config = uvicorn_config(
            app, port=0, limits=http_limits, http=http, log_level="warning", lifespan="on"
        )
        server = ThreadedServer(app, config).start()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        server.stop()
