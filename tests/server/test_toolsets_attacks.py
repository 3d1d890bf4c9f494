"""Toolsets under attack (issue #18): a tool body that enables whatever its caller names
(unknown sets, thousands of names, past the per-session cap), a tool in two sets, and a
session whose state a tool overwrote. Each refusal is a tool error that says why, and the
session keeps exactly the sets it had."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client import advertise
from mcp.server.mcpserver import MCPServer

from mcp_sessions.core.names import EXTENSION_ID, META_LIST_CHANGED, STATE_TOOLSETS
from mcp_sessions.server import CurrentSession, Sessions

from .helpers import MODE, TIMEOUT, VERSIONS, Version, error_text, new_id, sid, value

pytestmark = pytest.mark.anyio

CAP = 4


def build() -> MCPServer:
    sessions = Sessions(store="memory://")
    sessions.engine.toolsets.max_enabled = CAP
    sessions.toolset("a", tools=["shared", "only_a"], enabled_by="call enable(names=['a'])")
    sessions.toolset("b", tools=["shared"])
    for index in range(CAP + 2):
        sessions.toolset(f"extra{index}")
    mcp = MCPServer("attacks", extensions=[sessions], middleware=[sessions.middleware])

    @mcp.tool()
    async def enable(names: list[str], session: CurrentSession) -> list[str]:
        return list((await session.enable(*names)).enabled)

    @mcp.tool()
    async def disable(names: list[str], session: CurrentSession) -> list[str]:
        return list((await session.disable(*names)).enabled)

    @mcp.tool()
    async def clobber(value: Any, session: CurrentSession) -> list[str]:
        await session.set(STATE_TOOLSETS, value)
        return list(session.surface.enabled)

    @mcp.tool()
    async def shared() -> str:
        return "shared ran"

    @mcp.tool()
    async def only_a() -> str:
        return "only_a ran"

    return mcp


async def enabled(client: Client, session_id: str) -> list[str]:
    result: list[str] = value(
        await client.call_tool("disable", {"names": []}, meta=sid(session_id))
    )
    return result


async def listed(client: Client, session_id: str) -> set[str]:
    tools = await client.list_tools(meta=sid(session_id))
    return {tool.name for tool in tools.tools}


def client_for(version: Version) -> Client:
    return Client(
        build(),
        mode=MODE[version],  # type: ignore[arg-type]
        read_timeout_seconds=TIMEOUT,
        extensions=[advertise(EXTENSION_ID, {"scopedLists": True})],
    )


@pytest.mark.parametrize("version", VERSIONS)
async def test_unknown_and_malformed_sets_are_refused_whole(version: Version) -> None:
    session_id = new_id()
    async with client_for(version) as client:
        assert value(await client.call_tool("enable", {"names": ["a"]}, meta=sid(session_id))) == [
            "a"
        ]
        for names in (["b", "nope"], ["b", "../../etc"], ["b", ""], ["b", "x" * 10_000]):
            refused = await client.call_tool("enable", {"names": names}, meta=sid(session_id))
            text = error_text(refused)
            assert "unknown toolset" in text or "a toolset name is" in text
            assert len(text) < 1000  # a huge name is not echoed back whole
            assert refused.meta is None or META_LIST_CHANGED not in refused.meta
        assert await enabled(client, session_id) == ["a"]  # `b` was not enabled either


@pytest.mark.parametrize("version", VERSIONS)
async def test_thousands_of_names_or_too_many_sets_change_nothing(version: Version) -> None:
    session_id = new_id()
    async with client_for(version) as client:
        many = [f"set{index}" for index in range(5000)]
        refused = await client.call_tool("enable", {"names": many}, meta=sid(session_id))
        assert "unknown toolset 'set0'" in error_text(refused)
        too_many = [f"extra{index}" for index in range(CAP + 1)]
        refused = await client.call_tool("enable", {"names": too_many}, meta=sid(session_id))
        assert f"at most {CAP} toolsets enabled" in error_text(refused)
        assert await enabled(client, session_id) == []
        # Up to the cap is fine, and one more is refused.
        value(await client.call_tool("enable", {"names": too_many[:CAP]}, meta=sid(session_id)))
        refused = await client.call_tool("enable", {"names": ["a"]}, meta=sid(session_id))
        assert "Disable some first" in error_text(refused)
        assert await enabled(client, session_id) == too_many[:CAP]


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_tool_in_two_sets_is_callable_through_either(version: Version) -> None:
    first, second = new_id(), new_id()
    async with client_for(version) as client:
        refused = await client.call_tool("shared", {}, meta=sid(first))
        assert "toolsets 'a', 'b'" in error_text(refused)
        assert "call enable(names=['a']) enables 'a'" in error_text(refused)
        value(await client.call_tool("enable", {"names": ["b"]}, meta=sid(first)))
        assert value(await client.call_tool("shared", {}, meta=sid(first))) == "shared ran"
        assert error_text(await client.call_tool("only_a", {}, meta=sid(first)))
        assert {"shared"} <= await listed(client, first) and "only_a" not in await listed(
            client, first
        )
        # Disabling `a` while `b` holds `shared` does not change what the list shows.
        value(await client.call_tool("enable", {"names": ["a"]}, meta=sid(second)))
        value(await client.call_tool("enable", {"names": ["b"]}, meta=sid(second)))
        result = await client.call_tool("disable", {"names": ["b"]}, meta=sid(second))
        assert result.meta is None or META_LIST_CHANGED not in result.meta
        assert await listed(client, second) >= {"shared", "only_a"}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("garbage", ["a", {"a": True}, ["a", "undeclared", 5], None])
async def test_a_clobbered_state_key_enables_only_declared_sets(
    version: Version, garbage: Any
) -> None:
    session_id = new_id()
    async with client_for(version) as client:
        shown = value(await client.call_tool("clobber", {"value": garbage}, meta=sid(session_id)))
        expected = ["a"] if isinstance(garbage, list) else []
        assert shown == expected
        names = await listed(client, session_id)
        assert ("only_a" in names) is bool(expected)
        ran = await client.call_tool("only_a", {}, meta=sid(session_id))
        assert ran.is_error is not bool(expected)


@pytest.mark.parametrize("version", VERSIONS)
async def test_parallel_enables_never_pass_the_cap(version: Version) -> None:
    """Each enable is a compare-and-set that checks the cap on the state it writes, so racing
    calls of one session end with at most CAP sets, and every refusal says why."""
    session_id = new_id()
    names = [f"extra{index}" for index in range(CAP + 2)]
    outcomes: list[Any] = []
    async with client_for(version) as client:

        async def one(name: str) -> None:
            outcomes.append(
                await client.call_tool("enable", {"names": [name]}, meta=sid(session_id))
            )

        async with anyio.create_task_group() as group:
            for name in names:
                group.start_soon(one, name)
        refused = [result for result in outcomes if result.is_error]
        assert len(refused) == len(names) - CAP
        assert all("Disable some first" in error_text(result) for result in refused)
        final = await enabled(client, session_id)
        assert len(final) == CAP and set(final) <= set(names)
