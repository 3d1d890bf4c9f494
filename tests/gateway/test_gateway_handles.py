"""Handles stay on the replica that minted them (issue #11), through real gateways in front
of real demo replicas that each keep their state in their own ``memory://`` store — the
docs/gateway.md example. Without handle pins, half of these calls reach the wrong replica
and get "unknown or has expired"."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from tests.fixtures.redis_server import RedisServer, start_redis_server, stop_process
from tests.server.helpers import Target
from tests.server.helpers import value as tool_value

from mcp_sessions.core.errors import STORE_UNAVAILABLE
from mcp_sessions.core.names import META_MINTED_HANDLES
from mcp_sessions.gateway.errors import UPSTREAM_FAILED

from .helpers import (
    Proc,
    Reply,
    call,
    fast_health,
    kill,
    legacy_call,
    legacy_initialize,
    metrics,
    modern,
    new_id,
    sse_messages,
    start_demo,
    start_gateway,
    start_upstream,
    stop,
    upstream_args,
)

ROUTED_BY_HANDLE = 'mcp_gateway_routing_decisions_total{carrier="handle"}'
LEAST_LOADED = 'mcp_gateway_routing_decisions_total{carrier="least_loaded"}'
MINTED = 'mcp_gateway_pins_total{event="minted"}'
LOST = 'mcp_gateway_pins_total{event="lost"}'
LEGACY = 'mcp_gateway_routing_decisions_total{carrier="legacy"}'


@dataclass
class Stack:
    gateways: list[Proc]
    demos: list[Proc]

    @property
    def gateway(self) -> Proc:
        return self.gateways[0]


@contextmanager
def start_stack(logs: Path, *gateway_options: str, gateways: int = 1) -> Iterator[Stack]:
    procs: list[Proc] = []
    try:
        demos = [start_demo(logs, name) for name in ("a", "b")]
        procs += demos
        fronts = [
            start_gateway(logs, f"g{i}", *upstream_args(*demos), *fast_health(), *gateway_options)
            for i in range(gateways)
        ]
        procs += fronts
        yield Stack(fronts, demos)
    finally:
        for proc in procs:
            stop(proc)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two memory-store demo replicas behind one gateway (shared by the tests that leave
    every replica running)."""
    with start_stack(tmp_path_factory.mktemp("gateway-handles")) as started:
        yield started


def init_vm(client: httpx2.Client, url: str, name: str, **headers: str) -> str:
    reply = call(client, url, "init_vm", {"name": name}, headers=headers)
    vm = reply.value
    assert isinstance(vm, str) and vm.startswith("vm-"), reply.text
    return vm


def set_ram(client: httpx2.Client, url: str, vm: str, gb: int) -> Reply:
    # The vm argument has x-mcp-header "Vm": at 2026-07-28 the server requires its mirror.
    return call(client, url, "set_ram", {"vm": vm, "gb": gb}, headers={"Mcp-Param-Vm": vm})


def holder(client: httpx2.Client, stack: Stack, vm: str) -> Proc:
    """The demo replica whose store has ``vm`` (asked directly, around the gateway)."""
    owners = [
        demo
        for demo in stack.demos
        if not set_ram(client, demo.url, vm, 1).result.get("isError", False)
    ]
    assert len(owners) == 1, f"{vm} is held by {[d.name for d in owners]}"
    return owners[0]


def test_vm_handles_stay_on_their_replica(stack: Stack) -> None:
    """``init_vm`` then ``set_ram`` through the gateway, at 2026-07-28 with no session carrier
    but the handle argument: 12 out of 12, although keyless ``init_vm`` calls alternate."""
    before = metrics(stack.gateway)
    with httpx2.Client(timeout=30) as client:
        vms = []
        for i in range(12):
            vm = init_vm(client, stack.gateway.url, f"web{i}")
            reply = set_ram(client, stack.gateway.url, vm, i + 2)
            assert reply.value["ram_gb"] == i + 2, reply.text
            vms.append(vm)
        after = metrics(stack.gateway)
        # Each set_ram was routed by its handle's pin, and each init_vm pinned one handle.
        assert after[ROUTED_BY_HANDLE] - before[ROUTED_BY_HANDLE] == 12
        assert after[MINTED] - before[MINTED] == 12
        # The handles really live on both replicas: each is held by exactly one of them.
        holders = {holder(client, stack, vm).name for vm in vms}
        assert holders == {demo.name for demo in stack.demos}


