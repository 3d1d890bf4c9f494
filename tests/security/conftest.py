"""Fixtures the security tests share: demo servers they start and stop, an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx2
import pytest
from tests.server.helpers import TIMEOUT, ServerProcess, start_demo


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``demo(*args)``: ``mcp-sessions demo ARGS`` on a free port, stopped by PID."""
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        server = start_demo(tmp_path, *args, name=f"demo-{len(started)}")
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=TIMEOUT) as client:
        yield client
