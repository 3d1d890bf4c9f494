"""Event logs: the SSE events of legacy streams, kept where every replica reads them (issue
#15 item 3), so that a 2025-11-25 client resumes a stream with ``Last-Event-ID`` on any
replica (Streamable HTTP §"Resumability and Redelivery").

One log per deployment, next to the session store: :func:`open_event_log` gives the Redis
log for a Redis store (a Redis Stream per SSE stream) and the SQLite log for an SQLite store
(a table in the same file); other stores have none (a memory store lives in one process,
where the SDK's own transport holds its streams).

An event id is ``<session id>.<stream token>.<position>``: the session it belongs to (so a
replica can refuse another session's id before reading anything), 16 hex digits of SHA-256
of the SDK's stream name (a request id or the GET stream's name, unique only within one
session), and the position in that stream. Bounded: at most ``max_events`` per stream (the
oldest are dropped), ``max_event_bytes`` per event (a larger one is not kept: a resumed
stream has a gap there), and every stream expires ``ttl`` seconds after its last event.
"""

from __future__ import annotations

from typing import Protocol

from ._events_common import (
    DEFAULT_EVENT_TTL,
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_EVENTS,
    EventId,
    MalformedEventId,
    Replay,
    stream_token,
)
from .base import Store


class EventLog(Protocol):
    """Where legacy SSE events are kept for resumption."""

    async def append(self, session: str, stream: str, data: str | None) -> str:
        """Keep one event of ``stream`` (the SDK's name) of ``session``; its id."""
        ...

    async def after(self, event: EventId, *, wait: float = 0.0) -> Replay | None:
        """The events after ``event`` in its stream (at most ``max_events``), waiting up to
        ``wait`` seconds for one if there are none yet; ``None`` if the stream is unknown
        or expired."""
        ...

    async def close(self) -> None: ...


def open_event_log(
    store: Store,
    *,
    max_events: int = DEFAULT_MAX_EVENTS,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ttl: float = DEFAULT_EVENT_TTL,
) -> EventLog | None:
    """The event log beside ``store`` (unwrapped from any guard), or ``None`` for a store
    that lives in one process."""
    inner = getattr(store, "inner", store)
    from .sqlite import SQLiteStore

    if isinstance(inner, SQLiteStore):
        from .events_sqlite import SQLiteEventLog

        return SQLiteEventLog(
            inner.path,
            busy_timeout=inner.busy_timeout,
            max_events=max_events,
            max_event_bytes=max_event_bytes,
            ttl=ttl,
        )
    try:
        from .redis import RedisStore
    except ImportError:
        return None
    if isinstance(inner, RedisStore):
        from .events_redis import RedisEventLog

        return RedisEventLog(inner, max_events=max_events, max_event_bytes=max_event_bytes, ttl=ttl)
    return None


__all__ = [
    "DEFAULT_EVENT_TTL",
    "DEFAULT_MAX_EVENTS",
    "DEFAULT_MAX_EVENT_BYTES",
    "EventId",
    "EventLog",
    "MalformedEventId",
    "Replay",
    "open_event_log",
    "stream_token",
]
