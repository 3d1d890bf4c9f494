"""``memory://``: records in a dict, for tests and single-process servers (DESIGN §6).

Nothing survives the process. Every method runs to completion without awaiting, so on one
event loop each operation is atomic and compare-and-set needs no lock. The store belongs to
one event loop; share it between threads only through that loop.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass
from typing import Any

from ..core.records import JSONObject, Record
from ._common import (
    clock,
    decode_json,
    encode_json,
    not_found,
    scan_matches,
    scan_order,
    touch_needs_write,
    touch_without_write,
)
from .base import (
    DEFAULT_SWEEP_INTERVAL,
    DEFAULT_TOUCH_FRACTION,
    AlreadyExists,
    StoreError,
    VersionConflict,
)

#: ``(kind, id, principal)``: two principals may hold one id independently (DESIGN §2).
Key = tuple[str, str, str]


@dataclass(slots=True)  # not frozen: never changed, and built on every write
class _Stored:
    """A record as kept: ``state`` and ``attributes`` as JSON text, like the other backends.

    Storing text rather than the caller's dicts means a caller mutating a returned state can
    never change the stored one, and non-JSON values fail here exactly as they would in SQLite
    or Redis.
    """

    record: Record  # with empty state / attributes
    state: str
    attributes: str

    def load(self) -> Record:
        return self.record.with_documents(decode_json(self.state), decode_json(self.attributes))


class MemoryStore:
    """The in-process backend of :class:`~mcp_sessions.stores.base.Store`."""

    def __init__(
        self,
        url: str = "memory://",
        *,
        touch_fraction: float = DEFAULT_TOUCH_FRACTION,
        sweep_interval: float = DEFAULT_SWEEP_INTERVAL,
    ) -> None:
        if not sweep_interval >= 0:
            raise StoreError(f"sweep_interval must be >= 0 seconds, got {sweep_interval!r}")
        self.url = url
        self.touch_fraction = touch_fraction
        #: Seconds between the sweeps ``create`` runs by itself (0: only explicit sweeps).
        self.sweep_interval = float(sweep_interval)
        self._last_sweep = time.monotonic()
        self._records: dict[Key, _Stored] = {}
        # principal -> keys, in insertion order; ``list`` reads only its own principal's keys.
        self._by_principal: dict[str, dict[Key, None]] = {}
        # (expires_at, seq, key), one entry per write that set an expiry. Entries go stale
        # when a record is touched or removed; ``sweep`` skips those, so a sweep costs
        # O(expired · log n) instead of a scan of every record (issue #3).
        self._expiry: list[tuple[float, int, Key]] = []
        self._seq = 0
        self._closed = False

    # -- helpers -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"store {self.url} is closed")

    def _live(self, kind: str, id: str, principal: str, now: float) -> _Stored | None:
        stored = self._records.get((kind, id, principal))
        if stored is None or stored.record.is_expired(now):
            return None
        return stored

    def _put(self, stored: _Stored) -> None:
        record = stored.record
        key = (record.kind, record.id, record.principal)
        self._records[key] = stored
        self._by_principal.setdefault(record.principal, {})[key] = None
        self._seq += 1
        heapq.heappush(self._expiry, (record.expires_at, self._seq, key))
        if len(self._expiry) > 2 * len(self._records) + 64:
            self._compact_expiry()

    def _remove(self, key: Key) -> None:
        stored = self._records.pop(key)
        keys = self._by_principal.get(stored.record.principal)
        if keys is not None:
            keys.pop(key, None)
            if not keys:
                del self._by_principal[stored.record.principal]

    def _compact_expiry(self) -> None:
        """Drop stale heap entries once they outnumber the records (amortised O(1) a write)."""
        self._expiry = [(stored.record.expires_at, 0, key) for key, stored in self._records.items()]
        heapq.heapify(self._expiry)

    # -- the Store contract --------------------------------------------------------------

    async def create(self, record: Record) -> None:
        self._check_open()
        # ``create`` has no ``now``: the record's own ``last_seen`` is the moment it claims to
        # be created at, and decides whether an existing record has expired.
        key = (record.kind, record.id, record.principal)
        existing = self._records.get(key)
        if existing is not None and not existing.record.is_expired(record.last_seen):
            raise AlreadyExists(f"a live {record.kind} record with id {record.id!r} exists")
        stored = _Stored(
            record.with_documents({}, {}),
            encode_json(record.state, "state"),
            encode_json(record.attributes, "attributes"),
        )
        if existing is not None:
            self._remove(key)
        self._put(stored)
        if self.sweep_interval and time.monotonic() - self._last_sweep >= self.sweep_interval:
            # Creates make the store grow, so they keep it small; the heap makes this cheap.
            self._last_sweep = time.monotonic()
            await self.sweep(limit=len(self._records))

    async def get(
        self, kind: str, id: str, principal: str, *, now: float | None = None
    ) -> Record | None:
        self._check_open()
        stored = self._live(kind, id, principal, clock(now))
        return None if stored is None else stored.load()

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
        self._check_open()
        t = clock(now)
        stored = self._live(kind, id, principal, t)
        if stored is None:
            raise not_found(kind, id)
        if stored.record.version != expected_version:
            raise VersionConflict(
                f"{kind} record {id!r} is at version {stored.record.version}, "
                f"not {expected_version}",
                current=stored.load(),
            )
        text = encode_json(state, "state", max_bytes)
        current = stored.record
        if touch_needs_write(current, t, force=False, idle_ttl=None, fraction=self.touch_fraction):
            updated = current.with_state({}, t)
            self._put(_Stored(updated, text, stored.attributes))
        else:
            # last_seen stays, as a touch would leave it: the expiry heap needs no new entry.
            updated = current._replace(version=current.version + 1)
            self._records[(kind, id, principal)] = _Stored(updated, text, stored.attributes)
        # The caller's own dict goes back in the result: the store keeps only the text, so
        # nothing the caller does to it later can reach the stored state.
        return updated.with_documents(state, decode_json(stored.attributes))

    async def touch(
        self,
        record: Record,
        *,
        now: float | None = None,
        force: bool = False,
        idle_ttl: float | None = None,
    ) -> Record:
        self._check_open()
        t, unchanged = touch_without_write(
            record, now, force=force, idle_ttl=idle_ttl, fraction=self.touch_fraction
        )
        if unchanged is not None:
            return unchanged
        stored = self._live(record.kind, record.id, record.principal, t)
        if stored is None:
            raise not_found(record.kind, record.id)
        current = stored.record
        touched = current._replace(
            last_seen=max(current.last_seen, t),
            idle_ttl=current.idle_ttl if idle_ttl is None else float(idle_ttl),
        )
        stored = _Stored(touched, stored.state, stored.attributes)
        self._put(stored)
        return stored.load()

    async def delete(self, kind: str, id: str, principal: str) -> bool:
        self._check_open()
        stored = self._records.get((kind, id, principal))
        if stored is None:
            return False
        self._remove((kind, id, principal))
        return not stored.record.is_expired(clock(None))

    async def scan(
        self,
        *,
        principal: str | None = None,
        kind: str | None = None,
        id: str | None = None,
        now: float | None = None,
    ) -> list[Record]:
        self._check_open()
        t = clock(now)
        found = [
            stored.load()
            for stored in self._records.values()
            if scan_matches(stored.record, principal, kind, id) and not stored.record.is_expired(t)
        ]
        return sorted(found, key=scan_order)

    async def list(
        self, principal: str, *, kind: str | None = None, now: float | None = None
    ) -> list[Record]:
        self._check_open()
        t = clock(now)
        found = []
        for key in self._by_principal.get(principal, {}):
            stored = self._records[key]
            if (kind is None or stored.record.kind == kind) and not stored.record.is_expired(t):
                found.append(stored.load())
        found.sort(key=lambda r: (r.created_at, r.kind, r.id))
        return found

    async def count(
        self, principal: str, *, kind: str | None = None, now: float | None = None
    ) -> int:
        self._check_open()
        t = clock(now)
        found = 0
        for key in self._by_principal.get(principal, {}):
            record = self._records[key].record
            if (kind is None or record.kind == kind) and not record.is_expired(t):
                found += 1
        return found

    async def sweep(self, *, now: float | None = None, limit: int = 1000) -> int:
        self._check_open()
        t = clock(now)
        removed = 0
        heap = self._expiry
        while heap and heap[0][0] <= t and removed < limit:
            _, _, key = heapq.heappop(heap)
            stored = self._records.get(key)
            if stored is not None and stored.record.is_expired(t):
                self._remove(key)
                removed += 1
        return removed

    async def close(self) -> None:
        self._closed = True
        self._records.clear()
        self._by_principal.clear()
        self._expiry.clear()

    async def __aenter__(self) -> MemoryStore:
        self._check_open()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()
