"""Quotas over the store (issue #12): how many sessions and handles one caller holds.

Counting happens in the store, so every replica sharing it counts the same things. Each
counted creation writes one small *ledger* record under the caller's quota key
(``quota/<caller>``, a principal no request can have) and the ledger kind of what it counts.
Only creations pay: a creation counts the caller's ledger (``Store.count``) and writes one
entry; requests that create nothing never look at it.

A ledger entry lives as long as the thing it counts can at most (the session's absolute
lifetime), so the count never misses a live session. It may still count one that expired
idle or was removed on another replica: when a caller reaches its cap, the ledger is checked
against the records it counts, dead entries are dropped, and the refusal remembers (per
process) until when the caller stays full, so a flood of refused creations costs no store
work. The count may overshoot the cap by the number of creations racing at that moment.

The creation rate is a token bucket per caller, per process (it is a brake on bursts, and
cheaper kept in memory than in the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from ..core.errors import LimitExceeded
from ..core.limits import Counted, Limits, TokenBucket, caller_key, too_fast, too_many
from ..core.principal import Principal
from ..core.records import Record
from ..stores import AlreadyExists

if TYPE_CHECKING:
    from ..stores import Store
    from ..telemetry.instruments import SessionTelemetry

#: The principal part of ledger keys; principal keys are ``anonymous`` or a JSON array, so
#: no caller's own records can ever sit under it.
LEDGER_PREFIX = "quota/"
LEDGER_KIND: dict[Counted, str] = {
    "sessions": "quota.sessions",
    "legacy": "quota.legacy",
    "handles": "quota.handles",
}
#: Longest a ledger entry lives when what it counts has no absolute lifetime (handles).
LEDGER_TTL = 30 * 24 * 3600.0
#: A refusal is remembered at most this long before the ledger is checked again.
RECHECK_AFTER = 30.0
#: In-memory entries (buckets, remembered refusals) above which stale ones are dropped.
_PRUNE_ABOVE = 10_000


class Quotas:
    """The limits of one server, counted in the server's store."""

    def __init__(self, limits: Limits, store: Store) -> None:
        self.limits = limits
        self._store = store
        self._buckets: dict[str, TokenBucket] = {}
        #: (caller, counted) → (recheck at, room frees up at): refusals remembered.
        self._full: dict[tuple[str, Counted], tuple[float, float]] = {}
        self._refreshing = asyncio.Lock()
        self._pruned_at = 0.0
        #: Counts refusals (issue #13); set by the engine.
        self.telemetry: SessionTelemetry | None = None

    # -- who is asking ------------------------------------------------------------------------

    def caller(self, principal: Principal, request: Any = None) -> str:
        """The quota key of a request: ``request`` is the SDK's (Starlette) request or
        ``None`` (stdio)."""
        client = getattr(request, "client", None)
        headers = getattr(request, "headers", None)
        return self._key(principal, getattr(client, "host", None), headers)

    def caller_of_scope(self, principal: Principal, scope: MutableMapping[str, Any]) -> str:
        """The quota key of an ASGI HTTP request."""
        from starlette.datastructures import Headers

        client = scope.get("client")
        peer = client[0] if client else None
        return self._key(principal, peer, Headers(scope=scope))

    def _key(self, principal: Principal, peer: str | None, headers: Any) -> str:
        hops = self.limits.trusted_proxy_hops
        forwarded: list[str] = []
        if hops and headers is not None and hasattr(headers, "getlist"):
            forwarded = list(headers.getlist("x-forwarded-for"))
        return caller_key(
            principal.key if not principal.is_anonymous else "anonymous",
            anonymous=principal.is_anonymous,
            peer=peer,
            forwarded_for=forwarded,
            trusted_hops=hops,
        )

    # -- creation -------------------------------------------------------------------------------

    async def admit(self, caller: str, counted: Counted, *, now: float | None = None) -> None:
        """Raise :class:`LimitExceeded` unless ``caller`` may create one more ``counted``.

        Takes a token from the caller's creation rate when it admits.
        """
        now = time.time() if now is None else now
        per_minute = self.limits.max_creations_per_minute
        bucket = self._buckets.get(caller) if per_minute is not None else None
        if per_minute is not None and bucket is not None:
            wait = bucket.wait(now)
            if wait > 0:
                if self.telemetry is not None:
                    self.telemetry.quota_refused(counted, "rate")
                raise too_fast(per_minute, wait)
        cap = self.limits.cap(counted)
        if cap is not None:
            try:
                await self._check_room(caller, counted, cap, now)
            except LimitExceeded:
                if self.telemetry is not None:
                    self.telemetry.quota_refused(counted, "cap")
                raise
        if per_minute is not None:
            if bucket is None:
                if len(self._buckets) > _PRUNE_ABOVE and now - self._pruned_at >= 1.0:
                    # A full bucket is as good as none; at most once a second, so that many
                    # callers at once do not make every creation walk them all.
                    self._pruned_at = now
                    self._buckets = {k: b for k, b in self._buckets.items() if not b.is_full(now)}
                bucket = self._buckets[caller] = TokenBucket.full(per_minute, now)
            bucket.take(now)

    async def note(self, caller: str, counted: Counted, record: Record) -> None:
        """Count ``record`` (just created) against ``caller``'s ``counted`` quota."""
        if self.limits.cap(counted) is None:
            return
        now = record.created_at
        lifetime = record.max_expires_at - now
        entry = Record.new(
            kind=LEDGER_KIND[counted],
            id=record.id,
            principal=LEDGER_PREFIX + caller,
            origin="quota",
            now=now,
            idle_ttl=LEDGER_TTL,
            max_lifetime=lifetime if math.isfinite(lifetime) and lifetime > 0 else None,
            attributes={"kind": record.kind, "principal": record.principal},
        )
        # AlreadyExists: a parallel first request with the same id has counted it already.
        with contextlib.suppress(AlreadyExists):
            await self._store.create(entry)

    async def release(self, caller: str, counted: Counted, id: str) -> None:
        """``caller`` removed the ``counted`` thing ``id``: its room is free at once."""
        self._full.pop((caller, counted), None)
        if self.limits.cap(counted) is not None:
            await self._store.delete(LEDGER_KIND[counted], id, LEDGER_PREFIX + caller)

    async def _check_room(self, caller: str, counted: Counted, cap: int, now: float) -> None:
        key = (caller, counted)
        remembered = self._full.get(key)
        if remembered is not None:
            recheck_at, frees_at = remembered
            if now < recheck_at:
                raise too_many(counted, cap, frees_at - now)
            del self._full[key]
        store = self._store
        ledger_key = LEDGER_PREFIX + caller
        if await store.count(ledger_key, kind=LEDGER_KIND[counted], now=now) < cap:
            return
        # At the cap by the ledger: drop entries whose record is gone, once at a time.
        async with self._refreshing:
            remembered = self._full.get(key)
            if remembered is not None:  # another request has just checked
                raise too_many(counted, cap, remembered[1] - now)
            ledger = await store.list(ledger_key, kind=LEDGER_KIND[counted], now=now)
            live, frees_at = await self._check_ledger(ledger, now)
            if live < cap:
                return
            if len(self._full) > _PRUNE_ABOVE:
                _drop_stale(self._full, now)
            self._full[key] = (min(frees_at, now + RECHECK_AFTER), frees_at)
        raise too_many(counted, cap, frees_at - now)

    async def _check_ledger(self, ledger: list[Record], now: float) -> tuple[int, float]:
        """How many ledger entries still count a live record, and when the first of those
        can expire at the earliest (a record's expiry only ever moves later)."""
        store = self._store
        live = 0
        frees_at = math.inf
        for entry in ledger:
            kind = entry.attributes.get("kind")
            owner = entry.attributes.get("principal")
            record = None
            if isinstance(kind, str) and isinstance(owner, str):
                record = await store.get(kind, entry.id, owner, now=now)
            if record is None:
                await store.delete(entry.kind, entry.id, entry.principal)
                continue
            live += 1
            frees_at = min(frees_at, record.expires_at)
        return live, frees_at


def _drop_stale(full: MutableMapping[tuple[str, Counted], tuple[float, float]], now: float) -> None:
    for key in [key for key, (recheck_at, _) in full.items() if recheck_at <= now]:
        del full[key]


__all__ = ["LEDGER_KIND", "LEDGER_PREFIX", "Quotas"]