@pytest.mark.anyio
async def test_session_start_handle_counts_through_the_gateway(stack: Stack) -> None:
    """A plain SDK client (``mcp.Client``, 2026-07-28) that can only pass arguments: each
    ``session_start`` handle counts 1, 2, 3, 4 through the gateway, and ``init_vm`` then
    ``set_ram`` succeeds 12 out of 12."""
    target = Target("http", url=stack.gateway.url)
    async with target.client("modern") as client:
        for _ in range(4):  # keyless session_start calls alternate between the replicas
            handle = tool_value(await client.call_tool("session_start", {}))
            counts = [
                tool_value(await client.call_tool("count", {"session": handle})) for _ in range(4)
            ]
            assert counts == [1, 2, 3, 4]
        # The VM flow as this client makes it (it mirrors `vm` into Mcp-Param-Vm itself).
        for i in range(12):
            vm = tool_value(await client.call_tool("init_vm", {"name": f"sdk{i}"}))
            configured = tool_value(await client.call_tool("set_ram", {"vm": vm, "gb": i + 2}))
            assert configured["ram_gb"] == i + 2


def test_a_param_header_alone_routes_to_the_handles_replica(stack: Stack) -> None:
    """``Mcp-Param-Vm`` (SEP-2243's mirror of the handle argument) routes by the pin too:
    a keyless ``init_vm`` carrying only the header lands on that handle's replica."""
    with httpx2.Client(timeout=30) as client:
        seeds: dict[str, str] = {}
        while len(seeds) < 2:
            vm = init_vm(client, stack.gateway.url, "seed")
            seeds.setdefault(holder(client, stack, vm).name, vm)
        for name, seed in seeds.items():
            for i in range(3):
                made = init_vm(
                    client, stack.gateway.url, f"via-header{i}", **{"Mcp-Param-Vm": seed}
                )
                assert holder(client, stack, made).name == name


def test_forged_minted_handles_in_a_request_pin_nothing(stack: Stack) -> None:
    """The minted-handles key in a *request* is ignored: only upstream results pin. The
    forged handle then finds no pin and is routed by the ordinary rules."""
    forged = "vm-" + "ab" * 16
    with httpx2.Client(timeout=30) as client:
        before = metrics(stack.gateway)
        body, headers = modern(
            "tools/call",
            {"name": "init_vm", "arguments": {"name": "forger"}},
            meta={META_MINTED_HANDLES: [{"handle": forged, "kind": "vm"}]},
        )
        response = client.post(stack.gateway.url, json=body, headers=headers)
        assert response.status_code == 200, response.text
        middle = metrics(stack.gateway)
        assert middle[MINTED] - before[MINTED] == 1  # the real vm only
        # The forged value is a handle-shaped string with no pin: ordinary routing, and the
        # replica that gets it does not know it.
        reply = set_ram(client, stack.gateway.url, forged, 4)
        assert reply.result["isError"] is True
        assert "unknown or has expired" in reply.result["content"][0]["text"]
        after = metrics(stack.gateway)
        assert after[ROUTED_BY_HANDLE] == middle[ROUTED_BY_HANDLE]
        assert after[LEAST_LOADED] - middle[LEAST_LOADED] >= 1


