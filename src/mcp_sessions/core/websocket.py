"""MCP over WebSocket (issue #16): the wire rules, without I/O.

A WebSocket has no per-message headers, so the session travels where it always does in this
library: in ``params._meta`` (or the handle argument); a socket whose requests name none is one
connection, like stdio (carrier 5). SEP-1288 (WebSocket transport) is a draft; nothing here
depends on it beyond the subprotocol name, which it and earlier SDKs use.

The rules: one JSON-RPC message per *text* frame; :class:`WebSocketLimits` bounds what one
socket may take (message size, rate, requests in flight, idle time); :class:`RateBucket` is the
per-socket rate rule; the close codes are RFC 6455 §7.4.1's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from .errors import LimitExceeded

#: The WebSocket subprotocol (``Sec-WebSocket-Protocol``) a server selects and a client offers.
SUBPROTOCOL: Final = "mcp"

# RFC 6455 §7.4.1 close codes.
CLOSE_NORMAL: Final = 1000
#: The server is shutting down.
CLOSE_GOING_AWAY: Final = 1001
#: A protocol violation the peer cannot correct on this socket.
CLOSE_PROTOCOL_ERROR: Final = 1002
#: A frame of a type this endpoint does not accept (binary: MCP messages are JSON text).
CLOSE_UNSUPPORTED_DATA: Final = 1003
#: A message that violates the endpoint's policy (here: a flood that ignored -31005 refusals).
CLOSE_POLICY_VIOLATION: Final = 1008
#: A message too big to process.
CLOSE_TOO_BIG: Final = 1009
#: The server hit an unexpected condition.
CLOSE_INTERNAL_ERROR: Final = 1011
#: A transient condition (IANA registry: "Try Again Later"): no upstream, pins unavailable.
CLOSE_TRY_AGAIN_LATER: Final = 1013

#: The close reasons a client can read (RFC 6455 §5.5.1: at most 123 bytes of UTF-8).
REASON_BINARY = "binary frames are not accepted: send one JSON-RPC message per text frame"
REASON_IDLE = "idle timeout"
REASON_FLOOD = "too many messages: the rate limit was exceeded repeatedly"
REASON_SHUTDOWN = "server shutting down"


def reason_too_big(limit: int) -> str:
    return f"message over {limit} bytes"


def is_websocket_url(target: object) -> bool:
    """Whether ``target`` is a ``ws://`` or ``wss://`` URL (a client picks the transport by it)."""
    return isinstance(target, str) and target.lower().startswith(("ws://", "wss://"))


def offered_subprotocols(header_values: Sequence[str]) -> list[str]:
    """The subprotocols a client offered, from its ``Sec-WebSocket-Protocol`` values (a
    comma-separated list, RFC 6455 §11.3.4), in order."""
    return [p.strip() for value in header_values for p in value.split(",") if p.strip()]


def select_subprotocol(offered: Sequence[str]) -> tuple[bool, str | None]:
    """RFC 6455 §4.2.2 negotiation: ``(accept, selected)``.

    A client that offers subprotocols must offer ``mcp`` (else the handshake is refused:
    whatever it wanted to speak, it is not served here). A client that offers none is
    accepted without one: plain tools (``websocat``, a browser's ``new WebSocket(url)``) can
    then speak MCP too, and nothing else is served on this path.
    """
    if not offered:
        return True, None
    if SUBPROTOCOL in offered:
        return True, SUBPROTOCOL
    return False, None


@dataclass(frozen=True)
class WebSocketLimits:
    """What one WebSocket may take from a server; the defaults suit an MCP client.

    ``max_message_bytes`` ``None`` means the HTTP transport's body limit
    (``max_request_body_size``, 4 MiB in the SDK), so a message too big to POST is too big to
    send here too.
    """

    #: Most bytes in one message (after decompression); larger closes the socket with 1009.
    max_message_bytes: int | None = None
    #: Messages per second a socket may send on average (token bucket refill rate). A client
    #: calling one fast tool after another reaches about a thousand on loopback; a flood of
    #: cheap frames is what this stops (requests in flight are bounded separately).
    messages_per_second: float = 1000.0
    #: Messages a socket may send at once above the average (token bucket size).
    burst: int = 2000
    #: Refused messages in a row (each answered with -31005) before the socket is closed with
    #: 1008: a client that backs off on -31005 never reaches it, a flood does.
    flood_close_after: int = 100
    #: Requests a socket may have unanswered at once; one more is refused with -31005.
    max_in_flight: int = 32
    #: Seconds without a message from the client, and nothing in flight, before the server
    #: closes the socket with 1000 (a reconnect continues the session: it lives in ``_meta``).
    idle_timeout: float = 300.0

    def __post_init__(self) -> None:
        if self.max_message_bytes is not None and self.max_message_bytes < 1024:
            raise ValueError(
                f"max_message_bytes must be at least 1024, not {self.max_message_bytes}"
            )
        if not (math.isfinite(self.messages_per_second) and self.messages_per_second > 0):
            raise ValueError(
                f"messages_per_second must be positive, not {self.messages_per_second!r}"
            )
        for name in ("burst", "flood_close_after", "max_in_flight"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not self.idle_timeout > 0:
            raise ValueError(f"idle_timeout must be positive, not {self.idle_timeout!r}")


class RateBucket:
    """A token bucket per socket: :meth:`take` refuses a message over the rate with
    :class:`LimitExceeded` and counts the refusals in a row, so that a flood can be closed."""

    def __init__(self, limits: WebSocketLimits, now: float) -> None:
        self.rate = limits.messages_per_second
        self.size = float(limits.burst)
        self.tokens = self.size
        self.stamp = now
        self.refused_in_row = 0

    def take(self, now: float) -> LimitExceeded | None:
        """Spend one token for a message arriving at ``now``; the refusal if there is none."""
        self.tokens = min(self.size, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.refused_in_row = 0
            return None
        self.refused_in_row += 1
        wait = (1.0 - self.tokens) / self.rate
        return LimitExceeded(
            f"Too many messages on this WebSocket: at most {self.rate:g} per second "
            f"(burst {int(self.size)}); retry in {wait:.2f} s",
            retry_after=wait,
        )


def echoable_id(value: Any) -> Any:
    """A request id an error answer can echo (JSON-RPC 2.0 §5: a string or an integer; else
    ``null``)."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def in_flight_refusal(limit: int) -> LimitExceeded:
    return LimitExceeded(
        f"Too many requests in flight on this WebSocket: at most {limit} unanswered at once; "
        "wait for an answer first"
    )
