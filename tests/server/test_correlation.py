"""Correlation (DESIGN §2, spec §5.3 item 38): log records emitted while a request is handled
carry its session id; W3C ``baggage`` with ``gen_ai.conversation.id`` in ``_meta`` sets
``Session.conversation_id`` and is never a session key."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from mcp_sessions.core.names import META_BAGGAGE

from ._app import LOGGER_NAME
from .helpers import BOTH_FRAMEWORKS, VERSIONS, Target, Version, new_id, sid, value

CONNECTION_ID = re.compile(r"connection-[0-9a-f]{32}")

pytestmark = [pytest.mark.anyio, BOTH_FRAMEWORKS]

MakeTarget = Callable[..., Target]


def records_by_message(caplog: pytest.LogCaptureFixture) -> dict[str, logging.LogRecord]:
    return {r.getMessage(): r for r in caplog.records if r.name == LOGGER_NAME}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("transport", ["inproc", "http"])
async def test_log_records_carry_session_and_conversation_ids(
    make_target: MakeTarget,
    caplog: pytest.LogCaptureFixture,
    transport: str,
    version: Version,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    target = make_target(transport)
    session_id = new_id()
    baggage = "userId=u1,gen_ai.conversation.id=conv%2042;prop=1,other=x"
    async with target.client(version) as client:
        value(await client.call_tool("log", {"message": "with id"}, meta=sid(session_id)))
        value(
            await client.call_tool(
                "log", {"message": "with baggage"}, meta=sid(session_id, **{META_BAGGAGE: baggage})
            )
        )
        handle = value(await client.call_tool("session_start", {}))
        if not (transport == "http" and version == "legacy"):
            value(await client.call_tool("log", {"message": "with handle", "session": handle}))
            value(await client.call_tool("log", {"message": "without"}))
    logging.getLogger(LOGGER_NAME).warning("outside")

    records = records_by_message(caplog)
    assert records["with id"].mcp_session_id == session_id  # type: ignore[attr-defined]
    assert records["with id"].mcp_conversation_id == "-"  # type: ignore[attr-defined]
    assert records["with baggage"].mcp_session_id == session_id  # type: ignore[attr-defined]
    assert records["with baggage"].mcp_conversation_id == "conv 42"  # type: ignore[attr-defined]
    if "with handle" in records:
        assert records["with handle"].mcp_session_id == handle  # type: ignore[attr-defined]
        # No carrier: the connection's own session where one connection is one client (an
        # in-process 2025-11-25 loop; carrier 5, issue #11), else none.
        without = records["without"].mcp_session_id  # type: ignore[attr-defined]
        if (transport, version) == ("inproc", "legacy"):
            assert CONNECTION_ID.fullmatch(without), without
        else:
            assert without == "-"
    # Outside a request nothing leaks from the last one.
    assert records["outside"].mcp_session_id == "-"  # type: ignore[attr-defined]
    assert records["outside"].mcp_conversation_id == "-"  # type: ignore[attr-defined]


async def test_legacy_session_id_is_in_log_records(
    make_target: MakeTarget, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    target = make_target("http")
    async with target.client("legacy") as client:
        legacy_id = value(await client.call_tool("whoami", {}))["id"]
        value(await client.call_tool("log", {"message": "legacy"}))
    assert records_by_message(caplog)["legacy"].mcp_session_id == legacy_id  # type: ignore[attr-defined]


@pytest.mark.parametrize("version", VERSIONS)
async def test_log_records_over_stdio(
    make_target: MakeTarget, tmp_path: Path, version: Version
) -> None:
    """The server process formats ``%(mcp_session_id)s|%(mcp_conversation_id)s|%(message)s``."""
    log_file = tmp_path / "app.log"
    target = make_target("stdio", log_file=log_file)
    session_id = new_id()
    meta = sid(session_id, **{META_BAGGAGE: "gen_ai.conversation.id=c-7"})
    async with target.client(version) as client:
        value(await client.call_tool("log", {"message": "over stdio"}, meta=meta))
        value(await client.call_tool("log", {"message": "no session"}))
    lines = log_file.read_text(encoding="utf-8").splitlines()
    assert f"{session_id}|c-7|over stdio" in lines
    # Over stdio a request without a carrier belongs to the connection's session (issue #11).
    assert any(re.fullmatch(r"connection-[0-9a-f]{32}\|-\|no session", line) for line in lines)


@pytest.mark.parametrize("version", VERSIONS)
async def test_baggage_sets_conversation_id_but_is_never_a_session_key(
    make_target: MakeTarget, version: Version
) -> None:
    target = make_target("inproc")
    session_id = new_id()
    async with target.client(version) as client:
        baggage = {META_BAGGAGE: f"gen_ai.conversation.id={session_id}"}
        seen = value(await client.call_tool("maybe", {}, meta=baggage))["session"]
        if version == "legacy":  # an in-process 2025-11-25 loop: the connection's session
            assert (seen["carrier"], seen["id"] != session_id) == ("connection", True)
        else:
            assert seen is None
        who = value(
            await client.call_tool(
                "whoami", {}, meta=sid(session_id, **{META_BAGGAGE: "gen_ai.conversation.id=c1"})
            )
        )
        assert (who["id"], who["conversationId"]) == (session_id, "c1")
        # The conversation id belongs to the request, not to the session.
        who = value(await client.call_tool("whoami", {}, meta=sid(session_id)))
        assert who["conversationId"] is None
        # Malformed or absent members give no conversation id. (A non-string baggage is not
        # tried: the SDK's OpenTelemetry propagator fails on it before any middleware runs.)
        for bad in ("gen_ai.conversation.id", "gen_ai.conversation.id=", "x=1", "=,;"):
            who = value(
                await client.call_tool("whoami", {}, meta=sid(session_id, **{META_BAGGAGE: bad}))
            )
            assert who["conversationId"] is None, bad
