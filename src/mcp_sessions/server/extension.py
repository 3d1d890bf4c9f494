"""The extension on an ``MCPServer``: :class:`Sessions` and its middleware (``mcp`` >= 2.3).

The SDK's extension surfaces meet the session model here: the ``Extension`` (capability ad,
``session/create`` / ``session/destroy``, the ``session_start`` fallback tool, the
``tools/call`` interceptor that checks handles), the middleware (provisional in the SDK:
carrier resolution, result ``_meta``) and the ``Resolve`` dependencies that hand tools their
:class:`~mcp_sessions.server.session.Session` (research/sdk-digest.md §2). The legacy HTTP
endpoint is ``server/http.py``; principals, ``server/principal.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any
from weakref import WeakKeyDictionary

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding, ToolBinding
from mcp.server.mcpserver import Resolve
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolRequestParams, CallToolResult, RequestParams, TextContent
from pydantic import ConfigDict, Field

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer
    from starlette.applications import Starlette

from ..core.carriers import NO_SESSION, Carrier, CarrierPolicy, RequestView, resolve_carrier
from ..core.errors import MalformedHandle, SessionError, SessionNotFound
from ..core.handles import parse_handle
from ..core.ids import new_session_id
from ..core.limits import Limits
from ..core.names import (
    EXTENSION_ID,
    HEADER_CLIENT_SESSION_ID,
    META_BAGGAGE,
    META_MINTED_HANDLES,
    META_SESSION_ID,
    META_STATE,
    METHOD_SESSION_CREATE,
    METHOD_SESSION_DESTROY,
    MODERN_PROTOCOL_VERSIONS,
    SESSION_INDEPENDENT_METHODS,
    SESSION_KIND,
)
from ..core.sealing import KeyRing
from ..core.timestamps import rfc3339
from ..stores import Store
from ..telemetry.instruments import SessionTelemetry
from .correlation import (
    conversation_id_from_baggage,
    install_log_record_factory,
    install_tolerant_propagator,
)
from .engine import Lifecycle, SessionEngine, SessionsConfig, StateMode
from .errors import to_mcp_error
from .handles import HandleError, HandleKind
from .http import checked_legacy_record, streamable_http_app
from .legacy_client import restore_client
from .principal import current_principal
from .session import RequestScope, Session
from .toolsets import Toolsets, finish

logger = logging.getLogger("mcp_sessions")

#: The request being handled: its session scope, also read by the log record factory.
_scope_var: ContextVar[RequestScope | None] = ContextVar("mcp_sessions_scope", default=None)
_NO_META: Mapping[str, Any] = MappingProxyType({})

#: The argument that carries a session handle when the fallback is on.
FALLBACK_ARGUMENT = "session"
FALLBACK_TOOL = "session_start"


def fallback_session_required(argument: str) -> str:
    """The -31002 message where the handle fallback is on: the one thing every client can do
    is call a tool and pass an argument (issue #11), so that comes first."""
    return (
        f"This tool needs a session and the request carried none. Call the {FALLBACK_TOOL} "
        f"tool and pass the handle it returns as the {argument!r} argument of this and later "
        f"tool calls (or, if your client speaks the {EXTENSION_ID} extension, send "
        f"params._meta[{META_SESSION_ID!r}])."
    )


def current_scope() -> RequestScope | None:
    """The session scope of the request being handled, if any."""
    return _scope_var.get()


def _require_scope() -> RequestScope:
    scope = _scope_var.get()
    if scope is None:
        raise MCPError(
            code=-32603,
            message="mcp-sessions is not installed on this server: pass "
            "middleware=[sessions.middleware] and extensions=[sessions] to MCPServer",
        )
    return scope


async def _resolve_session() -> Session:
    scope = _require_scope()
    try:
        return await scope.session()
    except SessionNotFound:
        if scope.carrier is Carrier.HANDLE:
            # A handle is an ordinary argument: its failure is a tool error (spec §5.2 item 22).
            raise ToolError(
                f"The session handle {scope.session_id!r} is unknown or has expired. Call "
                f"{FALLBACK_TOOL} for a new one."
            ) from None
        raise to_mcp_error(SessionNotFound()) from None
    except SessionError as error:
        raise to_mcp_error(error) from None


async def _resolve_optional_session() -> Session | None:
    scope = _require_scope()
    if scope.session_id is None:
        return None
    return await _resolve_session()


async def current_session() -> Session:
    """The request's session, from inside a tool body.

    The same object and errors as a :data:`CurrentSession` parameter, without the SDK's
    resolver machinery (``Resolve`` costs the SDK some 40-80 µs per call; see
    docs/benchmarks.md), for tools on a hot path.
    """
    return await _resolve_session()


async def optional_session() -> Session | None:
    """Like :func:`current_session`, but ``None`` when the request names no session."""
    return await _resolve_optional_session()


#: A tool parameter typed ``CurrentSession`` receives the request's session, whichever
#: carrier brought it; a request without one gets SessionRequired (-31002).
CurrentSession = Annotated[Session, Resolve(_resolve_session)]
#: Like :data:`CurrentSession`, but ``None`` when the request names no session.
OptionalSession = Annotated[Session | None, Resolve(_resolve_optional_session)]


class SessionCreateParams(RequestParams):
    """``session/create`` params (DESIGN §3)."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")
    session_id: str | None = Field(default=None, alias="sessionId")
    # Any: the engine checks it (pydantic's lax mode would take "10" and true, issue #12).
    ttl_seconds: Any = Field(default=None, alias="ttlSeconds")
    fork_from: str | None = Field(default=None, alias="forkFrom")


class SessionDestroyParams(RequestParams):
    """``session/destroy`` params (DESIGN §3)."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")
    session_id: str | None = Field(default=None, alias="sessionId")


