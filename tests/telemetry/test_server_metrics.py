"""Server metrics through the OpenTelemetry API (issue #13), read with the SDK's in-memory
reader: session lifetimes, creations and ends by carrier, degenerate sessions, compare-and-set
conflicts, quota refusals, store and operation durations."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from mcp.server.mcpserver import MCPServer
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import NoOpTracerProvider
from tests.server._app import build_app
from tests.server.helpers import (
    RawHttp,
    ShiftedClock,
    Target,
    ThreadedServer,
    expect_error,
    new_id,
    session_create,
    session_destroy,
    sid,
    value,
)

from mcp_sessions.core import otel_names as n
from mcp_sessions.core.limits import Limits
from mcp_sessions.core.records import JSONObject, Record
from mcp_sessions.server import CurrentSession, Sessions
from mcp_sessions.telemetry import SessionTelemetry, SessionTracker

from .conftest import Metrics

pytestmark = pytest.mark.anyio


def inproc(metered: Metrics, **options: Any) -> Target:
    mcp, _ = build_app(telemetry=metered.telemetry, **options)
    return Target("inproc", server=mcp)


@pytest.fixture
def legacy_server(metered: Metrics) -> Iterator[ThreadedServer]:
    mcp, sessions = build_app(telemetry=metered.telemetry)
    server = ThreadedServer(sessions.streamable_http_app(mcp)).start()
    yield server
    server.stop()


async def test_session_duration_records_a_destroyed_session(metered: Metrics) -> None:
    async with inproc(metered).client("modern") as client:
        session_id = (await session_create(client))["sessionId"]
        value(await client.call_tool("count", {}, meta=sid(session_id)))
        await session_destroy(client, sessionId=session_id)
    (point,) = metered.points(n.METRIC_SESSION_DURATION)
    assert point.count == 1
    assert 0 <= point.sum < 60
    assert dict(point.attributes) == {
        n.CARRIER: "meta",
        n.SESSION_ORIGIN: "create",
        n.SESSION_END: "destroyed",
        n.SESSION_DEGENERATE: True,  # one tools/call: session/create and destroy do not count
    }
    assert metered.total(n.METRIC_SESSIONS_CREATED, mcp_sessions__session__origin="create") == 1
    assert metered.total(n.METRIC_SESSIONS_DESTROYED, mcp_sessions__carrier="meta") == 1


async def test_degenerate_ratio_counts_sessions_with_one_request(metered: Metrics) -> None:
    once, twice = new_id(), new_id()
    async with inproc(metered).client("modern") as client:
        value(await client.call_tool("count", {}, meta=sid(once)))
        value(await client.call_tool("count", {}, meta=sid(twice)))
        value(await client.call_tool("count", {}, meta=sid(twice)))
        await session_destroy(client, sessionId=once)
        await session_destroy(client, sessionId=twice)
    (ratio,) = metered.points(n.METRIC_DEGENERATE_RATIO)
    assert ratio.value == 0.5
    assert metered.total(n.METRIC_SESSION_DURATION, mcp_sessions__session__degenerate=True) == 1
    assert metered.total(n.METRIC_SESSION_DURATION, mcp_sessions__session__degenerate=False) == 1
    assert metered.total(n.METRIC_SESSIONS_CREATED, mcp_sessions__carrier="meta") == 2


async def test_an_idle_session_is_counted_expired(
    metered: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ShiftedClock(monkeypatch)
    async with inproc(metered, idle_ttl=60.0).client("modern") as client:
        value(await client.call_tool("count", {}, meta=sid(new_id())))
        clock.advance(120)
        value(await client.call_tool("count", {}, meta=sid(new_id())))  # retires the first
    assert metered.total(n.METRIC_SESSIONS_EXPIRED, mcp_sessions__carrier="meta") == 1
    (point,) = [
        p
        for p in metered.points(n.METRIC_SESSION_DURATION)
        if p.attributes[n.SESSION_END] == "expired"
    ]
    # It lived from its creation to its idle deadline: one idle TTL.
    assert point.count == 1 and 59 < point.sum < 61


async def test_legacy_delete_ends_a_legacy_session(
    metered: Metrics, legacy_server: ThreadedServer
) -> None:
    async with httpx2.AsyncClient(timeout=30) as http:
        raw = RawHttp(http, legacy_server.url)
        legacy_id = await raw.initialize()
        reply = await raw.legacy(
            "tools/call", {"name": "count", "arguments": {}}, session_id=legacy_id
        )
        assert reply.status == 200, reply.text
        assert await raw.delete(legacy_id) in (200, 204)
    assert metered.total(n.METRIC_SESSIONS_CREATED, mcp_sessions__carrier="legacy") == 1
    assert metered.total(n.METRIC_SESSIONS_DESTROYED, mcp_sessions__carrier="legacy") == 1
    (point,) = metered.points(n.METRIC_SESSION_DURATION)
    # initialize does not name the session: one tools/call is one request.
    assert point.attributes[n.SESSION_DEGENERATE] is True


async def test_unknown_methods_share_one_metric_value(
    metered: Metrics, legacy_server: ThreadedServer
) -> None:
    """A client choosing method names cannot grow the metric's label set."""
    async with httpx2.AsyncClient(timeout=30) as http:
        raw = RawHttp(http, legacy_server.url)
        for index in range(3):
            reply = await raw.modern(f"made/up{index}", {})
            assert reply.error["code"] == -32601
        value_reply = await raw.modern("tools/list", {})
        assert value_reply.status == 200
    methods = {p.attributes[n.MCP_METHOD_NAME] for p in metered.points(n.METRIC_OPERATION_DURATION)}
    assert "_OTHER" in methods and "tools/list" in methods
    assert not any(method.startswith("made/") for method in methods)
    assert metered.total(n.METRIC_OPERATION_DURATION, error__type="-32601") == 3


