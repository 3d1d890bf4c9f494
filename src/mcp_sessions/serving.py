"""Serving an ASGI app on uvicorn with limits on the request head (issue #12 item 5).

uvicorn closes an idle keep-alive connection, but it has no deadline for the request head
itself (a client that sends one header byte a second holds its connection, and a file
descriptor, forever: "slowloris"), no limit on the number of header fields, and with httptools
no limit on their size. Without a count limit, a request with 10,000 header fields costs
seconds of CPU in the app: the SDK's modern path copies the headers with ``dict(headers)``,
and Starlette's ``Headers`` looks each key up by a linear scan, so the copy is quadratic.

The protocol classes here (one over each of uvicorn's HTTP/1.1 parsers, h11 and httptools)
add, before the app sees the request:

* a **header timeout**: from the connection's start, or from the first byte of a request
  head, the whole head must arrive within ``header_timeout`` seconds; else 408 (if anything
  arrived) and the connection is closed;
* a **header size and count limit**: a head over ``max_header_bytes`` or with more than
  ``max_headers`` fields gets 431 (RFC 6585 §5) and the connection is closed; the app never
  runs, and the check is linear in the bytes received;
* an **idle keep-alive timeout**: ``keep_alive_timeout`` seconds between two requests.

Use :func:`serve` or :func:`uvicorn_config`; the demo and the gateway both do. The limits
themselves, the refusal and the lingering close live in ``_serving_head``, shared with the
httptools protocol (``_serving_httptools``).
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any, ClassVar, Literal

import h11
import uvicorn
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from uvicorn.protocols.http.h11_impl import H11Protocol

from ._serving_head import HEAD_TIMEOUT_MESSAGE, HeadClock, HeadGuard, HTTPLimits, Linger, refuse

HTTPImplementation = Literal["auto", "h11", "httptools"]


__all__ = ["HTTPImplementation", "HTTPLimits", "limited_protocol", "serve", "uvicorn_config"]


class _MeteredConnection(h11.Connection):
    """h11's server connection, refusing a request head over the limits with 431.

    h11 already refuses an *incomplete* head over ``max_incomplete_event_size`` (with a 431
    hint that uvicorn turns into 400); a complete head that arrived in one read is counted
    here, before uvicorn builds the ASGI scope.
    """

    def __init__(self, limits: HTTPLimits) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self.limits = limits
        self.refusal: str | None = None

    def next_event(self) -> Any:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                self.refusal = self.limits.refusal(0, self.limits.max_header_bytes + 1)
            raise
        if isinstance(event, h11.Request):
            size = len(event.method) + len(event.target) + 12  # request line
            refusal = self.limits.refusal(
                len(event.headers), size + sum(len(n) + len(v) + 4 for n, v in event.headers)
            )
            if refusal is not None:
                self.refusal = refusal
                raise h11.RemoteProtocolError(refusal, error_status_hint=431)
        return event


class LimitedH11Protocol(HeadGuard, H11Protocol):
    """uvicorn's h11 protocol with :class:`HTTPLimits` (see the module docstring)."""

    limits: ClassVar[HTTPLimits] = HTTPLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn: _MeteredConnection = _MeteredConnection(self.limits)
        self.timeout_keep_alive = self.limits.keep_alive_timeout  # type: ignore[assignment]
        self.head_clock = HeadClock(self.loop, self.limits.header_timeout, self._head_timed_out)
        self.refused = False
        self.linger: Linger | None = None

    def data_received(self, data: bytes) -> None:
        if self.dropping():  # the rest of a refused request
            return
        if self.conn.their_state is h11.IDLE:
            refusal = self._count_fields(self.conn.trailing_data[0] + data)
            if refusal is not None:
                self._refuse(refusal)
                return
        super().data_received(data)
        self._watch_head()

    def _count_fields(self, head: bytes) -> str | None:
        """The field-count refusal for a head (complete or not), from its line breaks alone:
        h11 parses every field before it reports any, which for 10,000 fields is most of the
        cost of refusing them."""
        fields = head.count(b"\n") - 1  # the request line's
        if fields <= self.limits.max_headers:
            return None
        ends = [i for i in (head.find(b"\n\r\n"), head.find(b"\n\n")) if i >= 0]
        if ends:
            fields = head.count(b"\n", 0, min(ends) + 1) - 1
        return self.limits.refusal(fields, 0)

    def shutdown(self) -> None:
        if self.refused:
            self.transport.close()
        else:
            super().shutdown()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_head()  # a pipelined head may have started already

    def _watch_head(self) -> None:
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            self.head_clock.disarm()  # a head arrived (or the connection is going)
        elif self.conn.trailing_data[0]:
            self.head_clock.arm()  # part of a head is here: the rest is due in time

    def _head_timed_out(self) -> None:
        if self.refused or self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:
            self.refused = True
            self.linger = refuse(self.transport, self.loop, 408, HEAD_TIMEOUT_MESSAGE)
        else:
            self.transport.close()  # not a byte yet: nothing to answer

    def send_400_response(self, msg: str) -> None:
        if self.conn.refusal is None:
            super().send_400_response(msg)
        else:
            self._refuse(self.conn.refusal)

    def _refuse(self, refusal: str) -> None:
        self.refused = True
        self.head_clock.disarm()
        self.linger = refuse(self.transport, self.loop, 431, refusal)


