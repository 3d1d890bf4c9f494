"""The request-head rules both of uvicorn's HTTP/1.1 parsers share (issue #12 item 5).

:class:`HTTPLimits` (header timeout, size and count, keep-alive), the refusal written before
any app runs and the lingering close after it, and the header clock. ``serving`` builds the
h11 protocol on these, ``_serving_httptools`` the httptools one (a separate module because
httptools is optional); both import from here, so neither imports the other.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from .core.errors import InvalidRequest

logger = logging.getLogger("mcp_sessions.serving")


@dataclass(frozen=True)
class HTTPLimits:
    """Limits on the request head and on idle connections; the defaults suit an MCP server.

    A request head is the request line plus the header fields; ``max_header_bytes`` counts
    the fields (name, value, separators) and the request line, as sent.
    """

    #: Seconds a client has to send a complete request head (nginx: client_header_timeout).
    header_timeout: float = 10.0
    #: Seconds an idle keep-alive connection stays open between two requests.
    keep_alive_timeout: float = 5.0
    #: Most bytes in one request head; larger gets 431. Room for a few-KiB bearer token.
    max_header_bytes: int = 32 * 1024
    #: Most header fields in one request; more gets 431 (Apache's LimitRequestFields).
    max_headers: int = 100

    def __post_init__(self) -> None:
        if not self.header_timeout > 0:
            raise ValueError(f"header_timeout must be positive, not {self.header_timeout!r}")
        if not self.keep_alive_timeout > 0:
            raise ValueError(
                f"keep_alive_timeout must be positive, not {self.keep_alive_timeout!r}"
            )
        if self.max_header_bytes < 1024:
            raise ValueError(f"max_header_bytes must be at least 1024, not {self.max_header_bytes}")
        if self.max_headers < 1:
            raise ValueError(f"max_headers must be at least 1, not {self.max_headers}")

    def refusal(self, fields: int, size: int) -> str | None:
        """Why a head with ``fields`` header fields totalling ``size`` bytes is refused."""
        if fields > self.max_headers:
            return (
                f"Request Header Fields Too Large: more than {self.max_headers} header fields "
                "(the server's limit)"
            )
        if size > self.max_header_bytes:
            return (
                f"Request Header Fields Too Large: the request head is over "
                f"{self.max_header_bytes} bytes (the server's limit)"
            )
        return None

    def check_fields(self, fields: Iterable[tuple[bytes, bytes]]) -> str | None:
        """:meth:`refusal` for a parsed list of (name, value) fields."""
        count = 0
        size = 0
        for name, value in fields:
            count += 1
            size += len(name) + len(value) + 4  # ": " and CRLF
        return self.refusal(count, size)


def _raw_response(status: int, message: str) -> bytes:
    """A complete response that closes the connection, written before any app runs; the body
    is a JSON-RPC error (id null, -32600), as the gateway's own HTTP-level refusals are."""
    body = json.dumps(InvalidRequest(message).response()).encode()
    phrase = HTTPStatus(status).phrase
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


#: After a refusal the rest of the request is read and dropped until the client has been
#: quiet for LINGER_QUIET seconds, LINGER_SECONDS at most, and only then is the socket closed.
#: Closing with unread input makes the kernel send RST, which can destroy the refusal before
#: the client reads it (RFC 9112 §9.6: close in stages); a quiet client frees its descriptor
#: at once.
LINGER_QUIET = 0.25
LINGER_SECONDS = 2.0


class Linger:
    """The closing stage of a refused connection (see :data:`LINGER_SECONDS`)."""

    def __init__(self, transport: asyncio.BaseTransport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.deadline = loop.time() + LINGER_SECONDS
        self.handle = loop.call_later(LINGER_QUIET, transport.close)

    def input(self) -> None:
        """More input arrived: wait for quiet again, within the deadline."""
        self.handle.cancel()
        delay = max(0.0, min(LINGER_QUIET, self.deadline - self.loop.time()))
        self.handle = self.loop.call_later(delay, self.transport.close)


def refuse(
    transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, status: int, message: str
) -> Linger | None:
    """Answer ``status`` and close our side; the returned :class:`Linger` (``None`` when the
    transport cannot half-close, e.g. TLS: then it is closed at once) closes the rest. The
    caller drops whatever the client still sends, telling the linger."""
    # Info, not warning: under a flood of bad requests this would drown the log.
    logger.info("refused a request from %s: %s", transport.get_extra_info("peername"), message)
    transport.write(_raw_response(status, message))
    if transport.can_write_eof():
        transport.write_eof()
        return Linger(transport, loop)
    transport.close()
    return None


HEAD_TIMEOUT_MESSAGE = "Request Timeout: the request head did not arrive in time"


class HeadClock:
    """The header timeout of one connection: armed while a request head is awaited."""

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float, expire: Any) -> None:
        self.loop = loop
        self.seconds = seconds
        self.expire = expire
        self.handle: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        if self.handle is None:
            self.handle = self.loop.call_later(self.seconds, self._fire)

    def disarm(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _fire(self) -> None:
        self.handle = None
        self.expire()


class HeadGuard(asyncio.Protocol):
    """What both limited protocols do alike, mixed in before uvicorn's own class: the header
    timeout runs from the connection's start and ends with it, and once a request is refused
    the rest of what the client sends is dropped (telling the :class:`Linger`)."""

    head_clock: HeadClock
    refused: bool
    linger: Linger | None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.head_clock.arm()  # a new connection owes a request head

    def connection_lost(self, exc: Exception | None) -> None:
        self.head_clock.disarm()
        super().connection_lost(exc)

    def dropping(self) -> bool:
        """``True`` when input is to be dropped: this connection refused a request."""
        if self.refused and self.linger is not None:
            self.linger.input()
        return self.refused
