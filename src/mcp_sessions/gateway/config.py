"""Everything ``mcp-sessions gateway`` can be told, in one immutable object."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from .routing import RoutingPolicy
from .trust import AuthSettings
from .upstreams import HealthSettings

Failover = Literal["error", "move"]
SpawnProbe = Literal["discover", "none"]


@dataclass(frozen=True, slots=True)
class SpawnSettings:
    """``--spawn``: one stdio server process per session."""

    command: tuple[str, ...]
    #: Pre-started processes waiting for a new session (2026-07-28 clients).
    warm: int = 2
    #: Pre-started processes for legacy ``initialize`` clients; see :mod:`.spawn` on why
    #: they are a pool of their own.
    warm_legacy: int = 1
    #: Most processes alive at once (warm, starting and serving together).
    max_processes: int = 32
    #: A process whose session sent nothing for this long is stopped.
    idle_timeout: float = 600.0
    #: How long a process may take to start (and answer the probe).
    startup_timeout: float = 30.0
    #: ``discover``: a warm process must answer ``server/discover`` (and ``tools/list``)
    #: before it joins the pool; ``none``: started is enough.
    probe: SpawnProbe = "discover"
    #: Longest JSON-RPC message accepted from a process's stdout.
    max_message_bytes: int = 16 * 1024 * 1024
    #: ``--spawn-warmup``: JSON-RPC requests (``{"method": ..., "params": ...}``, as JSON text)
    #: sent to each warm process after the probe. ``{random}`` in the text becomes a fresh
    #: random id per process (for a throwaway session id).
    warmup: tuple[str, ...] = ()
    #: ``--max-processes-per-principal``: most sessions (processes) one caller may hold, so
    #: that one caller cannot take the pool (issue #12); ``None``: half of ``max_processes``.
    max_processes_per_principal: int | None = None

    @property
    def per_principal_cap(self) -> int:
        if self.max_processes_per_principal is not None:
            return self.max_processes_per_principal
        return max(1, self.max_processes // 2)

    def warmup_requests(self) -> tuple[dict[str, Any], ...]:
        out = []
        for text in self.warmup:
            request = json.loads(text.replace("{random}", secrets.token_hex(16)))
            out.append(request)
        return tuple(out)

    def __post_init__(self) -> None:
        if not self.command:
            raise ValueError("--spawn needs a command, e.g. --spawn 'mcp-sessions demo --stdio'")
        if self.warm < 0 or self.warm_legacy < 0:
            raise ValueError("--warm and --warm-legacy must be 0 or more")
        if self.max_processes < 1:
            raise ValueError("--max-processes must be at least 1")
        if self.warm + self.warm_legacy > self.max_processes:
            raise ValueError(
                f"--warm ({self.warm}) plus --warm-legacy ({self.warm_legacy}) exceed "
                f"--max-processes ({self.max_processes})"
            )
        if not self.idle_timeout > 0:
            raise ValueError("--idle-timeout must be positive")
        if self.max_processes_per_principal is not None and self.max_processes_per_principal < 1:
            raise ValueError("--max-processes-per-principal must be at least 1")
        for text in self.warmup:
            try:
                request = json.loads(text.replace("{random}", "0" * 32))
            except ValueError as exc:
                raise ValueError(f"--spawn-warmup {text!r} is not JSON: {exc}") from None
            if (
                not isinstance(request, dict)
                or not isinstance(request.get("method"), str)
                or not isinstance(request.get("params", {}), dict)
            ):
                raise ValueError(
                    f"--spawn-warmup {text!r}: give a JSON object with a 'method' string and "
                    "optional 'params' object"
                )


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    #: ``--upstream`` URLs (HTTP mode); empty when ``spawn`` is set.
    upstreams: tuple[str, ...] = ()
    spawn: SpawnSettings | None = None
    #: Where pins live: ``memory://`` for one gateway, ``redis://`` shared by several.
    store_url: str = "memory://"
    #: The gateway's MCP endpoint; requests to it go to each upstream's own path.
    path: str = "/mcp"
    routing: RoutingPolicy = field(default_factory=RoutingPolicy)
    #: When a session's upstream is down: ``error`` (the session is told it is lost) or
    #: ``move`` (re-pin it to the next upstream: for upstreams sharing one session store).
    failover: Failover = "error"
    #: Idle lifetime of a pin, and the window of the live-sessions metric.
    session_idle: float = 3600.0
    max_body_bytes: int = 4 * 1024 * 1024
    max_header_bytes: int = 16 * 1024
    connect_timeout: float = 3.0
    #: Longest wait for an upstream's response head, and between two chunks of its body.
    upstream_timeout: float = 300.0
    health: HealthSettings = field(default_factory=HealthSettings)
    #: ``--jwks`` / ``--jwt-secret-file``: verify bearer tokens (see :mod:`.trust`).
    auth: AuthSettings | None = None
    #: ``--trust-forwarded``: keep a client's X-Forwarded-* (a trusted proxy sets them).
    trust_forwarded: bool = False

    def __post_init__(self) -> None:
        if bool(self.upstreams) == (self.spawn is not None):
            raise ValueError("give either --upstream URL (one or more) or --spawn CMD")
        if not self.path.startswith("/"):
            raise ValueError(f"--path must start with '/', got {self.path!r}")
        if self.path in ("/healthz", "/metrics"):
            raise ValueError(f"--path {self.path} is the gateway's own endpoint")
        if self.max_body_bytes < 1 or self.max_header_bytes < 1024:
            raise ValueError("--max-body-bytes must be positive and --max-header-bytes >= 1024")
        if not self.session_idle > 0:
            raise ValueError("--session-idle must be positive")