def _httptools_protocol() -> type[asyncio.Protocol]:
    """:class:`LimitedHttpToolsProtocol`, defined on first use (httptools is optional)."""
    from ._serving_httptools import LimitedHttpToolsProtocol

    return LimitedHttpToolsProtocol


def resolve_implementation(http: HTTPImplementation) -> Literal["h11", "httptools"]:
    """``auto``: httptools when installed (several times faster than h11), else h11."""
    if http == "auto":
        return "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
    return http


def limited_protocol(
    limits: HTTPLimits, http: HTTPImplementation = "auto"
) -> type[asyncio.Protocol]:
    """A uvicorn HTTP protocol class (for ``uvicorn.Config(http=...)``) enforcing ``limits``."""
    base = (
        _httptools_protocol()
        if resolve_implementation(http) == "httptools"
        else (LimitedH11Protocol)
    )
    return type(base.__name__, (base,), {"limits": limits})


def uvicorn_config(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: HTTPLimits | None = None,
    http: HTTPImplementation = "auto",
    **options: Any,
) -> uvicorn.Config:
    """A ``uvicorn.Config`` for ``app`` whose connections enforce ``limits``.

    ``options`` go to ``uvicorn.Config`` as they are (``log_level``, ``ssl_*``, …), except
    ``http`` and ``timeout_keep_alive``, which ``limits`` and ``http`` set.
    """
    for managed in ("timeout_keep_alive", "h11_max_incomplete_event_size"):
        if managed in options:
            raise ValueError(f"{managed} is set through HTTPLimits, not as a uvicorn option")
    # WebSocket messages (issue #16): uvicorn buffers up to 16 MiB per message by default;
    # the app's own limit (WebSocketLimits, by default the SDK's 4 MiB body limit) is the
    # one that answers, so uvicorn need not hold more than that.
    options.setdefault("ws_max_size", DEFAULT_MAX_REQUEST_BODY_SIZE)
    return uvicorn.Config(
        app, host=host, port=port, http=limited_protocol(limits or HTTPLimits(), http), **options
    )


def serve(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: HTTPLimits | None = None,
    http: HTTPImplementation = "auto",
    **options: Any,
) -> bool:
    """Serve ``app`` on uvicorn with ``limits`` until interrupted (see :func:`uvicorn_config`).

    Returns ``False`` if the server could not start (the port is taken, the app's lifespan
    failed), ``True`` after a normal shutdown.
    """
    server = uvicorn.Server(
        uvicorn_config(app, host=host, port=port, limits=limits, http=http, **options)
    )
    server.run()
    return bool(server.started)
