"""The SQLite event log: table ``mcps_events`` in the session store's file (issue #15 item 3).

Every process on the machine that opens the file sees every event, so any of them resumes a
stream another one served. Positions are the table's row ids (increasing). Its own
connection, on a worker thread (``anyio.to_thread``) under a lock, so the store's connections
and their tuning stay the store's. Waiting for a new event polls every ``POLL`` seconds:
SQLite cannot notify another process.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import anyio

from ._events_common import EventId, Replay, stream_token
from ._sqlite_file import store_error

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
        self._appends = 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.executescript(_SCHEMA)
            self._conn = conn
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
        sweep = self._appends % 100 == 1  # expired streams go, a little at a time

        def write(conn: sqlite3.Connection) -> int:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                cursor = conn.execute(
                    "INSERT INTO mcps_events (stream, name, data, expires_at) VALUES (?,?,?,?)",
                    (key, stream, data, now + self.ttl),
                )
                position = int(cursor.lastrowid or 0)
                # The stream's TTL starts again with each event, like a Redis key's.
                conn.execute(
                    "UPDATE mcps_events SET expires_at = ? WHERE stream = ?",
                    (now + self.ttl, key),
                )
                conn.execute(
                    "DELETE FROM mcps_events WHERE stream = ? AND position <= ?",
                    (key, position - self.max_events),
                )
                if sweep:
                    conn.execute(
                        "DELETE FROM mcps_events WHERE rowid IN (SELECT rowid FROM "
                        "mcps_events WHERE expires_at < ? LIMIT 1000)",
                        (now,),
                    )
            return position

        position = await self._run(write)
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
                "SELECT name FROM mcps_events WHERE stream = ? AND expires_at > ? LIMIT 1",
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
        def shut() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await anyio.to_thread.run_sync(shut)
