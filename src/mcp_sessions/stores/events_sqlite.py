"""The SQLite event log: table ``mcps_events`` in the session store's file (issue #15 item 3).

Every process on the machine that opens the file sees every event, so any of them resumes a
stream another one served. Positions are the table's row ids (increasing). Each event is
kept ``ttl`` seconds after it was written (a Redis stream is kept whole until ``ttl`` after
its last event); a stream whose newest event expired is unknown.

Its own connections, so the store's and their tuning stay the store's: writes run on the
event loop on a connection that never waits (as the store's inline writes do), and on a
worker thread (``anyio.to_thread``) when the write lock is taken, for every hundredth write
(which also removes expired events and lets SQLite checkpoint), and for reads. Waiting for
a new event polls every ``POLL`` seconds: SQLite cannot notify another process.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import anyio

from ._events_common import EventId, Replay, stream_token
from ._sqlite_file import is_busy, store_error

T = TypeVar("T")

#: Seconds between two looks for a new event while a resumed stream waits.
POLL = 0.1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mcps_events (
  position INTEGER PRIMARY KEY AUTOINCREMENT,
  stream TEXT NOT NULL,       -- '<session>.<token>'
  name TEXT NOT NULL,         -- the SDK's stream name
  data TEXT,                  -- JSON-RPC message, NULL for a priming event
  expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS mcps_events_stream ON mcps_events (stream, position);
CREATE INDEX IF NOT EXISTS mcps_events_expiry ON mcps_events (expires_at);
"""


class SQLiteEventLog:
    def __init__(
        self,
        path: str,
        *,
        busy_timeout: float,
        max_events: int,
        max_event_bytes: int,
        ttl: float,
    ) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.max_events = max_events
        self.max_event_bytes = max_event_bytes
        self.ttl = ttl
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        #: The event loop's connection: never waits for a lock, never checkpoints.
        self._inline: sqlite3.Connection | None = None
        self._appends = 0

    def _open(self, timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        # As the store's own connections: a commit is in the WAL, not fsynced (it survives a
        # crash of the process; stores.md, "Durability").
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        return conn

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open(self.busy_timeout)
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            with self._lock:
                try:
                    return fn(self._connection())
                except sqlite3.Error as exc:
                    raise store_error(self.path, exc, self.busy_timeout) from None

        return await anyio.to_thread.run_sync(call)

    async def append(self, session: str, stream: str, data: str | None) -> str:
        token = stream_token(stream)
        key = f"{session}.{token}"
        now = time.time()
        self._appends += 1
        sweep = self._appends % 100 == 1  # expired events go, a little at a time

        def write(conn: sqlite3.Connection) -> int:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                cursor = conn.execute(
                    "INSERT INTO mcps_events (stream, name, data, expires_at) VALUES (?,?,?,?)",
                    (key, stream, data, now + self.ttl),
                )
                position = int(cursor.lastrowid or 0)
                # The stream's oldest events beyond max_events (positions are shared by all
                # streams, so the cut is found by counting, on the (stream, position) index).
                conn.execute(
                    "DELETE FROM mcps_events WHERE stream = ?1 AND position <= (SELECT "
                    "position FROM mcps_events WHERE stream = ?1 ORDER BY position DESC "
                    "LIMIT 1 OFFSET ?2)",
                    (key, self.max_events),
                )
                if sweep:
                    conn.execute(
                        "DELETE FROM mcps_events WHERE rowid IN (SELECT rowid FROM "
                        "mcps_events WHERE expires_at < ? LIMIT 1000)",
                        (now,),
                    )
            return position

        # Inline first, as the store writes (one short transaction costs less than a hop to
        # a thread, which tripled a legacy call's time here); if another connection holds the
        # write lock, SQLite says so at once and the write waits its turn on a thread.
        if not sweep:
            try:
                if self._inline is None:
                    self._inline = self._open(0)
                    self._inline.execute("PRAGMA wal_autocheckpoint=0")
                return f"{key}.{write(self._inline)}"
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise store_error(self.path, exc, self.busy_timeout) from None
            except sqlite3.Error as exc:
                raise store_error(self.path, exc, self.busy_timeout) from None
        position = await self._run(write)  # checkpoints as SQLite does by default
        return f"{key}.{position}"

    async def after(self, event: EventId, *, wait: float = 0.0) -> Replay | None:
        key = f"{event.session}.{event.token}"
        if not event.position.isdigit():
            return None  # another log's id
        since = int(event.position)
        deadline = time.monotonic() + wait

        def read(conn: sqlite3.Connection) -> tuple[str | None, list[tuple[int, str | None]]]:
            now = time.time()
            name = conn.execute(
                "SELECT name FROM mcps_events WHERE stream = ? AND expires_at > ? "
                "ORDER BY position DESC LIMIT 1",
                (key, now),
            ).fetchone()
            rows = conn.execute(
                "SELECT position, data FROM mcps_events WHERE stream = ? AND position > ? "
                "AND expires_at > ? ORDER BY position LIMIT ?",
                (key, since, now, self.max_events),
            ).fetchall()
            return (None if name is None else str(name[0])), rows

        while True:
            name, rows = await self._run(read)
            if name is None:
                return None
            if rows or time.monotonic() >= deadline:
                return Replay(name, [(f"{key}.{position}", data) for position, data in rows])
            await anyio.sleep(POLL)

    async def close(self) -> None:
        if self._inline is not None:
            self._inline.close()
            self._inline = None

        def shut() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await anyio.to_thread.run_sync(shut)
