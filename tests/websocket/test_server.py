"""The server side of MCP over WebSocket (issue #16): counts over a raw ``websockets``
client, both protocol eras, the connection session, negotiation, bad frames and limits."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import anyio
import pytest
from tests.server.conftest import ALICE, TOKENS
from tests.server.helpers import ServerProcess, ThreadedServer
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from mcp_sessions.core.errors import LIMIT_EXCEEDED
from mcp_sessions.core.websocket import WebSocketLimits
from mcp_sessions.demo import StaticTokens
from mcp_sessions.serving import HTTPLimits

from .helpers import (
    TIMEOUT,
    build_holding_app,
    count_call,
    counted,
    initialize,
    reply,
    request,
    ws_url,
)

pytestmark = pytest.mark.anyio

AppServer = Callable[..., ThreadedServer]


def new_id() -> str:
    return str(uuid.uuid4())


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    """The close code and reason the server sent, reading whatever comes before it."""
    with anyio.fail_after(TIMEOUT):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "the server closed without a close frame"
            return closed.rcvd.code, closed.rcvd.reason


async def test_count_continues_across_a_reconnect(demo: ServerProcess) -> None:
    """The Done-when: 1, 2, 3 on one socket; a new socket with the same _meta id gets 4."""
    session = new_id()
    async with connect(ws_url(demo.url), subprotocols=["mcp"]) as ws:
        assert ws.subprotocol == "mcp"
        for expected in (1, 2, 3):
            await ws.send(count_call(expected, session))
            answer = await reply(ws)
            assert answer["id"] == expected
            assert counted(answer) == expected
    async with connect(ws_url(demo.url), subprotocols=["mcp"]) as ws:
        await ws.send(count_call(4, session))
        assert counted(await reply(ws)) == 4


async def test_legacy_era_on_a_socket_reaches_the_same_session(demo: ServerProcess) -> None:
    """2025-11-25 (initialize first) on a socket: the _meta id is the same session as at
    2026-07-28 on another socket."""
    session = new_id()
    async with connect(ws_url(demo.url), subprotocols=["mcp"]) as ws:
        await ws.send(count_call(1, session))
        assert counted(await reply(ws)) == 1
    async with connect(ws_url(demo.url), subprotocols=["mcp"]) as ws:
        init = await initialize(ws)
        assert init["result"]["protocolVersion"] == "2025-11-25"
        assert "dev.mcpsessions/sessions" in init["result"]["capabilities"]["extensions"]
        await ws.send(count_call(2, session, modern=False))
        assert counted(await reply(ws)) == 2


@pytest.mark.parametrize("modern", [True, False], ids=["2026-07-28", "2025-11-25"])
async def test_a_socket_without_session_is_one_connection_session(
    demo: ServerProcess, modern: bool
) -> None:
    """Carrier 5: requests naming no session share their socket's session, and two sockets
    do not share one."""
    for _socket in range(2):
        async with connect(ws_url(demo.url), subprotocols=["mcp"]) as ws:
            if not modern:
                await initialize(ws)
            for expected in (1, 2):
                await ws.send(count_call(expected, None, modern=modern))
                assert counted(await reply(ws)) == expected


async def test_subprotocol_negotiation(demo: ServerProcess) -> None:
    url = ws_url(demo.url)
    async with connect(url, subprotocols=["other", "mcp"]) as ws:
        assert ws.subprotocol == "mcp"
    async with connect(url) as ws:  # none offered: accepted, none selected
        assert ws.subprotocol is None
        await ws.send(count_call(1, new_id()))
        assert counted(await reply(ws)) == 1
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, subprotocols=["graphql-ws"]):
            pass
    assert refused.value.response.status_code == 400
    assert b"'mcp'" in refused.value.response.body


async def test_bad_frames_get_errors_and_the_socket_stays_open(demo: ServerProcess) -> None:
    session = new_id()
    async with connect(ws_url(demo.url), subprotocols=["mcp"]) as ws:
        await ws.send("{not json")
        answer = await reply(ws)
        assert answer["id"] is None
        assert answer["error"]["code"] == -32700
        await ws.send(json.dumps({"jsonrpc": "1.0", "id": 7, "method": "tools/list"}))
        answer = await reply(ws)
        assert answer["id"] == 7
        assert answer["error"]["code"] == -32600
        assert '"jsonrpc" must be "2.0"' in answer["error"]["message"]
        await ws.send(json.dumps([{"jsonrpc": "2.0", "id": 8, "method": "tools/list"}]))
        answer = await reply(ws)
        assert answer["error"]["code"] == -32600
        assert "batch" in answer["error"]["message"]
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": {"x": 1}, "method": "tools/list"}))
        answer = await reply(ws)
        assert answer["id"] is None
        assert answer["error"]["code"] == -32600
        await ws.send("[" * 5000)  # nested past the decoder's depth: refused before decoding
        assert (await reply(ws))["error"]["code"] == -32700
        for frame in ("{not json", '{"jsonrpc": "1.0"}'):
            assert "Traceback" not in frame
        # Still open and serving.
        await ws.send(count_call(9, session))
        assert counted(await reply(ws)) == 1


async def test_a_binary_frame_closes_with_1003(demo: ServerProcess) -> None:
    async with connect(ws_url(demo.url), subprotocols=["mcp"]) as ws:
        await ws.send(count_call(1, new_id()).encode())
        code, reason = await closed_with(ws)
    assert code == 1003
    assert "text frame" in reason


async def test_a_foreign_origin_is_refused(demo: ServerProcess) -> None:
    """The HTTP path's DNS-rebinding rules apply to the upgrade: a page on another origin
    cannot open a socket to a local server."""
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(demo.url), origin=Origin("http://evil.example")):
            pass
    assert refused.value.response.status_code == 403
    same_origin = f"http://127.0.0.1:{demo.port}"
    async with connect(ws_url(demo.url), origin=Origin(same_origin)) as ws:
        await ws.send(count_call(1, new_id()))
        assert counted(await reply(ws)) == 1


async def test_the_bearer_token_check_applies_to_the_upgrade(
    app_server: AppServer,
) -> None:
    server: ThreadedServer = app_server(auth_tokens=StaticTokens(TOKENS))
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(server.url)):
            pass
    assert refused.value.response.status_code == 401
    async with connect(ws_url(server.url), additional_headers=ALICE) as ws:
        await ws.send(
            request(1, "tools/call", {"name": "whoami", "arguments": {}}, session=new_id())
        )
        answer = await reply(ws)
        assert "alice" in json.dumps(answer["result"])


async def test_an_oversized_message_closes_with_1009(
    app_server: AppServer,
) -> None:
    server: ThreadedServer = app_server(WebSocketLimits(max_message_bytes=4096))
    async with connect(ws_url(server.url), subprotocols=["mcp"]) as ws:
        big = request(
            1, "tools/call", {"name": "put", "arguments": {"key": "k", "value": "x" * 5000}}
        )
        await ws.send(big)
        code, reason = await closed_with(ws)
    assert code == 1009
    assert "4096" in reason


async def test_a_flood_is_refused_then_closed_with_1008(
    app_server: AppServer,
) -> None:
    limits = WebSocketLimits(messages_per_second=1, burst=2, flood_close_after=5)
    server: ThreadedServer = app_server(limits)
    async with connect(ws_url(server.url), subprotocols=["mcp"]) as ws:
        for i in range(20):
            await ws.send(request(i, "tools/list"))
        answers = []
        with anyio.fail_after(TIMEOUT):
            try:
                while True:
                    answers.append(json.loads(await ws.recv()))
            except ConnectionClosed as closed:
                assert closed.rcvd is not None
                code = closed.rcvd.code
    assert code == 1008
    refused = [a for a in answers if "error" in a]
    assert refused, answers
    assert all(a["error"]["code"] == LIMIT_EXCEEDED for a in refused)
    assert "per second" in refused[0]["error"]["message"]
    assert len([a for a in answers if "result" in a]) <= 3  # the burst, and no more


async def test_an_idle_socket_is_closed_with_1000(
    app_server: AppServer,
) -> None:
    server: ThreadedServer = app_server(WebSocketLimits(idle_timeout=0.3))
    async with connect(ws_url(server.url), subprotocols=["mcp"]) as ws:
        code, reason = await closed_with(ws)
    assert (code, reason) == (1000, "idle timeout")


@pytest.mark.parametrize("http", ["h11", "httptools"])
async def test_the_upgrade_passes_the_head_limits_and_outlives_the_header_clock(
    app_server: AppServer, http: str
) -> None:
    """Both limited HTTP protocols hand the upgrade over; the header timeout of the HTTP
    connection does not close the socket later."""
    limits = HTTPLimits(header_timeout=0.2, keep_alive_timeout=0.2)
    server: ThreadedServer = app_server(http=http, http_limits=limits)
    session = new_id()
    async with connect(ws_url(server.url), subprotocols=["mcp"]) as ws:
        await ws.send(count_call(1, session))
        assert counted(await reply(ws)) == 1
        await anyio.sleep(0.6)  # past both clocks
        await ws.send(count_call(2, session))
        assert counted(await reply(ws)) == 2


async def test_requests_in_flight_are_bounded_per_socket(app_server: AppServer) -> None:
    server = app_server(WebSocketLimits(max_in_flight=2), build=build_holding_app)
    async with connect(ws_url(server.url), subprotocols=["mcp"]) as ws:
        for request_id in (1, 2):
            await ws.send(request(request_id, "tools/call", {"name": "hold", "arguments": {}}))
        await ws.send(request(1, "tools/list"))  # an id still in flight
        duplicate = await reply(ws)
        assert (duplicate["id"], duplicate["error"]["code"]) == (1, -32600)
        assert "already in use" in duplicate["error"]["message"]
        await ws.send(request(3, "tools/call", {"name": "release", "arguments": {}}))
        refused = await reply(ws)
        assert (refused["id"], refused["error"]["code"]) == (3, LIMIT_EXCEEDED)
        assert "in flight" in refused["error"]["message"]
        # A cancellation naming no usable request changes nothing and breaks nothing.
        for hostile in ({}, [], None, 1.5, {"x": 1}):
            await ws.send(
                json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "method": "notifications/cancelled",
                        "params": {"requestId": hostile},
                    }
                )
            )
        await ws.send(request(5, "tools/list"))
        still_full = await reply(ws)
        assert (still_full["id"], still_full["error"]["code"]) == (5, LIMIT_EXCEEDED)
        # Cancelling one frees its place (a cancelled request is never answered).
        cancel = {"requestId": 1, "reason": "test"}
        await ws.send(
            json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": cancel})
        )
        await ws.send(request(4, "tools/call", {"name": "release", "arguments": {}}))
        answers = {(a := await reply(ws))["id"]: a for _ in range(2)}
    assert set(answers) == {2, 4}
    assert answers[2]["result"]["content"][0]["text"] == "released"


async def test_websocket_can_be_switched_off(app_server: AppServer) -> None:
    """``websocket=None``: the path answers no upgrade (the SDK's app has no WebSocket
    route, so Starlette closes the socket before accepting it: 403)."""
    server = app_server(websocket=False)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(server.url), subprotocols=["mcp"]):
            pass
    assert refused.value.response.status_code == 403


async def test_a_text_frame_that_is_not_utf8_closes_with_1007(demo: ServerProcess) -> None:
    """A protocol violation the WebSocket layer sees (RFC 6455 §8.1: text must be UTF-8) closes
    the socket with its code; the app never gets the frame."""
    async with connect(ws_url(demo.url), subprotocols=["mcp"]) as ws:
        await ws.send(b'{"jsonrpc": "2.0", "id": 1, "method": "\xff"}', text=True)
        code, _reason = await closed_with(ws)
    assert code == 1007
