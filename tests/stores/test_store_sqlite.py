"""What only the SQLite store has: its query plans, its worker thread, inline reads."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from mcp_sessions.core.records import Record
from mcp_sessions.stores import VersionConflict, open_store
from mcp_sessions.stores import _sqlite_schema as schema
from mcp_sessions.stores._worker import Worker
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

        sweep = plan(schema.SWEEP, {"now": 0.0, "limit": 10})
        assert "INDEX mcps_records_expiry" in sweep and "SCAN mcps_records" not in sweep
        get = plan(schema.GET, ("session", "x", "p"))
        assert "USING INDEX sqlite_autoindex_mcps_records_1" in get
        assert "(kind=? AND id=? AND principal=?)" in get  # the whole key, one lookup
        listing = plan(schema.LIST, {"principal": "p", "now": 0.0, "kind": None})
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
    worker = Worker("test worker")
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
    row = schema.record_row(alices)
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
        assert raw.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION == 2
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


class _CountingSubmit:
    """Wraps a store's ``_worker.submit`` to count the jobs the worker was given."""

    def __init__(self, store: SQLiteStore) -> None:
        self.jobs = 0
        self._submit = store._worker.submit
        store._worker.submit = self  # type: ignore[method-assign]

    def __call__(self, job: Callable[[], None]) -> None:
        self.jobs += 1
        self._submit(job)


@pytest.mark.anyio
async def test_writes_run_inline_on_the_loop_thread_by_default(tmp_path: Path) -> None:
    """With synchronous=NORMAL, create, compare-and-set, touch and delete are single
    statements on the event loop's own connection: the worker is never handed a job."""
    async with open_store(f"sqlite:///{tmp_path}/x.sqlite3", sweep_interval=0) as store:
        assert isinstance(store, SQLiteStore) and store.inline_writes is True
        conns = store._conns
        assert conns is not None and conns.inline is not None
        threads: list[str] = []
        conns.inline.set_trace_callback(lambda sql: threads.append(threading.current_thread().name))
        counting = _CountingSubmit(store)
        record = session()
        await store.create(record)
        updated = await store.compare_and_set("session", record.id, ALICE, 1, {"n": 1})
        with pytest.raises(VersionConflict):
            await store.compare_and_set("session", record.id, ALICE, 1, {"n": 2})
        touched = await store.touch(updated, force=True, now=updated.last_seen + 1)
        assert touched.version == 2
        assert await store.delete("session", record.id, ALICE) is True
        assert counting.jobs == 0
        assert threads and set(threads) == {threading.current_thread().name}
        # The other connections see what the inline one committed.
        assert await store.get("session", record.id, ALICE) is None
        assert await store.list(ALICE) == []


@pytest.mark.parametrize("inline_writes", [True, False])
def test_synchronous_full_keeps_every_write_on_the_worker(
    tmp_path: Path, inline_writes: bool
) -> None:
    """Each FULL commit fsyncs: never on the event loop, whatever inline_writes says."""

    async def check() -> None:
        path = f"{tmp_path}/full.sqlite3"
        async with SQLiteStore(path, synchronous="full", inline_writes=inline_writes) as store:
            assert store.inline_writes is False
            assert store._conns is not None and store._conns.inline is None
            counting = _CountingSubmit(store)
            await store.create(session())
            assert counting.jobs == 1

    anyio.run(check)


@pytest.mark.anyio
async def test_inline_writes_off_sends_writes_to_the_worker(tmp_path: Path) -> None:
    store = SQLiteStore(f"{tmp_path}/x.sqlite3", inline_writes=False, sweep_interval=0)
    async with store:
        assert store._conns is not None and store._conns.inline is None
        counting = _CountingSubmit(store)
        record = session()
        await store.create(record)
        await store.compare_and_set("session", record.id, ALICE, 1, {"n": 1})
        assert counting.jobs == 2


@pytest.mark.anyio
async def test_a_busy_inline_write_waits_on_the_worker(tmp_path: Path) -> None:
    """Another connection holds the write lock: the inline CAS is refused at once, changes
    nothing, and the worker (busy_timeout) waits for the lock and then applies it once."""
    path = tmp_path / "busy.sqlite3"
    async with open_store(f"sqlite:///{path}", sweep_interval=0) as store:
        assert isinstance(store, SQLiteStore)
        record = session()
        await store.create(record)
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            other.execute("BEGIN IMMEDIATE")  # the write lock, as another process would hold it
            release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
            counting = _CountingSubmit(store)
            release.start()
            try:
                with anyio.fail_after(4):  # well under busy_timeout=5: no StoreError either
                    started = time.monotonic()
                    updated = await store.compare_and_set("session", record.id, ALICE, 1, {"n": 1})
                    waited = time.monotonic() - started
            finally:
                release.join()
        finally:
            other.close()
        assert updated.version == 2 and updated.state == {"n": 1}
        assert waited >= 0.2  # it did wait for the lock, on the worker
        assert counting.jobs == 1
        assert (await store.get("session", record.id, ALICE)) == updated
        # The lock is free again: the next write is inline.
        await store.compare_and_set("session", record.id, ALICE, 2, {"n": 2})
        assert counting.jobs == 1


@pytest.mark.anyio
async def test_inline_writes_schedule_a_checkpoint_on_the_worker(tmp_path: Path) -> None:
    """The inline connection never checkpoints; every ``checkpoint_every`` inline writes a
    passive checkpoint runs on the worker, unawaited. Writes meanwhile queue behind it on the
    worker, so the WAL is wholly copied and restarts: it stays bounded under steady writes."""
    path = tmp_path / "wal.sqlite3"
    async with open_store(f"sqlite:///{path}", sweep_interval=0) as store:
        assert isinstance(store, SQLiteStore)
        conns = store._conns
        assert conns is not None and conns.inline is not None
        assert conns.inline.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        store.checkpoint_every = 50
        counting = _CountingSubmit(store)
        gate = threading.Event()

        def hold() -> None:  # the worker waits here, so the checkpoint stays queued
            gate.wait()

        store._worker.submit(hold)
        record = session()
        await store.create(record)
        version = 1

        async def cas(i: int) -> None:
            nonlocal version
            updated = await store.compare_and_set("session", record.id, ALICE, version, {"i": i})
            version = updated.version

        try:
            for i in range(49):
                await cas(i)
            # The 50th inline write queued the checkpoint, and nothing else was queued.
            assert counting.jobs == 2 and store._checkpoint_pending and store.checkpoints == 0
            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(cas, 49)
                    # until the write has gone to the worker, behind the checkpoint
                    while counting.jobs < 3:  # noqa: ASYNC110
                        await anyio.sleep(0.001)
                    gate.set()
        finally:
            gate.set()
        assert store.checkpoints == 1 and not store._checkpoint_pending and version == 51
        for i in range(1000):
            await cas(i)
        await store._worker.run(lambda: None)  # anything queued has run
        assert store.checkpoints >= 10
        # ~2 WAL frames of ~4 KiB per write: without the checkpoints 1,050 writes would leave
        # ~8 MiB of WAL; with them it holds ~50 writes' worth at a time.
        wal = (tmp_path / "wal.sqlite3-wal").stat().st_size
        assert wal < 1024 * 1024, wal


def test_inline_writes_is_a_url_option(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/opt.sqlite3?inline_writes=false")
    assert isinstance(store, SQLiteStore) and store.inline_writes is False
    assert open_store(f"sqlite:///{tmp_path}/opt2.sqlite3").inline_writes is True  # type: ignore[attr-defined]
