"""The server's view of its store: an outage is an answer a client can read (issue #12 item 8).

Before, a stopped Redis gave "Error executing tool count" in tools, -32603 "Internal server
error" on ``session/create`` and a plain-text 500 on legacy ``initialize``. Now every store
failure that is not an outcome of the contract (a missing record, a lost race, ...) becomes
:class:`~mcp_sessions.core.errors.StoreUnavailable` (-31006, retryable), whichever path met it.

The client's message says only that the store is unavailable; the cause (the store URL with
its password hidden, the driver's error) goes to the log at warning level, once when an outage
starts and at most once a minute while it lasts, and one more line says when it ends.
Nothing here keeps a connection or retries: the backend reconnects on the next operation, so
the server recovers by itself as soon as the store answers again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

from ..core.errors import StoreUnavailable
from ..core.records import JSONObject, Record
from ..stores import AlreadyExists, NotFound, StateOverMaxBytes, Store, StoreError, VersionConflict

if TYPE_CHECKING:
    from ..telemetry.instruments import SessionTelemetry

logger = logging.getLogger("mcp_sessions")
P = ParamSpec("P")
T = TypeVar("T")

#: Store errors that are answers of the contract, not failures: they pass through unchanged.
OUTCOMES = (AlreadyExists, NotFound, VersionConflict, StateOverMaxBytes)
#: While an outage lasts, its cause is logged again at most this often (seconds).
LOG_INTERVAL = 60.0


class GuardedStore:
    """A :class:`~mcp_sessions.stores.Store` whose failures are -31006 and logged once.

    Adds one await per operation and one attribute test, nothing on the wire.
    """

    def __init__(self, store: Store) -> None:
        self.inner = store
        self.url = store.url
        #: ``time.monotonic()`` when the current outage began, ``None`` while the store works.
        self.down_since: float | None = None
        self._logged_at = 0.0
        self._failures = 0
        self._started = False
        #: Times every operation when metrics are on (issue #13); set by the engine.
        self.telemetry: SessionTelemetry | None = None

    def __getattr__(self, name: str) -> Any:
        # Backend extras (ping, address, persistence, ...) stay reachable.
        if name == "inner":  # not set yet (a copy in the making): no endless recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _failed(self, error: StoreError) -> NoReturn:
        now = time.monotonic()
        self._failures += 1
        if self.down_since is None:
            self.down_since = now
            self._logged_at = now
            logger.warning("session store unavailable, answering -31006: %s", error)
        elif now - self._logged_at >= LOG_INTERVAL:
            self._logged_at = now
            logger.warning(
                "session store still unavailable after %.0fs (%d failed operations): %s",
                now - self.down_since,
                self._failures,
                error,
            )
        raise StoreUnavailable() from None

    def _recovered(self) -> None:
        if self.down_since is not None:
            logger.warning(
                "session store %s answers again after %.1fs (%d failed operations)",
                self.url,
                time.monotonic() - self.down_since,
                self._failures,
            )
            self.down_since = None
            self._failures = 0

    async def _run(
        self, operation: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """One operation of the inner store: its failures become -31006 (logged), the
        contract's own outcomes pass through, and a success after an outage ends it."""
        if not self._started:
            await self.start()
        telemetry = self.telemetry
        if telemetry is not None and telemetry.metering:
            return await self._timed(telemetry, operation, *args, **kwargs)
        try:
            result = await operation(*args, **kwargs)
        except OUTCOMES:
            raise
        except StoreError as error:
            self._failed(error)
        if self.down_since is not None:
            self._recovered()
        return result

    async def _timed(
        self,
        telemetry: SessionTelemetry,
        operation: Callable[P, Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """:meth:`_run`, its duration recorded by operation (issue #13)."""
        started = time.perf_counter()
        error_type = None
        try:
            result = await operation(*args, **kwargs)
        except OUTCOMES:
            raise
        except StoreError as error:
            error_type = type(error).__qualname__
            self._failed(error)
        finally:
            telemetry.store_timed(operation.__name__, time.perf_counter() - started, error_type)
        if self.down_since is not None:
            self._recovered()
        return result

    # -- the Store contract --------------------------------------------------------------

    async def create(self, record: Record) -> None:
        await self._run(self.inner.create, record)

    async def get(
        self, kind: str, id: str, principal: str, *, now: float | None = None
    ) -> Record | None:
        return await self._run(self.inner.get, kind, id, principal, now=now)

    async def compare_and_set(
        self,
        kind: str,
        id: str,
        principal: str,
        expected_version: int,
        state: JSONObject,
        *,
        now: float | None = None,
        max_bytes: int | None = None,
    ) -> Record:
        return await self._run(
            self.inner.compare_and_set,
            kind,
            id,
            principal,
            expected_version,
            state,
            now=now,
            max_bytes=max_bytes,
        )

    async def touch(
        self,
        record: Record,
        *,
        now: float | None = None,
        force: bool = False,
        idle_ttl: float | None = None,
    ) -> Record:
        return await self._run(self.inner.touch, record, now=now, force=force, idle_ttl=idle_ttl)

    async def delete(self, kind: str, id: str, principal: str) -> bool:
        return await self._run(self.inner.delete, kind, id, principal)

    async def list(
        self, principal: str, *, kind: str | None = None, now: float | None = None
    ) -> list[Record]:
        return await self._run(self.inner.list, principal, kind=kind, now=now)

    async def count(
        self, principal: str, *, kind: str | None = None, now: float | None = None
    ) -> int:
        return await self._run(self.inner.count, principal, kind=kind, now=now)

    async def sweep(self, *, now: float | None = None, limit: int = 1000) -> int:
        return await self.inner.sweep(now=now, limit=limit)

    async def close(self) -> None:
        await self.inner.close()

    async def start(self) -> None:
        """Open or connect now, at server start (or else at the first operation, e.g. over
        stdio): a Redis server without persistence is warned about, a store that cannot be
        used yet is logged (the server runs anyway, answers -31006 and recovers when the store
        does)."""
        self._started = True
        try:
            await self.inner.__aenter__()
        except StoreError as error:
            logger.warning(
                "session store unavailable at start; requests get -31006 until it answers: %s",
                error,
            )
            self.down_since = time.monotonic()
            self._logged_at = self.down_since

    async def __aenter__(self) -> GuardedStore:
        await self.inner.__aenter__()  # the contract: an unusable store fails here
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


__all__ = ["GuardedStore"]
