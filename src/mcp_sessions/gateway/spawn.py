"""The spawn backend: one stdio MCP server process per session (``--spawn CMD``).

HTTP-to-stdio gateways lost their routing key in 2026-07-28 (spec-digest §4.11: "HTTP-to-stdio
gateways with one process per session"); a client-generated id gives it back from the first
request. The gateway speaks Streamable HTTP to clients and newline-delimited JSON-RPC to each
child (spec §3):

* a POSTed request is written to the child's stdin under an id of the gateway's own (clients
  of different sessions may reuse ids; the original is restored on the way back); its
  response comes back as ``application/json`` — or, as soon as the child sends something for
  that request first (a progress notification, a log message, a server-to-client request),
  as an SSE stream that carries each message the moment the child writes it;
* a POSTed notification or response is written through and answered 202;
* ``DELETE`` stops the session's process; ``GET`` (a standalone stream) is not offered (405).

Processes (issue #7):

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
* **crashes** — a process that exits on its own fails its requests in flight (502, -31010),
  and every later request of its session gets "session lost" (404, -31001) until the
  session's idle timeout: it is never silently replaced by a fresh process under a live
  session.

Legacy clients: ``initialize`` gets a new process and an ``Mcp-Session-Id`` minted by the
gateway (128 random bits) on its response; later requests follow that id.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..core.errors import LimitExceeded, SessionError, SessionNotFound
from ..core.ids import new_session_id
from ..core.names import (
    HEADER_LEGACY_SESSION_ID,
    META_PROTOCOL_VERSION,
    META_SESSION_ID,
    META_SHARED_CONNECTION,
    MODERN_PROTOCOL_VERSIONS,
    PROTOCOL_2026_07_28,
)
from . import routing
from .asgi import (
    LEGACY_SESSION_FIELD,
    LEGACY_SESSION_FIELD_BYTES,
    BodyTooLarge,
    Incoming,
    Send,
    end_stream,
    send_bytes,
    send_error,
    send_plain_error,
    sse_event,
    wait_disconnect,
)
from .config import GatewayConfig, SpawnSettings
from .errors import GatewayAtCapacity, ParseError, UpstreamFailed, session_lost
from .metrics import GatewayMetrics
from .trust import TrustPolicy, refuse

logger = logging.getLogger("mcp_sessions.gateway")

Era = Literal["modern", "legacy", "any"]
SessionKey = tuple[str, str]  # (principal key, session key)

_STDERR_LINES = 20
_STOP_GRACE = 2.0
_CLIENT_INFO = {"name": "mcp-sessions-gateway", "version": "1"}
#: A tool name no server has: calling it warms the request path with no side effect.
_NO_SUCH_TOOL = "mcp-sessions-gateway-warmup-no-such-tool"
#: Tags every notification of a 2026-07-28 listen stream with its listen request's id.
_SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
#: The session key of 2026-07-28 requests that carry none: one process per principal.
_KEYLESS = "keyless"


class ProcessExited(Exception):
    """The child exited (or was stopped) while a request waited for it."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


@dataclass(slots=True)
class _Pending:
    original_id: Any
    progress_token: Any
    queue: asyncio.Queue[dict[str, Any] | ProcessExited] = field(default_factory=asyncio.Queue)


