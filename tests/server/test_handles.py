"""Handles (SEP-2567, DESIGN §4) end to end, their expiry, and the handle fallback that serves
plain 2026-07-28 clients with ``session_start`` and a ``session`` argument."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client

from mcp_sessions.core.errors import HEADER_MISMATCH
from mcp_sessions.core.names import META_STATE
from mcp_sessions.core.sealing import KeyRing
from mcp_sessions.demo import build_demo

from ._app import build_app
from .helpers import (
    BOTH_FRAMEWORKS,
    TIMEOUT,
    VERSIONS,
    RawHttp,
    ShiftedClock,
    Target,
    Version,
    error_text,
    new_id,
    sid,
    tool_value,
    value,
)

pytestmark = [pytest.mark.anyio, BOTH_FRAMEWORKS]

TRANSPORTS = ["inproc", "stdio", "http"]
MakeTarget = Callable[..., Target]
NOTE = re.compile(r"note-[0-9a-f]{32}")


def tool_names_and_schemas(tools: Any) -> list[tuple[str, Any]]:
    return [(tool.name, tool.input_schema) for tool in tools.tools]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_handles_end_to_end(
    make_target: MakeTarget, transport: str, version: Version
) -> None:
    target = make_target(transport)
    async with target.client(version) as client:
        tools_before = tool_names_and_schemas(await client.session.list_tools())
        note = value(await client.call_tool("new_note", {"text": "draft"}))
        assert NOTE.fullmatch(note), note
        assert value(await client.call_tool("read_note", {"note": note})) == {"text": "draft"}
        edited = value(await client.call_tool("edit_note", {"note": note, "text": "final"}))
        assert edited == {"text": "final", "edits": 1}
        assert value(await client.call_tool("read_note", {"note": note})) == edited
        # Renewal moves the expiry (here: to about a day from now).
        expiry = value(await client.call_tool("renew_note", {"note": note, "ttl": 86400}))
        assert expiry > time.time() + 86000
        # Handles never change a list result (SEP-2567, spec §5.2 item 23).
        assert tool_names_and_schemas(await client.session.list_tools()) == tools_before
        # Revoked: the next use is a tool execution error that says so, not a protocol error.
        assert value(await client.call_tool("revoke_note", {"note": note})) == "revoked"
        gone = await client.call_tool("read_note", {"note": note})
        text = error_text(gone)
        assert "unknown or has expired" in text and "new_note" in text
        # A well-formed handle nobody made gets exactly the same answer.
        never = "note-" + "0" * 32
        unknown = error_text(await client.call_tool("read_note", {"note": never}))
        assert unknown.replace(never, note) == text


@pytest.mark.parametrize("transport", ["inproc", "http"])
async def test_expired_handle_is_a_tool_error_that_says_it_expired(
    make_target: MakeTarget, clock: ShiftedClock, transport: str
) -> None:
    target = make_target(transport, handle_ttl=60)
    async with target.client("modern") as client:
        note = value(await client.call_tool("new_note", {"text": "short-lived"}))
        for _ in range(2):  # 45 s apart: each use refreshes the 60 s idle TTL
            clock.advance(45)
            assert value(await client.call_tool("read_note", {"note": note}))["text"] == (
                "short-lived"
            )
        clock.advance(61)
        expired = await client.call_tool("edit_note", {"note": note, "text": "too late"})
        text = error_text(expired)
        assert note in text and "expired" in text
        # The edit did not happen, and the handle stays gone.
        assert "expired" in error_text(await client.call_tool("read_note", {"note": note}))


async def test_expired_handle_in_real_time() -> None:
    """The same without a shifted clock: a tiny TTL and a bounded sleep just past it."""
    mcp, _ = build_app(handle_ttl=0.3)
    async with Client(mcp, read_timeout_seconds=TIMEOUT) as client:
        note = value(await client.call_tool("new_note", {"text": "short-lived"}))
        await anyio.sleep(0.5)
        assert "expired" in error_text(await client.call_tool("read_note", {"note": note}))


@pytest.mark.parametrize("transport", ["inproc", "http"])
async def test_handle_arguments_are_checked_before_the_tool_body_runs(
    make_target: MakeTarget, clock: ShiftedClock, transport: str
) -> None:
    target = make_target(transport, handle_ttl=60)
    async with target.client("modern") as client:
        note = value(await client.call_tool("new_note", {"text": "t"}))
        assert value(await client.call_tool("peek_note", {"note": note})) == f"body ran for {note}"
        never = "note-" + "0" * 32
        refused = error_text(await client.call_tool("peek_note", {"note": never}))
        assert "unknown or has expired" in refused and "body ran" not in refused
        clock.advance(61)
        expired = error_text(await client.call_tool("peek_note", {"note": note}))
        assert "unknown or has expired" in expired and "body ran" not in expired


async def test_malformed_or_wrong_kind_handles_are_refused_by_the_schema() -> None:
    mcp, _ = build_app()
    async with Client(mcp, read_timeout_seconds=TIMEOUT) as client:
        for bad in ["note-zz", "vm-" + "0" * 32, "note-" + "A" * 32]:
            text = error_text(await client.call_tool("read_note", {"note": bad}))
            assert "pattern" in text, text


async def test_handle_header_mirror(make_target: MakeTarget) -> None:
    """The handle parameter carries ``x-mcp-header``: 2026-07-28 HTTP clients mirror it into
    ``Mcp-Param-Note``, and a header that disagrees with the argument is refused (SEP-2243)."""
    target = make_target("http")
    assert target.url is not None
    async with target.client("modern") as client:
        tools = {tool.name: tool for tool in (await client.session.list_tools()).tools}
        schema = tools["read_note"].input_schema["properties"]["note"]
        assert schema["x-mcp-header"] == "Note"
        note = value(await client.call_tool("new_note", {"text": "routed"}))
        # The SDK client sends the header itself; the call works.
        assert value(await client.call_tool("read_note", {"note": note})) == {"text": "routed"}
    async with httpx2.AsyncClient(timeout=30) as http:
        raw = RawHttp(http, target.url)
        ok = await raw.modern(
            "tools/call",
            {"name": "read_note", "arguments": {"note": note}},
            headers={"Mcp-Param-Note": note},
        )
        assert tool_value(ok) == {"text": "routed"}
        other = "note-" + "1" * 32
        mismatch = await raw.modern(
            "tools/call",
            {"name": "edit_note", "arguments": {"note": note, "text": "hijacked"}},
            headers={"Mcp-Param-Note": other},
        )
        assert mismatch.status == 400, mismatch.text
        assert mismatch.error["code"] == HEADER_MISMATCH
        # ...and the edit did not run.
        after = await raw.modern(
            "tools/call",
            {"name": "read_note", "arguments": {"note": note}},
            headers={"Mcp-Param-Note": note},
        )
        assert tool_value(after) == {"text": "routed"}


async def test_demo_vm_handles() -> None:
    """The demo's multi-step VM provisioning: one handle through four tools."""
    mcp, _ = build_demo(store="memory://")
    async with Client(mcp, read_timeout_seconds=TIMEOUT) as client:
        vm = value(await client.call_tool("init_vm", {"name": "web"}))
        assert re.fullmatch(r"vm-[0-9a-f]{32}", vm)
        assert value(await client.call_tool("set_ram", {"vm": vm, "gb": 8}))["ram_gb"] == 8
        assert value(await client.call_tool("set_cpu", {"vm": vm, "n": 4}))["cpus"] == 4
        # Anticipated failures reach the model with their reason, not a bare "Error executing".
        out_of_range = error_text(await client.call_tool("set_ram", {"vm": vm, "gb": 0}))
        assert "between 1 and 512" in out_of_range
        deployed = value(await client.call_tool("deploy_vm", {"vm": vm}))
        assert deployed == {"name": "web", "ram_gb": 8, "cpus": 4, "deployed": True}
        fixed = error_text(await client.call_tool("set_ram", {"vm": vm, "gb": 16}))
        assert "deployed" in fixed
        assert "deployed" in error_text(await client.call_tool("set_cpu", {"vm": vm, "n": 1}))
        unknown = error_text(await client.call_tool("set_ram", {"vm": "vm-" + "0" * 32, "gb": 1}))
        assert "unknown or has expired" in unknown and "init_vm" in unknown


