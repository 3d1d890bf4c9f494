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

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from mcp_sessions.gateway.http1 import Connection, ConnectionPool, HopDeadlines

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("mcp-sessions"))
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- processes --------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    port: int


def start(
    name: str,
    argv: list[str],
    port: int,
    logs: Path,
    ready_path: str = "/",
    env: dict[str, str] | None = None,
) -> Proc:
    log = (logs / f"{name}.log").open("wb")
    popen = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
    )
    log.close()
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"{name} exited: {(logs / f'{name}.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=1):
                return Proc(name, popen, port)
        except urllib.error.HTTPError:
            return Proc(name, popen, port)  # it answers: up
        except OSError:
            time.sleep(0.05)
    stop(Proc(name, popen, port))
    raise RuntimeError(f"{name} did not start")


def stop(proc: Proc) -> None:
    if proc.popen.poll() is None:
        os.kill(proc.popen.pid, signal.SIGTERM)
        try:
            proc.popen.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait(10)


def nginx_binary() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )


def start_nginx(upstream: Proc, logs: Path) -> Proc | None:
    binary = nginx_binary()
    if binary is None:
        return None
    port = free_port()
    snippet = subprocess.run(
        [
            CLI,
            "gateway",
            "--upstream",
            f"http://127.0.0.1:{upstream.port}/mcp",
            "--port",
            str(port),
            "--emit-config",
            "nginx",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    directory = logs / "nginx"
    directory.mkdir()
    (directory / "mcp.conf").write_text(snippet)
    temp = "\n".join(
        f"  {n}_temp_path {directory / n};"
        for n in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = directory / "nginx.conf"
    conf.write_text(
        f"worker_processes 1;\ndaemon off;\npid {directory / 'nginx.pid'};\n"
        f"error_log {directory / 'error.log'};\nevents {{ worker_connections 1024; }}\n"
        f"http {{\n  access_log off;\n{temp}\n  include {directory / 'mcp.conf'};\n}}\n"
    )
    return start(
        "nginx",
        [binary, "-e", str(directory / "error.log"), "-p", str(directory), "-c", str(conf)],
        port,
        logs,
    )


# -- load -------------------------------------------------------------------------------------


def request_bytes(port: int, sid: str, request_id: int = 1) -> bytes:
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {
                "name": "count",
                "arguments": {},
                "_meta": {**ENVELOPE, "dev.mcpsessions/sessionId": sid},
            },
        }
    ).encode()
    head = (
        f"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        "accept: application/json, text/event-stream\r\nmcp-protocol-version: 2026-07-28\r\n"
        f"mcp-method: tools/call\r\nmcp-name: count\r\nmcp-client-session-id: {sid}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


class Client:
    """One keep-alive connection, reopened when the server closes it (nginx does after
    ``keepalive_requests``, 1000 by default)."""

    def __init__(self, port: int) -> None:
        self.pool = ConnectionPool("127.0.0.1", port, HopDeadlines(read=30))
        self.connection: Connection | None = None

    async def one(self, payload: bytes) -> float:
        if self.connection is None:
            self.connection = await self.pool.connect()
        connection = self.connection
        started = time.perf_counter()
        await connection.send(payload)
        head = await connection.read_head()
        body = b"".join([chunk async for chunk in connection.body(head)])
        elapsed = time.perf_counter() - started
        if not head.keep_alive:
            connection.close()
            self.connection = None
        if head.status != 200 or b'"isError":false' not in body.replace(b" ", b""):
            raise RuntimeError(f"bad answer {head.status}: {body[:300]!r}")
        return elapsed

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


async def worker(port: int, requests: int, warmup: int) -> list[float]:
    client = Client(port)
    payload = request_bytes(port, str(uuid.uuid4()))
    try:
        for _ in range(warmup):
            await client.one(payload)
        return [await client.one(payload) for _ in range(requests)]
    finally:
        client.close()


@dataclass
class Figures:
    throughput: float
    p50: float
    p99: float


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(port: int, connections: int, requests: int) -> Figures:
    try:
        return await _measure(port, connections, requests)
    except Exception as exc:
        raise RuntimeError(f"measuring port {port}: {exc}") from exc


async def _measure(port: int, connections: int, requests: int) -> Figures:
    warmup = max(5, requests // 20)
    started = time.perf_counter()
    results = await asyncio.gather(*(worker(port, requests, warmup) for _ in range(connections)))
    wall = time.perf_counter() - started
    latencies = [x for r in results for x in r]
    # Throughput over the timed requests only: subtract the warm-up share of the wall time.
    timed = wall * len(latencies) / (len(latencies) + warmup * connections)
    return Figures(len(latencies) / timed, percentile(latencies, 0.5), percentile(latencies, 0.99))


def best(rounds: list[Figures]) -> Figures:
    return Figures(
        max(r.throughput for r in rounds), min(r.p50 for r in rounds), min(r.p99 for r in rounds)
    )


# -- spawn ------------------------------------------------------------------------------------


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def quiet_pool(port: int, warm: int, within: float = 60) -> None:
    """Wait until the pool is full and nothing is starting, then a little longer (a process
    just warmed may still be finishing its probe): timing then sees a quiet machine."""
    await asyncio.sleep(0.5)  # the gateway refills a moment after a take
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        warm_now = await asyncio.to_thread(metric, port, 'mcp_gateway_processes{state="warm"}')
        starting = await asyncio.to_thread(metric, port, 'mcp_gateway_processes{state="starting"}')
        if warm_now >= warm and starting == 0:
            await asyncio.sleep(0.3)
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the warm pool did not fill")


async def spawn_round(port: int, sessions: int, warm: int) -> tuple[list[float], list[float]]:
    """Pairs of single requests, each after the same quiet pause, over one keep-alive
    connection (a client already talking to the gateway): the first request of a new session
    (a process from the warm pool), and a request to a process already serving a session."""
    firsts: list[float] = []
    running: list[float] = []
    client = Client(port)
    try:
        reference = str(uuid.uuid4())
        for j in range(20):  # the reference session's process is up and has served it
            await client.one(request_bytes(port, reference, 1000 + j))
        for i in range(sessions):
            await quiet_pool(port, warm)
            firsts.append(await client.one(request_bytes(port, str(uuid.uuid4()), i)))
            await quiet_pool(port, warm)  # the refill behind that session has finished
            running.append(await client.one(request_bytes(port, reference, 2000 + i)))
    finally:
        client.close()
    return firsts, running


# -- main -------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


# -- parsers ----------------------------------------------------------------------------------

_BODY = json.dumps(
    {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "12345"}]}}
).encode()
UPSTREAM_BODY = _BODY + b" " * (120 - len(_BODY))
UPSTREAM_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ndate: Tue, 01 Dec 2026 00:00:00 GMT\r\nserver: uvicorn\r\n"
    b"content-type: application/json\r\nmcp-session-id: 4f1c2a9e000040008000000000000001\r\n"
    b"content-length: 120\r\n\r\n" + UPSTREAM_BODY
)


