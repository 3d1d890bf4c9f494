"""uvicorn's httptools protocol with :class:`~mcp_sessions.serving.HTTPLimits`.

Separate from ``serving`` because httptools is optional: this module is imported only when
the httptools parser is chosen. httptools calls back once per header field, so the count and
size limits stop the parse at the first field over them; a head that is still incomplete is
measured by the bytes fed to the parser since it began.
"""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ._serving_head import HEAD_TIMEOUT_MESSAGE, HeadClock, HeadGuard, HTTPLimits, Linger, refuse


class _HeadRefused(Exception):
    """Raised from a parser callback to stop the parse (httptools re-raises it wrapped in
    ``HttpParserCallbackError``, which uvicorn answers with ``send_400_response``)."""


class LimitedHttpToolsProtocol(HeadGuard, HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`HTTPLimits` (see ``mcp_sessions.serving``)."""

    limits: ClassVar[HTTPLimits] = HTTPLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.limits.keep_alive_timeout  # type: ignore[assignment]
        self.head_clock = HeadClock(self.loop, self.limits.header_timeout, self._head_timed_out)
        self.in_head = False
        self.head_fields = 0
        self.head_bytes = 0  # the fields parsed so far
        self.head_fed = 0  # the reads that ended inside this head
        self.refusal: str | None = None
        self.refused = False
        self.deferred: tuple[int, str] | None = None
        self.linger: Linger | None = None

    def data_received(self, data: bytes) -> None:
        if self.dropping():  # the rest of a refused request
            return
        super().data_received(data)
        if self.in_head and not self.transport.is_closing():
            # Still inside a head after this read: count all of it (at most one read too
            # many: the bytes before the head began), so a huge field that never ends is
            # refused while httptools still buffers it.
            self.head_fed += len(data)
            refusal = self.limits.refusal(self.head_fields, max(self.head_bytes, self.head_fed))
            if refusal is not None:
                self._refuse(refusal)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head = True
        self.head_fields = 0
        self.head_bytes = 0
        self.head_fed = 0
        self.head_clock.arm()

    def on_url(self, url: bytes) -> None:
        self.head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_fields += 1
        self.head_bytes += len(name) + len(value) + 4
        refusal = self.limits.refusal(self.head_fields, self.head_bytes)
        if refusal is not None:
            self.refusal = refusal
            raise _HeadRefused(refusal)
        # llhttp drops the whitespace before a field value but keeps the whitespace after it;
        # neither is part of the value (RFC 9110 §5.5), and h11 strips both.
        super().on_header(name, value.rstrip(b" \t"))

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_clock.disarm()
        super().on_headers_complete()

    def _head_timed_out(self) -> None:
        if self.refused or self.transport.is_closing():
            return
        if self.in_head:
            self._refuse(HEAD_TIMEOUT_MESSAGE, 408)
        else:
            self.transport.close()  # not a byte yet: nothing to answer

    def _refuse(self, refusal: str, status: int = 431) -> None:
        self.in_head = False
        self.refused = True
        self.head_clock.disarm()
        if self.cycle is not None and not self.cycle.response_complete:
            # httptools parses pipelined requests at once: the refused head may follow one
            # still being answered, whose response must not be cut.
            self.deferred = (status, refusal)
            return
        self.linger = refuse(self.transport, self.loop, status, refusal)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.deferred is not None and self.cycle.response_complete:
            self._unset_keepalive_if_required()
            status, refusal = self.deferred
            self.deferred = None
            if not self.transport.is_closing():
                self.linger = refuse(self.transport, self.loop, status, refusal)

    def shutdown(self) -> None:
        if self.refused:
            self.transport.close()
        else:
            super().shutdown()

    def send_400_response(self, msg: str) -> None:
        if self.refusal is None:
            super().send_400_response(msg)
        else:
            self._refuse(self.refusal)
