"""``gateway --spawn 'mcp-sessions demo --stdio …'`` for clients that know nothing of the
extension (issue #11): each spawned process serves one session over one stdio connection, so
the demo's tools keep their state through the connection's own session (carrier 5)."""

from __future__ import annotations

import shlex
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from .helpers import (
    CLI,
    Proc,
    call,
    legacy_call,
    legacy_initialize,
    modern,
    new_id,
    sse_messages,
    start_gateway,
    stop,
)

TIMEOUT = 30.0


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    logs = tmp_path_factory.mktemp("gateway-spawn-demo")
    child = shlex.join(
        [CLI, "demo", "--stdio", "--store", "memory://", "--key-file", str(logs / "keys.txt")]
    )
    proc = start_gateway(
        logs,
        "spawn-demo",
        "--spawn",
        child,
        "--warm",
        "1",
        "--warm-legacy",
        "1",
        "--max-processes",
        "8",
    )
    try:
        yield proc
    finally:
        stop(proc)


@pytest.fixture
def client() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=TIMEOUT) as c:
        yield c


def test_a_2025_11_25_client_counts_through_spawned_demo_processes(
    gateway: Proc, client: httpx2.Client
) -> None:
    """initialize → tools/call count ×3 with the gateway's Mcp-Session-Id, as a raw client."""
    first = legacy_initialize(client, gateway.url)
    counts = [
        legacy_call(client, gateway.url, first, "count", request_id=2 + i).value for i in range(3)
    ]
    assert counts == [1, 2, 3]
    # Another legacy session is another process, another connection: it starts at 1.
    second = legacy_initialize(client, gateway.url)
    assert legacy_call(client, gateway.url, second, "count").value == 1
    assert legacy_call(client, gateway.url, first, "count", request_id=9).value == 4


@asynccontextmanager
async def legacy_sdk_client(url: str) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(timeout=TIMEOUT) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode="legacy", read_timeout_seconds=TIMEOUT) as client:
            assert client.protocol_version == "2025-11-25"
            yield client


@pytest.mark.anyio
async def test_the_official_sdk_client_at_2025_11_25_counts_through_spawn(gateway: Proc) -> None:
    async with legacy_sdk_client(gateway.url) as sdk:
        results = [await sdk.call_tool("count", {}) for _ in range(3)]
        assert [r.structured_content for r in results] == [{"result": n} for n in (1, 2, 3)]
    async with legacy_sdk_client(gateway.url) as sdk:
        again = await sdk.call_tool("count", {})
        assert again.structured_content == {"result": 1}


def test_a_meta_id_still_names_its_own_session_through_spawn(
    gateway: Proc, client: httpx2.Client
) -> None:
    session_id = new_id()
    assert [call(client, gateway.url, "count", sid=session_id).value for _ in range(2)] == [1, 2]


def test_keyless_callers_never_share_the_shared_process_connection_session(
    gateway: Proc, client: httpx2.Client
) -> None:
    """Keyless 2026-07-28 requests of one principal share one process and so one stdio
    connection; the gateway marks them so that the connection is not made a session: two
    anonymous plain clients get -31002 naming session_start, never each other's count."""
    for attempt in range(2):
        reply = call(client, gateway.url, "count", request_id=20 + attempt)
        assert reply.error["code"] == -31002, reply.text
        assert "session_start" in reply.error["message"]


def test_a_plain_client_keeps_state_through_spawn_with_session_start_handles(
    gateway: Proc, client: httpx2.Client
) -> None:
    first = call(client, gateway.url, "session_start").value
    second = call(client, gateway.url, "session_start").value
    counts = [call(client, gateway.url, "count", {"session": first}).value for _ in range(3)]
    assert counts == [1, 2, 3]
    assert call(client, gateway.url, "count", {"session": second}).value == 1


def test_a_listen_stream_names_the_clients_own_request_id(gateway: Proc) -> None:
    """2026-07-28 listen-stream notifications carry the listen request's id in
    ``_meta["io.modelcontextprotocol/subscriptionId"]``, and clients demultiplex by it: the
    gateway, which renumbers requests for its child, must give the client its own id back."""
    body, headers = modern(
        "subscriptions/listen", {"notifications": {"toolsListChanged": True}}, request_id=0
    )
    body["id"] = "listen:0"
    with (
        httpx2.Client(timeout=TIMEOUT) as client,
        client.stream("POST", gateway.url, json=body, headers=headers) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        first = next(sse_messages(response.iter_lines()))
    assert first["method"] == "notifications/subscriptions/acknowledged"
    assert first["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "listen:0"


@pytest.fixture
def fresh_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """A gateway of its own: the module's one has used up its per-caller process quota."""
    logs = tmp_path_factory.mktemp("gateway-spawn-scoping")
    child = shlex.join(
        [CLI, "demo", "--stdio", "--store", "memory://", "--key-file", str(logs / "keys.txt")]
    )
    proc = start_gateway(logs, "spawn-scoping", "--spawn", child, "--max-processes", "8")
    try:
        yield proc
    finally:
        stop(proc)


@pytest.mark.anyio
async def test_a_scoped_list_follows_its_session_through_spawn(fresh_gateway: Proc) -> None:
    """Issue #18: an opted-in client's list and its gated calls reach its session's process."""
    from mcp.client import advertise

    from mcp_sessions.core.names import EXTENSION_ID, META_SCOPED, META_SESSION_ID

    billing = {"list_invoices", "refund"}
    meta = {META_SESSION_ID: new_id()}
    async with httpx2.AsyncClient(timeout=TIMEOUT) as http:
        transport = streamable_http_client(fresh_gateway.url, http_client=http)
        scoped = advertise(EXTENSION_ID, {"scopedLists": True})
        async with Client(transport, read_timeout_seconds=TIMEOUT, extensions=[scoped]) as sdk:
            assert sdk.protocol_version == "2026-07-28"
            listed = await sdk.list_tools(meta=meta)
            assert listed.meta is not None and listed.meta[META_SCOPED] is True
            assert not {tool.name for tool in listed.tools} & billing
            assert (await sdk.call_tool("refund", {"invoice": "inv-1001"}, meta=meta)).is_error
            assert not (await sdk.call_tool("connect", {"service": "billing"}, meta=meta)).is_error
            listed = await sdk.list_tools(meta=meta)
            assert {tool.name for tool in listed.tools} >= billing
            refund = await sdk.call_tool("refund", {"invoice": "inv-1001"}, meta=meta)
            assert refund.structured_content == {"invoice": "inv-1001", "status": "refunded"}


@pytest.mark.anyio
async def test_a_legacy_sessions_list_follows_it_through_spawn(fresh_gateway: Proc) -> None:
    from mcp.types import ToolListChangedNotification

    heard: list[object] = []

    async def collect(message: object) -> None:
        heard.append(message)

    async with httpx2.AsyncClient(timeout=TIMEOUT) as http:
        transport = streamable_http_client(fresh_gateway.url, http_client=http)
        async with Client(
            transport, mode="legacy", read_timeout_seconds=TIMEOUT, message_handler=collect
        ) as sdk:
            assert "query" not in {tool.name for tool in (await sdk.session.list_tools()).tools}
            assert not (await sdk.call_tool("connect", {"service": "search"})).is_error
            assert any(isinstance(m, ToolListChangedNotification) for m in heard)
            assert "query" in {tool.name for tool in (await sdk.session.list_tools()).tools}
