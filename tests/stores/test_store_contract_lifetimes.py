"""The store contract (DESIGN §6, issue #3), run against memory, SQLite and a real Redis:
how records live on once written: touch and its write fraction, idle and absolute expiry,
delete, list and count, handles (TTL, renew, revoke), the sweep of expired records, and a
closed store. Creating, isolating and compare-and-set are in test_store_contract.py.

Times are passed as ``now=`` rather than slept through; ``t0`` is near the real clock so the
TTLs Redis derives from it are ordinary ones.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.stores.records import ALICE, BOB, SID, session

from mcp_sessions.core.records import Record
from mcp_sessions.stores import NotFound, Store, StoreError, open_store

pytestmark = pytest.mark.anyio


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


async def mixed_records(store: Store, t0: float) -> tuple[Record, Record, Record, Record]:
    """Alice's session s1 (idle TTL 10 s), vm handle h1 and session s2, one second apart, and
    Bob's session b1, created out of order."""
    s1 = session(t0, "s-1111111111111111", idle_ttl=10)
    h1 = session(t0 + 1, "vm-2222222222222222", kind="vm", idle_ttl=600)
    s2 = session(t0 + 2, "s-3333333333333333", idle_ttl=600)
    b1 = session(t0 + 3, "s-4444444444444444", principal=BOB, idle_ttl=600)
    for record in (s2, b1, h1, s1):
        await store.create(record)
    return s1, h1, s2, b1


async def test_list_returns_own_live_records_oldest_first(store: Store, t0: float) -> None:
    s1, h1, s2, b1 = await mixed_records(store, t0)
    assert await store.list(ALICE, now=t0 + 5) == [s1, h1, s2]
    assert await store.list(ALICE, kind="session", now=t0 + 5) == [s1, s2]
    assert await store.list(ALICE, kind="vm", now=t0 + 5) == [h1]
    assert await store.list(BOB, now=t0 + 5) == [b1]
    assert await store.list(ALICE, now=t0 + 20) == [h1, s2]  # s1 expired
    assert await store.list("principal:nobody", now=t0) == []


async def test_count_is_the_length_of_list(store: Store, t0: float) -> None:
    s1, _h1, s2, _b1 = await mixed_records(store, t0)
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
