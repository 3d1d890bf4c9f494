"""A small HTTP/1.1 client for the hop to the upstreams: keep-alive pools, streamed bodies.

Why not a general client: the proxy needs each response chunk the moment it arrives (SSE must
pass through unbuffered), a clear line between "nothing reached the upstream" (safe to retry
elsewhere) and "the upstream may have acted" (never retried), and little overhead per request
(issue #7 budgets 1 ms of added latency). The framing rules are RFC 9112's:

* a response to HEAD, and 1xx/204/304 responses, have no body (§6.3 items 1-2);
* ``Transfer-Encoding`` wins over ``Content-Length`` (§6.3 item 3), which is then dropped,
  and the connection is closed after the response: such a message "ought to be handled as an
  error" (a smuggling attempt, or a broken upstream), so nothing after it on that connection
  is trusted; chunked must be the final coding, else the body runs to close (§6.3 item 4);
* ``Content-Length`` gives the length (§6.3 item 5): digits only, and several fields or list
  members must all agree, else the response is refused; otherwise the body runs to close
  (§6.3 item 8), and that connection is not reused;
* a chunk size is hex digits only (§7.1: ``chunk-size = 1*HEXDIG``; no sign, no ``0x``, no
  ``_``), each chunk ends with CRLF;
* a connection is reused only after an HTTP/1.1 response without ``Connection: close`` whose
  body was read to its end (RFC 9112 §9.3).

Broken framing is :class:`MalformedResponse`: the proxy answers 502 (if nothing was sent to
the client yet; else the stream is cut), and closes the connection, never reusing it (§6.3
item 5: "the proxy MUST close the connection to the server, discard the received response,
and send a 502").
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TypeVar

#: Longest response head (status line and headers) accepted from an upstream.
MAX_RESPONSE_HEAD = 64 * 1024
#: Longest chunk-size line; anything longer is a broken upstream.
_MAX_CHUNK_LINE = 1024
_READ_SIZE = 64 * 1024
#: ``chunk-size`` (RFC 9112 §7.1), at most 16 digits (a size no upstream sends), then
#: optional whitespace before a chunk extension.
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;.*)?\r\n", re.DOTALL)
#: ``Content-Length = 1*DIGIT`` (RFC 9110 §8.6); 18 digits keep it a sane int.
_DIGITS = re.compile(rb"[0-9]{1,18}")
#: ``field-name = token`` (RFC 9110 §5.1, §5.6.2).
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: Bytes no field value may carry (RFC 9110 §5.5): NUL, and CR or LF on their own.
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: (.*))?", re.DOTALL)

T = TypeVar("T")


async def _within(awaitable: Awaitable[T], seconds: float) -> T:
    """``await`` with a deadline; cheaper than ``asyncio.wait_for`` on 3.11 (no extra task)."""
    async with asyncio.timeout(seconds):
        return await awaitable


class UpstreamError(Exception):
    """The hop to an upstream failed.

    ``sent`` tells whether request bytes may have reached it: when ``False`` (connect refused,
    connect timeout) the request can go to another upstream; when ``True`` it may have been
    acted on and must not be replayed.
    """

    def __init__(self, message: str, *, sent: bool, timed_out: bool = False) -> None:
        super().__init__(message)
        self.sent = sent
        #: A timeout says the upstream is slow, not that it is down.
        self.timed_out = timed_out
        #: Set once the response to the client has started (nothing more can be said).
        self.responded = False


class MalformedResponse(UpstreamError):
    """The upstream's response breaks HTTP/1.1 framing (RFC 9112 §6): it is discarded, the
    connection is closed, and the client gets 502 (module docstring)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, sent=True)


