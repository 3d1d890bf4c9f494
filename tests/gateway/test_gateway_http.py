"""The gateway in front of three real upstream processes (HTTP mode), on loopback.

Each upstream keeps its state in its own memory, so a request routed to the wrong replica
shows up as a wrong counter, a wrong name, or the SDK's 404 for an unknown legacy session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest

from mcp_sessions.gateway.routing import rank

from .helpers import (
    Proc,
    acall,
    call,
    fast_health,
    legacy_call,
    legacy_headers,
    legacy_initialize,
    metrics,
    modern,
    new_id,
    parse,
    sse_messages,
    start_gateway,
    start_upstream,
    stop,
    upstream_args,
    wait_until,
)

MAX_BODY = 100_000
MAX_HEADERS = 4096


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, list[Proc]]]:
    logs = tmp_path_factory.mktemp("gateway-http")
    upstreams: list[Proc] = []
    gateway = None
    try:
        for name in ("a", "b", "c"):
            upstreams.append(start_upstream(logs, name))
        gateway = start_gateway(
            logs,
            "http",
            *upstream_args(*upstreams),
            *fast_health(),
            "--route-param",
            "Vm",
            "--max-body-bytes",
            str(MAX_BODY),
            "--max-header-bytes",
            str(MAX_HEADERS),
        )
        yield gateway, upstreams
    finally:
        for proc in [gateway, *upstreams]:
            if proc is not None:
                stop(proc)


@pytest.fixture
def client() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=20) as c:
        yield c


def whoami(client: httpx2.Client, gateway: Proc, sid: str, **options: object) -> str:
    reply = call(client, gateway.url, "whoami", sid=sid, **options)  # type: ignore[arg-type]
    assert reply.status == 200, reply.text
    return str(reply.value["name"])


@pytest.mark.anyio
async def test_parallel_first_calls_of_a_new_client_id_reach_one_upstream(
    cluster: tuple[Proc, list[Proc]],
) -> None:
    """The issue's headline: twenty parallel first calls with one new client id."""
    gateway, _ = cluster
    sid = new_id()
    values: list[int] = []
    async with httpx2.AsyncClient(timeout=30) as client:

        async def one(i: int) -> None:
            reply = await acall(client, gateway.url, "count", sid=sid, request_id=i)
            assert reply.status == 200, reply.text
            values.append(int(reply.value))

        async with anyio.create_task_group() as group:
            for i in range(20):
                group.start_soon(one, i)
        after = await acall(client, gateway.url, "count", sid=sid, request_id=99)
    # One upstream saw all twenty: its counter went 1..20, and on to 21. Split over
    # replicas, each would have started its own count at 1.
    assert sorted(values) == list(range(1, 21))
    assert after.value == 21


def test_a_session_sticks_and_sessions_spread(
    cluster: tuple[Proc, list[Proc]], client: httpx2.Client
) -> None:
    gateway, upstreams = cluster
    placement = {}
    for _ in range(24):
        sid = new_id()
        placement[sid] = whoami(client, gateway, sid)
    for sid, name in list(placement.items())[:8]:
        assert whoami(client, gateway, sid) == name
        assert whoami(client, gateway, sid, header=False) == name  # _meta only: same place
    assert set(placement.values()) == {"a", "b", "c"}
    # Placement is rendezvous hashing over the upstream URLs: any replica computes it alone.
    names = {u.url: u.name.removeprefix("upstream-") for u in upstreams}
    for sid, name in placement.items():
        assert names[rank(sid, names)[0]] == name


def test_every_carrier_of_one_id_reaches_the_same_upstream(
    cluster: tuple[Proc, list[Proc]], client: httpx2.Client
) -> None:
    gateway, _ = cluster
    for _ in range(4):
        sid = new_id()
        home = whoami(client, gateway, sid)
        for meta, headers in (
            ({"clientSessionId": sid}, {}),
            ({"openai/session": sid}, {}),
            ({}, {"x-amzn-bedrock-agentcore-runtime-session-id": sid}),
        ):
            body, base = modern("tools/call", {"name": "whoami", "arguments": {}}, meta=meta)
            reply = parse(client.post(gateway.url, json=body, headers={**base, **headers}))
            assert reply.value["name"] == home, (meta, headers)


