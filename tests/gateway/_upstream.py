"""A tiny MCP server for the gateway tests, run as its own process (HTTP or stdio).

Its state lives in this process's memory only, so a request that reaches the wrong replica or
the wrong process shows: ``whoami`` names the server (and its pid), ``count`` keeps a counter
per session key. ``progress`` reports progress, then waits for ``release`` — a test reads the
first notification *before* releasing, which proves the gateway streamed it through rather
than buffering the response; ``mint`` does the same, then answers with a result listing a
handle as minted, and ``where`` names the server a handle reached (issue #11). ``block``
never returns (for kill tests); ``crash`` exits.

Run: python _upstream.py --name a --port 8001     (Streamable HTTP on 127.0.0.1)
     python _upstream.py --name a --stdio          (stdio, for --spawn)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, TextContent

STARTED_AT = time.time()


def session_key(ctx: Context) -> str:
    meta = ctx.request_context.meta or {}
    for key in ("dev.mcpsessions/sessionId", "clientSessionId", "openai/session"):
        value = meta.get(key) if hasattr(meta, "get") else None
        if value is None:
            value = getattr(meta, key, None)
        if value:
            return str(value)
    headers = ctx.headers or {}
    for name in ("mcp-client-session-id", "mcp-session-id"):
        if headers.get(name):
            return str(headers[name])
    return "process"


def build(name: str) -> MCPServer:
    mcp = MCPServer(f"gateway-test-{name}")
    counters: dict[str, int] = {}
    gates: dict[str, asyncio.Event] = {}

    @mcp.tool()
    async def whoami() -> dict[str, Any]:
        """Which server process answered."""
        return {"name": name, "pid": os.getpid(), "startedAt": STARTED_AT}

    @mcp.tool()
    async def count(ctx: Context) -> int:
        """Increment this session's counter (in this process's memory)."""
        key = session_key(ctx)
        counters[key] = counters.get(key, 0) + 1
        return counters[key]

    @mcp.tool()
    async def progress(gate: str, steps: int, ctx: Context) -> str:
        """Report progress 1, wait until release(gate), then report the rest."""
        event = gates.setdefault(gate, asyncio.Event())
        await ctx.report_progress(1, steps, "started")
        await asyncio.wait_for(event.wait(), 60)
        for step in range(2, steps + 1):
            await ctx.report_progress(step, steps, f"step {step}")
            await asyncio.sleep(0.01)
        return f"done {gate}"

    @mcp.tool()
    async def release(gate: str) -> bool:
        """Let progress(gate) finish."""
        gates.setdefault(gate, asyncio.Event()).set()
        return True

    @mcp.tool()
    async def mint(handle: str, gate: str, ctx: Context) -> CallToolResult:
        """Report progress, wait until release(gate), then answer with a result that lists
        ``handle`` as minted, as an mcp-sessions server does (an event-stream response)."""
        event = gates.setdefault(gate, asyncio.Event())
        await ctx.report_progress(1, 2, "minting")
        await asyncio.wait_for(event.wait(), 60)
        minted = {"dev.mcpsessions/handles": [{"handle": handle, "kind": "probe"}]}
        return CallToolResult(content=[TextContent(type="text", text=handle)], _meta=minted)

    @mcp.tool()
    async def where(handle: str) -> str:
        """Which server a request carrying ``handle`` reached."""
        return name

    @mcp.tool()
    async def block(marker: str = "") -> str:
        """Never returns (until the process dies); creates the file ``marker`` first, so a
        test knows the call is running."""
        if marker:
            Path(marker).write_text(str(os.getpid()))  # noqa: ASYNC240 (tiny, local)
        await asyncio.Event().wait()
        return "unreachable"

    @mcp.tool()
    async def crash(code: int = 3) -> str:
        """Exit the process at once, mid-request."""
        os._exit(code)

    return mcp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="upstream")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stdio", action="store_true")
    args = parser.parse_args()
    mcp = build(args.name)
    if args.stdio:
        mcp.run("stdio")
        return
    import uvicorn

    app = mcp.streamable_http_app(host="127.0.0.1")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
