"""MCP over WebSocket on the Streamable HTTP path (issue #16).

``sessions.streamable_http_app(mcp)`` also answers a WebSocket upgrade on its MCP path
(``ws://HOST:PORT/mcp``, subprotocol ``mcp``). Each socket is served as one SDK connection,
exactly as stdio is (``serve_dual_era_loop`` over a pair of in-memory streams): the client's
first request picks the era (``initialize`` for 2025-11-25, the per-request ``_meta`` envelope
for 2026-07-28), requests are answered on the same socket, server-to-client requests and
notifications go out on it, and the project's middleware runs unchanged. So the session comes
from ``_meta`` (id, aliases, state token) or the handle argument as over HTTP, and a request
that names none belongs to the socket's own connection session (carrier 5): the SDK gives
the socket a standalone channel, which is what the middleware keys connection ids on.

What this module adds is the socket's edge (``core/websocket.py`` holds the rules): the same
Host/Origin checks as the HTTP path (DNS rebinding; browsers do not apply CORS to
WebSockets, so the Origin check matters more here), the same bearer-token check when the app
requires one, subprotocol negotiation, one JSON-RPC message per text frame with -32700/-32600
answers for frames that are not, and the per-socket limits of :class:`WebSocketLimits`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import mcp_types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.auth.middleware.bearer_auth import RequireAuthMiddleware
from mcp.server.runner import serve_dual_era_loop
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware
from mcp.shared.message import SessionMessage
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import WebSocketRoute

from ..asgi import Receive, Scope, Send, denial_send, negotiate_handshake, refuse_handshake
from ..core.bodies import MalformedBody, NotAMessage, parse_message
from ..core.errors import InvalidRequest, LimitExceeded, SessionError
from ..core.websocket import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED_DATA,
    REASON_BINARY,
    REASON_FLOOD,
    REASON_IDLE,
    RateBucket,
    WebSocketLimits,
    echoable_id,
    in_flight_refusal,
    reason_too_big,
)

logger = logging.getLogger("mcp_sessions.websocket")


class WebSocketEndpoint:
    """The ASGI app for WebSocket scopes on the MCP path; one :class:`_Socket` per client."""

    def __init__(
        self,
        manager: StreamableHTTPSessionManager,
        limits: WebSocketLimits,
        auth: tuple[list[str], Any] | None = None,
    ) -> None:
        self.manager = manager
        #: The HTTP endpoint's bearer-token check (required scopes, resource metadata URL),
        #: the SDK's own middleware; its 401/403 answers refuse the upgrade.
        self.guard = None if auth is None else RequireAuthMiddleware(self._handshake, *auth)
        self.limits = limits
        self.max_bytes = limits.max_message_bytes or manager.max_request_body_size
        self.security = TransportSecurityMiddleware(manager.security_settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.guard is None:
            await self._handshake(scope, receive, send)
        else:
            await self.guard(scope, receive, denial_send(scope, send))

    async def _handshake(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return  # gone before the handshake
        # The HTTP path's Host/Origin rules (the SDK's DNS-rebinding protection), as they are.
        refusal = await self.security.validate_request(Request({**scope, "type": "http"}))
        if refusal is not None:
            await refusal(scope, receive, denial_send(scope, send))
            return
        accepted = await negotiate_handshake(scope, send)
        if accepted is None:
            return
        server = self.manager.app
        # The manager's lifespan state (entered once by the app's lifespan, shared by every
        # HTTP request): the SDK has no public accessor for it, so it is read here, guarded.
        started = getattr(self.manager, "_task_group", None) is not None
        if not started:
            await refuse_handshake(scope, send, 503, "The MCP server is not running")
            return
        await send(accepted)
        socket = _Socket(self, receive, send)
        try:
            await socket.run(
                lambda r, w: serve_dual_era_loop(
                    server,
                    r,
                    w,
                    lifespan_state=getattr(self.manager, "_lifespan_state", None),
                    init_options=server.create_initialization_options(),
                )
            )
        except Exception:
            # Never a traceback to the client: log it here, close with 1011.
            logger.exception("WebSocket connection failed")
            await socket.close(CLOSE_INTERNAL_ERROR, "internal error")


_Serve = Callable[
    [MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]],
    Coroutine[Any, Any, None],
]


class _Socket:
    """One accepted socket: frames in, SDK connection in the middle, frames out."""

    def __init__(self, endpoint: WebSocketEndpoint, receive: Receive, send: Send) -> None:
        self.limits = endpoint.limits
        self.max_bytes = endpoint.max_bytes
        self._receive = receive
        self._send = send
        self._send_lock = anyio.Lock()
        self.in_flight: set[Any] = set()
        self.closed = False

    async def run(self, serve: _Serve) -> None:
        # Unbuffered: while the SDK has not taken a message, the next frame is not read, so a
        # socket's backlog waits in the kernel, not in this process.
        up_send, up_receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        down_send, down_receive = anyio.create_memory_object_stream[SessionMessage](0)
        async with anyio.create_task_group() as group:
            group.start_soon(serve, up_receive, down_send)
            group.start_soon(self._write, down_receive)
            async with up_send:
                await self._read(up_send)
            group.cancel_scope.cancel()

    async def close(self, code: int, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):  # the client may be gone already
            async with self._send_lock:
                await self._send({"type": "websocket.close", "code": code, "reason": reason})

    async def _out(self, text: str) -> None:
        """Send one text frame; a client that is gone just ends the socket (no traceback)."""
        if self.closed:
            return
        try:
            async with self._send_lock:
                await self._send({"type": "websocket.send", "text": text})
        except OSError:  # uvicorn's ClientDisconnected, a reset connection
            self.closed = True

    async def _text(self, payload: dict[str, Any]) -> None:
        await self._out(json.dumps(payload))

    async def _write(self, down: MemoryObjectReceiveStream[SessionMessage]) -> None:
        async with down:
            async for item in down:
                message = item.message
                if isinstance(message, mcp_types.JSONRPCResponse | mcp_types.JSONRPCError):
                    self.in_flight.discard(message.id)
                if not self.closed:
                    await self._out(message.model_dump_json(by_alias=True, exclude_unset=True))

    async def _read(self, up: MemoryObjectSendStream[SessionMessage | Exception]) -> None:
        bucket = RateBucket(self.limits, anyio.current_time())
        while not self.closed:
            with anyio.move_on_after(self.limits.idle_timeout) as waited:
                event = await self._receive()
            if waited.cancelled_caught:
                if self.in_flight:
                    continue  # the client is waiting for us, not idle
                await self.close(CLOSE_NORMAL, REASON_IDLE)
                return
            kind = event["type"]
            if kind == "websocket.disconnect":
                self.closed = True
                return
            if kind != "websocket.receive":
                continue
            text = event.get("text")
            if text is None:
                await self.close(CLOSE_UNSUPPORTED_DATA, REASON_BINARY)
                return
            raw = text.encode("utf-8")
            if len(raw) > self.max_bytes:
                await self.close(CLOSE_TOO_BIG, reason_too_big(self.max_bytes))
                return
            message = await self._admit(raw, bucket)
            if message is None:
                if bucket.refused_in_row >= self.limits.flood_close_after:
                    await self.close(CLOSE_POLICY_VIOLATION, REASON_FLOOD)
                    return
                continue
            await up.send(SessionMessage(message))

    async def _admit(self, raw: bytes, bucket: RateBucket) -> Any | None:
        """The frame as an SDK message, or ``None`` after answering why it is not taken."""
        try:
            body = parse_message(raw)
        except (MalformedBody, NotAMessage) as error:
            bucket.take(anyio.current_time())  # bad frames count against the rate too
            await self._text(error.response(None))
            return None
        request_id = body.get("id")
        is_request = "method" in body and "id" in body
        refusal: SessionError | None = bucket.take(anyio.current_time())
        if refusal is None and "id" in body and echoable_id(request_id) is None:
            # The SDK's models would read it as a notification and never answer.
            refusal = InvalidRequest(_why_invalid(body))
        if refusal is None:
            try:
                message = mcp_types.jsonrpc_message_adapter.validate_python(body, by_name=False)
            except ValidationError:
                refusal = InvalidRequest(_why_invalid(body))
            else:
                if isinstance(message, mcp_types.JSONRPCRequest):
                    if message.id in self.in_flight:
                        refusal = InvalidRequest(
                            f"Invalid Request: id {message.id!r} is already in use by a request "
                            "still in flight on this socket"
                        )
                    elif len(self.in_flight) >= self.limits.max_in_flight:
                        refusal = in_flight_refusal(self.limits.max_in_flight)
                    else:
                        self.in_flight.add(message.id)
                        return message
                else:
                    if (
                        isinstance(message, mcp_types.JSONRPCNotification)
                        and message.method == "notifications/cancelled"
                    ):
                        # A cancelled request gets no answer (spec: cancellation), so it is
                        # no longer in flight here either.
                        cancelled = echoable_id((message.params or {}).get("requestId"))
                        if cancelled is not None:  # anything else names no request
                            self.in_flight.discard(cancelled)
                    return message
        if isinstance(refusal, LimitExceeded) and not is_request:
            return None  # a notification or response over the rate: dropped, never answered
        await self._text(refusal.response(echoable_id(request_id)))
        return None


def _why_invalid(body: dict[str, Any]) -> str:
    """A short, specific reason a JSON object is not a JSON-RPC 2.0 message (never the
    validator's own text, which can quote the whole input)."""
    if body.get("jsonrpc") != "2.0":
        return 'Invalid Request: "jsonrpc" must be "2.0"'
    if "method" in body and not isinstance(body["method"], str):
        return 'Invalid Request: "method" must be a string'
    if "id" in body and echoable_id(body["id"]) is None:
        return 'Invalid Request: "id" must be a string or an integer'
    if "params" in body and not isinstance(body["params"], dict):
        return 'Invalid Request: "params" must be an object'
    if "method" not in body and "result" not in body and "error" not in body:
        return 'Invalid Request: a message needs "method", "result" or "error"'
    return "Invalid Request: not a JSON-RPC 2.0 message"


def add_websocket_route(
    app: Starlette,
    path: str,
    holder: Any,
    manager: StreamableHTTPSessionManager,
    limits: WebSocketLimits,
) -> None:
    """Serve WebSocket upgrades on ``path`` of the SDK's ``app``, behind the same bearer-token
    check as the HTTP endpoint (``holder``: the route or the SDK's auth wrapper around it)."""
    auth = None
    if isinstance(holder, RequireAuthMiddleware):
        auth = (holder.required_scopes, holder.resource_metadata_url)
    app.router.routes.append(WebSocketRoute(path, WebSocketEndpoint(manager, limits, auth)))
