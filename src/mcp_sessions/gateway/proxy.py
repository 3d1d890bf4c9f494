"""The HTTP backend: route each request to an upstream and stream the exchange through.

For each request (issue #7, DESIGN §8):

1. find its key (:mod:`.routing`): the ``Mcp-Client-Session-Id`` header alone when present,
   the body only when the headers do not decide; a pinned handle in the request overrides
   the decisions below handles (:mod:`.handles`);
2. find its upstream: a session or handle goes where its pin says (:mod:`.pins`), a new
   client-id session is pinned to its rendezvous choice among the healthy upstreams, a
   legacy id without a pin is hashed, any other key is hashed, and no key means least-loaded;
3. send it (:mod:`.forward`), and stream the response back chunk by chunk as the upstream
   writes it (SSE included): nothing is buffered beyond one read;
4. learn the ``Mcp-Session-Id`` an ``initialize`` response mints, and forget it after a
   ``DELETE``; pin the handles a result lists as minted, before the client can see them.

A request that never reached an upstream (connection refused) is sent to the next choice; one
that may have reached it is never replayed, and gets a clear JSON-RPC error instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

# Not ``from . import routing``: that imports the package, whose lazy ``Gateway`` imports
# this module (an import circle, issue #17).
import mcp_sessions.gateway.routing as routing

from ..asgi import (
    LEGACY_SESSION_FIELD_BYTES,
    Message,
    Send,
    end_stream,
    send_error,
    wait_disconnect,
)
from ..core.errors import SessionError, StoreUnavailable
from ..stores import Store, StoreError
from .asgi import HOP_BY_HOP, Incoming, read_body_or_refuse
from .config import GatewayConfig
from .errors import NoUpstream, ParseError, UpstreamFailed, handle_lost, session_lost
from .forward import SMALL_BODY, send_request
from .handles import HANDLE, MintedPins, minted_in_body, pin_key, request_handles
from .http1 import (
    Connection,
    HopDeadlines,
    MalformedResponse,
    NothingSent,
    ResponseHead,
    UpstreamError,
    UpstreamTimedOut,
)
from .metrics import GatewayMetrics
from .pins import PinTable
from .tracing import HopTracer
from .trust import TrustPolicy, refuse
from .upstreams import Upstream, UpstreamSet

logger = logging.getLogger("mcp_sessions.gateway")


@dataclass(slots=True)
class _Choice:
    upstream: Upstream
    #: The pin was placed by this request: nothing of the session reached any upstream yet.
    new_pin: bool = False
    #: How the upstream was chosen, for the hop's span (issue #13): ``pinned``, ``placed``,
    #: ``hashed``, ``least_loaded``, ``moved``.
    placement: str = "pinned"


class HTTPBackend:
    """Routes to ``--upstream`` servers."""

    def __init__(self, config: GatewayConfig, store: Store, metrics: GatewayMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.upstreams = UpstreamSet(
            list(config.upstreams),
            health=config.health,
            deadlines=HopDeadlines(read=config.upstream_timeout, connect=config.connect_timeout),
        )
        self.pins = PinTable(store, ttl=config.session_idle)
        self.trust = TrustPolicy(
            config.auth, trust_forwarded=config.trust_forwarded, unverified_claims=True
        )
        self._tiebreak = itertools.count()
        self.hops = HopTracer()
        self._decisions = {d: metrics.routing.labels(d) for d in routing.DECISIONS}
        self._minted = metrics.pins.labels("minted")
        metrics.on_scrape(self._refresh_gauges)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.upstreams.start()

    async def stop(self) -> None:
        await self.upstreams.stop()

    def health(self) -> tuple[bool, dict[str, Any]]:
        upstreams = [
            {
                "url": u.name,
                "healthy": u.healthy,
                "inFlight": u.in_flight,
                **({"error": u.last_error} if u.last_error else {}),
            }
            for u in self.upstreams.upstreams
        ]
        ok = any(u.healthy for u in self.upstreams.upstreams)
        return ok, {"mode": "upstream", "upstreams": upstreams}

    def _refresh_gauges(self) -> None:
        m = self.metrics
        ups = self.upstreams.upstreams
        m.set_per_upstream(m.upstream_healthy, ((u.name, 1.0 if u.healthy else 0.0) for u in ups))
        m.set_per_upstream(m.upstream_in_flight, ((u.name, float(u.in_flight)) for u in ups))
        live = self.pins.live_by_upstream(self.config.session_idle)
        m.set_per_upstream(m.sessions, ((u.name, float(live.get(u.name, 0))) for u in ups))

    # -- routing -----------------------------------------------------------------------------

    async def _route(self, request: Incoming, send: Send) -> routing.RouteKey | int:
        """The request's key, or the status of the answer already sent (400, 413)."""
        config = self.config
        if request.method == "POST":
            route = routing.route_from_headers(request.headers)
            if route is not None:
                return route
            refused = await read_body_or_refuse(request, send, config.max_body_bytes)
            if refused is not None:
                return refused
            request.parse()
            if request.unparsable and request.path == config.path:
                # The server would refuse it too; nothing is sent on (issue #12).
                return await send_error(send, ParseError(), None, status=400)
            method = request.rpc_method or "POST"
            meta = request.meta
        else:
            method, meta = request.method, None
        try:
            return routing.route_for(
                method=method,
                meta=meta,
                headers=request.headers,
                protocol_version=request.protocol_version,
                policy=config.routing,
            )
        except SessionError as error:
            # The same refusal a server gives (DESIGN §3): 400 with the JSON-RPC error.
            return await send_error(send, error, request.rpc_id, status=400)

    async def _route_by_handle(self, request: Incoming, principal: str) -> routing.RouteKey | None:
        """The route of the first pinned handle the request carries, if any (DESIGN §2 step 3
        of :mod:`.routing`). A handle-shaped value without a pin changes nothing."""
        for handle in request_handles(request.rpc, request.raw_headers):
            key = pin_key(handle)
            if await self.pins.get(key, principal) is not None:
                return routing.RouteKey(HANDLE, key, session=True, handle=handle)
        return None

    def _hashed(self, key: str, exclude: set[str]) -> Upstream | None:
        healthy = [u.name for u in self.upstreams.healthy() if u.name not in exclude]
        name = routing.choose(key, healthy)
        return None if name is None else self.upstreams.by_name[name]

    def _least_loaded(self, exclude: set[str]) -> Upstream | None:
        loads = [(u.name, u.in_flight) for u in self.upstreams.healthy() if u.name not in exclude]
        name = routing.least_loaded(loads, next(self._tiebreak))
        return None if name is None else self.upstreams.by_name[name]

    async def _choose(
        self, route: routing.RouteKey, principal: str, exclude: set[str]
    ) -> _Choice | SessionError:
        """The upstream for ``route``, or the error that answers the request."""
        key = route.key
        if key is None:
            chosen = self._least_loaded(exclude)
            return _Choice(chosen, placement="least_loaded") if chosen is not None else NoUpstream()
        if not route.session:
            chosen = self._hashed(key, exclude)
            return _Choice(chosen, placement="hashed") if chosen is not None else NoUpstream()

        pins = self.pins
        pinned = await pins.get(key, principal)
        if pinned is None:
            chosen = self._hashed(key, exclude)
            if chosen is None:
                return NoUpstream()
            if route.legacy:
                # An id no gateway learned: the upstreams decide (404, or served from a
                # shared store by any of them).
                return _Choice(chosen, placement="hashed")
            placed = await pins.place(key, principal, chosen.name, route.decision)
            self.metrics.pins.labels("placed").inc()
            upstream = self.upstreams.by_name.get(placed)
            if upstream is not None and upstream.healthy and placed not in exclude:
                new_pin = placed == chosen.name
                return _Choice(upstream, new_pin, "placed" if new_pin else "pinned")
            pinned = placed  # another request placed it elsewhere: treat as an existing pin
        upstream = self.upstreams.by_name.get(pinned)
        if upstream is None or not upstream.healthy or pinned in exclude:
            # Another replica may have moved the pin since we cached it.
            fresh = await pins.get(key, principal, fresh=True)
            if fresh is not None and fresh != pinned:
                candidate = self.upstreams.by_name.get(fresh)
                if candidate is not None and candidate.healthy and fresh not in exclude:
                    return _Choice(candidate)
            if self.config.failover == "move":
                chosen = self._hashed(key, exclude)
                if chosen is None:
                    return NoUpstream()
                moved = await pins.move(key, principal, chosen.name)
                self.metrics.pins.labels("moved").inc()
                logger.info("session moved from %s to %s (failover=move)", pinned, moved)
                target = self.upstreams.by_name.get(moved)
                return _Choice(target, placement="moved") if target is not None else NoUpstream()
            self.metrics.pins.labels("lost").inc()
            # Upstream addresses go to the log only, never to a client (issue #12).
            logger.warning(
                "session pinned to %s: %s",
                pinned,
                "no longer configured" if upstream is None else upstream.last_error or "down",
            )
            reason = "is no longer configured" if upstream is None else "is unavailable"
            if route.handle is not None:
                return handle_lost(route.handle, reason)
            return session_lost(f"its upstream {reason}")
        return _Choice(upstream)

    # -- the exchange ------------------------------------------------------------------------

    async def handle(self, request: Incoming, send: Send) -> int:
        route = await self._route(request, send)
        if isinstance(route, int):
            return route
        principal = await self.trust.principal(request)
        if not isinstance(principal, str):
            return await refuse(send, principal, self._request_id(request))
        if route.below_handles:
            try:
                route = await self._route_by_handle(request, principal) or route
            except StoreError as error:
                # Routing without the pin could reach a replica that lacks the handle's state.
                logger.warning("handle pin lookup failed: %s", error)
                return await send_error(
                    send,
                    StoreUnavailable(
                        "The gateway's pin store is unavailable right now; the request was not "
                        "sent. Retry it shortly."
                    ),
                    self._request_id(request),
                )  # with Retry-After: the error's own retry_after
        self._decisions[route.decision].inc()
        watched = _WatchedSend(send)
        exclude: set[str] = set()
        streaming = False
        if request.body is None and request.method not in ("GET", "HEAD", "DELETE"):
            length = request.content_length
            streaming = length is not None and length > SMALL_BODY
            if not streaming:
                refused = await read_body_or_refuse(request, send, self.config.max_body_bytes)
                if refused is not None:
                    return refused
        for _attempt in range(len(self.upstreams.upstreams)):
            choice = await self._choose(route, principal, exclude)
            if isinstance(choice, SessionError):
                return await send_error(send, choice, self._request_id(request))
            upstream = choice.upstream
            try:
                # A client span per attempt (issue #13); a no-op without an SDK.
                with self.hops.hop(request, upstream.name, route.decision, choice.placement):
                    return await self._exchange(
                        upstream, request, route, principal, watched, streaming
                    )
            except UpstreamError as error:
                sent = not isinstance(error, NothingSent)
                self.metrics.upstream_errors.labels(
                    upstream.name, "true" if sent else "false"
                ).inc()
                if not isinstance(error, UpstreamTimedOut | MalformedResponse):
                    # A slow upstream, or a broken response, is not a dead upstream: it stays
                    # in the rotation.
                    self.upstreams.mark_failed(upstream, str(error))
                if sent:
                    logger.warning("request to %s failed: %s", upstream.name, error)
                    if watched.started:
                        return 502  # the response had started: it was cut, nothing to add
                    failure = UpstreamFailed(_public_failure(error, "while handling this request"))
                    return await send_error(send, failure, self._request_id(request))
                exclude.add(upstream.name)
                if choice.new_pin and route.key is not None:
                    # Nothing of this new session reached an upstream: place it afresh.
                    target = self._hashed(route.key, exclude)
                    if target is not None:
                        await self.pins.move(route.key, principal, target.name)
            except Exception:
                # Nothing may escape to the server (a traceback and a dropped connection):
                # whatever broke, the client gets a JSON-RPC answer (issue #12).
                logger.exception("request to %s failed unexpectedly", upstream.name)
                if watched.started:
                    return 502
                with contextlib.suppress(Exception):  # the client may be gone too
                    await send_error(send, UpstreamFailed(), self._request_id(request))
                return 502
        return await send_error(send, NoUpstream(), self._request_id(request))

    @staticmethod
    def _request_id(request: Incoming) -> Any:
        if request.body is not None:
            request.parse()
            return request.rpc_id
        return None

    async def _exchange(
        self,
        upstream: Upstream,
        request: Incoming,
        route: routing.RouteKey,
        principal: str,
        send: Send,
        streaming: bool,
    ) -> int:
        upstream.in_flight += 1
        try:
            connection, head, body = await send_request(self.config, upstream, request, streaming)
            try:
                return await self._respond(
                    upstream, request, route, principal, send, connection, head, body
                )
            except BaseException:
                connection.close()
                raise
        finally:
            upstream.in_flight -= 1

    async def _respond(
        self,
        upstream: Upstream,
        request: Incoming,
        route: routing.RouteKey,
        principal: str,
        send: Send,
        connection: Connection,
        head: ResponseHead,
        body: bytes | None,
    ) -> int:
        headers: list[tuple[bytes, bytes]] = []
        minted: str | None = None
        event_stream = False
        for name, value in head.headers:
            if (
                name in HOP_BY_HOP
                or name in head.connection_fields  # hop-by-hop too (RFC 9110 §7.6.1)
                or (name == b"content-length" and head.framing != "length")
            ):
                continue
            if name == LEGACY_SESSION_FIELD_BYTES:
                minted = value.decode("latin-1")
            elif name == b"content-type" and value.startswith(b"text/event-stream"):
                event_stream = True
            headers.append((name, value))
        if minted is not None and head.status < 400 and minted != route.key:
            # Learned before the client can see the id, so its next request finds the pin.
            await self.pins.place(minted, principal, upstream.name, "legacy")
            self.metrics.pins.labels("learned").inc()
        scan = request.method == "POST" and head.status < 400  # results that may mint handles
        if (
            request.method == "DELETE"
            and route.legacy
            and route.key is not None
            and (200 <= head.status < 300 or head.status == 404)
        ):
            await self.pins.forget(route.key, principal)
            self.metrics.pins.labels("forgotten").inc()
        if body is not None:
            # The common case, a JSON-RPC response read whole: answer in two messages.
            if scan and (found := minted_in_body(body, event_stream)):
                # Pinned before the client can see the handles, like legacy ids above.
                pins = MintedPins(self.pins, self._minted, upstream.name, principal, event_stream)
                await pins.pin(found)
            await send({"type": "http.response.start", "status": head.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            self._finish(upstream, connection, head)
            return head.status
        chunks: AsyncIterator[bytes] | None = None
        first = b""
        if head.framing == "chunked" and not event_stream:
            # The first chunk is read before the status goes out, so that broken framing in
            # it still gets a clean 502 rather than a cut 200 (issue #12).
            chunks = connection.body(head)
            first = await anext(chunks, b"")
        await send({"type": "http.response.start", "status": head.status, "headers": headers})
        if head.framing == "none":
            await send({"type": "http.response.body", "body": b""})
            self._finish(upstream, connection, head)
            return head.status
        handles = None
        if scan:
            handles = MintedPins(self.pins, self._minted, upstream.name, principal, event_stream)
        if event_stream or head.framing == "close":
            await self._pump_watched(upstream, request, send, connection, head, handles)
        else:
            await self._pump(upstream, request, send, connection, head, handles, chunks, first)
        return head.status

    async def _pump(
        self,
        upstream: Upstream,
        request: Incoming,
        send: Send,
        connection: Connection,
        head: ResponseHead,
        handles: MintedPins | None = None,
        chunks: AsyncIterator[bytes] | None = None,
        first: bytes = b"",
    ) -> None:
        """Stream the body through; ``chunks`` and ``first``: a body already begun."""
        try:
            if first:
                if handles is not None:
                    await handles.feed(first)  # scanned, not held: pins what it completes
                await send({"type": "http.response.body", "body": first, "more_body": True})
            if chunks is None:
                chunks = connection.body(head)
            async for chunk in chunks:
                if handles is not None:
                    await handles.feed(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamError as error:
            if head.framing != "length" and request.body is not None:
                # An event stream cut mid-way: end it with the error the request is owed.
                await self._send_stream_error(upstream, request, send, error)
            raise
        if handles is not None:
            await handles.finish()
        await send({"type": "http.response.body", "body": b""})
        self._finish(upstream, connection, head)

    async def _pump_watched(
        self,
        upstream: Upstream,
        request: Incoming,
        send: Send,
        connection: Connection,
        head: ResponseHead,
        handles: MintedPins | None = None,
    ) -> None:
        """:meth:`_pump` while watching for the client to go away: a long event stream must
        not outlive its reader (the upstream connection is then closed)."""
        pump = asyncio.ensure_future(self._pump(upstream, request, send, connection, head, handles))
        watch = asyncio.ensure_future(wait_disconnect(request.receive))
        try:
            await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not pump.done():
                pump.cancel()
                connection.close()
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        if pump.done() and not pump.cancelled():
            pump.result()  # re-raise an upstream failure
        else:
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def _send_stream_error(
        self, upstream: Upstream, request: Incoming, send: Send, error: UpstreamError
    ) -> None:
        failure = UpstreamFailed(_public_failure(error, "mid-response"))
        await end_stream(send, failure, self._request_id(request))

    @staticmethod
    def _finish(upstream: Upstream, connection: Connection, head: ResponseHead) -> None:
        if head.keep_alive:
            upstream.pool.give_back(connection)
        else:
            connection.close()


class _WatchedSend:
    """``send``, remembering whether the response has started (after that, a failure can
    only cut the stream: no second status line)."""

    __slots__ = ("_send", "started")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


def _public_failure(error: UpstreamError, when: str) -> str:
    """What a client is told about a failed hop: the kind of failure, never the upstream's
    address or its own words (those go to the log; issue #12)."""
    if isinstance(error, MalformedResponse):
        what = "sent a response that breaks HTTP/1.1 framing"
    elif isinstance(error, UpstreamTimedOut):
        what = "sent nothing within the gateway's --upstream-timeout"
    else:
        what = "lost the connection"
    return (
        f"The upstream server {what} {when}; the request may or may not have been applied. "
        "Check before retrying anything that is not idempotent."
    )
