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
import math
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from mcp.server.auth.middleware.bearer_auth import RequireAuthMiddleware
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.routing import Route

from ..asgi import (
    CONTENT_LENGTH,
    CONTENT_TYPE,
    LEGACY_SESSION_FIELD,
    LEGACY_SESSION_FIELD_BYTES,
    PROTOCOL_VERSION_FIELD,
    Message,
    Receive,
    Scope,
    Send,
    read_body,
    replay,
    send_empty,
    send_error,
)
from ..core.bodies import MalformedBody, NotAMessage, parse_message
from ..core.carriers import RequestView, resolve_carrier
from ..core.errors import (
    BodyTooLarge,
    HeaderMismatch,
    InvalidParams,
    InvalidSessionId,
    LimitExceeded,
    MissingLegacySessionId,
    SessionNotFound,
    StoreUnavailable,
)
from ..core.limits import json_size
from ..core.names import LEGACY_PROTOCOL_VERSIONS, SESSION_KIND
from ..core.records import Record
from ..core.websocket import WebSocketLimits
from ..stores.events import DEFAULT_MAX_EVENT_BYTES, EventLog, open_event_log
from .engine import SessionEngine
from .principal import current_principal
from .resumption import Followed, SharedEventStore, bind, last_event_id, learn, resume_elsewhere
from .websocket import add_websocket_route

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

#: Where, in the ASGI scope's ``state``, the gate leaves the legacy record it has just read
#: and touched: the SDK hands the middleware that request, so the record is not read twice.
_CHECKED_RECORD = "mcp_sessions.legacy_record"


def checked_legacy_record(request: Any) -> Record | None:
    """The legacy record the gate checked for ``request`` (the SDK's Starlette request),
    if it did."""
    scope = getattr(request, "scope", None)
    state = scope.get("state") if isinstance(scope, dict) else None
    found = state.get(_CHECKED_RECORD) if isinstance(state, dict) else None
    return found if isinstance(found, Record) else None


def streamable_http_app(engine: SessionEngine, mcp: MCPServer, **options: Any) -> Starlette:
    """``mcp.streamable_http_app(**options)`` with legacy sessions kept in the store, and
    WebSocket upgrades on the same path (``websocket=``: :class:`WebSocketLimits`, or
    ``None`` to refuse them)."""
    if options.get("stateless_http"):
        raise ValueError(
            "stateless_http is managed by mcp-sessions: legacy sessions are served from the "
            "store, statefully where possible; leave it unset"
        )
    path = options.get("streamable_http_path", "/mcp")
    websocket = options.pop("websocket", WebSocketLimits())
    # Streams resumable on every replica when the store is shared (issue #15 item 3).
    events = None if "event_store" in options else open_event_log(engine.store)
    if events is not None:
        options["event_store"] = SharedEventStore(events, max_event_bytes=DEFAULT_MAX_EVENT_BYTES)
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
        engine,
        stateful=_find_endpoint(app, path),
        stateless=StreamableHTTPASGIApp(stateless),
        max_body=stateful.max_request_body_size,
        events=events,
    )
    _put_endpoint(app, path, gate)
    if websocket is not None:  # issue #16: WebSocket upgrades on the same path
        add_websocket_route(app, path, _endpoint_holder(app, path), stateful, websocket)

    previous_lifespan = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(starlette: Starlette) -> AsyncIterator[Any]:
        async with previous_lifespan(starlette) as state, stateless.run():
            await engine.start()  # logs a store that is down or keeps nothing
            try:
                yield state
            finally:
                if events is not None:
                    await events.close()
                await engine.aclose()

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


