"""Replicas: two ``mcp-sessions demo`` processes on different ports sharing one store serve one
session alternately and concurrently without losing an update; twenty parallel first requests
with one new client id make one session; any replica serves any legacy session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_sessions.core.errors import SessionNotFound

from .helpers import (
    BOTH_FRAMEWORKS,
    PROTOCOL,
    TIMEOUT,
    VERSIONS,
    RawHttp,
    ServerProcess,
    Target,
    Version,
    new_id,
    sid,
    start_demo,
    tool_value,
    value,
)

pytestmark = [pytest.mark.anyio, BOTH_FRAMEWORKS]

STORES = [
    "sqlite",
    pytest.param("redis", marks=pytest.mark.redis),
    # Issue #15: the same tests, 0 lost updates included, on a three-master Redis Cluster.
    pytest.param("redis-cluster", marks=pytest.mark.redis),
]
NOT_FOUND = {"code": SessionNotFound.code, "message": SessionNotFound().message}


@pytest.fixture(scope="module", params=STORES)
def replicas(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two demo processes sharing one store, for the whole module (each test uses fresh ids)."""
    directory = tmp_path_factory.mktemp("replicas")
    if request.param == "sqlite":
        store = f"sqlite:///{directory}/shared.sqlite3"
    elif request.param == "redis-cluster":
        store = str(request.getfixturevalue("redis_cluster").url)
    else:
        store = str(request.getfixturevalue("redis_server").url)
    first = start_demo(directory, "--store", store, name="first")
    try:
        second = start_demo(directory, "--store", store, name="second")
    except BaseException:
        first.stop()
        raise
    assert first.port != second.port and first.pid != second.pid
    try:
        yield first, second
    finally:
        second.stop()
        first.stop()


async def call_count(client: Client, session_id: str) -> int:
    result: int = value(await client.call_tool("count", {}, meta=sid(session_id)))
    return result


async def test_two_replicas_serve_one_session_without_lost_updates(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = replicas
    session_id = new_id()
    async with (
        Client(a.url, mode=PROTOCOL["modern"], read_timeout_seconds=TIMEOUT) as on_a,
        Client(b.url, mode=PROTOCOL["modern"], read_timeout_seconds=TIMEOUT) as on_b,
    ):
        # Alternately: each replica sees the other's write.
        seen = [await call_count(on_a if i % 2 == 0 else on_b, session_id) for i in range(6)]
        assert seen == [1, 2, 3, 4, 5, 6]

        # Concurrently on both replicas: read-modify-write with compare-and-set in the shared
        # store, so every increment lands exactly once.
        results: list[int] = []

        async def bump(client: Client) -> None:
            results.append(await call_count(client, session_id))

        async with anyio.create_task_group() as group:
            for i in range(20):
                group.start_soon(bump, on_a if i % 2 == 0 else on_b)
        assert sorted(results) == list(range(7, 27))
        assert await call_count(on_b, session_id) == 27


async def test_parallel_first_requests_across_replicas_make_one_session(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = replicas
    session_id = new_id()
    async with (
        Client(a.url, mode=PROTOCOL["modern"], read_timeout_seconds=TIMEOUT) as on_a,
        Client(b.url, mode=PROTOCOL["modern"], read_timeout_seconds=TIMEOUT) as on_b,
    ):
        results: list[int] = []

        async def first(client: Client) -> None:
            results.append(await call_count(client, session_id))

        async with anyio.create_task_group() as group:
            for i in range(20):
                group.start_soon(first, on_a if i % 2 == 0 else on_b)
        # One session: had two been created, the counts would repeat.
        assert sorted(results) == list(range(1, 21))
        assert await call_count(on_a, session_id) == 21


async def test_any_replica_serves_any_legacy_session(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = replicas
    count = {"name": "count", "arguments": {}}
    async with httpx2.AsyncClient(timeout=30) as http:
        on_a, on_b = RawHttp(http, a.url), RawHttp(http, b.url)
        legacy_id = await on_a.initialize()
        # Served by the replica that never saw the initialize, and back again.
        assert tool_value(await on_b.legacy("tools/call", count, session_id=legacy_id)) == 1
        assert tool_value(await on_a.legacy("tools/call", count, session_id=legacy_id)) == 2
        assert tool_value(await on_b.legacy("tools/call", count, session_id=legacy_id)) == 3
        # An SDK client reaches the same session on either replica through its id in _meta.
        async with Client(b.url, mode=PROTOCOL["modern"], read_timeout_seconds=TIMEOUT) as modern:
            assert await call_count(modern, legacy_id) == 4
        # DELETE on one replica ends it on both.
        assert await on_b.delete(legacy_id) == 204
        for raw in (on_a, on_b):
            reply = await raw.legacy("tools/call", count, session_id=legacy_id)
            assert (reply.status, reply.error) == (404, NOT_FOUND)
        assert await on_a.delete(legacy_id) == 404


async def test_sdk_legacy_client_and_second_replica(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    """The official client's own legacy session (its Mcp-Session-Id, taken from initialize)
    is served by the other replica when the request goes there."""
    a, b = replicas
    seen_ids: list[str] = []

    async def record(response: httpx2.Response) -> None:
        session_id = response.headers.get("mcp-session-id")
        if session_id:
            seen_ids.append(session_id)

    async with (
        httpx2.AsyncClient(timeout=30, event_hooks={"response": [record]}) as http,
        Client(
            streamable_http_client(a.url, http_client=http),
            mode="legacy",
            read_timeout_seconds=TIMEOUT,
        ) as client,
    ):
        assert value(await client.call_tool("count", {})) == 1
        assert seen_ids, "initialize carried no Mcp-Session-Id"
        legacy_id = seen_ids[0]
        async with httpx2.AsyncClient(timeout=30) as other:
            reply = await RawHttp(other, b.url).legacy(
                "tools/call", {"name": "count", "arguments": {}}, session_id=legacy_id
            )
            assert tool_value(reply) == 2
        assert value(await client.call_tool("count", {})) == 3


# -- twenty concurrent first requests, in one process, per store ------------------------------


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/first.sqlite3"
    return str(request.getfixturevalue("redis_url"))


@pytest.mark.parametrize("version", VERSIONS)
async def test_twenty_concurrent_first_requests_make_one_session(
    make_target: Callable[..., Target], any_store: str, version: Version
) -> None:
    target = make_target("http", store=any_store)
    session_id = new_id()
    async with target.client(version) as client:
        outcomes: list[dict[str, Any]] = []

        async def first() -> None:
            outcomes.append(value(await client.call_tool("count", {}, meta=sid(session_id))))

        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(first)
        assert sorted(o["count"] for o in outcomes) == list(range(1, 21))
        assert [o["created"] for o in outcomes].count(True) == 1
        assert {o["id"] for o in outcomes} == {session_id}
        who = value(await client.call_tool("whoami", {}, meta=sid(session_id)))
        assert who["state"] == {"count": 20}
