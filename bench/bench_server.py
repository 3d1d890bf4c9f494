"""A ``tools/call`` that reads and edits session state, against the same call on a plain SDK
server without mcp-sessions, in one run.

In process (the SDK's ``Client(server)``): memory, SQLite and Redis stores.
Over Streamable HTTP (uvicorn on 127.0.0.1, the SDK's HTTP client): SQLite store.

The plain server's tool does the same work on a process-local dict keyed by the request's
``_meta`` id, so the ratio isolates what mcp-sessions adds: carrier resolution, the store
round trips (get, touch, compare-and-set) and the result ``_meta``.

Run: .venv/bin/python bench/bench_server.py [--calls 2000] [--rounds 5] [--skip-redis]
Targets (issue #4): in process <= 1.10x (memory), <= 1.25x (SQLite), <= 1.40x (Redis);
over HTTP <= 1.10x end to end (SQLite).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from mcp import Client
from mcp.server.mcpserver import Context, MCPServer

from mcp_sessions.server import CurrentSession, Sessions, current_session

SESSION_META = {"dev.mcpsessions/sessionId": "bench-session-0000000000000001"}


def bump(state: dict[str, Any]) -> int:
    value = int(state.get("count", 0)) + 1
    state["count"] = value
    return value


def plain_server() -> MCPServer:
    mcp = MCPServer("bench")
    counters: dict[str, int] = {}

    @mcp.tool()
    async def count(ctx: Context) -> int:
        meta = ctx.request_context.meta or {}
        key = str(meta.get("dev.mcpsessions/sessionId"))
        counters[key] = counters.get(key, 0) + 1
        return counters[key]

    return mcp


def sessions_server(store: str) -> tuple[MCPServer, Sessions]:
    sessions = Sessions(store=store)
    mcp = MCPServer("bench", extensions=[sessions], middleware=[sessions.middleware])

    @mcp.tool()
    async def count() -> int:
        session = await current_session()
        return await session.update(bump)

    @mcp.tool()
    async def count_resolved(session: CurrentSession) -> int:
        return await session.update(bump)

    return mcp, sessions


async def timed_calls(client: Client, calls: int, tool: str = "count") -> float:
    """Seconds per call over ``calls`` sequential calls (after a warm-up)."""
    for _ in range(20):
        await client.call_tool(tool, {}, meta=SESSION_META)
    start = time.perf_counter()
    for _ in range(calls):
        result = await client.call_tool(tool, {}, meta=SESSION_META)
        assert not result.is_error, result
    return (time.perf_counter() - start) / calls


async def best_of(rounds: int, run: Callable[[], Awaitable[float]]) -> float:
    return min([await run() for _ in range(rounds)])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Any:
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    workdir = tempfile.mkdtemp()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.asynccontextmanager
async def http_server(app: Any) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    with anyio.fail_after(15):
        while not server.started:  # uvicorn offers no event to wait on  # noqa: ASYNC110
            await anyio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(15)


async def in_process(store: str | None, calls: int, tool: str = "count") -> float:
    if store is None:
        async with Client(plain_server()) as client:
            return await timed_calls(client, calls)
    mcp, sessions = sessions_server(store)
    try:
        async with Client(mcp) as client:
            return await timed_calls(client, calls, tool)
    finally:
        await sessions.aclose()


async def over_http(store: str | None, calls: int) -> float:
    if store is None:
        mcp = plain_server()
        app = mcp.streamable_http_app(host="127.0.0.1")
    else:
        mcp, sessions = sessions_server(store)
        app = sessions.streamable_http_app(mcp, host="127.0.0.1")
    async with http_server(app) as url, Client(url) as client:
        return await timed_calls(client, calls)


def report(name: str, ours: float, base: float, target: float) -> str:
    ratio = ours / base
    verdict = "met" if ratio <= target else "NOT met"
    return (
        f"| {name} | {base * 1e6:.0f} | {ours * 1e6:.0f} | **{ratio:.2f}x** | "
        f"<= {target:.2f}x: {verdict} |"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000, help="calls per round (in process)")
    parser.add_argument("--http-calls", type=int, default=500, help="calls per round (HTTP)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the best is kept")
    parser.add_argument("--skip-redis", action="store_true")
    args = parser.parse_args()

    rows = [
        "| setup | plain SDK µs/call | mcp-sessions µs/call | ratio | target |",
        "|---|---|---|---|---|",
    ]
    tmp = Path(tempfile.mkdtemp())
    try:
        plain = await best_of(args.rounds, lambda: in_process(None, args.calls))
        memory = await best_of(args.rounds, lambda: in_process("memory://", args.calls))
        rows.append(report("in process, memory store", memory, plain, 1.10))
        resolved = await best_of(
            args.rounds, lambda: in_process("memory://", args.calls, "count_resolved")
        )
        rows.append(report("in process, memory, `CurrentSession` parameter", resolved, plain, 1.10))
        sqlite_url = f"sqlite:///{tmp}/bench.sqlite3"
        sqlite = await best_of(args.rounds, lambda: in_process(sqlite_url, args.calls))
        rows.append(report("in process, SQLite store", sqlite, plain, 1.25))
        if not args.skip_redis:
            with redis_server() as redis_url:
                if redis_url is None:
                    rows.append("| in process, Redis store | redis-server not installed | | | |")
                else:
                    redis = await best_of(args.rounds, lambda: in_process(redis_url, args.calls))
                    rows.append(report("in process, Redis store", redis, plain, 1.40))
        plain_http = await best_of(args.rounds, lambda: over_http(None, args.http_calls))
        sqlite_http = await best_of(args.rounds, lambda: over_http(sqlite_url, args.http_calls))
        rows.append(report("Streamable HTTP, SQLite store", sqlite_http, plain_http, 1.10))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"calls per round: {args.calls} in process, {args.http_calls} over HTTP")
    print(f"best of {args.rounds} rounds")
    print("\n".join(rows))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    anyio.run(main)