async def test_a_tool_error_is_an_error_of_the_operation(metered: Metrics) -> None:
    async with inproc(metered).client("modern") as client:
        # A malformed handle argument is answered as a tool error (issue #11).
        result = await client.call_tool("count", {"session": "session-!!"})
        assert result.is_error
    assert (
        metered.total(
            n.METRIC_OPERATION_DURATION, mcp__method__name="tools/call", error__type="tool_error"
        )
        == 1
    )


async def test_lost_compare_and_set_is_counted(metered: Metrics) -> None:
    sessions = Sessions(telemetry=metered.telemetry)
    mcp = MCPServer("race", extensions=[sessions], middleware=[sessions.middleware])
    store = sessions.engine.store

    @mcp.tool()
    async def collide(session: CurrentSession) -> str:
        raced = False

        async def edit(state: JSONObject) -> None:
            nonlocal raced
            if not raced:  # another replica writes between this edit's read and its write
                raced = True
                record = await store.get("session", session.id, session.principal.key)
                assert isinstance(record, Record)
                await store.compare_and_set(
                    record.kind, record.id, record.principal, record.version, {"by": "other"}
                )
            state["by"] = "me"

        await session.update(edit)
        return str(session.state["by"])

    async with Target("inproc", server=mcp).client("modern") as client:
        assert value(await client.call_tool("collide", {}, meta=sid(new_id()))) == "me"
    assert metered.total(n.METRIC_STATE_CONFLICTS, mcp_sessions__session__kind="session") == 1
    assert metered.total(n.METRIC_STATE_RETRIES) == 1
    assert metered.total(n.METRIC_STATE_EXHAUSTED) == 0


async def test_quota_refusals_are_counted(metered: Metrics) -> None:
    target = inproc(metered, limits=Limits(max_sessions_per_principal=1))
    async with target.client("modern") as client:
        value(await client.call_tool("count", {}, meta=sid(new_id())))
        for refused in (
            client.call_tool("count", {}, meta=sid(new_id())),
            session_create(client),
        ):
            assert (await expect_error(refused)).error.code == -31005
    assert metered.total(n.METRIC_QUOTA_REFUSALS, mcp_sessions__quota__counted="sessions") == 2
    assert metered.total(n.METRIC_QUOTA_REFUSALS, mcp_sessions__quota__reason="cap") == 2


async def test_store_operations_are_timed(metered: Metrics) -> None:
    async with inproc(metered).client("modern") as client:
        value(await client.call_tool("count", {}, meta=sid(new_id())))
    operations = {
        p.attributes[n.STORE_OPERATION]: p.count for p in metered.points(n.METRIC_STORE_DURATION)
    }
    assert operations.get("get", 0) >= 1
    assert operations.get("create", 0) >= 1
    assert operations.get("compare_and_set", 0) >= 1


async def test_nothing_is_followed_without_an_sdk() -> None:
    telemetry = SessionTelemetry(
        tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider()
    )
    assert not telemetry.active
    mcp, _ = build_app(telemetry=telemetry)
    async with Target("inproc", server=mcp).client("modern") as client:
        value(await client.call_tool("count", {}, meta=sid(new_id())))
    assert len(telemetry.sessions) == 0


def test_the_tracker_is_bounded() -> None:
    """A caller opening sessions without end cannot grow the tracker past its limit."""
    tracker = SessionTracker(limit=3)
    for index in range(10):
        record = Record.new(
            kind="session", id=f"s{index}", principal="p", origin="client", now=0.0, idle_ttl=60
        )
        tracker.created(record, "meta")
    assert len(tracker) == 3
    assert tracker.dropped == 7
    assert tracker.ended == 0  # dropped sessions are not counted as ended (nor degenerate)


async def test_the_ratio_covers_every_server_on_one_meter_provider(metered: Metrics) -> None:
    """Two servers in one process, one meter provider: one gauge, over both servers' sessions."""
    second = SessionTelemetry(meter_provider=metered.provider)
    for telemetry, calls in ((metered.telemetry, 1), (second, 2)):
        mcp, _ = build_app(telemetry=telemetry)
        async with Target("inproc", server=mcp).client("modern") as client:
            session_id = new_id()
            for _ in range(calls):
                value(await client.call_tool("count", {}, meta=sid(session_id)))
            await session_destroy(client, sessionId=session_id)
    (ratio,) = metered.points(n.METRIC_DEGENERATE_RATIO)
    assert ratio.value == 0.5
