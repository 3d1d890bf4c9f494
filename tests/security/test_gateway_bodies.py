"""Issue #12, row 5 (the gateway's part): a request body the JSON decoder refuses — deep
nesting included, which used to raise RecursionError and answer 500 — gets 400 with JSON-RPC
-32700 wherever the gateway itself reads the body: the routing peek of the HTTP gateway (no
``Mcp-Client-Session-Id`` header) and every request of ``--spawn``. Nothing reaches an
upstream or a process, and the gateway serves the next request as before."""

from __future__ import annotations

import base64
import shlex
import sys
from collections.abc import Iterator

import httpx2
import pytest
from tests.gateway.helpers import (
    LEGACY_HEADERS,
    UPSTREAM_SCRIPT,
    Proc,
    call,
    metrics,
    modern,
    new_id,
    start_gateway,
    start_upstream,
    stop,
    upstream_args,
)

CHILD = shlex.join([sys.executable, str(UPSTREAM_SCRIPT), "--stdio", "--name", "child"])
DEPTH = 100_000
BODIES = {
    "deep-list": b"[" * DEPTH + b"]" * DEPTH,
    "deep-object": b'{"a":' * DEPTH + b"1" + b"}" * DEPTH,
    "deep-in-params": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":'
    + b"[" * DEPTH
    + b"]" * DEPTH
    + b"}",
    "truncated": b'{"jsonrpc": "2.0", "id": 1, "method": ',
    "not-utf8": b'{"jsonrpc": "2.0", "id": 1, "method": "\xff\xfe"}',
    "nan-literal": b'{"jsonrpc": "2.0", "id": NaN-',
}


@pytest.fixture(scope="module")
def http_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    logs = tmp_path_factory.mktemp("gateway-bodies")
    upstream = start_upstream(logs, "a")
    gateway = start_gateway(logs, "bodies", *upstream_args(upstream))
    yield gateway
    stop(gateway)
    stop(upstream)


@pytest.fixture(scope="module")
def spawn_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    logs = tmp_path_factory.mktemp("gateway-bodies-spawn")
    gateway = start_gateway(
        logs, "bodies-spawn", "--spawn", CHILD, "--warm", "1", "--warm-legacy", "0"
    )
    yield gateway
    stop(gateway)


def _assert_parse_error(response: httpx2.Response) -> None:
    assert response.status_code == 400, response.text[:300]
    body = response.json()
    assert body["error"]["code"] == -32700, body
    assert body["id"] is None


@pytest.mark.parametrize("name", sorted(BODIES))
def test_the_routing_peek_refuses_a_body_it_cannot_decode(http_gateway: Proc, name: str) -> None:
    with httpx2.Client(timeout=30) as client:
        routed = _routed(http_gateway)
        reply = client.post(http_gateway.url, content=BODIES[name], headers=LEGACY_HEADERS)
        _assert_parse_error(reply)
        # Nothing was routed, so nothing was sent on (the upstream's own -32700 looks the
        # same on the wire, but would count a routing decision).
        assert _routed(http_gateway) == routed
        # The gateway goes on serving.
        assert call(client, http_gateway.url, "whoami", sid=new_id()).value["name"] == "a"
    samples = metrics(http_gateway)
    assert not any(
        key.startswith("mcp_gateway_requests_total") and 'status="500"' in key for key in samples
    )


def _routed(gateway: Proc) -> float:
    samples = metrics(gateway)
    return sum(v for k, v in samples.items() if k.startswith("mcp_gateway_routing_decisions"))


# --spawn already refused the other bodies with -32700; nesting was its 500.
@pytest.mark.parametrize("name", sorted(name for name in BODIES if "deep" in name))
def test_spawn_refuses_a_body_it_cannot_decode(spawn_gateway: Proc, name: str) -> None:
    with httpx2.Client(timeout=30) as client:
        for headers in (LEGACY_HEADERS, {**LEGACY_HEADERS, "mcp-client-session-id": new_id()}):
            _assert_parse_error(
                client.post(spawn_gateway.url, content=BODIES[name], headers=headers)
            )
        assert call(client, spawn_gateway.url, "count", sid=new_id()).value == 1
    samples = metrics(spawn_gateway)
    assert not any(
        key.startswith("mcp_gateway_requests_total") and 'status="500"' in key for key in samples
    )


def _deep_token() -> str:
    """A bearer JWT whose payload is 3,000 nested lists: within the gateway's 8 KiB claim
    window, far past the JSON decoder's recursion limit."""
    payload = base64.urlsafe_b64encode(b"[" * 3000 + b"]" * 3000).rstrip(b"=").decode()
    return f"eyJhbGciOiJIUzI1NiJ9.{payload}.c2ln"


def test_a_deeply_nested_token_is_no_500(http_gateway: Proc, spawn_gateway: Proc) -> None:
    """The principal is read from ``Authorization`` on every keyless request: a token whose
    claims nest too deeply is a credential like any other (its digest), never a crash."""
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {**LEGACY_HEADERS, "authorization": f"Bearer {_deep_token()}"}
    with httpx2.Client(timeout=30) as client:
        for gateway in (http_gateway, spawn_gateway):
            body, modern_headers = modern("tools/list")
            modern_headers["authorization"] = headers["authorization"]
            reply = client.post(gateway.url, json=body, headers=modern_headers)
            assert reply.status_code == 200, reply.text[:300]
            assert "tools" in reply.json()["result"]
        legacy = client.post(http_gateway.url, json=request, headers=headers)
        assert legacy.status_code < 500, legacy.text[:300]
