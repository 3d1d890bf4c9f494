"""The one adapter between the client side of mcp-sessions and the MCP Python SDK (``mcp`` >= 2.3).

The SDK has no client middleware (research/sdk-digest.md §2.2(f)), so the work is done by
wrapping what the SDK lets a caller supply:

* the **transport**: every outgoing JSON-RPC request gets ``dev.mcpsessions/sessionId`` (and
  the session's state token) in ``params._meta`` and the ``Mcp-Client-Session-Id`` header
  through the SDK's own per-message header channel (``ClientMessageMetadata.headers``), so the
  header always equals the ``_meta`` value of that very message; every result's ``_meta`` is
  read into the jar. The write happens in the caller's task, so ``sessions.use()`` is
  task-local; the read side forwards the sender's ``contextvars`` snapshot untouched.
* the **httpx2 client**: event hooks see HTTP status codes, which JSON-RPC hides. A 404 to a
  request that carried ``Mcp-Session-Id`` ends that legacy session (SEP-1372 as in
  spec-digest §1.11: stop using the id; start a new session only if asked).

:class:`SessionClient` is an ``mcp.Client`` (a subclass, same constructor plus a few keyword
arguments), so an application changes one import line.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import functools
import json
import logging
import os
from collections.abc import Callable, Coroutine, Hashable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Concatenate, Literal, ParamSpec, Self, TypeVar

import anyio
import httpx2
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.client import Client, ClientExtension, advertise
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ClientMessageMetadata, SessionMessage
from mcp.types import (
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    Request,
    RequestParams,
    Result,
)
from pydantic import ConfigDict

from ..core.errors import INVALID_STATE, SESSION_NOT_FOUND, SESSION_REQUIRED, STATE_CONFLICT
from ..core.ids import new_session_id, validate_session_id
from ..core.names import (
    EXTENSION_ID,
    HEADER_CLIENT_SESSION_ID,
    HEADER_LEGACY_SESSION_ID,
    LIFECYCLE_EXPLICIT,
)
from .identity import (
    NO_CREDENTIALS,
    local_server_key,
    principal_for_authorization,
    server_key_for_command,
    server_key_for_url,
)
from .jar import DEFAULT_SLOT, JarScope, StateJar, token_seq
from .policy import (
    AutoSession,
    CreateSession,
    NewSession,
    ResumeSession,
    SessionPolicy,
    SessionRef,
    SessionSnapshot,
    normalize_policy,
)
from .tracker import SessionTracker

logger = logging.getLogger("mcp_sessions.client")

METHOD_NOT_FOUND = -32601
#: Where the adapter marks, client-side only, an error caused by a lost legacy session.
_LOST_MARK = "dev.mcpsessions/legacySessionLost"
_LEGACY_HEADER = HEADER_LEGACY_SESSION_ID.lower()
#: Seconds a legacy re-initialize may take before renewal gives up.
RENEW_TIMEOUT = 30.0


# == typed errors ==============================================================================


class SessionsError(MCPError):
    """An error of the session layer. Still an ``MCPError``: code that catches those keeps
    working; ``code``, ``message`` and ``data`` are what the server sent."""

    default_code: ClassVar[int] = -32603

    def __init__(self, message: str, *, code: int | None = None, data: Any = None) -> None:
        super().__init__(code if code is not None else self.default_code, message, data)


class SessionNotFoundError(SessionsError):
    """-31001: unknown, expired, destroyed, or another principal's session (DESIGN §3).

    Start over with ``await client.sessions.new()``."""

    default_code = SESSION_NOT_FOUND


class SessionRequiredError(SessionsError):
    """-31002: the request needed a session and named none."""

    default_code = SESSION_REQUIRED


class InvalidStateError(SessionsError):
    """-31003: the state token was refused (tampered, expired, another session, principal or
    server). Roll back to a good snapshot, or drop the state with
    ``client.sessions.forget_state()``."""

    default_code = INVALID_STATE


class StateConflictError(SessionsError):
    """-31004: the server lost too many compare-and-set races in a row; retry the request."""

    default_code = STATE_CONFLICT


class LegacySessionLost(SessionsError):
    """The server answered HTTP 404 to a request carrying ``Mcp-Session-Id``: that legacy
    session is over (SEP-1372). The client no longer sends the id; further requests fail with
    this error until ``await client.sessions.renew_legacy()`` (or open the client with
    ``renew_legacy_sessions=True`` to renew automatically)."""

    default_code = -32600


class SessionsUnsupported(SessionsError):
    """The server does not offer what was asked (``session/create``, fork, rollback)."""

    default_code = METHOD_NOT_FOUND


_BY_CODE: dict[int, type[SessionsError]] = {
    SESSION_NOT_FOUND: SessionNotFoundError,
    SESSION_REQUIRED: SessionRequiredError,
    INVALID_STATE: InvalidStateError,
    STATE_CONFLICT: StateConflictError,
}


def translate_error(error: MCPError) -> MCPError:
    """The typed exception for ``error`` (itself if it is not a session error).

    The verbs of :class:`SessionClient` apply this already; use it around
    ``client.session.send_request(...)`` and other direct SDK calls.
    """
    if isinstance(error, SessionsError):
        return error
    data = error.data
    if isinstance(data, dict) and _LOST_MARK in data:
        return LegacySessionLost(
            f"The server ended the legacy session {data[_LOST_MARK]} (HTTP 404: "
            f"{error.message.rstrip('.')}). Renew it with client.sessions.renew_legacy() or "
            "open the client with renew_legacy_sessions=True.",
            code=error.code,
            data=data.get("server"),
        )
    kind = _BY_CODE.get(error.code)
    if kind is None:
        return error
    return kind(error.message, code=error.code, data=data)


# == custom methods (DESIGN §3) ================================================================


class _Params(RequestParams):
    model_config = ConfigDict(extra="allow")


class _SessionCreate(Request[_Params, Literal["session/create"]]):
    method: Literal["session/create"] = "session/create"
    params: _Params


class _SessionDestroy(Request[_Params, Literal["session/destroy"]]):
    method: Literal["session/destroy"] = "session/destroy"
    params: _Params


class _AnyResult(Result):
    model_config = ConfigDict(extra="allow")


# == the httpx2 side: legacy Mcp-Session-Id (DESIGN §5, SEP-1372) =============================


class _LegacyWatch:
    """Watches ``Mcp-Session-Id`` through httpx2 event hooks (status codes never reach
    JSON-RPC intact): which id is live, which are dead, which requests a 404 answered."""

    def __init__(self) -> None:
        self.current: str | None = None
        self.dead: set[str] = set()
        #: JSON-RPC request id → the dead legacy id its 404 named.
        self.failed: dict[Hashable, str] = {}

    @property
    def lost(self) -> bool:
        return self.current is not None and self.current in self.dead

    async def on_request(self, request: httpx2.Request) -> None:
        sent = request.headers.get(_LEGACY_HEADER)
        if sent is None or sent not in self.dead:
            return
        if request.method == "DELETE":
            # The SDK's close sends DELETE; the session is gone already, so send nothing
            # (the SDK logs this exception as a failed termination and carries on).
            raise httpx2.RequestError(
                f"mcp-sessions: legacy session {sent} already ended (HTTP 404); no DELETE sent",
                request=request,
            )
        # SEP-1372: the client stops using an id the server answered 404 for.
        del request.headers[_LEGACY_HEADER]

    async def on_response(self, response: httpx2.Response) -> None:
        sent = response.request.headers.get(_LEGACY_HEADER)
        if response.status_code == 404 and sent is not None:
            self.dead.add(sent)
            request_id = _jsonrpc_id(response.request)
            if request_id is not None:
                self.failed[request_id] = sent
            logger.info("legacy session %s ended by the server (HTTP 404)", sent)
        elif response.status_code < 400:
            minted = response.headers.get(_LEGACY_HEADER)
            if minted and minted not in self.dead:
                self.current = minted

    def install(self, client: httpx2.AsyncClient) -> Callable[[], None]:
        hooks = client.event_hooks
        # First among the request hooks, so that the caller's own hooks see what is sent.
        hooks["request"].insert(0, self.on_request)
        hooks["response"].append(self.on_response)
        client.event_hooks = hooks

        def remove() -> None:
            current = client.event_hooks
            for name, hook in (("request", self.on_request), ("response", self.on_response)):
                with contextlib.suppress(ValueError):
                    current[name].remove(hook)
            client.event_hooks = current

        return remove


def _jsonrpc_id(request: httpx2.Request) -> Hashable | None:
    try:
        body = json.loads(request.content)
    except (httpx2.RequestNotRead, ValueError, UnicodeDecodeError):
        return None
    value = body.get("id") if isinstance(body, dict) else None
    return value if isinstance(value, int | str) else None


# == the transport side ========================================================================

_Item = SessionMessage | Exception
_Envelope = tuple[contextvars.Context | None, _Item]


class _ReadSide:
    """What the SDK's dispatcher reads: inner items, plus ours, each with its sender's
    ``contextvars`` snapshot in ``last_context`` (the dispatcher runs handlers in it)."""

    def __init__(self, stream: MemoryObjectReceiveStream[_Envelope]) -> None:
        self._stream = stream
        self.last_context: contextvars.Context | None = None

    async def receive(self) -> _Item:
        context, item = await self._stream.receive()
        self.last_context = context
        return item

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> _Item:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        return None


class _WriteSide:
    """What the SDK's dispatcher writes to: stamps requests, then writes in the caller's task."""

    def __init__(self, transport: SessionTransport) -> None:
        self._transport = transport

    async def send(self, item: SessionMessage, /) -> None:
        await self._transport._outgoing(item)

    async def aclose(self) -> None:
        await self._transport._close_write()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        return None


def _with_header(metadata: Any, session_id: str) -> Any:
    """The message's metadata with the id mirrored into ``Mcp-Client-Session-Id``."""
    if metadata is None:
        return ClientMessageMetadata(headers={HEADER_CLIENT_SESSION_ID: session_id})
    if isinstance(metadata, ClientMessageMetadata):
        headers = {**(metadata.headers or {}), HEADER_CLIENT_SESSION_ID: session_id}
        return dataclasses.replace(metadata, headers=headers)
    return metadata


