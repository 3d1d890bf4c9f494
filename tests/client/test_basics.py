"""In-process use, policies, and the typed errors' mapping from wire codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp.shared.exceptions import MCPError

from mcp_sessions.client import (
    Client,
    ClientSessionError,
    CreateSession,
    InvalidStateError,
    LegacySessionLost,
    LimitExceededError,
    NewSession,
    ResumeSession,
    SessionNotFoundError,
    SessionRequiredError,
    SessionsError,
    StateConflictError,
    StateJar,
    StoreUnavailableError,
    translate_error,
)
from mcp_sessions.client.policy import AutoSession, normalize_policy
from mcp_sessions.core.errors import InvalidSessionId
from mcp_sessions.demo import build_demo

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_in_process_servers_work_and_are_never_persisted(mode: str, tmp_path: Path) -> None:
    mcp, _ = build_demo(state="sealed")
    jar = StateJar(tmp_path / "jar.json")
    async with Client(mcp, mode=mode, jar=jar) as client:
        assert client.sessions.advertised and client.sessions.sealed
        for expected in (1, 2):
            result = await client.call_tool("count", {})
            assert result.structured_content == {"result": expected}
        assert client.sessions.token is not None
        assert client.sessions.scope.server.startswith("local:inprocess:mcp-sessions-demo:")
    # Its identity dies with the process, so nothing was written for it.
    assert not jar.path or not jar.path.exists() or "local:" not in jar.path.read_text()


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (-31001, SessionNotFoundError),
        (-31002, SessionRequiredError),
        (-31003, InvalidStateError),
        (-31004, StateConflictError),
        (-31005, LimitExceededError),
        (-31006, StoreUnavailableError),
    ],
)
def test_wire_codes_become_typed_errors_with_the_servers_message(
    code: int, kind: type[ClientSessionError]
) -> None:
    typed = translate_error(MCPError(code, "as the server said", {"hint": 1}))
    assert type(typed) is kind and isinstance(typed, MCPError)
    assert (typed.code, typed.message, typed.data) == (code, "as the server said", {"hint": 1})
    assert str(typed) == "as the server said"
    # The former name of the base class still catches every one of them.
    assert isinstance(typed, SessionsError)


def test_other_errors_pass_through_untouched() -> None:
    error = MCPError(-32602, "bad params")
    assert translate_error(error) is error


def test_a_lost_legacy_session_is_told_apart_from_an_unknown_extension_session() -> None:
    marked = MCPError(
        -31001, "Session not found", {"dev.mcpsessions/legacySessionLost": "abc", "server": None}
    )
    typed = translate_error(marked)
    assert isinstance(typed, LegacySessionLost) and not isinstance(typed, SessionNotFoundError)
    assert "abc" in typed.message and "renew_legacy" in typed.message


def test_policies() -> None:
    assert normalize_policy("auto") == AutoSession()
    assert normalize_policy("new") == NewSession()
    assert normalize_policy("create") == CreateSession()
    assert normalize_policy(ResumeSession("a" * 32)) == ResumeSession("a" * 32)
    with pytest.raises(ValueError, match="session_policy must be"):
        normalize_policy("resume")  # type: ignore[arg-type]
    with pytest.raises(InvalidSessionId, match="at least 16"):
        ResumeSession("short")


def test_a_resumed_or_remembered_id_is_there_before_connecting(tmp_path: Path) -> None:
    url = "http://127.0.0.1:1/mcp"
    given = "0123456789abcdef0123456789abcdef"
    assert Client(url, session_policy=ResumeSession(given)).sessions.id == given
    jar = StateJar(tmp_path / "jar.json")
    first = Client(url, jar=jar)
    jar.set_current(first.sessions.scope, first.sessions.id)
    assert Client(url, jar=jar).sessions.id == first.sessions.id  # auto: remembered
    assert Client(url, jar=jar, session_policy="new").sessions.id != first.sessions.id
    assert Client(url, jar=jar, principal="other").sessions.id != first.sessions.id
