"""``redis://host:port/db`` and ``rediss://``: the store shared by many machines (DESIGN §6).

Layout (``prefix`` defaults to ``mcps``):

- ``mcps:{<kind>:<principal digest>:<id>}`` — one string per record: a tag, then a JSON
  object (``stores/_redis_scripts.py``). Records are keyed by ``(kind, id, principal)``, so
  two principals may hold the same id independently and neither can tell the other's exists
  (DESIGN §2). The principal digest is the first 32 hex digits (128 bits) of its SHA-256; it
  sits before the id, inside the braces, which are a Redis Cluster hash tag: any key ever
  added for one record shares its slot, and every Lua script touches a single key. Reads and
  writes still check the principal stored in the record, so even a digest collision could
  not hand one principal's record to another.
- ``mcps:principal:{<principal digest>}`` — a sorted set per principal for ``list``; members
  are ``[kind, id, incarnation]`` scored by a deadline at or after the record's expiry.

Atomicity: ``create``, ``compare_and_set``, ``touch`` and ``delete`` are Lua scripts
(EVALSHA), so a check and its write cannot interleave with another client's. A compare-and-set
or touch is one script that compares the value's tag (``SWAP``): the client computed the new
value from the one it read, and a loser gets the current value back in the same answer.

Reads come from a local copy that Redis keeps honest (issue #15; docs/stores.md states the
guarantee): ``stores/_redis_tracking.py`` carries the hot commands on one connection that is
told of every record key another client writes, and ``stores/_redis_cache.py`` drops its copy
of each. In steady state a ``get`` costs no round trip, a compare-and-set one.

Expiry: each record key carries a Redis TTL equal to its remaining life, computed from the
caller's ``now`` (so tests that pass ``now`` behave like real time). Reads also compare
``expires_at`` with ``now``, so a record past its expiry is a miss before Redis drops it.
Redis removes expired keys by itself; :meth:`RedisStore.sweep` has nothing to do.

The principal index tolerates stale members: ``list`` skips and removes members whose record
is gone, expired, replaced (another incarnation) or another principal's. Each write that
adds a member also drops members whose deadline has passed, and the index key itself
expires after its last deadline, so a principal that never lists does not leak memory.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

import redis.exceptions as redis_errors

from ..core.records import JSONObject, Record
from ._common import (
    check_idle_ttl,
    clock,
    encode_json,
    hide_password,
    not_found,
    touch_without_write,
)
from ._deadlines import Deadlines
from ._redis_admin import scan_records
from ._redis_cache import DEFAULT_CACHE_BYTES, DEFAULT_CACHE_ENTRIES, Entry, RecordCache
from ._redis_records import (
    exact,
    extended,
    index_args,
    is_live,
    member,
    new_fields,
    read_value,
    to_record,
    ttl_ms,
    write_value,
)
from ._redis_scripts import CREATE_SCRIPT, DELETE_SCRIPT, INDEX_SCRIPT, SWAP_SCRIPT
from ._redis_topology import UNAVAILABLE_ERRORS, Topology, config_values
from ._redis_tracking import TrackedConnection
from .base import (
    DEFAULT_TOUCH_FRACTION,
    AlreadyExists,
    StoreError,
    StoreUnavailable,
    VersionConflict,
)

T = TypeVar("T")

logger = logging.getLogger("mcp_sessions.stores")


#: Writes of one record in a row that may lose to another client's touch (same version, new
#: tag) before the store gives up with StoreUnavailable; each loss costs one round trip.
SWAP_ATTEMPTS = 8


@functools.lru_cache(maxsize=4096)
def principal_digest(principal: str) -> str:
    """The principal's part of its keys: 32 hex digits of SHA-256 (cached: a server sees few
    principals, and ``get`` should cost one GET, not a hash as well)."""
    return hashlib.sha256(principal.encode()).hexdigest()[:32]


class RedisStore:
    """The Redis backend of :class:`~mcp_sessions.stores.base.Store`.

    Connecting is lazy: the first operation (or ``async with``, which sends PING) connects
    and reports an unreachable or misconfigured server as :class:`StoreError`.
    """

    def __init__(
        self,
        url: str,
        *,
        host: str,
        port: int,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        prefix: str = "mcps",
        connect_timeout: float = 2.0,
        timeout: float = 2.0,
        op_timeout: float = 2.0,
        retries: int = 1,
        touch_fraction: float = DEFAULT_TOUCH_FRACTION,
        tls_options: Mapping[str, Any] | None = None,
        topology: Topology | None = None,
        cache_entries: int = DEFAULT_CACHE_ENTRIES,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.url = hide_password(url)
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.prefix = prefix
        self.timeout = timeout
        if not (op_timeout > 0 and math.isfinite(op_timeout)):
            raise StoreError(f"op_timeout must be a positive number of seconds, got {op_timeout!r}")
        #: Bound on one whole operation, reconnects and retries included (issue #12 item 8).
        self.op_timeout = float(op_timeout)
        self._deadlines = Deadlines(self.op_timeout)
        self.touch_fraction = touch_fraction
        self._password = password
        if topology is None:
            topology = Topology("single", ((host, port),), db, username, password, tls)
        else:  # a Redis Cluster or a Sentinel-managed master (issue #15): the same commands
            self.address = topology.address
        # Bounded time (issue #3): each attempt waits at most connect_timeout / timeout, and
        # a failed command is retried ``retries`` times with a short backoff, then fails.
        self._redis = topology.client(
            connect_timeout=connect_timeout,
            timeout=timeout,
            retries=retries,
            tls_options=tls_options,
        )
        self._closed = False
        self._start_tracking(cache_entries, cache_bytes)

    # -- plumbing ------------------------------------------------------------------------

    def record_key(self, kind: str, id: str, principal: str) -> str:
        """The record's key, one per ``(kind, id, principal)``; the braces keep all of one
        record's keys in one cluster slot."""
        return f"{self.prefix}:{{{kind}:{principal_digest(principal)}:{id}}}"

    def index_key(self, principal: str) -> str:
        """The sorted set ``list`` reads for ``principal``."""
        return f"{self.prefix}:principal:{{{principal_digest(principal)}}}"

    def _scrub(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run one exchange with Redis, turning driver errors into :class:`StoreError`."""
        if self._closed:
            raise StoreError(f"Redis store {self.url} is closed")
        where = f"Redis store {self.url} ({self.address})"
        try:
            # The whole operation, however many reconnects and retries redis-py makes, ends
            # within op_timeout (one timer for all operations: _deadlines.py); a command cut
            # off on the pool closes its connection (redis-py disconnects on cancellation),
            # so no late reply reaches a later command.
            bound = self._deadlines.start()
            try:
                return await fn()
            except asyncio.CancelledError:
                if self._deadlines.expired(bound):
                    raise TimeoutError from None
                raise
            finally:
                self._deadlines.end(bound)
        except redis_errors.AuthenticationError as exc:
            raise StoreError(f"{where}: authentication failed: {self._scrub(str(exc))}") from None
        except redis_errors.TimeoutError:
            raise StoreUnavailable(
                f"{where}: no answer within timeout={self.timeout:g}s; is the server up and "
                "is this the right port?"
            ) from None
        except TimeoutError:
            if self._tracked is not None:
                self._tracked.reset()  # an answer may still be owed: start afresh
            raise StoreUnavailable(
                f"{where}: the operation took longer than op_timeout={self.op_timeout:g}s; is "
                "the server up and is this the right port?"
            ) from None
        except redis_errors.ConnectionError as exc:
            # Refused, reset, or still loading its data after a restart (BusyLoadingError).
            raise StoreUnavailable(f"{where}: cannot connect: {self._scrub(str(exc))}") from None
        except redis_errors.ReadOnlyError as exc:
            # A replica that is not (or no longer) the primary, e.g. during a failover: the
            # next operation connects afresh (to the new primary, behind Sentinel).
            if self._tracked is not None:
                self._tracked.reset()
            raise StoreUnavailable(f"{where}: read-only: {self._scrub(str(exc))}") from None
        except UNAVAILABLE_ERRORS as exc:  # a cluster slot without a master (issue #15)
            raise StoreUnavailable(
                f"{where}: unavailable: {type(exc).__name__}: {self._scrub(str(exc))}"
            ) from None
        except redis_errors.ResponseError as exc:
            raise StoreError(f"{where}: Redis refused a command: {self._scrub(str(exc))}") from None
        except redis_errors.RedisError as exc:
            raise StoreError(f"{where}: {type(exc).__name__}: {self._scrub(str(exc))}") from None
        except OSError as exc:  # e.g. TLS setup, or a socket error redis-py did not wrap
            raise StoreUnavailable(f"{where}: {self._scrub(str(exc))}") from None

    def _start_tracking(self, cache_entries: int, cache_bytes: int) -> None:
        """The local copy of records and the connection that keeps it honest (issue #15)."""
        if cache_entries < 0 or cache_bytes < 0:
            raise StoreError(
                f"Redis store {self.url}: cache_entries and cache_bytes must not be negative, "
                f"got {cache_entries} and {cache_bytes}"
            )
        #: Records read or written here, dropped on Redis's word (``_redis_cache.py``).
        self.cache = RecordCache(cache_entries, cache_bytes)
        #: Test seam: awaited between the answer of a read that fills the cache and the fill,
        #: so a test can make an invalidation arrive exactly then.
        self.fill_hook: Callable[[str], Awaitable[None]] | None = None
        pool = getattr(self._redis, "connection_pool", None)
        self._tracked: TrackedConnection | None = None
        if pool is None:  # a client without one pool of one server: no local copy
            return
        # RESP3 carries the invalidations. Connecting is bounded by the pool's timeouts,
        # each operation on it by op_timeout.
        kwargs = {**pool.connection_kwargs, "protocol": 3}
        self._tracked = TrackedConnection(
            lambda: pool.connection_class(**kwargs),
            self.cache,
            track=cache_entries > 0 and cache_bytes > 0,
        )

    async def _exec(self, *args: Any) -> Any:
        """One command on the tracked connection (once more on a new one if it was lost, as
        redis-py's own retry does: a read repeats harmlessly, a tag-compared write that did
        happen finds its own tag; a repeated delete answers "nothing deleted"), or on the
        pool without one."""
        tracked = self._tracked
        if tracked is None:
            return await cast(Any, self._redis).execute_command(*args)
        try:
            return await tracked.execute(*args)
        except redis_errors.ConnectionError:
            return await tracked.execute(*args)

    async def _fetch(self, key: str) -> Entry | None:
        """The value of ``key`` from Redis, kept in the cache unless a write of it was
        announced while the read was under way."""
        if self._tracked is not None:
            await self._tracked.ready()
        cache = self.cache
        fill = cache.begin(key)
        entry = None
        try:
            value = await self._exec("GET", key)
            entry = None if value is None else read_value(value)
            if self.fill_hook is not None:
                await self.fill_hook(key)
        finally:
            cache.finish(fill, key, entry)
        return entry

    async def _swap(
        self, key: str, base: Entry, fields: dict[str, Any], ttl: int
    ) -> tuple[bool, Entry | None]:
        """Store ``fields`` if Redis still holds ``base``: ``(True, new entry)``, or ``(False,
        the entry there now)`` (``None``: no such key), in one round trip."""
        value, entry = write_value(fields, base)
        cache = self.cache
        fill = cache.begin(key)
        kept = wrote = None
        try:
            reply = await SWAP_SCRIPT.on(self._exec, key, base.tag, value, ttl)
            if reply == 1:
                kept = wrote = entry
                return True, entry
            if not reply:
                return False, None
            kept = read_value(reply)
            # A repeat (the first answer was lost with its connection) finds its own write.
            if kept.tag == entry.tag:
                wrote = kept
            return wrote is not None, kept
        finally:
            cache.finish(fill, key, kept, wrote=wrote is not None)

    async def _update(
        self,
        kind: str,
        id: str,
        principal: str,
        now: float,
        change: Callable[[Entry], dict[str, Any] | None],
    ) -> tuple[dict[str, Any], bool]:
        """Read-compute-swap of one live record: ``change`` gets the live entry and answers
        the new fields (or ``None``: raise :class:`VersionConflict`, with that entry's record);
        an entry from the cache that fails a check is read again from Redis first, since the
        cache may lag behind a write whose invalidation is on its way. Returns the stored
        fields and whether the index deadline must be raised."""
        key = self.record_key(kind, id, principal)
        base = self.cache.lookup(key)
        fresh = False
        for _ in range(SWAP_ATTEMPTS):
            if base is None:
                base, fresh = await self._fetch(key), True
            if base is None:
                raise not_found(kind, id)
            r = base.fields
            fields = change(base) if is_live(r, principal, now) else None
            if fields is None:
                if not fresh:
                    base = None
                    continue
                if is_live(r, principal, now):
                    current = to_record(r)
                    raise VersionConflict(
                        f"{kind} record {id!r} is at version {current.version}", current=current
                    )
                raise not_found(kind, id)
            done, found = await self._swap(key, base, fields, ttl_ms(float(fields["e"]) - now))
            if done:
                return fields, float(fields["ix"]) != float(r["ix"])
            base, fresh = found, True
        raise StoreUnavailable(f"{kind} record {id!r} kept changing during {SWAP_ATTEMPTS} writes")

    async def _raise_index(self, principal: str, r: Mapping[str, Any], now: float) -> None:
        await INDEX_SCRIPT(self._redis, [self.index_key(principal)], index_args(r, now))

    # -- the Store contract --------------------------------------------------------------

    async def create(self, record: Record) -> None:
        check_idle_ttl(record.idle_ttl)
        now = record.last_seen  # the moment the record claims to be created at
        fields = new_fields(record)
        value, _ = write_value(fields)
        ttl = ttl_ms(record.expires_at - now)
        key = self.record_key(record.kind, record.id, record.principal)
        index = self.index_key(record.principal)
        indexing = index_args(fields, now)

        async def run() -> None:
            # One round trip for the common case: the index member, then SET NX. The member
            # goes first, so a crash in between leaves a stale member (list skips it), never
            # a record that list cannot see.
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.evalsha(INDEX_SCRIPT.sha, 1, index, *indexing)
                pipe.set(key, value, px=ttl, nx=True)
                indexed, stored = await pipe.execute(raise_on_error=False)
            if isinstance(indexed, redis_errors.NoScriptError):
                await INDEX_SCRIPT(self._redis, [index], indexing)
            elif isinstance(indexed, Exception):
                raise indexed
            if isinstance(stored, Exception):
                raise stored
            if stored:
                return
            # The key exists: the script decides whether the record there has expired (by
            # ``now``, which may run ahead of Redis's own clock) and may be replaced.
            if not await CREATE_SCRIPT(self._redis, [key], [exact(now), ttl, value]):
                await self._redis.zrem(index, indexing[1])
                raise AlreadyExists(f"a live {record.kind} record with id {record.id!r} exists")

        await self._call(run)
        # Written on the pool, not the tracked connection: its invalidation is on its way; no
        # read here may see what was there before (a record that expired) meanwhile.
        self.cache.invalidate(key)

    async def get(
        self, kind: str, id: str, principal: str, *, now: float | None = None
    ) -> Record | None:
        t = clock(now)
        if self._closed:
            raise StoreError(f"Redis store {self.url} is closed")
        key = self.record_key(kind, id, principal)
        entry = self.cache.lookup(key)
        if entry is None:
            entry = await self._call(lambda: self._fetch(key))
            if entry is None:
                return None
        r = entry.fields
        # An expired record answers like a missing one (DESIGN §2).
        return to_record(r) if is_live(r, principal, t) else None

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
        text = encode_json(state, "state", max_bytes)
        expected = int(expected_version)

        def change(base: Entry) -> dict[str, Any] | None:
            if int(base.fields["v"]) != expected:
                return None
            fields, _ = extended(base.fields, t)
            fields["v"] = expected + 1
            fields["s"] = text
            return fields

        async def run() -> dict[str, Any]:
            fields, raised = await self._update(kind, id, principal, t, change)
            if raised:
                await self._raise_index(principal, fields, t)
            return fields

        try:
            r = await self._call(run)
        except VersionConflict as conflict:
            raise VersionConflict(
                f"{conflict}, not {expected_version}", current=conflict.current
            ) from None
        return to_record(r, state)  # the caller's dict: Redis holds the text

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

        def change(base: Entry) -> dict[str, Any]:
            return extended(base.fields, t, idle_ttl)[0]

        async def run() -> dict[str, Any]:
            fields, raised = await self._update(record.kind, record.id, record.principal, t, change)
            if raised:
                await self._raise_index(record.principal, fields, t)
            return fields

        return to_record(await self._call(run))

    async def delete(self, kind: str, id: str, principal: str) -> bool:
        key = self.record_key(kind, id, principal)
        t = clock(None)

        async def run() -> bool:
            result: list[Any] = await DELETE_SCRIPT.on(self._exec, key, principal, exact(t))
            if result[0] == 0:
                return False
            await self._redis.zrem(self.index_key(principal), member(kind, id, result[2]))
            return bool(result[1])

        try:
            return await self._call(run)
        finally:
            # Deleted on the tracked connection, which Redis tells nothing of its own writes.
            self.cache.invalidate(key)

    async def scan(self, **filters: Any) -> list[Record]:
        """Every live record, read-only, for operators (issue #13; see ``_redis_admin``)."""
        return await scan_records(self, principal_digest, to_record, **filters)

    async def list(
        self, principal: str, *, kind: str | None = None, now: float | None = None
    ) -> list[Record]:
        t = clock(now)
        index = self.index_key(principal)

        async def run() -> list[Record]:
            members = cast(list[str], await self._redis.zrange(index, 0, -1))
            wanted = [(one, json.loads(one)) for one in members]
            if kind is not None:
                wanted = [(one, parsed) for one, parsed in wanted if parsed[0] == kind]
            if not wanted:
                return []
            async with self._redis.pipeline(transaction=False) as pipe:
                for _, (k, i, _inc) in wanted:
                    pipe.get(self.record_key(k, i, principal))
                blobs: list[str | None] = await pipe.execute()
            found: list[Record] = []
            stale: list[str] = []
            for (one, (_k, _i, inc)), blob in zip(wanted, blobs, strict=True):
                r = None if blob is None else read_value(blob).fields
                if r is None or r["inc"] != inc or r["p"] != principal:
                    stale.append(one)  # gone or replaced: this incarnation never returns
                elif float(r["e"]) <= t:
                    stale.append(one)  # expired: a miss for ever (create makes a new one)
                else:
                    found.append(to_record(r))
            if stale:
                await self._redis.zrem(index, *stale)
            found.sort(key=lambda r: (r.created_at, r.kind, r.id))
            return found

        return await self._call(run)

    async def count(
        self, principal: str, *, kind: str | None = None, now: float | None = None
    ) -> int:
        """As exact as :meth:`list` (each index member is checked against its record), and
        as costly, less building the records: the index alone may hold stale members."""
        return len(await self.list(principal, kind=kind, now=now))

    async def sweep(self, *, now: float | None = None, limit: int = 1000) -> int:
        """Nothing to do: Redis expires record keys itself (each carries a TTL)."""
        if self._closed:
            raise StoreError(f"Redis store {self.url} is closed")
        return 0

    async def ping(self) -> None:
        """Connect now; :class:`StoreError` if the server cannot be used."""
        await self._call(lambda: self._redis.ping())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._tracked is not None:
            await self._tracked.close()
        await self._redis.aclose()

    async def persistence(self) -> str | None:
        """Why an acknowledged write would not survive a restart of the Redis server, or
        ``None`` if it would (RDB snapshots or AOF on) or the server does not say (``CONFIG``
        disabled or renamed, as managed services often do)."""

        async def ask() -> tuple[Any, Any]:
            save, aof = await config_values(self._redis, "save", "appendonly")
            return save, aof

        save, aof = await self._call(ask)
        if not (isinstance(save, dict) and isinstance(aof, dict)):
            return None  # CONFIG refused: nothing known
        if (save.get("save") or "").strip() or aof.get("appendonly") == "yes":
            return None
        return (
            "the Redis server has no persistence (save '' and appendonly no): a restart of "
            "Redis loses every session and handle"
        )

    async def __aenter__(self) -> RedisStore:
        await self.ping()
        reason = await self.persistence()
        if reason is not None:
            # Issue #12 item 8: warn at start, not after the first restart lost everything.
            logger.warning(
                "Redis store %s: %s; implicit sessions come back empty on their next request, "
                "legacy and explicit sessions are gone (-31001 / 404). Turn on RDB or AOF "
                "(e.g. appendonly yes) unless that is what you want.",
                self.url,
                reason,
            )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
