"""Per-caller quotas on the wire (issue #12, table rows 1 and 2): a flood of new sessions,
handles or legacy sessions from one caller is refused with -31005 once it reaches its cap,
while every other caller, and the flooder within its cap, keeps being served.

Real ``mcp-sessions demo`` processes on 127.0.0.1 over every store (memory, SQLite, a real
redis-server). Distinct anonymous addresses come from ``X-Forwarded-For`` behind
``--trusted-proxy-hops 1`` (the tests may use loopback only); one test checks that the header
counts for nothing without that flag.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from tests.server.helpers import (
    ACCEPT,
    TIMEOUT,
    RawHttp,
    Reply,
    ServerProcess,
    ShiftedClock,
    ThreadedServer,
    mirror,
    new_id,
    sid,
    tool_value,
)

from mcp_sessions.core.errors import LIMIT_EXCEEDED
from mcp_sessions.core.limits import Limits
from mcp_sessions.demo import build_demo

pytestmark = pytest.mark.anyio

COUNT = {"name": "count", "arguments": {}}
FLOODER = {"x-forwarded-for": "198.51.100.7"}
OTHER = {"x-forwarded-for": "198.51.100.8"}
BEHIND_PROXY = ("--trusted-proxy-hops", "1")


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/sessions.sqlite3"
    url: str = request.getfixturevalue("redis_url")
    return url


async def count(
    raw: RawHttp, session_id: str, headers: dict[str, str], request_id: int = 1
) -> Reply:
    return await raw.modern(
        "tools/call",
        COUNT,
        meta=sid(session_id),
        headers={**headers, **mirror(session_id)},
        request_id=request_id,
    )


def assert_limit(reply: Reply, limit_name: str, cap: int) -> None:
    """A -31005 that names the limit, its value and when room frees up."""
    error = reply.error
    assert error["code"] == LIMIT_EXCEEDED, reply.text
    assert limit_name in error["message"], error
    assert str(cap) in error["message"], error
    assert "Room frees up when one expires, at the latest in" in error["message"], error


def served(reply: Reply) -> bool:
    if reply.status != 200 or not isinstance(reply.body, dict) or "result" not in reply.body:
        return False
    return not reply.body["result"].get("isError")


# -- row 1: new sessions and handles ---------------------------------------------------------


async def test_a_session_flood_from_one_address_leaves_every_other_caller_served(
    demo: Callable[..., ServerProcess], store_url: str, http: httpx2.AsyncClient
) -> None:
    cap = 50
    server = demo("--store", store_url, *BEHIND_PROXY, "--max-sessions-per-principal", str(cap))
    raw = RawHttp(http, server.url)
    flood = [new_id() for _ in range(300)]
    theirs = new_id()
    other_replies: list[Reply] = []
    flood_replies: list[Reply] = []
    for start in range(0, len(flood), 20):
        # 20 new ids from the flooder at once, and the other caller's next call among them.
        batch = [count(raw, fid, FLOODER, n) for n, fid in enumerate(flood[start : start + 20])]
        replies = await asyncio.gather(count(raw, theirs, OTHER), *batch)
        other_replies.append(replies[0])
        flood_replies.extend(replies[1:])
    # The other caller: every call served, its counter intact (>= 99 % is the bar; all is met).
    ok = sum(served(reply) for reply in other_replies)
    assert ok / len(other_replies) >= 0.99, [r.text for r in other_replies if not served(r)]
    assert tool_value(await count(raw, theirs, OTHER)) == len(other_replies) + 1
    # The flooder: exactly its cap of sessions made (racing creations may overshoot by a few,
    # never by the flood), the rest refused with -31005 naming the limit.
    made = [fid for fid, reply in zip(flood, flood_replies, strict=True) if served(reply)]
    refused = [reply for reply in flood_replies if not served(reply)]
    assert cap <= len(made) <= cap + 20, len(made)
    for reply in refused:
        assert_limit(reply, "max_sessions_per_principal", cap)
    # Within its quota the flooder is never blocked: its sessions keep working.
    assert tool_value(await count(raw, made[0], FLOODER)) == 2
    assert tool_value(await count(raw, made[-1], FLOODER)) == 2


async def test_a_handle_flood_is_capped_per_caller(
    demo: Callable[..., ServerProcess], store_url: str, http: httpx2.AsyncClient
) -> None:
    cap = 20
    server = demo("--store", store_url, *BEHIND_PROXY, "--max-handles-per-principal", str(cap))
    raw = RawHttp(http, server.url)
    session_id = new_id()

    async def init_vm(headers: dict[str, str], session: str) -> Reply:
        return await raw.modern(
            "tools/call",
            {"name": "init_vm", "arguments": {"name": "web"}},
            meta=sid(session),
            headers={**headers, **mirror(session)},
        )

    handles = [tool_value(await init_vm(FLOODER, session_id)) for _ in range(cap)]
    assert len(set(handles)) == cap
    for _ in range(5):
        assert_limit(await init_vm(FLOODER, session_id), "max_handles_per_principal", cap)
    # Another caller still gets handles; the flooder's handles still work.
    assert tool_value(await init_vm(OTHER, new_id())).startswith("vm-")
    configured = await raw.modern(
        "tools/call",
        {"name": "set_cpu", "arguments": {"vm": handles[0], "n": 4}},
        meta=sid(session_id),
        headers={**FLOODER, **mirror(session_id), "mcp-param-vm": handles[0]},
    )
    assert tool_value(configured)["cpus"] == 4


async def test_the_creation_rate_is_per_caller(
    demo: Callable[..., ServerProcess], http: httpx2.AsyncClient
) -> None:
    server = demo("--store", "memory://", *BEHIND_PROXY, "--max-creations-per-minute", "5")
    raw = RawHttp(http, server.url)
    made = [new_id() for _ in range(5)]
    for session_id in made:
        assert tool_value(await count(raw, session_id, FLOODER)) == 1
    refused = await count(raw, new_id(), FLOODER)
    assert refused.error["code"] == LIMIT_EXCEEDED
    assert "5 creations per minute" in refused.error["message"]
    assert "max_creations_per_minute" in refused.error["message"]
    assert "Retry in" in refused.error["message"]
    # Using existing sessions creates nothing, so the rate never blocks it; others are free.
    for session_id in made:
        assert tool_value(await count(raw, session_id, FLOODER)) == 2
    assert tool_value(await count(raw, new_id(), OTHER)) == 1


async def test_destroying_a_session_frees_its_room_at_once(
    demo: Callable[..., ServerProcess], store_url: str, http: httpx2.AsyncClient
) -> None:
    server = demo(
        "--store", store_url, "--lifecycle", "explicit", "--max-sessions-per-principal", "3"
    )
    raw = RawHttp(http, server.url)
    made = [(await raw.modern("session/create")).result["sessionId"] for _ in range(3)]
    full = await raw.modern("session/create")
    assert_limit(full, "max_sessions_per_principal", 3)
    assert "session/destroy" in full.error["message"]
    destroyed = await raw.modern("session/destroy", {"sessionId": made[0]})
    assert destroyed.status == 200, destroyed.text
    assert "sessionId" in (await raw.modern("session/create")).result


async def test_authenticated_callers_are_counted_per_principal(
    demo: Callable[..., ServerProcess], tmp_path: Path, http: httpx2.AsyncClient
) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text('{"alice-token": "alice", "bob-token": "bob"}', encoding="utf-8")
    server = demo(
        "--store", "memory://", "--auth-tokens", str(tokens), "--max-sessions-per-principal", "5"
    )
    raw = RawHttp(http, server.url)
    alice = {"authorization": "Bearer alice-token"}
    bob = {"authorization": "Bearer bob-token"}
    for _ in range(5):
        assert tool_value(await count(raw, new_id(), alice)) == 1
    assert_limit(await count(raw, new_id(), alice), "max_sessions_per_principal", 5)
    # Same address, another principal: its own room.
    assert tool_value(await count(raw, new_id(), bob)) == 1


async def test_forwarded_for_counts_for_nothing_unless_trusted(
    demo: Callable[..., ServerProcess], http: httpx2.AsyncClient
) -> None:
    server = demo("--store", "memory://", "--max-sessions-per-principal", "3")
    raw = RawHttp(http, server.url)
    for n in range(3):
        forged = {"x-forwarded-for": f"203.0.113.{n}"}
        assert tool_value(await count(raw, new_id(), forged)) == 1
    # A fresh forged address is still the same peer: refused.
    forged = {"x-forwarded-for": "203.0.113.99"}
    assert_limit(await count(raw, new_id(), forged), "max_sessions_per_principal", 3)


# -- row 2: legacy initialize ----------------------------------------------------------------


async def raw_initialize(raw: RawHttp, headers: dict[str, str]) -> Reply:
    return await raw.post(
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "flood", "version": "0"},
            },
        },
        {"accept": ACCEPT, "content-type": "application/json", **headers},
    )


async def legacy_count_twice(url: str, headers: dict[str, str]) -> list[int]:
    """An SDK client on 2025-11-25: initialize, then ``count`` twice on its session."""
    async with httpx2.AsyncClient(headers=headers, timeout=TIMEOUT) as http_client:
        client = Client(
            streamable_http_client(url, http_client=http_client),
            mode="legacy",
            read_timeout_seconds=TIMEOUT,
        )
        async with client:
            values: list[int] = []
            for _ in range(2):
                result = await client.call_tool("count", {})
                assert not result.is_error, result.content
                assert result.structured_content is not None
                values.append(result.structured_content["result"])
            return values


async def test_a_legacy_flood_gets_429_and_leaves_other_legacy_clients_served(
    demo: Callable[..., ServerProcess], store_url: str, http: httpx2.AsyncClient
) -> None:
    cap = 20
    server = demo(
        "--store", store_url, *BEHIND_PROXY, "--max-legacy-sessions-per-principal", str(cap)
    )
    raw = RawHttp(http, server.url)
    replies = [await raw_initialize(raw, FLOODER) for _ in range(cap + 10)]
    opened = [reply.headers["mcp-session-id"] for reply in replies if reply.status == 200]
    assert len(opened) == cap
    for reply in replies[cap:]:
        assert reply.status == 429, reply.text
        assert int(reply.headers["retry-after"]) >= 1
        assert reply.body["jsonrpc"] == "2.0" and reply.body["id"] == 0
        assert_limit(reply, "max_legacy_sessions_per_principal", cap)
        assert "mcp-session-id" not in reply.headers
    # Everyone else's legacy sessions work; so do the flooder's own.
    assert await legacy_count_twice(server.url, OTHER) == [1, 2]
    call = await raw.legacy("tools/call", COUNT, session_id=opened[0], headers=FLOODER)
    assert tool_value(call) == 1
    # Ending one of its sessions frees the room at once.
    assert await raw.delete(opened[0], headers=FLOODER) == 204
    assert (await raw_initialize(raw, FLOODER)).status == 200


async def test_a_full_sdk_connection_cap_does_not_lock_out_other_legacy_clients(
    tmp_path: Path, http: httpx2.AsyncClient
) -> None:
    """The SDK's manager holds at most ``max_sessions`` live connections for everyone
    together (503 "Too many open sessions" beyond); new legacy sessions are then served from
    the store without a connection, as on a replica that does not hold one."""
    mcp, sessions = build_demo(store=f"sqlite:///{tmp_path}/s.sqlite3")
    app = sessions.streamable_http_app(mcp, host="127.0.0.1")
    mcp.session_manager.max_sessions = 3  # the SDK's shared cap, small for the test
    server = ThreadedServer(app).start()
    try:
        raw = RawHttp(http, server.url)
        for _ in range(3):  # one caller fills the shared cap, within its own quota
            assert (await raw_initialize(raw, {})).status == 200
        # Before issue #12 every further initialize got 503 until a connection idled out.
        assert await legacy_count_twice(server.url, {}) == [1, 2]
        assert await legacy_count_twice(server.url, {}) == [1, 2]
    finally:
        server.stop()


# -- counting across replicas and over time --------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def shared_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/shared.sqlite3"
    url: str = request.getfixturevalue("redis_url")
    return url


async def test_replicas_sharing_a_store_count_one_quota(
    demo: Callable[..., ServerProcess], shared_store_url: str, http: httpx2.AsyncClient
) -> None:
    flags = ("--store", shared_store_url, "--max-sessions-per-principal", "4")
    first, second = demo(*flags), demo(*flags)
    one, two = RawHttp(http, first.url), RawHttp(http, second.url)
    made = []
    for raw in (one, two, one, two):
        session_id = new_id()
        assert tool_value(await count(raw, session_id, {})) == 1
        made.append(session_id)
    for raw in (one, two):
        assert_limit(await count(raw, new_id(), {}), "max_sessions_per_principal", 4)
    # Every session, made on either replica, keeps working on both.
    assert tool_value(await count(one, made[1], {})) == 2
    assert tool_value(await count(two, made[0], {})) == 2
    # Destroyed on one replica, its room is free there at once.
    assert (await two.modern("session/destroy", {"sessionId": made[3]})).status == 200
    assert tool_value(await count(two, new_id(), {})) == 1


async def test_idle_sessions_free_their_room_and_used_ones_keep_it(
    tmp_path: Path, http: httpx2.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ShiftedClock(monkeypatch)
    mcp, sessions = build_demo(
        store=f"sqlite:///{tmp_path}/s.sqlite3", limits=Limits(max_sessions_per_principal=3)
    )
    server = ThreadedServer(sessions.streamable_http_app(mcp, host="127.0.0.1")).start()
    try:
        raw = RawHttp(http, server.url)
        used, *idle = [new_id() for _ in range(3)]
        for session_id in (used, *idle):
            assert tool_value(await count(raw, session_id, {})) == 1
        assert_limit(await count(raw, new_id(), {}), "max_sessions_per_principal", 3)
        clock.advance(3000)  # the demo's idle TTL is an hour
        assert tool_value(await count(raw, used, {})) == 2
        clock.advance(1000)  # the idle two have expired; the used one has not
        assert tool_value(await count(raw, new_id(), {})) == 1
        assert tool_value(await count(raw, new_id(), {})) == 1
        refused = await count(raw, new_id(), {})
        assert_limit(refused, "max_sessions_per_principal", 3)
        # Room frees up when the used session expires: an hour after its last use.
        wait = re.search(r"at the latest in (\d+) s", refused.error["message"])
        assert wait is not None and 2500 <= int(wait.group(1)) <= 2700, refused.error
        assert tool_value(await count(raw, used, {})) == 3
    finally:
        server.stop()
