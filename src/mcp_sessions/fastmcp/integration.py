"""mcp-sessions on a ``fastmcp.FastMCP`` server (FastMCP >= 4.2, issue #14).

The session model is the server package's, reused whole: an
:class:`mcp_sessions.server.Sessions` is built inside (its engine, carrier resolution, store,
quotas, handle kinds, ``session/create`` / ``session/destroy`` handlers and the middleware that
resolves every request's carrier). What this module adds is FastMCP's side of the seams:

* a FastMCP ``ServerExtension`` (SEP-2133): the capability ad, the two methods, the tools/call
  gate that checks handle arguments, and the lifespan that opens and closes the store;
* the carrier middleware in the SDK's middleware layer of FastMCP's low-level server, where
  every message (``initialize``, ``session/create``, ``ping`` …) and its raw ``_meta`` and HTTP
  request are visible; FastMCP's own ``Middleware`` runs *around* it and keeps working;
* :data:`CurrentSession`, a FastMCP ``Depends`` dependency, so the parameter is injected and
  hidden from the tool's input schema.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastmcp.dependencies import Depends
from fastmcp.exceptions import ToolError
from fastmcp.server.extensions import MethodBinding, ServerExtension, ToolCallOutcome
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver.exceptions import ToolError as SdkToolError
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolRequestParams

from ..core.errors import (
    INVALID_PARAMS,
    INVALID_STATE,
    LIMIT_EXCEEDED,
    SESSION_NOT_FOUND,
    SESSION_REQUIRED,
    STATE_CONFLICT,
    STORE_UNAVAILABLE,
)
from ..core.names import EXTENSION_ID, META_SESSION_ID
from ..core.toolsets import Toolset
from ..server import extension as sdk
from ..server.engine import SessionEngine
from ..server.handles import HandleError, HandleKind
from ..server.session import Session
from .http import gate_http_apps

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from fastmcp import FastMCP
    from fastmcp.server.context import Context
    from starlette.applications import Starlette

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

#: The session errors of the request being handled that must reach the wire as JSON-RPC errors.
#: FastMCP turns every exception under a tool (its dependencies included) into an ``isError``
#: result; the wire contract answers a tools/call without a session with -31002 (docs/wire.md),
#: so the dependency notes the error here and the carrier middleware raises it after FastMCP
#: has returned. A mutable list, so a note made in a copied context still reaches the middleware.
_failures: ContextVar[list[MCPError] | None] = ContextVar("mcp_sessions_fastmcp", default=None)


#: The codes of the session errors a tool body can meet (DESIGN §3; OversizedState is
#: -32602): these reach the wire as JSON-RPC errors.
_SESSION_CODES = frozenset(
    {
        INVALID_PARAMS,
        SESSION_NOT_FOUND,
        SESSION_REQUIRED,
        INVALID_STATE,
        STATE_CONFLICT,
        LIMIT_EXCEEDED,
        STORE_UNAVAILABLE,
    }
)


def _session_error_in(error: BaseException) -> MCPError | None:
    """The session error ``error`` was raised from, if any (FastMCP wraps what a tool or a
    dependency raised, keeping it as the cause)."""
    seen = 0
    cause: BaseException | None = error
    while cause is not None and seen < 8:
        if isinstance(cause, MCPError) and cause.error.code in _SESSION_CODES:
            return cause
        cause, seen = cause.__cause__, seen + 1
    return None


def _noted(error: MCPError) -> ToolError:
    failures = _failures.get()
    if failures is not None:
        failures.append(error)
    return ToolError(error.error.message)


async def current_session() -> Session:
    """The request's session, from inside a tool body (the same as a :data:`CurrentSession`
    parameter)."""
    if sdk.current_scope() is None:
        raise ToolError("mcp-sessions is not installed on this server: call sessions.install(mcp)")
    try:
        return await sdk.current_session()
    except MCPError as error:
        raise _noted(error) from None
    except SdkToolError as error:  # an unknown session handle: the tool's input (issue #11)
        raise ToolError(str(error)) from None


async def optional_session() -> Session | None:
    """Like :func:`current_session`, but ``None`` when the request names no session."""
    scope = sdk.current_scope()
    if scope is not None and scope.session_id is None:
        return None
    return await current_session()


#: A tool parameter typed ``CurrentSession`` receives the request's session, whichever carrier
#: brought it; a request without one gets SessionRequired (-31002). Hidden from the schema.
CurrentSession = Annotated[Session, Depends(current_session)]
#: Like :data:`CurrentSession`, but ``None`` when the request names no session.
OptionalSession = Annotated[Session | None, Depends(optional_session)]

_PORTABLE: dict[Any, Any] = {
    sdk.CurrentSession: CurrentSession,
    sdk.OptionalSession: OptionalSession,
}


def portable_tool(fn: F) -> F:
    """A tool written for the ``MCPServer`` integration, ready for ``FastMCP.tool``.

    Its ``mcp_sessions.server`` session parameters become this module's, and the SDK's
    ``ToolError`` (a :class:`~mcp_sessions.server.HandleError` too) becomes FastMCP's, so
    one tool body serves both frameworks (the demo's do).
    """
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"portable_tool takes an async tool; {fn!r} is not one")
    signature = inspect.signature(fn)
    parameters = [
        parameter.replace(annotation=_PORTABLE.get(parameter.annotation, parameter.annotation))
        for parameter in signature.parameters.values()
    ]

    @functools.wraps(fn)
    async def tool(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except SdkToolError as error:
            raise ToolError(str(error)) from None

    tool.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    tool.__annotations__ = {
        name: _PORTABLE.get(value, value) for name, value in fn.__annotations__.items()
    }
    del tool.__wrapped__  # FastMCP reads __signature__ alone
    return tool  # type: ignore[return-value]


class _CarrierMiddleware:
    """The server package's carrier middleware, plus the hand-over of :data:`_failures`."""

    def __init__(self, inner: sdk.SessionMiddleware) -> None:
        self._inner = inner

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        failures: list[MCPError] = []
        token = _failures.set(failures)
        try:
            result = await self._inner(ctx, call_next)
        finally:
            _failures.reset(token)
        if failures:
            raise failures[0]
        return result


class _Extension(ServerExtension):
    """The FastMCP side of :class:`Sessions` (SEP-2133 extension API)."""

    identifier = EXTENSION_ID

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    def clone(self) -> ServerExtension:
        # The engine (a store connection) is one per Sessions, never deep-copied.
        return _Extension(self._sessions)

    def settings(self) -> dict[str, Any]:
        return self._sessions.core.settings()

    def methods(self) -> Sequence[MethodBinding]:
        return tuple(
            MethodBinding(binding.method, binding.params_type, binding.handler)
            for binding in self._sessions.core.methods()
        )

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        return self._sessions.lifespan()

    async def intercept_tool_call(
        self,
        params: CallToolRequestParams,
        context: Context,
        call_next: Callable[[], Awaitable[ToolCallOutcome]],
    ) -> ToolCallOutcome:
        scope = sdk.current_scope()
        if scope is not None and scope.refusal is not None:
            # A malformed session handle argument: the tool's input, so a tool error (#11).
            raise ToolError(scope.refusal)
        core = self._sessions.core
        if core._kinds and params.arguments and scope is not None:
            # Principal and expiry of every handle argument, before the tool body runs
            # (DESIGN §4); format and kind are the argument schema's pattern.
            for value in params.arguments.values():
                kind = core._handle_kind_of(value)
                if kind is None:
                    continue
                try:
                    await kind.load(value)
                except HandleError as error:
                    raise ToolError(str(error)) from None
        if scope is not None and (refused := await core.gate(params.name, scope, current_session)):
            # A toolset the session has not enabled (issue #18): a tool error, before the body.
            raise ToolError(" ".join(c.text for c in refused.content if c.type == "text"))
        try:
            return await call_next()
        except ToolError as error:
            # FastMCP has masked whatever the tool body raised into a ToolError; a session
            # error (Session.update's conflict, quota or outage) is a JSON-RPC error on the
            # wire, as on MCPServer (DESIGN §3), so it is raised again as itself.
            cause = _session_error_in(error)
            if cause is None:
                raise
            raise cause from None


class Sessions:
    """mcp-sessions for a ``fastmcp.FastMCP`` server: one session model over every carrier.

    ::

        sessions = Sessions(store="sqlite:///sessions.sqlite3")
        mcp = FastMCP("shop")
        sessions.install(mcp)

        @mcp.tool
        async def count(session: CurrentSession) -> int: ...

    Takes the options of :class:`mcp_sessions.server.Sessions` (they are passed to one).
    """

    def __init__(self, **options: Any) -> None:
        #: The server package's extension: engine, config, methods, handle kinds.
        self.core = sdk.Sessions(**options)
        self.engine: SessionEngine = self.core.engine
        self.config = self.core.config
        self.limits = self.core.limits
        self.handle_fallback = self.core.handle_fallback
        self.middleware = _CarrierMiddleware(self.core.middleware)
        self.extension = _Extension(self)
        self._servers: list[FastMCP[Any]] = []

    def install(self, mcp: FastMCP[Any]) -> None:
        """Put sessions on ``mcp``: call it once, before ``mcp.run`` or ``mcp.http_app``."""
        if any(server is mcp for server in self._servers):
            raise ValueError("these Sessions are already installed on this server")
        if self._servers:
            raise ValueError(
                "one Sessions serves one FastMCP server: mount other servers on it instead"
            )
        mcp.add_extension(self.extension)
        # FastMCP has no public hook for SDK-level (ServerMiddleware) entries: its own
        # Middleware sees component requests only as typed models after dispatch, and not
        # the raw _meta of session/create or initialize's capabilities. The low-level
        # server's middleware list is the SDK's public surface, reached through FastMCP's
        # `_mcp_server`. No upstream issue asks for a public one yet (PrefectHQ/fastmcp
        # issues searched for issue #14); absent the attribute, install fails loudly.
        mcp._mcp_server.middleware.append(self.middleware)
        if self.handle_fallback:
            mcp.tool(
                self._session_start,
                name=sdk.FALLBACK_TOOL,
                description=(
                    "Start a session and return its handle. Pass the handle as the "
                    f"'{sdk.FALLBACK_ARGUMENT}' argument of later tool calls to keep state "
                    f"between them. Not needed if your client sends {META_SESSION_ID} in "
                    "_meta."
                ),
            )
        gate_http_apps(self.engine, mcp)
        self._servers.append(mcp)

    async def _session_start(self) -> str:
        try:
            return await self.core._session_start()
        except MCPError as error:  # a quota (-31005), the store down (-31006)
            raise _noted(error) from None

    def toolset(self, name: str, **options: Any) -> Toolset:
        """Declare a toolset (see :meth:`mcp_sessions.server.Sessions.toolset`)."""
        return self.core.toolset(name, **options)

    def handle_kind(self, kind: str, **options: Any) -> HandleKind:
        """Declare a kind of handle (see :meth:`mcp_sessions.server.Sessions.handle_kind`)."""
        return self.core.handle_kind(kind, **options)

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """Open the store at start-up (FastMCP's lifespan).

        Not closed at its end: an in-process client enters the low-level server's lifespan
        once per connection, and the store outlives each. The HTTP app closes it at
        shutdown, as the ``MCPServer`` integration's does; otherwise :meth:`aclose`.
        """

        @asynccontextmanager
        async def run() -> AsyncIterator[None]:
            await self.engine.start()
            yield

        return run()

    def streamable_http_app(
        self, mcp: Any, *, host: str | None = None, **options: Any
    ) -> Starlette:
        """``mcp.http_app(**options)`` (after :meth:`install` every such app is gated), the call
        the ``MCPServer`` integration has. ``mcp`` is the FastMCP server or its low-level
        server; ``host`` is taken for that call's sake and unused: FastMCP guards Host and
        Origin itself (``host_origin_protection``)."""
        server = getattr(mcp, "fastmcp", mcp)
        if not any(installed is server for installed in self._servers):
            raise ValueError("call sessions.install(mcp) first")
        app: Starlette = server.http_app(**options)
        return app

    async def aclose(self) -> None:
        await self.engine.aclose()
