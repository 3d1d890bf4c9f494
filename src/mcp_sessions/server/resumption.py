"""Resumable legacy streams on any replica (issue #15 item 3; Streamable HTTP 2025-11-25,
"Resumability and Redelivery").

The SDK's stateful transport stores each SSE event it sends through an ``EventStore`` and,
given ``Last-Event-ID`` on a GET, replays what followed — on the process that holds the
session's connection. :class:`SharedEventStore` is that ``EventStore`` over the deployment's
event log (:mod:`mcp_sessions.stores.events`), so the events are where every replica reads
them, and :func:`resume_elsewhere` serves the GET on a replica that does *not* hold the
connection: it replays the events after the id from the log and then follows the log for
new ones (the replica that runs the request keeps appending them) until the request's
response has gone out, the client leaves, or ``tail_seconds`` pass (the client then resumes
again from the last id it saw).

The SDK names streams per connection (a request id, or its GET stream), so the log needs the
session too: the legacy gate binds every request it hands to the SDK to its session id
(:func:`bind`); the SDK runs a session's work in tasks started from its ``initialize``
request, which inherit that binding (context variables are copied into new tasks). The id of
an event names its session, and a replay for another session than the request's replays
nothing: one client cannot read another's stream by guessing ids.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp_types import JSONRPCMessage, jsonrpc_message_adapter

from ..asgi import Receive, Scope, Send, send_error, wait_disconnect
from ..core.errors import InvalidRequest
from ..core.names import HEADER_LAST_EVENT_ID
from ..stores.base import StoreError
from ..stores.events import EventId as LogEventId
from ..stores.events import EventLog, MalformedEventId

logger = logging.getLogger("mcp_sessions.server")

#: The lowercase ASGI header name of ``Last-Event-ID``.
LAST_EVENT_ID_FIELD = HEADER_LAST_EVENT_ID.lower()

#: Seconds a replica that does not hold the connection follows a resumed stream.
DEFAULT_TAIL_SECONDS = 30.0

#: Resumed streams one process follows at once. Each holds a request open and, on Redis, a
#: connection in a blocking read; past this a resume replays what is there and ends at once
#: (the client resumes again), so no client can pin an unbounded share of either.
MAX_FOLLOWED = 256

#: The SDK's name of the standalone (GET) stream; it has no final response.
_GET_STREAM = "_GET_stream"


@dataclass
class _Binding:
    """The session a request (and the tasks it starts) works for; ``None`` until known (an
    ``initialize`` learns its id from the SDK's response)."""

    session: str | None = None


_binding: contextvars.ContextVar[_Binding | None] = contextvars.ContextVar(
    "mcp_sessions_event_session", default=None
)


@contextlib.contextmanager
def bind(session: str | None) -> Iterator[_Binding]:
    """Bind the current request to ``session`` (set ``.session`` later if not yet known)."""
    binding = _Binding(session)
    token = _binding.set(binding)
    try:
        yield binding
    finally:
        _binding.reset(token)


def learn(session: str) -> None:
    """The current request's session id has just become known (an ``initialize``): the
    tasks it started, which will run the session, file their events under it."""
    binding = _binding.get()
    if binding is not None and binding.session is None:
        binding.session = session


class SharedEventStore(EventStore):
    """The SDK's ``EventStore`` over a shared :class:`EventLog`. Never raises into the SDK
    (an exception in ``store_event`` would end the session's message router): an event it
    cannot keep is logged and sent anyway, and a resume past it has a gap."""

    def __init__(self, log: EventLog, *, max_event_bytes: int) -> None:
        self.log = log
        self.max_event_bytes = max_event_bytes

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        binding = _binding.get()
        session = binding.session if binding is not None else None
        if session is None:
            return f"unbound.{'0' * 16}.0"  # not resumable: no session to file it under
        data = None
        if message is not None:
            data = message.model_dump_json(by_alias=True, exclude_unset=True)
            if len(data) > self.max_event_bytes:
                logger.warning(
                    "legacy session event of %d bytes not kept for resumption (limit %d)",
                    len(data),
                    self.max_event_bytes,
                )
                return f"{session}.{'0' * 16}.0"
        try:
            return await self.log.append(session, str(stream_id), data)
        except StoreError as error:
            logger.warning("legacy session event not kept for resumption: %s", error)
            return f"{session}.{'0' * 16}.0"

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        binding = _binding.get()
        try:
            event = LogEventId.parse(last_event_id)
        except MalformedEventId:
            return None
        if binding is None or binding.session != event.session:
            return None  # another session's stream: nothing, as for an unknown id
        try:
            replay = await self.log.after(event)
        except StoreError as error:
            logger.warning("cannot replay legacy stream: %s", error)
            return None
        if replay is None:
            return None
        for event_id, data in replay.events:
            if data is not None:
                message = jsonrpc_message_adapter.validate_json(data)
                await send_callback(EventMessage(message, event_id))
        return replay.stream


def _frame(event_id: str, data: str) -> bytes:
    return f"id: {event_id}\nevent: message\ndata: {data}\n\n".encode()


def _ends_stream(stream: str, data: str) -> bool:
    """Whether ``data`` is the response that ends a request's stream."""
    if stream == _GET_STREAM:
        return False
    try:
        message = json.loads(data)
    except ValueError:
        return False
    return isinstance(message, dict) and "method" not in message and "id" in message


class Followed:
    """How many resumed streams this process follows now, against :data:`MAX_FOLLOWED`."""

    def __init__(self, limit: int = MAX_FOLLOWED) -> None:
        self.limit = limit
        self.now = 0


async def resume_elsewhere(
    log: EventLog,
    session_id: str,
    last_event_id: str,
    receive: Receive,
    send: Send,
    *,
    followed: Followed,
    tail_seconds: float = DEFAULT_TAIL_SECONDS,
) -> None:
    """Answer a GET with ``Last-Event-ID`` for ``session_id`` (already checked against the
    store for the caller's principal) on a replica without its connection."""
    try:
        cursor = LogEventId.parse(last_event_id)
    except MalformedEventId as error:
        await send_error(send, InvalidRequest(f"{HEADER_LAST_EVENT_ID}: {error}"))
        return
    if cursor.session != session_id:
        await send_error(
            send,
            InvalidRequest(f"{HEADER_LAST_EVENT_ID} names an event of another session"),
        )
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream"),
                (b"cache-control", b"no-cache, no-transform"),
            ],
        }
    )
    if followed.now >= followed.limit:
        tail_seconds = 0.0  # replay what is there, follow nothing
    followed.now += 1
    deadline = time.monotonic() + tail_seconds

    async def follow() -> None:
        nonlocal cursor
        first = True
        while (remaining := deadline - time.monotonic()) > 0 or first:
            first = False
            try:
                replay = await log.after(cursor, wait=max(0.0, min(remaining, 5.0)))
            except StoreError as error:
                logger.warning("cannot follow resumed legacy stream: %s", error)
                return
            if replay is None:
                return  # unknown or expired: nothing more will come
            for event_id, data in replay.events:
                cursor = LogEventId.parse(event_id)
                if data is None:
                    continue  # a priming event: the client has its id already
                body = _frame(event_id, data)
                await send({"type": "http.response.body", "body": body, "more_body": True})
                if _ends_stream(replay.stream, data):
                    return

    try:
        async with anyio.create_task_group() as group:

            async def until_disconnect() -> None:
                await wait_disconnect(receive)
                group.cancel_scope.cancel()

            group.start_soon(until_disconnect)
            with contextlib.suppress(OSError):
                await follow()
            group.cancel_scope.cancel()
    finally:
        followed.now -= 1
    with contextlib.suppress(Exception):  # the client may be gone already
        await send({"type": "http.response.body", "body": b""})


def last_event_id(scope: Scope) -> str | None:
    """The request's ``Last-Event-ID``, if any."""
    for name, value in scope.get("headers", []):
        if name.lower() == LAST_EVENT_ID_FIELD.encode():
            text: str = value.decode("latin-1")
            return text
    return None


__all__ = [
    "DEFAULT_TAIL_SECONDS",
    "MAX_FOLLOWED",
    "Followed",
    "SharedEventStore",
    "bind",
    "last_event_id",
    "learn",
    "resume_elsewhere",
]
