"""One stdio MCP server process and the JSON-RPC traffic in flight with it (``--spawn``).

The gateway writes newline-delimited JSON-RPC to the child's stdin and reads its stdout
(spec §3). Each request goes out under an id of the gateway's own (clients of different
sessions may reuse ids; the original is restored on the way back); whatever the child writes
for a request — progress, log messages, server-to-client requests, then the response — lands
on that request's queue. stdio carries no request association, so a child's notification or
request is given to the open request it names (a listen stream's subscription id, a progress
token), else to the oldest one (:meth:`ChildProcess._target_for`).

The child leads its own process group; stopping it closes its stdin, then signals the group
(SIGTERM, then SIGKILL). An exit fails every request in flight with :class:`ProcessExited`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ...core.ids import new_session_id
from ...core.names import (
    META_CLIENT_CAPABILITIES,
    META_CLIENT_INFO,
    META_PROTOCOL_VERSION,
    META_SESSION_ID,
    META_SUBSCRIPTION_ID,
    PROTOCOL_2026_07_28,
)
from ..config import SpawnSettings
from ..errors import ParseError

logger = logging.getLogger("mcp_sessions.gateway")

#: The protocol era a process serves: a stdio server fixes it with its first message.
Era = Literal["modern", "legacy", "any"]
SessionKey = tuple[str, str]  # (principal key, session key)

_STDERR_LINES = 20
_STOP_GRACE = 2.0
_CLIENT_INFO = {"name": "mcp-sessions-gateway", "version": "1"}
#: A tool name no server has: calling it warms the request path with no side effect.
_NO_SUCH_TOOL = "mcp-sessions-gateway-warmup-no-such-tool"


class ProcessExited(Exception):
    """The child exited (or was stopped) while a request waited for it."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


@dataclass(slots=True)
class Pending:
    original_id: Any
    progress_token: Any
    queue: asyncio.Queue[dict[str, Any] | ProcessExited] = field(default_factory=asyncio.Queue)


class ChildProcess:
    """One stdio MCP server process and the JSON-RPC traffic in flight with it."""

    def __init__(self, process: asyncio.subprocess.Process, era: Era) -> None:
        self.process = process
        self.pid = process.pid
        self.era: Era = era
        self.key: SessionKey | None = None
        #: Whose per-principal process quota this process counts against (once bound).
        self.quota: str | None = None
        self.last_active = time.monotonic()
        self.exit_description: str | None = None
        self.stopping: str | None = None  # the reason, once the gateway stops it
        self._pending: dict[int, Pending] = {}
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
        phase = "exited" if not self.alive else "bound" if self.key is not None else "unbound"
        return f"<ChildProcess pid={self.pid} {phase} era={self.era}>"

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

    async def request(self, message: dict[str, Any]) -> tuple[int, Pending]:
        """Send a request under a gateway id; its messages arrive on the returned queue."""
        gateway_id = next(self._ids)
        params = message.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        pending = Pending(message.get("id"), token)
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

    def _target_for(self, message: dict[str, Any]) -> Pending | None:
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
            META_CLIENT_CAPABILITIES: {},
            META_CLIENT_INFO: _CLIENT_INFO,
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


def _subscription_id(message: dict[str, Any]) -> object:
    """``params._meta[META_SUBSCRIPTION_ID]`` (a listen stream's request id), or ``None``."""
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    return meta.get(META_SUBSCRIPTION_ID) if isinstance(meta, dict) else None


def _with_subscription_id(message: dict[str, Any], original_id: Any) -> dict[str, Any]:
    """``message`` as the client must see it: a listen-stream notification carries the id
    of the client's listen request, which clients demultiplex by (spec: subscriptions), not
    the gateway's own id that the child saw."""
    if _subscription_id(message) is None:
        return message
    return with_meta(message, {META_SUBSCRIPTION_ID: original_id})


def with_meta(message: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``message`` with ``extra`` added to its ``params._meta`` (a copy; the rest is shared)."""
    params = message.get("params")
    params = params if isinstance(params, dict) else {}
    meta = params.get("_meta")
    meta = meta if isinstance(meta, dict) else {}
    return {**message, "params": {**params, "_meta": {**meta, **extra}}}
