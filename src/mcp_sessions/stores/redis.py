"""``redis://host:port/db`` and ``rediss://``: the store shared by many machines (DESIGN §6).

Layout (``prefix`` defaults to ``mcps``):

- ``mcps:{<kind>:<id>}`` — a hash per record. The braces are a Redis Cluster hash tag: every
  key of one record lives in one slot, so each Lua script below touches a single slot.
- ``mcps:principal:{<sha256 of principal>}`` — a sorted set per principal for ``list``; members
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

import hashlib
import json
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
    touch_needs_write,
)
from .base import DEFAULT_TOUCH_FRACTION, AlreadyExists, StoreError, VersionConflict

T = TypeVar("T")

# Floats cross into Lua as strings and come back with %.17g, which round-trips an IEEE double
# exactly (Lua's own tostring keeps only 14 digits). Field names are short: they are repeated
# in every record.
#   k kind, i id, p principal, o origin, ca created_at, ls last_seen, it idle_ttl,
#   mx max_expires_at ('' = no cap), e expires_at, v version, s state, a attributes,
#   inc incarnation (random, per create), ix index deadline (>= e)

# Sets the new expiry from ls / it / mx, the key's TTL from it, and raises the index deadline
# when the expiry passed it. Expects locals: now, ls, it, mx (string), ix (number).
_EXTEND = """
local e = ls + it
if mx ~= '' then e = math.min(e, tonumber(mx)) end
redis.call('HSET', KEYS[1], 'ls', string.format('%.17g', ls),
           'it', string.format('%.17g', it), 'e', string.format('%.17g', e))
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((e - now) * 1000)))
local raised = 0
if e > ix then
  ix = ls + 2 * it
  if mx ~= '' then ix = math.min(ix, tonumber(mx)) end
  redis.call('HSET', KEYS[1], 'ix', string.format('%.17g', ix))
  raised = 1
end
"""

# KEYS[1] record; ARGV now, ttl_ms, field, value, ...
_CREATE = """
local e = redis.call('HGET', KEYS[1], 'e')
if e and tonumber(e) > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS[1] record; ARGV principal, expected version, state, now
# -> {0} not found | {1, current} conflict | {2, new, raised}
_CAS = (
    """
local h = redis.call('HMGET', KEYS[1], 'p', 'v', 'ls', 'it', 'mx', 'e', 'ix')
local now = tonumber(ARGV[4])
if not h[1] or h[1] ~= ARGV[1] or tonumber(h[6]) <= now then return {0} end
if h[2] ~= ARGV[2] then return {1, redis.call('HGETALL', KEYS[1])} end
redis.call('HSET', KEYS[1], 's', ARGV[3], 'v', tostring(tonumber(h[2]) + 1))
local ls = math.max(tonumber(h[3]), now)
local it = tonumber(h[4])
local mx = h[5]
local ix = tonumber(h[7])
"""
    + _EXTEND
    + """
return {2, redis.call('HGETALL', KEYS[1]), raised}
"""
)

# KEYS[1] record; ARGV principal, now, new idle_ttl or ''
# -> {0} not found | {2, new, raised}
_TOUCH = (
    """
local h = redis.call('HMGET', KEYS[1], 'p', 'ls', 'it', 'mx', 'e', 'ix')
local now = tonumber(ARGV[2])
if not h[1] or h[1] ~= ARGV[1] or tonumber(h[5]) <= now then return {0} end
local ls = math.max(tonumber(h[2]), now)
local it = tonumber(h[3])
if ARGV[3] ~= '' then it = tonumber(ARGV[3]) end
local mx = h[4]
local ix = tonumber(h[6])
"""
    + _EXTEND
    + """
return {2, redis.call('HGETALL', KEYS[1]), raised}
"""
)

# KEYS[1] record; ARGV principal, now -> {0} | {1, live, incarnation}
_DELETE = """
local h = redis.call('HMGET', KEYS[1], 'p', 'e', 'inc')
if not h[1] or h[1] ~= ARGV[1] then return {0} end
redis.call('DEL', KEYS[1])
local live = 0
if tonumber(h[2]) > tonumber(ARGV[2]) then live = 1 end
return {1, live, h[3]}
"""