class Sessions(Toolsets, Extension):
    """mcp-sessions for an ``MCPServer``: one session model over every carrier.

    ::

        sessions = Sessions(store="sqlite:///sessions.db")
        mcp = MCPServer("demo", extensions=[sessions], middleware=[sessions.middleware])

        @mcp.tool()
        async def count(session: CurrentSession) -> int:
            return await session.update(bump_counter)
    """

    identifier = EXTENSION_ID

    def __init__(
        self,
        *,
        store: Store | str | None = None,
        # Defaults are SessionsConfig's own, so they are written once (engine.py).
        lifecycle: Lifecycle = SessionsConfig.lifecycle,
        state: StateMode = SessionsConfig.state,
        keys: KeyRing | None = None,
        idle_ttl: float = SessionsConfig.idle_ttl,
        max_lifetime: float | None = SessionsConfig.max_lifetime,
        carriers: CarrierPolicy | None = None,
        handle_fallback: bool = False,
        audience: str = SessionsConfig.audience,
        legacy_sessions_required: bool = SessionsConfig.legacy_sessions_required,
        max_server_state_bytes: int = SessionsConfig.max_server_state_bytes,
        limits: Limits | None = None,
        telemetry: SessionTelemetry | None = None,
    ) -> None:
        policy = carriers or CarrierPolicy()
        if handle_fallback and policy.handle_argument is None:
            policy = replace(policy, handle_argument=FALLBACK_ARGUMENT)
        self.config = SessionsConfig(
            lifecycle=lifecycle,
            state=state,
            idle_ttl=idle_ttl,
            max_lifetime=max_lifetime,
            carriers=policy,
            audience=audience,
            legacy_sessions_required=legacy_sessions_required,
            max_server_state_bytes=max_server_state_bytes,
        )
        #: Per-caller quotas, creation rate and creation sizes (issue #12, docs/security.md).
        self.limits = limits if limits is not None else Limits()
        self.engine = SessionEngine(
            self.config, store=store, keys=keys, limits=self.limits, telemetry=telemetry
        )
        self.handle_fallback = handle_fallback
        if handle_fallback and policy.handle_argument is not None:
            self.engine.session_required_message = fallback_session_required(policy.handle_argument)
        self.middleware = SessionMiddleware(self)
        self._kinds: dict[str, HandleKind] = {}
        install_log_record_factory(_scope_var.get)
        install_tolerant_propagator()

    # -- Extension surface ----------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        return {
            "lifecycle": self.config.lifecycle,
            "state": self.config.state == "sealed",
            "header": HEADER_CLIENT_SESSION_ID,
            "maxStateBytes": self.config.max_state_bytes,
            # Toolsets declared: a client may ask for its session's lists (issue #18).
            **({"scopedLists": True} if self.engine.toolsets else {}),
        }

    def methods(self) -> Sequence[MethodBinding]:
        return (
            MethodBinding(METHOD_SESSION_CREATE, SessionCreateParams, self._session_create),
            MethodBinding(METHOD_SESSION_DESTROY, SessionDestroyParams, self._session_destroy),
        )

    def tools(self) -> Sequence[ToolBinding]:
        if not self.handle_fallback:
            return ()
        return (
            ToolBinding(
                fn=self._session_start,
                kwargs={
                    "name": FALLBACK_TOOL,
                    "description": (
                        "Start a session and return its handle. Pass the handle as the "
                        f"'{FALLBACK_ARGUMENT}' argument of later tool calls to keep state "
                        "between them. Not needed if your client sends "
                        f"{META_SESSION_ID} in _meta."
                    ),
                },
            ),
        )

    async def intercept_tool_call(
        self,
        params: CallToolRequestParams,
        ctx: ServerRequestContext[Any, Any],
        call_next: CallNext,
    ) -> HandlerResult:
        scope = _scope_var.get()
        if scope is not None and scope.refusal is not None:
            # A malformed session handle argument: the tool's input, so a tool error (issue #11).
            return CallToolResult(
                content=[TextContent(type="text", text=scope.refusal)], is_error=True
            )
        if scope is not None and (refused := await self.gate(params.name, scope, _resolve_session)):
            return refused  # a toolset the session has not enabled (issue #18)
        # Check every handle argument before the tool body runs (DESIGN §4). Format and kind
        # are checked by the argument's schema pattern; here: principal and expiry.
        if self._kinds and params.arguments:
            for value in params.arguments.values():
                kind = self._handle_kind_of(value)
                if kind is None or scope is None:
                    continue
                try:
                    await kind.load(value)
                except HandleError as error:
                    return CallToolResult(
                        content=[TextContent(type="text", text=str(error))], is_error=True
                    )
        return await call_next(ctx)

    def _handle_kind_of(self, value: object) -> HandleKind | None:
        if not isinstance(value, str) or "-" not in value:
            return None
        kind = self._kinds.get(value.split("-", 1)[0])
        if kind is None:
            return None
        try:
            parse_handle(value, kind=kind.kind)
        except ValueError:
            return None  # the schema pattern reports the format error
        return kind

    # -- public helpers -----------------------------------------------------------------------

    def handle_kind(
        self,
        kind: str,
        *,
        ttl: float = 3600.0,
        header: str | None = None,
        created_by: str | None = None,
        description: str | None = None,
    ) -> HandleKind:
        """Declare a kind of handle. ``header`` mirrors the argument into ``Mcp-Param-<header>``
        (SEP-2243 ``x-mcp-header``) so infrastructure can route on it."""
        if kind in self._kinds:
            raise ValueError(f"handle kind {kind!r} is declared twice")
        handle_kind = HandleKind(
            self.engine,
            _scope_var.get,
            kind,
            ttl=ttl,
            header=header,
            created_by=created_by,
            description=description,
        )
        self._kinds[kind] = handle_kind
        return handle_kind

    async def aclose(self) -> None:
        await self.engine.aclose()

    def streamable_http_app(self, mcp: MCPServer, **options: Any) -> Starlette:
        """``mcp.streamable_http_app(**options)`` with legacy sessions kept in the store, so
        that any replica serves any session. Use it instead of the SDK's method."""
        return streamable_http_app(self.engine, mcp, **options)

    # -- methods --------------------------------------------------------------------------

    async def _session_create(
        self, ctx: ServerRequestContext[Any, Any], params: SessionCreateParams
    ) -> dict[str, Any]:
        principal = current_principal()
        meta = ctx.meta or {}
        parent_token = meta.get(META_STATE) if params.fork_from else None
        scope = _scope_var.get()
        try:
            record, token = await self.engine.create(
                principal,
                session_id=params.session_id,
                ttl_seconds=params.ttl_seconds,
                fork_from=params.fork_from,
                fork_token=parent_token if isinstance(parent_token, str) else None,
                caller=None if scope is None else scope.caller(),
            )
        except SessionError as error:
            raise to_mcp_error(error) from None
        result: dict[str, Any] = {"sessionId": record.id}
        expiry = rfc3339(record.expires_at)
        if expiry is not None:
            result["expiresAt"] = expiry
        if token is not None:
            result["state"] = token
            result["_meta"] = {META_STATE: token}
        return result

    async def _session_destroy(
        self, ctx: ServerRequestContext[Any, Any], params: SessionDestroyParams
    ) -> dict[str, Any]:
        session_id = params.session_id
        if session_id is None:
            scope = _scope_var.get()
            session_id = scope.session_id if scope is not None else None
        if session_id is None:
            raise to_mcp_error(
                SessionNotFound(
                    "session/destroy needs a sessionId param or a dev.mcpsessions/sessionId "
                    "in _meta"
                )
            )
        scope = _scope_var.get()
        try:
            await self.engine.destroy(
                current_principal(), session_id, caller=None if scope is None else scope.caller()
            )
        except SessionError as error:
            raise to_mcp_error(error) from None
        return {}

    async def _session_start(self) -> str:
        """The handle fallback: a new session whose id is returned as a handle string."""
        scope = _require_scope()
        try:
            record = await self.engine.start_handle_session(
                f"{FALLBACK_ARGUMENT}-{new_session_id()}", scope.principal.key, scope.caller()
            )
        except SessionError as error:  # a quota (-31005), the store down (-31006)
            raise to_mcp_error(error) from None
        scope.minted.append((SESSION_KIND, record.id))
        return record.id


