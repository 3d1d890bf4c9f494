"""The store contract (DESIGN §6, issue #3), run against memory, SQLite and a real Redis.

Times are passed as ``now=`` rather than slept through; ``t0`` is near the real clock so the
TTLs Redis derives from it are ordinary ones.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_sessions.core.records import Record
from mcp_sessions.stores import (
    AlreadyExists,
    NotFound,
    StateOverMaxBytes,
    Store,
    StoreError,
    VersionConflict,
    open_store,
)

pytestmark = pytest.mark.anyio

ALICE = "principal:alice"
BOB = "principal:bob"
SID = "s-0123456789abcdef"


def session(
    now: float,
    id: str = SID,
    *,
    principal: str = ALICE,
    kind: str = "session",
    idle_ttl: float = 60.0,
    max_lifetime: float | None = None,
    state: dict[str, Any] | None = None,
    attributes: dict[str, Any] | None = None,
) -> Record:
    return Record.new(
        kind=kind,
        id=id,
        principal=principal,
        origin="client",
        now=now,
        idle_ttl=idle_ttl,
        max_lifetime=max_lifetime,
        state=state,
        attributes=attributes,
    )


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


# -- touch ---------------------------------------------------------------------------------


async def test_touch_does_not_write_within_the_fraction(store: Store, t0: float) -> None:
    record = session(t0, idle_ttl=100)  # default fraction 0.1: writes once 10 s have passed
    await store.create(record)
    assert await store.touch(record, now=t0 + 9) == record
    stored = await store.get("session", SID, ALICE, now=t0 + 9)
    assert stored is not None and stored.last_seen == t0


async def test_touch_writes_once_the_fraction_has_passed(store: Store, t0: float) -> None:
    record = session(t0, idle_ttl=100, state={"kept": True})
    await store.create(record)
    touched = await store.touch(record, now=t0 + 11)
    assert touched.last_seen == t0 + 11 and touched.expires_at == t0 + 111
    assert touched.state == {"kept": True} and touched.version == 1
    assert await store.get("session", SID, ALICE, now=t0 + 110) == touched
    assert await store.get("session", SID, ALICE, now=t0 + 111) is None


async def test_touch_with_force_or_new_ttl_writes(store: Store, t0: float) -> None:
    record = session(t0, kind="vm", idle_ttl=100)
    await store.create(record)
    forced = await store.touch(record, now=t0 + 1, force=True)
    assert forced.last_seen == t0 + 1
    renewed = await store.touch(forced, now=t0 + 2, idle_ttl=500)
    assert renewed.idle_ttl == 500 and renewed.expires_at == t0 + 502
    assert await store.get("vm", SID, ALICE, now=t0 + 501) == renewed


async def test_touch_never_moves_expiry_past_the_cap(store: Store, t0: float) -> None:
    record = session(t0, idle_ttl=60, max_lifetime=100)
    await store.create(record)
    touched = await store.touch(record, now=t0 + 50)
    assert touched.expires_at == t0 + 100
    renewed = await store.touch(touched, now=t0 + 99, idle_ttl=10_000)
    assert renewed.expires_at == t0 + 100 and renewed.max_expires_at == t0 + 100
    assert await store.get("session", SID, ALICE, now=t0 + 99.5) is not None
    assert await store.get("session", SID, ALICE, now=t0 + 100) is None


async def test_touch_of_an_expired_or_deleted_record_is_not_found(store: Store, t0: float) -> None:
    record = session(t0, idle_ttl=10)
    await store.create(record)
    with pytest.raises(NotFound):
        await store.touch(record, now=t0 + 10)  # no write needed, still a miss
    with pytest.raises(NotFound):
        await store.touch(record, now=t0 + 10, force=True)
    other = session(t0, id="s-fedcba9876543210")
    await store.create(other)
    assert await store.delete("session", other.id, ALICE) is True
    with pytest.raises(NotFound):
        await store.touch(other, now=t0 + 1, force=True)


async def test_touch_rejects_a_bad_ttl(store: Store, t0: float) -> None:
    record = session(t0)
    await store.create(record)
    with pytest.raises(ValueError, match="idle_ttl"):
        await store.touch(record, now=t0, idle_ttl=0)


async def test_touch_fraction_is_an_option(store_url: str, t0: float) -> None:
    async with open_store(store_url, touch_fraction=0.5) as store:
        record = session(t0, idle_ttl=100)
        await store.create(record)
        assert (await store.touch(record, now=t0 + 50)).last_seen == t0  # not yet
        assert (await store.touch(record, now=t0 + 51)).last_seen == t0 + 51


# -- expiry --------------------------------------------------------------------------------


async def test_idle_expiry(store: Store, t0: float) -> None:
    await store.create(session(t0, idle_ttl=30))
    assert await store.get("session", SID, ALICE, now=t0 + 29.999) is not None
    assert await store.get("session", SID, ALICE, now=t0 + 30) is None


async def test_absolute_expiry_beats_activity(store: Store, t0: float) -> None:
    record = session(t0, idle_ttl=40, max_lifetime=100)
    await store.create(record)
    for step in range(30, 100, 30):  # active every 30 s: idle expiry never comes
        record = await store.touch(record, now=t0 + step)
        record = await store.compare_and_set(
            "session", SID, ALICE, record.version, {"step": step}, now=t0 + step
        )
    assert await store.get("session", SID, ALICE, now=t0 + 99) is not None
    assert await store.get("session", SID, ALICE, now=t0 + 100) is None


# -- delete --------------------------------------------------------------------------------


async def test_delete(store: Store, t0: float) -> None:
    now = time.time()  # delete has no now=: it judges liveness by the real clock
    await store.create(session(now))
    assert await store.delete("session", SID, ALICE) is True
    assert await store.get("session", SID, ALICE) is None
    assert await store.delete("session", SID, ALICE) is False
    # the id is free again
    await store.create(session(now, state={"again": True}))
    got = await store.get("session", SID, ALICE)
    assert got is not None and got.state == {"again": True}


async def test_delete_of_an_expired_record_removes_it_but_reports_false(
    store: Store, t0: float
) -> None:
    await store.create(session(t0 - 100, idle_ttl=10))  # expired 90 s ago by the real clock
    assert await store.delete("session", SID, ALICE) is False
    await store.create(session(t0))
    assert await store.get("session", SID, ALICE, now=t0) is not None


# -- list ----------------------------------------------------------------------------------


async def test_list_returns_own_live_records_oldest_first(store: Store, t0: float) -> None:
    s1 = session(t0, "s-1111111111111111", idle_ttl=10)
    h1 = session(t0 + 1, "vm-2222222222222222", kind="vm", idle_ttl=600)
    s2 = session(t0 + 2, "s-3333333333333333", idle_ttl=600)
    b1 = session(t0 + 3, "s-4444444444444444", principal=BOB, idle_ttl=600)
    for record in (s2, b1, h1, s1):
        await store.create(record)
    assert await store.list(ALICE, now=t0 + 5) == [s1, h1, s2]
    assert await store.list(ALICE, kind="session", now=t0 + 5) == [s1, s2]
    assert await store.list(ALICE, kind="vm", now=t0 + 5) == [h1]
    assert await store.list(BOB, now=t0 + 5) == [b1]
    assert await store.list(ALICE, now=t0 + 20) == [h1, s2]  # s1 expired
    assert await store.list("principal:nobody", now=t0) == []


async def test_count_is_the_length_of_list(store: Store, t0: float) -> None:
    s1 = session(t0, "s-1111111111111111", idle_ttl=10)
    h1 = session(t0 + 1, "vm-2222222222222222", kind="vm", idle_ttl=600)
    s2 = session(t0 + 2, "s-3333333333333333", idle_ttl=600)
    b1 = session(t0 + 3, "s-4444444444444444", principal=BOB, idle_ttl=600)
    for record in (s2, b1, h1, s1):
        await store.create(record)
    assert await store.count(ALICE, now=t0 + 5) == 3
    assert await store.count(ALICE, kind="session", now=t0 + 5) == 2
    assert await store.count(ALICE, kind="vm", now=t0 + 5) == 1
    assert await store.count(BOB, now=t0 + 5) == 1
    assert await store.count("principal:nobody", now=t0) == 0
    assert await store.delete("session", s2.id, ALICE) is True
    assert await store.count(ALICE, kind="session", now=t0 + 5) == 1
    assert await store.count(ALICE, now=t0 + 20) == 1  # s1 expired: h1 is left
    # Replacing an expired record under the same key counts it once.
    await store.create(session(t0 + 30, s1.id, idle_ttl=600))
    assert await store.count(ALICE, kind="session", now=t0 + 31) == 1


async def test_list_reflects_updates_and_deletes(store: Store, t0: float) -> None:
    await store.create(session(t0, "s-1111111111111111"))
    await store.create(session(t0 + 1, "s-2222222222222222"))
    updated = await store.compare_and_set(
        "session", "s-1111111111111111", ALICE, 1, {"n": 1}, now=t0 + 2
    )
    assert await store.delete("session", "s-2222222222222222", ALICE) is True
    assert await store.list(ALICE, now=t0 + 3) == [updated]


# -- handles -------------------------------------------------------------------------------


async def test_handle_lifecycle_ttl_renew_revoke(store: Store, t0: float) -> None:
    handle = session(
        t0, "vm-0123456789abcdef0123456789abcdef", kind="vm", idle_ttl=300, state={"vm": "booting"}
    )
    await store.create(handle)
    # used and edited like a session
    handle = await store.compare_and_set("vm", handle.id, ALICE, 1, {"vm": "up"}, now=t0 + 10)
    # renew: a forced touch with a new TTL
    renewed = await store.touch(handle, now=t0 + 200, force=True, idle_ttl=600)
    assert renewed.expires_at == t0 + 800
    assert await store.get("vm", handle.id, ALICE, now=t0 + 700) == renewed
    assert await store.get("vm", handle.id, BOB, now=t0 + 700) is None
    # revoke
    assert await store.delete("vm", handle.id, ALICE) is True
    assert await store.get("vm", handle.id, ALICE, now=t0 + 201) is None


# -- sweep ---------------------------------------------------------------------------------


async def test_sweep_removes_expired_records_up_to_the_limit(
    store: Store, backend: str, t0: float
) -> None:
    for n in range(5):
        await store.create(session(t0, f"s-expiring-{n:06d}", idle_ttl=10))
    for n in range(3):
        await store.create(session(t0, f"s-lasting-{n:07d}", idle_ttl=600))
    if backend.startswith("redis"):
        # Redis drops keys itself when their TTL passes; there is nothing to sweep.
        assert await store.sweep(now=t0 + 20) == 0
        return
    assert await store.sweep(now=t0 + 5) == 0
    assert await store.sweep(now=t0 + 20, limit=2) == 2
    assert await store.sweep(now=t0 + 20) == 3
    assert await store.sweep(now=t0 + 20) == 0
    # Removed, not merely hidden: even a read "before" the expiry finds nothing.
    assert await store.get("session", "s-expiring-000000", ALICE, now=t0 + 1) is None
    assert len(await store.list(ALICE, now=t0 + 1)) == 3


async def test_sweep_keeps_records_whose_expiry_was_extended(
    store: Store, backend: str, t0: float
) -> None:
    record = session(t0, idle_ttl=10)
    await store.create(record)
    await store.touch(record, now=t0 + 8)  # now expires at t0 + 18
    assert await store.sweep(now=t0 + 12) == 0
    assert await store.get("session", SID, ALICE, now=t0 + 12) is not None
    if not backend.startswith("redis"):
        assert await store.sweep(now=t0 + 18) == 1


@pytest.mark.parametrize("local", ["memory", "sqlite"])
async def test_creates_sweep_by_themselves_every_interval(local: str, tmp_path: Path) -> None:
    url = "memory://" if local == "memory" else f"sqlite:///{tmp_path}/auto.sqlite3"
    now = time.time()
    async with open_store(url, sweep_interval=1e-9) as store:
        await store.create(session(now - 100, "s-expired-00000000", idle_ttl=10))
        await store.create(session(now, "s-live-00000000000"))
        await store.list(ALICE)  # queued behind the background sweep on SQLite's worker
        # Gone, not hidden: at a time when it was live, it is still not there.
        assert await store.get("session", "s-expired-00000000", ALICE, now=now - 95) is None
        assert await store.get("session", "s-live-00000000000", ALICE) is not None
    async with open_store(url.replace("auto", "manual"), sweep_interval=0) as store:
        await store.create(session(now - 100, "s-expired-00000000", idle_ttl=10))
        await store.create(session(now, "s-live-00000000000"))
        await store.list(ALICE)
        assert await store.get("session", "s-expired-00000000", ALICE, now=now - 95) is not None


# -- lifecycle -----------------------------------------------------------------------------


async def test_a_closed_store_refuses_work(store_url: str, t0: float) -> None:
    store = open_store(store_url)
    async with store:
        await store.create(session(t0))
    await store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        await store.create(session(t0, "s-another-00000000"))
    with pytest.raises(StoreError, match="closed"):
        await store.list(ALICE, now=t0)
