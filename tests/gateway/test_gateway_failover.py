"""Killing an upstream (SIGKILL, no goodbye): only its keys move, and its sessions are told."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from mcp_sessions.gateway.routing import rank

from .helpers import (
    UPSTREAM_SCRIPT,
    Proc,
    Reply,
    call,
    fast_health,
    kill,
    legacy_call,
    legacy_initialize,
    metrics,
    new_id,
    start,
    start_gateway,
    start_upstream,
    stop,
    upstream_args,
    wait_until,
)


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, list[Proc]]]:
    logs = tmp_path_factory.mktemp("gateway-failover")
    upstreams: list[Proc] = []
    gateway = None
    try:
        for name in ("a", "b", "c"):
            upstreams.append(start_upstream(logs, name))
        gateway = start_gateway(logs, "failover", *upstream_args(*upstreams), *fast_health())
        yield gateway, upstreams
    finally:
        for proc in [gateway, *upstreams]:
            if proc is not None:
                stop(proc)


def test_killing_an_upstream_moves_only_its_keys_and_its_sessions_get_a_clear_error(
    cluster: tuple[Proc, list[Proc]], tmp_path: Path
) -> None:
    gateway, upstreams = cluster
    names = {u.url: u.name.removeprefix("upstream-") for u in upstreams}
    victim = upstreams[1]
    victim_name = names[victim.url]
    client = httpx2.Client(timeout=20)

    # Live sessions on every upstream, each with a counter at 1.
    homes: dict[str, str] = {}
    while len(homes) < 30 or victim_name not in homes.values():
        sid = new_id()
        homes[sid] = call(client, gateway.url, "whoami", sid=sid).value["name"]
        assert call(client, gateway.url, "count", sid=sid).value == 1
        assert len(homes) < 200
    legacy_homes: dict[str, str] = {}
    while len(set(legacy_homes.values())) < 3:  # legacy sessions on every upstream
        session_id = legacy_initialize(client, gateway.url)
        legacy_homes[session_id] = legacy_call(client, gateway.url, session_id, "whoami").value[
            "name"
        ]
        assert len(legacy_homes) < 60

    # A request in flight on the victim when it dies.
    doomed = next(sid for sid, home in homes.items() if home == victim_name)
    in_flight: list[Reply] = []
    marker = tmp_path / "block-started"
    worker = threading.Thread(
        target=lambda: in_flight.append(
            call(
                httpx2.Client(timeout=30), gateway.url, "block", {"marker": str(marker)}, sid=doomed
            )
        )
    )
    worker.start()
    wait_until(marker.exists, what="the call to be running on the victim")
    gauge = f'mcp_gateway_upstream_in_flight{{upstream="{victim.url}"}}'
    assert metrics(gateway)[gauge] == 1
    kill(victim)
    worker.join(30)
    assert not worker.is_alive()
    cut = in_flight[0]
    assert cut.status == 502, cut.text
    assert cut.error["code"] == -31010
    # Upstream addresses go to the gateway's log only (issue #12).
    assert f"127.0.0.1:{victim.port}" not in cut.error["message"]
    assert "may or may not have been applied" in cut.error["message"]

    # Sessions that lived on the victim are told they are lost; nobody else notices.
    for sid, home in homes.items():
        if home == victim_name:
            reply = call(client, gateway.url, "count", sid=sid)
            assert reply.status == 404, reply.text
            assert reply.error["code"] == -31001
            assert "Session lost" in reply.error["message"]
            assert f"127.0.0.1:{victim.port}" not in reply.error["message"]
        else:
            assert call(client, gateway.url, "whoami", sid=sid).value["name"] == home
            assert call(client, gateway.url, "count", sid=sid).value == 2
    for session_id, home in legacy_homes.items():
        reply = legacy_call(client, gateway.url, session_id, "count")
        if home == victim_name:
            assert reply.status == 404, reply.text
            assert "Session lost" in reply.error["message"]
        else:
            assert reply.value == 1

    # New sessions: a key whose first choice was the victim goes to its second choice; the
    # others go where they always would have.
    moved = 0
    for _ in range(30):
        sid = new_id()
        ranking = rank(sid, names)
        expected = ranking[1] if ranking[0] == victim.url else ranking[0]
        moved += ranking[0] == victim.url
        assert call(client, gateway.url, "whoami", sid=sid).value["name"] == names[expected]
    assert moved > 0

    health = client.get(f"{gateway.base}/healthz").json()
    state = {u["url"]: u["healthy"] for u in health["upstreams"]}
    assert state == {u.url: u is not victim for u in upstreams}
    samples = metrics(gateway)
    assert samples[f'mcp_gateway_upstream_healthy{{upstream="{victim.url}"}}'] == 0
    assert samples['mcp_gateway_pins_total{event="lost"}'] >= 1

    # The upstream comes back on its address: health checks return it to the rotation, and
    # new keys whose first choice it is go to it again.
    revived = start(
        [sys.executable, str(UPSTREAM_SCRIPT), "--name", victim_name, "--port", str(victim.port)],
        port=victim.port,
        log_dir=tmp_path,
        name="upstream-revived",
    )
    try:
        wait_until(
            lambda: (
                metrics(gateway)[f'mcp_gateway_upstream_healthy{{upstream="{victim.url}"}}'] == 1
            ),
            what="the revived upstream to pass its health checks",
        )
        fresh = next(k for k in (new_id() for _ in range(200)) if rank(k, names)[0] == victim.url)
        assert call(client, gateway.url, "whoami", sid=fresh).value["name"] == victim_name
    finally:
        stop(revived)
    client.close()
