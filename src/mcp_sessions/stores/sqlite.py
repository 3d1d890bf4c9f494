"""``sqlite:///path``: the embedded default store, for one machine (DESIGN §6).

One file holds every session and handle of every process on the machine that opens it:

- WAL journal, so readers never wait for the writer and several processes share the file;
- ``synchronous=NORMAL`` by default: in WAL mode a committed write is in the WAL file (the OS
  page cache) before its coroutine returns, so an acknowledged write survives ``kill -9`` and
  any crash of the process; only a power loss or kernel crash can take the last writes since
  a checkpoint. ``synchronous=full`` fsyncs every commit and survives power loss too, at the
  cost of one fsync per write (0.2-4 ms here, the bulk of a write);
- ``busy_timeout``, so a process waits its turn for the write lock for a bounded time, then
  fails with a :class:`StoreError` instead of hanging;
- one table with the primary key ``(kind, id, principal)``: ids are per principal, so one
  principal's record never hides or blocks another's (DESIGN §2);
- an index on ``expires_at``, so a sweep costs what expired, not what is stored; and one on
  ``(principal, created_at)`` for ``list``;
- compare-and-set as ``UPDATE … WHERE version = ?``: SQLite takes the write lock for the whole
  statement, so two processes cannot both win the same version.

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

import asyncio
import contextlib
import logging
import math
import os
import queue
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio.to_thread

from ..core.records import JSONObject, Record
from ._common import (
    check_idle_ttl,
    clock,
    encode_json,
    not_found,
    touch_without_write,
)
from ._common import (
    decode_json as _decode_json,
)
from .base import (
    DEFAULT_TOUCH_FRACTION,
    AlreadyExists,
    StoreError,
    StoreUnavailable,
    VersionConflict,
)

T = TypeVar("T")

#: ``PRAGMA user_version`` of the schema below; a file from a newer release is refused, one
#: from an older release is migrated when it is opened (see ``SQLiteStore._migrate``).
#: 1: primary key ``(kind, id)`` (ids global across principals; pre-release only).
#: 2: primary key ``(kind, id, principal)`` (DESIGN §2: another principal's id looks unknown).
SCHEMA_VERSION = 2

#: Rows one background sweep batch removes (see ``SQLiteStore._maybe_sweep``).
_SWEEP_BATCH = 1000

#: Inline writes between two background ``wal_checkpoint(PASSIVE)`` runs on the worker (the
#: inline connection never checkpoints). A write appends ~2 pages to the WAL (the row's and the
#: expiry index's), so this is ~1000 pages, SQLite's own default auto-checkpoint threshold.
_CHECKPOINT_EVERY = 500

#: Primary result codes that mean "someone else holds the lock: try again later".
_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)

_log = logging.getLogger(__name__)

#: Seconds between checks that the path still names the file this store has open.
FILE_CHECK_INTERVAL = 1.0

#: ``max_expires_at`` is NULL when there is no absolute cap; SQL compares against this instead.
_NO_CAP = 1e308

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mcps_records (
    kind            TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    principal       TEXT    NOT NULL,
    origin          TEXT    NOT NULL,
    created_at      REAL    NOT NULL,
    last_seen       REAL    NOT NULL,
    idle_ttl        REAL    NOT NULL,
    max_expires_at  REAL,              -- NULL: no absolute cap
    expires_at      REAL    NOT NULL,  -- min(last_seen + idle_ttl, max_expires_at)
    version         INTEGER NOT NULL,
    state           TEXT    NOT NULL,
    attributes      TEXT    NOT NULL,
    -- one principal's record never hides or blocks another's with the same id (DESIGN §2)
    PRIMARY KEY (kind, id, principal)
);
-- sweep: the expired rows are a prefix of this index (DESIGN §6, cost grows with what expired)
CREATE INDEX IF NOT EXISTS mcps_records_expiry ON mcps_records (expires_at);
-- list: one principal's rows, oldest first
CREATE INDEX IF NOT EXISTS mcps_records_principal ON mcps_records (principal, created_at);
CREATE TABLE IF NOT EXISTS mcps_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_COLUMNS = (
    "kind, id, principal, origin, created_at, last_seen, idle_ttl, max_expires_at, "
    "version, state, attributes"
)

# Upgrading a version-1 file: the same columns under the old primary key ``(kind, id)``, which
# was unique, so every row stays unique under ``(kind, id, principal)`` and moves over as is.
# The old indexes go first, or ``CREATE INDEX IF NOT EXISTS`` would find them on the renamed
# table and skip the new ones.
_FROM_V1_BEFORE = """
DROP INDEX IF EXISTS mcps_records_expiry;
DROP INDEX IF EXISTS mcps_records_principal;
ALTER TABLE mcps_records RENAME TO mcps_records_v1
"""
_FROM_V1_AFTER = f"""
INSERT INTO mcps_records ({_COLUMNS}, expires_at)
    SELECT {_COLUMNS}, expires_at FROM mcps_records_v1;
