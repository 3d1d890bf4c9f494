"""FastMCP's Streamable HTTP app with legacy sessions served from the store (DESIGN §5).

The same :class:`~mcp_sessions.server.http.LegacyGate` as the ``MCPServer`` integration goes
in front of FastMCP's endpoint, inside its bearer-token check, so a missing token still gets
401 before any session rule applies. The stateful side is FastMCP's own session manager; the
stateless side, which serves a legacy session on a replica that does not hold its
connection, is an SDK manager over the same low-level server.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.routing import Route

from ..server.http import LegacyGate

if TYPE_CHECKING:
    from fastmcp import FastMCP
    from starlette.applications import Starlette

    from ..server.engine import SessionEngine


def gate_http_apps(engine: SessionEngine, mcp: FastMCP[Any]) -> None:
    """Make every Streamable HTTP app ``mcp`` builds (``mcp.run(transport="http")``,
    ``mcp.http_app()``) serve legacy sessions from the store.

    FastMCP builds its app inside ``run`` and offers no hook for the endpoint or its session
    manager (the multi-replica gap of PrefectHQ/fastmcp#482), so the instance's ``http_app``
    is wrapped; an SSE app (``transport="sse"``) is left as it is.
    """
    build: Callable[..., Starlette] = mcp.http_app

    @functools.wraps(build)
    def http_app(*args: Any, **options: Any) -> Starlette:
        if options.get("stateless_http"):
            raise ValueError(
                "stateless_http is managed by mcp-sessions: legacy sessions are served from "
                "the store, statefully where possible; leave it unset"
            )
        app = build(*args, **options)
        if getattr(app.state, "transport_type", None) != "streamable-http":
            return app
        return _gated(engine, mcp, app, options.get("json_response"))

    mcp.http_app = http_app  # type: ignore[method-assign,assignment]


def _gated(
    engine: SessionEngine, mcp: FastMCP[Any], app: Starlette, json_response: bool | None
) -> Starlette:
    path = app.state.path
    holder = _endpoint_holder(app, path)
    if holder is None:
        raise RuntimeError(
            f"could not find the MCP endpoint {path!r} in FastMCP's app; this fastmcp version "
            "is not supported by mcp-sessions' HTTP adapter"
        )
    stateless = StreamableHTTPSessionManager(
        app=mcp._mcp_server,
        json_response=bool(json_response),
        stateless=True,
        # FastMCP guards Host and Origin itself, in front of the endpoint (its http.py).
        security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    holder.app = LegacyGate(
        engine,
        stateful=holder.app,
        stateless=StreamableHTTPASGIApp(stateless),
        max_body=stateless.max_request_body_size,
    )
    previous = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(starlette: Starlette) -> AsyncIterator[Any]:
        async with previous(starlette) as state, stateless.run():
            try:
                yield state
            finally:
                await engine.aclose()

    app.router.lifespan_context = lifespan
    return app


def _endpoint_holder(app: Starlette, path: str) -> Any:
    """The object whose ``.app`` is FastMCP's endpoint: its auth check if there is one."""
    for route in app.router.routes:
        if isinstance(route, Route) and route.path == path:
            inner = getattr(route.app, "app", None)
            return route.app if inner is not None and callable(inner) else route
    return None
