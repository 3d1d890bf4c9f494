"""Gateway benchmark (issue #7): the demo server direct, through ``mcp-sessions gateway``, and
through nginx hashing on ``Mcp-Client-Session-Id``; then ``--spawn`` first requests.

    .venv/bin/python bench/bench_gateway.py            # about two minutes
    .venv/bin/python bench/bench_gateway.py --quick    # smaller counts

Every server is a real process on 127.0.0.1 (the demo with a memory store, one gateway with
that one upstream, Debian's nginx with the configuration ``--emit-config nginx`` prints),
started here and stopped by its PID. The load is ``tools/call count`` — a session read and a
compare-and-set write in the demo — as a 2026-07-28 client sends it (``_meta`` id and header),
over keep-alive HTTP/1.1 connections from a minimal client, so that the client costs little of
the two cores:

* sequential: one connection, one request at a time (latency);
* concurrent: 16 connections, 16 sessions, each one request at a time (throughput).

The targets run interleaved, round after round, each round starting with another one, and
each figure is the best round (background noise then hits all alike). Targets: gateway
throughput (concurrent) >= 0.8x direct; added p50 latency (sequential) <= 1 ms.

Spawn: ``mcp-sessions gateway --spawn 'mcp-sessions demo --stdio'`` with a warm pool. In pairs,
each after the same quiet pause (pool full, nothing starting): the first request of a new
session (a process from the warm pool) and a request to a process already serving a session;
target: median first request <= 1.2x the median request to a running process. Run with the
default probe, and with a ``--spawn-warmup`` request that runs the tool once per process.

Comparing two versions of the gateway (issue #17, the upstream parser): ``--baseline DIR``,
DIR holding an earlier ``src/`` (``git archive <commit> src | tar -x -C DIR``), adds a
``gateway-before`` target run from it, interleaved with the others; ``--parsers`` times
only the parsing of one upstream response (head + 120-byte body) by this tree's
``gateway/http1.py``, the baseline's, and h11, in interleaved rounds:

    .venv/bin/python bench/bench_gateway.py --baseline /tmp/base --skip-spawn
    .venv/bin/python bench/bench_gateway.py --baseline /tmp/base --parsers
"""

# The docstring above is also --help. This script runs the benchmark and prints its tables; the
# parts live beside it, by concept: gateway_procs.py (starting and stopping the servers, nginx),
# gateway_load.py (the client, the load and its figures), gateway_spawn.py (the --spawn pairs)
# and gateway_parsers.py (--parsers).

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