DROP TABLE mcps_records_v1
"""

_GET = f"SELECT {_COLUMNS} FROM mcps_records WHERE kind = ? AND id = ? AND principal = ?"

#: Insert, or replace a row that has expired; a live row makes this change nothing.
INSERT = f"""
INSERT INTO mcps_records ({_COLUMNS}, expires_at)
VALUES (:kind, :id, :principal, :origin, :created_at, :last_seen, :idle_ttl, :max_expires_at,
        :version, :state, :attributes, :expires_at)
ON CONFLICT (kind, id, principal) DO UPDATE SET
    origin = excluded.origin,
    created_at = excluded.created_at, last_seen = excluded.last_seen,
    idle_ttl = excluded.idle_ttl, max_expires_at = excluded.max_expires_at,
    version = excluded.version, state = excluded.state, attributes = excluded.attributes,
    expires_at = excluded.expires_at
WHERE mcps_records.expires_at <= :now
"""

# SQLite evaluates every SET expression against the row as it was, so ``last_seen`` on the
# right-hand side is the old value throughout.
_CAS = f"""
UPDATE mcps_records SET
    state = :state,
    version = version + 1,
    last_seen = MAX(last_seen, :now),
    expires_at = MIN(MAX(last_seen, :now) + idle_ttl, COALESCE(max_expires_at, {_NO_CAP}))
WHERE kind = :kind AND id = :id AND principal = :principal
  AND version = :version AND expires_at > :now
RETURNING {_COLUMNS}
"""

# The common case: ``last_seen`` lags by no more than ``touch_fraction`` of the idle TTL, so
# the write leaves it and ``expires_at`` alone, like a touch would. Not setting an indexed
# column spares the expiry index its delete and insert: this costs about half of _CAS.
_CAS_STATE_ONLY = f"""
UPDATE mcps_records SET state = :state, version = version + 1
WHERE kind = :kind AND id = :id AND principal = :principal
  AND version = :version AND expires_at > :now AND :now - last_seen <= :fraction * idle_ttl
RETURNING {_COLUMNS}
"""

_TOUCH = f"""
UPDATE mcps_records SET
    last_seen = MAX(last_seen, :now),
    idle_ttl = COALESCE(:idle_ttl, idle_ttl),
    expires_at = MIN(MAX(last_seen, :now) + COALESCE(:idle_ttl, idle_ttl),
                     COALESCE(max_expires_at, {_NO_CAP}))
