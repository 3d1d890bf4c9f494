"""The Redis store's one connection for its hot commands, and its cache's source of truth
(issue #15 item 1).

One RESP3 connection carries every read and compare-and-set of a record and, in the same byte
stream, Redis's invalidations: it runs ``CLIENT TRACKING on NOLOOP``, so Redis remembers each
key read on it (also by a script it runs) and pushes the key when any *other* client (another
replica, this process's own pool) next writes it; its own writes are not reported, and the
store puts their results in the cache itself. A write ends the tracking of the key for the
writer, so the compare-and-set script reads the key again after writing it (see ``SWAP``).

Why not ``BCAST``: in broadcasting mode Redis credits a write made by a script to the script,
not to the connection that ran it, so ``NOLOOP`` would not spare the store's own writes (each
would drop the copy it has just made; redis-server 7.0, checked); and every replica would be
told of every write.

One connection, not a pool: ``NOLOOP`` spares the writes of the connection that asked for
tracking only. Commands are pipelined on it (each caller sends, a reader task hands out the
answers in order), so callers do not wait for each other's round trips.

The cache lives exactly as long as the tracking does: it is switched on once the ``CLIENT
TRACKING`` command has been answered, and off (flushed) the moment the connection is lost, an
answer on it is late, or Redis flushes its keys (a null invalidation). The next command opens
a new connection. A server that refuses ``CLIENT TRACKING`` (an ACL without it, a server
before 6.0) still gets the pipelined connection, with the cache off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import redis.exceptions as redis_errors
from redis.asyncio.connection import AbstractConnection

from ._redis_cache import RecordCache

logger = logging.getLogger("mcp_sessions.stores")

#: Seconds of silence on the tracked connection before a probe (see TrackedConnection).
PROBE_INTERVAL = 1.0


def pack(args: tuple[Any, ...]) -> bytes:
    """One command in RESP: the store sends only text and integers, so this is all of
    redis-py's ``pack_command`` it needs, at a fraction of its cost on the hot path."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class TrackedConnection:
    """Pipelined RESP3 commands, with invalidations applied to ``cache`` as they arrive."""

    def __init__(
        self,
        connect: Callable[[], AbstractConnection],
        cache: RecordCache,
        *,
        track: bool = True,
    ) -> None:
        self._make = connect
        self.track = track
        self.cache = cache
        self._conn: AbstractConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._open_lock = asyncio.Lock()
        self._send_lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        #: A connection that has been silent this long (seconds) is sent a PING, and lost if
        #: no answer comes within ``probe_timeout``: a network that drops packets without a
        #: reset would otherwise keep the copy on with no invalidation arriving.
        self.probe_interval = PROBE_INTERVAL
        self.probe_timeout = PROBE_INTERVAL
        self._heard = 0.0
        self._prober: asyncio.Task[None] | None = None
        #: Connections opened, commands sent (tests and benchmarks count round trips).
        self.connects = 0
        self.sent = 0

    async def execute(self, *args: Any) -> Any:
        """Send one command and wait for its answer; a Redis error is raised as redis-py
        raises it, a lost connection as ``redis.exceptions.ConnectionError``."""
        conn = await self._connection()
        future: asyncio.Future[Any] = self._loop.create_future()  # type: ignore[union-attr]
        packed = pack(args)
        async with self._send_lock:  # answers come back in the order the commands went out
            if conn is not self._conn:
                raise redis_errors.ConnectionError("the Redis connection was lost")
            self._waiting.append(future)
            self.sent += 1
            try:
                await conn.send_packed_command(packed, check_health=False)
            except BaseException:
                future.cancel()  # nobody will wait for it
                self._lost(conn, "sending failed")
                raise
        return await future

    async def ready(self) -> None:
        """Open the connection now if there is none, so that the cache is on (if it can be)
        before a fill is announced: turning it on spoils the fills in flight."""
        if self._conn is None or self._loop is not asyncio.get_running_loop():
            await self._connection()

    async def _connection(self) -> AbstractConnection:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # First use, or a new event loop (a script running asyncio.run twice): what
            # belonged to another loop cannot be awaited here; start afresh.
            self._loop = loop
            self._conn, self._reader, self._prober, self._waiting = None, None, None, deque()
            self._open_lock, self._send_lock = asyncio.Lock(), asyncio.Lock()
            self.cache.disable()
        conn = self._conn
        if conn is not None:
            return conn
        if self._closed:
            raise redis_errors.ConnectionError("the Redis store is closed")
        async with self._open_lock:
            if self._conn is None:
                await self._open()
            assert self._conn is not None
            return self._conn

    async def _open(self) -> None:
        conn = self._make()
        await cast(Any, conn).connect()  # bounded by the connection's own timeouts
        self.connects += 1
        # From now on, sends write straight to the socket: with a socket timeout redis-py
        # wraps each in a task of its own (asyncio.wait_for). Each operation is bounded by
        # the store's op_timeout, which drops this connection when it strikes (reset).
        conn.socket_timeout = None
        # redis-py has no public setter on the connection; its RESP3 parser calls this for
        # every "invalidate" push, also while the reader waits for the next answer.
        cast(Any, conn)._parser.set_invalidation_push_handler(self._on_invalidate)
        tracking = self.track
        try:
            if tracking:
                await conn.send_command("CLIENT", "TRACKING", "ON", "NOLOOP")
                await conn.read_response()
        except redis_errors.ResponseError as exc:
            tracking = False
            logger.warning("Redis refused CLIENT TRACKING (%s): no local copy of records", exc)
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.disconnect()
            raise
        self._conn = conn
        self._heard = asyncio.get_running_loop().time()
        self._reader = asyncio.create_task(self._read(conn), name="mcp-sessions redis reader")
        self._prober = asyncio.create_task(self._probe(conn), name="mcp-sessions redis probe")
        if tracking:
            self.cache.enable()

    async def _probe(self, conn: AbstractConnection) -> None:
        loop = asyncio.get_running_loop()
        while conn is self._conn:
            await asyncio.sleep(self.probe_interval)
            if conn is not self._conn or loop.time() - self._heard < self.probe_interval:
                continue
            ping = asyncio.ensure_future(self.execute("PING"))
            done, _ = await asyncio.wait({ping}, timeout=self.probe_timeout)
            if not done:
                ping.cancel()
                self._lost(conn, f"no answer to a PING within {self.probe_timeout:g}s")
            elif not ping.cancelled():
                ping.exception()  # a lost connection has been dealt with already

    async def _on_invalidate(self, push: list[Any]) -> None:
        self._heard = asyncio.get_running_loop().time()
        keys = push[1] if len(push) > 1 else None
        if keys is None:  # FLUSHALL / FLUSHDB: every key is gone
            self.cache.flush()
            return
        for key in keys:
            self.cache.invalidate(key.decode() if isinstance(key, bytes) else key)

    async def _read(self, conn: AbstractConnection) -> None:
        waiting = self._waiting
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    answer: Any = await conn.read_response(timeout=math.inf)
                except redis_errors.ResponseError as exc:
                    answer = exc
                if not waiting:
                    raise redis_errors.InvalidResponse("an answer to no command")
                self._heard = loop.time()
                future = waiting.popleft()
                if future.done():  # its caller gave up (cancelled): the answer is dropped
                    continue
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)
        except asyncio.CancelledError:
            self._lost(conn, "closed")
            raise
        except Exception as exc:
            self._lost(conn, f"{type(exc).__name__}: {exc}")

    def _lost(self, conn: AbstractConnection, why: str) -> None:
        """``conn`` is no longer usable: cache off, every waiting command fails."""
        if conn is not self._conn:
            return
        self._conn = None
        self.cache.disable()
        waiting, self._waiting = self._waiting, deque()
        for future in waiting:
            if not future.done():
                future.set_exception(
                    redis_errors.ConnectionError(f"the Redis connection was lost ({why})")
                )
        for task in (self._reader, self._prober):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self._reader = self._prober = None
        task = asyncio.get_running_loop().create_task(conn.disconnect(nowait=True))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    def reset(self) -> None:
        """Drop the connection (a command on it timed out: its answers can no longer be
        trusted to come); the next command opens a new one."""
        if self._conn is not None:
            self._lost(self._conn, "a command timed out")

    async def close(self) -> None:
        self._closed = True
        conn, tasks = self._conn, (self._reader, self._prober)
        if conn is not None:
            self._lost(conn, "closed")
        for task in tasks:
            if task is not None and task.get_loop() is asyncio.get_running_loop():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect()
