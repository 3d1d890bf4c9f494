"""The SQLite store's table: its schema and migrations, the statements run on it, and the
mapping between a row and a :class:`~mcp_sessions.core.records.Record`.

Nothing here opens a file or decides on which thread a statement runs (that is
``stores/sqlite.py``); :func:`migrate` only runs on a connection it is given.

- one table with the primary key ``(kind, id, principal)``: ids are per principal, so one
  principal's record never hides or blocks another's (DESIGN §2);
- an index on ``expires_at``, so a sweep costs what expired, not what is stored; and one on
  ``(principal, created_at)`` for ``list``;
- compare-and-set as ``UPDATE … WHERE version = ?``: SQLite takes the write lock for the whole
  statement, so two processes cannot both win the same version.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from typing import Any

from ..core.records import JSONObject, Record
from ._common import check_idle_ttl, decode_lenient, encode_json
from ._common import decode_json as _decode_json
from .base import StoreError

#: ``PRAGMA user_version`` of the schema below; a file from a newer release is refused, one
#: from an older release is migrated when it is opened (see :func:`migrate`).
#: 1: primary key ``(kind, id)`` (ids global across principals; pre-release only).
#: 2: primary key ``(kind, id, principal)`` (DESIGN §2: another principal's id looks unknown).
SCHEMA_VERSION = 2

# The SQLite store logs under one name, whichever of its modules speaks.
_log = logging.getLogger("mcp_sessions.stores.sqlite")

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

GET = f"SELECT {_COLUMNS} FROM mcps_records WHERE kind = ? AND id = ? AND principal = ?"

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
CAS = f"""
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
# column spares the expiry index its delete and insert: this costs about half of CAS.
CAS_STATE_ONLY = f"""
UPDATE mcps_records SET state = :state, version = version + 1
WHERE kind = :kind AND id = :id AND principal = :principal
  AND version = :version AND expires_at > :now AND :now - last_seen <= :fraction * idle_ttl
RETURNING {_COLUMNS}
"""

TOUCH = f"""
UPDATE mcps_records SET
    last_seen = MAX(last_seen, :now),
    idle_ttl = COALESCE(:idle_ttl, idle_ttl),
    expires_at = MIN(MAX(last_seen, :now) + COALESCE(:idle_ttl, idle_ttl),
                     COALESCE(max_expires_at, {_NO_CAP}))
WHERE kind = :kind AND id = :id AND principal = :principal AND expires_at > :now
RETURNING {_COLUMNS}
"""

DELETE = "DELETE FROM mcps_records WHERE kind = ? AND id = ? AND principal = ? RETURNING expires_at"

LIST = f"""
SELECT {_COLUMNS} FROM mcps_records
WHERE principal = :principal AND expires_at > :now AND (:kind IS NULL OR kind = :kind)
ORDER BY created_at, kind, id
"""

COUNT = """
SELECT COUNT(*) FROM mcps_records
WHERE principal = :principal AND expires_at > :now AND (:kind IS NULL OR kind = :kind)
"""

#: Every live row, for operators (``Store.scan``): a full scan unless ``principal`` is given.
SCAN = f"""
SELECT {_COLUMNS} FROM mcps_records
WHERE expires_at > :now AND (:principal IS NULL OR principal = :principal)
  AND (:kind IS NULL OR kind = :kind) AND (:id IS NULL OR id = :id)
ORDER BY created_at, kind, id, principal
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


def migrate(conn: sqlite3.Connection, path: str) -> None:
    """Create or check the schema of the file ``conn`` has open at ``path``, and prove the
    file is writable.

    The probe is a real write on every open: a read-only file opens, reads and even takes
    ``BEGIN IMMEDIATE`` without complaint, and would otherwise fail only at the first
    ``create`` of a running server. Raises :class:`StoreError` for a file written by a newer
    release; SQLite's own errors pass through as ``sqlite3.Error`` for the caller to explain.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchall()[0][0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"SQLite store {path}: schema version {version} was written by a newer "
                f"mcp-sessions (this one knows {SCHEMA_VERSION})"
            )
        if version < SCHEMA_VERSION:
            # 0 is a new file; 1 a pre-release file keyed by (kind, id), upgraded in
            # this same transaction so no process ever sees it half done.
            upgrade = version == 1
            if upgrade:
                _log.info("SQLite store %s: upgrading schema 1 to %d", path, SCHEMA_VERSION)
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


def check_schema(conn: sqlite3.Connection, path: str) -> None:
    """Refuse, without writing, a file that is not a store of :data:`SCHEMA_VERSION` (the
    read-only open: an older file is upgraded only by a store that may write)."""
    version = conn.execute("PRAGMA user_version").fetchall()[0][0]
    if version == SCHEMA_VERSION:
        return
    if version == 0:
        problem = "holds no mcp-sessions store (no schema)"
    elif version > SCHEMA_VERSION:
        problem = f"has schema version {version}, written by a newer mcp-sessions"
    else:
        problem = (
            f"has schema version {version}; open it once read-write (e.g. with a server) to "
            f"upgrade it to {SCHEMA_VERSION}"
        )
    raise StoreError(f"SQLite store {path}: the file {problem}")


def row_record(row: tuple[Any, ...], state: JSONObject | None = None) -> Record:
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


def row_record_lenient(row: tuple[Any, ...]) -> Record:
    """:func:`row_record`, but a state or attributes that do not decode to a JSON object come
    back as :func:`~mcp_sessions.stores._common.opaque_state` (``scan`` shows, never fails)."""
    record = row_record((*row[:10], "{}"), decode_lenient(row[9]))
    return record._replace(attributes=decode_lenient(row[10]))


def row_is_live(row: tuple[Any, ...], now: float) -> bool:
    """Whether the record of a :data:`GET` row is still live at ``now`` (no decoding)."""
    idle_expiry: float = row[5] + row[6]  # last_seen + idle_ttl
    cap: float | None = row[7]
    return now < (idle_expiry if cap is None else min(idle_expiry, cap))


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