# KEYS[1] principal index; ARGV deadline, member, now, ttl_ms
_INDEX = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return 1
"""


class _Script:
    """A Lua script run by EVALSHA, loaded on first NOSCRIPT (e.g. after a server restart)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, client: aioredis.Redis, keys: list[str], args: list[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except redis_errors.NoScriptError:
            await client.script_load(self.text)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


_CREATE_SCRIPT = _Script(_CREATE)
_CAS_SCRIPT = _Script(_CAS)
_TOUCH_SCRIPT = _Script(_TOUCH)
_DELETE_SCRIPT = _Script(_DELETE)
_INDEX_SCRIPT = _Script(_INDEX)


def _f(value: float) -> str:
    """A float as text that reads back to the same double (Python's repr is shortest exact)."""
    return repr(float(value))


def _ms(seconds: float) -> int:
    """A positive TTL in milliseconds, rounded up so the key never outlives nothing."""
    return max(1, math.ceil(seconds * 1000))


def _index_deadline(last_seen: float, idle_ttl: float, cap: float) -> float:
    """How long an index member stays valid without being raised: two idle TTLs, at most the
    cap. Raising it again costs one extra round trip, at most once per idle TTL."""
    return min(last_seen + 2 * idle_ttl, cap)


def _pairs(flat: list[Any]) -> dict[str, str]:
    return {str(flat[n]): str(flat[n + 1]) for n in range(0, len(flat), 2)}


def _record(h: Mapping[str, str]) -> Record:
    mx = h["mx"]
    return Record(
        kind=h["k"],
        id=h["i"],
        principal=h["p"],
        origin=h["o"],
        created_at=float(h["ca"]),
        last_seen=float(h["ls"]),
        idle_ttl=float(h["it"]),
        max_expires_at=math.inf if mx == "" else float(mx),
        version=int(h["v"]),
        state=_load_json(h["s"]),
        attributes=_load_json(h["a"]),
    )


def _load_json(text: str) -> JSONObject:
    return {} if text == "{}" else decode_json(text)


def _live(h: Mapping[str, str], principal: str, now: float) -> bool:
    return bool(h) and h.get("p") == principal and float(h["e"]) > now


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
        connect_timeout: float = 3.0,
        timeout: float = 3.0,
        retries: int = 1,
        touch_fraction: float = DEFAULT_TOUCH_FRACTION,
        tls_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = hide_password(url)
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.prefix = prefix
        self.timeout = timeout
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

    def record_key(self, kind: str, id: str) -> str:
        """The record's key; the braces keep all of one record's keys in one cluster slot."""
        return f"{self.prefix}:{{{kind}:{id}}}"

    def index_key(self, principal: str) -> str:
        digest = hashlib.sha256(principal.encode()).hexdigest()[:32]
        return f"{self.prefix}:principal:{{{digest}}}"

    def _scrub(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run one exchange with Redis, turning driver errors into :class:`StoreError`."""
        if self._closed:
            raise StoreError(f"Redis store {self.url} is closed")
        where = f"Redis store {self.url} ({self.address})"
        try:
            return await fn()
        except redis_errors.AuthenticationError as exc:
            raise StoreError(f"{where}: authentication failed: {self._scrub(str(exc))}") from None
        except redis_errors.TimeoutError:
            raise StoreError(
                f"{where}: no answer within timeout={self.timeout:g}s; is the server up and "
                "is this the right port?"
            ) from None
        except redis_errors.ConnectionError as exc:
            raise StoreError(f"{where}: cannot connect: {self._scrub(str(exc))}") from None
        except redis_errors.ResponseError as exc:
            raise StoreError(f"{where}: Redis refused a command: {self._scrub(str(exc))}") from None
        except redis_errors.RedisError as exc:
            raise StoreError(f"{where}: {type(exc).__name__}: {self._scrub(str(exc))}") from None
        except OSError as exc:  # e.g. TLS setup
            raise StoreError(f"{where}: {self._scrub(str(exc))}") from None

    async def _hgetall(self, key: str) -> dict[str, str]:
        # decode_responses=True: redis-py types the answer as bytes | str, it is str here.
        return cast(dict[str, str], await self._redis.hgetall(key))

    async def _raise_index(self, principal: str, h: Mapping[str, str], now: float) -> None:
        member = json.dumps([h["k"], h["i"], h["inc"]], separators=(",", ":"))
        deadline = float(h["ix"])
        await _INDEX_SCRIPT(
            self._redis,
            [self.index_key(principal)],
            [_f(deadline), member, _f(now), _ms(deadline - now)],
        )

    # -- the Store contract --------------------------------------------------------------

    async def create(self, record: Record) -> None:
        check_idle_ttl(record.idle_ttl)
        now = record.last_seen  # the moment the record claims to be created at
        expiry = record.expires_at
        deadline = _index_deadline(record.last_seen, record.idle_ttl, record.max_expires_at)
        incarnation = secrets.token_hex(8)
        fields: dict[str, str] = {
            "k": record.kind,
            "i": record.id,
            "p": record.principal,
            "o": record.origin,
            "ca": _f(record.created_at),
            "ls": _f(record.last_seen),
            "it": _f(record.idle_ttl),
            "mx": "" if math.isinf(record.max_expires_at) else _f(record.max_expires_at),
            "e": _f(expiry),
            "v": str(int(record.version)),
            "s": encode_json(record.state, "state"),
            "a": encode_json(record.attributes, "attributes"),
            "inc": incarnation,
            "ix": _f(deadline),
        }
        args: list[Any] = [_f(now), _ms(expiry - now)]
        for name, value in fields.items():
            args += [name, value]
        key = self.record_key(record.kind, record.id)

        async def run() -> None:
            # Index first: a crash between the two leaves a stale member (skipped by list),
            # never a record that list cannot see.
            await self._raise_index(record.principal, fields, now)
            if not await _CREATE_SCRIPT(self._redis, [key], args):
                member = json.dumps([record.kind, record.id, incarnation], separators=(",", ":"))
                await self._redis.zrem(self.index_key(record.principal), member)
                raise AlreadyExists(f"a live {record.kind} record with id {record.id!r} exists")

        await self._call(run)

    async def get(
        self, kind: str, id: str, principal: str, *, now: float | None = None
    ) -> Record | None:
        t = clock(now)
        key = self.record_key(kind, id)
        h = await self._call(lambda: self._hgetall(key))
        # Another principal's record and an expired one answer like a missing one (DESIGN §2).
        if not _live(h, principal, t):
            return None
        return _record(h)

    async def compare_and_set(
        self,
        kind: str,
        id: str,
        principal: str,
        expected_version: int,
        state: JSONObject,
        *,
        now: float | None = None,
    ) -> Record:
        t = clock(now)
        text = encode_json(state, "state")
        key = self.record_key(kind, id)
        args = [principal, str(int(expected_version)), text, _f(t)]

        async def run() -> list[Any]:
            result: list[Any] = await _CAS_SCRIPT(self._redis, [key], args)
            if result[0] == 2 and result[2]:
                await self._raise_index(principal, _pairs(result[1]), t)
            return result

        result = await self._call(run)
        if result[0] == 0:
            raise not_found(kind, id)
        current = _record(_pairs(result[1]))
        if result[0] == 1:
            raise VersionConflict(
                f"{kind} record {id!r} is at version {current.version}, not {expected_version}",
                current=current,
            )
        return current

    async def touch(
        self,
        record: Record,
        *,
        now: float | None = None,
        force: bool = False,
        idle_ttl: float | None = None,
    ) -> Record:
        check_idle_ttl(idle_ttl)
        t = clock(now)
        if not touch_needs_write(
            record, t, force=force, idle_ttl=idle_ttl, fraction=self.touch_fraction
        ):
            # The cheap path trusts the record the caller has just read (DESIGN §6).
            if record.is_expired(t):
                raise not_found(record.kind, record.id)
            return record
        key = self.record_key(record.kind, record.id)
        args = [record.principal, _f(t), "" if idle_ttl is None else _f(idle_ttl)]

        async def run() -> list[Any]:
            result: list[Any] = await _TOUCH_SCRIPT(self._redis, [key], args)
            if result[0] == 2 and result[2]:
                await self._raise_index(record.principal, _pairs(result[1]), t)
            return result

        result = await self._call(run)
        if result[0] == 0:
            raise not_found(record.kind, record.id)
        return _record(_pairs(result[1]))

    async def delete(self, kind: str, id: str, principal: str) -> bool:
        key = self.record_key(kind, id)
        t = clock(None)

        async def run() -> bool:
            result: list[Any] = await _DELETE_SCRIPT(self._redis, [key], [principal, _f(t)])
            if result[0] == 0:
                return False
            member = json.dumps([kind, id, result[2]], separators=(",", ":"))
            await self._redis.zrem(self.index_key(principal), member)
            return bool(result[1])

        return await self._call(run)

    async def list(
        self, principal: str, *, kind: str | None = None, now: float | None = None
    ) -> list[Record]:
        t = clock(now)
        index = self.index_key(principal)

        async def run() -> list[Record]:
            members = cast(list[str], await self._redis.zrange(index, 0, -1))
            wanted: list[tuple[str, list[str]]] = []
            stale: list[str] = []
            for member in members:
                parsed = json.loads(member)
                if kind is None or parsed[0] == kind:
                    wanted.append((member, parsed))
            if not wanted:
                return []
            async with self._redis.pipeline(transaction=False) as pipe:
                for _, (k, i, _inc) in wanted:
                    pipe.hgetall(self.record_key(k, i))
                hashes: list[dict[str, str]] = await pipe.execute()
            found: list[Record] = []
            for (member, (_k, _i, inc)), h in zip(wanted, hashes, strict=True):
                if h.get("inc") != inc or h.get("p") != principal:
                    stale.append(member)  # gone or replaced: this incarnation never returns
                elif float(h["e"]) <= t:
                    stale.append(member)  # expired: a miss forever (create makes a new one)
                else:
                    found.append(_record(h))
            if stale:
                await self._redis.zrem(index, *stale)
            found.sort(key=lambda r: (r.created_at, r.kind, r.id))
            return found

        return await self._call(run)

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

    async def __aenter__(self) -> RedisStore:
        await self.ping()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
