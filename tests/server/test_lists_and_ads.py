"""Lists never vary by session (2026-07-28 rule, DESIGN §3); session-dependent reads are
``cacheScope: "private"``; the extension is advertised at both protocol versions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import pytest
from mcp import Client

from mcp_sessions.core.names import (
    EXTENSION_ID,
    HEADER_CLIENT_SESSION_ID,
    META_EXPIRES_AT,
    META_STATE,
)
from mcp_sessions.core.sealing import KeyRing

from .helpers import (
    BOTH_FRAMEWORKS,
    VERSIONS,
    RawHttp,
    Target,
    Version,
    new_id,
    sid,
    tool_value,
    value,
)

pytestmark = [pytest.mark.anyio, BOTH_FRAMEWORKS]

MakeTarget = Callable[..., Target]


def dump(result: Any, key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [
        item.model_dump(by_alias=True, exclude_none=True) for item in getattr(result, key)
    ]
    return items


async def all_lists(client: Client, meta: dict[str, Any] | None) -> dict[str, Any]:
    """Every list the client can ask for, with ``meta`` (forces a round trip) or without
    (session tier: never cached)."""
    if meta is None:
        session = client.session
        return {
            "tools": dump(await session.list_tools(), "tools"),
            "resources": dump(await session.list_resources(), "resources"),
            "templates": dump(await session.list_resource_templates(), "resource_templates"),
            "prompts": dump(await session.list_prompts(), "prompts"),
        }
    return {
        "tools": dump(await client.list_tools(meta=meta), "tools"),
        "resources": dump(await client.list_resources(meta=meta), "resources"),
        "templates": dump(await client.list_resource_templates(meta=meta), "resource_templates"),
        "prompts": dump(await client.list_prompts(meta=meta), "prompts"),
    }


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("transport", ["inproc", "http"])
async def test_lists_do_not_depend_on_the_session(
    make_target: MakeTarget, transport: str, version: Version
) -> None:
    target = make_target(transport)
    session_id = new_id()
    async with target.client(version) as client:
        plain = await all_lists(client, None)
        assert {tool["name"] for tool in plain["tools"]} >= {"session_start", "count", "whoami"}
        assert await all_lists(client, sid(session_id)) == plain
        # Not after the session has state, a handle exists, or the session is another one.
        value(await client.call_tool("put", {"key": "k", "value": 1}, meta=sid(session_id)))
        value(await client.call_tool("new_note", {"text": "t"}, meta=sid(session_id)))
        assert await all_lists(client, sid(session_id)) == plain
        assert await all_lists(client, sid(new_id())) == plain
        # A list result carries no session _meta: it is not a session-dependent result.
        listed = await client.list_tools(meta=sid(session_id))
        meta = listed.meta or {}
        assert META_EXPIRES_AT not in meta and META_STATE not in meta


async def test_lists_on_the_wire_are_byte_identical(make_target: MakeTarget) -> None:
    """Raw HTTP: tools/list without a session, with a client id (and its header), and on a
    2025-11-25 session all list the same tools."""
    target = make_target("http")
    assert target.url is not None
    session_id = new_id()
    async with httpx2.AsyncClient(timeout=30) as http:
        raw = RawHttp(http, target.url)
        plain = await raw.modern("tools/list", {})
        with_id = await raw.modern(
            "tools/list",
            {},
            meta=sid(session_id),
            headers={HEADER_CLIENT_SESSION_ID: session_id},
        )
        legacy_id = await raw.initialize()
        legacy = await raw.legacy("tools/list", {}, session_id=legacy_id)
        assert plain.status == with_id.status == legacy.status == 200
        assert plain.result["tools"] == with_id.result["tools"] == legacy.result["tools"]
        assert plain.result.get("_meta") == with_id.result.get("_meta")
        discover = await raw.modern("server/discover", {})
        discover_with_id = await raw.modern("server/discover", {}, meta=sid(session_id))
        assert discover.result == discover_with_id.result


@pytest.fixture
async def raw(make_target: MakeTarget) -> AsyncIterator[RawHttp]:
    target = make_target("http")
    assert target.url is not None
    async with httpx2.AsyncClient(timeout=30) as http:
        yield RawHttp(http, target.url)


async def test_session_dependent_read_is_private(raw: RawHttp) -> None:
    session_id = new_id()
    tool_value(
        await raw.modern(
            "tools/call",
            {"name": "put", "arguments": {"key": "k", "value": 1}},
            meta=sid(session_id),
        )
    )
    read = await raw.modern("resources/read", {"uri": "session://state"}, meta=sid(session_id))
    assert read.status == 200, read.text
    assert read.result["contents"][0]["text"] == '{"k": 1}'
    assert (read.result["cacheScope"], read.result["ttlMs"]) == ("private", 0)
    assert META_EXPIRES_AT in read.result["_meta"]
    # A read that does not use the session keeps the server's public hint, with or without
    # a session id on the request: the id alone changes nothing.
    for meta in (None, sid(session_id)):
        static = await raw.modern("resources/read", {"uri": "static://hello"}, meta=meta)
        assert (static.result["cacheScope"], static.result["ttlMs"]) == ("public", 60_000)
        assert META_EXPIRES_AT not in (static.result.get("_meta") or {})


async def test_legacy_read_has_no_modern_cache_fields(raw: RawHttp) -> None:
    """Spec §5.0 item 6 (choice): modern-only fields stay off 2025-11-25 responses."""
    legacy_id = await raw.initialize()
    read = await raw.legacy("resources/read", {"uri": "session://state"}, session_id=legacy_id)
    assert read.status == 200, read.text
    assert read.result["contents"][0]["text"] == "{}"
    assert "cacheScope" not in read.result and "ttlMs" not in read.result


CONFIGS = [
    ({}, {"lifecycle": "implicit", "state": False}),
    ({"lifecycle": "explicit"}, {"lifecycle": "explicit", "state": False}),
    ({"state": "sealed"}, {"lifecycle": "implicit", "state": True}),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("transport", ["inproc", "stdio", "http"])
async def test_extension_is_advertised(
    make_target: MakeTarget, transport: str, version: Version
) -> None:
    for options, expected in CONFIGS if transport != "stdio" else CONFIGS[:1]:
        if options.get("state") == "sealed":
            options = {**options, "keys": KeyRing.generate()}
        target = make_target(transport, **options)
        async with target.client(version) as client:
            capabilities = client.server_capabilities
            assert capabilities is not None and capabilities.extensions is not None
            assert capabilities.extensions[EXTENSION_ID] == {
                **expected,
                "header": HEADER_CLIENT_SESSION_ID,
                "maxStateBytes": 4096,
            }


async def test_extension_ad_on_the_wire(raw: RawHttp) -> None:
    discover = await raw.modern("server/discover", {})
    assert discover.status == 200, discover.text
    modern_ad = discover.result["capabilities"]["extensions"][EXTENSION_ID]
    reply = await raw.post(
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "raw-test", "version": "0"},
            },
        },
        {"accept": "application/json, text/event-stream", "content-type": "application/json"},
    )
    legacy_ad = reply.result["capabilities"]["extensions"][EXTENSION_ID]
    assert modern_ad == legacy_ad
    assert set(modern_ad) == {"lifecycle", "state", "header", "maxStateBytes"}
