"""``Store.scan`` (issue #13): every live record across principals, for operators, on memory,
SQLite and a real Redis; and it writes nothing. Plus the SQLite store's ``read_only`` open.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from tests.fixtures.redis_server import RedisServer

from mcp_sessions.core.records import Record
from mcp_sessions.stores import Store, StoreError, open_store
from mcp_sessions.stores._common import OPAQUE_KEY

pytestmark = pytest.mark.anyio

ALICE = "principal:alice"
BOB = "principal:bob"


def rec(now: float, id: str, principal: str, kind: str = "session", ttl: float = 60) -> Record:
    return Record.new(
        kind=kind, id=id, principal=principal, origin="create", now=now, idle_ttl=ttl,
        state={"id": id},
    )  # fmt: skip


async def fill(store: Store, t0: float) -> None:
    await store.create(rec(t0, "a1", ALICE))
    await store.create(rec(t0 + 1, "a2", ALICE, kind="vm"))
    await store.create(rec(t0 + 2, "b1", BOB))
    await store.create(rec(t0 + 3, "a1", BOB))  # the same id, another principal
    await store.create(rec(t0 + 4, "gone", BOB, ttl=5))  # expired at t0 + 9


async def test_scan_sees_every_principal_oldest_first_and_filters(store: Store, t0: float) -> None:
    await fill(store, t0)
    now = t0 + 20
    everything = await store.scan(now=now)
    assert [(r.id, r.principal) for r in everything] == [
        ("a1", ALICE),
        ("a2", ALICE),
        ("b1", BOB),
        ("a1", BOB),
    ]  # "gone" has expired: a miss, swept or not
    assert everything[0].state == {"id": "a1"}
    assert [r.id for r in await store.scan(principal=BOB, now=now)] == ["b1", "a1"]
    assert [r.id for r in await store.scan(kind="vm", now=now)] == ["a2"]
    assert {r.principal for r in await store.scan(id="a1", now=now)} == {ALICE, BOB}
    assert [r.kind for r in await store.scan(id="a1", principal=BOB, now=now)] == ["session"]
    assert await store.scan(id="a1", kind="vm", now=now) == []
    assert await store.scan(principal="principal:nobody", now=now) == []


async def test_scan_takes_glob_characters_literally(store: Store, t0: float) -> None:
    await store.create(rec(t0, "x*", ALICE))
    await store.create(rec(t0, "xy", ALICE))
    found = await store.scan(id="x*", now=t0 + 1)
    assert [r.id for r in found] == ["x*"]


async def test_scan_moves_no_expiry(store: Store, t0: float) -> None:
    await store.create(rec(t0, "a1", ALICE, ttl=10))
    await store.scan(now=t0 + 8)  # a read: no touch
    assert await store.get("session", "a1", ALICE, now=t0 + 11) is None


def digest(path: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.parent.glob(path.name + "*"))
        # shared memory: readers take locks in it; an empty -wal is what a reader of a WAL
        # file leaves when the writer had removed it (no content)
        if not p.name.endswith("-shm") and p.stat().st_size
    }


async def test_sqlite_read_only_changes_no_byte_and_refuses_writes(
    tmp_path: Path, t0: float
) -> None:
    path = tmp_path / "s.sqlite3"
    async with open_store(f"sqlite:///{path}") as writable:
        await fill(writable, t0)
    before = digest(path)
    async with open_store(f"sqlite:///{path}?read_only=true") as store:
        assert len(await store.scan(now=t0 + 20)) == 4
        assert await store.get("session", "b1", BOB, now=t0 + 20) is not None
        with pytest.raises(StoreError, match="read_only"):
            await store.delete("session", "b1", BOB)
        with pytest.raises(StoreError, match="read_only"):
            await store.create(rec(t0, "new", ALICE))
        with pytest.raises(StoreError, match="read_only"):
            await store.sweep()
    assert digest(path) == before
    async with open_store(f"sqlite:///{path}") as writable:
        assert await writable.get("session", "b1", BOB, now=t0 + 20) is not None


async def test_sqlite_read_only_never_creates_a_file(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "s.sqlite3"
    store = open_store(f"sqlite:///{path}", read_only=True)
    with pytest.raises(StoreError, match="no such file"):
        await store.scan()
    await store.close()
    assert not path.parent.exists()


async def test_sqlite_read_only_refuses_a_file_that_is_no_store(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    sqlite3.connect(path).close()  # an empty SQLite file
    store = open_store(f"sqlite:///{path}", read_only=True)
    with pytest.raises(StoreError, match="no mcp-sessions store"):
        await store.scan()
    await store.close()


async def test_sqlite_scan_shows_an_undecodable_state_as_opaque(tmp_path: Path, t0: float) -> None:
    path = tmp_path / "s.sqlite3"
    async with open_store(f"sqlite:///{path}") as writable:
        await fill(writable, t0)
    with sqlite3.connect(path) as conn:  # damage one row the way another writer might
        conn.execute("UPDATE mcps_records SET state = 'not json' WHERE id = 'b1'")
    async with open_store(f"sqlite:///{path}", read_only=True) as store:
        found = {(r.id, r.principal): r for r in await store.scan(now=t0 + 20)}
    assert found[("b1", BOB)].state == {OPAQUE_KEY: True, "bytes": 8}
    assert found[("a1", ALICE)].state == {"id": "a1"}


@pytest.mark.redis
async def test_redis_scan_writes_nothing(
    redis_server: RedisServer, redis_url: str, t0: float
) -> None:
    async with open_store(redis_url) as store:
        await fill(store, t0)
        client = redis_server.client()
        client.delete(store.record_key("session", "b1", BOB))  # leaves a stale index member

        def snapshot() -> dict[str, object]:
            out: dict[str, object] = {}
            for key in sorted(client.keys("*")):
                kind = client.type(key)
                out[key] = client.get(key) if kind == "string" else client.zrange(key, 0, -1)
            return out

        before = snapshot()
        found = await store.scan(now=t0 + 20)
        assert [(r.id, r.principal) for r in found] == [("a1", ALICE), ("a2", ALICE), ("a1", BOB)]
        assert snapshot() == before  # the stale member is still there: scan cleans nothing
        client.set("mcps:{session:not-a-record}", "garbage")
        assert len(await store.scan(now=t0 + 20)) == 3  # a foreign key is skipped, not fatal
