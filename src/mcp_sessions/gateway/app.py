"""The gateway as an ASGI application: its own endpoints, the limits, then a backend.

* ``GET /healthz`` — 200 while requests can be served (a healthy upstream, or room for a
  process), else 503; the body says which upstream or process pool is in what state;
* ``GET /metrics`` — Prometheus text (:mod:`.metrics`);
* ``GET /status`` — upstreams, pins, the process pool and recent errors, as HTML or JSON
  (:mod:`.status`, issue #13);
* everything else goes to the backend (HTTP upstreams or spawned processes), after two
  limits: a header section over ``max_header_bytes`` gets 431 (RFC 6585 §5), a body over
  ``max_body_bytes`` gets 413 (RFC 9110 §15.5.14) — from ``Content-Length`` before a byte
  of the body is read, else as soon as the bytes read pass the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any, Protocol

from ..asgi import Receive, Scope, Send, send_bytes, send_error
from ..core.errors import BodyTooLarge, InvalidRequest
from ..stores import Store, open_store
from .asgi import Incoming
from .config import GatewayConfig
from .metrics import GatewayMetrics
from .status import StatusPage

logger = logging.getLogger("mcp_sessions.gateway")

#: Seconds between two sweeps of expired pins.
SWEEP_INTERVAL = 30.0


class Backend(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def health(self) -> tuple[bool, dict[str, Any]]: ...

    async def handle(self, request: Incoming, send: Send) -> int:
        """Answer ``request``; returns the HTTP status sent."""
        ...


class Gateway:
    """``mcp-sessions gateway`` as an ASGI app (run it on uvicorn: :func:`.cli.serve`)."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        store: Store | None = None,
        sweep_interval: float = SWEEP_INTERVAL,
    ) -> None:
        self.config = config
        self.sweep_interval = sweep_interval
        self.metrics = GatewayMetrics()
        self.store = store if store is not None else open_store(config.store_url)
        self.backend: Backend
        if config.spawn is not None:
            from .spawn import SpawnBackend

            self.backend = SpawnBackend(config, self.metrics)
        else:
            from .proxy import HTTPBackend

            self.backend = HTTPBackend(config, self.store, self.metrics)
        self._counters: dict[tuple[str, int], Any] = {}
        self.status = StatusPage(self)
        self._sweeper: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def startup(self) -> None:
        self.status.errors.attach(logger)
        await self.store.__aenter__()  # an unusable store fails here, not at the first pin
        await self.backend.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def shutdown(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        try:
            await self.backend.stop()
        finally:
            self.status.errors.detach(logger)
            await self.store.close()

    async def _sweep_forever(self) -> None:
        """Remove expired pins now and then (the store's cost grows with what expired)."""
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                await self.store.sweep(limit=10_000)
            except Exception:  # a store hiccup must not end the sweeping
                logger.warning("sweeping expired pins failed", exc_info=True)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    logger.exception("gateway start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                with contextlib.suppress(Exception):
                    await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- requests ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            from .websocket import serve_websocket  # issue #16

            await serve_websocket(self.backend, scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request = Incoming.from_scope(scope, receive)
        config = self.config
        if request.method == "GET" and request.path == "/healthz":
            ok, details = self.backend.health()
            body = json.dumps({"status": "ok" if ok else "unavailable", **details}).encode()
            await send_bytes(send, 200 if ok else 503, body)
            return
        if request.method == "GET" and request.path == "/metrics":
            payload = self.metrics.render()
            await send_bytes(send, 200, payload, self.metrics.content_type.encode())
            return
        if request.method == "GET" and request.path == "/status":
            await self.status.serve(request, send)
            return
        if request.header_bytes > config.max_header_bytes:
            refusal = InvalidRequest(
                f"request header fields total {request.header_bytes} bytes, over the "
                f"gateway's limit of {config.max_header_bytes}; send ids in headers and "
                "state in the body"
            )
            status = await send_error(send, refusal, status=431)
        elif request.content_length is not None and request.content_length < 0:
            status = await send_error(send, InvalidRequest("invalid Content-Length"))
        elif request.content_length is not None and request.content_length > config.max_body_bytes:
            refusal = InvalidRequest(
                f"request body of {request.content_length} bytes is over the "
                f"gateway's limit of {config.max_body_bytes}"
            )
            status = await send_error(send, refusal, status=BodyTooLarge.http_status)
        else:
            status = await self.backend.handle(request, send)
        metrics = self.metrics
        counter = self._counters.get((request.method, status))
        if counter is None:
            counter = metrics.requests.labels(request.method, str(status))
            self._counters[(request.method, status)] = counter
        counter.inc()
        metrics.duration.observe(time.perf_counter() - started)
