"""The processes of ``--spawn``: warm, starting and bound, under one cap (issue #7).

* **isolation** — one process per (principal, session key); two sessions never share one;
* **warm pool** — processes are started ahead of need, so a new session does not wait for a
  cold start. A stdio server fixes its protocol era with its first message (the SDK answers a
  2026-07-28 request on a connection that began with ``initialize`` with an error, and the
  other way round), so there are two pools: ``warm`` processes made ready by the
  ``server/discover`` probe (and a ``tools/list``, which warms the request path; both are
  session-free by the 2026-07-28 rules) for 2026-07-28 clients, and ``warm_legacy``
  processes, started but not spoken to, for clients that begin with ``initialize``;
* **idle reaping** — a process whose session sent nothing for ``idle_timeout`` and has no
  request in flight is stopped; that session is over (a legacy id then gets 404, a client id
  starts afresh, as with an expired session);
* **cap** — at most ``max_processes`` alive; a new session beyond it gets 503 and -31011;
  at most ``per_principal_cap`` of them bound for one caller (429, issue #12);
* **crashes** — a process that exits on its own fails its requests in flight (502, -31010),
  and every later request of its session gets "session lost" (404, -31001) until the
  session's idle timeout: it is never silently replaced by a fresh process under a live
  session (a :class:`Tombstone` remembers why).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Literal

from ...core.errors import LimitExceeded
from ..config import SpawnSettings
from ..errors import GatewayAtCapacity
from ..metrics import GatewayMetrics
from .child import ChildProcess, Era, ProcessExited, SessionKey

logger = logging.getLogger("mcp_sessions.gateway")


@dataclass(slots=True)
class Tombstone:
    description: str
    until: float


class ProcessPool:
    """Warm, starting and bound processes under one cap."""

    def __init__(self, settings: SpawnSettings, metrics: GatewayMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.warm: dict[Era, deque[ChildProcess]] = {
            "modern": deque(),
            "legacy": deque(),
            "any": deque(),
        }
        self.starting: dict[Era, int] = {"modern": 0, "legacy": 0, "any": 0}
        self._warmed: dict[Era, asyncio.Event] = {e: asyncio.Event() for e in self.starting}
        self._unspawned = 0
        self.bound: dict[SessionKey, ChildProcess] = {}
        self._binding: dict[SessionKey, asyncio.Future[ChildProcess]] = {}
        #: The quota key of each binding in progress (it counts before its process is bound).
        self._binding_quota: dict[SessionKey, str] = {}
        self.tombstones: dict[SessionKey, Tombstone] = {}
        self._all: set[ChildProcess] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._closing = False

    # -- accounting ----------------------------------------------------------------------------

    def pool_of(self, era: Literal["modern", "legacy"]) -> Era:
        return "any" if self.settings.probe == "none" else era

    def targets(self) -> dict[Era, int]:
        s = self.settings
        if s.probe == "none":
            return {"any": s.warm + s.warm_legacy}
        return {"modern": s.warm, "legacy": s.warm_legacy}

    @property
    def total(self) -> int:
        """Processes alive or about to be: the number the cap bounds."""
        return len(self._all) + self._unspawned

    def counts(self) -> dict[str, int]:
        return {
            "warm": sum(len(q) for q in self.warm.values()),
            "starting": sum(self.starting.values()),
            "bound": len(self.bound),
        }

    def _spawn_task(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- starting ------------------------------------------------------------------------------

    def _reserve(self, era: Era) -> None:
        """Count a process as starting before it exists, so that the cap sees it."""
        self.starting[era] += 1
        self._unspawned += 1

    async def _start_reserved(self, era: Era) -> ChildProcess:
        """Start the process reserved by :meth:`_reserve` and make it ready."""
        spawned = False
        try:
            child = await ChildProcess.start(self.settings, era)
            spawned = True
            self._unspawned -= 1
            child.on_exit = self._on_exit
            self._all.add(child)
            if era == "modern":
                try:
                    await child.probe(
                        self.settings.startup_timeout, self.settings.warmup_requests()
                    )
                except ProcessExited:
                    await child.stop("not ready in time")
                    raise
            return child
        finally:
            if not spawned:
                self._unspawned -= 1
            self.starting[era] -= 1

    async def _start_warm(self, era: Era) -> None:
        try:
            child = await self._start_reserved(era)
        except (ProcessExited, OSError) as exc:
            logger.warning("a warm %s process failed to start: %s", era, exc)
            self._warmed[era].set()  # wake waiters: they start their own
            await asyncio.sleep(1.0)  # do not spin on a command that cannot start
        else:
            if self._closing:
                await child.stop("shut down")
                return
            self.warm[era].append(child)
            self._warmed[era].set()
        self.refill()

    def refill(self) -> None:
        """Start processes until each pool reaches its target (within the cap)."""
        if self._closing:
            return
        for era, target in self.targets().items():
            while len(self.warm[era]) + self.starting[era] < target and (
                self.total < self.settings.max_processes
            ):
                self._reserve(era)
                self._spawn_task(self._start_warm(era))

    async def _take(self, era: Era) -> ChildProcess:
        """A ready process for a new session: a warm one; else one about to be warm; else a
        cold start if the cap allows; else :class:`GatewayAtCapacity`."""
        deadline = time.monotonic() + self.settings.startup_timeout
        queue = self.warm[era]
        while True:
            while queue:
                child = queue.popleft()
                if child.alive:
                    # Refill a moment later: starting a process forks this one, which would
                    # hold up the new session's first request if done right now.
                    self._refill_soon()
                    return child
            remaining = deadline - time.monotonic()
            if self.starting[era] > 0 and remaining > 0:
                warmed = self._warmed[era]
                warmed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(warmed.wait(), remaining)
                continue
            break
        if self.total >= self.settings.max_processes:
            raise GatewayAtCapacity(
                f"The gateway is at capacity: all {self.settings.max_processes} server "
                "processes are in use. Retry later, end sessions you no longer use (DELETE, "
                "or let them idle out), or raise --max-processes."
            )
        self._reserve(era)
        child = await self._start_reserved(era)  # a cold start: the pool was empty
        self._refill_soon()
        return child

    def _refill_soon(self, delay: float = 0.25) -> None:
        asyncio.get_running_loop().call_later(delay, self.refill)

    # -- sessions ------------------------------------------------------------------------------

    def lookup(self, key: SessionKey) -> ChildProcess | Tombstone | None:
        child = self.bound.get(key)
        if child is not None:
            return child
        tombstone = self.tombstones.get(key)
        if tombstone is not None and tombstone.until > time.monotonic():
            return tombstone
        return None

    def _check_quota(self, quota: str) -> None:
        """:class:`LimitExceeded` when ``quota``'s caller already holds its share of processes
        (``--max-processes-per-principal``): one caller cannot take the pool (issue #12)."""
        cap = self.settings.per_principal_cap
        if cap >= self.settings.max_processes:
            return  # no tighter than the pool's own cap, whose answer (503) then applies
        held = [child for child in self.bound.values() if child.quota == quota]
        starting = sum(1 for q in self._binding_quota.values() if q == quota)
        if len(held) + starting < cap:
            return
        now = time.monotonic()
        soonest = min(
            (c.last_active + self.settings.idle_timeout - now for c in held),
            default=1.0,
        )
        retry = max(1, math.ceil(soonest))
        raise LimitExceeded(
            f"Limit exceeded: this caller already holds {cap} server processes "
            f"(--max-processes-per-principal {cap}). End a session you no longer use "
            f"(DELETE), or retry in {retry} s, when its least recently used session idles out.",
            retry_after=retry,
        )

    async def bind(
        self, key: SessionKey, era: Literal["modern", "legacy"], quota: str | None = None
    ) -> ChildProcess:
        """The process of session ``key``, taking one from the pool for a new session.

        Parallel first requests of one session wait for the same process. ``quota`` names the
        caller a new session counts against (:meth:`_check_quota`).
        """
        child = self.bound.get(key)
        if child is not None:
            return child
        future = self._binding.get(key)
        if future is not None:
            return await asyncio.shield(future)
        if quota is not None:
            self._check_quota(quota)
            self._binding_quota[key] = quota
        future = asyncio.get_running_loop().create_future()
        self._binding[key] = future
        try:
            child = await self._take(self.pool_of(era))
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning if nobody waits
            raise
        finally:
            self._binding.pop(key, None)
            self._binding_quota.pop(key, None)
        child.key = key
        child.quota = quota
        child.last_active = time.monotonic()
        self.bound[key] = child
        self.tombstones.pop(key, None)
        future.set_result(child)
        return child

    async def release(self, key: SessionKey, reason: str) -> bool:
        """End session ``key``: stop its process. ``False`` if it had none."""
        child = self.bound.pop(key, None)
        if child is None:
            return False
        await child.stop(reason)
        self.metrics.process_exits.labels(
            "deleted" if reason == "ended by DELETE" else "idle"
        ).inc()
        return True

    def _on_exit(self, child: ChildProcess) -> None:
        self._all.discard(child)
        for queue in self.warm.values():
            with contextlib.suppress(ValueError):
                queue.remove(child)
        if child.stopping is None and not self._closing:
            description = child.exit_description or f"pid {child.pid} exited"
            if child.key is not None and self.bound.get(child.key) is child:
                del self.bound[child.key]
                # Never replaced under a live session: its requests get "session lost"
                # until the session would have idled out anyway.
                self.tombstones[child.key] = Tombstone(
                    description, time.monotonic() + self.settings.idle_timeout
                )
                logger.warning("%s", description)
            else:
                logger.warning("a warm process exited: %s", description)
            self.metrics.process_exits.labels("crashed").inc()
            # A command that keeps dying must not be restarted in a tight loop.
            self._spawn_task(self._refill_later(1.0))
            return
        self.refill()

    async def _refill_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self.refill()

    # -- reaping -------------------------------------------------------------------------------

    async def _reap_forever(self) -> None:
        period = max(0.05, min(1.0, self.settings.idle_timeout / 4))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for key, child in list(self.bound.items()):
                idle = now - child.last_active >= self.settings.idle_timeout
                if idle and not child.busy and self.bound.get(key) is child:
                    del self.bound[key]
                    logger.info("session process pid %s idle: stopping it", child.pid)
                    self._spawn_task(child.stop("stopped after its idle timeout"))
                    self.metrics.process_exits.labels("idle").inc()
            for key, tombstone in list(self.tombstones.items()):
                if tombstone.until <= now:
                    del self.tombstones[key]

    def start(self) -> None:
        self.refill()
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def stop(self) -> None:
        self._closing = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        children = list(self._all)
        await asyncio.gather(*(c.stop("shut down") for c in children), return_exceptions=True)
        if children:
            self.metrics.process_exits.labels("shutdown").inc(len(children))
        self.bound.clear()
        for queue in self.warm.values():
            queue.clear()
