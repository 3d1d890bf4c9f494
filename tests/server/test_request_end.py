"""A request's scope ends with the request (``RequestScope.end``, issue #14's benchmark): what a
tool kept of its session keeps working afterwards, and the next request sees what it stored."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
from fastmcp import FastMCP
from mcp import Client
from mcp.server.mcpserver import MCPServer

from mcp_sessions import fastmcp as on_fastmcp
from mcp_sessions.server import CurrentSession, Session, Sessions

from .helpers import TIMEOUT, new_id, sid, value

pytestmark = pytest.mark.anyio


def build() -> tuple[MCPServer, list[Session], list[weakref.ref[Session]]]:
    sessions = Sessions(store="memory://")
    mcp = MCPServer("t", extensions=[sessions], middleware=[sessions.middleware])
    kept: list[Session] = []
    seen: list[weakref.ref[Session]] = []

    @mcp.tool()
    async def glance(session: CurrentSession) -> int:
        """Count, keeping only a weak reference to the session object."""
        seen.append(weakref.ref(session))
        return await session.update(lambda s: s.__setitem__("n", s.get("n", 0) + 1) or s["n"])

    @mcp.tool()
    async def keep(session: CurrentSession) -> int:
        """Count, and keep the session object past the request."""
        kept.append(session)
        return await session.update(lambda s: s.__setitem__("n", s.get("n", 0) + 1) or s["n"])

    @mcp.tool()
    async def read(session: CurrentSession) -> int:
        return int(session.state.get("n", 0))

    return mcp, kept, seen


async def test_a_session_kept_past_its_request_still_updates_the_store() -> None:
    mcp, kept, _ = build()
    session_id = new_id()
    async with Client(mcp, read_timeout_seconds=TIMEOUT) as client:
        assert value(await client.call_tool("keep", {}, meta=sid(session_id))) == 1
        assert value(await client.call_tool("keep", {}, meta=sid(session_id))) == 2
        first, second = kept
        assert first is not second  # one session object per request
        # Both requests are answered: their objects are used outside any request, the
        # first one from a state two versions old, so its edit meets a conflict and retries.
        assert await first.update(lambda s: s.__setitem__("n", s["n"] * 10) or s["n"]) == 20
        assert await second.update(lambda s: s.__setitem__("n", s["n"] + 1) or s["n"]) == 21
        assert value(await client.call_tool("read", {}, meta=sid(session_id))) == 21
        # The next request starts from what was stored, not from a scope's leftovers.
        assert value(await client.call_tool("keep", {}, meta=sid(session_id))) == 22


async def test_a_session_is_freed_when_its_request_ends_without_the_garbage_collector() -> None:
    """No session <-> scope reference cycle outlives the request: with the cyclic collector
    off, the session object is gone once the answer is in (it used to wait for a collection,
    which each request's cycle made more frequent)."""
    mcp, _, seen = build()
    session_id = new_id()
    async with Client(mcp, read_timeout_seconds=TIMEOUT) as client:
        assert value(await client.call_tool("glance", {}, meta=sid(session_id))) == 1
        gc.disable()
        try:
            assert value(await client.call_tool("glance", {}, meta=sid(session_id))) == 2
            assert seen[1]() is None
        finally:
            gc.enable()


async def test_the_same_on_fastmcp() -> None:
    sessions = on_fastmcp.Sessions(store="memory://")
    mcp: FastMCP[Any] = FastMCP("t")
    sessions.install(mcp)
    seen: list[weakref.ref[Session]] = []

    @mcp.tool
    async def glance(session: on_fastmcp.CurrentSession) -> int:
        seen.append(weakref.ref(session))
        return await session.update(lambda s: s.__setitem__("n", s.get("n", 0) + 1) or s["n"])

    session_id = new_id()
    async with Client(mcp._mcp_server, read_timeout_seconds=TIMEOUT) as client:
        assert value(await client.call_tool("glance", {}, meta=sid(session_id))) == 1
        gc.disable()
        try:
            assert value(await client.call_tool("glance", {}, meta=sid(session_id))) == 2
            assert seen[1]() is None
        finally:
            gc.enable()