WHERE kind = :kind AND id = :id AND principal = :principal AND expires_at > :now
RETURNING {_COLUMNS}
"""

_DELETE = (
    "DELETE FROM mcps_records WHERE kind = ? AND id = ? AND principal = ? RETURNING expires_at"
)

_LIST = f"""
SELECT {_COLUMNS} FROM mcps_records
WHERE principal = :principal AND expires_at > :now AND (:kind IS NULL OR kind = :kind)
ORDER BY created_at, kind, id
"""

_COUNT = """
SELECT COUNT(*) FROM mcps_records
WHERE principal = :principal AND expires_at > :now AND (:kind IS NULL OR kind = :kind)
"""

#: The subquery walks the expiry index from its start and stops after ``limit`` rows.
SWEEP = """
DELETE FROM mcps_records WHERE rowid IN (
    SELECT rowid FROM mcps_records WHERE expires_at <= :now ORDER BY expires_at LIMIT :limit
)
"""


def _script(conn: sqlite3.Connection, sql: str) -> None:
    """Run ``;``-separated statements inside the caller's transaction (``executescript``
    would commit it first)."""
    for statement in sql.split(";"):
        if statement.strip():
            conn.execute(statement)


def _record(row: tuple[Any, ...], state: JSONObject | None = None) -> Record:
    """The record of a row; ``state`` given, it stands for the row's (already decoded)."""
    kind, id, principal, origin, created_at, last_seen, idle_ttl, cap, version, text, attrs = row
    return Record(
        kind,
        id,
        principal,
        origin,
        # REAL columns hand back whole numbers as int (SQLite stores them compactly).
        float(created_at),
        float(last_seen),
        float(idle_ttl),
        math.inf if cap is None else float(cap),
        version,
        _decode_json(text) if state is None else state,
        _decode_json(attrs),
    )


