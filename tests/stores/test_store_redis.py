"""What only Redis has: key TTLs, hash-tagged keys, the principal index, script reloads."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from tests.fixtures.redis_server import RedisServer

from mcp_sessions.core.records import Record
from mcp_sessions.stores import Store, open_store
from mcp_sessions.stores.redis import RedisStore

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

ALICE = "principal:alice"
SID = "s-0123456789abcdef"


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    async with open_store(redis_url) as opened:
        assert isinstance(opened, RedisStore)
        yield opened


def session(
    now: float, id: str = SID, *, idle_ttl: float = 60, max_lifetime: float | None = None
) -> Record:
    return Record.new(
        kind="session",
        id=id,
        principal=ALICE,
        origin="t",
        now=now,
        idle_ttl=idle_ttl,
        max_lifetime=max_lifetime,
    )


async def test_record_keys_are_hash_tagged_and_carry_their_ttl(
    store: RedisStore, redis_server: RedisServer
) -> None:
    now = time.time()
    record = session(now, idle_ttl=60, max_lifetime=300)
    await store.create(record)
    key = store.record_key("session", SID)
    assert key == "mcps:{session:s-0123456789abcdef}"  # one hash slot per record (Cluster)
    raw = redis_server.client()
    try:
        assert 0 < raw.pttl(key) <= 60_000
        index = store.index_key(ALICE)
        assert index.startswith("mcps:principal:{") and ALICE not in index
        assert raw.pttl(index) >= raw.pttl(key)  # the index outlives its members

        touched = await store.touch(record, now=now, idle_ttl=200)
        assert 60_000 < raw.pttl(key) <= 200_000
        assert raw.pttl(index) >= raw.pttl(key)
        await store.touch(touched, now=now, idle_ttl=10_000)
        assert raw.pttl(key) <= 300_000  # the absolute cap bounds the key's TTL too
    finally:
        raw.close()


async def test_ttl_follows_the_supplied_now(store: RedisStore, redis_server: RedisServer) -> None:
    """TTLs are computed from ``now``, so tests replaying old times do not lose keys at once."""
    await store.create(session(1_000_000.0, idle_ttl=60))
    raw = redis_server.client()
    try:
        assert 0 < raw.pttl(store.record_key("session", SID)) <= 60_000
    finally:
        raw.close()
    assert await store.get("session", SID, ALICE, now=1_000_030.0) is not None
    assert await store.get("session", SID, ALICE, now=1_000_060.0) is None


async def test_list_drops_members_whose_record_vanished(
    store: RedisStore, redis_server: RedisServer
) -> None:
    now = time.time()
    await store.create(session(now, "s-1111111111111111"))
    await store.create(session(now, "s-2222222222222222"))
    raw = redis_server.client()
    try:
        raw.delete(store.record_key("session", "s-1111111111111111"))  # as Redis expiry would
        listed = await store.list(ALICE, now=now)
        assert [r.id for r in listed] == ["s-2222222222222222"]
        assert raw.zcard(store.index_key(ALICE)) == 1
    finally:
        raw.close()


async def test_adding_to_the_index_prunes_dead_members(
    store: RedisStore, redis_server: RedisServer
) -> None:
    now = time.time()
    for n in range(5):
        await store.create(session(now, f"s-short-{n:08d}", idle_ttl=10))
    await store.create(session(now + 100, "s-later-000000000", idle_ttl=10))
    raw = redis_server.client()
    try:
        assert raw.zcard(store.index_key(ALICE)) == 1
    finally:
        raw.close()


async def test_a_replaced_record_is_listed_once(store: RedisStore) -> None:
    now = time.time()
    await store.create(session(now, idle_ttl=10))
    fresh = session(now + 20, idle_ttl=60)
    await store.create(fresh)  # replaces the expired one: a new incarnation
    assert await store.list(ALICE, now=now + 21) == [fresh]


async def test_scripts_reload_after_script_flush(
    store: RedisStore, redis_server: RedisServer
) -> None:
    now = time.time()
    await store.create(session(now))
    raw = redis_server.client()
    try:
        raw.script_flush()  # as after a server restart or failover
    finally:
        raw.close()
    updated = await store.compare_and_set("session", SID, ALICE, 1, {"n": 1}, now=now)
    assert updated.version == 2
    raw = redis_server.client()
    try:
        raw.script_flush()
    finally:
        raw.close()
    await store.create(session(now, "s-after-flush-0000"))  # the index script, in a pipeline
    assert [r.id for r in await store.list(ALICE, now=now)] == [SID, "s-after-flush-0000"]


async def test_prefixes_keep_two_stores_apart(redis_url: str) -> None:
    now = time.time()
    async with (
        open_store(f"{redis_url}?prefix=app1") as one,
        open_store(redis_url, prefix="app2") as two,
    ):
        await one.create(session(now))
        assert await two.get("session", SID, ALICE, now=now) is None
        await two.create(session(now))  # no AlreadyExists: a different key space
        assert isinstance(one, RedisStore) and one.record_key("k", "i") == "app1:{k:i}"


async def test_floats_survive_lua_exactly(store: Store) -> None:
    """Lua's tostring keeps 14 digits; the scripts write %.17g so times round-trip."""
    now = 1_795_000_000.123456
    record = session(now, idle_ttl=61.000001)
    await store.create(record)
    updated = await store.compare_and_set("session", SID, ALICE, 1, {}, now=now + 0.000123)
    assert updated.last_seen == now + 0.000123
    assert updated.idle_ttl == 61.000001
    assert await store.get("session", SID, ALICE, now=now + 1) == updated