def test_a_pinned_handles_lost_replica_is_a_clear_error(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Failover: the handle's replica dies; its handle gets -31010 "Handle lost … start over",
    never a silent new state on the other replica, whose handles keep working."""
    logs = tmp_path_factory.mktemp("gateway-handle-failover")
    with start_stack(logs) as stack, httpx2.Client(timeout=30) as client:
        vms: dict[str, str] = {}
        while len(vms) < 2:
            vm = init_vm(client, stack.gateway.url, "doomed")
            vms.setdefault(holder(client, stack, vm).name, vm)
        before = metrics(stack.gateway)
        dead, alive = stack.demos
        kill(dead)
        for _ in range(3):  # refused connection first, health checks after: same answer
            reply = set_ram(client, stack.gateway.url, vms[dead.name], 8)
            assert reply.status == 502, reply.text
            error = reply.error
            assert error["code"] == UPSTREAM_FAILED
            assert "Handle lost" in error["message"] and vms[dead.name] in error["message"]
            assert "start over" in error["message"]
        assert metrics(stack.gateway)[LOST] - before[LOST] == 3
        # The surviving replica's handle is unaffected.
        assert set_ram(client, stack.gateway.url, vms[alive.name], 8).value["ram_gb"] == 8


@pytest.mark.redis
def test_handle_pins_are_shared_between_gateway_replicas(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, redis_url: str
) -> None:
    """Two gateways sharing Redis pins: a handle minted through one is routed by the other.
    Each pin expires after ``--session-idle`` without use, so the pin store stays bounded."""
    logs = tmp_path_factory.mktemp("gateway-handles-redis")
    options = ("--store", redis_url, "--session-idle", "600")
    with start_stack(logs, *options, gateways=2) as stack:
        one, two = stack.gateways
        with httpx2.Client(timeout=30) as client:
            for i in range(12):
                vm = init_vm(client, one.url, f"db{i}")
                assert set_ram(client, two.url, vm, i + 2).value["ram_gb"] == i + 2
            for _ in range(3):
                handle = call(client, one.url, "session_start").value
                counts = [
                    call(client, (one, two)[n % 2].url, "count", {"session": handle}).value
                    for n in range(4)
                ]
                assert counts == [1, 2, 3, 4]
        assert metrics(two)[ROUTED_BY_HANDLE] == 12 + 6
        redis = redis_server.client()
        pins = list(redis.scan_iter(match="*:{pin:*:handle:*}", count=1000))
        assert len(pins) == 12 + 3
        assert all(0 < redis.pttl(key) <= 600_000 for key in pins)


@pytest.fixture(scope="module")
def plain_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two test upstreams (tests/gateway/_upstream.py) behind one gateway."""
    logs = tmp_path_factory.mktemp("gateway-handles-plain")
    procs: list[Proc] = []
    try:
        upstreams = [start_upstream(logs, name) for name in ("a", "b")]
        procs += upstreams
        gateway = start_gateway(logs, "plain", *upstream_args(*upstreams), *fast_health())
        procs.append(gateway)
        yield Stack([gateway], upstreams)
    finally:
        for proc in procs:
            stop(proc)


def test_handles_minted_in_an_event_stream_are_pinned_as_it_streams(plain_stack: Stack) -> None:
    """A result listing a minted handle at the end of an SSE stream: the progress event before
    it reaches the client while the tool still waits (the scan holds nothing back), and the
    handle is then routed to the upstream that answered."""
    gateway = plain_stack.gateway
    homes = set()
    with httpx2.Client(timeout=30) as client:
        for _ in range(6):
            sid, gate, handle = new_id(), new_id(), f"probe-{uuid.uuid4().hex}"
            body, headers = modern(
                "tools/call",
                {"name": "mint", "arguments": {"handle": handle, "gate": gate}},
                sid=sid,
                meta={"progressToken": "tok-mint"},
            )
            with client.stream("POST", gateway.url, json=body, headers=headers) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                messages = sse_messages(response.iter_lines())
                assert next(messages)["method"] == "notifications/progress"
                assert call(client, gateway.url, "release", {"gate": gate}, sid=sid).value
                final = list(messages)[-1]
            assert final["result"]["_meta"][META_MINTED_HANDLES][0]["handle"] == handle
            home = call(client, gateway.url, "whoami", sid=sid).value["name"]
            # No session carrier now: only the handle argument says where to go.
            for _ in range(3):
                assert call(client, gateway.url, "where", {"handle": handle}).value == home
            homes.add(home)
    assert homes == {"a", "b"}, "the sessions all hashed to one upstream; use more of them"


def mint_on(client: httpx2.Client, gateway: Proc, sid: str) -> str:
    """A handle minted by the upstream that holds session ``sid`` (a JSON response)."""
    gate, handle = new_id(), f"probe-{uuid.uuid4().hex}"
    assert call(client, gateway.url, "release", {"gate": gate}, sid=sid).value  # no wait
    reply = call(client, gateway.url, "mint", {"handle": handle, "gate": gate}, sid=sid)
    assert reply.result["_meta"][META_MINTED_HANDLES][0]["handle"] == handle, reply.text
    return handle


def test_session_ids_beat_handles_and_handles_beat_legacy_ids(plain_stack: Stack) -> None:
    """DESIGN §2 order: a `_meta` id (or its header) decides over a pinned handle in the same
    request; a pinned handle decides over a legacy ``Mcp-Session-Id``."""
    gateway = plain_stack.gateway
    with httpx2.Client(timeout=30) as client:
        homes: dict[str, str] = {}
        while len(homes) < 2:
            sid = new_id()
            homes.setdefault(call(client, gateway.url, "whoami", sid=sid).value["name"], sid)
        (x, sid_x), (y, sid_y) = sorted(homes.items())
        handle = mint_on(client, gateway, sid_x)
        assert call(client, gateway.url, "where", {"handle": handle}).value == x
        before = metrics(gateway)
        for header in (True, False):
            reply = call(client, gateway.url, "where", {"handle": handle}, sid=sid_y, header=header)
            assert reply.value == y
        after = metrics(gateway)
        assert after[ROUTED_BY_HANDLE] == before[ROUTED_BY_HANDLE]

        legacy = legacy_initialize(client, gateway.url)
        legacy_home = legacy_call(client, gateway.url, legacy, "whoami").value["name"]
        other_sid = homes[x if legacy_home == y else y]
        foreign = mint_on(client, gateway, other_sid)  # on the upstream without the legacy id
        before = metrics(gateway)
        reply = legacy_call(client, gateway.url, legacy, "where", {"handle": foreign})
        after = metrics(gateway)
        assert after[ROUTED_BY_HANDLE] - before[ROUTED_BY_HANDLE] == 1
        assert after[LEGACY] == before[LEGACY]
        # The handle's upstream answered: it never saw this legacy session, and a plain SDK
        # server keeps legacy sessions in memory, so it says 404 (the connection's upstream
        # would have named itself). mcp-sessions upstreams on a shared store serve it.
        assert reply.status == 404, reply.text


@pytest.mark.redis
def test_a_pin_store_outage_is_a_retryable_error_not_a_wrong_replica(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Redis goes away: a handle this gateway pinned recently still routes from its cache;
    a handle-shaped value it must look up gets 503 -31006 with Retry-After, not a guess."""
    logs = tmp_path_factory.mktemp("gateway-handles-outage")
    redis_process, port = start_redis_server(logs)
    try:
        store = ("--store", f"redis://127.0.0.1:{port}/0")
        with start_stack(logs, *store) as stack, httpx2.Client(timeout=30) as client:
            vms = [init_vm(client, stack.gateway.url, f"cached{i}") for i in range(4)]
            stop_process(redis_process)
            for i, vm in enumerate(vms):
                assert set_ram(client, stack.gateway.url, vm, i + 3).value["ram_gb"] == i + 3
            reply = set_ram(client, stack.gateway.url, "vm-" + "cd" * 16, 4)
            assert reply.status == 503, reply.text
            assert reply.error["code"] == STORE_UNAVAILABLE
            assert "pin store is unavailable" in reply.error["message"]
            assert reply.headers["retry-after"] == "1"
            assert stack.gateway.running()
    finally:
        stop_process(redis_process)


@pytest.mark.redis
def test_failover_move_lets_handles_continue_on_a_shared_store(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> None:
    """Upstreams sharing one store, ``--failover move``: a handle whose upstream died is
    re-pinned to the next one and keeps its state there."""
    logs = tmp_path_factory.mktemp("gateway-handles-move")
    procs: list[Proc] = []
    try:
        demos = [start_demo(logs, name, store=redis_url) for name in ("a", "b")]
        procs += demos
        options = (*upstream_args(*demos), *fast_health(), "--failover", "move")
        gateway = start_gateway(logs, "move", *options)
        procs.append(gateway)
        with httpx2.Client(timeout=30) as client:
            # Keyless init_vm calls alternate, so both upstreams hold pins.
            vms = [init_vm(client, gateway.url, f"moved{i}") for i in range(6)]
            for vm in vms:
                assert set_ram(client, gateway.url, vm, 5).value["ram_gb"] == 5
            before = metrics(gateway)
            kill(demos[0])
            for i, vm in enumerate(vms):
                reply = set_ram(client, gateway.url, vm, 6 + i)
                assert reply.value == {
                    "name": f"moved{i}",
                    "ram_gb": 6 + i,
                    "cpus": 1,
                    "deployed": False,
                }
            after = metrics(gateway)
        moved = 'mcp_gateway_pins_total{event="moved"}'
        assert after[moved] - before[moved] == 3  # the handles pinned to the dead upstream
        assert after[LOST] == before[LOST]
    finally:
        for proc in procs:
            stop(proc)
