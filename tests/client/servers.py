"""Real servers for the client tests: the demo server and a plain SDK server (no
mcp-sessions), over Streamable HTTP (uvicorn in a thread on a free 127.0.0.1 port) and over
stdio (a subprocess the SDK's stdio client starts and stops).

The plain server records, at the server, what every request carried: its method, the
``dev.mcpsessions/sessionId`` and ``dev.mcpsessions/state`` ``_meta`` values and the
``Mcp-Client-Session-Id`` header. Run as a script it serves the same over stdio, and its
``seen`` tool returns the records.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from mcp.client.stdio import StdioServerParameters
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer

from mcp_sessions.core.names import HEADER_CLIENT_SESSION_ID, META_SESSION_ID, META_STATE

STARTUP_TIMEOUT = 20.0
PLAIN_SCRIPT = Path(__file__).resolve()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Seen:
    """What one request carried, as the server saw it."""

    method: str
    meta_id: str | None
    header_id: str | None
    has_state: bool
    state: str | None = None


@dataclass
class Recorder:
    """A middleware that records every request (notifications are not requests)."""

    seen: list[Seen] = field(default_factory=list)
    #: Over HTTP: every exchange, logged in front of the app.
    http: HttpLog | None = None

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.request_id is not None:
            meta = ctx.meta or {}
            headers = getattr(ctx.request, "headers", None) if ctx.request is not None else None
            state = meta.get(META_STATE)
            self.seen.append(
                Seen(
                    method=ctx.method,
                    meta_id=meta.get(META_SESSION_ID),
                    header_id=headers.get(HEADER_CLIENT_SESSION_ID) if headers else None,
                    has_state=state is not None,
                    state=state if isinstance(state, str) else None,
                )
            )
        return await call_next(ctx)


def build_plain() -> tuple[MCPServer, Recorder]:
    """An SDK server that knows nothing of mcp-sessions, and its recorder."""
    recorder = Recorder()
    mcp = MCPServer("plain", middleware=[recorder])

    @mcp.tool()
    async def echo(text: str) -> str:
        """Echo the text."""
        return text

    @mcp.tool()
    async def whoami(ctx: Context) -> dict[str, Any]:
        """The session id this request carried, in _meta and in the header."""
        meta = ctx.request_context.meta or {}
        headers = ctx.headers or {}
        return {"meta": meta.get(META_SESSION_ID), "header": headers.get(HEADER_CLIENT_SESSION_ID)}

    @mcp.tool()
    async def seen() -> list[dict[str, Any]]:
        """Every request recorded so far (for the stdio tests)."""
        return [
            {
                "method": s.method,
                "meta_id": s.meta_id,
                "header_id": s.header_id,
                "has_state": s.has_state,
            }
            for s in recorder.seen
        ]

    return mcp, recorder


def plain_stdio() -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=[str(PLAIN_SCRIPT)])


def demo_stdio(store: str, state: str, key_file: Path, lifecycle: str = "implicit") -> Any:
    return StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "mcp_sessions",
            "demo",
            "--stdio",
            "--store",
            store,
            "--state",
            state,
            "--lifecycle",
            lifecycle,
            "--key-file",
            str(key_file),
        ],
    )


@dataclass
class HttpServer:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=STARTUP_TIMEOUT)
        if self.thread.is_alive():  # pragma: no cover - a hung server is a test failure
            self.server.force_exit = True
            self.thread.join(timeout=5)
            raise RuntimeError("uvicorn did not stop")


def start_http(app: Any, *, path: str = "/mcp") -> HttpServer:
    """Serve ``app`` with uvicorn in a thread on a free loopback port; wait until it listens."""
    last: Exception | None = None
    for _attempt in range(3):  # another process may take the free port first
        port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", ws="none"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline and thread.is_alive() and not server.started:
            time.sleep(0.02)
        if server.started:
            return HttpServer(f"http://127.0.0.1:{port}{path}", server, thread)
        server.should_exit = True
        thread.join(timeout=5)
        last = RuntimeError(f"uvicorn did not start on port {port}")
    raise last or RuntimeError("uvicorn did not start")


@contextlib.contextmanager
def serving(app: Any) -> Iterator[HttpServer]:
    server = start_http(app)
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class HttpExchange:
    """One HTTP request as the server saw it, and the status it answered."""

    method: str
    legacy_id: str | None
    status: int


@dataclass
class HttpLog:
    """A pure ASGI wrapper that logs every HTTP request and its status, at the server."""

    app: Any
    exchanges: list[HttpExchange] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}

        async def watch(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.exchanges.append(
                    HttpExchange(scope["method"], headers.get("mcp-session-id"), message["status"])
                )
            await send(message)

        await self.app(scope, receive, watch)


def demo_app(**options: Any) -> tuple[Any, Recorder]:
    """The demo server's Streamable HTTP app, with a recorder in front of its middleware."""
    from mcp_sessions.demo import build_demo

    mcp, sessions = build_demo(**options)
    recorder = Recorder()
    mcp.middleware.insert(0, recorder)
    recorder.http = HttpLog(sessions.streamable_http_app(mcp, host="127.0.0.1"))
    return recorder.http, recorder


def plain_app() -> tuple[Any, Recorder]:
    mcp, recorder = build_plain()
    recorder.http = HttpLog(mcp.streamable_http_app(host="127.0.0.1"))
    return recorder.http, recorder


if __name__ == "__main__":
    build_plain()[0].run("stdio")
