"""The sans-IO bookkeeping: what each request carries and what each result teaches the jar."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from mcp_sessions.client import JarScope, StateJar
from mcp_sessions.client.tracker import SessionTracker
from mcp_sessions.core.ids import new_session_id
from mcp_sessions.core.names import META_EXPIRES_AT, META_SESSION_ID, META_STATE
from mcp_sessions.core.sealing import KeyRing, StateCodec

CODEC = StateCodec(KeyRing.generate(), audience="tracker-tests")
SCOPE = JarScope("http://127.0.0.1:8000/mcp")


def token(session_id: str, seq: int) -> str:
    return CODEC.seal({}, principal="anonymous", session_id=session_id, seq=seq)


def tracker() -> SessionTracker:
    return SessionTracker(StateJar(), SCOPE, new_session_id())


def test_every_request_gets_the_id_and_keeps_the_callers_meta() -> None:
    t = tracker()
    params, sid = t.stamp(1, "tools/call", {"name": "x", "_meta": {"progressToken": 7}})
    assert sid == t.current
    assert params["_meta"] == {"progressToken": 7, META_SESSION_ID: t.current}
    assert params["name"] == "x"
    bare, _ = t.stamp(2, "tools/list", None)
    assert bare == {"_meta": {META_SESSION_ID: t.current}}


def test_an_explicit_id_or_token_from_the_caller_wins() -> None:
    t = tracker()
    other = new_session_id()
    t.jar.offer(SCOPE, t.current, token=token(t.current, 1))
    params, sid = t.stamp(1, "tools/call", {"_meta": {META_SESSION_ID: other}})
    assert sid == other
    assert params["_meta"] == {META_SESSION_ID: other}  # no token of another session
    params, _ = t.stamp(2, "tools/call", {"_meta": {META_STATE: "mine"}})
    assert params["_meta"][META_STATE] == "mine"


def test_the_token_rides_on_session_requests_but_not_on_lists() -> None:
    t = tracker()
    sent = token(t.current, 1)
    t.jar.offer(SCOPE, t.current, token=sent)
    call, _ = t.stamp(1, "tools/call", {})
    assert call["_meta"][META_STATE] == sent
    for method in ("tools/list", "server/discover", "initialize", "prompts/list"):
        listed, _ = t.stamp(method, method, {})
        assert META_STATE not in listed["_meta"]


def test_results_feed_the_jar_for_the_session_their_request_named() -> None:
    t = tracker()
    other = new_session_id()
    with t.using(other):
        t.stamp(1, "tools/call", {})
    t.stamp(2, "tools/call", {})
    newer = token(other, 5)
    t.on_result(1, {"_meta": {META_STATE: newer, META_EXPIRES_AT: "2999-01-01T00:00:00Z"}})
    t.on_result(2, {"content": []})
    assert t.jar.token(SCOPE, other) == newer
    assert t.jar.entry(SCOPE, other).expires_at == "2999-01-01T00:00:00Z"  # type: ignore[union-attr]
    assert t.jar.token(SCOPE, t.current) is None


def test_session_create_results_are_left_to_the_helper() -> None:
    t = tracker()
    t.stamp(1, "session/create", {"sessionId": new_session_id()})
    t.on_result(1, {"_meta": {META_STATE: token(t.current, 1)}})
    assert t.jar.token(SCOPE, t.current) is None  # the token is the new session's, not ours


@pytest.mark.anyio
async def test_using_is_task_local() -> None:
    t = tracker()
    other = new_session_id()
    seen: dict[str, str] = {}

    async def inside() -> None:
        with t.using(other):
            await anyio.lowlevel.checkpoint()
            seen["inside"] = t.active

    async def outside() -> None:
        await anyio.lowlevel.checkpoint()
        seen["outside"] = t.active

    async with anyio.create_task_group() as tg:
        tg.start_soon(inside)
        tg.start_soon(outside)
    assert seen == {"inside": other, "outside": t.current}
    assert t.active == t.current