def test_legacy_sessions_are_pinned_where_initialize_went_and_delete_follows(
    cluster: tuple[Proc, list[Proc]], client: httpx2.Client
) -> None:
    """Six legacy sessions: without the learned pins, the requests after initialize would be
    hashed on the id and most would reach a replica that never saw it (the SDK's 404)."""
    gateway, _ = cluster
    before = metrics(gateway)
    for _ in range(6):
        session_id = legacy_initialize(client, gateway.url)
        for expected in (1, 2, 3):
            reply = legacy_call(client, gateway.url, session_id, "count")
            assert reply.status == 200, reply.text
            assert reply.value == expected
        # The standalone GET stream follows the pin too (elsewhere: the SDK's 404); leaving
        # it closes the upstream side as well.
        with client.stream("GET", gateway.url, headers=legacy_headers(session_id)) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
        deleted = client.delete(gateway.url, headers=legacy_headers(session_id))
        assert 200 <= deleted.status_code < 300, deleted.text
        gone = legacy_call(client, gateway.url, session_id, "count")
        assert gone.status == 404, gone.text
    # The streams the client left are closed upstream too: nothing stays in flight.
    wait_until(
        lambda: all(
            v == 0
            for k, v in metrics(gateway).items()
            if k.startswith("mcp_gateway_upstream_in_flight")
        ),
        what="the abandoned GET streams to be closed",
    )
    after = metrics(gateway)
    learned = 'mcp_gateway_pins_total{event="learned"}'
    forgotten = 'mcp_gateway_pins_total{event="forgotten"}'
    assert after[learned] - before[learned] == 6
    assert after[forgotten] - before[forgotten] == 6


def test_an_unknown_legacy_id_is_the_upstreams_to_refuse(
    cluster: tuple[Proc, list[Proc]], client: httpx2.Client
) -> None:
    gateway, _ = cluster
    reply = legacy_call(client, gateway.url, "no-such-session-" + new_id(), "count")
    assert reply.status == 404


def test_progress_notifications_stream_through_as_they_happen(
    cluster: tuple[Proc, list[Proc]], client: httpx2.Client
) -> None:
    """The tool reports progress 1 and then waits for ``release``. The test reads that first
    notification before releasing it: a gateway that buffered the response would leave the
    test waiting (and failing at the read timeout) instead."""
    gateway, _ = cluster
    sid, gate = new_id(), new_id()
    body, headers = modern(
        "tools/call",
        {"name": "progress", "arguments": {"gate": gate, "steps": 3}},
        sid=sid,
        meta={"progressToken": "tok-1"},
    )
    with client.stream("POST", gateway.url, json=body, headers=headers, timeout=15) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        messages = sse_messages(response.iter_lines())
        first = next(messages)
        assert first["method"] == "notifications/progress"
        assert first["params"]["progress"] == 1
        released = call(client, gateway.url, "release", {"gate": gate}, sid=sid)
        assert released.value is True
        rest = list(messages)
    progress = [m["params"]["progress"] for m in rest if m.get("method")]
    assert progress == [2, 3]
    assert rest[-1]["result"]["structuredContent"]["result"] == f"done {gate}"


def test_a_client_leaving_a_stream_closes_it_upstream(
    cluster: tuple[Proc, list[Proc]], client: httpx2.Client
) -> None:
    """The tool holds its stream open until released; the client reads one event and leaves.
    The gateway must notice and close the upstream side, not hold it until the tool ends."""
    gateway, _ = cluster
    sid, gate = new_id(), new_id()
    body, headers = modern(
        "tools/call",
        {"name": "progress", "arguments": {"gate": gate, "steps": 2}},
        sid=sid,
        meta={"progressToken": "tok-2"},
    )
    with client.stream("POST", gateway.url, json=body, headers=headers, timeout=15) as response:
        assert next(sse_messages(response.iter_lines()))["method"] == "notifications/progress"
    in_flight = "mcp_gateway_upstream_in_flight"
    try:
        wait_until(
            lambda: all(v == 0 for k, v in metrics(gateway).items() if k.startswith(in_flight)),
            timeout=10,
            what="the gateway to close the abandoned stream upstream",
        )
    finally:
        call(client, gateway.url, "release", {"gate": gate}, sid=sid)


def test_keyless_requests_go_by_principal_then_least_loaded(
    cluster: tuple[Proc, list[Proc]], client: httpx2.Client
) -> None:
    gateway, _ = cluster
    before = metrics(gateway)
    listed = parse(
        client.post(gateway.url, json=modern("tools/list")[0], headers=modern("tools/list")[1])
    )
    assert listed.status == 200
    assert {t["name"] for t in listed.result["tools"]} >= {"whoami", "count"}
    token = {"authorization": "Bearer opaque-token-of-carol"}
    homes = set()
    for _ in range(5):
        reply = call(client, gateway.url, "whoami", headers=token)
        homes.add(reply.value["name"])
    assert len(homes) == 1
    after = metrics(gateway)
    principal = 'mcp_gateway_routing_decisions_total{carrier="principal"}'
    least = 'mcp_gateway_routing_decisions_total{carrier="least_loaded"}'
    assert after[principal] - before[principal] == 5
    assert after[least] - before[least] >= 1


