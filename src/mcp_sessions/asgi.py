"""ASGI and JSON-RPC plumbing shared by every HTTP entry point of the project: the served app's
legacy gate (:mod:`.server.http`) and the gateway (:mod:`.gateway.asgi` and its backends).

It owns, once (issue #17):

* reading a request body under a size limit, and replaying a body already read to the app
  behind (which then reads it as if from the client);
* plain answers: JSON, an empty status, and JSON-RPC error answers whose body is
  :meth:`~.core.errors.SessionError.response` and whose status is the error's own, with
  ``Retry-After`` when the error says when to retry;
* the event-stream pieces: the SSE ``message`` frame, the error event that ends a stream whose
  status already went out, and the watch for a client that goes away;
* the header field names these use, as ASGI spells them (lowercase bytes): the standard ones
  here, the MCP ones derived from :mod:`.core.names`, which alone spells them.

No policy lives here: which limit, which error and which status a request gets is the caller's.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .core.errors import BodyTooLarge, InvalidRequest, SessionError, SessionNotFound
from .core.names import HEADER_LEGACY_SESSION_ID, HEADER_PROTOCOL_VERSION
from .core.websocket import CLOSE_POLICY_VIOLATION, SUBPROTOCOL, select_subprotocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Standard header fields (RFC 9110) as ASGI names them.
CONTENT_TYPE = b"content-type"
CONTENT_LENGTH = b"content-length"
#: RFC 9110 §10.2.3: when to retry, in whole seconds.
RETRY_AFTER = b"retry-after"

JSON_MEDIA_TYPE = b"application/json"
#: Streamable HTTP's streamed responses (spec §2.1).
EVENT_STREAM_MEDIA_TYPE = b"text/event-stream"

#: MCP header fields as ASGI names them (lowercase): the legacy session id as text (a
#: mapping key) and as bytes (raw ASGI header lists), and the protocol version.
LEGACY_SESSION_FIELD = HEADER_LEGACY_SESSION_ID.lower()
LEGACY_SESSION_FIELD_BYTES = LEGACY_SESSION_FIELD.encode("latin-1")
PROTOCOL_VERSION_FIELD = HEADER_PROTOCOL_VERSION.lower()


# -- the request body ------------------------------------------------------------------------


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, at most ``limit`` bytes: past that, :class:`BodyTooLarge` is
    raised as soon as the bytes read pass the limit (the rest is never read). A client that
    goes away mid-body leaves what it sent."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` (already read from ``receive``) once, whole, then
    passes on whatever ``receive`` gives next (the disconnect notice)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


# -- plain answers ---------------------------------------------------------------------------


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = JSON_MEDIA_TYPE,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """A whole response: ``body`` with its type and length, and ``extra_headers``."""
    headers = [(CONTENT_TYPE, content_type), (CONTENT_LENGTH, str(len(body)).encode())]
    if extra_headers:
        headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Send,
    status: int,
    payload: Any,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send_bytes(send, status, json.dumps(payload).encode(), extra_headers=extra_headers)


async def send_empty(send: Send, status: int) -> None:
    """A response with no body and no header fields (202 Accepted, 204 No Content)."""
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def retry_after_field(seconds: float) -> tuple[bytes, bytes]:
    """``Retry-After`` for ``seconds``: whole seconds, at least 1 (RFC 9110 §10.2.3)."""
    return RETRY_AFTER, str(max(1, math.ceil(seconds))).encode()


async def send_error(
    send: Send,
    error: SessionError,
    request_id: Any = None,
    *,
    status: int | None = None,
    retry_after: float | None = None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> int:
    """Answer with ``error`` as a JSON-RPC error response; returns the HTTP status used.

    Without an explicit status: the error's own, 404 for SessionNotFound (DESIGN §5: the
    legacy answer for a gone session, and the one SEP-1372 clients act on), else 400.
    ``Retry-After`` is sent for ``retry_after`` seconds, else for the error's own
    ``retry_after`` when it has one (429 for a quota, 503 for a store outage: issue #12).
    """
    code = status or error.http_status or (404 if isinstance(error, SessionNotFound) else 400)
    headers = list(extra_headers or ())
    seconds = retry_after if retry_after is not None else getattr(error, "retry_after", None)
    if seconds is not None:
        headers.append(retry_after_field(seconds))
    await send_json(send, code, error.response(request_id), extra_headers=headers)
    return code


# -- event streams ---------------------------------------------------------------------------


def sse_event(message: Any) -> bytes:
    """One JSON-RPC message as a Streamable HTTP SSE ``message`` event (spec §2.1)."""
    return b"event: message\ndata: " + json.dumps(message).encode() + b"\n\n"


async def end_stream(send: Send, error: SessionError, request_id: Any) -> None:
    """End an event stream whose status already went out with the error the request is owed:
    a second status line is impossible, so the JSON-RPC error is the stream's last event."""
    with contextlib.suppress(Exception):  # the client may be gone already
        event = sse_event(error.response(request_id))
        await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


async def wait_disconnect(receive: Receive) -> None:
    """Return when the client goes away (``http.disconnect``): raced against a long response
    so that it does not outlive its reader. Only once the body has been read."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


# -- WebSocket handshake refusals (issue #16) --------------------------------------------------

_DENIAL = "websocket.http.response"


def denial_send(scope: Scope, send: Send) -> Send:
    """``send`` for a WebSocket scope on which HTTP responses (the SDK's 401, our 403) become
    the handshake's refusal: the ASGI denial-response extension where the server has it
    (uvicorn does), else a close before accept (which servers answer with 403)."""
    extended = _DENIAL in (scope.get("extensions") or {})

    async def translated(message: Message) -> None:
        kind = message["type"].removeprefix("websocket.")
        if kind.startswith("http.response."):
            if extended:
                await send({**message, "type": "websocket." + kind})
            elif kind == "http.response.start":
                await send({"type": "websocket.close", "code": CLOSE_POLICY_VIOLATION})
            return
        await send(message)

    return translated


async def refuse_handshake(scope: Scope, send: Send, status: int, message: str) -> None:
    """Refuse the upgrade with ``status`` and a JSON-RPC error body (-32600, id null)."""
    body = json.dumps(InvalidRequest(message).response()).encode()
    out = denial_send(scope, send)
    await out(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await out({"type": "http.response.body", "body": body})


async def negotiate_handshake(scope: Scope, send: Send) -> Message | None:
    """The ``websocket.accept`` message for the subprotocols the client offered (RFC 6455
    §4.2.2, :func:`~mcp_sessions.core.websocket.select_subprotocol`), or ``None`` once the
    handshake has been refused (400) for offering no ``mcp``."""
    accept, selected = select_subprotocol(list(scope.get("subprotocols") or ()))
    if not accept:
        await refuse_handshake(
            scope, send, 400, f"Unsupported WebSocket subprotocol: offer {SUBPROTOCOL!r}"
        )
        return None
    accepted: Message = {"type": "websocket.accept"}
    if selected is not None:
        accepted["subprotocol"] = selected
    return accepted
