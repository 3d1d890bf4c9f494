"""WebSocket through the gateway (issue #16): affinity from the first message's session,
across reconnects; two demo replicas sharing a SQLite store; sessions that live elsewhere
refused on a socket; closes relayed."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
import jwt
import pytest
from tests.fixtures.redis_server import start_redis_server, stop_process
from tests.gateway.helpers import Proc, start_demo, start_gateway, stop, upstream_args
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from mcp_sessions.client import Client
from mcp_sessions.core.errors import STORE_UNAVAILABLE

from .helpers import TIMEOUT, count_call, counted, reply, request, ws_url

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


async def test_a_socket_starting_with_a_minted_handle_reaches_its_upstream(
    cluster: Cluster,
) -> None:
    """Handles minted in results relayed over a socket are pinned; a later socket whose first
    message passes the handle lands on the upstream that minted it (without the pin, keyless
    sockets take turns between the two upstreams)."""
    for attempt in range(6):
        async with connect(cluster.url, subprotocols=["mcp"]) as ws:
            await ws.send(
                request(1, "tools/call", {"name": "init_vm", "arguments": {"name": f"v{attempt}"}})
            )
            minted = await reply(ws)
            (minted_on,) = cluster.holding()
        handle = minted["result"]["structuredContent"]["result"]
        assert handle.startswith("vm-")
        async with connect(cluster.url, subprotocols=["mcp"]) as ws:
            arguments = {"vm": handle, "gb": 8}
            await ws.send(request(2, "tools/call", {"name": "set_ram", "arguments": arguments}))
            answer = await reply(ws)
            assert answer["result"]["structuredContent"]["ram_gb"] == 8, answer
            assert cluster.holding() == [minted_on]


async def test_a_verifying_gateway_checks_the_token_on_the_upgrade(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"k" * 40)
    secret.chmod(0o600)
    replica = start_demo(tmp_path, "jwt")
    gateway = start_gateway(
        tmp_path, "jwt", *upstream_args(replica), "--jwt-secret-file", str(secret)
    )
    try:
        url = ws_url(gateway.url)
        claims = {"iss": "https://idp.test", "sub": "alice", "exp": int(time.time()) + 600}
        forged = jwt.encode(claims, b"x" * 40, algorithm="HS256")
        for headers in ({}, {"Authorization": f"Bearer {forged}"}):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, additional_headers=headers):
                    pass
            assert refused.value.response.status_code == 401
        good = {"Authorization": f"Bearer {jwt.encode(claims, b'k' * 40, algorithm='HS256')}"}
        async with connect(url, additional_headers=good) as ws:
            await ws.send(count_call(1, new_id()))
            assert counted(await reply(ws)) == 1
    finally:
        stop(gateway)
        stop(replica)


@pytest.mark.redis
async def test_a_pin_store_outage_is_a_retryable_error_on_a_socket(tmp_path: Path) -> None:
    """Redis (the gateway's pins) goes away: a new socket's first message, and a message
    naming a new session on an open socket, get -31006 and are not sent on (a guessed
    upstream could be the wrong one); sessions the socket already checked go on."""
    redis_process, port = start_redis_server(tmp_path)
    replicas = [start_demo(tmp_path, name) for name in ("a", "b")]
    gateway = start_gateway(
        tmp_path, "pins", *upstream_args(*replicas), "--store", f"redis://127.0.0.1:{port}/0"
    )
    try:
        url = ws_url(gateway.url)
        known = new_id()
        async with connect(url, subprotocols=["mcp"]) as ws:
            await ws.send(count_call(1, known))
            assert counted(await reply(ws)) == 1
            stop_process(redis_process)
            await ws.send(count_call(2, new_id()))
            refused = await reply(ws)
            assert (refused["id"], refused["error"]["code"]) == (2, STORE_UNAVAILABLE)
            assert "pin store is unavailable" in refused["error"]["message"]
            await ws.send(count_call(3, known))
            assert counted(await reply(ws)) == 2
        async with connect(url, subprotocols=["mcp"]) as ws:
            await ws.send(count_call(4, new_id()))
            refused = await reply(ws)
            assert (refused["id"], refused["error"]["code"]) == (4, STORE_UNAVAILABLE)
            with anyio.fail_after(TIMEOUT), pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        assert gateway.running()
    finally:
        stop_process(redis_process)
        for proc in (gateway, *replicas):
            stop(proc)


@pytest.mark.redis
async def test_a_reconnect_through_another_gateway_replica_lands_on_the_same_upstream(
    tmp_path: Path, redis_url: str
) -> None:
    """Two gateways sharing pins in Redis, two demos sharing a SQLite store: the session's
    socket reaches one upstream through either gateway, and the count goes on."""
    store = f"sqlite:///{tmp_path / 'sessions.db'}"
    replicas = [start_demo(tmp_path, name, store) for name in ("a", "b")]
    gateways = [
        start_gateway(tmp_path, f"g{i}", *upstream_args(*replicas), "--store", redis_url)
        for i in range(2)
    ]
    try:
        clusters = [Cluster(replicas, gateway) for gateway in gateways]
        for attempt in range(4):  # several sessions, so a lucky hash cannot pass it
            session = new_id()
            held = []
            for expected, cluster in enumerate(clusters * 2, start=1):
                async with connect(cluster.url, subprotocols=["mcp"]) as ws:
                    await ws.send(count_call(expected, session))
                    assert counted(await reply(ws)) == expected, attempt
                    held.append(tuple(cluster.holding()))
            assert len(set(held)) == 1 and len(held[0]) == 1, held
    finally:
        for proc in (*gateways, *replicas):
            stop(proc)
