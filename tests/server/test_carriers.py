"""Every carrier of DESIGN §2 reaches the same ``Session``, over every transport where the
carrier exists, at both protocol versions (issue #4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from mcp_sessions.core.names import (
    HEADER_BEDROCK_SESSION_ID,
    META_OPENAI_SESSION,
    META_SEP2822_SESSION_ID,
)

from .helpers import (
    BOTH_FRAMEWORKS,
    VERSIONS,
    RawHttp,
    Target,
    Version,
    mirror,
    new_id,
    sid,
    tool_value,
    value,
)

pytestmark = [pytest.mark.anyio, BOTH_FRAMEWORKS]

TRANSPORTS = ["inproc", "stdio", "http"]
MakeTarget = Callable[..., Target]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_meta_and_alias_carriers_reach_one_session(
    make_target: MakeTarget, transport: str, version: Version
) -> None:
    target = make_target(transport)
    session_id = new_id()
    async with target.client(version) as client:
        created = value(
            await client.call_tool("put", {"key": "k", "value": 1}, meta=sid(session_id))
        )
        assert created == {"k": 1}
        carriers: list[tuple[str, dict[str, Any]]] = [
            ("meta", sid(session_id)),
            ("sep2822", {META_SEP2822_SESSION_ID: session_id}),
            ("openai", {META_OPENAI_SESSION: session_id}),
        ]
        for index, (carrier, meta) in enumerate(carriers):
            # Each carrier edits the state, and the next one sees the edit.
            who = value(await client.call_tool("whoami", {}, meta=meta))
            assert who["id"] == session_id
            assert who["carrier"] == carrier
            assert who["origin"] == "client"
            assert who["created"] is False
            assert who["principal"] == "anonymous"
            assert who["state"]["k"] == 1 + index
            value(await client.call_tool("put", {"key": "k", "value": 2 + index}, meta=meta))


#: Every transport and version: the handle argument is explicit, so it outranks the legacy
#: Mcp-Session-Id of a 2025-11-25 HTTP client too (DESIGN §2, issue #11; see
#: test_precedence.py).
HANDLE_CASES = [(transport, version) for transport in TRANSPORTS for version in VERSIONS]


@pytest.mark.parametrize(("transport", "version"), HANDLE_CASES)
async def test_handle_argument_reaches_the_same_session_as_meta(
    make_target: MakeTarget, transport: str, version: Version
) -> None:
    target = make_target(transport)
    async with target.client(version) as client:
        handle = value(await client.call_tool("session_start", {}))
        assert isinstance(handle, str) and handle.startswith("session-")
        via_handle = value(
            await client.call_tool("put", {"key": "cart", "value": ["a"], "session": handle})
        )
        assert via_handle == {"cart": ["a"]}
        who = value(await client.call_tool("whoami", {"session": handle}))
        assert (who["id"], who["carrier"], who["origin"]) == (handle, "handle", "handle")
        # The handle names a session like any other: a _meta client reaches the same one.
        via_meta = value(await client.call_tool("whoami", {}, meta=sid(handle)))
        assert (via_meta["id"], via_meta["carrier"], via_meta["state"]) == (
            handle,
            "meta",
            {"cart": ["a"]},
        )


@pytest.mark.parametrize("version", VERSIONS)
async def test_http_header_carriers_reach_the_same_session(
    make_target: MakeTarget, version: Version
) -> None:
    target = make_target("http")
    session_id = new_id()
    async with target.client(version) as client:
        value(await client.call_tool("put", {"key": "k", "value": "v"}, meta=sid(session_id)))
    # Bedrock AgentCore's header alone names the session.
    async with target.client(version, headers={HEADER_BEDROCK_SESSION_ID: session_id}) as client:
        who = value(await client.call_tool("whoami", {}))
        assert (who["id"], who["carrier"], who["state"]) == (session_id, "bedrock", {"k": "v"})
    # _meta with its matching HTTP mirror: the meta carrier, same session.
    async with target.client(version, headers=mirror(session_id)) as client:
        who = value(await client.call_tool("whoami", {}, meta=sid(session_id)))
        assert (who["id"], who["carrier"], who["state"]) == (session_id, "meta", {"k": "v"})
        # The SEP-2822 spelling pairs with the same header.
        who = value(
            await client.call_tool("whoami", {}, meta={META_SEP2822_SESSION_ID: session_id})
        )
        assert (who["id"], who["carrier"]) == (session_id, "sep2822")


async def test_mirror_header_without_meta_is_ignored(make_target: MakeTarget) -> None:
    """DESIGN §3: a header without ``_meta`` does not name the session (a gateway may route
    on it, the server does not look it up)."""
    target = make_target("http")
    session_id = new_id()
    async with target.client("modern", headers=mirror(session_id)) as client:
        assert value(await client.call_tool("maybe", {})) == {"session": None}
        # ...and it created nothing: the first real use of the id creates the session.
        first = value(await client.call_tool("count", {}, meta=sid(session_id)))
        assert first == {"count": 1, "created": True, "id": session_id}


async def test_legacy_mcp_session_id_reaches_the_same_session(make_target: MakeTarget) -> None:
    target = make_target("http")
    async with target.client("legacy") as legacy:
        who = value(await legacy.call_tool("whoami", {}))
        assert (who["carrier"], who["origin"]) == ("legacy", "legacy")
        legacy_id = who["id"]
        value(await legacy.call_tool("put", {"key": "from", "value": "legacy"}))
        assert value(await legacy.call_tool("count", {}))["count"] == 1
        # _meta wins over Mcp-Session-Id (carrier order of DESIGN §2).
        other = new_id()
        assert value(await legacy.call_tool("whoami", {}, meta=sid(other)))["id"] == other
        # The legacy session is a session like any other: a modern client naming its id in
        # _meta sees the same state and counter, and its edits reach the legacy client.
        async with target.client("modern") as modern:
            who = value(await modern.call_tool("whoami", {}, meta=sid(legacy_id)))
            assert (who["id"], who["origin"], who["carrier"]) == (legacy_id, "legacy", "meta")
            assert who["state"] == {"from": "legacy", "count": 1}
            assert value(await modern.call_tool("count", {}, meta=sid(legacy_id)))["count"] == 2
        assert value(await legacy.call_tool("count", {}))["count"] == 3
    # Closing the legacy client sent DELETE: the id now names nothing, so a modern client's
    # first use of it starts a fresh session (implicit lifecycle).
    async with target.client("modern") as modern:
        fresh = value(await modern.call_tool("whoami", {}, meta=sid(legacy_id)))
        assert (fresh["origin"], fresh["created"], fresh["state"]) == ("client", True, {})


async def test_modern_request_ignores_mcp_session_id(make_target: MakeTarget) -> None:
    """Spec §5.1 item 10: on a 2026-07-28 request ``Mcp-Session-Id`` is ignored, never
    answered with 404, and never names the session."""
    target = make_target("http")
    assert target.url is not None
    async with httpx2.AsyncClient(timeout=30) as http:
        raw = RawHttp(http, target.url)
        reply = await raw.modern(
            "tools/call",
            {"name": "maybe", "arguments": {}},
            headers={"mcp-session-id": "f" * 32},
        )
        assert tool_value(reply) == {"session": None}
        assert "mcp-session-id" not in reply.headers
