"""Session state side by side (issue #14): FastMCP's own state against mcp-sessions on FastMCP
and on the SDK's ``MCPServer``, in one run, over Streamable HTTP on 127.0.0.1.

Setups (each a uvicorn server in a thread of this process, all live at once):

* ``fastmcp-state``   FastMCP 4, ``ctx.get_state`` / ``ctx.set_state`` (its memory store),
                      on legacy ``Mcp-Session-Id`` sessions, where that state persists;
* ``fastmcp-session`` FastMCP 4's ``Session`` API: ``get_session(session_id)`` with an id
                      minted by its ``create_session`` tool, passed as an argument;
* ``ours-fastmcp-{memory,sqlite}``  mcp-sessions on FastMCP (``CurrentSession``);
* ``ours-mcp-{memory,sqlite}``      mcp-sessions on ``MCPServer``.

Every setup serves the same counter: read the count, add one, write it back. Clients speak
2025-11-25 (legacy sessions: what ``ctx.set_state`` needs), the same SDK client for all.
Throughput is measured sequentially (one session) and with 8 sessions at once, in
interleaved rounds so that drift hits every setup alike; ratios are per round, then the
median. Lost updates: 20 parallel calls of one session to a tool that awaits (10 ms)
between reading the count and writing it; a setup that loses none ends at 20. FastMCP's
state has no compare-and-set, so its write is ``set_state``; mcp-sessions' write is
``session.update``, which re-applies the increment to the current state on a conflict.
A last table runs the same sequential counter in process (the SDK client on each server, no
HTTP, no threads; mcp-sessions' setups carry a ``_meta`` id there), where the session layers
show with far less noise than over HTTP on a shared machine. And the server CPU time per
call (each setup in its own process, its CPU time around a batch of sequential HTTP calls,
read with nanosecond resolution), which the machine's other load moves less; "÷" is how
many calls of this setup fit in the CPU time of one ``fastmcp-state`` call.

Run: .venv/bin/python bench/bench_peers.py [--calls 160] [--rounds 7]
     [--setups ours-fastmcp-memory] [--parts http,in-process,cpu]
Target (issue #14): mcp-sessions on FastMCP >= 1.0x FastMCP's own state; 0 lost updates.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from fastmcp import Context, FastMCP
from fastmcp.server.dependencies import get_session
from fastmcp.server.sessions import SessionId, SessionProvider
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer

# bench/ is the script's directory: the uvicorn-in-a-thread helper of the server benchmark.
from bench_server import free_port, http_server
from mcp_sessions import fastmcp as on_fastmcp
from mcp_sessions import server as on_mcp
from mcp_sessions.core.names import META_SESSION_ID
from mcp_sessions.core.records import JSONObject

PAUSE = 0.01  # seconds between the read and the write of the lost-update tool
PARALLEL = 20
BASE = "fastmcp-state"  # every ratio is against FastMCP's own state
PARTS = ("http", "in-process", "cpu")
CONCURRENT_SESSIONS = 8


def bump(state: JSONObject) -> int:
    value = int(state.get("n", 0)) + 1
    state["n"] = value
    return value


# -- the servers ----------------------------------------------------------------------------


def fastmcp_state() -> Any:
    mcp: FastMCP[Any] = FastMCP("fastmcp-state")

    @mcp.tool
    async def count(ctx: Context) -> int:
        value = int(await ctx.get_state("n") or 0) + 1
        await ctx.set_state("n", value)
        return value

    @mcp.tool
    async def slow_count(ctx: Context) -> int:
        value = int(await ctx.get_state("n") or 0) + 1
        await anyio.sleep(PAUSE)
        await ctx.set_state("n", value)
        return value

    return mcp.http_app(), mcp._mcp_server


def fastmcp_session() -> Any:
    mcp: FastMCP[Any] = FastMCP("fastmcp-session")
    mcp.add_provider(SessionProvider())

    @mcp.tool
    async def count(session_id: SessionId) -> int:
        session = await get_session(session_id)
        value = int(await session.get("n", 0)) + 1
        await session.set("n", value)
        return value

    @mcp.tool
    async def slow_count(session_id: SessionId) -> int:
        session = await get_session(session_id)
        value = int(await session.get("n", 0)) + 1
        await anyio.sleep(PAUSE)
        await session.set("n", value)
        return value

    return mcp.http_app(), mcp._mcp_server


async def _slow(session: on_mcp.Session) -> int:
    int(session.get("n", 0))  # the read the caller acts on, then work before the write
    await anyio.sleep(PAUSE)
    return await session.update(bump)


def ours_fastmcp(store: str) -> Any:
    sessions = on_fastmcp.Sessions(store=store, audience="bench")
    mcp: FastMCP[Any] = FastMCP("ours-fastmcp")
    sessions.install(mcp)

    @mcp.tool
    async def count(session: on_fastmcp.CurrentSession) -> int:
        return await session.update(bump)

    @mcp.tool
    async def slow_count(session: on_fastmcp.CurrentSession) -> int:
        return await _slow(session)

    return mcp.http_app(), mcp._mcp_server


def ours_mcp(store: str) -> Any:
    sessions = on_mcp.Sessions(store=store, audience="bench")
    mcp = MCPServer("ours-mcp", extensions=[sessions], middleware=[sessions.middleware])

    @mcp.tool()
    async def count(session: on_mcp.CurrentSession) -> int:
        return await session.update(bump)

    @mcp.tool()
    async def slow_count(session: on_mcp.CurrentSession) -> int:
        return await _slow(session)

    return sessions.streamable_http_app(mcp, host="127.0.0.1"), mcp


# -- the clients ----------------------------------------------------------------------------


class Caller:
    """One legacy session on one setup, and the arguments its calls carry."""

    def __init__(
        self, client: Client, arguments: dict[str, Any], meta: dict[str, Any] | None = None
    ) -> None:
        self.client = client
        self.arguments = arguments
        self.meta = meta

    async def call(self, tool: str = "count") -> int:
        result = await self.client.call_tool(tool, self.arguments, meta=self.meta)
        assert not result.is_error, result
        content = result.structured_content or {}
        return int(content.get("result", 0))


async def open_caller(stack: contextlib.AsyncExitStack, target: Any, minted: bool) -> Caller:
    """A legacy session on ``target``: a URL, or a server in process (where mcp-sessions'
    setups get a ``_meta`` id instead: an in-process connection has no Mcp-Session-Id)."""
    over_http = isinstance(target, str)
    client = Client(streamable_http_client(target) if over_http else target, mode="legacy")
    await stack.enter_async_context(client)
    arguments: dict[str, Any] = {}
    if minted:  # FastMCP's Session API: an id from its create_session tool
        created = await client.call_tool("create_session", {})
        arguments["session_id"] = (created.structured_content or {})["result"]
    meta = None if over_http else {META_SESSION_ID: str(uuid.uuid4())}
    return Caller(client, arguments, meta)


Batch = Callable[[int], Awaitable[float]]


def sequential(caller: Caller) -> Batch:
    async def batch(calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            await caller.call()
        return calls / (time.perf_counter() - start)

    return batch


def concurrent(callers: list[Caller]) -> Batch:
    async def batch(calls: int) -> float:
        each = max(1, calls // len(callers))

        async def run(caller: Caller) -> None:
            for _ in range(each):
                await caller.call()

        start = time.perf_counter()
        async with anyio.create_task_group() as group:
            for caller in callers:
                group.start_soon(run, caller)
        return each * len(callers) / (time.perf_counter() - start)

    return batch


async def lost_updates(caller: Caller) -> int:
    """Calls of ``slow_count`` whose increment is missing after 20 parallel calls."""
    async with anyio.create_task_group() as group:
        for _ in range(PARALLEL):
            group.start_soon(caller.call, "slow_count")
    final = await caller.call()  # one more, sequential: the count it returns is the truth
    return PARALLEL + 1 - final


async def interleaved(setups: dict[str, Batch], calls: int, rounds: int) -> dict[str, list[float]]:
    for batch in setups.values():
        await batch(max(8, calls // 5))  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in setups}
    names = list(setups)
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            rates[name].append(await setups[name](calls))
    return rates


CPU_PATH = "/cpu"


def with_cpu_clock(app: Any) -> Any:
    """``app``, plus ``GET /cpu``: the CPU time of this process so far, in seconds, read with
    nanosecond resolution (/proc's user and system times count 10 ms ticks, coarse against a
    batch of a few hundred milliseconds)."""

    async def clocked(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == CPU_PATH:
            body = repr(time.process_time()).encode()
            length = str(len(body)).encode()
            headers = [(b"content-length", length)]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return clocked


async def server_cpu_seconds(port: int) -> float:
    """The CPU time so far of the server on ``port`` (its ``GET /cpu``)."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        request = f"GET {CPU_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        await stream.send(request.encode())
        answer = b""
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
            while True:
                answer += await stream.receive()
    return float(answer.split(b"\r\n\r\n", 1)[1])


def serve_one(name: str, port: int, directory: str) -> None:
    """``--serve NAME``: one setup alone in this process (for the CPU table)."""
    import uvicorn

    app = with_cpu_clock(setups(Path(directory))[name][0]()[0])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", log_config=None)


async def cpu_per_call(names: list[str], calls: int, rounds: int) -> dict[str, list[float]]:
    """Server CPU time per call, each setup in its own process: what a call costs the
    server, which the machine's load (other processes) hardly moves, unlike calls/s."""
    tmp = tempfile.mkdtemp()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        async with contextlib.AsyncExitStack() as stack:
            callers: dict[str, Caller] = {}
            ports: dict[str, int] = {}
            for name in names:
                port = ports[name] = free_port()
                processes[name] = spawn(name, port, tmp)
                url = f"http://127.0.0.1:{port}/mcp"
                for _ in range(200):  # bounded wait for the server to listen
                    try:
                        await (await anyio.connect_tcp("127.0.0.1", port)).aclose()
                        break
                    except OSError:
                        await anyio.sleep(0.05)
                callers[name] = await open_caller(stack, url, builders_minted(name))
                for _ in range(20):
                    await callers[name].call()
            cpu: dict[str, list[float]] = {name: [] for name in names}
            for round_ in range(rounds):
                shift = round_ % len(names)
                for name in names[shift:] + names[:shift]:
                    before = await server_cpu_seconds(ports[name])
                    for _ in range(calls):
                        await callers[name].call()
                    cpu[name].append((await server_cpu_seconds(ports[name]) - before) / calls)
            return cpu
    finally:
        for process in processes.values():
            process.terminate()
            process.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def spawn(name: str, port: int, directory: str) -> subprocess.Popen[bytes]:
    argv = ["--serve", name, "--port", str(port), "--dir", directory]
    return subprocess.Popen([sys.executable, __file__, *argv])


def builders_minted(name: str) -> bool:
    return name == "fastmcp-session"


def setups(tmp: Path) -> dict[str, tuple[Callable[[], tuple[Any, Any]], bool]]:
    return {
        "fastmcp-state": (fastmcp_state, False),
        "fastmcp-session": (fastmcp_session, True),
        "ours-fastmcp-memory": (lambda: ours_fastmcp("memory://"), False),
        "ours-fastmcp-sqlite": (lambda: ours_fastmcp(f"sqlite:///{tmp}/f.sqlite3"), False),
        "ours-mcp-memory": (lambda: ours_mcp("memory://"), False),
        "ours-mcp-sqlite": (lambda: ours_mcp(f"sqlite:///{tmp}/m.sqlite3"), False),
    }


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=160, help="calls per batch")
    parser.add_argument("--rounds", type=int, default=7, help="batches of each setup")
    parser.add_argument(
        "--setups",
        help=f"comma-separated setups to run (default: all; {BASE} always runs, the baseline)",
    )
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated parts to run, of {','.join(PARTS)} (default: all)",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    if args.setups is not None:
        names = set(args.setups.split(","))
        if names - set(setups(Path("."))):
            parser.error(f"unknown setups {sorted(names - set(setups(Path('.'))))}")
    if args.serve:
        serve_one(args.serve, args.port, args.dir)
    else:
        anyio.run(main, args)


