"""The client side of MCP over WebSocket (issue #16): this library's ``Client("ws://…")``
and the official SDK's ``mcp.Client`` over :func:`websocket_client`, reconnecting with the
same session."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client as SdkClient
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from mcp.types import CONNECTION_CLOSED, CallToolResult, ElicitRequestParams, ElicitResult
from pydantic import BaseModel
from tests.server.helpers import ServerProcess, ThreadedServer

from mcp_sessions.client import Client
from mcp_sessions.client.websocket import WebSocketTransport, websocket_client
from mcp_sessions.core.names import META_SESSION_ID
from mcp_sessions.core.websocket import WebSocketLimits
from mcp_sessions.server import Sessions

from .helpers import build_holding_app, ws_url

pytestmark = pytest.mark.anyio

AppServer = Callable[..., ThreadedServer]
#: Long enough for a call, short enough that the test waits little for the server to drop
#: the socket (the way a socket is lost that the test can cause from outside).
IDLE = 0.5


def count(result: CallToolResult) -> int:
    assert not result.is_error, result.content
    content: Any = result.structured_content
    value = content.get("result", content)
    return int(value["count"] if isinstance(value, dict) else value)


async def dropped(transport: WebSocketTransport) -> None:
    """Wait (bounded) until the server has closed the transport's socket for idleness."""
    socket = transport.socket
    assert socket is not None
    with anyio.fail_after(30):
        await socket.wait_closed()


async def test_the_project_client_picks_websocket_by_scheme(
    demo: ServerProcess, tmp_path: Path
) -> None:
    url = ws_url(demo.url)
    async with Client(url, jar=tmp_path / "jar") as client:
        assert client.sessions.advertised
        assert [count(await client.call_tool("count", {})) for _ in range(3)] == [1, 2, 3]
        session = client.sessions.id
    # A new client with the same jar resumes the session over a new socket.
    async with Client(url, jar=tmp_path / "jar") as client:
        assert client.sessions.id == session
        assert count(await client.call_tool("count", {})) == 4


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_sdk_client_reconnects_and_the_count_continues(
    app_server: AppServer, mode: str
) -> None:
    server = app_server(WebSocketLimits(idle_timeout=IDLE))
    transport = websocket_client(ws_url(server.url))
    meta = {META_SESSION_ID: str(uuid.uuid4())}
    async with SdkClient(transport, mode=mode) as client:
        assert count(await client.call_tool("count", {}, meta=meta)) == 1
        assert count(await client.call_tool("count", {}, meta=meta)) == 2
        await dropped(transport)
        # The next call opens a new socket (2025-11-25: the handshake is replayed first).
        assert count(await client.call_tool("count", {}, meta=meta)) == 3
        assert transport.connections == 2


async def test_the_project_client_reconnects_with_the_same_session(
    app_server: AppServer, tmp_path: Path
) -> None:
    server = app_server(WebSocketLimits(idle_timeout=IDLE))
    transport = websocket_client(ws_url(server.url))
    async with Client(transport, jar=tmp_path / "jar") as client:
        assert count(await client.call_tool("count", {})) == 1
        await dropped(transport)
        assert count(await client.call_tool("count", {})) == 2
        assert transport.connections == 2


async def test_the_sdk_client_without_a_session_gets_the_socket_s_session(
    app_server: AppServer,
) -> None:
    server = app_server()
    async with SdkClient(websocket_client(ws_url(server.url))) as client:
        assert [count(await client.call_tool("count", {})) for _ in range(2)] == [1, 2]
    async with SdkClient(websocket_client(ws_url(server.url))) as client:
        assert count(await client.call_tool("count", {})) == 1  # another socket, another session


