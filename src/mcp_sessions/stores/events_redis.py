"""The Redis event log: one Redis Stream per SSE stream (issue #15 item 3).

Key ``<prefix>:events:{<session>}:<token>`` (the hash tag keeps a session's streams in one
cluster slot); entries ``{n: <SDK stream name>, d: <JSON-RPC text>}`` (no ``d``: a priming
event). Positions are the stream's entry ids. ``XADD … MAXLEN max_events`` and ``PEXPIRE``
go in one pipeline (one round trip; one key, so one node of a cluster); waiting for a new
event is ``XREAD BLOCK`` in slices shorter than the socket timeout. The session store's own
client and error mapping are used, so an outage is :class:`StoreUnavailable` here too.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ._events_common import EventId, Replay, stream_token

if TYPE_CHECKING:
    from .redis import RedisStore


class RedisEventLog:
    def __init__(
        self, store: RedisStore, *, max_events: int, max_event_bytes: int, ttl: float
    ) -> None:
        self.store = store
        self.max_events = max_events
        self.max_event_bytes = max_event_bytes
        self.ttl = ttl

    def key(self, session: str, token: str) -> str:
        return f"{self.store.prefix}:events:{{{session}}}:{token}"

    async def append(self, session: str, stream: str, data: str | None) -> str:
        token = stream_token(stream)
        key = self.key(session, token)
        fields: dict[str, str] = {"n": stream}
        if data is not None:
            fields["d"] = data
        client = self.store._redis
        ttl_ms = max(1, int(self.ttl * 1000))

        async def run() -> str:
            async with client.pipeline(transaction=False) as pipe:
                pipe.xadd(key, fields, maxlen=self.max_events, approximate=False)  # type: ignore[arg-type]
                pipe.pexpire(key, ttl_ms)
                position, _ = await pipe.execute()
            return str(position)

        position = await self.store._call(run)
        return f"{session}.{token}.{position}"

    async def after(self, event: EventId, *, wait: float = 0.0) -> Replay | None:
        key = self.key(event.session, event.token)
        if "-" not in event.position:
            return None  # another log's id
        client = self.store._redis
        # Slices of a blocking read end before the socket timeout would cut them.
        slice_ms = max(10, int(self.store.timeout * 500))
        deadline = time.monotonic() + wait

        async def read() -> tuple[str | None, list[Any]]:
            entries: list[Any] = list(
                await client.xrange(key, f"({event.position}", "+", count=self.max_events) or []
            )
            if entries:
                return str(entries[0][1]["n"]), entries
            last: list[Any] = list(await client.xrevrange(key, "+", "-", count=1) or [])
            return (str(last[0][1]["n"]) if last else None), []

        name, entries = await self.store._call(read)
        while name is not None and not entries:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            block = min(slice_ms, max(1, int(remaining * 1000)))

            async def tail(block: int = block) -> list[Any]:
                reply: Any = await client.xread(
                    {key: event.position}, count=self.max_events, block=block
                )
                if isinstance(reply, dict):  # RESP3: {key: [entries]} (or [[entries]])
                    reply = [(name, value) for name, value in reply.items()]
                if not reply:
                    return []
                entries = reply[0][1]
                return list(entries[0] if entries and isinstance(entries[0], list) else entries)

            entries = await self.store._call(tail)
        if name is None:
            return None
        prefix = f"{event.session}.{event.token}."
        return Replay(name, [(prefix + str(eid), fields.get("d")) for eid, fields in entries])

    async def close(self) -> None:
        return None  # the client is the session store's
