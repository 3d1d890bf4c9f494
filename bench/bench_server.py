"""A ``tools/call`` that reads and edits session state, against the same call on a plain SDK
server without mcp-sessions, in one run.

In process (the SDK's ``Client(server)``): memory, SQLite and Redis stores.
Over Streamable HTTP (uvicorn on 127.0.0.1, the SDK's HTTP client): SQLite store.

The plain server's tool does the same work on a process-local dict keyed by the request's
``_meta`` id, so the ratio isolates what mcp-sessions adds: carrier resolution, the store
round trips (get, touch, compare-and-set) and the result ``_meta``.

Two reference rows put the targets in scale: the *floor*, a bare middleware and dict that do
the least any session layer must do on this path (no mcp-sessions), and one round trip of
redis-py's GET to the same redis-server, which the Redis store needs twice per call (a fresh
read, then the compare-and-set).

Run: .venv/bin/python bench/bench_server.py [--calls 500] [--http-calls 100] [--rounds 15]
     [--skip-redis]
Targets (issue #4): in process <= 1.10x (memory), <= 1.25x (SQLite), <= 1.40x (Redis);
over HTTP <= 1.10x end to end (SQLite).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import anyio
import redis.asyncio as aioredis
import uvicorn
from mcp import Client
from mcp.server.mcpserver import Context, MCPServer

# The tests' process helpers (redis-server launcher, free ports): one copy for tests and bench/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.fixtures.redis_server import free_port, start_redis_server, stop_process

from mcp_sessions.core.records import copy_json
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


#: One batch of calls: takes a number of calls, returns seconds per call.
Batch = Callable[[int], Awaitable[float]]


def calls_of(client: Client, tool: str = "count") -> Batch:
    async def batch(calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            result = await client.call_tool(tool, {}, meta=SESSION_META)
            assert not result.is_error, result
        return (time.perf_counter() - start) / calls

    return batch


@contextlib.contextmanager
def redis_server() -> Iterator[str | None]:
    """A redis-server on a free loopback port (the tests' own launcher), or ``None``."""
    if shutil.which("redis-server") is None:
        yield None
        return
    workdir = Path(tempfile.mkdtemp())
    process, port = start_redis_server(workdir)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(process)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.asynccontextmanager
async def http_server(app: Any) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", log_config=None)
    )
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


async def in_process(stack: contextlib.AsyncExitStack, store: str | None, tool: str) -> Batch:
    if store is None:
        mcp = plain_server()
    else:
        mcp, sessions = sessions_server(store)
        stack.push_async_callback(sessions.aclose)
    return calls_of(await stack.enter_async_context(Client(mcp)), tool)


async def over_http(stack: contextlib.AsyncExitStack, store: str | None) -> Batch:
    if store is None:
        app = plain_server().streamable_http_app(host="127.0.0.1")
    else:
        mcp, sessions = sessions_server(store)
        stack.push_async_callback(sessions.aclose)
        app = sessions.streamable_http_app(mcp, host="127.0.0.1")
    url = await stack.enter_async_context(http_server(app))
    return calls_of(await stack.enter_async_context(Client(url)))


# -- reference points: what the targets leave room for ------------------------------------

_floor_var: ContextVar[str | None] = ContextVar("bench_floor", default=None)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def floor_server() -> MCPServer:
    """The least any session layer does on this path, written without mcp-sessions: a
    middleware that reads the id from ``_meta`` into a context variable and adds an expiry to
    the result's ``_meta``; a tool that copies the state from a dict, edits it, encodes it
    (size and JSON checks) and keeps the text and its decoding. No validation, no principal,
    no versions, no expiry: a lower bound, not a design."""

    async def middleware(ctx: Any, call_next: Any) -> Any:
        if ctx.request_id is None:
            return await call_next(ctx)
        token = _floor_var.set((ctx.meta or {}).get("dev.mcpsessions/sessionId"))
        try:
            result = await call_next(ctx)
        finally:
            _floor_var.reset(token)
        if isinstance(result, dict) and ctx.method == "tools/call":
            result["_meta"] = {**(result.get("_meta") or {}), "x/expiresAt": "2026-01-01T00:00Z"}
        return result

    mcp = MCPServer("bench", middleware=[middleware])
    states: dict[str | None, tuple[str, dict[str, Any]]] = {}

    @mcp.tool()
    async def count() -> int:
        key = _floor_var.get()
        _, state = states.get(key, ("{}", {}))
        draft = copy_json(state)
        value = bump(draft)
        text = _ENCODER.encode(draft)
        states[key] = (text, json.loads(text))
        return value

    return mcp


