"""The store contract (DESIGN §6, issue #3), run against memory, SQLite and a real Redis:
creating and reading records, principal isolation, and compare-and-set (the writes).
How records live on afterwards (touch, expiry, delete, list, handles, sweep, closing) is in
test_store_contract_lifetimes.py; the records both build are in records.py.

Times are passed as ``now=`` rather than slept through; ``t0`` is near the real clock so the
TTLs Redis derives from it are ordinary ones.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import anyio
import pytest
from tests.stores.records import ALICE, BOB, SID, session

from mcp_sessions.stores import (
    AlreadyExists,
    NotFound,
    StateOverMaxBytes,
    Store,
    StoreError,
    VersionConflict,
)

pytestmark = pytest.mark.anyio


# -- create / get --------------------------------------------------------------------------


async def test_create_then_get_returns_the_same_record(store: Store, t0: float) -> None:
    record = session(
        t0 + 0.125,
        state={"cart": ["apple", "pear"], "n": 1, "nested": {"ok": True, "none": None}},
        attributes={"protocolVersion": "2025-11-25", "unicode": "grüße ✓"},
        max_lifetime=3600,
    )
    await store.create(record)
    assert await store.get("session", SID, ALICE, now=t0 + 1) == record


async def test_a_record_without_absolute_cap_keeps_infinity(store: Store, t0: float) -> None:
    await store.create(session(t0))
    got = await store.get("session", SID, ALICE, now=t0)
    assert got is not None
    assert got.max_expires_at == math.inf
    assert got.expires_at == t0 + 60


async def test_get_of_unknown_id_is_none(store: Store, t0: float) -> None:
    assert await store.get("session", "s-unknown-000000000", ALICE, now=t0) is None


async def test_create_refuses_a_live_duplicate_of_the_same_principal(
    store: Store, t0: float
) -> None:
    await store.create(session(t0, state={"n": 1}))
    with pytest.raises(AlreadyExists):
        await store.create(session(t0 + 1, state={"n": 2}))
    got = await store.get("session", SID, ALICE, now=t0 + 2)
    assert got is not None and got.state == {"n": 1}


async def test_create_replaces_an_expired_record(store: Store, t0: float) -> None:
    await store.create(session(t0, idle_ttl=10, state={"old": True}))
    fresh = session(t0 + 20, state={"new": True})
    await store.create(fresh)
    assert await store.get("session", SID, ALICE, now=t0 + 21) == fresh
    assert await store.list(ALICE, now=t0 + 21) == [fresh]


async def test_sessions_and_handles_with_one_id_are_distinct(store: Store, t0: float) -> None:
    await store.create(session(t0, state={"what": "session"}))
    await store.create(session(t0, kind="vm", state={"what": "vm"}))
    s = await store.get("session", SID, ALICE, now=t0)
    h = await store.get("vm", SID, ALICE, now=t0)
    assert s is not None and s.state == {"what": "session"}
    assert h is not None and h.state == {"what": "vm"}


async def test_returned_state_is_a_copy(store: Store, t0: float) -> None:
    state = {"items": [1]}
    await store.create(session(t0, state=state))
    state["items"].append(2)  # the caller's dict is not the stored one
    got = await store.get("session", SID, ALICE, now=t0)
    assert got is not None
    got.state["items"].append(3)
    again = await store.get("session", SID, ALICE, now=t0)
    assert again is not None and again.state == {"items": [1]}


async def test_state_must_be_json(store: Store, t0: float) -> None:
    with pytest.raises(TypeError, match="JSON"):
        await store.create(session(t0, state={"when": object()}))
    await store.create(session(t0))
    with pytest.raises(TypeError, match="JSON"):
        await store.compare_and_set("session", SID, ALICE, 1, {"x": {1, 2}}, now=t0)


# -- principal isolation -------------------------------------------------------------------


async def test_another_principal_gets_what_a_miss_gets(store: Store, t0: float) -> None:
    await store.create(session(t0, principal=BOB, state={"secret": 1}))
    assert await store.get("session", SID, ALICE, now=t0) is None
    with pytest.raises(NotFound) as foreign:
        await store.compare_and_set("session", SID, ALICE, 1, {"stolen": 1}, now=t0)
    with pytest.raises(NotFound) as foreign_touch:
        forged = session(t0 - 30, principal=ALICE)
        await store.touch(forged, now=t0, force=True)
    assert await store.delete("session", SID, ALICE) is False
    assert await store.list(ALICE, now=t0) == []

    # Bob's record is untouched by all of the above.
    bobs = await store.get("session", SID, BOB, now=t0)
    assert bobs is not None and bobs.state == {"secret": 1} and bobs.version == 1

    # And the answers are exactly those for an id that does not exist at all.
    assert await store.delete("session", SID, BOB) is True
    with pytest.raises(NotFound) as missing:
        await store.compare_and_set("session", SID, ALICE, 1, {"stolen": 1}, now=t0)
    with pytest.raises(NotFound) as missing_touch:
        await store.touch(session(t0 - 30, principal=ALICE), now=t0, force=True)
    assert str(foreign.value) == str(missing.value)
    assert str(foreign_touch.value) == str(missing_touch.value)
    assert ALICE not in str(missing.value) and BOB not in str(foreign.value)


async def test_one_id_under_two_principals_is_two_independent_records(
    store: Store, t0: float
) -> None:
    """Records are keyed by (kind, id, principal): Bob creating Alice's id neither fails nor
    touches hers, so create cannot tell him her id exists (DESIGN §2)."""
    alices = session(t0, state={"owner": "alice"}, idle_ttl=100)
    await store.create(alices)
    bobs = session(t0 + 1, principal=BOB, state={"owner": "bob"}, idle_ttl=200)
    await store.create(bobs)  # no AlreadyExists: Alice's record is not Bob's business
    assert await store.get("session", SID, ALICE, now=t0 + 2) == alices
    assert await store.get("session", SID, BOB, now=t0 + 2) == bobs

    # AlreadyExists only for the same principal, for each of them.
    with pytest.raises(AlreadyExists):
        await store.create(session(t0 + 2, state={"again": "alice"}))
    with pytest.raises(AlreadyExists):
        await store.create(session(t0 + 2, principal=BOB, state={"again": "bob"}))

    # Compare-and-set: versions are per record; a write of one leaves the other alone.
    bobs = await store.compare_and_set("session", SID, BOB, 1, {"owner": "bob", "n": 1}, now=t0 + 3)
    assert bobs.version == 2
    with pytest.raises(VersionConflict) as conflict:
        await store.compare_and_set("session", SID, BOB, 1, {"lost": True}, now=t0 + 3)
    assert conflict.value.current == bobs
    assert await store.get("session", SID, ALICE, now=t0 + 3) == alices
    alices = await store.compare_and_set(
        "session", SID, ALICE, 1, {"owner": "alice", "n": 9}, now=t0 + 3
    )
    assert alices.version == 2 and alices.state == {"owner": "alice", "n": 9}
    got = await store.get("session", SID, BOB, now=t0 + 3)
    assert got is not None and got.state == {"owner": "bob", "n": 1}

    # Touch moves only the record it is given.
    bobs = await store.touch(bobs, now=t0 + 50, force=True)
    assert bobs.last_seen == t0 + 50
    got = await store.get("session", SID, ALICE, now=t0 + 50)
    assert got is not None and got.last_seen == alices.last_seen

    # List shows each principal their own, once.
    assert await store.list(ALICE, now=t0 + 50) == [alices]
    assert await store.list(BOB, now=t0 + 50) == [bobs]

    # Expiry is per record too: Alice's idles out while Bob's lives on.
    late = alices.expires_at + 1
    assert late < bobs.expires_at
    assert await store.get("session", SID, ALICE, now=late) is None
    assert await store.get("session", SID, BOB, now=late) == bobs


async def test_deleting_one_principals_record_keeps_the_others(store: Store) -> None:
    now = time.time()  # delete has no now=: it judges liveness by the real clock
    await store.create(session(now, state={"owner": "alice"}))
    await store.create(session(now, principal=BOB, state={"owner": "bob"}))
    assert await store.delete("session", SID, BOB) is True
    assert await store.delete("session", SID, BOB) is False
    assert await store.get("session", SID, BOB) is None
    assert await store.list(BOB) == []
    alices = await store.get("session", SID, ALICE)
    assert alices is not None and alices.state == {"owner": "alice"}
    assert [r.id for r in await store.list(ALICE)] == [SID]
    # Bob may take the id again; Alice's record still stands.
    await store.create(session(now, principal=BOB, state={"owner": "bob", "again": True}))
    assert await store.get("session", SID, ALICE) == alices


async def test_a_foreign_id_creates_exactly_like_an_unknown_one(store: Store, t0: float) -> None:
    """What create, get and list answer Bob is the same whether Alice holds the id or not."""
    other = "s-fedcba9876543210"
    await store.create(session(t0, state={"secret": 1}))
    answers = []
    for id in (SID, other):  # Alice's id, then an id nobody holds
        before = await store.get("session", id, BOB, now=t0)
        record = session(t0, id, principal=BOB)
        await store.create(record)
        answers.append((before, await store.get("session", id, BOB, now=t0) == record))
    assert answers == [(None, True), (None, True)]
    assert [r.id for r in await store.list(BOB, now=t0)] == [SID, other]
    got = await store.get("session", SID, ALICE, now=t0)
    assert got is not None and got.state == {"secret": 1} and got.version == 1


# -- compare-and-set -----------------------------------------------------------------------


async def test_compare_and_set_bumps_version_and_moves_a_stale_last_seen(
    store: Store, t0: float
) -> None:
    record = session(t0, state={"n": 0}, attributes={"a": 1})
    await store.create(record)
    # 7 s of a 60 s TTL: more than the default touch fraction (0.1), so last_seen must move.
    updated = await store.compare_and_set("session", SID, ALICE, 1, {"n": 1}, now=t0 + 7)
    assert updated == record.with_state({"n": 1}, t0 + 7)
    assert updated.version == 2 and updated.last_seen == t0 + 7
    assert await store.get("session", SID, ALICE, now=t0 + 8) == updated


async def test_compare_and_set_may_leave_a_fresh_last_seen(store: Store, t0: float) -> None:
    # Within the touch fraction a write, like a touch, need not move last_seen (DESIGN §6).
    await store.create(session(t0, state={"n": 0}))
    updated = await store.compare_and_set("session", SID, ALICE, 1, {"n": 1}, now=t0 + 5)
    assert updated.version == 2 and updated.state == {"n": 1}
    # SQLite and memory leave it, sparing the expiry index; Redis rewrites the record anyway.
    kept = not store.url.startswith("redis")  # rediss, redis+cluster, … too
    assert updated.last_seen == (t0 if kept else t0 + 5)
    assert updated.expires_at == updated.last_seen + 60
    assert await store.get("session", SID, ALICE, now=t0 + 6) == updated
    # ...but once it lags by more than the fraction, the next write moves it.
    later = await store.compare_and_set("session", SID, ALICE, 2, {"n": 2}, now=t0 + 12)
    assert later.last_seen == t0 + 12 and later.expires_at == t0 + 72
    assert await store.get("session", SID, ALICE, now=t0 + 71) == later


async def test_compare_and_set_returns_the_callers_state_and_keeps_its_own(
    store: Store, t0: float
) -> None:
    await store.create(session(t0))
    state: dict[str, Any] = {"items": [1]}
    updated = await store.compare_and_set("session", SID, ALICE, 1, state, now=t0 + 1)
    assert updated.state is state  # no decode of what was just encoded
    state["items"].append(2)  # the caller's dict is not the stored one
    got = await store.get("session", SID, ALICE, now=t0 + 2)
    assert got is not None and got.state == {"items": [1]}


async def test_compare_and_set_refuses_a_state_over_max_bytes(store: Store, t0: float) -> None:
    await store.create(session(t0, state={"n": 0}))
    big = {"text": "é" * 60}  # 120 bytes of UTF-8 in 60 characters: bytes are what count
    with pytest.raises(StateOverMaxBytes) as refused:
        await store.compare_and_set("session", SID, ALICE, 1, big, now=t0 + 1, max_bytes=100)
    assert refused.value.limit == 100 and refused.value.size == len(
        json.dumps(big, separators=(",", ":"), ensure_ascii=False).encode()
    )
    got = await store.get("session", SID, ALICE, now=t0 + 2)
    assert got is not None and got.state == {"n": 0} and got.version == 1  # nothing written
    fits = await store.compare_and_set(
        "session", SID, ALICE, 1, {"text": "é" * 10}, now=t0 + 3, max_bytes=100
    )
    assert fits.version == 2


def test_state_over_max_bytes_keeps_its_old_name_and_is_not_the_wire_error() -> None:
    """Issue #17: the store's answer was called ``StateTooLarge`` like the core's wire error;
    the old import still works and names the store's class, which stays a StoreError."""
    from mcp_sessions import stores
    from mcp_sessions.core import errors

    assert stores.StateTooLarge is StateOverMaxBytes
    assert issubclass(StateOverMaxBytes, StoreError)
    assert not issubclass(StateOverMaxBytes, errors.StateTooLarge)


