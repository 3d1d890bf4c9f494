"""``RedisStore.scan``: every live record, for operators (issue #13), in a module of its own so
that the request path in ``redis.py`` stays as it is.

Records are found with ``SCAN MATCH`` on their key pattern (``<prefix>:{<kind>:<principal
digest>:<id>}``, a known part filled in, the rest ``*``) and read with ``GET`` in pipelined
batches. Nothing is written: stale index members stay for ``list`` to remove, and expired
records are left to Redis. ``SCAN`` walks the whole keyspace (``COUNT`` keys a step), so its
cost grows with the database, which is why request handling never calls it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from ..core.records import JSONObject, Record
from ._common import clock, decode_lenient, scan_matches, scan_order
from ._redis_records import read_value
from .base import StoreError

T = TypeVar("T")

#: ``redis._record``: a stored object as a record, with its state already decoded.
Decode = Callable[[Mapping[str, Any], JSONObject], Record]


class _RedisStore(Protocol):
    """What of :class:`~mcp_sessions.stores.redis.RedisStore` a scan uses (this module is
    imported by it, so it cannot import it back)."""

    prefix: str
    _redis: Any

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T: ...


#: Keys asked for per SCAN step, and records read per pipelined batch of GETs.
SCAN_COUNT = 1000
GET_BATCH = 500

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob pattern."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def record_pattern(
    prefix: str,
    digest: Callable[[str], str],
    *,
    principal: str | None,
    kind: str | None,
    id: str | None,
) -> str:
    """The ``SCAN MATCH`` pattern of the record keys that may answer the filters."""
    kind_part = "*" if kind is None else glob_escape(kind)
    digest_part = "*" if principal is None else digest(principal)
    id_part = "*" if id is None else glob_escape(id)
    return f"{glob_escape(prefix)}:{{{kind_part}:{digest_part}:{id_part}}}"


async def scan_records(
    store: _RedisStore,
    digest: Callable[[str], str],
    decode: Decode,
    *,
    principal: str | None = None,
    kind: str | None = None,
    id: str | None = None,
    now: float | None = None,
) -> list[Record]:
    """The :meth:`~mcp_sessions.stores.base.Store.scan` of a Redis store."""
    t = clock(now)
    pattern = record_pattern(store.prefix, digest, principal=principal, kind=kind, id=id)
    client = store._redis

    async def run() -> list[Record]:
        keys = [key async for key in client.scan_iter(match=pattern, count=SCAN_COUNT)]
        found: list[Record] = []
        for start in range(0, len(keys), GET_BATCH):
            async with client.pipeline(transaction=False) as pipe:
                for key in keys[start : start + GET_BATCH]:
                    pipe.get(key)
                blobs: list[str | None] = await pipe.execute()
            for blob in blobs:
                record = _matching(blob, decode, principal, kind, id, t)
                if record is not None:
                    found.append(record)
        found.sort(key=scan_order)
        return found

    return await store._call(run)


def _matching(
    blob: str | None,
    decode: Decode,
    principal: str | None,
    kind: str | None,
    id: str | None,
    now: float,
) -> Record | None:
    """The live record in ``blob`` if it answers the filters (the pattern is only a first
    cut: a principal digest could collide, and an id could contain ``:``)."""
    if blob is None:
        return None  # expired or deleted between SCAN and GET
    try:
        r = read_value(blob).fields  # the tag + JSON value (stores/_redis_records.py)
        if float(r["e"]) <= now:
            return None
        record = decode({**r, "a": "{}"}, decode_lenient(str(r["s"])))
        if not scan_matches(record, principal, kind, id):
            return None
        return record._replace(attributes=decode_lenient(str(r["a"])))
    except (StoreError, ValueError, KeyError, TypeError):
        return None  # a key under the prefix that is not one of this store's records