def _without_session_id(send: Send) -> Send:
    """``send`` minus any ``Mcp-Session-Id`` response header.

    The id is issued on the ``initialize`` response only (DESIGN §5, spec §5.1 item 9); the
    SDK's stateful transport repeats it on every response of the session, and only on the
    replica that holds the connection, so the same request would differ by replica.
    """

    async def strip(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = _session_id_stripped(message)
        await send(message)

    return strip


def _session_id_stripped(start: Message) -> Message:
    """An ``http.response.start`` message without its ``Mcp-Session-Id`` header."""
    headers = [
        (name, value)
        for name, value in start.get("headers", [])
        if name.lower() != LEGACY_SESSION_FIELD_BYTES
    ]
    return {**start, "headers": headers}


class LegacyGate:
    """The ASGI endpoint in front of the SDK's managers (see the module docstring)."""

    def __init__(
        self,
        engine: SessionEngine,
        *,
        stateful: Any,
        stateless: Any,
        max_body: int,
        events: EventLog | None = None,
    ) -> None:
        self.engine = engine
        self.config = engine.config
        self.stateful = stateful
        self.stateless = stateless
        self.max_body = max_body
        #: Legacy sessions whose live connection this process's stateful manager holds.
        self.local: set[str] = set()
        #: The shared event log, when streams are resumable on every replica (issue #15).
        self.events = events
        self.followed = Followed()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.events is None:
            await self._serve(scope, receive, send)
            return
        # Events the SDK stores while serving this request are filed under its session.
        with bind(Headers(scope=scope).get(LEGACY_SESSION_FIELD)):
            await self._serve(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.stateful(scope, receive, send)
            return
        headers = Headers(scope=scope)
        version = headers.get(PROTOCOL_VERSION_FIELD)
        method = scope["method"]
        checked: tuple[bytes, dict[str, Any]] | None = None
        if method == "POST":
            # One guard for both eras: a body the decoder refuses is 400 / -32700 here, so no
            # parser behind this point (ours or the SDK's) meets it (issue #12 item 4).
            checked = await self._checked_body(receive, send)
            if checked is None:
                return
            receive = replay(checked[0], receive)
        if version is not None and version not in LEGACY_PROTOCOL_VERSIONS:
            # The SDK's own era rule: any version header that is not a handshake-era version
            # goes to the modern path, which answers unsupported versions itself (-32022).
            await self.stateful(scope, receive, send)
            return
        session_id = headers.get(LEGACY_SESSION_FIELD)
        if checked is not None:
            await self._post(scope, receive, send, headers, session_id, *checked)
        elif method == "DELETE" and session_id is not None:
            await self._delete(scope, receive, send, session_id)
        elif method == "GET" and session_id is not None:
            send = _without_session_id(send)
            try:
                record = await self._lookup(session_id)
            except StoreUnavailable as error:
                await send_error(send, error)
                return
            if record is None:
                await send_error(send, SessionNotFound())
            elif session_id in self.local:
                await self.stateful(scope, receive, send)
            elif self.events is not None and (resume_from := last_event_id(scope)):
                # The stream was served elsewhere: replay it from the shared log.
                await resume_elsewhere(
                    self.events, session_id, resume_from, receive, send, followed=self.followed
                )
            else:
                # The standalone stream lives only where the connection does.
                await self.stateless(scope, receive, send)
        else:
            await self.stateful(scope, receive, send)

    async def _lookup(self, session_id: str) -> Record | None:
        return await self.engine.open_record(
            SESSION_KIND, session_id, current_principal().key, origin="legacy"
        )

    async def _checked_body(
        self, receive: Receive, send: Send
    ) -> tuple[bytes, dict[str, Any]] | None:
        """The POST body and its one JSON-RPC message, or ``None`` once refused."""
        try:
            body = await read_body(receive, self.max_body)
        except BodyTooLarge as error:
            await send_error(send, error)
            return None
        try:
            return body, parse_message(body)
        except (MalformedBody, NotAMessage) as error:
            await send_error(send, error)
            return None

    async def _post(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: Headers,
        session_id: str | None,
        body: bytes,
        message: dict[str, Any],
    ) -> None:
        replayed = receive  # already replays ``body``
        request_id = message.get("id")
        rpc_method = message.get("method")
        params = message.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        try:
            # The HTTP mirror must agree with _meta on legacy requests too (DESIGN §3).
            resolve_carrier(
                RequestView(
                    method=str(rpc_method),
                    meta=meta if isinstance(meta, dict) else None,
                    headers=headers,
                    protocol_version=headers.get(PROTOCOL_VERSION_FIELD),
                ),
                self.config.carriers,
            )
        except (HeaderMismatch, InvalidSessionId) as error:
            await send_error(send, error, request_id)
            return
        if rpc_method == "initialize":
            await self._initialize(scope, replayed, send, params, request_id, body, receive)
            return
        if session_id is None:
            if self.config.legacy_sessions_required and rpc_method is not None:
                await send_error(send, MissingLegacySessionId(), request_id)
                return
            await self.stateless(scope, replayed, _without_session_id(send))
            return
        try:
            record = await self._lookup(session_id)
        except StoreUnavailable as error:
            await send_error(send, error, request_id)
            return
        if record is None:
            await send_error(send, SessionNotFound(), request_id)
            return
        state = scope.setdefault("state", {})
        state[_CHECKED_RECORD] = record  # see checked_legacy_record
        try:
            if session_id not in self.local:
                await self.stateless(scope, replayed, _without_session_id(send))
                return
            # Served here statefully; if the SDK lost the connection (idle timeout), serve
            # the request statelessly instead of answering 404 for a session the store still
            # has. One wrapper around ``send`` on this path, the hot one: every message of
            # every response passes through it (issue #14's benchmark).
            lost = False

            async def watch(message: Message) -> None:
                nonlocal lost
                if message["type"] == "http.response.start":
                    if message["status"] == 404:
                        lost = True
                        return
                    message = _session_id_stripped(message)
                if not lost:
                    await send(message)

            await self.stateful(scope, replayed, watch)
            if lost:
                self.local.discard(session_id)
                await self.stateless(scope, replay(body, receive), _without_session_id(send))
        finally:
            # The middleware has taken it; the ASGI scope may outlive the request in the
            # framework's own reference cycles, and need not keep the session state there.
            state.pop(_CHECKED_RECORD, None)

    async def _initialize(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        params: object,
        request_id: Any,
        body: bytes,
        raw_receive: Receive,
    ) -> None:
        principal = current_principal()
        engine = self.engine
        client = params if isinstance(params, dict) else {}
        # Kept in the record, so a replica that did not see this initialize knows the client
        # as well as the one that did (issue #15 item 3, server/legacy_client.py).
        attributes = {
            "protocolVersion": client.get("protocolVersion"),
            "clientInfo": client.get("clientInfo"),
            "capabilities": client.get("capabilities"),
        }
        # What is stored is bounded, and refused whole before anything is (issue #12 row 3).
        limit = engine.quotas.limits.max_initialize_bytes
        try:
            size: float = json_size(attributes)
        except ValueError:  # NaN or Infinity: JSON has no such numbers to store
            size = math.inf
        if size > limit:
            refusal = InvalidParams(
                f"initialize: clientInfo, capabilities and protocolVersion are {size} bytes "
                f"of JSON, over this server's limit of {limit}; no session was opened. Send a "
                "shorter clientInfo or fewer capabilities."
                if math.isfinite(size)
                else "initialize: clientInfo or capabilities hold a number JSON cannot store "
                "(NaN or Infinity); no session was opened."
            )
            await send_error(send, refusal, request_id)
            return
        caller = engine.quotas.caller_of_scope(principal, scope)
        try:
            await engine.quotas.admit(caller, "legacy")
        except (LimitExceeded, StoreUnavailable) as error:
            await send_error(send, error, request_id)
            return

        async def remember(minted: str) -> None:
            # Stored before the client can see the id, so its next request finds it.
            await engine.record_legacy(minted, principal.key, caller, attributes)

        #: The SDK's manager refused (503 "Too many open sessions": its cap on live
        #: connections, shared by every caller); its answer is held back.
        full = False

        unavailable: list[tuple[str, StoreUnavailable]] = []

        async def record_session(message: Message) -> None:
            nonlocal full
            if unavailable:
                return  # the SDK's answer is replaced by a 503 below
            if message["type"] == "http.response.start" and message["status"] == 503:
                full = True
            if full:
                return
            if message["type"] == "http.response.start" and message["status"] < 400:
                minted = Headers(raw=message.get("headers", [])).get(LEGACY_SESSION_FIELD)
                if minted is not None:
                    try:
                        await remember(minted)
                    except StoreUnavailable as error:
                        unavailable.append((minted, error))
                        return
                    self.local.add(minted)
                    learn(minted)
            await send(message)

        await self.stateful(scope, receive, record_session)
        if unavailable:
            minted, outage = unavailable[0]
            # No record, so no session: end the SDK's in-memory one too, or every initialize
            # during an outage would hold a slot of its session table until the idle timeout.
            await self._end_connection(scope, minted)
            await send_error(send, outage, request_id)
            return
        if not full:
            return
        # No caller may use up a cap others need (issue #12 row 2): the session is opened
        # without a live connection here and served statelessly from the store, as a replica
        # that does not hold its connection serves it.
        minted = uuid.uuid4().hex

        async def add_session_id(message: Message) -> None:
            if unavailable:
                return
            if message["type"] == "http.response.start" and message["status"] < 400:
                try:
                    await remember(minted)
                except StoreUnavailable as error:
                    unavailable.append((minted, error))
                    return
                headers = [
                    *message.get("headers", []),
                    (LEGACY_SESSION_FIELD_BYTES, minted.encode()),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.stateless(scope, replay(body, raw_receive), add_session_id)
        if unavailable:
            await send_error(send, unavailable[0][1], request_id)

    async def _end_connection(self, scope: Scope, session_id: str) -> None:
        """DELETE ``session_id`` in the stateful manager, answering nobody."""
        headers = [
            (name, value)
            for name, value in scope.get("headers", [])
            if name.lower() not in (CONTENT_TYPE, CONTENT_LENGTH, LEGACY_SESSION_FIELD_BYTES)
        ]
        headers.append((LEGACY_SESSION_FIELD_BYTES, session_id.encode()))

        async def nothing() -> Message:
            return {"type": "http.disconnect"}

        async def discard(message: Message) -> None:
            return None

        await self.stateful({**scope, "method": "DELETE", "headers": headers}, nothing, discard)

    async def _delete(self, scope: Scope, receive: Receive, send: Send, session_id: str) -> None:
        principal = current_principal()
        caller = self.engine.quotas.caller_of_scope(principal, scope)
        try:
            found = await self.engine.end_legacy(session_id, principal.key, caller)
        except StoreUnavailable as error:
            await send_error(send, error)
            return
        if not found:
            await send_error(send, SessionNotFound())
            return
        if session_id in self.local:
            self.local.discard(session_id)

            async def discard(message: Message) -> None:
                return None

            await self.stateful(scope, receive, discard)  # end the live connection here
        await send_empty(send, 204)