# bench_redis.py imports this script as ``gw`` and uses these names from it.
from gateway_load import Client as Client
from gateway_load import Figures, best, measure, ms
from gateway_load import percentile as percentile
from gateway_load import request_bytes as request_bytes
from gateway_parsers import bench_parsers
from gateway_procs import CLI, Proc, free_port, start, start_nginx, stop
from gateway_spawn import spawn_round


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", type=Path, help="an earlier src/ to compare the gateway with")
    parser.add_argument("--parsers", action="store_true", help="time the response parsers only")
    parser.add_argument("--skip-spawn", action="store_true")
    args = parser.parse_args()
    if args.parsers:
        bench_parsers(args.baseline, max(args.rounds, 5), 20000)
        return
    sequential_n = 300 if args.quick else 1000
    concurrent_n = 60 if args.quick else 150
    connections = 16
    spawn_sessions = 5 if args.quick else 11

    logs = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    procs: list[Proc] = []
    try:
        port = free_port()
        demo = start(
            "demo",
            [
                CLI,
                "demo",
                "--port",
                str(port),
                "--store",
                "memory://",
                "--key-file",
                str(logs / "keys.txt"),
            ],
            port,
            logs,
        )
        procs.append(demo)
        gport = free_port()
        gateway = start(
            "gateway",
            [CLI, "gateway", "--upstream", f"http://127.0.0.1:{port}/mcp", "--port", str(gport)],
            gport,
            logs,
            "/healthz",
        )
        procs.append(gateway)
        before = None
        if args.baseline is not None:
            bport = free_port()
            env = {**os.environ, "PYTHONPATH": str(args.baseline.resolve())}
            argv = [sys.executable, "-c", "from mcp_sessions.cli import main; main()", "gateway"]
            upstream = ["--upstream", f"http://127.0.0.1:{port}/mcp", "--port", str(bport)]
            before = start("gateway-before", argv + upstream, bport, logs, "/healthz", env)
            procs.append(before)
        nginx = start_nginx(demo, logs)
        if nginx is not None:
            procs.append(nginx)
        targets = {"direct": port, "gateway": gport}
        if before is not None:
            targets["gateway-before"] = before.port
        if nginx is not None:
            targets["nginx"] = nginx.port

        print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        sequential: dict[str, list[Figures]] = {name: [] for name in targets}
        concurrent: dict[str, list[Figures]] = {name: [] for name in targets}
        names = list(targets)
        for round_number in range(args.rounds):
            # Each round starts with another target, so none always runs first or last.
            shift = round_number % len(names)
            order = names[shift:] + names[:shift]
            for name in order:
                sequential[name].append(asyncio.run(measure(targets[name], 1, sequential_n)))
            for name in order:
                concurrent[name].append(
                    asyncio.run(measure(targets[name], connections, concurrent_n))
                )

        print(
            f"rounds: {args.rounds} (best kept); sequential: {sequential_n} requests; "
            f"concurrent: {connections} connections x {concurrent_n} requests"
        )
        direct_seq, direct_con = best(sequential["direct"]), best(concurrent["direct"])
        print("\n| path | mode | req/s | p50 ms | p99 ms | throughput vs direct | added p50 ms |")
        print("|---|---|---|---|---|---|---|")
        for mode, table, base in (
            ("sequential", sequential, direct_seq),
            ("concurrent", concurrent, direct_con),
        ):
            for name in targets:
                f = best(table[name])
                print(
                    f"| {name} | {mode} | {f.throughput:.0f} | {ms(f.p50)} | {ms(f.p99)} | "
                    f"{f.throughput / base.throughput:.2f}x | {ms(f.p50 - base.p50)} |"
                )
        g_seq, g_con = best(sequential["gateway"]), best(concurrent["gateway"])
        # Throughput is a saturation figure: the concurrent mode. (Sequentially, requests per
        # second are just 1 / latency, which the added-p50 target covers.)
        ratio = g_con.throughput / direct_con.throughput
        added = g_seq.p50 - direct_seq.p50
        print(
            f"\ngateway throughput vs direct (concurrent): {ratio:.2f}x (target >= 0.80x: "
            f"{'met' if ratio >= 0.8 else 'NOT met'})"
        )
        print(
            f"gateway added p50, sequential: {ms(added)} ms (target <= 1 ms: "
            f"{'met' if added <= 0.001 else 'NOT met'})"
        )
        if nginx is None:
            print("nginx: not installed (scripts/install-test-tools installs it); skipped")
        if before is not None:
            b_seq, b_con = best(sequential["gateway-before"]), best(concurrent["gateway-before"])
            print(
                f"gateway vs gateway-before: throughput (concurrent) "
                f"{g_con.throughput / b_con.throughput:.2f}x, sequential "
                f"{g_seq.throughput / b_seq.throughput:.2f}x, p50 (sequential) "
                f"{ms(g_seq.p50)} vs {ms(b_seq.p50)} ms"
            )
        for proc in (gateway, demo, *([before] if before else [])):
            stop(proc)
        procs = [p for p in procs if p not in (gateway, demo, before)]
        if args.skip_spawn:
            print("\nload average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
            return

        # Spawn: first request of a new session (warm pool) vs a request to a running process,
        # with the default probe, then with a --spawn-warmup request that runs the tool once.
        warm = 2
        warmup = json.dumps(
            {
                "method": "tools/call",
                "params": {
                    "name": "count",
                    "arguments": {},
                    "_meta": {"dev.mcpsessions/sessionId": "warmup-{random}"},
                },
            }
        )
        for label, extra in (
            ("default probe", []),
            ("--spawn-warmup count", ["--spawn-warmup", warmup]),
        ):
            sport = free_port()
            spawner = start(
                "spawn",
                [
                    CLI,
                    "gateway",
                    "--spawn",
                    f"{CLI} demo --stdio --store memory://",
                    "--warm",
                    str(warm),
                    "--warm-legacy",
                    "0",
                    "--port",
                    str(sport),
                    *extra,
                ],
                sport,
                logs,
                "/healthz",
            )
            procs.append(spawner)
            try:
                firsts, running = asyncio.run(spawn_round(sport, spawn_sessions, warm))
            finally:
                stop(spawner)
                procs.remove(spawner)
            first, steady = statistics.median(firsts), statistics.median(running)
            print(f"\n--spawn ({label}): {spawn_sessions} new sessions, each from the warm pool")
            print("| request | median ms | min ms | max ms |")
            print("|---|---|---|---|")
            print(
                f"| first request of a new session | {ms(first)} | {ms(min(firsts))} | "
                f"{ms(max(firsts))} |"
            )
            print(
                f"| request to a running process | {ms(steady)} | {ms(min(running))} | "
                f"{ms(max(running))} |"
            )
            spawn_ratio = first / steady
            print(
                f"\nfirst request vs running process: {spawn_ratio:.2f}x (target <= 1.2x: "
                f"{'met' if spawn_ratio <= 1.2 else 'NOT met'})"
            )
        print("\nload average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    finally:
        for proc in procs:
            stop(proc)
        if sys.exc_info()[0] is None:
            shutil.rmtree(logs, ignore_errors=True)
        else:
            print(f"logs kept in {logs}", file=sys.stderr)


if __name__ == "__main__":
    main()
