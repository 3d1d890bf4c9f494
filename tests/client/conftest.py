"""Fixtures for the client tests: real HTTP servers on loopback ports, stopped after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .servers import HttpServer, Recorder, demo_app, plain_app, start_http

#: The two protocol eras, as ``mode=`` of the SDK client: the 2025-11-25 handshake, and
#: 2026-07-28 negotiated with server/discover.
MODES = {"legacy": "legacy", "modern": "auto"}


@pytest.fixture(params=sorted(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    return MODES[request.param]


@pytest.fixture
def http_servers() -> Iterator[list[HttpServer]]:
    started: list[HttpServer] = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def demo_http(
    http_servers: list[HttpServer],
) -> Callable[..., tuple[str, Recorder]]:
    """Start a demo server (``build_demo`` options); returns its URL and request recorder."""

    def start(**options: Any) -> tuple[str, Recorder]:
        app, recorder = demo_app(**options)
        server = start_http(app)
        http_servers.append(server)
        return server.url, recorder

    return start


@pytest.fixture
def plain_http(http_servers: list[HttpServer]) -> Callable[[], tuple[str, Recorder]]:
    """Start a plain SDK server that knows nothing of mcp-sessions."""

    def start() -> tuple[str, Recorder]:
        app, recorder = plain_app()
        server = start_http(app)
        http_servers.append(server)
        return server.url, recorder

    return start