# -- handle fallback: session_start and the `session` argument --------------------------------


@pytest.mark.parametrize("transport", ["inproc", "http"])
async def test_fallback_serves_plain_clients_with_the_same_tool_body(
    make_target: MakeTarget, transport: str
) -> None:
    target = make_target(transport)
    async with target.client("modern") as client:
        tools = {tool.name: tool.input_schema for tool in (await client.session.list_tools()).tools}
        assert tools["session_start"].get("properties", {}) == {}
        for name, schema in tools.items():
            if name != "session_start":
                assert "session" in schema["properties"], name
                assert "session" not in schema.get("required", []), name
        handle = value(await client.call_tool("session_start", {}))
        # The same `count` body serves the plain client (handle) and a _meta client.
        assert value(await client.call_tool("count", {"session": handle}))["count"] == 1
        assert value(await client.call_tool("count", {}, meta=sid(handle)))["count"] == 2
        assert value(await client.call_tool("count", {"session": handle}))["count"] == 3
        # Each session_start is a new session.
        other = value(await client.call_tool("session_start", {}))
        assert other != handle
        assert value(await client.call_tool("count", {"session": other}))["count"] == 1


async def test_fallback_unknown_or_expired_handle_is_a_tool_error(clock: ShiftedClock) -> None:
    mcp, _ = build_app(idle_ttl=60)
    async with Client(mcp, read_timeout_seconds=TIMEOUT) as client:
        handle = value(await client.call_tool("session_start", {}))
        value(await client.call_tool("count", {"session": handle}))
        never = "session-" + "0" * 32
        unknown = error_text(await client.call_tool("count", {"session": never}))
        assert "unknown or has expired" in unknown and "session_start" in unknown
        clock.advance(61)
        expired = error_text(await client.call_tool("count", {"session": handle}))
        assert expired.replace(handle, never) == unknown
        # A handle is not a client-proposed id: an unknown one never creates a session.
        again = error_text(await client.call_tool("count", {"session": never}))
        assert again == unknown