class StaleConnection(UpstreamError):
    """A reused keep-alive connection turned out closed before any response byte came back.

    The upstream closed it while idle (its keep-alive timeout), so it read nothing of this
    request: replaying on a fresh connection is safe.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, sent=False)


@dataclass(slots=True)
class ResponseHead:
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    #: "none", "length", "chunked" or "close".
    framing: str
    length: int
    keep_alive: bool
    #: Field names the upstream's ``Connection`` header lists: hop-by-hop, never forwarded
    #: (RFC 9110 §7.6.1).
    connection_fields: frozenset[bytes] = frozenset()


class Connection:
    """One TCP connection to an upstream."""

    __slots__ = ("idle_since", "reader", "reused", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
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
        self, read_timeout: float, *, head_request: bool = False, replayable: bool = False
    ) -> ResponseHead:
        """Read the status line and headers; 1xx interim responses are skipped.

        A reused connection that ends before any response byte is :class:`StaleConnection`
        only for a ``replayable`` (idempotent) request: for a POST the upstream may well have
        read and acted on it before dying, so that is an :class:`UpstreamError` with
        ``sent=True``. (Stale idle connections are mostly weeded out before reuse: see
        :meth:`ConnectionPool.take`.)
        """
        head, _ = await self.read_response(
            read_timeout, small=-1, head_request=head_request, replayable=replayable
        )
        return head

    async def read_response(
        self,
        read_timeout: float,
        *,
        small: int,
        head_request: bool = False,
        replayable: bool = False,
    ) -> tuple[ResponseHead, bytes | None]:
        """The head and, for a body of known length up to ``small`` bytes, the body too —
        under one deadline, so the common exchange (a JSON-RPC response) arms one timer.
        Otherwise the body is ``None`` and :meth:`body` streams it."""
        try:
            async with asyncio.timeout(read_timeout):
                head = await self._read_head(head_request, replayable)
                if head.framing != "length" or head.length > small:
                    return head, None
                try:
                    return head, await self.reader.readexactly(head.length)
                except asyncio.IncompleteReadError:
                    raise UpstreamError("the upstream cut the response short", sent=True) from None
                except (ConnectionError, OSError) as exc:
                    raise UpstreamError(f"connection lost mid-response: {exc}", sent=True) from None
        except TimeoutError:
            raise UpstreamError(
                f"the upstream sent no complete response within {read_timeout:g} s",
                sent=True,
                timed_out=True,
            ) from None

    async def _read_head(self, head_request: bool, replayable: bool) -> ResponseHead:
        while True:
            try:
                raw = await self.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if self.reused and replayable and not exc.partial:
                    raise StaleConnection("the upstream closed an idle connection") from None
                raise UpstreamError(
                    "the upstream closed the connection before responding", sent=True
                ) from None
            except asyncio.LimitOverrunError:
                raise UpstreamError(
                    f"the upstream's response head exceeds {MAX_RESPONSE_HEAD} bytes", sent=True
                ) from None
            except (ConnectionError, OSError) as exc:
                if self.reused and replayable:
                    raise StaleConnection(f"reused connection failed: {exc}") from None
                raise UpstreamError(f"connection lost: {exc}", sent=True) from None
            head = parse_head(raw, head_request=head_request)
            if 100 <= head.status < 200:
                continue
            return head

    async def body(self, head: ResponseHead, read_timeout: float) -> AsyncIterator[bytes]:
        """The response body, chunk by chunk as it arrives (``read_timeout`` per read)."""
        reader = self.reader
        try:
            if head.framing == "length":
                remaining = head.length
                while remaining > 0:
                    data = await _within(reader.read(min(remaining, _READ_SIZE)), read_timeout)
                    if not data:
                        raise UpstreamError("the upstream cut the response short", sent=True)
                    remaining -= len(data)
                    yield data
            elif head.framing == "chunked":
                while True:
                    line = await _within(reader.readuntil(b"\r\n"), read_timeout)
                    match = _CHUNK_SIZE.fullmatch(line) if len(line) <= _MAX_CHUNK_LINE else None
                    if match is None:
                        raise MalformedResponse(f"malformed chunk-size line {line[:40]!r}")
                    size = int(match.group(1), 16)
                    if size == 0:
                        # Trailer fields, if any, end with an empty line (RFC 9112 §7.1.2);
                        # they are dropped, as a proxy may do.
                        while (await _within(reader.readuntil(b"\r\n"), read_timeout)) != (b"\r\n"):
                            pass
                        return
                    data = await _within(reader.readexactly(size + 2), read_timeout)
                    if data[-2:] != b"\r\n":
                        raise MalformedResponse(
                            "a chunk does not end with CRLF where its size says"
                        )
                    yield data[:-2]
            elif head.framing == "close":
                while True:
                    data = await _within(reader.read(_READ_SIZE), read_timeout)
                    if not data:
                        return
                    yield data
        except asyncio.IncompleteReadError:
            raise UpstreamError("the upstream cut the response short", sent=True) from None
        except asyncio.LimitOverrunError:
            raise MalformedResponse("malformed chunked response (a line too long)") from None
        except (ConnectionError, OSError) as exc:
            raise UpstreamError(f"connection lost mid-response: {exc}", sent=True) from None
        except TimeoutError:
            raise UpstreamError(
                f"the upstream sent nothing for {read_timeout:g} s mid-response",
                sent=True,
                timed_out=True,
            ) from None


def parse_head(raw: bytes, *, head_request: bool = False) -> ResponseHead:
    """Parse a response head (``raw`` ends with the blank line).

    Raises :class:`MalformedResponse` for anything RFC 9112 does not allow a recipient to
    guess at (module docstring).
    """
    lines = raw[:-4].split(b"\r\n")
    status_line = lines[0]
    status_match = _STATUS_LINE.fullmatch(status_line)
    if status_match is None:
        raise MalformedResponse(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    http11 = status_match.group(1) == b"1"
    status = int(status_match.group(2))
    reason = status_match.group(3) or b""
    headers: list[tuple[bytes, bytes]] = []
    codings: list[bytes] = []
    lengths: set[bytes] = set()
    connection_fields: set[bytes] = set()
    keep_alive = http11
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or _TOKEN.fullmatch(name) is None:
            # Leading whitespace is obs-fold or a smuggling attempt (RFC 9112 §5.2).
            raise MalformedResponse(f"malformed header line: {line[:80]!r}")
        name = name.lower()
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise MalformedResponse(f"a {name.decode()} field value carries CR, LF or NUL")
        if name == b"transfer-encoding":
            codings += [c.strip(b" \t").lower() for c in value.split(b",") if c.strip(b" \t")]
        elif name == b"content-length":
            for member in value.split(b","):
                member = member.strip(b" \t")
                if _DIGITS.fullmatch(member) is None:
                    raise MalformedResponse(f"bad Content-Length {value[:40]!r} from the upstream")
                lengths.add(member.lstrip(b"0") or b"0")
        elif name == b"connection":
            tokens = {token.strip(b" \t").lower() for token in value.split(b",")}
            if b"close" in tokens:
                keep_alive = False
            elif b"keep-alive" in tokens:
                keep_alive = True
            connection_fields |= tokens
        headers.append((name, value))
    if len(lengths) > 1:
        raise MalformedResponse("the upstream sent different Content-Length values")
    length = int(lengths.pop()) if lengths else -1
    if codings:
        if not http11:
            # RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message is faulty framing.
            raise MalformedResponse("Transfer-Encoding in an HTTP/1.0 response")
        if codings.count(b"chunked") > 1 or (b"chunked" in codings and codings[-1] != b"chunked"):
            raise MalformedResponse("chunked is applied twice, or is not the final coding")
        if length >= 0:
            # §6.3 item 3: Transfer-Encoding overrides; the Content-Length goes, and so does
            # the connection after this response.
            headers = [(n, v) for n, v in headers if n != b"content-length"]
            keep_alive = False
    if head_request or 100 <= status < 200 or status in (204, 304):
        framing, length = "none", 0
    elif codings and codings[-1] == b"chunked":
        framing = "chunked"
    elif codings:
        framing, keep_alive = "close", False  # §6.3 item 4: read to close
    elif length >= 0:
        framing = "length"
    else:
        framing, keep_alive = "close", False
    return ResponseHead(
        status, reason, headers, framing, length, keep_alive, frozenset(connection_fields)
    )


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
        *,
        connect_timeout: float = 3.0,
        max_idle: int = 64,
        idle_timeout: float = 3.0,
    ) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._idle: deque[Connection] = deque()

    async def connect(self) -> Connection:
        """A fresh connection; :class:`UpstreamError` (``sent=False``) if it cannot be made."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=MAX_RESPONSE_HEAD),
                self.connect_timeout,
            )
        except TimeoutError:
            raise UpstreamError(
                f"connecting to {self.host}:{self.port} timed out after {self.connect_timeout:g} s",
                sent=False,
                timed_out=False,
            ) from None
        except OSError as exc:
            raise UpstreamError(
                f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}", sent=False
            ) from None
        return Connection(reader, writer)

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
