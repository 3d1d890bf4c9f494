"""What one ``tools/call count`` costs Redis (issue #15 item 4).

Against a real redis-server on a free loopback port (the tests' own launcher):

1. In process (the SDK's ``Client(server)``), the server of bench/bench_server.py (a ``count``
   tool that reads and edits session state) with a Redis store, N calls of ``count`` in one
   session after a warm-up:

   * *commands per call*: ``INFO commandstats`` before and after (``CONFIG RESETSTAT``), all
     calls summed. Redis counts the commands a Lua script runs inside itself too, so this
     is the work Redis does, not what crossed the wire; the commands the client sent are
     counted separately (an ``EVALSHA`` is one of them).
   * *round trips per call*: counted in the client, by wrapping redis-py's
     ``Connection.send_packed_command``: one call sends one command or one whole pipeline,
     and waits for its answer, so each is one round trip. (``commandstats`` cannot tell a
     pipeline of three commands from three round trips.)
   * *Redis CPU per call*: the ``usec`` of ``commandstats``, summed (a script's own line
     includes the commands it ran, so those are not added twice).
   * *in-process ratio*: interleaved rounds against the same call on a plain SDK server
     (``bench_server.plain_server``), the median of the per-round ratios.
   * *CPU ratio*: in the same rounds, the CPU time of this process per call
     (``time.process_time``), plus redis-server's own (``INFO cpu``) for the Redis store,
     against the plain server's: what the calls cost, less what waiting for the CPU costs on
     a shared machine (a round trip puts both processes to sleep, and on a loaded machine
     each waits for a core to wake up on; the memory store never sleeps).

2. Over HTTP, real processes: ``mcp-sessions demo --store redis://…`` ×2 behind
   ``mcp-sessions gateway`` (two upstreams, sessions pinned by the gateway), against one demo
   behind the gateway; 16 connections, 16 sessions, each one request at a time, each session
   created and used 5 times before the clock and ``commandstats`` start (steady state: a new
   session costs more, e.g. its quota counts the caller's sessions); requests/s, p50, p99, and
   Redis commands and CPU per call over the run.

Run: .venv/bin/python bench/bench_redis.py [--calls 300] [--rounds 7] [--http-requests 100]
     [--skip-http]
Targets (issue #15): <= 1.1 round trips and <= 1.2 commands per call, <= 25 µs Redis CPU per
call, in-process ratio <= 2.0x.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import anyio
import redis
from mcp import Client
from redis.asyncio.connection import Connection

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from tests.fixtures.redis_server import start_redis_server, stop_process  # noqa: E402

import bench_gateway as gw  # noqa: E402  (a sibling script, not a package)
from bench_server import SESSION_META, interleaved, plain_server, sessions_server  # noqa: E402
from mcp_sessions.server import Sessions  # noqa: E402
from mcp_sessions.stores._redis_scripts import SWAP_SCRIPT, TAG_LENGTH  # noqa: E402

# -- counting what crosses the wire ------------------------------------------------------------

_trips = [0]
#: Commands the client sent, by lower-case name (``evalsha``, ``get``, ...).
_sent: dict[str, int] = {}
_original_send = Connection.send_packed_command


def _names(command: Any) -> list[str]:
    chunks = [command] if isinstance(command, bytes | str) else list(command)
    names = []
    for chunk in chunks:
        data = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
        # "*<n>\r\n$<len>\r\n<NAME>\r\n...": one per command (a pipeline sends several).
        if data.startswith(b"*"):
            parts = data.split(b"\r\n", 3)
            if len(parts) > 2:
                names.append(parts[2].decode(errors="replace").lower())
    return names


async def _counting_send(self: Connection, command: Any, check_health: bool = True) -> None:
    _trips[0] += 1
    for name in _names(command):
        _sent[name] = _sent.get(name, 0) + 1
    await _original_send(self, command, check_health)


Connection.send_packed_command = _counting_send  # type: ignore[method-assign]


def commandstats(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """``{command: (calls, usec)}`` from ``INFO commandstats``."""
    stats = client.info("commandstats")
    return {name[len("cmdstat_") :]: (v["calls"], v["usec"]) for name, v in stats.items()}


def server_cpu(client: redis.Redis) -> float:
    """The redis-server process's CPU seconds so far (user + system, all of it)."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def redis_work(
    client: redis.Redis, calls: int, sent: dict[str, int] | None, cpu_before: float
) -> dict[str, Any]:
    """Commands and CPU per call since the last ``CONFIG RESETSTAT`` (INFO and RESETSTAT
    left out). ``sent`` (the client's own count by name, in process only) splits each line
    of ``commandstats`` into the commands sent and those run inside scripts: a script's
    ``usec`` already includes its inner commands, so only the sent share is CPU of its own."""
    cpu = server_cpu(client) - cpu_before
    stats = commandstats(client)
    counted = {n: v for n, v in stats.items() if n not in ("info", "config|resetstat")}
    usec = 0.0
    for name, (total, spent) in counted.items():
        share = 1.0 if sent is None else min(1.0, sent.get(name, 0) / total)
        usec += spent * share
    return {
        "commands": sum(c for c, _ in counted.values()) / calls,
        "usec": usec / calls,
        "cpu_us": cpu * 1e6 / calls,
        "detail": {name: round(c / calls, 2) for name, (c, _) in sorted(counted.items())},
    }


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, redis.Redis]]:
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (scripts/install-test-tools)")
    workdir = Path(tempfile.mkdtemp())
    process, port = start_redis_server(workdir)
    client = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
    try:
        yield f"redis://127.0.0.1:{port}/0", client
    finally:
        client.close()
        stop_process(process)
        shutil.rmtree(workdir, ignore_errors=True)


