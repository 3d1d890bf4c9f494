"""Several gateway replicas sharing one Redis: affinity holds whichever replica a request hits."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import httpx2
import pytest

from mcp_sessions.gateway.routing import choose

from .helpers import (
    Proc,
    acall,
    call,
    fast_health,
    kill,
    legacy_call,
    legacy_headers,
    legacy_initialize,
    new_id,
    start_demo,
    start_gateway,
    start_upstream,
    stop,
    upstream_args,
)

pytestmark = pytest.mark.redis


@pytest.fixture
def replicas(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[tuple[list[Proc], list[Proc]]]:
    logs = tmp_path_factory.mktemp("gateway-redis")
    procs: list[Proc] = []
    try:
        upstreams = [start_upstream(logs, name) for name in ("a", "b", "c")]
        procs += upstreams
        gateways = [
            start_gateway(logs, f"r{i}", *upstream_args(*upstreams), "--store", redis_url)
            for i in (1, 2)
        ]
        procs += gateways
        yield gateways, upstreams
    finally:
        for proc in procs:
            stop(proc)


@pytest.mark.anyio
async def test_affinity_holds_across_two_gateway_replicas(
    replicas: tuple[list[Proc], list[Proc]],
) -> None:
    (one, two), _ = replicas
    async with httpx2.AsyncClient(timeout=30) as client:
        for _ in range(6):
            sid = new_id()
            # Parallel first calls through both replicas at once: they agree on the upstream
            # without talking to each other, so no update is lost.
            values: list[int] = []

            async def hit(gateway: Proc, i: int, sid: str = sid, out: list[int] = values) -> None:
                reply = await acall(client, gateway.url, "count", sid=sid, request_id=i)
                out.append(int(reply.value))

            async with anyio.create_task_group() as group:
                for i in range(10):
                    group.start_soon(hit, (one, two)[i % 2], i)
            assert sorted(values) == list(range(1, 11))
            names = set()
            for i in range(4):
                reply = await acall(client, (one, two)[i % 2].url, "whoami", sid=sid)
                names.add(reply.value["name"])
            assert len(names) == 1


def test_legacy_pins_are_shared_through_redis(
    replicas: tuple[list[Proc], list[Proc]],
) -> None:
    """``initialize`` through one replica; every later request, and ``DELETE``, through the
    other. Only the pin in Redis can send them to the replica that minted the id."""
    (one, two), _ = replicas
    with httpx2.Client(timeout=20) as client:
        for _ in range(6):
            session_id = legacy_initialize(client, one.url)
            assert legacy_call(client, two.url, session_id, "count").value == 1
            assert legacy_call(client, one.url, session_id, "count").value == 2
            assert legacy_call(client, two.url, session_id, "count").value == 3
            deleted = client.delete(two.url, headers=legacy_headers(session_id))
            assert 200 <= deleted.status_code < 300, deleted.text
            assert legacy_call(client, one.url, session_id, "count").status == 404


def test_failover_move_continues_sessions_on_upstreams_sharing_a_store(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> None:
    """Demo servers on one Redis store serve any session; with ``--failover move`` a session
    whose upstream dies continues on the next one, state intact."""
    logs = tmp_path_factory.mktemp("gateway-move")
    procs: list[Proc] = []
    try:
        demos = [start_demo(logs, name, store=redis_url) for name in ("x", "y")]
        procs += demos
        gateway = start_gateway(
            logs,
            "move",
            *upstream_args(*demos),
            "--store",
            redis_url,
            "--failover",
            "move",
            *fast_health(),
        )
        procs.append(gateway)
        with httpx2.Client(timeout=20) as client:
            sid = new_id()
            for expected in (1, 2, 3):
                assert call(client, gateway.url, "count", sid=sid).value == expected
            home = choose(sid, [d.url for d in demos])
            kill(next(d for d in demos if d.url == home))
            assert call(client, gateway.url, "count", sid=sid).value == 4
            assert call(client, gateway.url, "count", sid=sid).value == 5
    finally:
        for proc in procs:
            stop(proc)
