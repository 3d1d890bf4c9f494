"""The HTTP/1.1 hop to the upstreams: keep-alive pools, streamed bodies, llhttp's framing.

Why not a general client: the proxy needs each response chunk the moment it arrives (SSE must
pass through unbuffered), a clear line between "nothing reached the upstream" (safe to retry
elsewhere) and "the upstream may have acted" (never retried), and little overhead per request
(issue #7 budgets 1 ms of added latency). So the sockets, the pool and that line are ours; the
response framing is httptools' ``HttpResponseParser`` (llhttp, the parser Node.js and uvicorn
use; issue #17), in its strict mode, which refuses what RFC 9112 leaves no room to guess at:

* a status line that is not ``HTTP/1.x NNN``, an obs-folded line, a field name that is not a
  token, CR, LF or NUL (or other controls) in a field value (RFC 9110 §5.5, RFC 9112 §5.2);
* a ``Content-Length`` that is not digits only, or given twice, even with the same value
  (RFC 9112 §6.3 item 5 lets a recipient refuse that; a smuggling tool either way);
* a chunk size that is not hex digits only (§7.1: ``chunk-size = 1*HEXDIG``: no sign, no
  ``0x``, no ``_``, no space) or that overflows 64 bits; a chunk not ending with CRLF.

A few checks of ours stay in front, where llhttp is laxer than RFC 9112 §6 or leaves the
decision to its caller (:class:`_Fields`):

* ``Transfer-Encoding`` with ``Content-Length``: llhttp refuses it unless told to be lenient;
  §6.3 item 3 says the coding wins, so we let it read the chunks, drop the length, and close
  the connection after the response: such a message "ought to be handled as an error" (a
  smuggling attempt, or a broken upstream), so nothing after it on that connection is trusted;
* ``chunked`` twice, or not the final coding, and any ``Transfer-Encoding`` in an HTTP/1.0
  response (§6.1): llhttp reads such a body to close; we refuse the response;
* a response to HEAD, and 1xx/204/304 responses, have no body (§6.3 items 1-2): llhttp cannot
  know the request was HEAD, so the framing is decided here, and the parser is not fed on;
* a body without length or chunked coding runs to close (§6.3 items 4 and 8), read here
  without the parser; that connection is not reused;
* a connection is reused only after an HTTP/1.1 response without ``Connection: close`` whose
  body was read to its end, with nothing after it (RFC 9112 §9.3).

Broken framing is :class:`MalformedResponse`: the proxy answers 502 (if nothing was sent to
the client yet; else the stream is cut), and closes the connection, never reusing it (§6.3
item 5: "the proxy MUST close the connection to the server, discard the received response,
and send a 502").

Failures are typed by what the upstream may have seen (the retry rule reads the type):
:class:`NothingSent` (another upstream may take the request) and :class:`RequestSent` (it may
have been acted on: never replayed), the latter with :class:`UpstreamTimedOut` and
:class:`MalformedResponse`. :class:`HopDeadlines` holds the hop's two deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TypeVar

import httptools

#: Longest response head (status line and headers) accepted from an upstream.
MAX_RESPONSE_HEAD = 64 * 1024
_READ_SIZE = 64 * 1024

T = TypeVar("T")


async def _within(awaitable: Awaitable[T], seconds: float) -> T:
    """``await`` with a deadline; cheaper than ``asyncio.wait_for`` on 3.11 (no extra task)."""
    async with asyncio.timeout(seconds):
        return await awaitable


@dataclass(frozen=True, slots=True)
class HopDeadlines:
    """The hop's deadlines: ``connect`` for a new connection, ``read`` for the response head
    (and a short body read with it) and then between two reads of a streamed body."""

    read: float
    connect: float = 3.0


class UpstreamError(Exception):
    """The hop to an upstream failed; the subclass says whether the request may have reached
    it (:class:`NothingSent` or :class:`RequestSent`)."""


class NothingSent(UpstreamError):
    """No byte of the request can have reached the upstream (connect refused or timed out, a
    stale keep-alive connection): the request may go to another upstream."""


class StaleConnection(NothingSent):
    """A reused keep-alive connection turned out closed before any response byte came back.

    The upstream closed it while idle (its keep-alive timeout), so it read nothing of this
    request: replaying on a fresh connection is safe.
    """


class RequestSent(UpstreamError):
    """The request may have reached the upstream and been acted on: it is never replayed."""


class UpstreamTimedOut(RequestSent):
    """The upstream sent nothing within :attr:`HopDeadlines.read`: it is slow, not down."""


class MalformedResponse(RequestSent):
    """The upstream's response breaks HTTP/1.1 framing (RFC 9112 §6): it is discarded, the
    connection is closed, and the client gets 502 (module docstring)."""


class _Fields:
    """httptools' callbacks for one response: the fields we keep, the framing facts our
    checks need, and the body pieces the parser decoded and :meth:`Connection.body` has not
    yet passed on."""

    __slots__ = ("chunk", "codings", "connection", "done", "excess", "has_length", "head_done",
                 "headers", "pieces")  # fmt: skip

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.codings: list[bytes] = []
        self.connection: frozenset[bytes] = frozenset()
        self.has_length = False
        self.head_done = False
        self.done = False
        #: Bytes came after the end of the response: the connection is not reused.
        self.excess = False
        self.pieces: list[bytes] = []
        #: The chunk being read: passed on once whole (ends with its CRLF), as before the
        #: switch to llhttp, so a chunk cut short is never half forwarded.
        self.chunk: list[bytes] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:
            return  # trailer fields (RFC 9112 §7.1.2): dropped, as a proxy may do
        name = name.lower()
        # The three fields below are rare enough that looking at them costs nothing.
        if name == b"transfer-encoding":
            self.codings += [c.strip(b" \t").lower() for c in value.split(b",") if c.strip()]
        elif name == b"content-length":
            self.has_length = True
        elif name == b"connection":
            self.connection |= {token.strip(b" \t").lower() for token in value.split(b",")}
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        if not self.done:
            self.chunk.append(body)

    def on_chunk_complete(self) -> None:
        if self.chunk:
            chunk = self.chunk
            self.pieces.append(chunk[0] if len(chunk) == 1 else b"".join(chunk))
            self.chunk = []

    def on_message_begin(self) -> None:
        if self.done:
            self.excess = True

    def on_message_complete(self) -> None:
        self.done = True


@dataclass(slots=True)
class ResponseHead:
    status: int
    headers: list[tuple[bytes, bytes]]
    #: "none", "length", "chunked" or "close".
    framing: str
    length: int
    #: Cleared when the body shows the connection must not be reused.
    keep_alive: bool
    #: Field names the upstream's ``Connection`` header lists: hop-by-hop, never forwarded
    #: (RFC 9110 §7.6.1).
    connection_fields: frozenset[bytes] = frozenset()
    #: The parser that read the head, fed on with a chunked body.
    parser: httptools.HttpResponseParser | None = None
    fields: _Fields | None = None


def parse_head(raw: bytes, *, head_request: bool = False) -> ResponseHead:
    """Parse a response head (``raw`` ends with the blank line).

    Raises :class:`MalformedResponse` for anything RFC 9112 does not allow a recipient to
    guess at (module docstring).
    """
    if not raw.startswith(b"HTTP/1."):
        # llhttp also takes RTSP/ and ICE/ status lines, and HTTP/2.0 as a version.
        raise MalformedResponse(f"not an HTTP/1.x status line: {raw[:80]!r}")
    fields = _Fields()
    parser = httptools.HttpResponseParser(fields)
    # Transfer-Encoding with Content-Length: read by the chunks, then checked below.
    parser.set_dangerous_leniencies(lenient_chunked_length=True)
    try:
        parser.feed_data(raw)
    except httptools.HttpParserUpgrade:
        pass  # 101 Switching Protocols: an interim response to us (nothing asked to upgrade)
    except httptools.HttpParserError as exc:
        raise MalformedResponse(f"broken response head from the upstream: {exc}") from None
    if not fields.head_done:
        raise MalformedResponse(f"incomplete response head: {raw[:80]!r}")
    status = parser.get_status_code()
    http11 = parser.get_http_version() == "1.1"
    connection = fields.connection
    keep_alive = b"keep-alive" in connection if not http11 else b"close" not in connection
    if b"close" in connection:
        keep_alive = False
    headers = fields.headers
    codings = fields.codings
    if codings:
        if not http11:
            # RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message is faulty framing.
            raise MalformedResponse("Transfer-Encoding in an HTTP/1.0 response")
        if codings.count(b"chunked") > 1 or (b"chunked" in codings and codings[-1] != b"chunked"):
            raise MalformedResponse("chunked is applied twice, or is not the final coding")
        if fields.has_length:
            # §6.3 item 3: Transfer-Encoding overrides; the Content-Length goes, and so does
            # the connection after this response.
            headers = [(n, v) for n, v in headers if n != b"content-length"]
            keep_alive = False
    length = 0
    if head_request or 100 <= status < 200 or status in (204, 304):
        framing = "none"
    elif codings and codings[-1] == b"chunked":
        framing = "chunked"
    elif codings:
        framing, keep_alive = "close", False  # §6.3 item 4: read to close
    elif fields.has_length:
        framing = "length"
        # llhttp checked it: one field, digits only, no overflow.
        length = int(next(v for n, v in headers if n == b"content-length"))
    else:
        framing, keep_alive = "close", False
    return ResponseHead(status, headers, framing, length, keep_alive, connection, parser, fields)


class Connection:
    """One TCP connection to an upstream, with the hop's deadlines."""

    __slots__ = ("deadlines", "idle_since", "reader", "reused", "writer")

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, deadlines: HopDeadlines
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.deadlines = deadlines
        self.reused = False
        self.idle_since = 0.0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    @property
    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_head(
        self, *, head_request: bool = False, replayable: bool = False
    ) -> ResponseHead:
        """Read the status line and headers; 1xx interim responses are skipped.

        A reused connection that ends before any response byte is :class:`StaleConnection`
        only for a ``replayable`` (idempotent) request: for a POST the upstream may well have
        read and acted on it before dying, so that is a :class:`RequestSent`. (Stale idle
        connections are mostly weeded out before reuse: see :meth:`ConnectionPool.take`.)
        """
        head, _ = await self.read_response(
            small=-1, head_request=head_request, replayable=replayable
        )
        return head

    async def read_response(
        self, *, small: int, head_request: bool = False, replayable: bool = False
    ) -> tuple[ResponseHead, bytes | None]:
        """The head and, for a body of known length up to ``small`` bytes, the body too —
        under one deadline, so the common exchange (a JSON-RPC response) arms one timer.
        Otherwise the body is ``None`` and :meth:`body` streams it."""
        read_timeout = self.deadlines.read
        try:
            async with asyncio.timeout(read_timeout):
                head = await self._read_head(head_request, replayable)
                if head.framing != "length" or head.length > small:
                    return head, None
                try:
                    return head, await self.reader.readexactly(head.length)
                except asyncio.IncompleteReadError:
                    raise RequestSent("the upstream cut the response short") from None
                except (ConnectionError, OSError) as exc:
                    raise RequestSent(f"connection lost mid-response: {exc}") from None
        except TimeoutError:
            raise UpstreamTimedOut(
                f"the upstream sent no complete response within {read_timeout:g} s"
            ) from None

    async def _read_head(self, head_request: bool, replayable: bool) -> ResponseHead:
        while True:
            try:
                # The head is cut out here (C-speed search, and the limit); llhttp parses it.
                raw = await self.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if self.reused and replayable and not exc.partial:
                    raise StaleConnection("the upstream closed an idle connection") from None
                raise RequestSent("the upstream closed the connection before responding") from None
            except asyncio.LimitOverrunError:
                raise RequestSent(
                    f"the upstream's response head exceeds {MAX_RESPONSE_HEAD} bytes"
                ) from None
            except (ConnectionError, OSError) as exc:
                if self.reused and replayable:
                    raise StaleConnection(f"reused connection failed: {exc}") from None
                raise RequestSent(f"connection lost: {exc}") from None
            head = parse_head(raw, head_request=head_request)
            if 100 <= head.status < 200:
                continue
            return head

    async def body(self, head: ResponseHead) -> AsyncIterator[bytes]:
        """The response body, chunk by chunk as it arrives (the read deadline per read)."""
        reader = self.reader
        read_timeout = self.deadlines.read
        try:
            if head.framing == "length":
                remaining = head.length
                while remaining > 0:
                    data = await _within(reader.read(min(remaining, _READ_SIZE)), read_timeout)
                    if not data:
                        raise RequestSent("the upstream cut the response short")
                    remaining -= len(data)
                    yield data
            elif head.framing == "chunked":
                parser, fields = head.parser, head.fields
                assert parser is not None and fields is not None
                while not fields.done:
                    data = await _within(reader.read(_READ_SIZE), read_timeout)
                    if not data:
                        raise RequestSent("the upstream cut the response short")
                    broken = None
                    try:
                        parser.feed_data(data)
                    except httptools.HttpParserError as exc:
                        if not fields.done:
                            broken = exc
                        fields.excess = True  # garbage after the last chunk
                    if fields.pieces:
                        # What was decoded before a fault still goes out, as it arrived.
                        pieces, fields.pieces = fields.pieces, []
                        for piece in pieces:
                            yield piece
                    if broken is not None:
                        raise MalformedResponse(f"broken chunked body: {broken}")
                if fields.excess:
                    head.keep_alive = False
            elif head.framing == "close":
                while True:
                    data = await _within(reader.read(_READ_SIZE), read_timeout)
                    if not data:
                        return
                    yield data
        except (ConnectionError, OSError) as exc:
            raise RequestSent(f"connection lost mid-response: {exc}") from None
        except TimeoutError:
            raise UpstreamTimedOut(
                f"the upstream sent nothing for {read_timeout:g} s mid-response"
            ) from None


