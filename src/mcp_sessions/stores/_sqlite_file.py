"""The SQLite store's file: making it (private), opening its two connections, knowing it is
still the file at its path, and saying in words what went wrong with it.

- Missing directories are made with mode 0700 and a missing database file with mode 0600
  (SQLite gives its ``-wal`` and ``-shm`` files the database's mode): session ids are bearer
  capabilities (issue #12).
- WAL journal, so readers never wait for the writer and several processes share the file;
  a filesystem without shared memory (NFS, SMB) is refused rather than used unsafely.
- ``synchronous=NORMAL`` by default: in WAL mode a committed write is in the WAL file (the OS
  page cache) before its coroutine returns, so an acknowledged write survives ``kill -9`` and
  any crash of the process; only a power loss or kernel crash can take the last writes since
  a checkpoint. ``synchronous=full`` fsyncs every commit and survives power loss too, at the
  cost of one fsync per write (0.2-4 ms here, the bulk of a write);
- ``busy_timeout`` on the worker's connection, so a process waits its turn for the write lock
  for a bounded time, then fails with a :class:`StoreError` instead of hanging; the event
  loop's connection never waits.

Which connection runs what, and on which thread, is ``stores/sqlite.py``'s business.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import urllib.parse
from dataclasses import dataclass
from typing import NoReturn

from ._sqlite_schema import check_schema, migrate
from .base import StoreError, StoreUnavailable

#: Primary result codes that mean "someone else holds the lock: try again later".
_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


@dataclass
class Connections:
    writer: sqlite3.Connection  # the worker's, waits up to busy_timeout
    reader: sqlite3.Connection  # the event loop's, never waits (read-only without inline)
    inline: sqlite3.Connection | None = None  # ``reader`` itself when writes run inline


def _make_private_file(path: str) -> None:
    """Make the directory (0700) and the database file (0600) at ``path`` if they are missing;
    refuse a path that names a directory."""
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except FileExistsError as exc:
        raise StoreError(f"SQLite store {path}: {directory} exists and is not a directory") from exc
    except OSError as exc:
        raise StoreError(
            f"SQLite store {path}: cannot create directory {directory}: {exc.strerror}"
        ) from exc
    try:
        if stat.S_ISDIR(os.stat(path).st_mode):
            raise StoreError(f"SQLite store {path}: the path is a directory, not a file")
    except FileNotFoundError:
        # Session ids are bearer capabilities: a database made here is its owner's alone
        # (0600; SQLite gives the -wal and -shm files the database's mode; issue #12).
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass  # another process made it meanwhile
        except OSError as exc:
            raise StoreError(
                f"SQLite store {path}: cannot create the file: {exc.strerror}"
            ) from exc


def _tune(conn: sqlite3.Connection, cache_size_mb: int, mmap_size_mb: int) -> None:
    conn.execute(f"PRAGMA cache_size = {-1024 * int(cache_size_mb)}")
    conn.execute(f"PRAGMA mmap_size = {1024 * 1024 * int(mmap_size_mb)}")


def open_connections(
    path: str,
    *,
    busy_timeout: float,
    synchronous: str,
    inline_writes: bool,
    cache_size_mb: int,
    mmap_size_mb: int,
) -> Connections:
    """Open the file at ``path``: directory, pragmas, schema, a write probe, two connections.

    Blocking: runs on the store's worker thread. Every failure is a :class:`StoreError`
    (a :class:`StoreUnavailable` when it may pass by itself), and nothing stays open.
    """
    _make_private_file(path)
    writer: sqlite3.Connection | None = None
    reader: sqlite3.Connection | None = None
    inline: sqlite3.Connection | None = None
    try:
        writer = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        mode = writer.execute("PRAGMA journal_mode = WAL").fetchall()[0][0]
        if str(mode).lower() != "wal":
            raise StoreError(
                f"SQLite store {path}: cannot use WAL mode (got {mode!r}); "
                "the filesystem must support shared memory (not a network filesystem)"
            )
        _tune(writer, cache_size_mb, mmap_size_mb)
        writer.execute(f"PRAGMA synchronous = {synchronous}")
        migrate(writer, path)
        # The loop's connection never waits: a busy answer sends the read or write to the
        # worker thread.
        reader = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
        _tune(reader, cache_size_mb, mmap_size_mb)
        if inline_writes:
            # Writes inline on the same connection as reads: a connection's page cache
            # is dropped whenever another connection has written, so reading on a second
            # one after every write would re-read the pages each time (~5x a cached read,
            # measured in bench_server). It never checkpoints on the loop (the worker
            # does, see SQLiteStore._wrote_inline).
            inline = reader
            inline.execute("PRAGMA wal_autocheckpoint = 0")
            inline.execute(f"PRAGMA synchronous = {synchronous}")
        else:
            reader.execute("PRAGMA query_only = ON")
    except BaseException as exc:
        _give_up(exc, path, busy_timeout, reader, writer)
    return Connections(writer, reader, inline)


def _give_up(
    exc: BaseException, path: str, busy_timeout: float, *opened: sqlite3.Connection | None
) -> NoReturn:
    """Close what an open had opened, then raise ``exc`` (a :class:`StoreError` for SQLite's
    own errors): a failed open leaves nothing open."""
    for conn in opened:
        if conn is not None:
            conn.close()
    if isinstance(exc, sqlite3.Error):
        raise store_error(path, exc, busy_timeout) from exc
    raise exc


def open_read_only(path: str, *, busy_timeout: float) -> Connections:
    """One read-only connection to an existing store file (``read_only=true``, issue #13):
    nothing is created, migrated or probed, so an operator's look changes nothing.

    Blocking: runs on the store's worker thread. A missing file, or one that is not an
    mcp-sessions store of this schema, is a :class:`StoreError` naming the path.
    """
    if not os.path.isfile(path):
        raise StoreError(
            f"SQLite store {path}: no such file (a read-only store creates nothing; is the "
            "path right?)"
        )
    conn: sqlite3.Connection | None = None
    try:
        uri = "file:" + urllib.parse.quote(path) + "?mode=ro"
        conn = sqlite3.connect(
            uri, uri=True, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA query_only = ON")
        check_schema(conn, path)
    except BaseException as exc:
        _give_up(exc, path, busy_timeout, conn)
    return Connections(conn, conn, None)


def file_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``, or ``None`` if there is none."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """``exc`` says the database (or a table) was locked, not that anything is wrong."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _BUSY_CODES
    text = str(exc).lower()
    return "locked" in text or "busy" in text


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


def store_error(path: str, exc: sqlite3.Error, busy_timeout: float) -> StoreError:
    """The :class:`StoreError` for ``exc`` met on the file at ``path``: a
    :class:`StoreUnavailable` when it may pass by itself, named and explained either way."""
    message = f"SQLite store {path}: {_explain(exc, busy_timeout)}"
    if _is_transient(exc):
        return StoreUnavailable(message)
    return StoreError(message)
