"""``--spawn``: one stdio server process per session, with a warm pool, idle reaping, a cap and
crash reporting. The children are the test server of ``_upstream.py`` over stdio."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Iterator

import httpx2
import pytest

from .helpers import (
    LEGACY_HEADERS,
    UPSTREAM_SCRIPT,
    Proc,
    call,
    legacy_call,
    legacy_headers,
    legacy_initialize,
    metrics,
    modern,
    new_id,
    sse_messages,
    start_gateway,
    stop,
    wait_until,
)

CHILD = shlex.join([sys.executable, str(UPSTREAM_SCRIPT), "--stdio", "--name", "child"])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not alive either (the gateway reaps its children; give it that moment).
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def processes(gateway: Proc) -> dict[str, float]:
    samples = metrics(gateway)
    return {
        state: samples.get(f'mcp_gateway_processes{{state="{state}"}}', 0.0)
        for state in ("warm", "starting", "bound")
    }


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    logs = tmp_path_factory.mktemp("gateway-spawn")
    proc = start_gateway(
        logs,
        "spawn",
        "--spawn",
        CHILD,
        "--warm",
        "2",
        "--warm-legacy",
        "1",
        "--max-processes",
        "12",
        # One test client opens every session here: the whole pool is its to use.
        "--max-processes-per-principal",
        "12",
        "--idle-timeout",
        "120",
    )
    try:
        wait_until(lambda: processes(proc)["warm"] == 3, timeout=40, what="the warm pool")
        yield proc
    finally:
        stop(proc)
    # Every child went with the gateway.
    assert proc.popen.returncode is not None


@pytest.fixture
def client() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=30) as c:
        yield c


def test_a_new_session_gets_a_process_that_was_already_running(
    gateway: Proc, client: httpx2.Client
) -> None:
    wait_until(lambda: processes(gateway)["warm"] >= 2, timeout=40, what="the warm pool")
    sent_at = time.time()
    first = call(client, gateway.url, "whoami", sid=new_id())
    assert first.status == 200, first.text
    # The process that answered the first request of this session existed before it.
    assert first.value["startedAt"] < sent_at
    # The pool refills behind it.
    wait_until(lambda: processes(gateway)["warm"] == 3, timeout=40, what="the pool to refill")


def test_sessions_never_share_a_process(gateway: Proc, client: httpx2.Client) -> None:
    sessions = [new_id() for _ in range(3)]
    pids = {sid: call(client, gateway.url, "whoami", sid=sid).value["pid"] for sid in sessions}
    assert len(set(pids.values())) == 3
    for sid in sessions:
        assert call(client, gateway.url, "whoami", sid=sid).value["pid"] == pids[sid]
        assert call(client, gateway.url, "count", sid=sid).value == 1
        assert call(client, gateway.url, "count", sid=sid, header=False).value == 2
    # Another principal with the same client id gets a process of its own.
    sid = sessions[0]
    bob = call(client, gateway.url, "whoami", sid=sid, headers={"authorization": "Bearer bob"})
    assert bob.value["pid"] not in pids.values()


def test_a_body_over_the_limit_gets_413_and_reaches_no_process(
    gateway: Proc, client: httpx2.Client
) -> None:
    sid = new_id()
    limit = 4 * 1024 * 1024  # the gateway's default --max-body
    body, headers = modern("tools/call", {"name": "count", "arguments": {}}, sid=sid)
    head, tail = json.dumps(body).encode().rsplit(b"}", 1)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        yield head + b', "pad": "'
        for _ in range(limit // 65536 + 1):
            yield b"x" * 65536
        yield b'"}' + tail

    refused = client.post(gateway.url, content=chunks(), headers=headers)
    assert refused.status_code == 413, refused.text
    assert refused.json()["error"]["message"] == f"request body over {limit} bytes"
    # Nothing of it reached a process: the session's first counted call is the next one.
    assert call(client, gateway.url, "count", sid=sid).value == 1


def test_legacy_clients_get_a_process_and_a_gateway_minted_id(
    gateway: Proc, client: httpx2.Client
) -> None:
    session_id = legacy_initialize(client, gateway.url)
    assert len(session_id) == 32
    pid = legacy_call(client, gateway.url, session_id, "whoami").value["pid"]
    assert legacy_call(client, gateway.url, session_id, "count").value == 1
    assert legacy_call(client, gateway.url, session_id, "count").value == 2
    assert client.get(gateway.url, headers=legacy_headers(session_id)).status_code == 405
    deleted = client.delete(gateway.url, headers=legacy_headers(session_id))
    assert deleted.status_code == 204
    wait_until(lambda: not alive(pid), what="the session's process to stop")
    after = legacy_call(client, gateway.url, session_id, "count")
    assert after.status == 404
    assert after.error["code"] == -31001
    # Without the id, a legacy request is refused as a server that requires sessions would.
    body = {"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {}}
    headers = {**LEGACY_HEADERS, "mcp-protocol-version": "2025-11-25"}
    bare = client.post(gateway.url, json=body, headers=headers)
    assert bare.status_code == 400, bare.text
    assert "Mcp-Session-Id" in bare.json()["error"]["message"]


def test_progress_streams_through_from_the_process(gateway: Proc, client: httpx2.Client) -> None:
    sid, gate = new_id(), new_id()
    body, headers = modern(
        "tools/call",
        {"name": "progress", "arguments": {"gate": gate, "steps": 3}},
        sid=sid,
        meta={"progressToken": 7},
    )
    with client.stream("POST", gateway.url, json=body, headers=headers, timeout=20) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        messages = sse_messages(response.iter_lines())
        first = next(messages)
        assert first["method"] == "notifications/progress"
        assert first["params"]["progressToken"] == 7
        assert call(client, gateway.url, "release", {"gate": gate}, sid=sid).value is True
        rest = list(messages)
    assert [m["params"]["progress"] for m in rest if m.get("method")] == [2, 3]
    assert rest[-1]["id"] == 1
    assert rest[-1]["result"]["structuredContent"]["result"] == f"done {gate}"


def test_a_crashed_process_is_reported_never_replaced(gateway: Proc, client: httpx2.Client) -> None:
    sid = new_id()
    pid = call(client, gateway.url, "whoami", sid=sid).value["pid"]
    crashed = call(client, gateway.url, "crash", {"code": 3}, sid=sid)
    assert crashed.status == 502, crashed.text
    assert crashed.error["code"] == -31010
    assert "exited with code 3" in crashed.error["message"]
    assert not alive(pid)
    for _ in range(2):
        later = call(client, gateway.url, "whoami", sid=sid)
        assert later.status == 404, later.text
        assert later.error["code"] == -31001
        assert "Session lost" in later.error["message"]
        assert "exited with code 3" in later.error["message"]
    assert metrics(gateway)['mcp_gateway_process_exits_total{reason="crashed"}'] >= 1
    # Other sessions are untouched.
    assert call(client, gateway.url, "whoami", sid=new_id()).status == 200


def test_cap_and_idle_reaping(tmp_path_factory: pytest.TempPathFactory) -> None:
    logs = tmp_path_factory.mktemp("gateway-spawn-idle")
    gateway = start_gateway(
        logs,
        "spawn-idle",
        "--spawn",
        CHILD,
        "--warm",
        "1",
        "--warm-legacy",
        "0",
        "--max-processes",
        "2",
        # The whole pool for one caller: this test is about the global cap.
        "--max-processes-per-principal",
        "2",
        "--idle-timeout",
        "3",
    )
    try:
        client = httpx2.Client(timeout=30)
        a, b, c = new_id(), new_id(), new_id()
        pid_a = call(client, gateway.url, "whoami", sid=a).value["pid"]
        pid_b = call(client, gateway.url, "whoami", sid=b).value["pid"]
        assert call(client, gateway.url, "count", sid=a).value == 1
        assert call(client, gateway.url, "count", sid=b).value == 1
        full = call(client, gateway.url, "whoami", sid=c)
        assert full.status == 503, full.text
        assert full.error["code"] == -31011
        assert "--max-processes" in full.error["message"]
        assert full.headers["retry-after"] == "1"
        # Both sessions idle out: their processes are stopped, and room is made.
        wait_until(
            lambda: not alive(pid_a) and not alive(pid_b),
            timeout=30,
            what="idle processes to be reaped",
        )
        assert metrics(gateway)['mcp_gateway_process_exits_total{reason="idle"}'] == 2
        assert call(client, gateway.url, "whoami", sid=c).status == 200
        # An idled-out client id starts afresh, like an expired session.
        again = call(client, gateway.url, "count", sid=a)
        assert again.value == 1
        client.close()
    finally:
        stop(gateway)
