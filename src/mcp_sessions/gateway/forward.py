"""The request's way to an upstream (the proxy's outbound hop).

* its head: the gateway's path mapped to the upstream's, hop-by-hop fields dropped (RFC 9110
  §7.6.1, those named in ``Connection`` too), the client's own ``X-Forwarded-*`` replaced by
  the gateway's view unless ``--trust-forwarded`` (issue #12), ``Content-Length`` set;
* its sending: a short body whole, over a pooled keep-alive connection, sent once more on a
  fresh connection if the pooled one turns out stale (the upstream read nothing); a large
  body streamed through as the client sends it, on a fresh connection, never replayed.

Which upstream gets it, and what happens to the response, is :mod:`.proxy`'s.
"""

from __future__ import annotations

from .asgi import HOP_BY_HOP, Incoming
from .config import GatewayConfig
from .http1 import Connection, RequestSent, ResponseHead, StaleConnection
from .trust import FORWARDED_FIELDS
from .upstreams import Upstream

#: Bodies up to this size are read before forwarding (so a stale keep-alive connection can be
#: retried); larger ones stream through on a fresh connection.
SMALL_BODY = 64 * 1024
#: Methods safe to replay on a fresh connection (RFC 9110 §9.2.2).
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "PUT"})
#: Request fields the gateway sets itself.
_REPLACED = HOP_BY_HOP | {b"host", b"content-length", b"expect"}


def request_head(config: GatewayConfig, upstream: Upstream, request: Incoming) -> bytes:
    """The request head as it goes to ``upstream``: the gateway path mapped to the upstream's,
    hop-by-hop fields dropped, ``X-Forwarded-*`` set from the gateway's own view."""
    scope = request.scope
    path = request.path
    target = upstream.address.path if path == config.path else path
    raw_path = target.encode() if path == config.path else scope.get("raw_path") or (path.encode())
    query = scope.get("query_string", b"")
    if query:
        raw_path += b"?" + query
    parts = [
        request.method.encode(),
        b" ",
        raw_path,
        b" HTTP/1.1\r\nhost: ",
        upstream.address.netloc.encode(),
        b"\r\n",
    ]
    connection_field = request.headers.get("connection")
    dropped = _REPLACED
    if connection_field:
        # Fields named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
        dropped = _REPLACED | {
            token.strip().lower().encode() for token in connection_field.split(",")
        }
    trusted = config.trust_forwarded
    if not trusted:
        # A client's own X-Forwarded-* (and Forwarded) would let it claim any address or
        # host to the upstream: replaced by the gateway's own view (issue #12).
        dropped = dropped | FORWARDED_FIELDS
    forwarded_for = None
    forwarded_proto = forwarded_host = False
    for name, value in request.raw_headers:
        if name in dropped:
            continue
        if name == b"x-forwarded-for":
            forwarded_for = value
            continue
        if name == b"x-forwarded-proto":
            forwarded_proto = True
        elif name == b"x-forwarded-host":
            forwarded_host = True
        parts += (name, b": ", value, b"\r\n")
    client = scope.get("client")
    if client:
        peer = str(client[0]).encode()
        forwarded_for = forwarded_for + b", " + peer if forwarded_for else peer
    if forwarded_for:
        parts += (b"x-forwarded-for: ", forwarded_for, b"\r\n")
    if not forwarded_proto:
        parts += (b"x-forwarded-proto: ", str(scope.get("scheme", "http")).encode(), b"\r\n")
    if not forwarded_host:
        host = request.headers.get("host")
        if host:
            parts += (b"x-forwarded-host: ", host.encode("latin-1"), b"\r\n")
    if request.body is not None:
        parts += [b"content-length: ", str(len(request.body)).encode(), b"\r\n"]
    elif request.content_length is not None and request.content_length >= 0:
        parts += [b"content-length: ", str(request.content_length).encode(), b"\r\n"]
    parts.append(b"\r\n")
    return b"".join(parts)


async def send_request(
    config: GatewayConfig, upstream: Upstream, request: Incoming, streaming: bool
) -> tuple[Connection, ResponseHead, bytes | None]:
    """Send the request; returns the connection, the response head and — when it is short
    and of known length, the common case — the whole response body."""
    head = request_head(config, upstream, request)
    is_head = request.method == "HEAD"
    if streaming:
        connection = await upstream.pool.connect()
        try:
            await _stream_body(config, connection, head, request)
            response, body = await connection.read_response(small=SMALL_BODY, head_request=is_head)
            return connection, response, body
        except BaseException:
            connection.close()
            raise
    payload = head + (request.body or b"")
    replayable = request.method in _IDEMPOTENT
    for _attempt in range(2):
        connection = upstream.pool.take() or await upstream.pool.connect()
        try:
            try:
                await connection.send(payload)
            except (ConnectionError, OSError) as exc:
                if connection.reused:  # the upstream had closed it: it read nothing
                    raise StaleConnection(str(exc)) from None
                raise RequestSent(f"connection lost: {exc}") from None
            response, body = await connection.read_response(
                small=SMALL_BODY, head_request=is_head, replayable=replayable
            )
            return connection, response, body
        except StaleConnection:
            connection.close()
            continue
        except BaseException:
            connection.close()
            raise
    raise RequestSent("the upstream closed two connections in a row")


async def _stream_body(
    config: GatewayConfig, connection: Connection, head: bytes, request: Incoming
) -> None:
    """Send the head, then the body as the client sends it (large bodies only)."""
    limit = min(config.max_body_bytes, request.content_length or 0)
    await connection.send(head)
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise RequestSent("the client went away mid-request")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestSent("the request body is longer than its Content-Length")
        if chunk:
            await connection.send(chunk)
        if not message.get("more_body", False):
            return