class ChildProcess:
    """One stdio MCP server process and the JSON-RPC traffic in flight with it."""

    def __init__(self, process: asyncio.subprocess.Process, era: Era) -> None:
        self.process = process
        self.pid = process.pid
        self.era: Era = era
        self.state = "starting"  # starting -> warm -> bound -> exited
        self.key: SessionKey | None = None
        #: Whose per-principal process quota this process counts against (once bound).
        self.quota: str | None = None
        self.last_active = time.monotonic()
        self.exit_description: str | None = None
        self.stopping: str | None = None  # the reason, once the gateway stops it
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._stderr: deque[str] = deque(maxlen=_STDERR_LINES)
        self._tasks: list[asyncio.Task[None]] = []
        self.exited = asyncio.Event()
        self.on_exit: Callable[[ChildProcess], None] | None = None

    @classmethod
    async def start(cls, settings: SpawnSettings, era: Era) -> ChildProcess:
        process = await asyncio.create_subprocess_exec(
            *settings.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=settings.max_message_bytes,
            # Its own process group, so that stopping it also stops what it started.
            start_new_session=True,
        )
        child = cls(process, era)
        loop = asyncio.get_running_loop()
        child._tasks = [
            loop.create_task(child._read_stdout()),
            loop.create_task(child._read_stderr()),
        ]
        return child

    def __repr__(self) -> str:
        return f"<ChildProcess pid={self.pid} {self.state} era={self.era}>"

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    @property
    def alive(self) -> bool:
        return not self.exited.is_set()

    # -- writing -------------------------------------------------------------------------------

    async def write(self, message: dict[str, Any]) -> None:
        stdin = self.process.stdin
        if stdin is None or not self.alive or stdin.is_closing():
            raise ProcessExited(self.exit_description or "the process is not running")
        try:
            line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        except (RecursionError, ValueError):
            # Decoded, but too deep to encode again here: the client's input, refused whole.
            raise ParseError() from None
        self.last_active = time.monotonic()
        stdin.write(line)
        try:
            await stdin.drain()
        except (ConnectionError, OSError):
            raise ProcessExited(
                self.exit_description or "the process closed its standard input"
            ) from None

    async def request(self, message: dict[str, Any]) -> tuple[int, _Pending]:
        """Send a request under a gateway id; its messages arrive on the returned queue."""
        gateway_id = next(self._ids)
        params = message.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        pending = _Pending(message.get("id"), token)
        self._pending[gateway_id] = pending
        try:
            await self.write({**message, "id": gateway_id})
        except BaseException:
            self._pending.pop(gateway_id, None)
            raise
        return gateway_id, pending

    def forget(self, gateway_id: int) -> None:
        self._pending.pop(gateway_id, None)

    async def cancel(self, gateway_id: int, reason: str) -> None:
        """Tell the child a request is abandoned (``notifications/cancelled``)."""
        if self._pending.pop(gateway_id, None) is not None:
            with contextlib.suppress(ProcessExited):
                await self.write(
                    {
                        "jsonrpc": "2.0",
                        "method": "notifications/cancelled",
                        "params": {"requestId": gateway_id, "reason": reason},
                    }
                )

    # -- reading -------------------------------------------------------------------------------

    async def _read_stdout(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        reason: str | None = None
        try:
            while True:
                try:
                    line = await stdout.readline()
                except ValueError:  # asyncio's "line too long"
                    reason = "wrote a message over the --spawn message size limit"
                    break
                if not line:
                    break
                self.last_active = time.monotonic()
                try:
                    message = json.loads(line)
                except (ValueError, UnicodeDecodeError, RecursionError):
                    logger.debug("pid %s wrote a non-JSON line to stdout: %.200r", self.pid, line)
                    continue
                if isinstance(message, dict):
                    await self._dispatch(message)
        except (ConnectionError, OSError):
            pass
        finally:
            await self._exit(reason)

    async def _dispatch(self, message: dict[str, Any]) -> None:
        if "method" not in message:
            # A response: to one of our requests (the probe included), by gateway id.
            message_id = message.get("id")
            pending = self._pending.pop(message_id, None) if isinstance(message_id, int) else None
            if pending is not None:
                pending.queue.put_nowait({**message, "id": pending.original_id})
            return
        target = self._target_for(message)
        if target is not None:
            target.queue.put_nowait(_with_subscription_id(message, target.original_id))
        elif "id" in message:
            # A server-to-client request with no client stream open to carry it.
            with contextlib.suppress(ProcessExited):
                await self.write(
                    {
                        "jsonrpc": "2.0",
                        "id": message["id"],
                        "error": {
                            "code": -32603,
                            "message": "no client request is open to carry this request",
                        },
                    }
                )
        else:
            logger.debug("pid %s: dropped %s (no request open)", self.pid, message.get("method"))

    def _target_for(self, message: dict[str, Any]) -> _Pending | None:
        """Which open request a child's notification or request belongs to.

        stdio carries no request association, so: a progress notification goes to the
        request that set its ``progressToken``; anything else to the oldest open request.
        """
        subscription = _subscription_id(message)
        if subscription is not None:
            # A listen stream's notification names its listen request by the id the child
            # saw, the gateway's (2026-07-28 subscriptions/listen): that request, or none.
            return self._pending.get(subscription) if isinstance(subscription, int) else None
        if message.get("method") == "notifications/progress":
            params = message.get("params")
            token = params.get("progressToken") if isinstance(params, dict) else None
            for pending in self._pending.values():
                if pending.progress_token is not None and pending.progress_token == token:
                    return pending
        for pending in self._pending.values():
            if pending.original_id is not None:
                return pending
        return None

    async def _read_stderr(self) -> None:
        stderr = self.process.stderr
        assert stderr is not None
        with contextlib.suppress(ConnectionError, OSError, ValueError):
            while True:
                line = await stderr.readline()
                if not line:
                    return
                text = line.decode("utf-8", "replace").rstrip()[:500]
                self._stderr.append(text)
                logger.debug("pid %s stderr: %s", self.pid, text)

    async def _exit(self, reason: str | None) -> None:
        if reason is not None:
            self._signal(signal.SIGKILL)
        try:
            code = await asyncio.wait_for(self.process.wait(), _STOP_GRACE * 2)
        except TimeoutError:
            self._signal(signal.SIGKILL)
            code = await self.process.wait()
        if self.exit_description is None:
            description = reason or f"exited with code {code}"
            if code is not None and code < 0:
                with contextlib.suppress(ValueError):
                    description = f"was killed by {signal.Signals(-code).name}"
            tail = " | ".join(line for line in list(self._stderr)[-3:] if line)
            if tail and self.stopping is None:
                description += f"; its last words on stderr: {tail[:300]}"
            self.exit_description = f"the session's server process (pid {self.pid}) {description}"
        self.exited.set()
        failure = ProcessExited(self.exit_description)
        for pending in self._pending.values():
            pending.queue.put_nowait(failure)
        self._pending.clear()
        if self.on_exit is not None:
            self.on_exit(self)

    # -- stopping ------------------------------------------------------------------------------

    def _signal(self, signum: int) -> None:
        # The child leads its own process group (start_new_session): its pid is the group id.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    async def stop(self, reason: str) -> None:
        """Stop the process: close its stdin (the stdio way, spec §3), then SIGTERM, then
        SIGKILL, each after a grace period."""
        if self.stopping is None:
            self.stopping = reason
            self.exit_description = f"the session's server process (pid {self.pid}) was {reason}"
        stdin = self.process.stdin
        if stdin is not None:
            with contextlib.suppress(Exception):
                stdin.close()
        for signum in (None, signal.SIGTERM, signal.SIGKILL):
            if signum is not None:
                self._signal(signum)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.exited.wait(), _STOP_GRACE)
                break
        for task in self._tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- readiness -----------------------------------------------------------------------------

    async def probe(self, within: float, warmup: tuple[dict[str, Any], ...] = ()) -> None:
        """Make a 2026-07-28 child ready, and warm.

        ``server/discover`` proves it reads and answers; ``tools/list`` and a ``tools/call`` of
        a tool that does not exist run the request path once more (a Python server's first
        request pays for lazy imports and first-time code paths, several times a later one's
        cost); then the operator's ``--spawn-warmup`` requests, which may call a real tool.
        Every one of them is session-free by the 2026-07-28 rules, or chosen by the operator.
        Any answer counts (an error included: the child is up and reading); no answer within
        ``within`` seconds, or an exit, raises :class:`ProcessExited`.
        """
        envelope = {
            META_PROTOCOL_VERSION: PROTOCOL_2026_07_28,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": _CLIENT_INFO,
        }
        requests: list[tuple[str, dict[str, Any]]] = [
            ("server/discover", {}),
            ("tools/list", {}),
            # With a fresh session id in _meta: a server of the dev.mcpsessions extension
            # resolves its carrier (sessions load lazily, so none is created); others ignore
            # an unknown _meta key (spec §5.0 item 5).
            (
                "tools/call",
                {
                    "name": _NO_SUCH_TOOL,
                    "arguments": {},
                    "_meta": {META_SESSION_ID: "gateway-warmup-" + new_session_id()},
                },
            ),
        ]
        for extra in warmup:
            requests.append((str(extra.get("method")), dict(extra.get("params") or {})))
        deadline = time.monotonic() + within
        for method, params in requests:
            meta = {**envelope, **params.get("_meta", {})}
            gateway_id, pending = await self.request(
                {
                    "jsonrpc": "2.0",
                    "id": None,
                    "method": method,
                    "params": {**params, "_meta": meta},
                }
            )
            while True:
                remaining = deadline - time.monotonic()
                try:
                    item = await asyncio.wait_for(pending.queue.get(), max(remaining, 0.001))
                except TimeoutError:
                    self.forget(gateway_id)
                    raise ProcessExited(
                        f"the process (pid {self.pid}) did not answer {method} within {within:g} s"
                    ) from None
                if isinstance(item, ProcessExited):
                    raise item
                if "method" not in item:
                    break


