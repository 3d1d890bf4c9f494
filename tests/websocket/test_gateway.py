"""WebSocket through the gateway (issue #16): affinity from the first message's session,
across reconnects; two demo replicas sharing a SQLite store; sessions that live elsewhere
refused on a socket; closes relayed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
import pytest
from tests.gateway.helpers import Proc, start_demo, start_gateway, stop, upstream_args
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from mcp_sessions.client import Client

from .helpers import TIMEOUT, count_call, counted, reply, ws_url

pytestmark = pytest.mark.anyio


@dataclass
class Cluster:
    replicas: list[Proc]
    gateway: Proc

    @property
    def url(self) -> str:
        return ws_url(self.gateway.url)

    def holding(self) -> list[str]:
        """The upstreams with a socket open through the gateway (``/healthz`` in-flight)."""
        health = httpx2.get(f"{self.gateway.base}/healthz", timeout=5.0).json()
        return [u["url"] for u in health["upstreams"] if u["inFlight"] > 0]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    store = f"sqlite:///{tmp_path / 'sessions.db'}"
    replicas = [start_demo(tmp_path, name, store) for name in ("a", "b")]
    gateway = start_gateway(tmp_path, "ws", *upstream_args(*replicas), "--store", "memory://")
    yield Cluster(replicas, gateway)
    for proc in (gateway, *replicas):
        stop(proc)


def new_id() -> str:
    return str(uuid.uuid4())


async def test_count_continues_through_the_gateway_across_reconnects_and_replicas(
    cluster: Cluster,
) -> None:
    session = new_id()
    async with connect(cluster.url, subprotocols=["mcp"]) as ws:
        assert ws.subprotocol == "mcp"
        for expected in (1, 2, 3):
            await ws.send(count_call(expected, session))
            assert counted(await reply(ws)) == expected
        first = cluster.holding()
    assert len(first) == 1
    async with connect(cluster.url, subprotocols=["mcp"]) as ws:
        await ws.send(count_call(4, session))
        assert counted(await reply(ws)) == 4
        assert cluster.holding() == first  # the reconnect landed on the same upstream
    # The other replica, straight: the store is shared, so the count goes on there too.
    other = next(r for r in cluster.replicas if r.url not in first)
    async with connect(ws_url(other.url), subprotocols=["mcp"]) as ws:
        await ws.send(count_call(5, session))
        assert counted(await reply(ws)) == 5


async def test_a_session_pinned_elsewhere_is_refused_on_a_socket(cluster: Cluster) -> None:
    """Sockets reach one upstream; a later message naming a session that lives on another
    gets a JSON-RPC error and is not forwarded; the socket goes on."""
    placed: dict[str, str] = {}
    for _attempt in range(64):  # rendezvous hashing puts about half the ids on each upstream
        session = new_id()
        async with connect(cluster.url, subprotocols=["mcp"]) as ws:
            await ws.send(count_call(1, session))
            assert counted(await reply(ws)) == 1
            (where,) = cluster.holding()
        placed.setdefault(where, session)
        if len(placed) == 2:
            break
    assert len(placed) == 2, "64 ids all hashed to one upstream"
    mine, theirs = placed.values()
    async with connect(cluster.url, subprotocols=["mcp"]) as ws:
        await ws.send(count_call(1, mine))
        assert counted(await reply(ws)) == 2
        await ws.send(count_call(2, theirs))
        refused = await reply(ws)
        assert refused["id"] == 2
        assert refused["error"]["code"] == -32600
        assert "another upstream" in refused["error"]["message"]
        await ws.send(count_call(3, mine))
        assert counted(await reply(ws)) == 3
    async with connect(cluster.url, subprotocols=["mcp"]) as ws:
        await ws.send(count_call(1, theirs))
        assert counted(await reply(ws)) == 2  # the refused call never ran


async def test_a_keyless_socket_is_one_connection_session_through_the_gateway(
    cluster: Cluster,
) -> None:
    async with connect(cluster.url, subprotocols=["mcp"]) as ws:
        for expected in (1, 2):
            await ws.send(count_call(expected, None))
            assert counted(await reply(ws)) == expected


async def test_bad_frames_at_the_gateway(cluster: Cluster) -> None:
    async with connect(cluster.url, subprotocols=["mcp"]) as ws:
        await ws.send("{not json")
        answer = await reply(ws)
        assert (answer["id"], answer["error"]["code"]) == (None, -32700)
        await ws.send(count_call(1, new_id()))
        assert counted(await reply(ws)) == 1
        await ws.send(b"\x00binary")
        with anyio.fail_after(TIMEOUT), pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003


async def test_the_upstream_s_close_reaches_the_client(cluster: Cluster) -> None:
    session = new_id()
    async with connect(cluster.url, subprotocols=["mcp"]) as ws:
        await ws.send(count_call(1, session))
        assert counted(await reply(ws)) == 1
        (where,) = cluster.holding()
        stop(next(r for r in cluster.replicas if r.url == where))  # SIGTERM: uvicorn says 1012
        with anyio.fail_after(TIMEOUT), pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1012


async def test_the_project_client_through_the_gateway(cluster: Cluster, tmp_path: Path) -> None:
    async with Client(cluster.url, jar=tmp_path / "jar") as client:
        values = [(await client.call_tool("count", {})).structured_content for _ in range(3)]
    assert values == [{"result": 1}, {"result": 2}, {"result": 3}]
