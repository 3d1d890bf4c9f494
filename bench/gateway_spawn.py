"""The ``--spawn`` part of the gateway benchmark (bench_gateway.py): waiting until the warm
pool is full and nothing is starting (read from the gateway's /metrics), then pairs of single
requests, the first request of a new session (a process from the warm pool) and a request to
a process already serving a session, each after the same quiet pause.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid

from gateway_load import Client, request_bytes


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
