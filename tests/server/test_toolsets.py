"""Toolsets over the wire (issue #18): the demo's services as toolsets, served by real
servers (uvicorn on 127.0.0.1, ``mcp-sessions demo`` processes, stdio) to the official SDK
client at both protocol versions.

* a client that declares ``scopedLists`` and carries a session gets its session's surface,
  marked private and stale, and never another session's sets;
* every other client gets the global list, before and after ``connect``;
* a gated call is a tool error that names what enables it, and runs once enabled;
* a legacy (``Mcp-Session-Id`` or stdio) session's list follows it, and the call that changes
  it sends ``notifications/tools/list_changed`` on that session's stream;
* two replicas sharing a store agree on a session's surface.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client import advertise
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer
from mcp.types import (
    PromptListChangedNotification,
    ResourceListChangedNotification,
    ToolListChangedNotification,
)
from tests.server.conftest import FRAMEWORKS

from mcp_sessions.core.names import (
    EXTENSION_ID,
    META_CLIENT_CAPABILITIES,
    META_LIST_CHANGED,
    META_SCOPED,
    STATE_TOOLSETS,
)
from mcp_sessions.demo import SERVICES, build_demo
from mcp_sessions.server import CurrentSession, Sessions

from .helpers import (
    MODE,
    PROTOCOL,
    TIMEOUT,
    VERSIONS,
    RawHttp,
    ServerProcess,
    ThreadedServer,
    Version,
    error_text,
    new_id,
    sid,
    start_demo,
    tool_value,
    value,
)

pytestmark = pytest.mark.anyio

GATED = {tool for tools in SERVICES.values() for tool in tools}
SCOPED = advertise(EXTENSION_ID, {"scopedLists": True})


@pytest.fixture(params=FRAMEWORKS)
def demo_url(request: pytest.FixtureRequest, serve: Callable[[Any], ThreadedServer]) -> str:
    """The demo on each integration (issue #14): its services are toolsets on both."""
    mcp, sessions = build_demo(store="memory://", framework=request.param)
    return serve(sessions.streamable_http_app(mcp, host="127.0.0.1")).url


@contextlib.asynccontextmanager
async def http_client(
    url: str, version: Version, *, scoped: bool, messages: list[Any] | None = None
) -> AsyncIterator[Client]:
    async def collect(message: Any) -> None:
        if messages is not None:
            messages.append(message)

    async with httpx2.AsyncClient(timeout=TIMEOUT) as http:
        client = Client(
            streamable_http_client(url, http_client=http),
            mode=MODE[version],  # type: ignore[arg-type]
            read_timeout_seconds=TIMEOUT,
            extensions=[SCOPED] if scoped else None,
            message_handler=collect,
        )
        async with client:
            assert client.protocol_version == PROTOCOL[version]
            yield client


async def tool_names(client: Client, meta: dict[str, Any] | None) -> tuple[set[str], Any]:
    """The tools listed (always a round trip, never a client cache) and the result _meta."""
    if meta is None:
        listed = await client.session.list_tools()
    else:
        listed = await client.list_tools(meta=meta)
    return {tool.name for tool in listed.tools}, listed


@pytest.mark.parametrize("version", VERSIONS)
async def test_an_opted_in_client_sees_its_own_sessions_surface(
    demo_url: str, version: Version
) -> None:
    first, second = new_id(), new_id()
    async with http_client(demo_url, version, scoped=True) as client:
        names, listed = await tool_names(client, sid(first))
        assert names >= {"connect", "actions", "count"} and not names & GATED
        assert listed.meta[META_SCOPED] is True
        if version == "modern":
            # _meta is not in a cache's key: nobody may keep this list (spec §2.5).
            assert (listed.ttl_ms, listed.cache_scope) == (0, "private")
        connected = await client.call_tool("connect", {"service": "billing"}, meta=sid(first))
        assert value(connected) == SERVICES["billing"]
        assert connected.meta is not None and connected.meta[META_LIST_CHANGED] == ["tools/list"]
        value(await client.call_tool("connect", {"service": "crm"}, meta=sid(second)))
        names, _ = await tool_names(client, sid(first))
        assert names & GATED == {"list_invoices", "refund"}  # not the other session's crm
        names, _ = await tool_names(client, sid(second))
        assert names & GATED == {"find_customer", "add_note"}
        left = await client.call_tool("disconnect", {"service": "billing"}, meta=sid(first))
        assert value(left) == {} and left.meta is not None
        assert left.meta[META_LIST_CHANGED] == ["tools/list"]
        names, _ = await tool_names(client, sid(first))
        assert not names & GATED


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_client_that_does_not_opt_in_gets_the_global_list(
    demo_url: str, version: Version
) -> None:
    session_id = new_id()
    async with http_client(demo_url, version, scoped=False) as client:
        before, listed = await tool_names(client, sid(session_id))
        assert before >= GATED
        assert META_SCOPED not in (listed.meta or {})
        value(await client.call_tool("connect", {"service": "search"}, meta=sid(session_id)))
        after, listed = await tool_names(client, sid(session_id))
        assert after == before and META_SCOPED not in (listed.meta or {})
        if version == "modern":
            # The very list a request without any session gets (at 2025-11-25 the client's
            # own Mcp-Session-Id session would be the one listed: see the legacy test).
            plain, _ = await tool_names(client, {})
            assert plain == before


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_gated_call_names_what_enables_it_and_runs_once_enabled(
    demo_url: str, version: Version
) -> None:
    session_id = new_id()
    async with http_client(demo_url, version, scoped=False) as client:
        refused = await client.call_tool("refund", {"invoice": "inv-1001"}, meta=sid(session_id))
        text = error_text(refused)
        assert "'refund'" in text and "'billing'" in text
        assert "connect(service='billing')" in text
        value(await client.call_tool("connect", {"service": "billing"}, meta=sid(session_id)))
        refunded = await client.call_tool("refund", {"invoice": "inv-1001"}, meta=sid(session_id))
        assert value(refunded) == {"invoice": "inv-1001", "status": "refunded"}
        # The set is this session's: another session is still refused.
        other = await client.call_tool("list_invoices", {}, meta=sid(new_id()))
        assert "connect(service='billing')" in error_text(other)


async def test_a_gated_call_without_a_session_says_how_to_get_one(demo_url: str) -> None:
    async with httpx2.AsyncClient(timeout=TIMEOUT) as http:
        raw = RawHttp(http, demo_url)
        reply = await raw.modern("tools/call", {"name": "query", "arguments": {"text": "x"}})
        assert reply.status == 200, reply.text
        assert reply.result["isError"] is True
        text = reply.result["content"][0]["text"]
        assert "connect(service='search')" in text and "session_start" in text
        # With a handle from session_start (the fallback every client can use), it works.
        started = await raw.modern("tools/call", {"name": "session_start", "arguments": {}})
        handle = tool_value(started)
        for name, arguments in [("connect", {"service": "search"}), ("query", {"text": "refund"})]:
            reply = await raw.modern(
                "tools/call", {"name": name, "arguments": {**arguments, "session": handle}}
            )
            assert not reply.result.get("isError"), reply.text
        assert "refunds" in tool_value(reply)


async def test_a_legacy_sessions_list_follows_it_and_it_hears_list_changed(
    demo_url: str,
) -> None:
    messages: list[Any] = []
    # No opt-in: at 2025-11-25 lists may vary per session, and list_changed says when.
    async with http_client(demo_url, "legacy", scoped=False, messages=messages) as client:
        tools = client.server_capabilities.tools
        assert tools is not None and tools.list_changed is True
        names, listed = await tool_names(client, None)
        assert not names & GATED and listed.meta[META_SCOPED] is True
        assert not [m for m in messages if isinstance(m, ToolListChangedNotification)]
        value(await client.call_tool("connect", {"service": "crm"}))
        assert [m for m in messages if isinstance(m, ToolListChangedNotification)]
        names, _ = await tool_names(client, None)
        assert names & GATED == {"find_customer", "add_note"}
        assert value(await client.call_tool("find_customer", {"name": "ada"})) == ["Ada Lovelace"]
    # A second legacy session starts from nothing enabled.
    async with http_client(demo_url, "legacy", scoped=False) as other:
        names, _ = await tool_names(other, None)
        assert not names & GATED


async def test_a_stdio_connections_list_follows_it(tmp_path: Path) -> None:
    from mcp.client.stdio import StdioServerParameters

    from .helpers import MCP_SESSIONS_CLI, REPO

    params = StdioServerParameters(
        command=str(MCP_SESSIONS_CLI), args=["demo", "--stdio"], cwd=str(REPO)
    )
    messages: list[Any] = []

    async def collect(message: Any) -> None:
        messages.append(message)

    async with Client(
        params, mode="legacy", read_timeout_seconds=TIMEOUT, message_handler=collect
    ) as client:
        names, _ = await tool_names(client, None)
        assert not names & GATED
        value(await client.call_tool("connect", {"service": "search"}))
        assert [m for m in messages if isinstance(m, ToolListChangedNotification)]
        names, _ = await tool_names(client, None)
        assert names & GATED == {"query"}
        assert value(await client.call_tool("actions", {})) == {"search": ["query"]}


@pytest.mark.parametrize("version", VERSIONS)
async def test_replicas_sharing_a_store_agree_on_a_sessions_surface(
    tmp_path: Path, version: Version
) -> None:
    store = f"sqlite:///{tmp_path}/shared.sqlite3"
    first = start_demo(tmp_path, "--store", store, name="first")
    second: ServerProcess | None = None
    try:
        second = start_demo(tmp_path, "--store", store, name="second")
        session_id = new_id()
        async with (
            http_client(first.url, version, scoped=True) as on_first,
            http_client(second.url, version, scoped=True) as on_second,
        ):
            refused = await on_second.call_tool("query", {"text": "x"}, meta=sid(session_id))
            assert "connect(service='search')" in error_text(refused)
            value(await on_first.call_tool("connect", {"service": "search"}, meta=sid(session_id)))
            names, _ = await tool_names(on_second, sid(session_id))
            assert names & GATED == {"query"}
            assert value(
                await on_second.call_tool("query", {"text": "invoice"}, meta=sid(session_id))
            )
            value(
                await on_second.call_tool("disconnect", {"service": "search"}, meta=sid(session_id))
            )
            names, _ = await tool_names(on_first, sid(session_id))
            assert not names & GATED
            refused = await on_first.call_tool("query", {"text": "x"}, meta=sid(session_id))
            assert refused.is_error
    finally:
        if second is not None:
            second.stop()
        first.stop()


# -- attacks --------------------------------------------------------------------------------


@pytest.mark.parametrize("hostile", ["true", 1, {"on": True}, [True], None])
async def test_a_scoped_lists_value_that_is_not_true_is_no_opt_in(
    demo_url: str, hostile: Any
) -> None:
    session_id = new_id()
    capabilities = {"extensions": {EXTENSION_ID: {"scopedLists": hostile}}}
    async with httpx2.AsyncClient(timeout=TIMEOUT) as http:
        raw = RawHttp(http, demo_url)
        call = {"name": "connect", "arguments": {"service": "billing"}}
        assert (
            tool_value(await raw.modern("tools/call", call, meta=sid(session_id)))
            == (SERVICES["billing"])
        )
        meta = {**sid(session_id), META_CLIENT_CAPABILITIES: capabilities}
        reply = await raw.modern("tools/list", meta=meta)
        assert reply.status == 200, reply.text
        names = {tool["name"] for tool in reply.result["tools"]}
        assert names >= GATED and META_SCOPED not in reply.result.get("_meta", {})
        # The same request with the real opt-in is scoped: the flag alone made the difference.
        meta[META_CLIENT_CAPABILITIES] = {"extensions": {EXTENSION_ID: {"scopedLists": True}}}
        reply = await raw.modern("tools/list", meta=meta)
        names = {tool["name"] for tool in reply.result["tools"]}
        assert names & GATED == {"list_invoices", "refund"}
        assert reply.result["_meta"][META_SCOPED] is True


async def test_a_state_edit_cannot_enable_an_undeclared_set(demo_url: str) -> None:
    """The enabled sets live in the session state; whatever a tool writes there, only
    declared sets count (and garbage counts as none)."""
    from mcp_sessions.core.toolsets import Catalog, Toolset

    catalog = Catalog()
    catalog.declare(Toolset("billing", tools=frozenset({"refund"})))
    assert catalog.enabled_in({STATE_TOOLSETS: ["nope", "billing", "billing", 7]}) == ("billing",)
    assert catalog.enabled_in({STATE_TOOLSETS: "billing"}) == ()


# -- prompts and resources ------------------------------------------------------------------


def prompts_and_resources_server() -> MCPServer:
    sessions = Sessions(store="memory://")
    sessions.toolset("docs", prompts=["summarize"], resources=["docs://handbook"])
    mcp = MCPServer("docs", extensions=[sessions], middleware=[sessions.middleware])

    @mcp.tool()
    async def open_docs(session: CurrentSession) -> list[str]:
        return list((await session.enable("docs")).enabled)

    @mcp.prompt()
    def summarize(text: str) -> str:
        return f"Summarize: {text}"

    @mcp.prompt()
    def greet() -> str:
        return "Hello"

    @mcp.resource("docs://handbook")
    def handbook() -> str:
        return "the handbook"

    @mcp.resource("docs://public")
    def public() -> str:
        return "public"

    return mcp


@pytest.mark.parametrize("version", VERSIONS)
async def test_prompts_and_resources_in_a_set_follow_the_session(version: Version) -> None:
    messages: list[Any] = []

    async def collect(message: Any) -> None:
        messages.append(message)

    session_id = new_id()
    meta = sid(session_id)
    async with Client(
        prompts_and_resources_server(),
        mode=MODE[version],  # type: ignore[arg-type]
        read_timeout_seconds=TIMEOUT,
        extensions=[SCOPED],
        message_handler=collect,
    ) as client:

        async def names() -> tuple[set[str], set[str]]:
            prompts = await client.list_prompts(meta=meta)
            resources = await client.list_resources(meta=meta)
            assert prompts.meta is not None and prompts.meta[META_SCOPED] is True
            assert resources.meta is not None and resources.meta[META_SCOPED] is True
            return {p.name for p in prompts.prompts}, {str(r.uri) for r in resources.resources}

        assert await names() == ({"greet"}, {"docs://public"})
        opened = await client.call_tool("open_docs", {}, meta=meta)
        assert value(opened) == ["docs"]
        assert opened.meta is not None
        assert opened.meta[META_LIST_CHANGED] == ["prompts/list", "resources/list"]
        assert await names() == ({"greet", "summarize"}, {"docs://public", "docs://handbook"})
        kinds = {type(m) for m in messages}
        if version == "legacy":
            # An opted-in _meta session at 2025-11-25 hears the change on its request's stream.
            assert {PromptListChangedNotification, ResourceListChangedNotification} <= kinds
        else:
            assert not {PromptListChangedNotification, ResourceListChangedNotification} & kinds
        # A client that did not opt in sees every prompt and resource.
    async with Client(
        prompts_and_resources_server(),
        mode=MODE[version],
        read_timeout_seconds=TIMEOUT,  # type: ignore[arg-type]
    ) as plain:
        prompts = await plain.list_prompts(meta=sid(new_id()))
        assert {p.name for p in prompts.prompts} == {"greet", "summarize"}
