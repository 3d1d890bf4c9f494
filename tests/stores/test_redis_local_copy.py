"""The Redis store's local copy of records (issue #15 item 1): reads cost no round trip, yet a
read never returns a record older than the last write acknowledged anywhere before it began,
once that write's invalidation has arrived (docs/stores.md).

Two ``RedisStore`` instances on one real redis-server stand for two replicas. Nothing waits
for a fixed time: each wait polls a condition a bounded number of times.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from tests.fixtures.redis_server import RedisServer, start_redis_server, stop_process

from mcp_sessions.core.records import Record
from mcp_sessions.stores import StoreError, VersionConflict, open_store
from mcp_sessions.stores.redis import RedisStore

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

ALICE = "principal:alice"
SID = "s-0123456789abcdef"


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` (at most ~10 s of 10 ms steps): the invalidation is asynchronous."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def opened(url: str, **options: object) -> RedisStore:
    store = open_store(url, **options)
    assert isinstance(store, RedisStore)
    await store.ping()
    return store


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    a, b = await opened(redis_url), await opened(redis_url)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


def session(id: str = SID, state: dict[str, object] | None = None) -> Record:
    return Record.new(
        kind="session",
        id=id,
        principal=ALICE,
        origin="t",
        now=time.time(),
        idle_ttl=600,
        state=state or {},
    )


def gets(server: RedisServer) -> int:
    """GET commands Redis has run (by clients and inside scripts) since it started."""
    stats = server.client().info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


async def test_a_write_on_one_replica_is_read_on_the_other_once_invalidated(
    pair: tuple[RedisStore, RedisStore], redis_server: RedisServer
) -> None:
    a, b = pair
    await a.create(session())
    first = await b.get("session", SID, ALICE)
    assert first is not None and first.version == 1
    # Steady state: B reads its copy, Redis runs no command for it.
    before = gets(redis_server)
    for _ in range(5):
        again = await b.get("session", SID, ALICE)
        assert again is not None and again.version == 1
    assert gets(redis_server) == before
    assert b.cache.hits >= 5

    told_b = b.cache.invalidations
    stored = await a.compare_and_set("session", SID, ALICE, 1, {"n": 1})
    assert stored.version == 2
    # Once the invalidation has arrived, B reads the new version (and never an older one
    # after that).
    await until(lambda: b.cache.invalidations > told_b, "B is told of A's write")
    seen = await b.get("session", SID, ALICE)
    assert seen is not None and (seen.version, seen.state) == (2, {"n": 1})

    # B's own write needs no invalidation to be read back, and keeps its copy (NOLOOP).
    told_a = a.cache.invalidations  # (its create counted one: it dropped its own copy)
    mine = await b.compare_and_set("session", SID, ALICE, 2, {"n": 2})
    hits = b.cache.hits
    back = await b.get("session", SID, ALICE)
    assert back is not None and (back.version, back.state) == (mine.version, {"n": 2})
    assert b.cache.hits == hits + 1
    # ... and A is told of it.
    await until(lambda: a.cache.invalidations > told_a, "A is told of B's write")
    seen_by_a = await a.get("session", SID, ALICE)
    assert seen_by_a is not None and seen_by_a.version == 3
    # B's write left the key tracked for B: A's next write reaches B too.
    told = b.cache.invalidations
    await a.compare_and_set("session", SID, ALICE, 3, {"n": 3})
    await until(lambda: b.cache.invalidations > told, "B is told of A's second write")
    last = await b.get("session", SID, ALICE)
    assert last is not None and (last.version, last.state) == (4, {"n": 3})


async def test_an_invalidation_during_a_fill_keeps_the_read_out_of_the_copy(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    """The read went out before A's write and came back with the old record; A's
    invalidation arrives before B files it. B must not keep it: no later invalidation would
    ever remove it."""
    a, b = pair
    await a.create(session())
    await a.get("session", SID, ALICE)
    fired: list[str] = []

    async def write_meanwhile(key: str) -> None:
        if fired:
            return
        fired.append(key)
        before = b.cache.invalidations
        await a.compare_and_set("session", SID, ALICE, 1, {"n": 1})
        await until(lambda: b.cache.invalidations > before, "B is told of A's write")

    b.fill_hook = write_meanwhile
    old = await b.get("session", SID, ALICE)
    assert fired == [b.record_key("session", SID, ALICE)]
    assert old is not None and old.version == 1  # the read began before the write: fair
    b.fill_hook = None
    assert len(b.cache) == 0  # the spoilt fill kept nothing
    new = await b.get("session", SID, ALICE)
    assert new is not None and (new.version, new.state) == (2, {"n": 1})


async def test_a_lost_tracking_connection_turns_the_copy_off_until_it_is_back(
    pair: tuple[RedisStore, RedisStore], redis_server: RedisServer
) -> None:
    a, b = pair
    await a.create(session())
    assert (await b.get("session", SID, ALICE)) is not None
    assert len(b.cache) == 1 and b.cache.enabled
    raw = redis_server.client()
    tracked = [c for c in raw.client_list() if "t" in c["flags"]]
    assert tracked  # B's (A has not opened its own yet)
    for client in tracked:
        raw.client_kill_filter(_id=client["id"])
    await until(lambda: not b.cache.enabled, "B notices its connection is gone")
    assert len(b.cache) == 0
    # Written while B has no tracking: B must read it from Redis, not from a copy.
    await a.compare_and_set("session", SID, ALICE, 1, {"n": 1})
    seen = await b.get("session", SID, ALICE)
    assert seen is not None and seen.version == 2
    # The read opened a new tracked connection, and the copy is on again.
    assert b.cache.enabled and b._tracked is not None and b._tracked.connects == 2
    told = b.cache.invalidations
    await a.compare_and_set("session", SID, ALICE, 2, {"n": 2})
    await until(lambda: b.cache.invalidations > told, "the new connection is tracked")
    latest = await b.get("session", SID, ALICE)
    assert latest is not None and latest.version == 3


async def test_the_copy_is_bounded_by_entries_and_bytes(redis_url: str) -> None:
    by_entries = await opened(redis_url, cache_entries=3)
    by_bytes = await opened(redis_url, cache_bytes=2000)
    try:
        ids = [f"s-{n:016x}" for n in range(6)]
        for id in ids:
            await by_entries.create(session(id, {"pad": "x" * 500}))
        for id in ids:
            assert await by_entries.get("session", id, ALICE) is not None
            assert await by_bytes.get("session", id, ALICE) is not None
        assert len(by_entries.cache) == 3
        # The three used last are the ones kept.
        hits = by_entries.cache.hits
        for id in ids[-3:]:
            await by_entries.get("session", id, ALICE)
        assert by_entries.cache.hits == hits + 3
        assert 0 < by_bytes.cache.size <= 2000 and len(by_bytes.cache) < len(ids)
        # A record larger than the whole budget is never kept.
        await by_bytes.create(session("s-big0000000000000", {"pad": "y" * 5000}))
        assert await by_bytes.get("session", "s-big0000000000000", ALICE) is not None
        assert by_bytes.cache.size <= 2000
        assert (
            by_bytes.cache.lookup(by_bytes.record_key("session", "s-big0000000000000", ALICE))
            is None
        )
    finally:
        await by_entries.close()
        await by_bytes.close()


async def test_a_lost_compare_and_set_brings_the_current_record_in_the_same_round_trip(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    a, b = pair
    await a.create(session())
    await a.get("session", SID, ALICE)

    async def write_meanwhile(key: str) -> None:
        b.fill_hook = None
        await a.compare_and_set("session", SID, ALICE, 1, {"by": "a"})

    # B reads version 1, A writes version 2, B's compare-and-set of version 1 loses.
    b.fill_hook = write_meanwhile
    assert b._tracked is not None
    sent = b._tracked.sent
    with pytest.raises(VersionConflict) as lost:
        await b.compare_and_set("session", SID, ALICE, 1, {"by": "b"})
    current = lost.value.current
    assert current is not None and (current.version, current.state) == (2, {"by": "a"})
    # One GET (B had no copy yet) and the one script whose answer carried the record.
    assert b._tracked.sent - sent == 2


async def test_a_value_written_before_tags_is_read_and_rewritten_with_one(
    pair: tuple[RedisStore, RedisStore], redis_server: RedisServer
) -> None:
    a, b = pair
    await a.create(session(state={"n": 0}))
    key = a.record_key("session", SID, ALICE)
    raw = redis_server.client()
    value = raw.get(key)
    assert value is not None and not value.startswith("{")
    raw.set(key, value[16:], keepttl=True)  # the layout before issue #15: JSON only
    old = await b.get("session", SID, ALICE)
    assert old is not None and old.state == {"n": 0}
    stored = await b.compare_and_set("session", SID, ALICE, old.version, {"n": 1})
    assert stored.version == old.version + 1
    rewritten = raw.get(key)
    assert rewritten is not None and not rewritten.startswith("{")
    assert (await a.get("session", SID, ALICE)) is not None


def test_a_store_used_from_a_second_event_loop_starts_its_connection_afresh(
    redis_url: str,
) -> None:
    """A script may run ``asyncio.run`` twice with one store: the tracked connection of the
    first loop cannot serve the second, and no copy made under the first is trusted."""
    store = open_store(redis_url)
    assert isinstance(store, RedisStore)

    async def first() -> int:
        # Created by another store: this one's pool (redis-py's, bound to one loop like any
        # asyncio connection) stays unused; only its tracked connection meets both loops.
        async with open_store(redis_url) as other:
            await other.create(session())
        record = await store.get("session", SID, ALICE)
        assert record is not None and len(store.cache) == 1
        return record.version

    async def second(version: int) -> None:
        stored = await store.compare_and_set("session", SID, ALICE, version, {"n": 1})
        record = await store.get("session", SID, ALICE)
        assert record is not None and record.version == stored.version
        assert store._tracked is not None and store._tracked.connects == 2
        await store.close()

    asyncio.run(second(asyncio.run(first())))


async def test_a_silent_connection_is_probed_and_the_copy_turned_off(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A Redis that stops answering without closing anything (a partition; here SIGSTOP on a
    server of this test's own) delivers no invalidations either: after a silence of
    ``probe_interval`` a PING goes out, and with no answer the copy is turned off."""
    del redis_server  # only its availability (skip / fail without redis-server)
    process, port = start_redis_server(tmp_path)
    store = await opened(f"redis://127.0.0.1:{port}/0")
    try:
        await store.create(session())
        assert await store.get("session", SID, ALICE) is not None
        assert store.cache.enabled and len(store.cache) == 1
        assert store._tracked is not None
        store._tracked.probe_interval = store._tracked.probe_timeout = 0.1
        process.send_signal(signal.SIGSTOP)
        try:
            await until(lambda: not store.cache.enabled, "the copy is turned off")
            assert len(store.cache) == 0
        finally:
            process.send_signal(signal.SIGCONT)
        # Redis answers again: the next read opens a new connection and the copy is back.
        assert await store.get("session", SID, ALICE) is not None
        assert store.cache.enabled
    finally:
        await store.close()
        stop_process(process)


