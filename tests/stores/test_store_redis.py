"""What only Redis has: key TTLs, hash-tagged keys, the principal index, script reloads."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator

import pytest
from tests.fixtures.redis_server import RedisServer

from mcp_sessions.core.records import Record
from mcp_sessions.stores import Store, open_store
from mcp_sessions.stores.redis import RedisStore

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

ALICE = "principal:alice"
BOB = "principal:bob"
SID = "s-0123456789abcdef"


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    async with open_store(redis_url) as opened:
        assert isinstance(opened, RedisStore)
        yield opened


def session(
    now: float,
    id: str = SID,
    *,
    idle_ttl: float = 60,
    max_lifetime: float | None = None,
    principal: str = ALICE,
) -> Record:
    return Record.new(
        kind="session",
        id=id,
        principal=principal,
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
    key = store.record_key("session", SID, ALICE)
    digest = hashlib.sha256(ALICE.encode()).hexdigest()[:32]
    # One hash slot per record (Cluster); the principal is part of the key, as a digest.
    assert key == f"mcps:{{session:{digest}:s-0123456789abcdef}}"
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
        assert 0 < raw.pttl(store.record_key("session", SID, ALICE)) <= 60_000
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
        # as Redis expiry would
        raw.delete(store.record_key("session", "s-1111111111111111", ALICE))
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
        assert isinstance(one, RedisStore)
        digest = hashlib.sha256(b"p").hexdigest()[:32]
        assert one.record_key("k", "i", "p") == f"app1:{{k:{digest}:i}}"


async def test_floats_survive_lua_exactly(store: Store) -> None:
    """Lua's tostring keeps 14 digits; the scripts write %.17g so times round-trip."""
    now = 1_795_000_000.123456
    record = session(now, idle_ttl=61.000001)
    await store.create(record)
    updated = await store.compare_and_set("session", SID, ALICE, 1, {}, now=now + 0.000123)
    assert updated.last_seen == now + 0.000123
    assert updated.idle_ttl == 61.000001
    assert await store.get("session", SID, ALICE, now=now + 1) == updated


async def test_one_id_under_two_principals_is_two_keys(
    store: RedisStore, redis_server: RedisServer
) -> None:
    """Each principal's record of one id is its own key, own TTL and own index member."""
    now = time.time()
    await store.create(session(now, idle_ttl=60))
    await store.create(session(now, idle_ttl=600, principal=BOB))
    alices, bobs = store.record_key("session", SID, ALICE), store.record_key("session", SID, BOB)
    assert alices != bobs
    assert ALICE not in alices and BOB not in bobs  # digests, not the principals themselves
    raw = redis_server.client()
    try:
        assert 0 < raw.pttl(alices) <= 60_000 < raw.pttl(bobs) <= 600_000
        assert raw.zcard(store.index_key(ALICE)) == raw.zcard(store.index_key(BOB)) == 1
        assert await store.delete("session", SID, BOB) is True
        assert raw.exists(alices) == 1 and raw.exists(bobs) == 0
        assert raw.zcard(store.index_key(ALICE)) == 1 and raw.zcard(store.index_key(BOB)) == 0
    finally:
        raw.close()
