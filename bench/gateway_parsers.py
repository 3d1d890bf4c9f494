"""The ``--parsers`` part of the gateway benchmark (bench_gateway.py, issue #17): the time
to parse one upstream response (head + 120-byte body, read from memory) by this tree's
``gateway/http1.py``, by a baseline's (an earlier ``src/``), and by h11, in interleaved
rounds; prints a Markdown table.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

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