async def parse_with_http1(module: object, count: int) -> float:
    """Seconds per response read by ``module``'s :class:`Connection` (head and body under
    one deadline, as the proxy reads a JSON-RPC answer), from an in-memory stream."""
    connection_type = module.Connection  # type: ignore[attr-defined]
    deadlines_type = getattr(module, "HopDeadlines", None)
    started = time.perf_counter()
    for _ in range(count):
        reader = asyncio.StreamReader(limit=64 * 1024)
        reader.feed_data(UPSTREAM_RESPONSE)
        if deadlines_type is not None:
            connection = connection_type(reader, None, deadlines_type(read=5))
            head, body = await connection.read_response(small=65536)
        else:  # before issue #17: a timeout argument
            connection = connection_type(reader, None)
            head, body = await connection.read_response(5, small=65536)
        if head.status != 200 or body != UPSTREAM_BODY:
            raise RuntimeError("parse failed")
    return (time.perf_counter() - started) / count


async def parse_with_h11(count: int) -> float:
    """The same with h11 (a client connection that sent a request first, as h11 requires)."""
    import h11

    request = h11.Request(
        method="POST", target="/mcp", headers=[("host", "a"), ("content-length", "0")]
    )
    started = time.perf_counter()
    for _ in range(count):
        reader = asyncio.StreamReader(limit=64 * 1024)
        reader.feed_data(UPSTREAM_RESPONSE)
        async with asyncio.timeout(5):
            connection = h11.Connection(h11.CLIENT)
            connection.send(request)
            connection.send(h11.EndOfMessage())
            connection.receive_data(await reader.readuntil(b"\r\n\r\n"))
            head = connection.next_event()
            connection.receive_data(await reader.readexactly(len(UPSTREAM_BODY)))
            data = connection.next_event()
            connection.next_event()  # EndOfMessage
        if not isinstance(head, h11.Response) or getattr(data, "data", b"") != UPSTREAM_BODY:
            raise RuntimeError("parse failed")
    return (time.perf_counter() - started) / count


def bench_parsers(baseline: Path | None, rounds: int, count: int) -> None:
    from mcp_sessions.gateway import http1

    parsers: dict[str, object] = {"this tree (httptools)": http1}
    if baseline is not None:
        path = baseline / "mcp_sessions" / "gateway" / "http1.py"
        spec = importlib.util.spec_from_file_location("http1_before", path)
        assert spec is not None and spec.loader is not None
        before = importlib.util.module_from_spec(spec)
        sys.modules["http1_before"] = before  # dataclasses look their module up there
        spec.loader.exec_module(before)
        parsers["baseline (hand parser)"] = before
    times: dict[str, list[float]] = {name: [] for name in [*parsers, "h11"]}
    for _ in range(rounds):
        for name, module in parsers.items():
            times[name].append(asyncio.run(parse_with_http1(module, count)))
        times["h11"].append(asyncio.run(parse_with_h11(count)))
    print(f"parsing one upstream response, {count} per round, {rounds} rounds (best kept)")
    print("| parser | µs per response (best) | median of rounds |")
    print("|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {min(values) * 1e6:.1f} | {statistics.median(values) * 1e6:.1f} |")


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