async def test_a_value_that_is_no_record_is_a_store_error_not_a_crash(
    pair: tuple[RedisStore, RedisStore], redis_server: RedisServer
) -> None:
    """Something else wrote under the store's prefix: every operation on that key says so,
    as a StoreError, and nothing is kept in the copy."""
    a, _ = pair
    key = a.record_key("session", SID, ALICE)
    raw = redis_server.client()
    for junk in ("0123456789abcdefnot json", "[1, 2]", "{broken", '{"p": "x", "e": "1e20"}'):
        raw.set(key, junk)
        with pytest.raises(StoreError, match="not a record"):
            await a.get("session", SID, ALICE)
        with pytest.raises(StoreError, match="not a record"):
            await a.compare_and_set("session", SID, ALICE, 1, {"n": 1})
        assert len(a.cache) == 0
        assert raw.get(key) == junk  # nothing written over it


async def test_a_read_filed_after_this_stores_own_later_write_is_not_kept(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    """Redis tells a store nothing of its own writes (NOLOOP): a read that ran before the
    store's own write but is filed after it must not replace the written record."""
    a, b = pair
    await a.create(session())
    await b.get("session", SID, ALICE)  # B's copy: version 1
    key = b.record_key("session", SID, ALICE)
    b.cache.invalidate(key)  # the next read fills again

    async def write_meanwhile(_: str) -> None:
        b.fill_hook = None
        await b.compare_and_set("session", SID, ALICE, 1, {"n": 1})

    b.fill_hook = write_meanwhile
    old = await b.get("session", SID, ALICE)
    assert old is not None and old.version == 1  # read before the write
    new = await b.get("session", SID, ALICE)
    assert new is not None and (new.version, new.state) == (2, {"n": 1})


@pytest.mark.parametrize("option", ["cache_entries=-1", "cache_bytes=-5"])
def test_negative_bounds_are_refused_by_name(option: str) -> None:
    with pytest.raises(StoreError, match="must not be negative"):
        open_store(f"redis://127.0.0.1:6379/0?{option}")


async def test_with_no_copy_every_read_asks_redis(
    redis_url: str, redis_server: RedisServer
) -> None:
    store = await opened(redis_url, cache_entries=0)
    try:
        await store.create(session())
        before = gets(redis_server)
        for _ in range(3):
            assert await store.get("session", SID, ALICE) is not None
        assert gets(redis_server) == before + 3 and len(store.cache) == 0
    finally:
        await store.close()
