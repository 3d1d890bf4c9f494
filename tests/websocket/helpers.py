"""Raw WebSocket calls for the WebSocket tests (issue #16): the third-party ``websockets``
client, speaking JSON-RPC frame by frame, so the tests see exactly what is on the wire."""

from __future__ import annotations

import json
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from websockets.asyncio.client import ClientConnection

from mcp_sessions.core.names import META_PROTOCOL_VERSION, META_SESSION_ID, PROTOCOL_2026_07_28
from mcp_sessions.server import Sessions

#: Bound on every wait for a frame (a hung server fails the test, never the run).
TIMEOUT = 30.0

#: The 2026-07-28 per-request envelope a client puts in every request's ``_meta``.
ENVELOPE: dict[str, Any] = {
    META_PROTOCOL_VERSION: PROTOCOL_2026_07_28,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "raw-websocket-test", "version": "0"},
}


def ws_url(http_url: str) -> str:
    return "ws://" + http_url.removeprefix("http://")


def request(
    request_id: int | str,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    session: str | None = None,
    modern: bool = True,
) -> str:
    """One JSON-RPC request frame; ``session`` goes in ``_meta`` (carrier 1)."""
    meta: dict[str, Any] = dict(ENVELOPE) if modern else {}
    if session is not None:
        meta[META_SESSION_ID] = session
    body: dict[str, Any] = {**(params or {})}
    if meta:
        body["_meta"] = meta
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": body})


def count_call(request_id: int | str, session: str | None, *, modern: bool = True) -> str:
    return request(
        request_id,
        "tools/call",
        {"name": "count", "arguments": {}},
        session=session,
        modern=modern,
    )


async def reply(ws: ClientConnection) -> dict[str, Any]:
    """The next frame, as JSON."""
    with anyio.fail_after(TIMEOUT):
        frame = await ws.recv()
    assert isinstance(frame, str), f"expected a text frame, got {frame!r}"
    decoded: dict[str, Any] = json.loads(frame)
    return decoded


def counted(answer: dict[str, Any]) -> Any:
    """The ``count`` tool's value from a result frame (the demo returns the number, the test
    app an object with ``count``)."""
    assert "result" in answer, f"expected a result, got {answer}"
    content = answer["result"]["structuredContent"]
    value = content.get("result", content)
    return value["count"] if isinstance(value, dict) else value


async def initialize(ws: ClientConnection, request_id: int = 0) -> dict[str, Any]:
    """The 2025-11-25 handshake on an open socket; the ``initialize`` result."""
    await ws.send(
        json.dumps(
            {
                "jsonrpc": "2.0",
                "id": request_id,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "raw-websocket-test", "version": "0"},
                },
            }
        )
    )
    answer = await reply(ws)
    await ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    return answer


def build_holding_app() -> tuple[MCPServer, Sessions]:
    """A server whose ``hold`` calls stay in flight until ``release`` is called."""
    sessions = Sessions(store="memory://")
    mcp = MCPServer("holding", extensions=[sessions], middleware=[sessions.middleware])
    gates: dict[str, anyio.Event] = {}

    @mcp.tool()
    async def hold() -> str:
        await gates.setdefault("gate", anyio.Event()).wait()
        return "released"

    @mcp.tool()
    async def release() -> str:
        gates.setdefault("gate", anyio.Event()).set()
        return "ok"

    return mcp, sessions
