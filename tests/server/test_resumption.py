"""Legacy sessions whole on any replica (issue #15 item 3): two real uvicorn replicas share one
store (SQLite, Redis, a Redis Cluster).

- A 2025-11-25 client starts a tool call on A, reads part of its SSE stream, goes away, and
  resumes with ``Last-Event-ID`` on B, which replays the rest from the shared event log and
  follows it to the response.
- B, which never saw the client's ``initialize``, knows its capabilities and clientInfo."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context
from mcp_types import ClientCapabilities
from tests.fixtures.store_urls import SHARED_BACKENDS, store_url_for
from tests.server._app import build_app

from mcp_sessions.asgi import Message
from mcp_sessions.server.resumption import Followed, resume_elsewhere
from mcp_sessions.stores import open_store
from mcp_sessions.stores.events import open_event_log

from .helpers import ACCEPT, PROTOCOL, TIMEOUT, RawHttp, ThreadedServer, tool_value

pytestmark = pytest.mark.anyio

STEPS = 6


@pytest.fixture(params=SHARED_BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url_for(request.param, request, tmp_path)


def replica(store_url: str) -> ThreadedServer:
    mcp, sessions = build_app(store=store_url)

    @mcp.tool()
    async def client_seen(ctx: Context) -> dict[str, Any]:
        """What this replica knows of the client."""
        session = ctx.request_context.session
        params = session.client_params
        return {
            "name": None if params is None else params.client_info.name,
            "sampling": session.check_client_capability(ClientCapabilities(sampling={})),
            "elicitation": session.check_client_capability(ClientCapabilities(elicitation={})),
            "roots": session.check_client_capability(ClientCapabilities(roots={})),
        }

    @mcp.tool()
    async def ticker(steps: int, gap: float, ctx: Context) -> int:
        """Reports progress ``steps`` times, ``gap`` seconds apart."""
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps)
            await anyio.sleep(gap)
        return steps

    return ThreadedServer(sessions.streamable_http_app(mcp)).start()


@pytest.fixture
def replicas(store_url: str) -> Iterator[tuple[ThreadedServer, ThreadedServer]]:
    a = replica(store_url)
    try:
        b = replica(store_url)
    except BaseException:
        a.stop()
        raise
    try:
        yield a, b
    finally:
        b.stop()
        a.stop()


async def sse_events(response: httpx2.Response) -> AsyncIterator[tuple[str | None, str]]:
    """``(id, data)`` of each SSE event of ``response``."""
    event_id: str | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data or event_id is not None:
                yield event_id, "\n".join(data)
            event_id, data = None, []
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


def headers(session_id: str, **extra: str) -> dict[str, str]:
    return {
        "accept": ACCEPT,
        "content-type": "application/json",
        "mcp-session-id": session_id,
        "mcp-protocol-version": PROTOCOL["legacy"],
        **extra,
    }


def progress_of(data: str) -> float | None:
    message = json.loads(data)
    if message.get("method") == "notifications/progress":
        return float(message["params"]["progress"])
    return None


async def test_a_stream_begun_on_one_replica_resumes_on_the_other(
    replicas: tuple[ThreadedServer, ThreadedServer],
) -> None:
    a, b = replicas
    async with httpx2.AsyncClient(timeout=30) as http:
        session_id = await RawHttp(http, a.url).initialize()
        call = {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {
                "name": "ticker",
                "arguments": {"steps": STEPS, "gap": 0.3},
                "_meta": {"progressToken": "p-1"},
            },
        }
        seen: list[float] = []
        last_id: str | None = None
        async with http.stream("POST", a.url, json=call, headers=headers(session_id)) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for event_id, data in sse_events(response):
                assert event_id, "a 2025-11-25 stream with an event store has ids"
                last_id = event_id
                if data and (progress := progress_of(data)) is not None:
                    seen.append(progress)
                if len(seen) == 2:
                    break  # the client goes away mid-stream
        assert seen == [1, 2] and last_id is not None

        resumed: list[float] = []
        result: dict[str, Any] | None = None
        get = headers(session_id, **{"last-event-id": last_id})
        async with http.stream("GET", b.url, headers=get) as response:
            assert response.status_code == 200, await response.aread()
            async for _event_id, data in sse_events(response):
                message = json.loads(data)
                if (progress := progress_of(data)) is not None:
                    resumed.append(progress)
                elif message.get("id") == 7:
                    result = message
        # The events after the id, each once, then the response; the stream then ended.
        assert resumed == [float(n) for n in range(3, STEPS + 1)]
        assert result is not None and result["result"]["structuredContent"] == {"result": STEPS}


async def test_another_sessions_event_id_replays_nothing(
    replicas: tuple[ThreadedServer, ThreadedServer],
) -> None:
    a, b = replicas
    async with httpx2.AsyncClient(timeout=30) as http:
        mine = await RawHttp(http, a.url).initialize()
        theirs = await RawHttp(http, a.url).initialize()
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "ticker", "arguments": {"steps": 1, "gap": 0}},
        }
        ids: list[str] = []
        async with http.stream("POST", a.url, json=call, headers=headers(theirs)) as response:
            async for event_id, _data in sse_events(response):
                if event_id:
                    ids.append(event_id)
        assert ids, "no event ids"
        # Replica B: refused by name. Replica A (which holds both): nothing replayed.
        get = headers(mine, **{"last-event-id": ids[0]})
        refused = await http.get(b.url, headers=get)
        assert refused.status_code == 400
        assert "another session" in refused.json()["error"]["message"]
        malformed = await http.get(b.url, headers=headers(mine, **{"last-event-id": "x"}))
        assert malformed.status_code == 400
        assert "not an event id" in malformed.json()["error"]["message"]
        with anyio.fail_after(10):
            async with http.stream("GET", a.url, headers=get) as response:
                replayed = [data async for _id, data in sse_events(response) if data]
        assert replayed == []


async def test_a_replica_that_did_not_see_initialize_knows_the_client(
    replicas: tuple[ThreadedServer, ThreadedServer],
) -> None:
    a, b = replicas
    async with httpx2.AsyncClient(timeout=30) as http:
        reply = await RawHttp(http, a.url).post_initialize(
            capabilities={"sampling": {}, "elicitation": {}},
            client_info={"name": "careful-client", "version": "2.1"},
        )
        session_id = reply.headers["mcp-session-id"]
        expected = {"name": "careful-client", "sampling": True, "elicitation": True, "roots": False}
        for server in (a, b):  # A holds the connection; B serves it from the record
            seen = await RawHttp(http, server.url).legacy(
                "tools/call", {"name": "client_seen", "arguments": {}}, session_id=session_id
            )
            assert tool_value(seen) == expected, server.url


async def test_initialize_data_over_the_limit_opens_no_session(
    replicas: tuple[ThreadedServer, ThreadedServer],
) -> None:
    a, _b = replicas
    async with httpx2.AsyncClient(timeout=30) as http:
        reply = await RawHttp(http, a.url).post_initialize(
            # 16 KiB by default: capabilities count, as clientInfo does.
            capabilities={"experimental": {"blob": {"x": "y" * 20_000}}},
            client_info={"name": "big", "version": "0"},
        )
        assert reply.status == 400 and "mcp-session-id" not in reply.headers
        assert "capabilities" in reply.error["message"] and "16384" in reply.error["message"]


async def test_resumed_streams_followed_at_once_are_bounded(tmp_path: Path) -> None:
    """Past the limit, a resume replays what is there and ends instead of following the
    stream (a client cannot hold an unbounded number of followers and store connections)."""
    session = "0123456789abcdef0123456789abcdef"
    async with open_store(f"sqlite:///{tmp_path}/s.sqlite3") as store:
        log = open_event_log(store)
        assert log is not None
        priming = await log.append(session, "5", None)
        note = '{"jsonrpc":"2.0","method":"notifications/message","params":{}}'
        await log.append(session, "5", note)
        sent: list[Message] = []

        async def receive() -> Message:
            if not sent:
                return {"type": "http.request", "body": b""}
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            sent.append(message)

        followed = Followed(limit=0)
        with anyio.fail_after(10):  # would follow for 60 s under the limit
            await resume_elsewhere(
                log, session, priming, receive, send, followed=followed, tail_seconds=60
            )
        assert followed.now == 0
        assert sent[0]["status"] == 200
        body = b"".join(m.get("body", b"") for m in sent[1:])
        assert note.encode() in body
        await log.close()


class SwitchingProxy:
    """A TCP relay on a free loopback port to ``target``; :meth:`cut` drops every relayed
    connection and sends later ones to another replica, as a load balancer does when a
    replica's connections break."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self._writers += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self, new_target: int) -> None:
        self.target = new_target
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def stop(self) -> None:
        self.cut(self.target)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_the_sdk_client_resumes_on_another_replica_by_itself(
    replicas: tuple[ThreadedServer, ThreadedServer],
) -> None:
    """The official client, in 2025-11-25 mode, behind a relay: its stream from A breaks
    mid-call, it reconnects with Last-Event-ID as the SDK does, reaches B, and the call
    completes with every progress notification, each once."""
    a, b = replicas
    proxy = SwitchingProxy(a.port)
    await proxy.start()
    progress: list[float] = []
    try:
        async with (
            httpx2.AsyncClient(timeout=30) as http,
            Client(
                streamable_http_client(f"http://127.0.0.1:{proxy.port}/mcp", http_client=http),
                mode="legacy",
                read_timeout_seconds=TIMEOUT,
            ) as client,
        ):

            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                progress.append(value)
                if value == 2:
                    proxy.cut(b.port)  # A's connections break; the next ones reach B

            with anyio.fail_after(60):
                result = await client.call_tool(
                    "ticker", {"steps": STEPS, "gap": 0.3}, progress_callback=on_progress
                )
            assert result.structured_content == {"result": STEPS}
    finally:
        await proxy.stop()
    assert progress == [float(n) for n in range(1, STEPS + 1)]
