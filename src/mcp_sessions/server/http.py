"""Streamable HTTP: legacy ``Mcp-Session-Id`` sessions served from the shared store.

The SDK keeps legacy sessions in one process's memory (research/sdk-digest.md §3). Here the
session *record* lives in the store, so any replica serves any legacy session (DESIGN §5):

* ``initialize`` goes to the SDK's stateful manager, and the id it mints (128 random bits)
  is recorded in the store, bound to the caller's principal, before the response leaves;
* a later request is checked against the store first: no id → 400 (when required), unknown,
  expired, destroyed or another principal's → 404, with one body for all;
* a known id is served by the stateful manager on the replica that holds its connection (so
  server-to-client requests keep working there), and by a stateless manager anywhere else;
* ``DELETE`` removes the record (204), ending the session on every replica.

Modern (2026-07-28) requests pass straight through: the middleware does their work, and the
SDK maps the JSON-RPC codes to HTTP statuses itself.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, MutableMapping
from typing import TYPE_CHECKING, Any

from mcp.server.auth.middleware.bearer_auth import RequireAuthMiddleware
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.routing import Route

from ..core.carriers import RequestView, resolve_carrier
from ..core.errors import (
    HeaderMismatch,
    InvalidSessionId,
    SessionError,
    SessionNotFound,
    StoreUnavailable,
)
from ..core.names import LEGACY_PROTOCOL_VERSIONS, SESSION_KIND
from ..core.records import Record
from ..stores import AlreadyExists, NotFound
from .engine import legacy_record_var
from .sdk import current_principal

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from .sdk import Sessions

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Any
Send = Any

#: Bodies larger than this are refused with 413 before anything parses them.
DEFAULT_MAX_BODY = 4 * 1024 * 1024


def streamable_http_app(sessions: Sessions, mcp: MCPServer, **options: Any) -> Starlette:
    """``mcp.streamable_http_app(**options)`` with legacy sessions kept in the store."""
    if options.get("stateless_http"):
        raise ValueError(
            "stateless_http is managed by mcp-sessions: legacy sessions are served from the "
            "store, statefully where possible; leave it unset"
        )
    path = options.get("streamable_http_path", "/mcp")
    app = mcp.streamable_http_app(**options)
    stateful: StreamableHTTPSessionManager = mcp.session_manager
    stateless = StreamableHTTPSessionManager(
        app=stateful.app,
        json_response=stateful.json_response,
        stateless=True,
        security_settings=stateful.security_settings,
        max_request_body_size=stateful.max_request_body_size,
    )
    gate = LegacyGate(
        sessions,
        stateful=_find_endpoint(app, path),
        stateless=StreamableHTTPASGIApp(stateless),
        max_body=stateful.max_request_body_size,
    )
    _put_endpoint(app, path, gate)

    previous_lifespan = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(starlette: Starlette) -> AsyncIterator[Any]:
        async with previous_lifespan(starlette) as state, stateless.run():
            await sessions.engine.start()  # logs a store that is down or keeps nothing
            try:
                yield state
            finally:
                await sessions.aclose()

    app.router.lifespan_context = lifespan
    return app


def _endpoint_holder(app: Starlette, path: str) -> Any:
    """The object whose ``.app`` is the SDK's endpoint: inside its auth check, if any, so
    that a missing token gets 401 before any session rule applies."""
    for route in app.router.routes:
        if isinstance(route, Route) and route.path == path:
            holder: Any = route.app if isinstance(route.app, RequireAuthMiddleware) else route
            if isinstance(holder.app, StreamableHTTPASGIApp | LegacyGate):
                return holder
    raise RuntimeError(
        f"could not find the MCP endpoint {path!r} in the SDK's app; this mcp version is not "
        "supported by mcp-sessions' HTTP adapter"
    )


def _find_endpoint(app: Starlette, path: str) -> Any:
    return _endpoint_holder(app, path).app


def _put_endpoint(app: Starlette, path: str, gate: LegacyGate) -> None:
    _endpoint_holder(app, path).app = gate


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _send_error(send: Send, status: int, error: SessionError, request_id: Any = None) -> None:
    await _send_json(
        send, status, {"jsonrpc": "2.0", "id": request_id, "error": error.to_jsonrpc()}
    )


async def _send_unavailable(send: Send, error: StoreUnavailable, request_id: Any = None) -> None:
    """503 with the JSON-RPC -31006 body and ``Retry-After`` (issue #12 item 8)."""
    payload = json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error.to_jsonrpc()}).encode()
    retry_after = max(1, round(error.retry_after or 1))
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"retry-after", str(retry_after).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class _BodyTooLarge(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        message: Message = await receive()  # disconnect notifications after the body
        return message

    return replay


def _without_session_id(send: Send) -> Send:
    """``send`` minus any ``Mcp-Session-Id`` response header.

    The id is issued on the ``initialize`` response only (DESIGN §5, spec §5.1 item 9); the
    SDK's stateful transport repeats it on every response of the session, and only on the
    replica that holds the connection, so the same request would differ by replica.
    """

    async def strip(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [
                (name, value)
                for name, value in message.get("headers", [])
                if name.lower() != b"mcp-session-id"
            ]
            message = {**message, "headers": headers}
        await send(message)

    return strip


class LegacyGate:
    """The ASGI endpoint in front of the SDK's managers (see the module docstring)."""

    def __init__(self, sessions: Sessions, *, stateful: Any, stateless: Any, max_body: int) -> None:
        self.sessions = sessions
        self.stateful = stateful
        self.stateless = stateless
        self.max_body = max_body
        #: Legacy sessions whose live connection this process's stateful manager holds.
        self.local: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.stateful(scope, receive, send)
            return
        headers = Headers(scope=scope)
        version = headers.get("mcp-protocol-version")
        if version is not None and version not in LEGACY_PROTOCOL_VERSIONS:
            # The SDK's own era rule: any version header that is not a handshake-era version
            # goes to the modern path, which answers unsupported versions itself (-32022).
            await self.stateful(scope, receive, send)
            return
        session_id = headers.get("mcp-session-id")
        method = scope["method"]
        if method == "POST":
            await self._post(scope, receive, send, headers, session_id)
        elif method == "DELETE" and session_id is not None:
            await self._delete(scope, receive, send, session_id)
        elif method == "GET" and session_id is not None:
            send = _without_session_id(send)
            try:
                record = await self._lookup(session_id)
            except StoreUnavailable as error:
                await _send_unavailable(send, error)
                return
            if record is None:
                await _send_error(send, 404, SessionNotFound())
            elif session_id in self.local:
                await self.stateful(scope, receive, send)
            else:
                # The standalone stream lives only where the connection does.
                await self.stateless(scope, receive, send)
        else:
            await self.stateful(scope, receive, send)

    async def _lookup(self, session_id: str) -> Record | None:
        store = self.sessions.engine.store
        record = await store.get(SESSION_KIND, session_id, current_principal().key)
        if record is None or record.origin != "legacy":
            return None
        try:
            return await store.touch(record)
        except NotFound:
            return None

    async def _post(
        self, scope: Scope, receive: Receive, send: Send, headers: Headers, session_id: str | None
    ) -> None:
        try:
            body = await _read_body(receive, self.max_body)
        except _BodyTooLarge:
            await _send_json(send, 413, {"error": f"request body over {self.max_body} bytes"})
            return
        replay = _replay(body, receive)
        try:
            message = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            await self.stateful(scope, replay, send)  # the SDK answers the parse error
            return
        request_id = message.get("id") if isinstance(message, dict) else None
        rpc_method = message.get("method") if isinstance(message, dict) else None
        params = message.get("params") if isinstance(message, dict) else None
        meta = params.get("_meta") if isinstance(params, dict) else None
        try:
            # The HTTP mirror must agree with _meta on legacy requests too (DESIGN §3).
            resolve_carrier(
                RequestView(
                    method=str(rpc_method),
                    meta=meta if isinstance(meta, dict) else None,
                    headers=headers,
                    protocol_version=headers.get("mcp-protocol-version"),
                ),
                self.sessions.config.carriers,
            )
        except (HeaderMismatch, InvalidSessionId) as error:
            await _send_error(send, 400, error, request_id)
            return
        if rpc_method == "initialize":
            await self._initialize(scope, replay, send, params, request_id=request_id)
            return
        send = _without_session_id(send)
        if session_id is None:
            if self.sessions.config.legacy_sessions_required and rpc_method is not None:
                await _send_json(
                    send,
                    400,
                    {
                        "jsonrpc": "2.0",
                        "id": request_id,
                        "error": {
                            "code": -32600,
                            "message": "Bad Request: missing Mcp-Session-Id header; send the id "
                            "from the initialize response on every later request",
                        },
                    },
                )
                return
            await self.stateless(scope, replay, send)
            return
        try:
            record = await self._lookup(session_id)
        except StoreUnavailable as error:
            await _send_unavailable(send, error, request_id)
            return
        if record is None:
            await _send_error(send, 404, SessionNotFound(), request_id)
            return
        legacy_record_var.set(record)  # the middleware finds it here instead of reading again
        if session_id not in self.local:
            await self.stateless(scope, replay, send)
            return
        # Served here statefully; if the SDK lost the connection (idle timeout), serve the
        # request statelessly instead of answering 404 for a session the store still has.
        lost = False

        async def watch(message: Message) -> None:
            nonlocal lost
            if message["type"] == "http.response.start" and message["status"] == 404:
                lost = True
            if not lost:
                await send(message)

        await self.stateful(scope, replay, watch)
        if lost:
            self.local.discard(session_id)
            await self.stateless(scope, _replay(body, receive), send)

    async def _initialize(
        self, scope: Scope, receive: Receive, send: Send, params: object, *, request_id: Any = None
    ) -> None:
        principal = current_principal()
        store = self.sessions.engine.store
        config = self.sessions.config
        client = params if isinstance(params, dict) else {}
        attributes = {
            "protocolVersion": client.get("protocolVersion"),
            "clientInfo": client.get("clientInfo"),
        }

        unavailable: list[tuple[str, StoreUnavailable]] = []

        async def record_session(message: Message) -> None:
            if unavailable:
                return  # the SDK's answer is replaced by a 503 below
            if message["type"] == "http.response.start" and message["status"] < 400:
                minted = Headers(raw=message.get("headers", [])).get("mcp-session-id")
                if minted is not None:
                    record = Record.new(
                        kind=SESSION_KIND,
                        id=minted,
                        principal=principal.key,
                        origin="legacy",
                        now=time.time(),
                        idle_ttl=config.idle_ttl,
                        max_lifetime=config.max_lifetime,
                        attributes=attributes,
                    )
                    # Stored before the client can see the id, so its next request finds it.
                    try:
                        with contextlib.suppress(AlreadyExists):
                            await store.create(record)
                    except StoreUnavailable as error:
                        unavailable.append((minted, error))
                        return
                    self.local.add(minted)
            await send(message)

        await self.stateful(scope, receive, record_session)
        if unavailable:
            minted, error = unavailable[0]
            # No record, so no session: end the SDK's in-memory one too, or every initialize
            # during an outage would hold a slot of its session table until the idle timeout.
            await self._end_connection(scope, minted)
            await _send_unavailable(send, error, request_id)

    async def _end_connection(self, scope: Scope, session_id: str) -> None:
        """DELETE ``session_id`` in the stateful manager, answering nobody."""
        headers = [
            (name, value)
            for name, value in scope.get("headers", [])
            if name.lower() not in (b"content-type", b"content-length", b"mcp-session-id")
        ]
        headers.append((b"mcp-session-id", session_id.encode()))

        async def nothing() -> Message:
            return {"type": "http.disconnect"}

        async def discard(message: Message) -> None:
            return None

        await self.stateful({**scope, "method": "DELETE", "headers": headers}, nothing, discard)

    async def _delete(self, scope: Scope, receive: Receive, send: Send, session_id: str) -> None:
        store = self.sessions.engine.store
        try:
            record = await self._lookup(session_id)
            if record is not None:
                await store.delete(SESSION_KIND, session_id, current_principal().key)
        except StoreUnavailable as error:
            await _send_unavailable(send, error)
            return
        if record is None:
            await _send_error(send, 404, SessionNotFound())
            return
        if session_id in self.local:
            self.local.discard(session_id)

            async def discard(message: Message) -> None:
                return None

            await self.stateful(scope, receive, discard)  # end the live connection here
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