async def redis_round_trip(stack: contextlib.AsyncExitStack, url: str) -> Batch:
    """GETs with redis-py's asyncio client, the driver the Redis store uses."""
    client = aioredis.Redis.from_url(url)
    stack.push_async_callback(client.aclose)
    await client.set("bench:rtt", "x" * 64)

    async def batch(calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            await client.get("bench:rtt")
        return (time.perf_counter() - start) / calls

    return batch


def report(name: str, ours: float, base: float, ratio: float, target: float | None) -> str:
    if target is None:
        verdict = "(reference)"
    else:
        verdict = f"<= {target:.2f}x: " + ("met" if ratio <= target else "**not met**")
    return f"| {name} | {base * 1e6:.0f} | {ours * 1e6:.0f} | **{ratio:.2f}x** | {verdict} |"


async def interleaved(
    setups: dict[str, Batch], calls: int, rounds: int, *, warm_up: int = 50
) -> dict[str, list[float]]:
    """All setups live at once (same process, same garbage, same logging); every round runs
    one batch of each in turn, so that drift and noisy moments hit all of them alike. Each
    batch's figure is whatever it returns (seconds per call here, calls per second in
    bench_peers)."""
    for batch in setups.values():
        await batch(max(warm_up, calls // 5))  # warm-up: imports, caches, the first session
    times: dict[str, list[float]] = {name: [] for name in setups}
    names = list(setups)
    for round_ in range(rounds):
        # Each round starts with another setup, so that none always runs first or after the
        # same neighbour (what ran just before shows in the caches).
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(await setups[name](calls))
    return times


def summary(times: dict[str, list[float]], name: str, base: str) -> tuple[float, float, float]:
    """Median seconds per call of ``name`` and ``base``, and the median of their per-round
    ratios (each round's pair ran side by side)."""
    ratios = [ours / plain for ours, plain in zip(times[name], times[base], strict=True)]
    return statistics.median(times[name]), statistics.median(times[base]), statistics.median(ratios)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=500, help="calls per batch (in process)")
    parser.add_argument("--http-calls", type=int, default=100, help="calls per batch (HTTP)")
    parser.add_argument("--rounds", type=int, default=15, help="batches of each setup")
    parser.add_argument("--skip-redis", action="store_true")
    args = parser.parse_args()
    # The SDK sets up INFO logging; a line per HTTP request and per session-manager start
    # would drown the table (and cost time inside the measured loop).
    for name in ("httpx", "httpx2", "mcp", "mcp.server.streamable_http_manager"):
        logging.getLogger(name).setLevel(logging.WARNING)

    tmp = Path(tempfile.mkdtemp())
    sqlite_url = f"sqlite:///{tmp}/bench.sqlite3"
    try:
        with redis_server() if not args.skip_redis else contextlib.nullcontext() as redis_url:
            async with contextlib.AsyncExitStack() as stack:
                setups = {
                    "plain": await in_process(stack, None, "count"),
                    "floor": calls_of(await stack.enter_async_context(Client(floor_server()))),
                    "memory": await in_process(stack, "memory://", "count"),
                    "resolved": await in_process(stack, "memory://", "count_resolved"),
                    "sqlite": await in_process(stack, sqlite_url, "count"),
                }
                if redis_url is not None:
                    setups["redis"] = await in_process(stack, redis_url, "count")
                    setups["redis-rtt"] = await redis_round_trip(stack, redis_url)
                times = await interleaved(setups, args.calls, args.rounds)
            # HTTP after: uvicorn's threads would otherwise share the machine with the above.
            async with contextlib.AsyncExitStack() as stack:
                http = {
                    "plain-http": await over_http(stack, None),
                    "sqlite-http": await over_http(stack, sqlite_url),
                }
                times |= await interleaved(http, args.http_calls, args.rounds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = [
        "| setup | plain SDK µs/call | µs/call | ratio | target |",
        "|---|---|---|---|---|",
    ]
    cases: list[tuple[str, str, float | None]] = [
        ("floor: the least a session layer does (no mcp-sessions)", "floor", None),
        ("in process, memory store", "memory", 1.10),
        ("in process, memory, `CurrentSession` parameter", "resolved", 1.10),
        ("in process, SQLite store", "sqlite", 1.25),
    ]
    if "redis" in times:
        cases.append(("in process, Redis store", "redis", 1.40))
    for title, name, target in cases:
        rows.append(report(title, *summary(times, name, "plain"), target))
    if "redis-rtt" in times:
        plain = statistics.median(times["plain"])
        rows.append(
            "| one redis-py GET round trip (reference) | | "
            f"{statistics.median(times['redis-rtt']) * 1e6:.0f} | | the Redis target leaves "
            f"{0.40 * plain * 1e6:.0f} µs for everything |"
        )
    elif not args.skip_redis:
        rows.append("| in process, Redis store | redis-server not installed | | | |")
    rows.append(
        report("Streamable HTTP, SQLite store", *summary(times, "sqlite-http", "plain-http"), 1.10)
    )
    print(
        f"{args.rounds} rounds of {args.calls} calls per setup in process, {args.http_calls} "
        "over HTTP; medians"
    )
    print("\n".join(rows))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    anyio.run(main)
