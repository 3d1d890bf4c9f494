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
call (each setup in its own process, /proc's user + system time around a batch of sequential
HTTP calls), which the machine's other load hardly moves; "÷" is how many calls of this setup
fit in the CPU time of one ``fastmcp-state`` call.

Run: .venv/bin/python bench/bench_peers.py [--calls 160] [--rounds 7]
Target (issue #14): mcp-sessions on FastMCP >= 1.0x FastMCP's own state; 0 lost updates.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
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
from bench_server import Batch, free_port, http_server, interleaved
from mcp_sessions import fastmcp as on_fastmcp
from mcp_sessions import server as on_mcp
from mcp_sessions.core.names import META_SESSION_ID
from mcp_sessions.core.records import JSONObject

PAUSE = 0.01  # seconds between the read and the write of the lost-update tool
PARALLEL = 20
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


def server_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve_one(name: str, port: int, directory: str) -> None:
    """``--serve NAME``: one setup alone in this process (for the CPU table)."""
    import uvicorn

    app = setups(Path(directory))[name][0]()[0]
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", log_config=None)


async def cpu_per_call(names: list[str], calls: int, rounds: int) -> dict[str, list[float]]:
    """Server CPU time per call, each setup in its own process: what a call costs the
    server, which the machine's load (other processes) hardly moves, unlike calls/s."""
    tmp = tempfile.mkdtemp()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        async with contextlib.AsyncExitStack() as stack:
            callers: dict[str, Caller] = {}
            for name in names:
                port = free_port()
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
                    before = server_cpu_seconds(processes[name].pid)
                    for _ in range(calls):
                        await callers[name].call()
                    cpu[name].append((server_cpu_seconds(processes[name].pid) - before) / calls)
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
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_one(args.serve, args.port, args.dir)
    else:
        anyio.run(main, args)


async def main(args: argparse.Namespace) -> None:
    for name in ("httpx", "httpx2", "mcp", "fastmcp", "mcp.server.streamable_http_manager"):
        logging.getLogger(name).setLevel(logging.WARNING)

    tmp = Path(tempfile.mkdtemp())
    builders = setups(tmp)
    try:
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
            sequential_rates = await interleaved(seq, args.calls, args.rounds, warm_up=8)
            concurrent_rates = await interleaved(par, args.calls, args.rounds, warm_up=8)
        # In process (the SDK client on each server, no HTTP, no threads): the session layers
        # alone, with far less noise than the HTTP legs on a shared machine.
        async with contextlib.AsyncExitStack() as stack:
            local: dict[str, Batch] = {}
            for name, (build, minted) in builders.items():
                local[name] = sequential(await open_caller(stack, build()[1], minted))
            in_process_rates = await interleaved(local, args.calls * 2, args.rounds, warm_up=8)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    base = "fastmcp-state"
    print(
        f"| setup | sequential calls/s | × {base} | {CONCURRENT_SESSIONS} sessions calls/s "
        f"| × {base} | lost of {PARALLEL} |"
    )
    print("|---|---|---|---|---|---|")
    for name in builders:
        cells = []
        for rates in (sequential_rates, concurrent_rates):
            ratios = [ours / theirs for ours, theirs in zip(rates[name], rates[base], strict=True)]
            cells += [f"{statistics.median(rates[name]):.0f}", f"{statistics.median(ratios):.2f}×"]
        print(f"| {name} | {' | '.join(cells)} | {lost[name]} |")
    print(f"\n| in process, sequential | calls/s | × {base} |\n|---|---|---|")
    for name, rates in in_process_rates.items():
        ratios = [ours / theirs for ours, theirs in zip(rates, in_process_rates[base], strict=True)]
        print(f"| {name} | {statistics.median(rates):.0f} | {statistics.median(ratios):.2f}× |")
    cpu = await cpu_per_call(list(builders), args.calls, args.rounds)
    print(f"\n| server CPU per call, sequential, HTTP | ms | ÷ {base} |\n|---|---|---|")
    for name, costs in cpu.items():
        ratios = [theirs / ours for ours, theirs in zip(costs, cpu[base], strict=True)]
        print(
            f"| {name} | {statistics.median(costs) * 1e3:.2f} | {statistics.median(ratios):.2f}× |"
        )


if __name__ == "__main__":
    cli()
