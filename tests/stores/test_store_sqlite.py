"""What only the SQLite store has: its query plans, its worker thread, inline reads."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import anyio
import pytest

from mcp_sessions.core.records import Record
from mcp_sessions.stores import open_store
from mcp_sessions.stores import sqlite as module
from mcp_sessions.stores.sqlite import SQLiteStore

ALICE = "principal:alice"


def session(id: str = "s-0123456789abcdef") -> Record:
    return Record.new(
        kind="session", id=id, principal=ALICE, origin="t", now=time.time(), idle_ttl=60
    )


def test_plans_use_the_indexes(tmp_path: Path) -> None:
    """Sweep walks the expiry index, get the primary key, list the principal index: each
    costs what it returns, not what is stored (issue #3)."""
    anyio.run(_open_and_close, f"sqlite:///{tmp_path}/plan.sqlite3")
    raw = sqlite3.connect(tmp_path / "plan.sqlite3")
    try:

        def plan(sql: str, params: dict[str, object] | tuple[object, ...]) -> str:
            rows = raw.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
            return " | ".join(str(row[-1]) for row in rows)

        sweep = plan(module.SWEEP, {"now": 0.0, "limit": 10})
        assert "INDEX mcps_records_expiry" in sweep and "SCAN mcps_records" not in sweep
        get = plan(module._GET, ("session", "x", "p"))
        assert "USING INDEX sqlite_autoindex_mcps_records_1" in get
        assert "(kind=? AND id=? AND principal=?)" in get  # the whole key, one lookup
        listing = plan(module._LIST, {"principal": "p", "now": 0.0, "kind": None})
        assert "INDEX mcps_records_principal" in listing
    finally:
        raw.close()


async def _open_and_close(url: str) -> None:
    async with open_store(url):
        pass


@pytest.mark.anyio
async def test_reads_through_the_worker_when_inline_reads_is_off(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path}/x.sqlite3?inline_reads=false") as store:
        assert isinstance(store, SQLiteStore) and store.inline_reads is False
        record = session()
        await store.create(record)
        assert await store.get("session", record.id, ALICE) == record


@pytest.mark.anyio
async def test_writes_run_on_one_worker_thread(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path}/x.sqlite3") as store:
        assert isinstance(store, SQLiteStore)
        worker = store._worker

        def where() -> str:
            return threading.current_thread().name

        names = {await worker.run(where) for _ in range(5)}
        assert names == {f"mcp-sessions sqlite {store.path}"}
        assert threading.current_thread().name not in names


def test_worker_serves_callers_without_an_asyncio_loop() -> None:
    """The path other anyio backends (trio) take: a helper thread waits for the worker."""
    worker = module._Worker("test worker")
    try:
        assert worker._run_blocking(lambda: 42) == 42
        with pytest.raises(ZeroDivisionError):
            worker._run_blocking(lambda: 1 // 0)
    finally:
        worker.stop()


@pytest.mark.parametrize(
    ("query", "level"), [("", 1), ("?synchronous=full", 2), ("?synchronous=NORMAL", 1)]
)
def test_synchronous_option_sets_the_pragma(tmp_path: Path, query: str, level: int) -> None:
    """NORMAL (1) by default: durable across a process crash; FULL (2) on request."""

    async def check() -> None:
        async with open_store(f"sqlite:///{tmp_path}/sync.sqlite3{query}") as store:
            assert isinstance(store, SQLiteStore)
            value = await store._run(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0])
            assert value == level

    anyio.run(check)


#: The schema of version 1 (pre-release), keyed by (kind, id): ids were global.
_SCHEMA_V1 = """
CREATE TABLE mcps_records (
    kind TEXT NOT NULL, id TEXT NOT NULL, principal TEXT NOT NULL, origin TEXT NOT NULL,
    created_at REAL NOT NULL, last_seen REAL NOT NULL, idle_ttl REAL NOT NULL,
    max_expires_at REAL, expires_at REAL NOT NULL, version INTEGER NOT NULL,
    state TEXT NOT NULL, attributes TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX mcps_records_expiry ON mcps_records (expires_at);
CREATE INDEX mcps_records_principal ON mcps_records (principal, created_at);
CREATE TABLE mcps_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
PRAGMA user_version = 1;
"""


@pytest.mark.anyio
async def test_a_version_1_file_is_upgraded_with_its_records(tmp_path: Path) -> None:
    """Schema 1 keyed records by (kind, id); opening such a file moves its rows to the
    (kind, id, principal) table in one transaction, indexes included."""
    path = tmp_path / "v1.sqlite3"
    raw = sqlite3.connect(path)
    raw.executescript(_SCHEMA_V1)
    alices = session()
    row = module.record_row(alices)
    del row["now"]
    names = ", ".join(row)
    raw.execute(f"INSERT INTO mcps_records ({names}) VALUES (:{', :'.join(row)})", row)
    raw.commit()
    raw.close()

    async with open_store(f"sqlite:///{path}") as store:
        assert await store.get("session", alices.id, ALICE) == alices
        bobs = Record.new(
            kind="session", id=alices.id, principal="principal:bob", origin="t",
            now=time.time(), idle_ttl=60,
        )  # fmt: skip
        await store.create(bobs)  # the old primary key would refuse this
        assert await store.get("session", alices.id, "principal:bob") == bobs
        assert await store.get("session", alices.id, ALICE) == alices

    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == module.SCHEMA_VERSION == 2
        tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master")}
        assert "mcps_records_v1" not in tables
        indexes = raw.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'mcps_records'"
        ).fetchall()
        assert {name for (name,) in indexes} >= {"mcps_records_expiry", "mcps_records_principal"}
        columns = raw.execute("SELECT name, pk FROM pragma_table_info('mcps_records')").fetchall()
        assert sorted((pk, name) for name, pk in columns if pk) == [
            (1, "kind"),
            (2, "id"),
            (3, "principal"),
        ]
    finally:
        raw.close()
