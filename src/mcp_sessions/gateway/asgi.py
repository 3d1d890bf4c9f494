"""ASGI plumbing shared by both backends: the incoming request, limits, plain answers, and
the event-stream pieces (SSE frame, the error that ends a cut stream, the disconnect watch)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from ..core.errors import SessionError, SessionNotFound
from ..core.names import HEADER_LEGACY_SESSION_ID, HEADER_PROTOCOL_VERSION, META_PROTOCOL_VERSION
from .errors import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Hop-by-hop fields (RFC 9110 §7.6.1) — never forwarded, in either direction.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


#: MCP header fields as ASGI names them (lowercase), derived once from :mod:`..core.names`,
#: which alone spells them: the legacy session id as text (a :class:`HeaderView` key) and as
#: bytes (raw ASGI and upstream fields), and the protocol version.
LEGACY_SESSION_FIELD = HEADER_LEGACY_SESSION_ID.lower()
LEGACY_SESSION_FIELD_BYTES = LEGACY_SESSION_FIELD.encode("latin-1")
PROTOCOL_VERSION_FIELD = HEADER_PROTOCOL_VERSION.lower()


class BodyTooLarge(Exception):
    pass


class HeaderView(Mapping[str, str]):
    """A request's header fields by lowercase name (the first of repeated ones), decoded
    only when read: most requests are routed on one or two fields."""

    __slots__ = ("_raw",)

    def __init__(self, raw: dict[bytes, bytes]) -> None:
        self._raw = raw

    def __getitem__(self, name: str) -> str:
        return self._raw[name.encode("latin-1")].decode("latin-1")

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        value = self._raw.get(name.encode("latin-1"))
        return default if value is None else value.decode("latin-1")

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.encode("latin-1") in self._raw

    def __iter__(self) -> Iterator[str]:
        return (name.decode("latin-1") for name in self._raw)

    def __len__(self) -> int:
        return len(self._raw)


@dataclass(slots=True)
class Incoming:
    """One HTTP request as the gateway sees it; the body is read only when asked."""

    scope: Scope
    receive: Receive
    method: str
    path: str
    raw_headers: list[tuple[bytes, bytes]]
    #: Lowercase names, the first value of each.
    headers: HeaderView
    content_length: int | None
    #: Size of the header section as sent (name, ": ", value, CRLF per field).
    header_bytes: int
    body: bytes | None = None
    #: The parsed JSON-RPC message, when the body was parsed (routing needed it).
    message: Any = None
    parsed: bool = False
    #: The body was parsed and is not JSON (``message`` is then ``None``, as for ``null``).
    unparsable: bool = False

    @classmethod
    def from_scope(cls, scope: Scope, receive: Receive) -> Incoming:
        raw: list[tuple[bytes, bytes]] = scope["headers"]
        fields: dict[bytes, bytes] = {}
        size = 0
        for name, value in raw:
            size += len(name) + len(value) + 4
            if name not in fields:
                fields[name] = value
        length_field = fields.get(b"content-length")
        content_length: int | None = None
        if length_field is not None:
            try:
                content_length = int(length_field)
            except ValueError:
                content_length = -1
        return cls(
            scope=scope,
            receive=receive,
            method=scope["method"],
            path=scope["path"],
            raw_headers=raw,
            headers=HeaderView(fields),
            content_length=content_length,
            header_bytes=size,
        )

    async def read_body(self, limit: int) -> bytes:
        """The whole body (at most ``limit`` bytes, else :class:`BodyTooLarge`)."""
        if self.body is not None:
            return self.body
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        self.body = b"".join(chunks)
        return self.body

    def parse(self) -> Any:
        """The JSON-RPC message of the (already read) body, or ``None`` if it is not JSON."""
        if not self.parsed:
            self.parsed = True
            try:
                self.message = json.loads(self.body or b"")
            except (ValueError, UnicodeDecodeError, RecursionError):
                # RecursionError: nesting deeper than the decoder goes (issue #12)
                self.message = None
                self.unparsable = True
        return self.message

    @property
    def rpc(self) -> dict[str, Any]:
        """The first JSON-RPC object of the body (``{}`` if none)."""
        message = self.message
        if isinstance(message, list):
            message = next((m for m in message if isinstance(m, dict)), None)
        return message if isinstance(message, dict) else {}

    @property
    def rpc_id(self) -> Any:
        return self.rpc.get("id")

    @property
    def rpc_method(self) -> str | None:
        method = self.rpc.get("method")
        return method if isinstance(method, str) else None

    @property
    def meta(self) -> dict[str, Any] | None:
        params = self.rpc.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        return meta if isinstance(meta, dict) else None

    @property
    def protocol_version(self) -> str | None:
        """The request's protocol version: its header, else its 2026-07-28 envelope."""
        version = self.headers.get(PROTOCOL_VERSION_FIELD)
        if version is None:
            meta = self.meta
            value = meta.get(META_PROTOCOL_VERSION) if meta else None
            version = value if isinstance(value, str) else None
        return version

    def accepts_sse(self) -> bool:
        return "text/event-stream" in (self.headers.get("accept") or "")


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = b"application/json",
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra_headers:
        headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, payload: Any) -> None:
    await send_bytes(send, status, json.dumps(payload).encode())


async def send_error(
    send: Send,
    error: SessionError,
    request_id: Any = None,
    *,
    status: int | None = None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> int:
    """Answer with a JSON-RPC error; returns the HTTP status used.

    Without an explicit status: the error's own, 404 for SessionNotFound (DESIGN §5: the
    legacy answer for a gone session, and the one SEP-1372 clients act on), else 400.
    """
    code = status or error.http_status or (404 if isinstance(error, SessionNotFound) else 400)
    await send_bytes(send, code, error_body(error, request_id), extra_headers=extra_headers)
    return code


async def send_plain_error(send: Send, status: int, message: str) -> int:
    """An HTTP-level refusal (limits), still with a JSON-RPC error body a client can show."""
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}
    await send_json(send, status, body)
    return status


async def read_body_or_refuse(request: Incoming, send: Send, limit: int) -> int | None:
    """Read the request's whole body: ``None`` when it fits ``limit``, else the status of the
    413 already sent (nothing of the body is forwarded)."""
    try:
        await request.read_body(limit)
    except BodyTooLarge:
        return await send_plain_error(send, 413, f"request body over {limit} bytes")
    return None


def sse_event(message: Any) -> bytes:
    """One JSON-RPC message as a Streamable HTTP SSE ``message`` event (spec §2.1)."""
    return b"event: message\ndata: " + json.dumps(message).encode() + b"\n\n"


async def end_stream(send: Send, error: SessionError, request_id: Any) -> None:
    """End an event stream whose status already went out with the error the request is owed:
    a second status line is impossible, so the JSON-RPC error is the stream's last event."""
    payload = {"jsonrpc": "2.0", "id": request_id, "error": error.to_jsonrpc()}
    with contextlib.suppress(Exception):  # the client may be gone already
        await send({"type": "http.response.body", "body": sse_event(payload), "more_body": True})
        await send({"type": "http.response.body", "body": b""})


async def wait_disconnect(request: Incoming) -> None:
    """Return when the client goes away (``http.disconnect``): raced against a long response
    so that it does not outlive its reader. Only once the body has been read."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
