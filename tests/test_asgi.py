"""The shared ASGI/JSON-RPC plumbing (issue #17), driven with ASGI messages directly; the HTTP
behaviour built on it is tested end to end in tests/server, tests/gateway and tests/security."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from mcp_sessions.asgi import (
    Message,
    end_stream,
    read_body,
    replay,
    send_error,
    sse_event,
    wait_disconnect,
)
from mcp_sessions.core.errors import (
    BodyTooLarge,
    InvalidParams,
    InvalidRequest,
    LimitExceeded,
    SessionNotFound,
    StoreUnavailable,
)


class _Client:
    """The client side of one exchange: the messages it sends, the ones it receives."""

    def __init__(self, *incoming: Message) -> None:
        self.incoming = list(incoming)
        self.received = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        self.received += 1
        return self.incoming.pop(0)

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    def answer(self) -> tuple[int, dict[bytes, bytes], Any]:
        start, body = self.sent
        return start["status"], dict(start["headers"]), json.loads(body["body"])


def _chunk(data: bytes, more: bool) -> Message:
    return {"type": "http.request", "body": data, "more_body": more}


def test_read_body_joins_the_chunks() -> None:
    client = _Client(_chunk(b'{"a":', True), _chunk(b" 1}", False))
    assert asyncio.run(read_body(client.receive, 8)) == b'{"a": 1}'


def test_read_body_refuses_at_the_first_chunk_over_the_limit() -> None:
    client = _Client(_chunk(b"x" * 6, True), _chunk(b"x" * 6, True), _chunk(b"x", False))
    with pytest.raises(BodyTooLarge) as refused:
        asyncio.run(read_body(client.receive, 10))
    assert refused.value.limit == 10
    assert client.received == 2  # the rest is never read


def test_replay_gives_the_body_once_then_the_client_messages() -> None:
    client = _Client({"type": "http.disconnect"})
    again = replay(b"{}", client.receive)

    async def both() -> list[Message]:
        return [await again(), await again()]

    first, second = asyncio.run(both())
    assert first == {"type": "http.request", "body": b"{}", "more_body": False}
    assert second == {"type": "http.disconnect"}


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (InvalidParams("bad"), 400, None),
        (SessionNotFound(), 404, None),  # no status of its own: the legacy answer
        (BodyTooLarge(10), 413, None),
        (LimitExceeded(retry_after=2.2), 429, b"3"),  # whole seconds, rounded up
        (StoreUnavailable(retry_after=0.1), 503, b"1"),  # at least 1
    ],
)
def test_send_error_answers_with_the_errors_status_and_retry_after(
    error: Any, status: int, retry_after: bytes | None
) -> None:
    client = _Client()
    assert asyncio.run(send_error(client.send, error, 7)) == status
    sent_status, headers, body = client.answer()
    assert sent_status == status
    assert body == error.response(7)
    assert headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(client.sent[1]["body"])
    assert headers.get(b"retry-after") == retry_after


def test_send_error_takes_an_explicit_status_and_retry_after() -> None:
    client = _Client()
    refusal = InvalidRequest("too many header bytes")
    assert asyncio.run(send_error(client.send, refusal, status=431, retry_after=1)) == 431
    status, headers, body = client.answer()
    assert (status, headers[b"retry-after"]) == (431, b"1")
    assert body == {"jsonrpc": "2.0", "id": None, "error": refusal.to_jsonrpc()}


def test_end_stream_sends_the_error_as_the_last_event() -> None:
    client = _Client()
    asyncio.run(end_stream(client.send, SessionNotFound(), "r1"))
    event, last = client.sent
    assert event["body"] == sse_event(SessionNotFound().response("r1"))
    assert event["body"].startswith(b"event: message\ndata: {")
    assert event["more_body"] is True
    assert last == {"type": "http.response.body", "body": b""}


def test_end_stream_to_a_client_already_gone_raises_nothing() -> None:
    async def gone(message: Message) -> None:
        raise OSError("connection reset")

    asyncio.run(end_stream(gone, SessionNotFound(), 1))


def test_wait_disconnect_returns_at_the_disconnect() -> None:
    client = _Client(_chunk(b"", False), {"type": "http.disconnect"})
    asyncio.run(wait_disconnect(client.receive))
    assert client.received == 2
