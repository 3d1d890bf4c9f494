"""``redis://host:port/db`` and ``rediss://``: the store shared by many machines (DESIGN §6).

Layout (``prefix`` defaults to ``mcps``):

- ``mcps:{<kind>:<principal digest>:<id>}`` — one string per record, a JSON object (layout
  below). Records are keyed by ``(kind, id, principal)``, so two principals may hold the same
  id independently and neither can tell the other's exists (DESIGN §2). The principal digest
  is the first 32 hex digits (128 bits) of its SHA-256; it sits before the id, inside the
  braces, which are a Redis Cluster hash tag: any key ever added for one record shares its
  slot, and every Lua script below touches a single key. The scripts and ``get`` still check
  the principal stored in the record, so even a digest collision could not hand one
  principal's record to another.
- ``mcps:principal:{<principal digest>}`` — a sorted set per principal for ``list``; members
  are ``[kind, id, incarnation]`` scored by a deadline at or after the record's expiry.

Atomicity: ``create``, ``compare_and_set``, ``touch`` and ``delete`` are Lua scripts
(EVALSHA), so a check and its write cannot interleave with another client's.

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
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from ..core.records import JSONObject, Record
from ._common import (
    check_idle_ttl,
    clock,
    decode_json,
    encode_json,
    hide_password,
    not_found,
    touch_without_write,
)
from ._redis_scripts import (
    CAS_SCRIPT,
    CREATE_SCRIPT,
    DELETE_SCRIPT,
    INDEX_SCRIPT,
    TOUCH_SCRIPT,
)
from .base import (
    DEFAULT_TOUCH_FRACTION,
    AlreadyExists,
    StoreError,
    StoreUnavailable,
    VersionConflict,
)

T = TypeVar("T")

logger = logging.getLogger("mcp_sessions.stores")


def _f(value: float) -> str:
    """A float as text that reads back to the same double (Python's repr is shortest exact)."""
    return repr(float(value))


def _ms(seconds: float) -> int:
    """A TTL in whole milliseconds, rounded up so a key never vanishes before its record
    expires, and at least 1 (Redis deletes a key at once for a TTL of 0)."""
    return max(1, math.ceil(seconds * 1000))


def _index_deadline(last_seen: float, idle_ttl: float, cap: float) -> float:
    """How long an index member stays valid without being raised: two idle TTLs, at most the
    cap. Raising it again costs one extra round trip, at most once per idle TTL."""
    return min(last_seen + 2 * idle_ttl, cap)


@functools.lru_cache(maxsize=4096)
def principal_digest(principal: str) -> str:
    """The principal's part of its keys: 32 hex digits of SHA-256 (cached: a server sees few
    principals, and ``get`` should cost one GET, not a hash as well)."""
    return hashlib.sha256(principal.encode()).hexdigest()[:32]


def _member(kind: str, id: str, incarnation: str) -> str:
    return json.dumps([kind, id, incarnation], separators=(",", ":"))


def _record(r: Mapping[str, Any], state: JSONObject | None = None) -> Record:
    """The record of a stored object; ``state`` given, it stands for the stored (decoded)."""
    mx = r["mx"]
    return Record(
        r["k"],
        r["i"],
        r["p"],
        r["o"],
        float(r["ca"]),
        float(r["ls"]),
        float(r["it"]),
        math.inf if mx == "" else float(mx),
        int(r["v"]),
        decode_json(r["s"]) if state is None else state,
        decode_json(r["a"]),
    )


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
    ) -> None:
        self.url = hide_password(url)
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.prefix = prefix
        self.timeout = timeout
        if not (op_timeout > 0 and math.isfinite(op_timeout)):
            raise StoreError(f"op_timeout must be a positive number of seconds, got {op_timeout!r}")
        #: Bound on one whole operation, reconnects and retries included (issue #12 item 8).
        self.op_timeout = float(op_timeout)
        self.touch_fraction = touch_fraction
        self._password = password
        # Bounded time (issue #3): each attempt waits at most connect_timeout / timeout, and
        # a failed command is retried ``retries`` times with a short backoff, then fails.
        self._redis = aioredis.Redis(
            host=host,
            port=port,
            db=db,
            username=username,
            password=password,
            ssl=tls,
            socket_connect_timeout=connect_timeout,
            socket_timeout=timeout,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries),
            decode_responses=True,
            **dict(tls_options or {}),
        )
        self._closed = False

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
            # within op_timeout; a command cut off here closes its connection (redis-py
            # disconnects on cancellation), so no late reply reaches a later command.
            async with asyncio.timeout(self.op_timeout):
                return await fn()
        except redis_errors.AuthenticationError as exc:
            raise StoreError(f"{where}: authentication failed: {self._scrub(str(exc))}") from None
        except redis_errors.TimeoutError:
            raise StoreUnavailable(
                f"{where}: no answer within timeout={self.timeout:g}s; is the server up and "
                "is this the right port?"
            ) from None
        except TimeoutError:
            raise StoreUnavailable(
                f"{where}: the operation took longer than op_timeout={self.op_timeout:g}s; is "
                "the server up and is this the right port?"
            ) from None
        except redis_errors.ConnectionError as exc:
            # Refused, reset, or still loading its data after a restart (BusyLoadingError).
            raise StoreUnavailable(f"{where}: cannot connect: {self._scrub(str(exc))}") from None
        except redis_errors.ReadOnlyError as exc:
            # A replica that is not (or no longer) the primary, e.g. during a failover.
            raise StoreUnavailable(f"{where}: read-only: {self._scrub(str(exc))}") from None
        except redis_errors.ResponseError as exc:
            raise StoreError(f"{where}: Redis refused a command: {self._scrub(str(exc))}") from None
        except redis_errors.RedisError as exc:
            raise StoreError(f"{where}: {type(exc).__name__}: {self._scrub(str(exc))}") from None
        except OSError as exc:  # e.g. TLS setup, or a socket error redis-py did not wrap
            raise StoreUnavailable(f"{where}: {self._scrub(str(exc))}") from None

    async def _raise_index(self, principal: str, r: Mapping[str, Any], now: float) -> None:
        deadline = float(r["ix"])
        args = [_f(deadline), _member(r["k"], r["i"], r["inc"]), _f(now), _ms(deadline - now)]
        await INDEX_SCRIPT(self._redis, [self.index_key(principal)], args)

    # -- the Store contract --------------------------------------------------------------

    async def create(self, record: Record) -> None:
        check_idle_ttl(record.idle_ttl)
        now = record.last_seen  # the moment the record claims to be created at
        expiry = record.expires_at
        fields: dict[str, Any] = {
            "k": record.kind,
            "i": record.id,
            "p": record.principal,
            "o": record.origin,
            "ca": _f(record.created_at),
            "ls": _f(record.last_seen),
            "it": _f(record.idle_ttl),
            "mx": "" if math.isinf(record.max_expires_at) else _f(record.max_expires_at),
            "e": _f(expiry),
            "v": int(record.version),
            "s": encode_json(record.state, "state"),
            "a": encode_json(record.attributes, "attributes"),
            "inc": secrets.token_hex(8),
            "ix": _f(_index_deadline(record.last_seen, record.idle_ttl, record.max_expires_at)),
        }
        blob = json.dumps(fields, separators=(",", ":"))
        ttl = _ms(expiry - now)
        key = self.record_key(record.kind, record.id, record.principal)

        index = self.index_key(record.principal)
        deadline = float(fields["ix"])
        member = _member(record.kind, record.id, fields["inc"])
        index_args: list[Any] = [_f(deadline), member, _f(now), _ms(deadline - now)]

        async def run() -> None:
            # One round trip for the common case: the index member, then SET NX. The member
            # goes first, so a crash in between leaves a stale member (list skips it), never
            # a record that list cannot see.
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.evalsha(INDEX_SCRIPT.sha, 1, index, *index_args)
                pipe.set(key, blob, px=ttl, nx=True)
                indexed, stored = await pipe.execute(raise_on_error=False)
            if isinstance(indexed, redis_errors.NoScriptError):
                await INDEX_SCRIPT(self._redis, [index], index_args)
            elif isinstance(indexed, Exception):
                raise indexed
            if isinstance(stored, Exception):
                raise stored
            if stored:
                return
            # The key exists: the script decides whether the record there has expired (by
            # ``now``, which may run ahead of Redis's own clock) and may be replaced.
            if not await CREATE_SCRIPT(self._redis, [key], [_f(now), ttl, blob]):
                await self._redis.zrem(index, member)
                raise AlreadyExists(f"a live {record.kind} record with id {record.id!r} exists")

        await self._call(run)

    async def get(
        self, kind: str, id: str, principal: str, *, now: float | None = None
    ) -> Record | None:
        t = clock(now)
        key = self.record_key(kind, id, principal)
        blob = await self._call(lambda: self._redis.get(key))
        if blob is None:
            return None
        r = json.loads(blob)
        # An expired record answers like a missing one; the principal check only matters if
        # two principals' digests ever collided (DESIGN §2).
        if r["p"] != principal or float(r["e"]) <= t:
            return None
        return _record(r)

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
        key = self.record_key(kind, id, principal)
        args = [principal, str(int(expected_version)), text, _f(t)]

        async def run() -> tuple[str, dict[str, Any] | None]:
            reply: str = await CAS_SCRIPT(self._redis, [key], args)
            if not reply:
                return "", None
            r = json.loads(reply[1:])
            if reply[0] == "^":
                await self._raise_index(principal, r, t)
            return reply[0], r

        outcome, r = await self._call(run)
        if r is None:
            raise not_found(kind, id)
        if outcome == "!":
            current = _record(r)
            raise VersionConflict(
                f"{kind} record {id!r} is at version {current.version}, not {expected_version}",
                current=current,
            )
        return _record(r, state)  # the caller's dict: Redis holds the text

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
        key = self.record_key(record.kind, record.id, record.principal)
        args = [record.principal, _f(t), "" if idle_ttl is None else _f(idle_ttl)]

        async def run() -> dict[str, Any] | None:
            reply: str = await TOUCH_SCRIPT(self._redis, [key], args)
            if not reply:
                return None
            r: dict[str, Any] = json.loads(reply[1:])
            if reply[0] == "^":
                await self._raise_index(record.principal, r, t)
            return r

        r = await self._call(run)
        if r is None:
            raise not_found(record.kind, record.id)
        return _record(r)

    async def delete(self, kind: str, id: str, principal: str) -> bool:
        key = self.record_key(kind, id, principal)
        t = clock(None)

        async def run() -> bool:
            result: list[Any] = await DELETE_SCRIPT(self._redis, [key], [principal, _f(t)])
            if result[0] == 0:
                return False
            await self._redis.zrem(self.index_key(principal), _member(kind, id, result[2]))
            return bool(result[1])

        return await self._call(run)

    async def list(
        self, principal: str, *, kind: str | None = None, now: float | None = None
    ) -> list[Record]:
        t = clock(now)
        index = self.index_key(principal)

        async def run() -> list[Record]:
            members = cast(list[str], await self._redis.zrange(index, 0, -1))
            wanted = [(member, json.loads(member)) for member in members]
            if kind is not None:
                wanted = [(member, parsed) for member, parsed in wanted if parsed[0] == kind]
            if not wanted:
                return []
            async with self._redis.pipeline(transaction=False) as pipe:
                for _, (k, i, _inc) in wanted:
                    pipe.get(self.record_key(k, i, principal))
                blobs: list[str | None] = await pipe.execute()
            found: list[Record] = []
            stale: list[str] = []
            for (member, (_k, _i, inc)), blob in zip(wanted, blobs, strict=True):
                r = None if blob is None else json.loads(blob)
                if r is None or r["inc"] != inc or r["p"] != principal:
                    stale.append(member)  # gone or replaced: this incarnation never returns
                elif float(r["e"]) <= t:
                    stale.append(member)  # expired: a miss for ever (create makes a new one)
                else:
                    found.append(_record(r))
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
        await self._redis.aclose()

    async def persistence(self) -> str | None:
        """Why an acknowledged write would not survive a restart of the Redis server, or
        ``None`` if it would (RDB snapshots or AOF on) or the server does not say (``CONFIG``
        disabled or renamed, as managed services often do)."""

        async def ask() -> tuple[Any, Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.config_get("save")
                pipe.config_get("appendonly")
                save, aof = await pipe.execute(raise_on_error=False)
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