class SessionTransport:
    """An SDK ``Transport`` around another one that carries the session on every request.

    Built by :class:`SessionClient`; usable on its own as ``mcp.Client(SessionTransport(...))``
    when the extras of ``SessionClient`` are not wanted.
    """

    def __init__(
        self,
        inner: Callable[[], AbstractAsyncContextManager[Any]],
        tracker: SessionTracker,
        *,
        http_client: httpx2.AsyncClient | None = None,
        owns_http_client: bool = False,
        renew_legacy_sessions: bool = False,
    ) -> None:
        self._inner_factory = inner
        self.tracker = tracker
        self._http_client = http_client
        self._owns_http_client = owns_http_client
        self.renew_automatically = renew_legacy_sessions
        self.legacy = _LegacyWatch() if http_client is not None else None
        self._stack: AsyncExitStack | None = None
        self._inner_write: Any = None
        self._up: MemoryObjectSendStream[_Envelope] | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        #: Requests kept for one resend after a legacy renewal (auto-renewal only).
        self._sent: dict[Hashable, SessionMessage] = {}
        self._resent: set[Hashable] = set()
        self._private: dict[Hashable, _Waiter] = {}
        self._private_ids = 0
        self._initialize: dict[str, Any] | None = None
        self._renew_lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"<SessionTransport to {self.tracker.scope.server}>"

    # -- Transport protocol --------------------------------------------------------------------

    async def __aenter__(self) -> tuple[_ReadSide, _WriteSide]:
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            if self._http_client is not None:
                if self._owns_http_client:
                    await stack.enter_async_context(self._http_client)
                if self.legacy is not None:
                    stack.callback(self.legacy.install(self._http_client))
            read, write = await stack.enter_async_context(self._inner_factory())
            self._inner_write = write
            up, down = anyio.create_memory_object_stream[_Envelope](0)
            self._up = up
            stack.push_async_callback(up.aclose)
            tg = await stack.enter_async_context(anyio.create_task_group())
            # Runs before the task group is left: the pump would otherwise wait for the inner
            # transport's end of stream, which only comes after this stack unwinds.
            stack.callback(tg.cancel_scope.cancel)
            self._tg = tg
            tg.start_soon(self._pump, read, up)
        except BaseException:
            await stack.__aexit__(None, None, None)
            raise
        self._stack = stack
        return _ReadSide(down), _WriteSide(self)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc_val, exc_tb)
        return None

    async def _close_write(self) -> None:
        if self._inner_write is not None:
            await self._inner_write.aclose()

    # -- outgoing ------------------------------------------------------------------------------

    async def _outgoing(self, item: SessionMessage) -> None:
        message = item.message
        if not isinstance(message, JSONRPCRequest):
            await self._inner_write.send(item)
            return
        if message.method == "initialize" and message.params is not None:
            self._initialize = copy.deepcopy(message.params)
        stamped = self._stamp(message, item.metadata)
        legacy = self.legacy
        if (
            legacy is not None
            and legacy.lost
            and message.method != "initialize"
            # SEP-1372: no request goes out on a dead id; a new one only if asked for.
            and not (self.renew_automatically and await self._renew_quietly())
        ):
            self.tracker.discard(message.id)
            await self._answer(message.id, self._lost_error(None, legacy.current))
            return
        if self.legacy is not None and self.renew_automatically:
            self._sent[message.id] = stamped
        await self._inner_write.send(stamped)

    def _stamp(self, message: JSONRPCRequest, metadata: Any) -> SessionMessage:
        params, session_id = self.tracker.stamp(message.id, message.method, message.params)
        request = JSONRPCRequest(jsonrpc="2.0", id=message.id, method=message.method, params=params)
        return SessionMessage(request, metadata=_with_header(metadata, session_id))

    async def _answer(self, request_id: Hashable, error: ErrorData) -> None:
        """Resolve a request locally, as if the server had answered ``error``."""
        assert self._up is not None
        reply = JSONRPCError(jsonrpc="2.0", id=request_id, error=error)  # type: ignore[arg-type]
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self._up.send((None, SessionMessage(reply)))

    @staticmethod
    def _lost_error(original: ErrorData | None, legacy_id: str | None) -> ErrorData:
        return ErrorData(
            code=original.code if original is not None else LegacySessionLost.default_code,
            message=original.message if original is not None else "Session not found",
            data={_LOST_MARK: legacy_id, "server": original.data if original else None},
        )

    # -- incoming ------------------------------------------------------------------------------

    async def _pump(self, read: Any, up: MemoryObjectSendStream[_Envelope]) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            async for item in read:
                context = getattr(read, "last_context", None)
                forward = self._incoming(item)
                if forward is not None:
                    await up.send((context, forward))
        await up.aclose()

    def _incoming(self, item: _Item) -> _Item | None:
        if not isinstance(item, SessionMessage):
            return item
        message = item.message
        if isinstance(message, JSONRPCResponse):
            waiter = self._private.pop(message.id, None)
            if waiter is not None:
                waiter.settle(message.result, None)
                return None
            self._forget_sent(message.id)
            self.tracker.on_result(message.id, message.result)
        elif isinstance(message, JSONRPCError) and message.id is not None:
            waiter = self._private.pop(message.id, None)
            if waiter is not None:
                waiter.settle(None, message.error)
                return None
            dead = self.legacy.failed.pop(message.id, None) if self.legacy is not None else None
            if dead is not None:
                original = self._sent.pop(message.id, None)
                if original is not None and message.id not in self._resent:
                    assert self._tg is not None
                    self._tg.start_soon(self._renew_and_resend, original, message.error, dead)
                    return None
                self._forget_sent(message.id)
                self.tracker.discard(message.id)
                error = self._lost_error(message.error, dead)
                return SessionMessage(JSONRPCError(jsonrpc="2.0", id=message.id, error=error))
            self._forget_sent(message.id)
            self.tracker.on_error(message.id)
        return item

    def _forget_sent(self, request_id: Hashable) -> None:
        self._sent.pop(request_id, None)
        self._resent.discard(request_id)

    # -- legacy renewal ------------------------------------------------------------------------

    async def _renew_and_resend(
        self, original: SessionMessage, error: ErrorData, dead: str
    ) -> None:
        request_id: Hashable = original.message.id  # type: ignore[union-attr]
        if await self._renew_quietly():
            # The 404 came before the server looked at the request, so sending it again
            # cannot run it twice. Once only: a second 404 is reported.
            self._resent.add(request_id)
            self._sent[request_id] = original
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self._inner_write.send(original)
            return
        self.tracker.discard(request_id)
        await self._answer(request_id, self._lost_error(error, dead))

    async def _renew_quietly(self) -> bool:
        try:
            await self.renew_legacy()
        except (MCPError, TimeoutError) as exc:
            logger.warning("could not renew the legacy session: %s", exc)
            return False
        return True

    async def renew_legacy(self) -> str | None:
        """Start a new legacy session if the server ended ours (HTTP 404); returns its id.

        Sends ``initialize`` again with the parameters of the first one, then
        ``notifications/initialized``; the SDK's transport picks the new ``Mcp-Session-Id``
        up from the response by itself.
        """
        legacy = self.legacy
        if legacy is None:
            return None
        async with self._renew_lock:
            if not legacy.lost:
                return legacy.current
            if self._initialize is None:
                raise LegacySessionLost("no initialize to replay: this connection never had one")
            dead = legacy.current
            result = await self._private_request("initialize", self._initialize)
            if not legacy.lost and legacy.current != dead:
                negotiated = self._initialize.get("protocolVersion")
                if result.get("protocolVersion") != negotiated:
                    raise LegacySessionLost(
                        f"the server renewed the session at protocol version "
                        f"{result.get('protocolVersion')!r}, not {negotiated!r}"
                    )
                await self._inner_write.send(
                    SessionMessage(
                        JSONRPCNotification(jsonrpc="2.0", method="notifications/initialized")
                    )
                )
                logger.info("legacy session %s renewed as %s", dead, legacy.current)
                return legacy.current
            raise LegacySessionLost("the server did not issue a new Mcp-Session-Id")

    async def _private_request(self, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """A request of our own on the connection, answered to us, never to the dispatcher."""
        self._private_ids += 1
        request_id = f"mcp-sessions-{self._private_ids}"
        waiter = _Waiter()
        self._private[request_id] = waiter
        stamped = self._stamp(
            JSONRPCRequest(jsonrpc="2.0", id=request_id, method=method, params=dict(params)),
            None,
        )
        self.tracker.discard(request_id)
        try:
            await self._inner_write.send(stamped)
            with anyio.fail_after(RENEW_TIMEOUT):
                await waiter.event.wait()
        finally:
            self._private.pop(request_id, None)
        if waiter.error is not None:
            raise MCPError(waiter.error.code, waiter.error.message, waiter.error.data)
        return waiter.result or {}


@dataclass
class _Waiter:
    event: anyio.Event = field(default_factory=anyio.Event)
    result: dict[str, Any] | None = None
    error: ErrorData | None = None

    def settle(self, result: dict[str, Any] | None, error: ErrorData | None) -> None:
        self.result, self.error = result, error
        self.event.set()


# == the helper object: client.sessions ========================================================


class ClientSessions:
    """The session side of a :class:`SessionClient`: ``client.sessions``."""

    def __init__(
        self,
        client: SessionClient,
        tracker: SessionTracker,
        transport: SessionTransport,
        policy: AutoSession | NewSession | ResumeSession | CreateSession,
        *,
        resumed: bool,
    ) -> None:
        self._client = client
        self._tracker = tracker
        self._transport = transport
        self._policy = policy
        self._resumed = resumed
        self._settings: Mapping[str, Any] | None = None
        self._connected = False

    def __repr__(self) -> str:
        return f"<ClientSessions {self.id} at {self.scope}>"

    # -- what is known -------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The session requests from here carry (inside ``use()``, that session)."""
        return self._tracker.active

    @property
    def current(self) -> SessionRef:
        """The client's own session (what ``use()`` blocks return to)."""
        current = self._tracker.current
        found = self.jar.entry(self.scope, current)
        return SessionRef(current, found.expires_at if found else None)

    @property
    def scope(self) -> JarScope:
        return self._tracker.scope

    @property
    def jar(self) -> StateJar:
        return self._tracker.jar

    @property
    def token(self) -> str | None:
        """The state token the next request will echo (sealed-state servers)."""
        return self.jar.token(self.scope, self.id)

    @property
    def expires_at(self) -> str | None:
        """The expiry the server last reported for this session (RFC 3339)."""
        found = self.jar.entry(self.scope, self.id)
        return found.expires_at if found else None

    @property
    def advertised(self) -> bool:
        """Whether the server advertises ``dev.mcpsessions/sessions`` (known once connected).

        A server that does not still works: it ignores the ``_meta`` key."""
        return self._settings is not None

    @property
    def settings(self) -> Mapping[str, Any] | None:
        """The server's extension settings (``lifecycle``, ``state``, ``header``, …)."""
        return self._settings

    @property
    def lifecycle(self) -> str | None:
        value = self._settings.get("lifecycle") if self._settings else None
        return value if isinstance(value, str) else None

    @property
    def sealed(self) -> bool:
        """``True`` when the server keeps no state and seals it into tokens for the client."""
        return bool(self._settings and self._settings.get("state") is True)

    @property
    def legacy_session_id(self) -> str | None:
        """The ``Mcp-Session-Id`` of a 2025-11-25 HTTP connection, if any."""
        return self._transport.legacy.current if self._transport.legacy is not None else None

    # -- choosing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def use(self, session: SessionRef | str) -> Iterator[SessionRef]:
        """Send requests of this block (this task and tasks it starts) in ``session``."""
        ref = self._ref(session)
        with self._tracker.using(ref.id):
            yield ref

    def switch(self, session: SessionRef | str) -> SessionRef:
        """Make ``session`` the client's own (and what a restarted client resumes)."""
        ref = self._ref(session)
        self._tracker.switch(ref.id)
        return ref

    def _ref(self, session: SessionRef | str) -> SessionRef:
        if isinstance(session, SessionRef):
            return session
        validate_session_id(session, source="session id")
        return SessionRef(session)

    # -- server methods ------------------------------------------------------------------------

    async def create(self, *, ttl_seconds: float | None = None, switch: bool = True) -> SessionRef:
        """A new session through ``session/create``; the client moves into it unless
        ``switch=False``."""
        ref = await self._create(new_session_id(), ttl_seconds=ttl_seconds)
        if switch:
            self._tracker.switch(ref.id)
        return ref

    async def fork(self, *, ttl_seconds: float | None = None, switch: bool = False) -> SessionRef:
        """A new session with a copy of this one's state (``session/create`` with
        ``forkFrom``; in sealed mode the server reads the state from this session's token).

        The client stays where it is unless ``switch=True``; use the fork with
        ``with client.sessions.use(fork): ...``, or open another client on it with
        ``session_policy=ResumeSession(fork.id)`` and the same jar."""
        self._require_advertised("fork()")
        parent = self.id
        fork_from: str | None = parent
        if self.sealed and self.jar.token(self.scope, parent) is None:
            fork_from = None  # no state yet: a copy of nothing is a new session
        return await self._create(new_session_id(), ttl_seconds=ttl_seconds, fork_from=fork_from)

    async def destroy(self, session: SessionRef | str | None = None) -> None:
        """End a session on the server (``session/destroy``) and forget it.

        Destroying the client's own session moves it to a fresh client-generated id; on a
        server with the ``explicit`` lifecycle call :meth:`create` (or :meth:`new`) before
        the next request."""
        target = self._ref(session).id if session is not None else self.id
        await self._call(_SessionDestroy(params=_Params.model_validate({"sessionId": target})))
        self.jar.forget(self.scope, target)
        if target == self._tracker.current:
            self._tracker.switch(new_session_id())

    async def new(self) -> SessionRef:
        """Start over in a new session: ``session/create`` if the server's lifecycle is
        ``explicit``, else a new client-generated id (no request)."""
        if self.lifecycle == LIFECYCLE_EXPLICIT:
            return await self.create()
        return self.switch(new_session_id())

    async def renew_legacy(self) -> str | None:
        """After :class:`LegacySessionLost`: start a new legacy session (re-initialize).
        Returns the new ``Mcp-Session-Id`` (``None`` off legacy HTTP)."""
        return await self._transport.renew_legacy()

    # -- rollback (sealed state) ---------------------------------------------------------------

    def snapshot(self) -> SessionSnapshot:
        """The current point of this session, to :meth:`restore` later (sealed state only)."""
        self._require_sealed("snapshot()")
        token = self.jar.token(self.scope, self.id)
        return SessionSnapshot(self.scope, self.id, token, token_seq(token) if token else None)

    def restore(self, snapshot: SessionSnapshot) -> None:
        """Roll the snapshot's session back: the next request replays its token.

        Results of requests already in flight no longer update the jar."""
        self._require_sealed("restore()")
        if snapshot.scope != self.scope:
            raise ValueError(
                f"this snapshot belongs to {snapshot.scope}, not {self.scope}: a token is "
                "never sent to another server or as another principal"
            )
        self.jar.replace_token(self.scope, snapshot.session_id, snapshot.token)

    def forget_state(self) -> None:
        """Stop echoing this session's state token (after :class:`InvalidStateError`): the
        server then sees the session without state."""
        self.jar.replace_token(self.scope, self.id, None)

    def _require_advertised(self, what: str) -> None:
        if not self._connected:
            raise RuntimeError(f"{what} needs a connected client: use it inside 'async with'")
        if not self.advertised:
            raise SessionsUnsupported(
                f"{what}: this server does not advertise {EXTENSION_ID}, so it cannot copy or "
                "replay session state (plain requests still work)"
            )

    def _require_sealed(self, what: str) -> None:
        self._require_advertised(what)
        if not self.sealed:
            raise SessionsUnsupported(
                f"{what} replays sealed state tokens, and this server keeps session state on "
                "its side (state mode 'server'); use fork() to branch instead"
            )

    async def _create(
        self, proposed: str, *, ttl_seconds: float | None, fork_from: str | None = None
    ) -> SessionRef:
        params: dict[str, Any] = {"sessionId": proposed}
        if ttl_seconds is not None:
            params["ttlSeconds"] = ttl_seconds
        if fork_from is not None:
            params["forkFrom"] = fork_from
        result = await self._call(_SessionCreate(params=_Params.model_validate(params)))
        session_id = result.get("sessionId")
        if not isinstance(session_id, str):
            raise SessionsError(f"session/create answered without a sessionId: {result!r}")
        token = result.get("state")
        expires_at = result.get("expiresAt")
        self.jar.offer(
            self.scope,
            session_id,
            token=token if isinstance(token, str) else None,
            expires_at=expires_at if isinstance(expires_at, str) else None,
        )
        return SessionRef(session_id, expires_at if isinstance(expires_at, str) else None)

    async def _call(self, request: Request[Any, Any]) -> dict[str, Any]:
        try:
            result = await self._client.session.send_request(request, _AnyResult)
        except MCPError as error:
            if error.code == METHOD_NOT_FOUND:
                raise SessionsUnsupported(
                    f"the server does not serve {request.method} ({error.message}); it does "
                    f"not implement {EXTENSION_ID}",
                    code=error.code,
                    data=error.data,
                ) from None
            raise translate_error(error) from None
        return result.model_dump(by_alias=True, exclude_none=True)

    # -- lifecycle (called by SessionClient) ---------------------------------------------------

    async def _start(self) -> None:
        capabilities = self._client.server_capabilities
        extensions = capabilities.extensions or {}
        settings = extensions.get(EXTENSION_ID)
        self._settings = settings if isinstance(settings, Mapping) else None
        self._connected = True
        policy = self._policy
        explicit = self.lifecycle == LIFECYCLE_EXPLICIT
        if isinstance(policy, CreateSession) or (
            isinstance(policy, AutoSession) and explicit and not self._resumed
        ):
            ttl = policy.ttl_seconds if isinstance(policy, CreateSession) else None
            ref = await self._create(self._tracker.current, ttl_seconds=ttl)
            self._tracker.switch(ref.id)


# == the client ================================================================================

P = ParamSpec("P")
R = TypeVar("R")


def _typed_errors(
    method: Callable[Concatenate[Client, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[Client, P], Coroutine[Any, Any, R]]:
    """The SDK verb, raising the typed session exceptions instead of plain ``MCPError``."""

    async def verb(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(self, *args, **kwargs)
        except MCPError as error:
            typed = translate_error(error)
            if typed is error:
                raise
            raise typed from error

    functools.update_wrapper(verb, method)  # name, docs, and the signature via __wrapped__
    verb.__qualname__ = f"SessionClient.{method.__name__}"
    return verb


@dataclass(kw_only=True, eq=False)
class SessionClient(Client):
    """An ``mcp.Client`` whose requests carry a session (DESIGN §7).

    Same constructor as ``mcp.Client`` plus the keyword arguments below; ``client.sessions``
    is the session helper. ::

        from mcp_sessions.client import Client    # was: from mcp import Client

        async with Client("http://127.0.0.1:8000/mcp", jar="sessions.json") as client:
            await client.call_tool("add_item", {"item": "apple"})
            print(client.sessions.id)
    """

    session_policy: SessionPolicy = "auto"
    """``"auto"`` (default), ``"new"``, ``"create"``, ``ResumeSession(id)``,
    ``CreateSession(ttl_seconds=…)``: see :mod:`mcp_sessions.client.policy`."""

    jar: StateJar | str | os.PathLike[str] | None = None
    """Where session ids and state tokens are kept: a :class:`StateJar`, a file path (0600,
    so that a restarted client resumes its session), or ``None`` for memory only."""

    principal: str | None = None
    """Who the client speaks as, for the jar's scope. Default: a digest of a static
    ``Authorization`` header of ``http_client``, else ``anonymous``. Required with an
    ``httpx2.Auth`` flow (OAuth), whose tokens change."""

    server_key: str | None = None
    """Overrides the server half of the jar's scope (endpoint URL or stdio command line)."""

    http_client: httpx2.AsyncClient | None = None
    """For a URL target: the ``httpx2.AsyncClient`` to use (headers, auth, TLS). The client
    adds two event hooks while connected and leaves the client open."""

    renew_legacy_sessions: bool = False
    """2025-11-25 HTTP: after a 404 for our ``Mcp-Session-Id``, re-initialize and resend the
    request (it never ran). Off: the id is dropped and :class:`LegacySessionLost` raised."""

    session_slot: str = DEFAULT_SLOT
    """Names the session in the jar, for clients that keep several per server."""

    sessions: ClientSessions = field(init=False, repr=False)
    target: Any = field(init=False, repr=False)
    """What was passed as ``server`` (``server`` itself becomes the session transport)."""

    def __post_init__(self) -> None:
        target = self.server
        if isinstance(target, SessionTransport):
            raise TypeError("pass the server itself, not a SessionTransport, to SessionClient")
        self.target = target
        jar = self.jar if isinstance(self.jar, StateJar) else StateJar(self.jar)
        self.jar = jar
        scope = JarScope(
            self.server_key or _server_key(target), self.principal or self._default_principal()
        )
        policy = normalize_policy(self.session_policy)
        session_id, resumed = _initial_session(policy, jar, scope, self.session_slot)
        tracker = SessionTracker(jar, scope, session_id, slot=self.session_slot)

        http_client = None
        owns = False
        if isinstance(target, str):
            http_client = self.http_client
            if http_client is None:
                # The SDK's own defaults for MCP over HTTP: 30 s, and 300 s to read a stream.
                http_client = httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=300.0))
                owns = True
        elif self.http_client is not None:
            raise ValueError("http_client= applies to a URL target only")
        transport = SessionTransport(
            _inner_transport(target, http_client, raise_exceptions=self.raise_exceptions),
            tracker,
            http_client=http_client,
            owns_http_client=owns,
            renew_legacy_sessions=self.renew_legacy_sessions,
        )
        self.server = transport
        self.extensions = _with_advertisement(self.extensions)
        if isinstance(target, str) and self.cache is not None and self.cache.target_id is None:
            # What the SDK derives from a URL target; it cannot see the URL through our
            # transport (spec-digest §5.0 item 7: cache per origin).
            self.cache = dataclasses.replace(self.cache, target_id=scope.server)
        super().__post_init__()
        self.sessions = ClientSessions(self, tracker, transport, policy, resumed=resumed)

    def _default_principal(self) -> str:
        client = self.http_client
        if client is None:
            return NO_CREDENTIALS
        if client.auth is not None:
            raise ValueError(
                "http_client has an auth flow whose credentials can change: pass principal= "
                "(e.g. the user's id) so that the state jar never mixes two users' sessions"
            )
        return principal_for_authorization(client.headers.get("authorization"))

    async def __aenter__(self) -> Self:
        self.sessions._tracker.switch(self.sessions._tracker.current)  # remember it in the jar
        try:
            await super().__aenter__()
        except MCPError as error:
            raise translate_error(error) from error
        try:
            await self.sessions._start()
        except BaseException as exc:
            await super().__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    call_tool = _typed_errors(Client.call_tool)
    get_prompt = _typed_errors(Client.get_prompt)
    read_resource = _typed_errors(Client.read_resource)
    list_tools = _typed_errors(Client.list_tools)
    list_prompts = _typed_errors(Client.list_prompts)
    list_resources = _typed_errors(Client.list_resources)
    list_resource_templates = _typed_errors(Client.list_resource_templates)
    complete = _typed_errors(Client.complete)


def _initial_session(
    policy: AutoSession | NewSession | ResumeSession | CreateSession,
    jar: StateJar,
    scope: JarScope,
    slot: str,
) -> tuple[str, bool]:
    """The id the client starts with (it exists before the first request), and whether it
    continues an existing session."""
    if isinstance(policy, ResumeSession):
        return policy.session_id, True
    if isinstance(policy, AutoSession):
        remembered = jar.current(scope, slot)
        if remembered is not None:
            found = jar.entry(scope, remembered)
            if found is None or not found.expired():
                return remembered, True
            jar.forget(scope, remembered)
    return new_session_id(), False


def _server_key(target: Any) -> str:
    if isinstance(target, str):
        return server_key_for_url(target)
    if isinstance(target, StdioServerParameters):
        return server_key_for_command(target.command, target.args, target.cwd)
    if isinstance(target, MCPServer | Server):
        return local_server_key("inprocess", target, getattr(target, "name", None))
    return local_server_key("transport", target, type(target).__qualname__)


def _inner_transport(
    target: Any, http_client: httpx2.AsyncClient | None, *, raise_exceptions: bool
) -> Callable[[], AbstractAsyncContextManager[Any]]:
    if isinstance(target, str):
        assert http_client is not None
        return lambda: streamable_http_client(target, http_client=http_client)
    if isinstance(target, StdioServerParameters):
        return lambda: stdio_client(target)
    if isinstance(target, MCPServer | Server):
        # In-process over streams (the SDK's own test transport), so that requests pass
        # through the wrapper; private module, hence kept here.
        from mcp.client._memory import InMemoryTransport

        return lambda: InMemoryTransport(target, raise_exceptions=raise_exceptions)
    return lambda: target  # any Transport: an async context manager yielding the streams


def _with_advertisement(
    extensions: Any,
) -> list[ClientExtension]:
    """The caller's client extensions plus ours, so the client declares what it sends
    (spec-digest §5.3 item 29)."""
    current = list(extensions or [])
    if any(getattr(ext, "identifier", None) == EXTENSION_ID for ext in current):
        return current
    return [*current, advertise(EXTENSION_ID)]


__all__ = [
    "ClientSessions",
    "InvalidStateError",
    "LegacySessionLost",
    "SessionClient",
    "SessionNotFoundError",
    "SessionRequiredError",
    "SessionTransport",
    "SessionsError",
    "SessionsUnsupported",
    "StateConflictError",
    "translate_error",
]