def test_a_handle_header_keeps_its_requests_together(
    cluster: tuple[Proc, list[Proc]], client: httpx2.Client
) -> None:
    gateway, _ = cluster
    homes = {}
    for i in range(6):
        handle = f"vm-{i:032x}"
        seen = {
            call(client, gateway.url, "whoami", headers={"mcp-param-vm": handle}).value["name"]
            for _ in range(3)
        }
        assert len(seen) == 1
        homes[handle] = seen.pop()
    assert metrics(gateway)['mcp_gateway_routing_decisions_total{carrier="param_header"}'] >= 18


def test_the_gateway_refuses_what_a_server_refuses(
    cluster: tuple[Proc, list[Proc]], client: httpx2.Client
) -> None:
    gateway, _ = cluster
    sid = new_id()
    # A malformed header is not routed on; the body is, and the mirror check fails (DESIGN §3).
    body, headers = modern("tools/call", {"name": "whoami", "arguments": {}}, sid=sid)
    mismatch = parse(
        client.post(gateway.url, json=body, headers={**headers, "mcp-client-session-id": "bad id!"})
    )
    assert mismatch.status == 400
    assert mismatch.error["code"] == -32020
    assert mismatch.body["id"] == 1
    body, headers = modern(
        "tools/call", {"name": "whoami", "arguments": {}}, sid="short", header=False
    )
    invalid = parse(client.post(gateway.url, json=body, headers=headers))
    assert invalid.status == 400
    assert invalid.error["code"] == -32602
    assert "16" in invalid.error["message"]


def test_size_limits(cluster: tuple[Proc, list[Proc]], client: httpx2.Client) -> None:
    gateway, _ = cluster
    big = "x" * (MAX_BODY + 1)
    body, headers = modern(
        "tools/call", {"name": "whoami", "arguments": {"pad": big}}, sid=new_id()
    )
    declared = client.post(gateway.url, json=body, headers=headers)
    assert declared.status_code == 413, declared.text
    assert "100000" in declared.text

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        yield b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"x": "'
        for _ in range(30):
            yield b"y" * 4096
        yield b'"}}'

    streamed = client.post(
        gateway.url, content=chunks(), headers={"content-type": "application/json", "accept": "*/*"}
    )
    assert streamed.status_code == 413, streamed.text
    fat = call(
        client, gateway.url, "whoami", sid=new_id(), headers={"x-padding": "p" * (MAX_HEADERS + 10)}
    )
    assert fat.status == 431, fat.text
    assert str(MAX_HEADERS) in fat.text


def test_healthz_and_metrics(cluster: tuple[Proc, list[Proc]], client: httpx2.Client) -> None:
    gateway, upstreams = cluster
    health = client.get(f"{gateway.base}/healthz")
    assert health.status_code == 200
    state = health.json()
    assert state["status"] == "ok"
    assert [u["url"] for u in state["upstreams"]] == [u.url for u in upstreams]
    assert all(u["healthy"] for u in state["upstreams"])
    whoami(client, gateway, new_id())
    samples = metrics(gateway)
    for upstream in upstreams:
        assert samples[f'mcp_gateway_upstream_healthy{{upstream="{upstream.url}"}}'] == 1
        assert f'mcp_gateway_sessions{{upstream="{upstream.url}"}}' in samples
    assert sum(v for k, v in samples.items() if k.startswith("mcp_gateway_sessions{")) >= 1
    assert samples['mcp_gateway_routing_decisions_total{carrier="client_header"}'] >= 1
    assert samples['mcp_gateway_requests_total{method="POST",status="200"}'] >= 1
    assert samples["mcp_gateway_request_duration_seconds_count"] >= 1


def test_stopped_by_pid(tmp_path: Path) -> None:
    """The harness itself: a gateway process goes away on SIGTERM, and so do its sockets."""
    upstream = start_upstream(tmp_path, "solo")
    gateway = start_gateway(tmp_path, "solo", *upstream_args(upstream))
    try:
        assert httpx2.get(f"{gateway.base}/healthz").status_code == 200
    finally:
        stop(gateway)
        stop(upstream)
    assert not gateway.running()
    with pytest.raises(ProcessLookupError):
        os.kill(gateway.pid, 0)