async def test_fallback_refuses_a_malformed_session_argument() -> None:
    mcp, _ = build_app()
    async with Client(mcp, read_timeout_seconds=TIMEOUT) as client:
        # The argument is the tool's input: a tool error naming it (issue #11).
        text = error_text(await client.call_tool("count", {"session": "short"}))
        assert "'session'" in text and "16" in text


async def test_fallback_off_leaves_tools_and_arguments_alone() -> None:
    mcp, _ = build_app(handle_fallback=False)
    async with Client(mcp, read_timeout_seconds=TIMEOUT) as client:
        tools = {tool.name: tool.input_schema for tool in (await client.session.list_tools()).tools}
        assert "session_start" not in tools
        assert all("session" not in schema.get("properties", {}) for schema in tools.values())
        session_id = new_id()
        assert value(await client.call_tool("count", {}, meta=sid(session_id)))["count"] == 1


@pytest.mark.parametrize("lifecycle", ["implicit", "explicit"])
async def test_fallback_keeps_state_in_the_store_in_sealed_mode(lifecycle: str) -> None:
    """A plain client never echoes a state token, so a handle session's state stays in the
    store even on a server that seals state for extension-aware clients."""
    mcp, _ = build_app(state="sealed", lifecycle=lifecycle, keys=KeyRing.generate())
    async with Client(mcp, read_timeout_seconds=TIMEOUT) as client:
        handle = value(await client.call_tool("session_start", {}))
        first = await client.call_tool("count", {"session": handle})
        second = await client.call_tool("count", {"session": handle})
        assert (value(first)["count"], value(second)["count"]) == (1, 2)
        assert META_STATE not in (second.meta or {})