async def calls_of(client: Client, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        result = await client.call_tool("count", {}, meta=SESSION_META)
        assert not result.is_error, result
    return (time.perf_counter() - start) / calls


#: The value the bare round trip rewrites (a stored record of the bench is ~400 bytes).
TRIP_VALUE = "0" * TAG_LENGTH + "x" * 380


def add_round_trip(target: Sessions, redis_sessions: Sessions) -> None:
    """``target``'s store (memory) runs the Redis store's SWAP script once per write: a
    value of a stored record's size, on a key of its own, on the Redis store's connection."""
    tracked = cast(Any, redis_sessions.engine.store).inner._tracked
    store = cast(Any, target.engine.store).inner
    cas = store.compare_and_set
    tag, value = TRIP_VALUE[:TAG_LENGTH], TRIP_VALUE

    async def compare_and_set(*args: Any, **kwargs: Any) -> Any:
        reply = await SWAP_SCRIPT.on(tracked.execute, "bench:trip", tag, value, 600_000)
        assert reply == 1, reply
        return await cas(*args, **kwargs)

    store.compare_and_set = compare_and_set


async def in_process(url: str, sync: redis.Redis, calls: int, rounds: int) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        mcp, sessions = sessions_server(url)
        stack.push_async_callback(sessions.aclose)
        demo = await stack.enter_async_context(Client(mcp))
        plain = await stack.enter_async_context(Client(plain_server()))
        await calls_of(demo, 50)  # warm-up: the session exists, caches are full

        # Per-call costs, ``rounds`` batches; the median batch. commandstats' usec is the
        # wall time of each command, which on a loaded machine includes the moments
        # redis-server was descheduled in the middle of one: the median keeps such spikes out.
        batches = []
        for _ in range(rounds):
            sync.config_resetstat()
            cpu_before = server_cpu(sync)
            _sent.clear()
            trips = _trips[0]
            await calls_of(demo, calls)
            sent = dict(_sent)
            batch = redis_work(sync, calls, sent, cpu_before)
            batch["trips"] = (_trips[0] - trips) / calls
            batch["sent"] = sum(sent.values()) / calls
            batches.append(batch)
        work = sorted(batches, key=lambda b: float(b["usec"]))[len(batches) // 2]
        work["usec_range"] = (min(b["usec"] for b in batches), max(b["usec"] for b in batches))

        # The memory store in the same rounds: what the session layer costs without Redis.
        memory_mcp, memory_sessions = sessions_server("memory://")
        stack.push_async_callback(memory_sessions.aclose)
        memory = await stack.enter_async_context(Client(memory_mcp))
        # And the memory store plus one bare round trip per write: before each of its
        # compare-and-sets, the SWAP script on a value of the same size, on the Redis
        # store's own connection. The least any design with one round trip per write pays.
        floor_mcp, floor_sessions = sessions_server("memory://")
        stack.push_async_callback(floor_sessions.aclose)
        sync.set("bench:trip", TRIP_VALUE)
        add_round_trip(floor_sessions, sessions)
        floor = await stack.enter_async_context(Client(floor_mcp))
        clients = {"plain": plain, "memory": memory, "memory+trip": floor, "redis": demo}

        cpu: dict[str, list[float]] = {name: [] for name in clients}

        def batch_of(name: str, client: Client) -> Callable[[int], Awaitable[float]]:
            async def batch(n: int) -> float:
                server = server_cpu(sync) if name == "redis" else 0.0
                started = time.process_time()
                seconds = await calls_of(client, n)
                spent = time.process_time() - started
                if name == "redis":
                    spent += server_cpu(sync) - server
                cpu[name].append(spent / n)
                return seconds

            return batch

        setups = {k: batch_of(k, c) for k, c in clients.items()}
        times = await interleaved(setups, calls, rounds)
    for name in ("memory", "memory+trip", "redis"):
        ratios = [r / p for r, p in zip(times[name], times["plain"], strict=True)]
        work[f"{name}_us"] = statistics.median(times[name]) * 1e6
        work[f"{name}_ratio"] = statistics.median(ratios)
        # The last ``rounds`` batches: interleaved() runs one warm-up batch of each first.
        mine, base = cpu[name][-rounds:], cpu["plain"][-rounds:]
        work[f"{name}_cpu_us"] = statistics.median(mine) * 1e6
        work[f"{name}_cpu_ratio"] = statistics.median(
            [m / b for m, b in zip(mine, base, strict=True)]
        )
    work["plain_us"] = statistics.median(times["plain"]) * 1e6
    work["plain_cpu_us"] = statistics.median(cpu["plain"][-rounds:]) * 1e6
    return work


async def measure_steady(
    port: int, sessions: int, requests: int, sync: redis.Redis
) -> tuple[gw.Figures, dict[str, Any]]:
    clients = [gw.Client(port) for _ in range(sessions)]
    payloads = [gw.request_bytes(port, str(uuid.uuid4())) for _ in clients]
    try:
        for client, payload in zip(clients, payloads, strict=True):
            for _ in range(5):  # created and in its replica's copy before the clock starts
                await client.one(payload)
        sync.config_resetstat()
        cpu_before = server_cpu(sync)

        async def run(client: gw.Client, payload: bytes) -> list[float]:
            return [await client.one(payload) for _ in range(requests)]

        started = time.perf_counter()
        results = await asyncio.gather(*map(run, clients, payloads))
        wall = time.perf_counter() - started
    finally:
        for client in clients:
            client.close()
    latencies = [x for r in results for x in r]
    figures = gw.Figures(
        len(latencies) / wall, gw.percentile(latencies, 0.5), gw.percentile(latencies, 0.99)
    )
    return figures, redis_work(sync, len(latencies), None, cpu_before)


def over_http(url: str, sync: redis.Redis, requests: int) -> dict[str, Any]:
    """Gateway → one demo, and gateway → two demos, all on one Redis (16 sessions)."""
    logs = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    procs: list[gw.Proc] = []
    out: dict[str, Any] = {}
    try:
        demos = []
        for n in range(2):
            port = gw.free_port()
            argv = [gw.CLI, "demo", "--port", str(port), "--store", url]
            argv += ["--key-file", str(logs / "keys.txt")]
            demos.append(gw.start(f"demo{n}", argv, port, logs))
            procs.append(demos[-1])
        targets = {}
        for name, upstreams in (("one replica", demos[:1]), ("two replicas", demos)):
            gport = gw.free_port()
            argv = [gw.CLI, "gateway", "--port", str(gport)]
            for demo in upstreams:
                argv += ["--upstream", f"http://127.0.0.1:{demo.port}/mcp"]
            procs.append(gw.start(f"gateway-{len(upstreams)}", argv, gport, logs, "/healthz"))
            targets[name] = gport
        for name, gport in targets.items():
            out[name] = asyncio.run(measure_steady(gport, 16, requests, sync))
    finally:
        for proc in reversed(procs):
            gw.stop(proc)
        shutil.rmtree(logs, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=300, help="calls per batch (in process)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved batches of each")
    parser.add_argument("--http-requests", type=int, default=100, help="per connection")
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args()
    for name in ("httpx", "httpx2", "mcp", "mcp.server.streamable_http_manager"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with redis_server() as (url, sync):
        work = anyio.run(in_process, url, sync, args.calls, args.rounds)
        http = {} if args.skip_http else over_http(url, sync, args.http_requests)

    print(f"In process, {args.calls} calls of `count` in one session (Redis store):\n")
    print("| figure | value | target |")
    print("|---|---|---|")
    print(f"| round trips per call (client-side) | {work['trips']:.2f} | <= 1.1 |")
    print(f"| commands sent per call (client-side) | {work['sent']:.2f} | <= 1.2 |")
    print(
        f"| commands run per call (commandstats, with inside scripts) | {work['commands']:.2f} | |"
    )
    low, high = work["usec_range"]
    print(
        f"| Redis CPU per call (commandstats usec, median batch; {low:.1f}–{high:.1f}) "
        f"| {work['usec']:.1f} µs | <= 25 µs |"
    )
    print(f"| redis-server process CPU per call (INFO cpu) | {work['cpu_us']:.1f} µs | |")
    print(
        f"| in-process ratio vs plain SDK ({work['plain_us']:.0f} µs vs "
        f"{work['redis_us']:.0f} µs, median of {args.rounds} rounds) "
        f"| {work['redis_ratio']:.2f}x | <= 2.0x |"
    )
    print(
        f"| the same with the memory store, for scale ({work['memory_us']:.0f} µs) "
        f"| {work['memory_ratio']:.2f}x | |"
    )
    print(
        f"| the memory store plus one bare SWAP round trip per call ({work['memory+trip_us']:.0f}"
        f" µs): the floor of one round trip | {work['memory+trip_ratio']:.2f}x | |"
    )
    print(
        f"| CPU per call vs plain SDK, this process + redis-server ({work['plain_cpu_us']:.0f} "
        f"µs vs {work['redis_cpu_us']:.0f} µs) | {work['redis_cpu_ratio']:.2f}x | |"
    )
    print(
        f"| CPU per call, memory store ({work['memory_cpu_us']:.0f} µs) "
        f"| {work['memory_cpu_ratio']:.2f}x | |"
    )
    print(
        f"| CPU per call, memory store plus one bare round trip, this process only "
        f"({work['memory+trip_cpu_us']:.0f} µs) | {work['memory+trip_cpu_ratio']:.2f}x | |"
    )
    print(f"\ncommandstats per call: {work['detail']}")
    if http:
        print("\nOver HTTP through the gateway, 16 connections x 16 sessions, one Redis:\n")
        # No commandstats µs here: without the client's own count, a script's inner commands
        # cannot be told from the ones sent, and their time would count twice.
        print(
            "| upstreams | req/s | p50 ms | p99 ms | Redis commands per call "
            "| redis-server CPU µs/call |"
        )
        print("|---|---|---|---|---|---|")
        for name, (f, w) in http.items():
            print(
                f"| {name} | {f.throughput:.0f} | {f.p50 * 1e3:.2f} | {f.p99 * 1e3:.2f} | "
                f"{w['commands']:.2f} | {w['cpu_us']:.1f} |"
            )
        for name, (_, w) in http.items():
            print(f"\ncommandstats per call, {name}: {w['detail']}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
