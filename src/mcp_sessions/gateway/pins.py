"""Pins: which upstream holds a session, in the shared store, with a local cache in front.

A pin is a store record of kind ``"pin"`` whose state is ``{"upstream": URL}``, bound to the
caller's principal key like every record (DESIGN §2), expiring after ``ttl`` idle seconds.
Two kinds of sessions are pinned, and handles:

* **legacy** ``Mcp-Session-Id`` sessions, learned from the ``initialize`` response that
  minted the id — a learned sticky table, the open-source counterpart of NGINX Plus
  ``sticky learn`` (research/peers.md §2.13). Without the pin, the ``initialize`` request
  (which carries no id yet) and the requests after it would be hashed independently;
* **client-id** sessions, placed by rendezvous hashing on their first request. Every gateway
  replica computes the same placement, so parallel first calls through different replicas
  agree without the store; the pin then keeps a live session where it is when upstreams are
  added, and lets the gateway tell a session whose upstream failed (a clear error) from a
  new one (placed on a healthy upstream);
* **handles** (id ``handle:<handle>``), learned from the results that list them as minted,
  so that a handle reaches the replica holding its state (:mod:`.handles`, issue #11).

The local cache makes a steady session cost no store round trip; the store is read on a
cache miss, and written when a pin is placed, moved, forgotten, or its expiry needs
extending (the store's own touch rule: once per tenth of the TTL).
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from dataclasses import dataclass

from ..core.records import Record
from ..stores import AlreadyExists, NotFound, Store, VersionConflict, touch_live

PIN_KIND = "pin"


@dataclass(slots=True)
class _Cached:
    record: Record
    used: float


class PinTable:
    """Pins over ``store``; ``max_cached`` bounds the local cache (least recently used out)."""

    def __init__(self, store: Store, *, ttl: float, max_cached: int = 100_000) -> None:
        self.store = store
        self.ttl = ttl
        self.max_cached = max_cached
        self._cache: OrderedDict[tuple[str, str], _Cached] = OrderedDict()

    @staticmethod
    def upstream_of(record: Record) -> str:
        return str(record.state.get("upstream", ""))

    def _remember(self, record: Record) -> None:
        key = (record.principal, record.id)
        self._cache[key] = _Cached(record, time.monotonic())
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)

    def _drop(self, principal: str, session_key: str) -> None:
        self._cache.pop((principal, session_key), None)

    async def get(self, session_key: str, principal: str, *, fresh: bool = False) -> str | None:
        """The upstream pinned for ``session_key``, or ``None``.

        ``fresh`` skips the cache (used before declaring a session lost, since another
        gateway replica may have moved or removed the pin).
        """
        cache_key = (principal, session_key)
        cached = None if fresh else self._cache.get(cache_key)
        if cached is None:
            record = await self.store.get(PIN_KIND, session_key, principal)
            if record is None:
                self._drop(principal, session_key)
                return None
        else:
            record = cached.record
        touched = await touch_live(self.store, record)
        if touched is None:
            self._drop(principal, session_key)
            return None
        self._remember(touched)
        record = touched
        return self.upstream_of(record)

    async def place(self, session_key: str, principal: str, upstream: str, origin: str) -> str:
        """Pin ``session_key`` to ``upstream`` unless a pin exists; returns the pinned upstream
        (another request, or another gateway replica, may have placed it first)."""
        record = Record.new(
            kind=PIN_KIND,
            id=session_key,
            principal=principal,
            origin=origin,
            now=time.time(),
            idle_ttl=self.ttl,
            state={"upstream": upstream},
        )
        try:
            await self.store.create(record)
        except AlreadyExists:
            existing = await self.store.get(PIN_KIND, session_key, principal)
            if existing is None:  # another principal's pin, or it expired meanwhile
                return upstream
            record = existing
        self._remember(record)
        return self.upstream_of(record)

    async def move(self, session_key: str, principal: str, upstream: str) -> str:
        """Re-pin to ``upstream`` (failover); returns the upstream finally pinned."""
        for _attempt in range(3):
            record = await self.store.get(PIN_KIND, session_key, principal)
            if record is None:
                return await self.place(session_key, principal, upstream, "failover")
            try:
                record = await self.store.compare_and_set(
                    PIN_KIND, session_key, principal, record.version, {"upstream": upstream}
                )
            except VersionConflict:
                continue  # someone else moved it: read again
            except NotFound:
                return await self.place(session_key, principal, upstream, "failover")
            self._remember(record)
            return upstream
        return upstream

    async def forget(self, session_key: str, principal: str) -> None:
        self._drop(principal, session_key)
        await self.store.delete(PIN_KIND, session_key, principal)

    def live_by_upstream(self, idle: float) -> Counter[str]:
        """Pins this replica used within the last ``idle`` seconds, by upstream (a metric)."""
        horizon = time.monotonic() - idle
        counts: Counter[str] = Counter()
        for (_principal, key), cached in self._cache.items():
            if cached.used >= horizon and not key.startswith("handle:"):  # sessions only
                counts[self.upstream_of(cached.record)] += 1
        return counts
