"""What the OpenTelemetry hooks cost with no SDK configured (issue #13), in nanoseconds.

The per-request check (``SessionTelemetry.active``, read by the session middleware) and a
store call through the outage guard with and without telemetry attached (every request makes
two or three). End-to-end runs (``bench_server.py``, ``bench_ab.py``) cannot resolve a few
hundred nanoseconds in a call of a few hundred microseconds on a shared machine; this can.

Run: .venv/bin/python bench/bench_otel_off.py
"""

from __future__ import annotations

import asyncio
import time
import timeit

from mcp_sessions.core.records import Record
from mcp_sessions.server.outage import GuardedStore
from mcp_sessions.stores import open_store
from mcp_sessions.telemetry import SessionTelemetry

CHECKS = 1_000_000
STORE_CALLS = 200_000


async def store_get_ns(telemetry: SessionTelemetry) -> dict[str, float]:
    guarded = GuardedStore(open_store("memory://"))
    await guarded.start()
    record = Record.new(
        kind="session", id="s" * 32, principal="p", origin="client", now=time.time(), idle_ttl=3600
    )
    await guarded.create(record)

    async def per_call() -> float:
        started = time.perf_counter()
        for _ in range(STORE_CALLS):
            await guarded.get("session", record.id, "p")
        return (time.perf_counter() - started) / STORE_CALLS * 1e9

    found: dict[str, list[float]] = {}
    for label, attached in [("without telemetry", None), ("with telemetry, no SDK", telemetry)] * 3:
        guarded.telemetry = attached
        found.setdefault(label, []).append(await per_call())
    return {label: min(values) for label, values in found.items()}


def main() -> None:
    telemetry = SessionTelemetry()
    assert not telemetry.active, "an SDK provider is configured: this measures the off path"
    check = min(timeit.repeat(lambda: telemetry.active, number=CHECKS, repeat=5)) / CHECKS * 1e9
    print(f"SessionTelemetry.active, no SDK: {check:.0f} ns per request (timeit's call included)")
    for label, ns in asyncio.run(store_get_ns(telemetry)).items():
        print(f"GuardedStore.get (memory) {label}: {ns:.0f} ns")


if __name__ == "__main__":
    main()
