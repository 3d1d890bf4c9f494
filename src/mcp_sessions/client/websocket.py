"""A WebSocket transport for ``mcp.Client`` and this library's ``Client`` (issue #16).

``mcp`` 2.x has no WebSocket transport. This one speaks what ``server/websocket.py`` serves:
subprotocol ``mcp``, one JSON-RPC message per text frame. ``Client("ws://…/mcp")`` picks it
by scheme; ``mcp.Client(websocket_client("ws://…/mcp"))`` uses it directly.

It reconnects: when the socket drops, the next message opens a new one (a few tries, backing
off) and goes out on it. The session lives in each request's ``_meta``, not in the socket, so
a client that names its session (this library's ``Client`` always does) just continues;
a socket's own connection session (carrier 5) ends with the socket, as stdio's does. A
2025-11-25 connection needs its handshake on every socket, so the transport replays the
client's ``initialize`` (under an id of its own, whose answer it keeps to itself) before
anything else on a new socket. Requests still unanswered when a socket drops are answered
with a "connection closed" error: they may or may not have run, so they are never resent
behind the caller's back.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import anyio
import mcp_types
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.shared.message import SessionMessage
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

from ..core.websocket import SUBPROTOCOL, is_websocket_url

logger = logging.getLogger(__package__)

__all__ = ["WebSocketTransport", "websocket_client"]

#: The ids of replayed ``initialize`` requests start with this; their answers stay here.
_REPLAY_PREFIX = "mcp-sessions/reinitialize-"


class WebSocketTransport:
    """An async context manager yielding the SDK's ``(read_stream, write_stream)`` over one
    WebSocket at a time (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        reconnect_attempts: int = 5,
        reconnect_delay: float = 0.2,
        open_timeout: float = 10.0,
        max_message_bytes: int | None = 4 * 1024 * 1024,
    ) -> None:
        if not is_websocket_url(url):
            raise ValueError(f"a WebSocket URL starts with ws:// or wss://, not {url!r}")
        if reconnect_attempts < 0:
            raise ValueError("reconnect_attempts must be 0 or more")
        self.url = url
        self.headers = dict(headers or {})
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_delay = reconnect_delay
        self.open_timeout = open_timeout
        self.max_message_bytes = max_message_bytes
        #: How many sockets this transport has opened (the first one included).
        self.connections = 0
        self._ws: ClientConnection | None = None
        self._pending: set[Any] = set()  # request ids sent on the current socket
        self._initialize: mcp_types.JSONRPCRequest | None = None
        self._initialized: mcp_types.JSONRPCNotification | None = None
        self._replays = 0
        self._replay_answered: anyio.Event | None = None
        self._group: TaskGroup | None = None
        self._up: MemoryObjectSendStream[SessionMessage | Exception] | None = None
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"WebSocketTransport({self.url!r})"

    @property
    def socket(self) -> ClientConnection | None:
        """The current socket (``None`` before the first and between a drop and the
        next message)."""
        return self._ws

    async def __aenter__(
        self,
    ) -> tuple[
        MemoryObjectReceiveStream[SessionMessage | Exception],
        MemoryObjectSendStream[SessionMessage],
    ]:
        up_send, up_receive = anyio.create_memory_object_stream[SessionMessage | Exception](16)
        down_send, down_receive = anyio.create_memory_object_stream[SessionMessage](0)
        self._up = up_send
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        try:
            await self._open()  # fails fast: a wrong URL or a refused handshake raises here
        except BaseException:
            self._group.cancel_scope.cancel()
            await self._group.__aexit__(None, None, None)
            raise
        self._group.start_soon(self._write, down_receive)
        return up_receive, down_send

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._group is not None
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        self._group.cancel_scope.cancel()
        await self._group.__aexit__(None, None, None)
        if self._up is not None:
            await self._up.aclose()
        return None

    # -- sockets ---------------------------------------------------------------------------

    async def _open(self) -> ClientConnection:
        ws = await connect(
            self.url,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            additional_headers=self.headers,
            open_timeout=self.open_timeout,
            max_size=self.max_message_bytes,
        )
        self.connections += 1
        self._ws = ws
        owed, self._pending = self._pending, set()
        for request_id in owed:  # the old socket's reader did not get to them
            await self._fail(request_id, "the WebSocket closed")
        assert self._group is not None
        self._group.start_soon(self._read, ws)
        return ws

    async def _socket(self) -> ClientConnection:
        """The open socket, or a new one (with the handshake replayed) after a drop."""
        async with self._lock:
            if self._ws is not None and self._ws.close_code is None:
                return self._ws
            self._ws = None
            last: Exception | None = None
            for attempt in range(self.reconnect_attempts):
                await anyio.sleep(self.reconnect_delay * (2**attempt))
                try:
                    ws = await self._open()
                    try:
                        await self._replay_handshake(ws)
                    except BaseException:
                        with contextlib.suppress(Exception):
                            await ws.close()
                        raise
                    return ws
                except (OSError, InvalidHandshake, InvalidURI, ConnectionClosed, TimeoutError) as e:
                    last = e
                    logger.info("reconnecting to %s failed: %s", self.url, e)
            raise ConnectionError(f"the WebSocket to {self.url} closed and did not reopen: {last}")

    async def _replay_handshake(self, ws: ClientConnection) -> None:
        if self._initialize is None:
            return
        self._replays += 1
        replay = self._initialize.model_copy(update={"id": f"{_REPLAY_PREFIX}{self._replays}"})
        self._replay_answered = anyio.Event()
        await ws.send(replay.model_dump_json(by_alias=True, exclude_unset=True))
        with anyio.fail_after(self.open_timeout):
            await self._replay_answered.wait()
        if self._initialized is not None:
            await ws.send(self._initialized.model_dump_json(by_alias=True, exclude_unset=True))

    # -- the two directions ----------------------------------------------------------------

    async def _write(self, down: MemoryObjectReceiveStream[SessionMessage]) -> None:
        async with down:
            async for item in down:
                message = item.message
                if isinstance(message, mcp_types.JSONRPCRequest) and message.method == "initialize":
                    self._initialize = message
                elif isinstance(message, mcp_types.JSONRPCNotification):
                    if message.method == "notifications/initialized":
                        self._initialized = message
                    elif message.method == "notifications/cancelled":
                        # A cancelled request is never answered: nothing is owed for it.
                        cancelled = (message.params or {}).get("requestId")
                        if isinstance(cancelled, int | str):
                            self._pending.discard(cancelled)
                text = message.model_dump_json(by_alias=True, exclude_unset=True)
                try:
                    await self._send(message, text)
                except ConnectionError as error:
                    if isinstance(message, mcp_types.JSONRPCRequest):
                        await self._fail(message.id, str(error))

    async def _send(self, message: Any, text: str) -> None:
        for _retry in range(2):  # a socket that turns out closed is replaced once
            ws = await self._socket()
            if isinstance(message, mcp_types.JSONRPCRequest):
                self._pending.add(message.id)
            try:
                await ws.send(text)
                return
            except ConnectionClosed:
                # Not sent (the frame did not go out), so sending it on a new socket is safe.
                self._pending.discard(getattr(message, "id", None))
        raise ConnectionError(f"the WebSocket to {self.url} keeps closing")

    async def _read(self, ws: ClientConnection) -> None:
        assert self._up is not None
        try:
            async for frame in ws:
                if isinstance(frame, bytes):
                    continue  # the server sends text frames only
                try:
                    message = mcp_types.jsonrpc_message_adapter.validate_json(frame, by_name=False)
                except Exception as exc:  # what the SDK's own transports pass up
                    await self._up.send(exc)
                    continue
                if isinstance(message, mcp_types.JSONRPCResponse | mcp_types.JSONRPCError):
                    if isinstance(message.id, str) and message.id.startswith(_REPLAY_PREFIX):
                        if self._replay_answered is not None:
                            self._replay_answered.set()
                        continue
                    self._pending.discard(message.id)
                await self._up.send(SessionMessage(message))
        except ConnectionClosed:
            pass
        except anyio.ClosedResourceError:
            return
        # The socket is gone: whatever it still owed is answered here (or, if a new socket
        # replaced it first, by _open).
        if ws is self._ws:
            pending, self._pending = self._pending, set()
            code = ws.close_code
            for request_id in pending:
                await self._fail(request_id, f"the WebSocket closed (code {code})")

    async def _fail(self, request_id: Any, why: str) -> None:
        assert self._up is not None
        error = mcp_types.JSONRPCError(
            jsonrpc="2.0",
            id=request_id,
            error=mcp_types.ErrorData(
                code=mcp_types.CONNECTION_CLOSED,
                message=f"Connection closed before the answer arrived: {why}",
            ),
        )
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            await self._up.send(SessionMessage(error))


def websocket_client(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    reconnect_attempts: int = 5,
    **options: Any,
) -> WebSocketTransport:
    """A :class:`WebSocketTransport` for ``mcp.Client(websocket_client("ws://…/mcp"))``."""
    return WebSocketTransport(
        url, headers=headers, reconnect_attempts=reconnect_attempts, **options
    )
