"""Carrier precedence as revised for issue #11 (DESIGN §2): a ``session`` handle argument is
explicit, so it beats the legacy ``Mcp-Session-Id`` and the connection; a ``_meta`` id that
disagrees with it is an error, never a silent choice. And the errors a plain client gets are
ones it can act on: a malformed handle is a tool error naming the argument, -31002 names
``session_start`` where the fallback is on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mcp_sessions.core.errors import INVALID_PARAMS, SESSION_REQUIRED

from .helpers import (
    BOTH_FRAMEWORKS,
    VERSIONS,
    Target,
    Version,
    error_text,
    expect_error,
    new_id,
    sid,
    value,
)

pytestmark = [pytest.mark.anyio, BOTH_FRAMEWORKS]

MakeTarget = Callable[..., Target]
CASES = [(transport, version) for transport in ("stdio", "http") for version in VERSIONS]


async def test_a_handle_argument_beats_the_legacy_session_over_http(
    make_target: MakeTarget,
) -> None:
    """An agent that reconnects with a new ``Mcp-Session-Id`` and reuses its saved handle
    keeps its state."""
    target = make_target("http")
    async with target.client("legacy") as client:
        handle = value(await client.call_tool("session_start", {}))
        assert value(await client.call_tool("put", {"key": "k", "value": 1, "session": handle}))
        who = value(await client.call_tool("whoami", {"session": handle}))
        assert (who["id"], who["carrier"], who["state"]) == (handle, "handle", {"k": 1})
        # Without the argument, the same connection is its legacy session, untouched.
        own = value(await client.call_tool("whoami", {}))
        assert (own["carrier"], own["state"]) == ("legacy", {})
    async with target.client("legacy") as client:  # a new connection, a new Mcp-Session-Id
        again = value(await client.call_tool("whoami", {"session": handle}))
        assert (again["id"], again["carrier"], again["state"]) == (handle, "handle", {"k": 1})


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_handle_argument_beats_the_connection_over_stdio(
    make_target: MakeTarget, version: Version
) -> None:
    target = make_target("stdio")
    async with target.client(version) as client:
        handle = value(await client.call_tool("session_start", {}))
        assert value(await client.call_tool("count", {"session": handle}))["count"] == 1
        own = value(await client.call_tool("count", {}))
        assert (own["count"], own["id"] != handle) == (1, True)
        assert value(await client.call_tool("count", {"session": handle}))["count"] == 2


@pytest.mark.parametrize(("transport", "version"), CASES)
async def test_a_meta_id_that_disagrees_with_the_handle_argument_is_an_error(
    make_target: MakeTarget, transport: str, version: Version
) -> None:
    target = make_target(transport)
    async with target.client(version) as client:
        handle = value(await client.call_tool("session_start", {}))
        other = new_id()
        error = await expect_error(
            client.call_tool("put", {"key": "k", "value": 1, "session": handle}, meta=sid(other))
        )
        assert error.code == INVALID_PARAMS
        assert "dev.mcpsessions/sessionId" in error.message
        assert "'session'" in error.message
        # Neither session was touched.
        assert value(await client.call_tool("whoami", {"session": handle}))["state"] == {}
        meta_side = value(await client.call_tool("whoami", {}, meta=sid(other)))
        assert (meta_side["created"], meta_side["state"]) == (True, {})
        # The same id in both is one session, named twice.
        same = value(await client.call_tool("whoami", {"session": handle}, meta=sid(handle)))
        assert (same["id"], same["carrier"]) == (handle, "meta")


MALFORMED: list[tuple[Any, str]] = [
    (42, "must be a string"),
    ("x", "1 characters long"),
    ("session-ZZZ", "11 characters long"),
    ("session-" + "0" * 10_000, "10008 characters long"),
    ("session-" + "!" * 32, "only letters, digits and '-'"),
]


@pytest.mark.parametrize(("transport", "version"), CASES)
async def test_a_malformed_handle_is_a_tool_error_naming_the_argument(
    make_target: MakeTarget, transport: str, version: Version
) -> None:
    target = make_target(transport)
    async with target.client(version) as client:
        probe = new_id()
        for bad, problem in MALFORMED:
            for meta in (None, sid(probe)):
                result = await client.call_tool(
                    "put", {"key": "k", "value": 1, "session": bad}, meta=meta
                )
                text = error_text(result)  # isError: true, not a JSON-RPC error
                assert text.startswith("The 'session' argument "), text
                assert problem in text
                assert "session_start" in text
                assert len(text) < 300  # the value is never echoed back
        # The tool body never ran: the _meta session was not even created.
        who = value(await client.call_tool("whoami", {}, meta=sid(probe)))
        assert (who["created"], who["state"]) == (True, {})
        # A well-formed but unknown handle is a tool error too, saying so.
        unknown = error_text(await client.call_tool("whoami", {"session": "session-" + "0" * 32}))
        assert "unknown or has expired" in unknown
        assert "session_start" in unknown


async def test_session_required_names_session_start_where_the_fallback_is_on(
    make_target: MakeTarget,
) -> None:
    """A plain 2026-07-28 HTTP client (no connection session there) is told what it can do."""
    target = make_target("http")
    async with target.client("modern") as client:
        error = await expect_error(client.call_tool("whoami", {}))
        assert error.code == SESSION_REQUIRED
        assert "session_start" in error.message
        assert "'session' argument" in error.message
        # ... and doing it works.
        handle = value(await client.call_tool("session_start", {}))
        assert value(await client.call_tool("whoami", {"session": handle}))["id"] == handle


async def test_session_required_stays_generic_without_the_fallback(
    make_target: MakeTarget,
) -> None:
    target = make_target("http", handle_fallback=False)
    async with target.client("modern") as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert "session_start" not in tools
        error = await expect_error(client.call_tool("whoami", {}))
        assert error.code == SESSION_REQUIRED
        # Never points at a tool or an argument this server does not offer.
        assert "session_start" not in error.message
        assert "argument" not in error.message
        assert "dev.mcpsessions/sessionId" in error.message