@dataclass(slots=True)
class _Tombstone:
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
        self.tombstones: dict[SessionKey, _Tombstone] = {}
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
            child.state = "warm"
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

    def lookup(self, key: SessionKey) -> ChildProcess | _Tombstone | None:
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
        child.state = "bound"
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
                self.tombstones[child.key] = _Tombstone(
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


def _subscription_id(message: dict[str, Any]) -> object:
    """``params._meta["io.modelcontextprotocol/subscriptionId"]``, or ``None``."""
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    return meta.get(_SUBSCRIPTION_ID) if isinstance(meta, dict) else None


def _with_subscription_id(message: dict[str, Any], original_id: Any) -> dict[str, Any]:
    """``message`` as the client must see it: a listen-stream notification carries the id
    of the client's listen request, which clients demultiplex by (spec: subscriptions), not
    the gateway's own id that the child saw."""
    if _subscription_id(message) is None:
        return message
    return _with_meta(message, {_SUBSCRIPTION_ID: original_id})


def _with_meta(message: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``message`` with ``extra`` added to its ``params._meta`` (a copy; the rest is shared)."""
    params = message.get("params")
    params = params if isinstance(params, dict) else {}
    meta = params.get("_meta")
    meta = meta if isinstance(meta, dict) else {}
    return {**message, "params": {**params, "_meta": {**meta, **extra}}}


class SpawnBackend:
    """Serves clients from per-session processes (module docstring)."""

    def __init__(self, config: GatewayConfig, metrics: GatewayMetrics) -> None:
        assert config.spawn is not None
        self.config = config
        self.settings = config.spawn
        self.metrics = metrics
        self.pool = ProcessPool(config.spawn, metrics)
        # The gateway is a stdio process's only guard: principals are verified or digests of
        # the whole credential, never unverified claims (see .trust, issue #12).
        self.trust = TrustPolicy(config.auth, trust_forwarded=config.trust_forwarded)
        metrics.on_scrape(self._refresh_gauges)

    async def start(self) -> None:
        self.pool.start()

    async def stop(self) -> None:
        await self.pool.stop()

    def health(self) -> tuple[bool, dict[str, Any]]:
        counts = self.pool.counts()
        return True, {
            "mode": "spawn",
            "processes": {**counts, "max": self.settings.max_processes},
            "atCapacity": self.pool.total >= self.settings.max_processes and counts["warm"] == 0,
        }

    def _refresh_gauges(self) -> None:
        counts = self.pool.counts()
        for state, value in counts.items():
            self.metrics.processes.labels(state).set(value)
        self.metrics.set_per_upstream(self.metrics.sessions, [("spawn", float(counts["bound"]))])

    # -- requests ------------------------------------------------------------------------------

    async def handle(self, request: Incoming, send: Send) -> int:
        if request.method == "DELETE":
            return await self._delete(request, send)
        if request.method != "POST":
            await send_bytes(
                send,
                405,
                b'{"error": "the gateway offers no standalone GET stream in --spawn mode"}',
                extra_headers=[(b"allow", b"POST, DELETE")],
            )
            return 405
        try:
            await request.read_body(self.config.max_body_bytes)
        except BodyTooLarge:
            return await send_plain_error(
                send, 413, f"request body over {self.config.max_body_bytes} bytes"
            )
        message = request.parse()
        if request.unparsable:
            return await send_error(send, ParseError())
        if not isinstance(message, dict):
            error = {
                "code": -32600,
                "message": "Invalid request: send one JSON-RPC message per POST",
            }
            body = json.dumps({"jsonrpc": "2.0", "id": None, "error": error}).encode()
            await send_bytes(send, 400, body)
            return 400
        principal = await self.trust.principal(request)
        if not isinstance(principal, str):
            return await refuse(send, principal, request.rpc_id)
        quota = self.trust.quota_key(principal, request)
        method = request.rpc_method
        modern = request.protocol_version in MODERN_PROTOCOL_VERSIONS
        minted: str | None = None
        try:
            if method == "initialize" and not modern:
                minted = new_session_id()
                key: SessionKey = (principal, "legacy:" + minted)
                self.metrics.routing.labels("legacy").inc()
                child = await self.pool.bind(key, "legacy", quota)
            else:
                found = await self._session_process(request, principal, quota, modern)
                if isinstance(found, int):
                    return found if found else await self._reject_legacy(request, send)
                child, key = found
        except GatewayAtCapacity as error:
            retry = [(b"retry-after", b"1")]
            return await send_error(send, error, request.rpc_id, extra_headers=retry)
        except LimitExceeded as error:
            retry = [(b"retry-after", str(math.ceil(error.retry_after or 1)).encode())]
            return await send_error(send, error, request.rpc_id, extra_headers=retry)
        except SessionError as error:
            return await send_error(send, error, request.rpc_id)
        except (ProcessExited, OSError) as exc:
            failure = UpstreamFailed(f"No server process could be started: {exc}")
            return await send_error(send, failure, request.rpc_id)
        if "method" in message and "id" in message:
            shared = key[1] == _KEYLESS
            return await self._relay_request(child, request, send, minted, shared=shared)
        try:
            await child.write(message)
        except ProcessExited as exc:
            return await send_error(send, UpstreamFailed(exc.description), request.rpc_id)
        except ParseError as error:
            return await send_error(send, error, request.rpc_id)
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return 202

    async def _session_process(
        self, request: Incoming, principal: str, quota: str, modern: bool
    ) -> tuple[ChildProcess, SessionKey] | int:
        """The process of the request's session (binding one for a new session), or ``0``
        when a legacy request carries no session id."""
        legacy_id = None if modern else request.headers.get(LEGACY_SESSION_FIELD)
        if legacy_id is not None:
            # The gateway minted it: its own table is the authority, before any other carrier.
            key: SessionKey = (principal, "legacy:" + legacy_id.strip())
            self.metrics.routing.labels("legacy").inc()
            found = self.pool.lookup(key)
            if isinstance(found, ChildProcess):
                return found, key
            if isinstance(found, _Tombstone):
                raise session_lost(found.description)
            raise SessionNotFound()
        route = routing.route_for(
            method=request.rpc_method or "POST",
            meta=request.meta,
            headers=request.headers,
            protocol_version=request.protocol_version,
            policy=self.config.routing,
        )
        if route.key is None and not modern:
            return 0  # a legacy request without Mcp-Session-Id
        self.metrics.routing.labels(route.decision).inc()
        # Keyless 2026-07-28 requests (lists, discovery) share one process per principal.
        session_key = route.key if route.key is not None else _KEYLESS
        key = (principal, session_key)
        found = self.pool.lookup(key)
        if isinstance(found, ChildProcess):
            return found, key
        if isinstance(found, _Tombstone):
            raise session_lost(found.description)
        child = await self.pool.bind(key, "modern" if modern else "legacy", quota)
        return child, key

    async def _reject_legacy(self, request: Incoming, send: Send) -> int:
        body = {
            "jsonrpc": "2.0",
            "id": request.rpc_id,
            "error": {
                "code": -32600,
                "message": f"Bad Request: missing {HEADER_LEGACY_SESSION_ID} header; send the "
                "id from the initialize response on every later request",
            },
        }
        await send_bytes(send, 400, json.dumps(body).encode())
        return 400

    async def _relay_request(
        self,
        child: ChildProcess,
        request: Incoming,
        send: Send,
        minted: str | None,
        *,
        shared: bool = False,
    ) -> int:
        message = request.rpc
        if shared:
            # Many callers' keyless requests share this process's one stdio connection, so the
            # connection is not one client: tell an mcp-sessions server not to make it a
            # session (carrier 5), or every keyless caller would share one state (issue #11).
            # Other servers ignore an unknown _meta key (spec §5.0 item 5).
            message = _with_meta(message, {META_SHARED_CONNECTION: True})
        request_id = message.get("id")
        try:
            gateway_id, pending = await child.request(message)
        except ProcessExited as exc:
            return await send_error(send, UpstreamFailed(exc.description), request_id)
        except ParseError as error:
            return await send_error(send, error, request_id)
        session_header = [(LEGACY_SESSION_FIELD_BYTES, minted.encode())] if minted else []
        timeout = self.config.upstream_timeout
        stream_started = False
        sse = request.accepts_sse()
        watcher = asyncio.ensure_future(wait_disconnect(request))
        try:
            while True:
                getter = asyncio.ensure_future(pending.queue.get())
                done, _ = await asyncio.wait(
                    {getter, watcher}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    reason = "client disconnected" if watcher in done else "gateway timeout"
                    await child.cancel(gateway_id, reason)
                    if watcher in done:
                        return 499  # nobody to answer: the client is gone
                    failure = UpstreamFailed(
                        f"The server process sent no response within {timeout:g} s "
                        "(--upstream-timeout); the request was cancelled."
                    )
                    if stream_started:
                        await end_stream(send, failure, request_id)
                        return 200
                    return await send_error(send, failure, request_id, status=504)
                item = getter.result()
                if isinstance(item, ProcessExited):
                    failure = UpstreamFailed(
                        f"{item.description}, while handling this request; the request may "
                        "or may not have been applied, and the session is lost."
                    )
                    if stream_started:
                        await end_stream(send, failure, request_id)
                        return 200
                    return await send_error(send, failure, request_id)
                final = "method" not in item
                if final and not stream_started:
                    body = json.dumps(item).encode()
                    await send_bytes(send, 200, body, extra_headers=session_header)
                    return 200
                if not final and not sse:
                    continue  # the client takes JSON only: it gets the response alone
                if not stream_started:
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [
                                (b"content-type", b"text/event-stream"),
                                (b"cache-control", b"no-cache, no-transform"),
                                (b"x-accel-buffering", b"no"),
                                *session_header,
                            ],
                        }
                    )
                    stream_started = True
                event = sse_event(item)
                await send({"type": "http.response.body", "body": event, "more_body": True})
                if final:
                    await send({"type": "http.response.body", "body": b""})
                    return 200
        finally:
            watcher.cancel()
            child.forget(gateway_id)

    async def _delete(self, request: Incoming, send: Send) -> int:
        principal = await self.trust.principal(request)
        if not isinstance(principal, str):
            return await refuse(send, principal)
        legacy_id = request.headers.get(LEGACY_SESSION_FIELD)
        client_id = routing.route_from_headers(request.headers)
        keys = []
        if legacy_id:
            keys.append((principal, "legacy:" + legacy_id.strip()))
        if client_id is not None and client_id.key is not None:
            keys.append((principal, client_id.key))
        for key in keys:
            if await self.pool.release(key, "ended by DELETE"):
                await send({"type": "http.response.start", "status": 204, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return 204
            self.pool.tombstones.pop(key, None)
        return await send_error(send, SessionNotFound())
