"""Carrier 5 (DESIGN §2, issue #11): over stdio one process serves one client, so a request
that carries no session belongs to its connection's own implicit session, at both protocol
versions, with the official ``mcp.Client`` that knows nothing of the extension. Explicit
carriers still win. Real subprocesses: ``mcp-sessions demo --stdio`` and the test app."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from mcp_sessions.core.errors import SESSION_NOT_FOUND

from . import _app
from .helpers import (
    BOTH_FRAMEWORKS,
    MCP_SESSIONS_CLI,
    MODE,
    PROTOCOL,
    TIMEOUT,
    VERSIONS,
    Target,
    Version,
    expect_error,
    new_id,
    sid,
    value,
)

pytestmark = [pytest.mark.anyio, BOTH_FRAMEWORKS]

MakeTarget = Callable[..., Target]
CONNECTION_ID = re.compile(r"connection-[0-9a-f]{32}")


def demo_stdio(tmp_path: Path, store: str, *options: str) -> StdioServerParameters:
    """``mcp-sessions demo --stdio``, as a desktop host would start it (keys and state kept
    under ``tmp_path``, never in the user's home)."""
    return StdioServerParameters(
        command=str(MCP_SESSIONS_CLI),
        args=[
            "demo",
            "--stdio",
            "--store",
            store,
            "--key-file",
            str(tmp_path / "demo-keys.txt"),
            *options,
            # the framework of this test's parametrisation (tests/server/conftest.py)
            "--framework",
            _app.FRAMEWORK,
        ],
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")},
        cwd=str(tmp_path),
    )


@asynccontextmanager
async def plain_client(server: StdioServerParameters, version: Version) -> AsyncIterator[Client]:
    """The official SDK client, with no mcp-sessions code on the client side."""
    async with Client(server, mode=MODE[version], read_timeout_seconds=TIMEOUT) as client:
        assert client.protocol_version == PROTOCOL[version]
        yield client


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_plain_client_counts_over_stdio_and_a_new_connection_starts_afresh(
    tmp_path: Path, version: Version
) -> None:
    # One SQLite store shared by both processes: what separates them is the connection.
    server = demo_stdio(tmp_path, f"sqlite:///{tmp_path / 'sessions.db'}")
    async with plain_client(server, version) as client:
        assert [value(await client.call_tool("count", {})) for _ in range(3)] == [1, 2, 3]
    async with plain_client(server, version) as client:
        assert [value(await client.call_tool("count", {})) for _ in range(2)] == [1, 2]


@pytest.mark.parametrize("version", VERSIONS)
async def test_parallel_calls_on_one_stdio_connection_lose_no_update(
    tmp_path: Path, version: Version
) -> None:
    server = demo_stdio(tmp_path, "memory://")
    results: list[int] = []
    async with plain_client(server, version) as client:

        async def one() -> None:
            results.append(value(await client.call_tool("count", {})))

        # Twenty first calls at once: one connection session, created once, every bump kept.
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as group:
                for _ in range(20):
                    group.start_soon(one)
        assert sorted(results) == list(range(1, 21))
        assert value(await client.call_tool("count", {})) == 21


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_meta_id_wins_over_the_connection_and_is_shared_between_connections(
    tmp_path: Path, version: Version
) -> None:
    server = demo_stdio(tmp_path, f"sqlite:///{tmp_path / 'sessions.db'}")
    shared = new_id()
    async with plain_client(server, version) as first:
        assert value(await first.call_tool("count", {})) == 1
        assert value(await first.call_tool("count", {}, meta=sid(shared))) == 1
        assert value(await first.call_tool("count", {}, meta=sid(shared))) == 2
        # The connection's own session was not touched by the _meta calls.
        assert value(await first.call_tool("count", {})) == 2
    # Another process on the same store: the _meta id reaches the same session there, while
    # this connection's own session is a new one.
    async with plain_client(server, version) as second:
        assert value(await second.call_tool("count", {}, meta=sid(shared))) == 3
        assert value(await second.call_tool("count", {})) == 1


@pytest.mark.parametrize("version", VERSIONS)
async def test_the_connection_session_as_the_tool_author_sees_it(
    make_target: MakeTarget, version: Version
) -> None:
    target = make_target("stdio")
    async with target.client(version) as client:
        first = value(await client.call_tool("whoami", {}))
        assert CONNECTION_ID.fullmatch(first["id"]), first["id"]
        assert (first["carrier"], first["origin"], first["principal"]) == (
            "connection",
            "connection",
            "anonymous",
        )
        assert first["created"] is True
        again = value(await client.call_tool("whoami", {}))
        assert (again["id"], again["created"]) == (first["id"], False)
        # Results that used the session carry its expiry, like any other carrier's.
        result = await client.call_tool("count", {})
        assert result.meta is not None and "dev.mcpsessions/expiresAt" in result.meta
    async with target.client(version) as client:
        other = value(await client.call_tool("whoami", {}))
        assert CONNECTION_ID.fullmatch(other["id"])
        assert other["id"] != first["id"]


@pytest.mark.parametrize("version", VERSIONS)
async def test_the_explicit_lifecycle_still_serves_the_connection_session(
    tmp_path: Path, version: Version
) -> None:
    """Explicit lifecycle refuses client-proposed ids; the connection's id is the server's."""
    server = demo_stdio(tmp_path, "memory://", "--lifecycle", "explicit")
    async with plain_client(server, version) as client:
        assert [value(await client.call_tool("count", {})) for _ in range(2)] == [1, 2]
        error = await expect_error(client.call_tool("count", {}, meta=sid(new_id())))
        assert error.code == SESSION_NOT_FOUND


@pytest.mark.parametrize("version", VERSIONS)
async def test_state_edits_of_every_demo_tool_follow_the_connection(
    tmp_path: Path, version: Version
) -> None:
    """The cart and discovery tools, unchanged, keep their state per connection too."""
    server = demo_stdio(tmp_path, "memory://")
    async with plain_client(server, version) as client:
        assert value(await client.call_tool("add_item", {"item": "tea"})) == ["tea"]
        assert value(await client.call_tool("add_item", {"item": "jam"})) == ["tea", "jam"]
        value(await client.call_tool("connect", {"service": "search"}))
        assert value(await client.call_tool("actions", {})) == {"search": ["query"]}
        order = value(await client.call_tool("checkout", {}))
        assert (order["items"], order["status"]) == (["tea", "jam"], "ordered")


def test_the_demo_banners_name_what_works(tmp_path: Path, spawn: Callable[..., Any]) -> None:
    """Issue #11 item 6: over HTTP the banner names mcp_sessions.client.Client (a plain
    mcp.Client needs session_start's handle there); over stdio every client keeps state."""
    key_file = ["--key-file", str(tmp_path / "keys.txt")]
    server = spawn("demo", "--store", "memory://", *key_file)
    banner = server.log.read_text(encoding="utf-8", errors="replace")
    assert f"mcp_sessions.client.Client('{server.url}')" in banner
    assert "session_start" in banner
    stdio = subprocess.run(
        [str(MCP_SESSIONS_CLI), "demo", "--stdio", "--store", "memory://", *key_file],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert "each connection has its own session" in stdio.stderr.decode()
