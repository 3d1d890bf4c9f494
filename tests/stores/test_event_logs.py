"""The event logs behind resumable legacy streams (issue #15 item 3), on SQLite, Redis and a
Redis Cluster: ids, order, bounds (events per stream, expiry), waiting for a new event, and
the SDK ``EventStore`` over them (never raising into the SDK, one session's ids refused for
another)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from mcp.server.streamable_http import EventMessage
from mcp_types import JSONRPCNotification
from tests.fixtures.processes import free_port
from tests.fixtures.store_urls import SHARED_BACKENDS, store_url_for

from mcp_sessions.server.resumption import SharedEventStore, bind
from mcp_sessions.stores import StoreUnavailable, open_store
from mcp_sessions.stores.events import EventId, EventLog, MalformedEventId, open_event_log

pytestmark = pytest.mark.anyio

SESSION = "0123456789abcdef0123456789abcdef"


@pytest.fixture(params=SHARED_BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url_for(request.param, request, tmp_path)


async def opened(url: str, **bounds: float) -> AsyncIterator[EventLog]:
    async with open_store(url) as store:
        log = open_event_log(store, **bounds)  # type: ignore[arg-type]
        assert log is not None
        try:
            yield log
        finally:
            await log.close()


@pytest.fixture
async def log(url: str) -> AsyncIterator[EventLog]:
    async for each in opened(url, max_events=5, ttl=60):
        yield each


async def test_events_come_back_in_order_after_any_id(log: EventLog) -> None:
    first = await log.append(SESSION, "7", None)  # a priming event
    ids = [await log.append(SESSION, "7", f'{{"n":{n}}}') for n in range(3)]
    await log.append(SESSION, "8", '{"other":1}')  # another stream of the session
    replay = await log.after(EventId.parse(first))
    assert replay is not None and replay.stream == "7"
    assert replay.events == [(ids[n], f'{{"n":{n}}}') for n in range(3)]
    later = await log.after(EventId.parse(ids[1]))
    assert later is not None and later.events == [(ids[2], '{"n":2}')]
    done = await log.after(EventId.parse(ids[2]))
    assert done is not None and done.events == []  # known stream, nothing new


async def test_a_stream_keeps_only_its_last_events(log: EventLog) -> None:
    ids = [await log.append(SESSION, "s", f'{{"n":{n}}}') for n in range(8)]
    replay = await log.after(EventId.parse(ids[0]))
    assert replay is not None
    assert [data for _id, data in replay.events] == [f'{{"n":{n}}}' for n in range(3, 8)]


async def test_streams_do_not_trim_each_other(log: EventLog) -> None:
    first = await log.append(SESSION, "a", '{"a":0}')
    for n in range(12):  # more events than the cap, in other streams
        await log.append(SESSION, f"other-{n}", "{}")
    second = await log.append(SESSION, "a", '{"a":1}')
    replay = await log.after(EventId.parse(first))
    assert replay is not None and replay.events == [(second, '{"a":1}')]


async def test_an_unknown_stream_is_none(log: EventLog) -> None:
    other = await log.append("fedcba9876543210fedcba9876543210", "s", "{}")
    assert await log.after(EventId.parse(other.replace("fedcba", "abcdef", 1))) is None


async def test_waiting_returns_the_next_event(log: EventLog) -> None:
    first = await log.append(SESSION, "s", "{}")

    async def later() -> None:
        await anyio.sleep(0.3)
        await log.append(SESSION, "s", '{"late":true}')

    async with anyio.create_task_group() as group:
        group.start_soon(later)
        with anyio.fail_after(10):
            replay = await log.after(EventId.parse(first), wait=8)
    assert replay is not None and [d for _i, d in replay.events] == ['{"late":true}']


async def test_streams_expire(url: str) -> None:
    async for log in opened(url, ttl=0.2):
        first = await log.append(SESSION, "s", "{}")
        deadline = time.monotonic() + 10
        while await log.after(EventId.parse(first)) is not None:
            assert time.monotonic() < deadline, "the stream never expired"
            await anyio.sleep(0.1)


@pytest.mark.parametrize(
    "text",
    ["", "x", "a.b.c", f"{SESSION}.{'g' * 16}.1", f"{'s' * 200}.{'0' * 16}.1", f"{SESSION}..1"],
)
def test_malformed_ids_are_refused(text: str) -> None:
    with pytest.raises(MalformedEventId):
        EventId.parse(text)


async def test_the_sdk_event_store_files_events_by_session(log: EventLog) -> None:
    events = SharedEventStore(log, max_event_bytes=200)
    note = JSONRPCNotification(jsonrpc="2.0", method="notifications/progress", params={"n": 1})
    with bind(SESSION):
        priming = await events.store_event("1", None)
        stored = await events.store_event("1", note)
        big = JSONRPCNotification(jsonrpc="2.0", method="x", params={"b": "y" * 500})
        dropped = await events.store_event("1", big)  # over max_event_bytes: not kept
        assert dropped.endswith(".0")
        got: list[EventMessage] = []

        async def collect(message: EventMessage) -> None:
            got.append(message)

        assert await events.replay_events_after(priming, collect) == "1"
        assert [(m.event_id, m.message) for m in got] == [(stored, note)]
    # Another session's request replays nothing, as for an unknown id.
    with bind("ffffffffffffffffffffffffffffffff"):
        assert await events.replay_events_after(priming, collect) is None
    assert len(got) == 1
    with bind(None):  # no session known: the event is sent but not kept
        assert (await events.store_event("1", note)).startswith("unbound.")


async def test_the_sdk_event_store_never_raises_into_the_sdk() -> None:
    # Nothing listens on the port: every operation of the log is refused.
    store = open_store(f"redis://127.0.0.1:{free_port()}/0?op_timeout=0.5")
    try:
        log = open_event_log(store)
        assert log is not None
        with pytest.raises(StoreUnavailable):
            await log.append(SESSION, "1", "{}")
        events = SharedEventStore(log, max_event_bytes=1000)
        with bind(SESSION):
            assert (await events.store_event("1", None)).endswith(".0")
    finally:
        await store.close()
