"""``sqlite:///path``: the embedded default store, for one machine (DESIGN §6).

One file holds every session and handle of every process on the machine that opens it. This
module decides which connection runs each operation and on which thread; the file itself
(private creation, WAL, pragmas, error wording) is ``_sqlite_file.py``, the table and its
statements ``_sqlite_schema.py``, the thread ``_worker.py``.

Threads (issue #3: "do not block the event loop for longer than a single indexed statement"):
``list``, ``sweep``, opening and anything that may wait run on the store's own worker thread, in
submission order. The worker is one long-lived thread fed by a queue and answering through
``call_soon_threadsafe``: a round trip costs ~40-100 µs, where ``anyio.to_thread`` costs
~180 µs. ``get`` is one primary-key ``SELECT`` on the loop's connection, which never waits for
a lock (``busy_timeout=0``; WAL readers do not take the write lock), so by default it runs
inline: even the fast hop costs several times the lookup. If that connection ever reports
busy, the read goes to the worker. ``inline_reads=False`` sends reads to the worker too.

The single-statement writes (``create``, compare-and-set, ``touch``, ``delete``) run inline
too by default with ``synchronous=NORMAL`` (``inline_writes``), on that same connection, which
then also never checkpoints (``wal_autocheckpoint=0``). One connection for both matters: a
connection drops its page cache whenever another one has written, so a separate reader would
re-read its pages after every write (a read-modify-write per request made every read ~5x
slower, issue #4). Such a
commit is one indexed statement appended to the WAL, ~20-30 µs, with no fsync and no
checkpoint on the loop. If the write lock is taken (another process, or this store's worker
running a sweep), SQLite answers busy at once, nothing has changed, and the write goes to the
worker, which waits up to ``busy_timeout`` as before. Every :data:`_CHECKPOINT_EVERY` inline
writes the worker runs a ``PRAGMA wal_checkpoint(PASSIVE)`` that nobody awaits; until it ends,
writes take the worker path and queue behind it, so the checkpoint copies the whole WAL and the
next write starts it over from the beginning (were writes to go on inline meanwhile, the WAL
would never be wholly copied at the start of a write and would grow without bound). With
``synchronous=full`` every commit fsyncs, so all writes stay on the worker.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..core.records import JSONObject, Record
from ._common import clock, encode_json, not_found, touch_without_write
from ._sqlite_file import (
    Connections,
    file_identity,
    is_busy,
    open_connections,
    open_read_only,
    store_error,
)
from ._sqlite_schema import (
    CAS,
    CAS_STATE_ONLY,
    COUNT,
    DELETE,
    GET,
    INSERT,
    LIST,
    SCAN,
    SCHEMA_VERSION,
    SWEEP,
    TOUCH,
    record_row,
    row_is_live,
    row_record,
    row_record_lenient,
)
from ._worker import Worker
from .base import (
    DEFAULT_SWEEP_INTERVAL,
    DEFAULT_TOUCH_FRACTION,
    AlreadyExists,
    StoreError,
    VersionConflict,
)

# The names this module had before the table moved to _sqlite_schema (bench/ imports some).
__all__ = ["FILE_CHECK_INTERVAL", "INSERT", "SCHEMA_VERSION", "SWEEP", "SQLiteStore", "record_row"]

T = TypeVar("T")

#: Rows one background sweep batch removes (see ``SQLiteStore._maybe_sweep``).
_SWEEP_BATCH = 1000

#: Inline writes between two background ``wal_checkpoint(PASSIVE)`` runs on the worker (the
#: inline connection never checkpoints). A write appends ~2 pages to the WAL (the row's and the
#: expiry index's), so this is ~1000 pages, SQLite's own default auto-checkpoint threshold.
_CHECKPOINT_EVERY = 500

_log = logging.getLogger(__name__)

#: Seconds between checks that the path still names the file this store has open.
FILE_CHECK_INTERVAL = 1.0


class SQLiteStore:
    """The SQLite backend of :class:`~mcp_sessions.stores.base.Store`.

    Opening is lazy: the first operation (or ``async with``) creates the file, its directory
    and schema on the worker thread, and reports an unusable file as :class:`StoreError`.
    """

    def __init__(
        self,
        path: str,
        *,
        url: str | None = None,
        busy_timeout: float = 5.0,
        touch_fraction: float = DEFAULT_TOUCH_FRACTION,
        inline_reads: bool = True,
        inline_writes: bool = True,
        cache_size_mb: int = 16,
        mmap_size_mb: int = 256,
        sweep_interval: float = DEFAULT_SWEEP_INTERVAL,
        synchronous: str = "normal",
        read_only: bool = False,
    ) -> None:
        if synchronous.lower() not in ("normal", "full"):
            raise StoreError(
                f"store URL {url if url is not None else path!r}: synchronous must be 'normal' "
                f"(survives a process crash) or 'full' (also a power loss), got {synchronous!r}"
            )
        self.synchronous = synchronous.upper()
        if not busy_timeout >= 0:
            raise StoreError(f"busy_timeout must be >= 0 seconds, got {busy_timeout!r}")
        if not sweep_interval >= 0:
            raise StoreError(f"sweep_interval must be >= 0 seconds, got {sweep_interval!r}")
        self.path = os.path.abspath(path)
        self.url = url if url is not None else f"sqlite:///{path}"
        self.busy_timeout = float(busy_timeout)
        self.touch_fraction = touch_fraction
        self.inline_reads = inline_reads
        # An inline commit must be cheap: with FULL each one fsyncs, so writes stay off the loop.
        self.inline_writes = bool(inline_writes) and self.synchronous == "NORMAL"
        self.checkpoint_every = _CHECKPOINT_EVERY
        self._inline_since_checkpoint = 0
        # Set while a checkpoint is queued or running: writes go to the worker meanwhile.
        self._checkpoint_pending = False
        self.checkpoints = 0  # background checkpoints run so far (for tests and curiosity)
        self._cache_size_mb = cache_size_mb
        self._mmap_size_mb = mmap_size_mb
        self.sweep_interval = float(sweep_interval)
        #: Open the existing file read-only: no creation, migration, sweep or write (issue #13).
        self.read_only = bool(read_only)
        self._last_sweep = time.monotonic()
        # One thread per store owns the writer connection; SQLite admits one writer anyway.
        self._worker = Worker(f"mcp-sessions sqlite {self.path}")
        self._conns: Connections | None = None
        self._closed = False
        #: (device, inode) of the file the connections have open, and when it was checked.
        self._identity: tuple[int, int] | None = None
        self._checked_at = time.monotonic()

    # -- plumbing ------------------------------------------------------------------------

    def _error(self, exc: sqlite3.Error) -> StoreError:
        return store_error(self.path, exc, self.busy_timeout)

    def _open_sync(self) -> Connections:
        """Open (once) on the worker thread: directory, pragmas, schema, a write probe."""
        if self._conns is not None:
            return self._conns
        if self.read_only:
            conns = open_read_only(self.path, busy_timeout=self.busy_timeout)
            self._identity = file_identity(self.path)
            self._conns = conns
            return conns
        conns = open_connections(
            self.path,
            busy_timeout=self.busy_timeout,
            synchronous=self.synchronous,
            inline_writes=self.inline_writes,
            cache_size_mb=self._cache_size_mb,
            mmap_size_mb=self._mmap_size_mb,
        )
        self._identity = file_identity(self.path)
        self._conns = conns
        return conns

    def _check_file(self) -> None:
        """Reopen if the path no longer names the file the connections have open.

        Issue #12 item 8: a file removed under a running server (a temp-file cleaner, an
        operator) is not an error to SQLite, which keeps writing to the removed inode. The
        records would vanish at the next restart, and processes that open the path meanwhile
        would use another file than this one. So at most once per FILE_CHECK_INTERVAL the
        path is checked, and if it names no file or another file, the store opens the path
        again (creating it if need be), like a restart would, and says so in the log.
        """
        now = time.monotonic()
        if now - self._checked_at < FILE_CHECK_INTERVAL:
            return
        self._checked_at = now
        conns = self._conns
        if conns is None or self._closed or file_identity(self.path) == self._identity:
            return
        _log.warning(
            "SQLite store %s: the database file was removed or replaced while open; opening "
            "the path again (what was written to the removed file since is not in the new one)",
            self.path,
        )
        self._conns = None  # the next operation opens the path, on the worker

        def close_old() -> None:
            conns.reader.close()
            conns.writer.close()

        self._worker.submit(close_old)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(writer)`` on the worker thread, opening the store first if need be."""
        self._check_open()
        self._check_file()

        def call() -> T:
            conns = self._open_sync()
            try:
                return fn(conns.writer)
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

        return await self._worker.run(call)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run the single-statement write ``fn(conn)`` inline if it can, else on the worker.

        Inline means on the caller's thread, on the connection that never waits: a busy answer
        comes at once, before anything changed (each statement is its own transaction), and
        the same ``fn`` then runs on the worker, which waits for the lock up to busy_timeout.
        """
        self._refuse_if_read_only()
        self._check_file()
        conns = self._conns
        if (
            conns is not None
            and conns.inline is not None
            and not self._checkpoint_pending
            and not self._closed
        ):
            try:
                result = fn(conns.inline)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise self._error(exc) from exc
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            else:
                self._wrote_inline()
                return result
        return await self._run(fn)

    def _wrote_inline(self) -> None:
        """Every ``checkpoint_every`` inline writes, queue a passive checkpoint on the worker.

        Nobody waits for it. PASSIVE copies what it can without waiting for readers or
        writers. Until it ends, :meth:`_write` sends writes to the worker, where they queue
        behind it: so no write of this store lands in the WAL while it is being copied, and the
        first write after it finds the WAL wholly copied and restarts it from its beginning.
        (Writes continuing inline meanwhile would keep the WAL from ever being wholly copied
        at the start of a write; it would then grow without bound under steady load.)
        """
        self._inline_since_checkpoint += 1
        if self._inline_since_checkpoint < self.checkpoint_every:
            return
        self._inline_since_checkpoint = 0
        self._checkpoint_pending = True

        def checkpoint() -> None:
            try:
                conns = self._conns
                if conns is None or self._closed:
                    return
                try:
                    conns.writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    _log.warning("%s", self._error(exc))
                    return
                self.checkpoints += 1
            finally:
                self._checkpoint_pending = False

        self._worker.submit(checkpoint)

    def _refuse_if_read_only(self) -> None:
        if self.read_only:
            raise StoreError(f"SQLite store {self.path} is open read_only: it writes nothing")

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"SQLite store {self.path} is closed")

    # -- the Store contract --------------------------------------------------------------

    async def create(self, record: Record) -> None:
        params = record_row(record)

        def insert(conn: sqlite3.Connection) -> int:
            return conn.execute(INSERT, params).rowcount

        if await self._write(insert) == 0:
            raise AlreadyExists(f"a live {record.kind} record with id {record.id!r} exists")
        self._maybe_sweep()

    def _maybe_sweep(self) -> None:
        """Queue a sweep on the worker, at most once per ``sweep_interval`` (0: never).

        Creates are what make the table grow, so they pay for keeping it small; the caller
        does not wait for it, and later operations queue behind it on the worker. Each
        batch removes at most :data:`_SWEEP_BATCH` rows and queues the next one behind
        whatever was submitted meanwhile, so the write lock is never held for long.
        """
        if not self.sweep_interval:
            return
        started = time.monotonic()
        if started - self._last_sweep < self.sweep_interval:
            return
        self._last_sweep = started

        def batch() -> None:
            conns = self._conns
            if conns is None or self._closed:
                return
            try:
                params = {"now": time.time(), "limit": _SWEEP_BATCH}
                removed = conns.writer.execute(SWEEP, params).rowcount
            except sqlite3.Error as exc:  # e.g. locked for longer than busy_timeout
                _log.warning("%s", self._error(exc))
                return
            if removed == _SWEEP_BATCH:
                self._worker.submit(batch)

        self._worker.submit(batch)

    async def get(
        self, kind: str, id: str, principal: str, *, now: float | None = None
    ) -> Record | None:
        t = clock(now)
        self._check_file()
        conns = self._conns
        rows: list[tuple[Any, ...]] | None = None
        if conns is not None and self.inline_reads and not self._closed:
            try:
                # One primary-key lookup; fetchall() ends the statement so no read
                # transaction stays open to hold back checkpoints.
                rows = conns.reader.execute(GET, (kind, id, principal)).fetchall()
            except sqlite3.OperationalError:
                rows = None  # busy for a moment (e.g. WAL recovery): let the thread wait
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
        if rows is None:
            rows = await self._run(lambda conn: conn.execute(GET, (kind, id, principal)).fetchall())
        if not rows or not row_is_live(rows[0], t):
            return None
        return row_record(rows[0])

    async def compare_and_set(
        self,
        kind: str,
        id: str,
        principal: str,
        expected_version: int,
        state: JSONObject,
        *,
        now: float | None = None,
        max_bytes: int | None = None,
    ) -> Record:
        t = clock(now)
        params = {
            "state": encode_json(state, "state", max_bytes),
            "now": t,
            "kind": kind,
            "id": id,
            "principal": principal,
            "version": expected_version,
            "fraction": self.touch_fraction,
        }

        def update(conn: sqlite3.Connection) -> tuple[bool, list[tuple[Any, ...]]]:
            # At most one of the two statements changes anything, so a busy answer to either
            # leaves nothing half done and the worker may run the whole function again.
            rows = conn.execute(CAS_STATE_ONLY, params).fetchall()
            if rows:
                return True, rows
            rows = conn.execute(CAS, params).fetchall()
            if rows:
                return True, rows
            # Lost: read what is there now so the caller can retry without another read.
            return False, conn.execute(GET, (kind, id, principal)).fetchall()

        won, rows = await self._write(update)
        if won:
            # The caller's own dict goes back: the file holds the text, so nothing the caller
            # does to it later reaches the stored state, and decoding what we just encoded
            # would be wasted.
            return row_record(rows[0], state)
        if rows:
            current = row_record(rows[0])
            if not current.is_expired(t):
                raise VersionConflict(
                    f"{kind} record {id!r} is at version {current.version}, not {expected_version}",
                    current=current,
                )
        raise not_found(kind, id)

    async def touch(
        self,
        record: Record,
        *,
        now: float | None = None,
        force: bool = False,
        idle_ttl: float | None = None,
    ) -> Record:
        t, unchanged = touch_without_write(
            record, now, force=force, idle_ttl=idle_ttl, fraction=self.touch_fraction
        )
        if unchanged is not None:
            return unchanged
        params = {
            "now": t,
            "idle_ttl": None if idle_ttl is None else float(idle_ttl),
            "kind": record.kind,
            "id": record.id,
            "principal": record.principal,
        }
        rows = await self._write(lambda conn: conn.execute(TOUCH, params).fetchall())
        if not rows:
            raise not_found(record.kind, record.id)
        return row_record(rows[0])

    async def delete(self, kind: str, id: str, principal: str) -> bool:
        rows = await self._write(
            lambda conn: conn.execute(DELETE, (kind, id, principal)).fetchall()
        )
        return bool(rows) and rows[0][0] > clock(None)

    async def scan(
        self,
        *,
        principal: str | None = None,
        kind: str | None = None,
        id: str | None = None,
        now: float | None = None,
    ) -> list[Record]:
        params = {"principal": principal, "kind": kind, "id": id, "now": clock(now)}
        rows = await self._run(lambda conn: conn.execute(SCAN, params).fetchall())
        return [row_record_lenient(row) for row in rows]

    async def list(
        self, principal: str, *, kind: str | None = None, now: float | None = None
    ) -> list[Record]:
        params = {"principal": principal, "kind": kind, "now": clock(now)}
        rows = await self._run(lambda conn: conn.execute(LIST, params).fetchall())
        return [row_record(row) for row in rows]

    async def count(
        self, principal: str, *, kind: str | None = None, now: float | None = None
    ) -> int:
        params = {"principal": principal, "kind": kind, "now": clock(now)}
        rows = await self._run(lambda conn: conn.execute(COUNT, params).fetchall())
        return int(rows[0][0])

    async def sweep(self, *, now: float | None = None, limit: int = 1000) -> int:
        self._refuse_if_read_only()
        params = {"now": clock(now), "limit": int(limit)}
        return await self._run(lambda conn: conn.execute(SWEEP, params).rowcount)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def close_all() -> None:
            conns, self._conns = self._conns, None
            if conns is not None:
                conns.reader.close()  # ``inline`` is the same connection
                conns.writer.close()

        try:
            await self._worker.run(close_all)
        finally:
            self._worker.stop()

    async def __aenter__(self) -> SQLiteStore:
        await self._run(lambda conn: None)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
