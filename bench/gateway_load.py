"""The load of the gateway benchmark (bench_gateway.py, also used by bench_redis.py):
``tools/call count`` as a 2026-07-28 client sends it (``_meta`` id and header), over
keep-alive HTTP/1.1 connections from a minimal client built on the gateway's own connection
code, so that the client costs little of the two cores; and the figures of a run
(throughput, p50, p99) and of the best of several rounds.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass

from mcp_sessions.gateway.http1 import Connection, ConnectionPool, HopDeadlines

ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"},
}


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


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"