async def test_a_server_that_is_gone_fails_the_call_clearly(app_server: AppServer) -> None:
    server = app_server(WebSocketLimits(idle_timeout=IDLE))
    transport = websocket_client(ws_url(server.url), reconnect_attempts=2, reconnect_delay=0.05)
    meta = {META_SESSION_ID: str(uuid.uuid4())}
    async with SdkClient(transport, read_timeout_seconds=30) as client:
        assert count(await client.call_tool("count", {}, meta=meta)) == 1
        server.stop()
        await dropped(transport)
        with pytest.raises(MCPError) as failed:
            await client.call_tool("count", {}, meta=meta)
    assert "did not reopen" in str(failed.value)


def test_a_non_websocket_url_is_refused() -> None:
    with pytest.raises(ValueError, match="ws://"):
        websocket_client("http://127.0.0.1:1/mcp")


async def test_a_websocket_transport_keeps_its_server_s_jar_scope(
    demo: ServerProcess, tmp_path: Path
) -> None:
    """Passed as a transport object, the WebSocket still names its server (the URL, as its
    http:// twin) and its caller (the Authorization header's digest) in the jar, so a later
    client resumes; other credentials get another session."""
    url = ws_url(demo.url)
    jar = tmp_path / "jar"
    async with Client(websocket_client(url), jar=jar) as client:
        assert count(await client.call_tool("count", {})) == 1
        first = client.sessions.id
    async with Client(demo.url, jar=jar) as client:  # the same server over HTTP
        assert client.sessions.id == first
        assert count(await client.call_tool("count", {})) == 2
    bearer = {"Authorization": "Bearer another-user"}
    async with Client(websocket_client(url, headers=bearer), jar=jar) as client:
        assert client.sessions.id != first


def build_asking_app() -> tuple[MCPServer, Sessions]:
    """A server whose tool asks the client a question mid-call (elicitation)."""
    sessions = Sessions(store="memory://")
    mcp = MCPServer("asking", extensions=[sessions], middleware=[sessions.middleware])

    class Name(BaseModel):
        name: str

    @mcp.tool()
    async def greet(ctx: Context) -> str:
        answer = await ctx.elicit("Who are you?", Name)
        return f"hello {answer.data.name}" if answer.action == "accept" else "no answer"

    return mcp, sessions


async def test_the_server_asks_the_client_over_the_same_socket(app_server: AppServer) -> None:
    """At 2025-11-25, server-to-client requests go out on the socket and their answers come
    back on it. (At 2026-07-28 the SDK serves a socket as it serves stdio: every request
    stands alone, with no back channel for ``ctx.elicit``; servers ask through
    input-required results there.)"""
    server = app_server(build=build_asking_app)
    asked: list[str] = []

    async def answer(_ctx: Any, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="accept", content={"name": "websocket"})

    transport = websocket_client(ws_url(server.url))
    async with SdkClient(transport, mode="legacy", elicitation_callback=answer) as client:
        result = await client.call_tool("greet", {})
    assert asked == ["Who are you?"]
    assert result.structured_content == {"result": "hello websocket"}


async def test_a_call_in_flight_when_the_socket_drops_fails_clearly(app_server: AppServer) -> None:
    """The answer can no longer come: the call fails with "connection closed" (it may or may
    not have run, so it is not resent), instead of waiting forever."""
    server = app_server(build=build_holding_app)
    transport = websocket_client(ws_url(server.url), reconnect_attempts=1, reconnect_delay=0.05)
    async with SdkClient(transport, read_timeout_seconds=60) as client:
        failures: list[MCPError] = []

        async def held() -> None:
            with pytest.raises(MCPError) as failed:
                await client.call_tool("hold", {})
            failures.append(failed.value)

        async with anyio.create_task_group() as group:
            group.start_soon(held)
            await anyio.sleep(0.2)  # let the call go out (either way it must fail clearly)
            await anyio.to_thread.run_sync(server.stop)
    assert len(failures) == 1
    assert failures[0].error.code == CONNECTION_CLOSED
    assert failures[0].error.message.startswith("Connection closed before the answer arrived")
