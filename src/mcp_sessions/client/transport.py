"""The transport wrapper: every request of a connection carries its session.

The SDK has no client middleware (research/sdk-digest.md §2.2(f)), so the work is done by
wrapping the transport a caller supplies: every outgoing JSON-RPC request gets
``dev.mcpsessions/sessionId`` (and the session's state token) in ``params._meta`` and the
``Mcp-Client-Session-Id`` header through the SDK's own per-message header channel
(``ClientMessageMetadata.headers``), so the header always equals the ``_meta`` value of that
very message; every result's ``_meta`` is read into the jar (:mod:`.tracker`). The write
happens in the caller's task, so ``sessions.use()`` is task-local; the read side forwards the
sender's ``contextvars`` snapshot untouched.

Over legacy HTTP it also answers requests on a lost ``Mcp-Session-Id`` (:mod:`.legacy`) and
renews that session when asked. :func:`inner_transport` picks the SDK transport for a target.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import logging
from collections.abc import Callable, Hashable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import anyio
import httpx2
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ClientMessageMetadata, SessionMessage
from mcp.types import ErrorData, JSONRPCError, JSONRPCNotification, JSONRPCRequest, JSONRPCResponse

from ..core.names import HEADER_CLIENT_SESSION_ID, HEADER_LEGACY_SESSION_ID
from ..core.websocket import is_websocket_url
from .errors import LegacySessionLost, legacy_lost_error
from .legacy import LegacyWatch
from .tracker import SessionTracker

logger = logging.getLogger(__package__)

#: Seconds a legacy re-initialize may take before renewal gives up.
RENEW_TIMEOUT = 30.0

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
        self.legacy = LegacyWatch() if http_client is not None else None
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
            await self._answer(message.id, legacy_lost_error(None, legacy.current))
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
                error = legacy_lost_error(message.error, dead)
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
        await self._answer(request_id, legacy_lost_error(error, dead))

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
            raise LegacySessionLost(f"the server did not issue a new {HEADER_LEGACY_SESSION_ID}")

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


def inner_transport(
    target: Any, http_client: httpx2.AsyncClient | None, *, raise_exceptions: bool
) -> Callable[[], AbstractAsyncContextManager[Any]]:
    """A factory of the SDK transport that reaches ``target`` (a URL, stdio parameters, a
    server object in this process, or any ``Transport``), for :class:`SessionTransport` to wrap."""
    if is_websocket_url(target):  # issue #16; websockets is an optional dependency
        from .websocket import WebSocketTransport

        return lambda: WebSocketTransport(target)
    if isinstance(target, str):
        assert http_client is not None
        return lambda: streamable_http_client(target, http_client=http_client)
    if isinstance(target, StdioServerParameters):
        return lambda: stdio_client(target)
    if isinstance(target, MCPServer | Server):
        # In process over streams, so that requests pass through the wrapper. The SDK's own
        # in-memory transport is private (mcp.client._memory) and its maintainers chose not to
        # export it (modelcontextprotocol/python-sdk#1972); building one from the public
        # mcp.shared.memory streams would need MCPServer's private _lowlevel_server instead.
        # So this is the one place that imports a private SDK module, and only when used.
        from mcp.client._memory import InMemoryTransport

        return lambda: InMemoryTransport(target, raise_exceptions=raise_exceptions)
    return lambda: target  # any Transport: an async context manager yielding the streams