async def main(args: argparse.Namespace) -> None:
    for name in ("httpx", "httpx2", "mcp", "fastmcp", "mcp.server.streamable_http_manager"):
        logging.getLogger(name).setLevel(logging.WARNING)

    tmp = Path(tempfile.mkdtemp())
    builders = setups(tmp)
    if args.setups is not None:
        chosen = {BASE, *args.setups.split(",")}
        builders = {name: built for name, built in builders.items() if name in chosen}
    parts = set(args.parts.split(","))
    try:
        if "http" in parts:
            await http_part(builders, args)
        if "in-process" in parts:
            await in_process_part(builders, args)
        if "cpu" in parts:
            await cpu_part(builders, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def http_part(builders: Any, args: argparse.Namespace) -> None:
    """Throughput over Streamable HTTP, sequential and concurrent, and the lost updates."""
    async with contextlib.AsyncExitStack() as stack:
        urls = {
            name: await stack.enter_async_context(http_server(build()[0]))
            for name, (build, _) in builders.items()
        }
        seq: dict[str, Batch] = {}
        par: dict[str, Batch] = {}
        lost: dict[str, int] = {}
        for name, (_, minted) in builders.items():
            seq[name] = sequential(await open_caller(stack, urls[name], minted))
            many = [
                await open_caller(stack, urls[name], minted) for _ in range(CONCURRENT_SESSIONS)
            ]
            par[name] = concurrent(many)
            lost[name] = await lost_updates(await open_caller(stack, urls[name], minted))
        sequential_rates = await interleaved(seq, args.calls, args.rounds)
        concurrent_rates = await interleaved(par, args.calls, args.rounds)
    print(
        f"| setup | sequential calls/s | × {BASE} | {CONCURRENT_SESSIONS} sessions calls/s "
        f"| × {BASE} | lost of {PARALLEL} |"
    )
    print("|---|---|---|---|---|---|")
    for name in builders:
        cells = []
        for rates in (sequential_rates, concurrent_rates):
            ratios = [ours / theirs for ours, theirs in zip(rates[name], rates[BASE], strict=True)]
            cells += [f"{statistics.median(rates[name]):.0f}", f"{statistics.median(ratios):.2f}×"]
        print(f"| {name} | {' | '.join(cells)} | {lost[name]} |")


async def in_process_part(builders: Any, args: argparse.Namespace) -> None:
    """In process (the SDK client on each server, no HTTP, no threads): the session layers
    alone, with far less noise than the HTTP legs on a shared machine."""
    async with contextlib.AsyncExitStack() as stack:
        local: dict[str, Batch] = {}
        for name, (build, minted) in builders.items():
            local[name] = sequential(await open_caller(stack, build()[1], minted))
        in_process_rates = await interleaved(local, args.calls * 2, args.rounds)
    print(f"\n| in process, sequential | calls/s | × {BASE} |\n|---|---|---|")
    for name, rates in in_process_rates.items():
        ratios = [ours / theirs for ours, theirs in zip(rates, in_process_rates[BASE], strict=True)]
        print(f"| {name} | {statistics.median(rates):.0f} | {statistics.median(ratios):.2f}× |")


async def cpu_part(builders: Any, args: argparse.Namespace) -> None:
    cpu = await cpu_per_call(list(builders), args.calls, args.rounds)
    print(f"\n| server CPU per call, sequential, HTTP | ms | ÷ {BASE} |\n|---|---|---|")
    for name, costs in cpu.items():
        ratios = [theirs / ours for ours, theirs in zip(costs, cpu[BASE], strict=True)]
        print(
            f"| {name} | {statistics.median(costs) * 1e3:.2f} | {statistics.median(ratios):.2f}× |"
        )


if __name__ == "__main__":
    cli()