def record_row(record: Record) -> dict[str, Any]:
    """The named parameters of :data:`INSERT` for ``record`` (also used by ``bench/``)."""
    check_idle_ttl(record.idle_ttl)
    return {
        "kind": record.kind,
        "id": record.id,
        "principal": record.principal,
        "origin": record.origin,
        "created_at": record.created_at,
        "last_seen": record.last_seen,
        "idle_ttl": record.idle_ttl,
        "max_expires_at": None if math.isinf(record.max_expires_at) else record.max_expires_at,
        "version": record.version,
        "state": encode_json(record.state, "state"),
        "attributes": encode_json(record.attributes, "attributes"),
        "expires_at": record.expires_at,
        "now": record.last_seen,
    }


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """``exc`` says the database (or a table) was locked, not that anything is wrong."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _BUSY_CODES
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``, or ``None`` if there is none."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _is_transient(exc: sqlite3.Error) -> bool:
    """A problem that may pass without anyone touching the data (issue #12 item 8): a lock
    held too long, a file made read-only or unreachable, a full disk, an I/O error. A corrupt
    file is not: it stays a plain :class:`StoreError`."""
    lowered = str(exc).lower()
    if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        return False
    return isinstance(exc, sqlite3.OperationalError)


def _explain(exc: sqlite3.Error, busy_timeout: float) -> str:
    """Say what is wrong with the file in words an operator can act on."""
    text = str(exc)
    lowered = text.lower()
    if "readonly" in lowered or "read-only" in lowered:
        problem = (
            "the database is read-only; the store needs write access to the file and its "
            "directory (for the -wal and -shm files)"
        )
    elif "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        problem = "the file is not a valid SQLite database or is corrupt"
    elif "locked" in lowered or "busy" in lowered:
        problem = (
            f"the database stayed locked by another connection for longer than "
            f"busy_timeout={busy_timeout:g}s"
        )
    elif "unable to open" in lowered:
        problem = "cannot open the file (missing directory or no permission)"
    elif "disk" in lowered and "full" in lowered:
        problem = "the disk is full"
    else:
        problem = "SQLite failed"
    return f"{problem} (sqlite3: {text})"


class _Worker:
    """One thread that owns the writer connection and runs jobs in the order submitted.

    Started on first use and stopped by :meth:`stop`; a daemon, so a store that is never
    closed does not keep the interpreter alive (its acknowledged writes are already on disk).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                self._thread.start()
        self._jobs.put(job)

    def stop(self) -> None:
        self._jobs.put(None)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the worker thread, awaited without blocking the event loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # another anyio backend (trio): wait in a helper thread
            return await anyio.to_thread.run_sync(self._run_blocking, fn)
        future: asyncio.Future[T] = loop.create_future()

        def job() -> None:
            try:
                outcome: tuple[bool, Any] = (True, fn())
            except BaseException as exc:
                outcome = (False, exc)
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
                loop.call_soon_threadsafe(_settle, future, outcome)

        self.submit(job)
        return await future

    def _run_blocking(self, fn: Callable[[], T]) -> T:
        done = threading.Event()
        box: list[tuple[bool, Any]] = []

        def job() -> None:
            try:
                box.append((True, fn()))
            except BaseException as exc:
                box.append((False, exc))
            done.set()

        self.submit(job)
        done.wait()
        ok, value = box[0]
        if ok:
            return value  # type: ignore[no-any-return]
        raise value


def _settle(future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if future.done():  # the caller was cancelled; the statement ran or failed regardless
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


@dataclass
class _Connections:
    writer: sqlite3.Connection  # the worker's, waits up to busy_timeout
    reader: sqlite3.Connection  # the event loop's, never waits (read-only without inline)
    inline: sqlite3.Connection | None = None  # ``reader`` itself when writes run inline


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
        sweep_interval: float = 60.0,
        synchronous: str = "normal",
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
        self._last_sweep = time.monotonic()
        # One thread per store owns the writer connection; SQLite admits one writer anyway.
        self._worker = _Worker(f"mcp-sessions sqlite {self.path}")
        self._conns: _Connections | None = None
        self._closed = False
        #: (device, inode) of the file the connections have open, and when it was checked.
        self._identity: tuple[int, int] | None = None
        self._checked_at = time.monotonic()

    # -- plumbing ------------------------------------------------------------------------

    def _error(self, exc: sqlite3.Error) -> StoreError:
        message = f"SQLite store {self.path}: {_explain(exc, self.busy_timeout)}"
        if _is_transient(exc):
            return StoreUnavailable(message)
        return StoreError(message)

    def _open_sync(self) -> _Connections:
        """Open (once) on the worker thread: directory, pragmas, schema, a write probe."""
        if self._conns is not None:
            return self._conns
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except FileExistsError as exc:
            raise StoreError(
                f"SQLite store {self.path}: {directory} exists and is not a directory"
            ) from exc
        except OSError as exc:
            raise StoreError(
                f"SQLite store {self.path}: cannot create directory {directory}: {exc.strerror}"
            ) from exc
        try:
            if stat.S_ISDIR(os.stat(self.path).st_mode):
                raise StoreError(f"SQLite store {self.path}: the path is a directory, not a file")
        except FileNotFoundError:
            # Session ids are bearer capabilities: a database made here is its owner's alone
            # (0600; SQLite gives the -wal and -shm files the database's mode; issue #12).
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass  # another process made it meanwhile
            except OSError as exc:
                raise StoreError(
                    f"SQLite store {self.path}: cannot create the file: {exc.strerror}"
                ) from exc
        writer: sqlite3.Connection | None = None
        reader: sqlite3.Connection | None = None
        inline: sqlite3.Connection | None = None
        try:
            writer = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            mode = writer.execute("PRAGMA journal_mode = WAL").fetchall()[0][0]
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"SQLite store {self.path}: cannot use WAL mode (got {mode!r}); "
                    "the filesystem must support shared memory (not a network filesystem)"
                )
            self._tune(writer)
            writer.execute(f"PRAGMA synchronous = {self.synchronous}")
            self._migrate(writer)
            # The loop's connection never waits: a busy answer sends the read or write to the
            # worker thread.
            reader = sqlite3.connect(
                self.path, timeout=0, isolation_level=None, check_same_thread=False
            )
            self._tune(reader)
            if self.inline_writes:
                # Writes inline on the same connection as reads: a connection's page cache
                # is dropped whenever another connection has written, so reading on a second
                # one after every write would re-read the pages each time (~5x a cached read,
                # measured in bench_server). It never checkpoints on the loop (the worker
                # does, see _wrote_inline).
                inline = reader
                inline.execute("PRAGMA wal_autocheckpoint = 0")
                inline.execute(f"PRAGMA synchronous = {self.synchronous}")
            else:
                reader.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            for conn in (reader, writer):
                if conn is not None:
                    conn.close()
            raise self._error(exc) from exc
        except BaseException:
            for conn in (reader, writer):
                if conn is not None:
                    conn.close()
            raise
        self._identity = _identity(self.path)
        self._conns = _Connections(writer, reader, inline)
        return self._conns

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
        if conns is None or self._closed or _identity(self.path) == self._identity:
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

    def _tune(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA cache_size = {-1024 * int(self._cache_size_mb)}")
        conn.execute(f"PRAGMA mmap_size = {1024 * 1024 * int(self._mmap_size_mb)}")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Create or check the schema, and prove the file is writable.

        The probe is a real write on every open: a read-only file opens, reads and even takes
        ``BEGIN IMMEDIATE`` without complaint, and would otherwise fail only at the first
        ``create`` of a running server.
        """
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchall()[0][0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"SQLite store {self.path}: schema version {version} was written by a newer "
                    f"mcp-sessions (this one knows {SCHEMA_VERSION})"
                )
            if version < SCHEMA_VERSION:
                # 0 is a new file; 1 a pre-release file keyed by (kind, id), upgraded in
                # this same transaction so no process ever sees it half done.
                upgrade = version == 1
                if upgrade:
                    _log.info(
                        "SQLite store %s: upgrading schema 1 to %d", self.path, SCHEMA_VERSION
                    )
                    _script(conn, _FROM_V1_BEFORE)
                _script(conn, _SCHEMA)
                if upgrade:
                    _script(conn, _FROM_V1_AFTER)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute(
                "INSERT INTO mcps_meta (key, value) VALUES ('opened_at', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (repr(time.time()),),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

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
                if not _is_busy(exc):
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
                rows = conns.reader.execute(_GET, (kind, id, principal)).fetchall()
            except sqlite3.OperationalError:
                rows = None  # busy for a moment (e.g. WAL recovery): let the thread wait
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
        if rows is None:
            rows = await self._run(
                lambda conn: conn.execute(_GET, (kind, id, principal)).fetchall()
            )
        if not rows:
            return None
        row = rows[0]
        cap = row[7]
        expiry = row[5] + row[6] if cap is None else min(row[5] + row[6], cap)
        if t >= expiry:
            return None
        return _record(row)

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
            rows = conn.execute(_CAS_STATE_ONLY, params).fetchall()
            if rows:
                return True, rows
            rows = conn.execute(_CAS, params).fetchall()
            if rows:
                return True, rows
            # Lost: read what is there now so the caller can retry without another read.
            return False, conn.execute(_GET, (kind, id, principal)).fetchall()

        won, rows = await self._write(update)
        if won:
            # The caller's own dict goes back: the file holds the text, so nothing the caller
            # does to it later reaches the stored state, and decoding what we just encoded
            # would be wasted.
            return _record(rows[0], state)
        if rows:
            current = _record(rows[0])
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
        rows = await self._write(lambda conn: conn.execute(_TOUCH, params).fetchall())
        if not rows:
            raise not_found(record.kind, record.id)
        return _record(rows[0])

    async def delete(self, kind: str, id: str, principal: str) -> bool:
        rows = await self._write(
            lambda conn: conn.execute(_DELETE, (kind, id, principal)).fetchall()
        )
        return bool(rows) and rows[0][0] > clock(None)

    async def list(
        self, principal: str, *, kind: str | None = None, now: float | None = None
    ) -> list[Record]:
        params = {"principal": principal, "kind": kind, "now": clock(now)}
        rows = await self._run(lambda conn: conn.execute(_LIST, params).fetchall())
        return [_record(row) for row in rows]

    async def count(
        self, principal: str, *, kind: str | None = None, now: float | None = None
    ) -> int:
        params = {"principal": principal, "kind": kind, "now": clock(now)}
        rows = await self._run(lambda conn: conn.execute(_COUNT, params).fetchall())
        return int(rows[0][0])

    async def sweep(self, *, now: float | None = None, limit: int = 1000) -> int:
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