class ConnectionPool:
    """Keep-alive connections to one upstream (``host``:``port``).

    Idle connections are dropped after ``idle_timeout`` seconds — shorter than the usual
    server keep-alive (uvicorn's is 5 s) so that a reused connection is rarely one the server
    is closing; when it is, :class:`StaleConnection` lets the caller replay safely.
    """

    def __init__(
        self,
        host: str,
        port: int,
        deadlines: HopDeadlines,
        *,
        max_idle: int = 64,
        idle_timeout: float = 3.0,
    ) -> None:
        self.host = host
        self.port = port
        self.deadlines = deadlines
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._idle: deque[Connection] = deque()

    async def connect(self, deadlines: HopDeadlines | None = None) -> Connection:
        """A fresh connection (``deadlines``: other than the pool's, e.g. a health check's);
        :class:`NothingSent` if it cannot be made."""
        deadlines = deadlines or self.deadlines
        try:
            reader, writer = await _within(
                asyncio.open_connection(self.host, self.port, limit=MAX_RESPONSE_HEAD),
                deadlines.connect,
            )
        except TimeoutError:
            raise NothingSent(
                f"connecting to {self.host}:{self.port} timed out after {deadlines.connect:g} s"
            ) from None
        except OSError as exc:
            raise NothingSent(
                f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}"
            ) from None
        return Connection(reader, writer, deadlines)

    def take(self) -> Connection | None:
        """An idle connection to reuse, newest first, or ``None``."""
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if now - connection.idle_since < self.idle_timeout and connection.usable:
                connection.reused = True
                return connection
            connection.close()
        return None

    def give_back(self, connection: Connection) -> None:
        """Return a connection whose response was read to its end."""
        if len(self._idle) >= self.max_idle or not connection.usable:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        self._idle.append(connection)

    def prune(self) -> None:
        """Close idle connections past ``idle_timeout`` (the oldest sit at the left)."""
        now = time.monotonic()
        while self._idle and (
            now - self._idle[0].idle_since >= self.idle_timeout or not self._idle[0].usable
        ):
            self._idle.popleft().close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
