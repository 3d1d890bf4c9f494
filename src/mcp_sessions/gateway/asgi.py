"""The incoming request as both gateway backends see it (read lazily: most requests are
routed on a header or two), the hop-by-hop fields, and the gateway's refusal of a body over
its limit.

Reading, answering and event streams are the project's shared ASGI plumbing,
:mod:`mcp_sessions.asgi`."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..asgi import (
    CONTENT_LENGTH,
    PROTOCOL_VERSION_FIELD,
    Receive,
    Scope,
    Send,
    read_body,
    send_error,
)
from ..core.errors import BodyTooLarge, InvalidRequest
from ..core.names import META_PROTOCOL_VERSION

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
        length_field = fields.get(CONTENT_LENGTH)
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
        """The whole body (at most ``limit`` bytes, else :class:`BodyTooLarge`), read once."""
        if self.body is None:
            self.body = await read_body(self.receive, limit)
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


async def read_body_or_refuse(request: Incoming, send: Send, limit: int) -> int | None:
    """Read the request's whole body: ``None`` when it fits ``limit``, else the status of the
    413 already sent (nothing of the body is forwarded)."""
    try:
        await request.read_body(limit)
    except BodyTooLarge:
        refusal = InvalidRequest(f"request body over {limit} bytes")
        return await send_error(send, refusal, status=BodyTooLarge.http_status)
    return None