class SessionMiddleware:
    """Resolves the carrier of every request and stamps session ``_meta`` on its result."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions
        self._engine = sessions.engine
        self._policy = sessions.config.carriers
        self._telemetry = sessions.engine.telemetry
        #: Carrier 5: the implicit session id of each live stdio connection, keyed on the
        #: SDK's per-connection outbound channel, so it goes when the connection does.
        self._connections: WeakKeyDictionary[object, str] = WeakKeyDictionary()

    def _connection_id(self, ctx: ServerRequestContext[Any, Any]) -> str | None:
        """The id of the connection's implicit session, where one connection is one client.

        The SDK builds a ``ServerSession`` per request; what lives as long as the connection
        is its outbound channel (``Connection.outbound``: the dispatcher of a 2025-11-25
        loop, the notify-only wrapper of a 2026-07-28 stream, whose ``Connection`` is rebuilt
        per request). A single-exchange connection (2026-07-28 over HTTP, in-process) has the
        SDK's shared no-channel sentinel instead: no connection to key on, so no carrier 5.
        ``ctx.session`` exposes no public accessor for it in ``mcp`` 2.3, hence the guarded
        private read; absent, carrier 5 is off. Upstream: transport metadata on server
        contexts, modelcontextprotocol/python-sdk#2098 (PR #2870 was closed unmerged).
        """
        connection = getattr(ctx.session, "_connection", None)
        if connection is None or not getattr(connection, "has_standalone_channel", False):
            return None
        outbound = connection.outbound
        found = self._connections.get(outbound)
        if found is None:
            # 128 random bits from the CSPRNG, like every id the library mints (DESIGN §2).
            found = self._connections.setdefault(outbound, f"connection-{new_session_id()}")
        return found

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        # Every request pays for this, so it does only what the contract needs: resolve the
        # carrier, set one context variable, add the result's _meta (issue #4 benchmarks).
        if ctx.request_id is None:  # notifications carry no session work
            return await call_next(ctx)
        method = ctx.method
        meta: Mapping[str, Any] = ctx.meta or _NO_META
        request = ctx.request
        arguments = None
        if self._policy.handle_argument is not None and method == "tools/call":
            arguments = (ctx.params or {}).get("arguments")
        # No HTTP request: a duplex connection (stdio) or in-process; carrier 5 may apply.
        connection_id = (
            self._connection_id(ctx) if request is None and self._policy.connection else None
        )
        refusal = None
        try:
            resolution = resolve_carrier(
                RequestView(
                    method,
                    meta,
                    None if request is None else getattr(request, "headers", None),
                    ctx.protocol_version,
                    arguments if isinstance(arguments, Mapping) else None,
                    connection_id,
                ),
                self._policy,
            )
            taken = resolution.argument
        except MalformedHandle as error:
            # Answered as a tool error by intercept_tool_call, before the tool body runs.
            resolution, taken = NO_SESSION, error.argument
            refusal = f"{error.message} Pass the handle that {FALLBACK_TOOL} returned, or omit it."
        except SessionError as error:
            raise to_mcp_error(error) from None
        if taken is not None and isinstance(arguments, Mapping):
            # The handle argument is ours, not the tool's: take it out before validation.
            kept = {k: v for k, v in arguments.items() if k != taken}
            ctx = replace(ctx, params={**(ctx.params or {}), "arguments": kept})
        baggage = meta.get(META_BAGGAGE) if meta else None
        scope = RequestScope(
            self._engine,
            resolution,
            current_principal(),
            meta,
            None if baggage is None else conversation_id_from_baggage(baggage),
        )
        scope.refusal = refusal
        scope.request = request
        scope.legacy_record = checked_legacy_record(request)
        restore_client(ctx, scope.legacy_record)  # a replica that did not see initialize
        token = _scope_var.set(scope)
        try:
            if self._telemetry.active:  # spans and metrics (issue #13): off without an SDK
                result = await self._telemetry.around(ctx, scope, call_next)
            else:
                result = await call_next(ctx)
        finally:
            _scope_var.reset(token)
        try:
            result = self._finish(method, ctx, scope, result)
            return await finish(self._engine.toolsets, ctx, scope, result)
        finally:
            scope.end()  # no session <-> scope cycle left for the garbage collector

    def _finish(
        self,
        method: str,
        ctx: ServerRequestContext[Any, Any],
        scope: RequestScope,
        result: HandlerResult,
    ) -> HandlerResult:
        if not isinstance(result, dict):
            return result
        if method == "initialize":
            # The SDK advertises extensions only on server/discover; DESIGN §3 wants the
            # settings in initialize too, for 2025-11-25 clients.
            capabilities = result.get("capabilities")
            if isinstance(capabilities, dict):
                extensions = dict(capabilities.get("extensions") or {})
                extensions[EXTENSION_ID] = self._sessions.settings()
                result = {**result, "capabilities": {**capabilities, "extensions": extensions}}
            return result
        if method == "tools/list" and self._sessions.handle_fallback:
            return _with_fallback_argument(result)
        if scope.minted:
            # Which handles this call minted, for a gateway to pin (issue #11, docs/wire.md).
            minted = [{"handle": handle, "kind": kind} for kind, handle in scope.minted]
            result = {
                **result,
                "_meta": {**(result.get("_meta") or {}), META_MINTED_HANDLES: minted},
            }
        if method in SESSION_INDEPENDENT_METHODS or scope.loaded is None:
            return result
        extra = scope.result_meta()
        if extra:
            result = {**result, "_meta": {**(result.get("_meta") or {}), **extra}}
        if method == "resources/read" and ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            # Depends on the session, so no shared cache may serve it (spec §5.4 item 47).
            result = {**result, "cacheScope": "private", "ttlMs": 0}
        return result


def _with_fallback_argument(result: dict[str, Any]) -> dict[str, Any]:
    """Add the optional ``session`` argument to every tool but ``session_start``.

    The same for every caller, so the list still does not vary by session (SEP-2567).
    """
    tools = []
    for tool in result.get("tools") or []:
        if isinstance(tool, dict) and tool.get("name") != FALLBACK_TOOL:
            schema = dict(tool.get("inputSchema") or {"type": "object"})
            properties = dict(schema.get("properties") or {})
            properties.setdefault(
                FALLBACK_ARGUMENT,
                {
                    "type": "string",
                    "description": (
                        f"Session handle from {FALLBACK_TOOL}; omit it if your client sends "
                        f"{META_SESSION_ID} in _meta."
                    ),
                },
            )
            tool = {**tool, "inputSchema": {**schema, "properties": properties}}
        tools.append(tool)
    return {**result, "tools": tools}
