"""The Redis store's process-local copy of the records it read or wrote (issue #15 item 1).

Redis keeps it honest: the store's tracking connection (``stores/_redis_tracking.py``) is told
of every write by another client to a key it read (``CLIENT TRACKING``), and each such
invalidation drops the entry here. No I/O in this module: it only holds entries and applies the
rule that makes filling it safe against an invalidation in flight.

The race: a fill reads key K from Redis, another client writes K, its invalidation arrives and
finds nothing to drop, and only then does the fill store the value it read before the write.
So a fill is announced first (:meth:`RecordCache.begin`, before the command is sent): an
invalidation of K (or a flush) that arrives before :meth:`RecordCache.finish` spoils every
fill of K in flight, and a spoilt fill stores nothing. Whatever Redis wrote before the read was
executed is in the value read; whatever it wrote after sends an invalidation that either
spoils the fill or drops the entry it made.

Bounded: least recently used entries go first once there are more than ``max_entries`` or
their values add up to more than ``max_bytes``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

#: Default bounds: entries, and bytes of stored value (the record's text as Redis holds it).
DEFAULT_CACHE_ENTRIES = 10_000
DEFAULT_CACHE_BYTES = 32 << 20


class Entry:
    """One record as Redis holds it: the tag its value starts with (changed by every write,
    the compare-and-set's token) and its fields (``state`` and ``attributes`` as text).
    ``head``: the JSON of the fields no write changes, once a write has encoded them
    (``_redis_records.write_value``)."""

    __slots__ = ("fields", "head", "size", "tag")

    def __init__(
        self, tag: str, fields: dict[str, Any], size: int, head: str | None = None
    ) -> None:
        self.tag = tag
        self.fields = fields
        self.size = size
        self.head = head


class Fill:
    """A read or write of one key in flight whose answer may be kept; spoilt by an
    invalidation of that key (or a flush) before it is finished."""

    __slots__ = ("spoilt",)

    def __init__(self) -> None:
        self.spoilt = False


class RecordCache:
    """Entries by record key, LRU-bounded; off (empty, every lookup a miss) until the tracking
    connection is in place, and again whenever it is lost."""

    def __init__(
        self, max_entries: int = DEFAULT_CACHE_ENTRIES, max_bytes: int = DEFAULT_CACHE_BYTES
    ) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ValueError("cache bounds must not be negative")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._fills: dict[str, list[Fill]] = {}
        self._bytes = 0
        self.enabled = False
        #: Counters for tests, benchmarks and metrics.
        self.hits = 0
        self.misses = 0
        self.invalidations = 0
        self.flushes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """Bytes of stored values held."""
        return self._bytes

    def lookup(self, key: str) -> Entry | None:
        entry = self._entries.get(key) if self.enabled else None
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def begin(self, key: str) -> Fill | None:
        """Announce a fill of ``key`` before its command is sent; ``None`` while off."""
        if not self.enabled or self.max_entries == 0:
            return None
        fill = Fill()
        self._fills.setdefault(key, []).append(fill)
        return fill

    def finish(
        self, fill: Fill | None, key: str, entry: Entry | None, *, wrote: bool = False
    ) -> None:
        """End ``fill``: keep ``entry`` (the value read or written; ``None``: nothing to keep,
        which also drops what was there) unless the fill was spoilt meanwhile.

        ``wrote``: ``entry`` is this process's own write, of which Redis tells it nothing, so
        the fills of the key announced before it — whose reads may have run before the write
        — are spoilt here, as an invalidation would have spoilt them."""
        if fill is None:
            return
        if fill.spoilt:  # invalidate() or flush() has taken it out of _fills already
            return
        fills = self._fills[key]
        if wrote:
            earlier = fills[: fills.index(fill)]
            for other in earlier:
                other.spoilt = True
            del fills[: len(earlier)]
        fills.remove(fill)
        if not fills:
            del self._fills[key]
        if not self.enabled:
            return
        if entry is None or entry.size > self.max_bytes:
            self._drop(key)
            return
        self._drop(key)
        self._entries[key] = entry
        self._bytes += entry.size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self._bytes -= old.size

    def invalidate(self, key: str) -> None:
        """``key`` was written: drop its entry and spoil its fills in flight."""
        self.invalidations += 1
        self._drop(key)
        for fill in self._fills.pop(key, ()):
            fill.spoilt = True

    def flush(self) -> None:
        """Drop everything and spoil every fill in flight (Redis flushed, or a reconnect)."""
        self.flushes += 1
        self._entries.clear()
        self._bytes = 0
        for fills in self._fills.values():
            for fill in fills:
                fill.spoilt = True
        self._fills.clear()

    def disable(self) -> None:
        """Off until :meth:`enable`: the invalidations stopped arriving."""
        self.enabled = False
        self.flush()

    def enable(self) -> None:
        """On, empty: invalidations arrive for every write from now on."""
        self.flush()
        self.enabled = True

    def _drop(self, key: str) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.size