async def test_compare_and_set_with_a_stale_version_conflicts(store: Store, t0: float) -> None:
    await store.create(session(t0, state={"n": 0}))
    winner = await store.compare_and_set("session", SID, ALICE, 1, {"n": 1}, now=t0 + 1)
    with pytest.raises(VersionConflict) as conflict:
        await store.compare_and_set("session", SID, ALICE, 1, {"n": 99}, now=t0 + 2)
    assert conflict.value.current == winner
    got = await store.get("session", SID, ALICE, now=t0 + 2)
    assert got is not None and got.state == {"n": 1} and got.version == 2


async def test_compare_and_set_on_a_missing_record(store: Store, t0: float) -> None:
    with pytest.raises(NotFound):
        await store.compare_and_set("session", SID, ALICE, 1, {}, now=t0)


async def test_compare_and_set_on_an_expired_record(store: Store, t0: float) -> None:
    await store.create(session(t0, idle_ttl=10))
    with pytest.raises(NotFound):
        await store.compare_and_set("session", SID, ALICE, 1, {"late": 1}, now=t0 + 10)


async def test_compare_and_set_never_extends_past_the_cap(store: Store, t0: float) -> None:
    await store.create(session(t0, idle_ttl=60, max_lifetime=100))
    updated = await store.compare_and_set("session", SID, ALICE, 1, {"n": 1}, now=t0 + 50)
    assert updated.expires_at == t0 + 100
    assert await store.get("session", SID, ALICE, now=t0 + 100) is None


async def increment(store: Store, kind: str, id: str, principal: str) -> int:
    """Read-modify-write with retry: the pattern the session layer builds on CAS."""
    record = await store.get(kind, id, principal)
    assert record is not None
    conflicts = 0
    while True:
        try:
            await store.compare_and_set(
                kind, id, principal, record.version, {"n": record.state["n"] + 1}
            )
            return conflicts
        except VersionConflict as conflict:
            assert conflict.current is not None
            record = conflict.current
            conflicts += 1


async def test_concurrent_increments_lose_no_update(store: Store) -> None:
    await store.create(session(time.time(), idle_ttl=600, state={"n": 0}))
    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(increment, store, "session", SID, ALICE)
    got = await store.get("session", SID, ALICE)
    assert got is not None
    assert got.state == {"n": 50}
    assert got.version == 51
