"""``--emit-config``: the nginx configuration runs for real (Debian's nginx) in front of real
upstreams; HAProxy and Envoy are checked for what they must say."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from tests.fixtures.nginx import find_nginx, nginx_conf
from tests.fixtures.redis_server import free_port

from mcp_sessions.gateway.emit import EmitSettings, emit, to_yaml

from .helpers import (
    CLI,
    Proc,
    call,
    modern,
    new_id,
    sse_messages,
    start,
    start_upstream,
    stop,
)

NGINX_HINT = (
    "nginx is not installed: run scripts/install-test-tools, or "
    "`sudo apt-get install nginx` (Debian/Ubuntu)"
)
UPSTREAMS = ("http://127.0.0.1:8001/mcp", "http://10.0.0.2:8002/mcp")


def nginx_binary() -> str:
    binary = find_nginx()
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {NGINX_HINT}")
        pytest.skip(NGINX_HINT)
    return binary


def emitted(kind: str, *extra: str, upstreams: tuple[str, ...] = UPSTREAMS) -> str:
    argv = [
        CLI,
        "gateway",
        *[a for u in upstreams for a in ("--upstream", u)],
        *extra,
        "--emit-config",
        kind,
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def behind_nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, list[Proc]]]:
    binary = nginx_binary()
    logs = tmp_path_factory.mktemp("nginx")
    upstreams: list[Proc] = []
    proxy = None
    try:
        upstreams = [start_upstream(logs, name) for name in ("a", "b", "c")]
        port = free_port()
        snippet = emitted("nginx", "--port", str(port), upstreams=tuple(u.url for u in upstreams))
        conf = nginx_conf(logs, snippet)
        argv = [binary, "-e", str(logs / "error.log"), "-p", str(logs), "-c", str(conf)]
        checked = subprocess.run(
            [*argv, "-t"], capture_output=True, text=True, timeout=30, check=False
        )
        assert checked.returncode == 0, checked.stderr
        proxy = start(argv, port=port, log_dir=logs, name="nginx")
        yield proxy, upstreams
    finally:
        for proc in [proxy, *upstreams]:
            if proc is not None:
                stop(proc)


def test_nginx_runs_the_emitted_config_with_affinity(
    behind_nginx: tuple[Proc, list[Proc]],
) -> None:
    proxy, _ = behind_nginx
    seen = set()
    with httpx2.Client(timeout=20) as client:
        for _ in range(8):
            sid = new_id()
            names = {call(client, proxy.url, "whoami", sid=sid).value["name"] for _ in range(4)}
            assert len(names) == 1
            seen |= names
            assert [call(client, proxy.url, "count", sid=sid).value for _ in range(3)] == [1, 2, 3]
    assert len(seen) >= 2  # keys spread over the upstreams


def test_nginx_streams_sse_unbuffered(behind_nginx: tuple[Proc, list[Proc]]) -> None:
    proxy, _ = behind_nginx
    sid, gate = new_id(), new_id()
    body, headers = modern(
        "tools/call",
        {"name": "progress", "arguments": {"gate": gate, "steps": 2}},
        sid=sid,
        meta={"progressToken": 1},
    )
    with (
        httpx2.Client(timeout=20) as client,
        client.stream("POST", proxy.url, json=body, headers=headers) as response,
    ):
        messages = sse_messages(response.iter_lines())
        assert next(messages)["method"] == "notifications/progress"
        assert call(client, proxy.url, "release", {"gate": gate}, sid=sid).value is True
        assert list(messages)[-1]["result"]["structuredContent"]["result"] == f"done {gate}"


def test_header_order_and_switches() -> None:
    settings = EmitSettings(upstreams=UPSTREAMS, route_params=("Vm",))
    assert settings.key_headers() == [
        "Mcp-Client-Session-Id",
        "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id",
        "Mcp-Session-Id",
        "Mcp-Param-Vm",
        "Authorization",
    ]
    narrow = EmitSettings(upstreams=UPSTREAMS, carriers=frozenset({"legacy"}))
    assert narrow.key_headers() == ["Mcp-Client-Session-Id", "Mcp-Session-Id"]
    text = emit("nginx", narrow)
    assert "$http_mcp_client_session_id" in text and "authorization" not in text


def test_haproxy_config() -> None:
    text = emitted("haproxy", "--route-param", "Vm", "--port", "9000")
    assert "bind 127.0.0.1:9000" in text
    assert "balance hdr(X-Mcp-Route-Key)" in text
    assert "hash-type consistent" in text
    # Legacy ids are learned from the response, as the gateway's pins are.
    assert "stick store-response res.hdr(mcp-session-id)" in text
    assert "stick match req.hdr(mcp-session-id)" in text
    rules = [line for line in text.splitlines() if "set-var(txn.mcp_key)" in line]
    # Lowest priority first, so the client id header, written last, wins.
    assert "mcp-client-session-id" in rules[-1] and "authorization" in rules[0]
    assert "server mcp1 127.0.0.1:8001 check" in text
    assert "server mcp2 10.0.0.2:8002 check" in text
    haproxy = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None
    )
    if haproxy is None and os.environ.get("CI") == "true":
        pytest.fail("haproxy is missing under CI: scripts/install-test-tools installs it")
    if haproxy is not None:
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"mcp-haproxy-{os.getpid()}.cfg"
        path.write_text(text)
        try:
            result = subprocess.run(
                [haproxy, "-c", "-f", str(path)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        finally:
            path.unlink()
        assert result.returncode == 0, result.stdout + result.stderr


def test_envoy_config() -> None:
    text = emitted("envoy", "--route-param", "Vm")
    assert "lb_policy: RING_HASH" in text
    assert "type: STRICT_DNS" not in text  # IP addresses: STATIC
    headers = [
        line.split(":", 1)[1].strip() for line in text.splitlines() if "header_name:" in line
    ]
    assert headers == [
        "mcp-client-session-id",
        "x-amzn-bedrock-agentcore-runtime-session-id",
        "mcp-session-id",
        "mcp-param-vm",
        "authorization",
    ]
    assert text.count("terminal: true") == 5
    assert "port_value: 8001" in text and "port_value: 8002" in text
    named = emitted("envoy", upstreams=("http://mcp-a.internal:8000/mcp",))
    assert "type: STRICT_DNS" in named


def test_every_upstream_must_share_one_path() -> None:
    argv = [
        CLI,
        "gateway",
        "--upstream",
        "http://a:1/mcp",
        "--upstream",
        "http://b:1/other",
        "--emit-config",
        "nginx",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "same path" in result.stderr


def test_yaml_rendering() -> None:
    text = to_yaml(
        {"a": [{"b": 1, "c": "x"}, "y"], "@type": "t", "n": "80", "t": True, "s": "*", "e": []}
    )
    assert text == ('a:\n  - b: 1\n    c: x\n  - y\n"@type": t\nn: "80"\nt: true\ns: "*"\ne: []\n')
