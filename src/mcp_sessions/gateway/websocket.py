"""WebSocket upgrades through the gateway (issue #16).

A socket is relayed to **one** upstream socket, chosen by the socket's first message with
the HTTP path's rules (``route_for``: the ``_meta`` id and its aliases, then a pinned
handle argument, then the principal, then the least-loaded upstream) and the same pins, so a
reconnect whose first message names the session lands where the session's pin says.

Later messages on the socket may name sessions too. Each session a socket names is pinned to
the socket's upstream the first time (so the next socket that starts with it lands there
too); a session already pinned to *another* upstream is refused on this socket with a
JSON-RPC error (-32600) and never forwarded: one socket never mixes sessions that live on
different upstreams, whose state (handles, server-to-client streams, a per-replica store) the
upstream it reaches would not have. Open another socket for that session.

Bounded: one message at a time in each direction (each ``send`` waits for the other side),
at most ``max_body_bytes`` per message (1009). When the upstream closes, the client's socket
closes with the same code and reason; when the client goes, the upstream socket is closed.
The ``--spawn`` backend has no WebSocket relay: its upgrades are refused (501).
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

import anyio

from ..asgi import Receive, Scope, Send, negotiate_handshake, refuse_handshake
from ..core.bodies import MalformedBody, NotAMessage, parse_message
from ..core.errors import InvalidRequest, SessionError, StoreUnavailable
from ..core.names import META_MINTED_HANDLES
from ..core.websocket import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_UNSUPPORTED_DATA,
    REASON_BINARY,
    REASON_IDLE,
    SUBPROTOCOL,
    echoable_id,
    reason_too_big,
)
from ..stores import StoreError
from .asgi import HOP_BY_HOP, Incoming
from .errors import UpstreamFailed
from .handles import HANDLE, MintedPins, minted_in, pin_key, request_handles
from .routing import RouteKey, route_for
from .trust import FORWARDED_FIELDS

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

    from .proxy import HTTPBackend
    from .upstreams import Upstream

logger = logging.getLogger("mcp_sessions.gateway")

#: Seconds a new socket has to send its first routable message (there is no upstream, and so
#: none of its limits, before it).
FIRST_MESSAGE_TIMEOUT = 30.0
#: Sessions one socket remembers having checked (then each further one is checked again).
MAX_CHECKED_SESSIONS = 1024
#: What a message gets when the pin store cannot say where its session lives.
_PINS_DOWN = (
    "The gateway's pin store is unavailable right now; the message was not sent. Retry it shortly."
)
#: Request fields that belong to the client's handshake, not to the upstream's.
_HANDSHAKE = frozenset(
    {b"host", b"upgrade", b"connection", b"sec-websocket-key", b"sec-websocket-version",
     b"sec-websocket-extensions", b"sec-websocket-protocol", b"content-length"}
)  # fmt: skip
#: Close codes a peer receives but may not send (RFC 6455 §7.4.1): 1005 "no code", 1006
#: "abnormal"; relayed as these instead.
_UNSENDABLE = {1005: CLOSE_NORMAL, 1006: CLOSE_INTERNAL_ERROR}

_proxies: WeakKeyDictionary[Any, WebSocketProxy] = WeakKeyDictionary()


async def serve_websocket(backend: object, scope: Scope, receive: Receive, send: Send) -> None:
    """The gateway's entry for WebSocket scopes (``backend``: the gateway's)."""
    from .proxy import HTTPBackend

    if not isinstance(backend, HTTPBackend):
        await receive()
        await refuse_handshake(
            scope, send, 501, "WebSocket is not supported by the --spawn backend; use HTTP"
        )
        return
    proxy = _proxies.get(backend)
    if proxy is None:
        proxy = _proxies.setdefault(backend, WebSocketProxy(backend))
    await proxy(scope, receive, send)


class WebSocketProxy:
    def __init__(self, backend: HTTPBackend) -> None:
        self.backend = backend
        self.config = backend.config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        if scope.get("path") != self.config.path:
            await refuse_handshake(scope, send, 404, "Not Found: no MCP endpoint here")
            return
        accepted = await negotiate_handshake(scope, send)
        if accepted is None:
            return
        try:
            import websockets  # noqa: F401  (the websocket extra)
        except ImportError:
            await refuse_handshake(
                scope, send, 501, "WebSocket needs the gateway's websocket extra installed"
            )
            return
        request = Incoming.from_scope({**scope, "type": "http", "method": "GET"}, receive)
        principal = await self.backend.trust.principal(request)
        if not isinstance(principal, str):
            await refuse_handshake(scope, send, 401, principal.message)
            return
        await send(accepted)
        relay = _Relay(self, request, principal, receive, send)
        try:
            await relay.run()
        except Exception:
            # Never a traceback to the client: logged here, the socket closed with 1011.
            logger.exception("WebSocket relay failed")
            await relay.close_client(CLOSE_INTERNAL_ERROR, "gateway error")


class _Relay:
    """One client socket and its upstream socket."""

    def __init__(
        self,
        proxy: WebSocketProxy,
        request: Incoming,
        principal: str,
        receive: Receive,
        send: Send,
    ) -> None:
        self.backend = proxy.backend
        self.config = proxy.config
        self.request = request
        self.principal = principal
        self._receive = receive
        self._send = send
        self.client_closed = False
        self.upstream: Upstream | None = None
        self.checked: set[str] = set()

    async def close_client(self, code: int, reason: str = "") -> None:
        if self.client_closed:
            return
        self.client_closed = True
        with contextlib.suppress(Exception):
            await self._send({"type": "websocket.close", "code": code, "reason": reason})

    async def _answer(self, error: SessionError, request_id: Any = None) -> None:
        await self._send({"type": "websocket.send", "text": json.dumps(error.response(request_id))})

    async def _next(self) -> tuple[str, dict[str, Any] | None] | None:
        """The client's next text frame and its JSON object (``None`` if not one), or
        ``None`` when the socket is done (closed here or by the client)."""
        while True:
            event = await self._receive()
            if event["type"] == "websocket.disconnect":
                self.client_closed = True
                return None
            if event["type"] != "websocket.receive":
                continue
            text = event.get("text")
            if text is None:
                await self.close_client(CLOSE_UNSUPPORTED_DATA, REASON_BINARY)
                return None
            raw = text.encode("utf-8")
            limit = self.config.max_body_bytes
            if len(raw) > limit:
                await self.close_client(CLOSE_TOO_BIG, reason_too_big(limit))
                return None
            try:
                return text, parse_message(raw)
            except (MalformedBody, NotAMessage):
                return text, None

    async def _route(self, body: dict[str, Any]) -> RouteKey:
        params = body.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        method = body.get("method")
        route = route_for(
            method=method if isinstance(method, str) else "",
            meta=meta if isinstance(meta, dict) else None,
            headers=self.request.headers,
            protocol_version=None,
            policy=self.config.routing,
        )
        if route.below_handles:
            for handle in request_handles(body, self.request.raw_headers):
                key = pin_key(handle)
                if await self.backend.pins.get(key, self.principal) is not None:
                    return RouteKey(HANDLE, key, session=True, handle=handle)
        return route

    async def run(self) -> None:
        # The first message that is a JSON object decides; frames before it get the answer
        # the server would give, from here. A socket that sends nothing routable in time is
        # closed, so that it does not hold a descriptor here without an upstream's limits.
        with anyio.move_on_after(FIRST_MESSAGE_TIMEOUT) as waited:
            first = await self._first()
        if waited.cancelled_caught:
            await self.close_client(CLOSE_NORMAL, REASON_IDLE)
            return
        if first is None:
            return
        text, body, route = first
        await self._relay(text, body, route)

    async def _first(self) -> tuple[str, dict[str, Any], RouteKey] | None:
        while True:
            frame = await self._next()
            if frame is None:
                return None
            text, body = frame
            if body is None:
                try:
                    parse_message(text.encode("utf-8"))
                except (MalformedBody, NotAMessage) as error:
                    await self._answer(error)
                continue
            try:
                return text, body, await self._route(body)
            except SessionError as error:
                await self._answer(error, echoable_id(body.get("id")))
            except StoreError as error:
                logger.warning("handle pin lookup failed: %s", error)
                await self._answer(StoreUnavailable(_PINS_DOWN), echoable_id(body.get("id")))

    async def _relay(self, text: str, body: dict[str, Any], route: RouteKey) -> None:
        backend = self.backend
        backend._decisions[route.decision].inc()
        try:
            choice = await backend._choose(route, self.principal, set())
        except StoreError as error:
            logger.warning("session pin lookup failed: %s", error)
            choice = StoreUnavailable(_PINS_DOWN)
        if isinstance(choice, SessionError):
            await self._answer(choice, echoable_id(body.get("id")))
            await self.close_client(CLOSE_TRY_AGAIN_LATER, "no upstream for this message")
            return
        upstream = choice.upstream
        if route.session and route.key is not None:
            self.checked.add(route.key)
        try:
            ws = await self._connect(upstream)
        except Exception as error:
            # Upstream addresses go to the log only, never to the client (issue #12).
            logger.warning("WebSocket to %s failed: %s", upstream.name, error)
            status = getattr(getattr(error, "response", None), "status_code", None)
            if status is None:
                backend.upstreams.mark_failed(upstream, str(error))
            why = "the upstream refused the WebSocket" + (f" (HTTP {status})" if status else "")
            await self._answer(UpstreamFailed(why), echoable_id(body.get("id")))
            await self.close_client(
                CLOSE_POLICY_VIOLATION if status in (401, 403) else CLOSE_INTERNAL_ERROR, why
            )
            return
        self.upstream = upstream
        upstream.in_flight += 1  # a socket counts as one, for least-loaded routing
        try:
            async with ws:
                await ws.send(text)
                async with anyio.create_task_group() as group:
                    group.start_soon(self._down, ws, group.cancel_scope)
                    await self._up(ws)
                    group.cancel_scope.cancel()
        finally:
            upstream.in_flight -= 1

    async def _connect(self, upstream: Upstream) -> ClientConnection:
        from websockets.asyncio.client import connect
        from websockets.typing import Subprotocol

        address = upstream.address
        url = f"ws://{address.netloc}{address.path}"
        return await connect(
            url,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            additional_headers=self._forwarded_headers(),
            open_timeout=self.config.connect_timeout,
            max_size=self.config.max_body_bytes,
            compression=None,
        )

    def _forwarded_headers(self) -> list[tuple[str, str]]:
        """The client's end-to-end fields (``Authorization``, ``Origin``, …) with
        ``X-Forwarded-*`` from the gateway's own view, as the HTTP path forwards them."""
        dropped = HOP_BY_HOP | _HANDSHAKE
        if not self.config.trust_forwarded:
            dropped = dropped | FORWARDED_FIELDS
        fields = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in self.request.raw_headers
            if name not in dropped and name != b"x-forwarded-for"
        ]
        scope = self.request.scope
        # A trusted proxy's X-Forwarded-For is appended to, as on the HTTP path.
        chain = [
            v.decode("latin-1") for n, v in self.request.raw_headers if n == b"x-forwarded-for"
        ]
        forwarded_for = ", ".join(chain) if chain and self.config.trust_forwarded else ""
        client = scope.get("client")
        if client:
            peer = str(client[0])
            forwarded_for = f"{forwarded_for}, {peer}" if forwarded_for else peer
        if forwarded_for:
            fields.append(("x-forwarded-for", forwarded_for))
        if not any(n == "x-forwarded-proto" for n, _ in fields):
            # The scheme the client reached the gateway with, as the HTTP path names it.
            scheme = {"ws": "http", "wss": "https"}.get(str(scope.get("scheme")), "http")
            fields.append(("x-forwarded-proto", scheme))
        host = self.request.headers.get("host")
        if host and not any(n == "x-forwarded-host" for n, _ in fields):
            fields.append(("x-forwarded-host", host))
        return fields

    async def _up(self, ws: ClientConnection) -> None:
        """Client → upstream, checking the sessions later messages name."""
        from websockets.exceptions import ConnectionClosed

        while True:
            frame = await self._next()
            if frame is None:
                with contextlib.suppress(Exception):
                    await ws.close(CLOSE_NORMAL)
                return
            text, body = frame
            if body is not None and await self._refused(body):
                continue
            try:
                await ws.send(text)
            except ConnectionClosed:
                return  # _down relays the upstream's close

    async def _refused(self, body: dict[str, Any]) -> bool:
        """Whether ``body`` names a session that lives on another upstream (then answered)."""
        try:
            return await self._elsewhere(body)
        except StoreError as error:
            logger.warning("session pin lookup failed: %s", error)
            await self._answer(StoreUnavailable(_PINS_DOWN), echoable_id(body.get("id")))
            return True

    async def _elsewhere(self, body: dict[str, Any]) -> bool:
        try:
            route = await self._route(body)
        except SessionError:
            return False  # the upstream gives the same refusal
        key = route.key
        if not route.session or key is None or key in self.checked:
            return False
        assert self.upstream is not None
        pins = self.backend.pins
        if route.legacy:
            return False  # no Mcp-Session-Id on a socket; never placed by a client
        placed = await pins.get(key, self.principal)
        if placed is None:
            placed = await pins.place(key, self.principal, self.upstream.name, route.decision)
        if placed != self.upstream.name:
            await self._answer(
                InvalidRequest(
                    "Invalid Request: this session lives on another upstream than the one this "
                    "WebSocket reaches; open a new WebSocket whose first message names it"
                ),
                echoable_id(body.get("id")) if "method" in body else None,
            )
            return True
        if len(self.checked) < MAX_CHECKED_SESSIONS:
            self.checked.add(key)
        return False

    async def _down(self, ws: ClientConnection, scope: anyio.CancelScope) -> None:
        """Upstream → client, pinning minted handles; the upstream's close is relayed."""
        from websockets.exceptions import ConnectionClosed

        assert self.upstream is not None
        handles = MintedPins(
            self.backend.pins, self.backend._minted, self.upstream.name, self.principal, False
        )
        try:
            async for frame in ws:
                if isinstance(frame, bytes):
                    continue  # an MCP server sends text; nothing else is relayed
                if META_MINTED_HANDLES in frame:
                    with contextlib.suppress(ValueError, RecursionError):
                        await handles.pin(minted_in(json.loads(frame)))
                if self.client_closed:
                    break
                try:
                    await self._send({"type": "websocket.send", "text": frame})
                except OSError:  # the client is gone (uvicorn's ClientDisconnected)
                    self.client_closed = True
                    break
        except ConnectionClosed:
            pass
        code = ws.close_code if ws.close_code is not None else 1006
        reason = ws.close_reason or ("upstream connection lost" if code == 1006 else "")
        await self.close_client(_UNSENDABLE.get(code, code), reason)
        scope.cancel()
