"""Legacy ``Mcp-Session-Id`` sessions for 2025-11-25 clients, served from the store (DESIGN §5,
spec-digest §5.1), checked on the wire."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import pytest

from mcp_sessions.core.errors import SessionNotFound
from mcp_sessions.server.http import LegacyGate

from ._app import build_app
from .helpers import (
    BOTH_FRAMEWORKS,
    RawHttp,
    ShiftedClock,
    ThreadedServer,
    new_id,
    sid,
    tool_value,
)

pytestmark = [pytest.mark.anyio, BOTH_FRAMEWORKS]

NOT_FOUND = {"code": SessionNotFound.code, "message": SessionNotFound().message}
COUNT = {"name": "count", "arguments": {}}


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=30) as client:
        yield client


@pytest.fixture
def raw(
    serve: Callable[[Any], ThreadedServer], http: httpx2.AsyncClient, clock: ShiftedClock
) -> RawHttp:
    mcp, sessions = build_app(idle_ttl=600)
    server = serve(sessions.streamable_http_app(mcp, host="127.0.0.1"))
    return RawHttp(http, server.url)


async def test_id_is_issued_on_the_initialize_response_only(raw: RawHttp) -> None:
    session_id = await raw.initialize()
    assert len(session_id) >= 16 and session_id.isascii()
    reply = await raw.legacy("tools/call", COUNT, session_id=session_id)
    assert tool_value(reply)["count"] == 1
    assert "mcp-session-id" not in reply.headers
    # Never minted on a 2026-07-28 request either (spec §5.1 item 10).
    modern = await raw.modern("tools/call", COUNT, meta=sid(new_id()))
    assert tool_value(modern)["count"] == 1
    assert "mcp-session-id" not in modern.headers
    # Every initialize starts a new session.
    assert await raw.initialize() != session_id


async def test_missing_id_is_400(raw: RawHttp) -> None:
    await raw.initialize()
    reply = await raw.legacy("tools/call", COUNT, session_id=None)
    assert reply.status == 400, reply.text
    assert "Mcp-Session-Id" in reply.error["message"]


async def test_unknown_id_is_404(raw: RawHttp, http: httpx2.AsyncClient) -> None:
    for unknown in (new_id(), "f" * 32, "not a valid id at all!"):
        reply = await raw.legacy("tools/call", COUNT, session_id=unknown)
        assert reply.status == 404, reply.text
        assert reply.error == NOT_FOUND
    response = await http.get(
        raw.url,
        headers={
            "accept": "text/event-stream",
            "mcp-session-id": new_id(),
            "mcp-protocol-version": "2025-11-25",
        },
    )
    assert response.status_code == 404


async def test_delete_is_204_then_404(raw: RawHttp) -> None:
    session_id = await raw.initialize()
    assert tool_value(await raw.legacy("tools/call", COUNT, session_id=session_id))["count"] == 1
    assert await raw.delete(session_id) == 204
    reply = await raw.legacy("tools/call", COUNT, session_id=session_id)
    assert (reply.status, reply.error) == (404, NOT_FOUND)
    assert await raw.delete(session_id) == 404
    # Its id cannot be revived through the store either: a modern client naming it in _meta
    # gets a fresh, empty session (implicit lifecycle), not the destroyed one's counter.
    modern = await raw.modern("tools/call", COUNT, meta=sid(session_id))
    assert tool_value(modern) == {"count": 1, "created": True, "id": session_id}
    reply = await raw.legacy("tools/call", COUNT, session_id=session_id)
    assert (reply.status, reply.error) == (404, NOT_FOUND)


async def test_session_destroy_ends_a_legacy_session(raw: RawHttp) -> None:
    session_id = await raw.initialize()
    destroyed = await raw.modern("session/destroy", {"sessionId": session_id})
    assert destroyed.status == 200 and "error" not in destroyed.body, destroyed.text
    reply = await raw.legacy("tools/call", COUNT, session_id=session_id)
    assert (reply.status, reply.error) == (404, NOT_FOUND)


async def test_expired_id_is_404(raw: RawHttp, clock: ShiftedClock) -> None:
    session_id = await raw.initialize()
    assert tool_value(await raw.legacy("tools/call", COUNT, session_id=session_id))["count"] == 1
    clock.advance(300)  # half the idle TTL: still alive, and the use refreshes it
    assert tool_value(await raw.legacy("tools/call", COUNT, session_id=session_id))["count"] == 2
    clock.advance(601)
    reply = await raw.legacy("tools/call", COUNT, session_id=session_id)
    assert (reply.status, reply.error) == (404, NOT_FOUND)
    assert await raw.delete(session_id) == 404


async def test_a_client_id_is_not_a_legacy_session(raw: RawHttp) -> None:
    """Only ids minted on initialize are legacy sessions: a client-proposed session's id sent
    as Mcp-Session-Id is unknown to the legacy gate."""
    client_id = new_id()
    assert tool_value(await raw.modern("tools/call", COUNT, meta=sid(client_id)))["count"] == 1
    reply = await raw.legacy("tools/call", COUNT, session_id=client_id)
    assert (reply.status, reply.error) == (404, NOT_FOUND)


async def test_legacy_and_modern_interleave_on_one_endpoint(raw: RawHttp) -> None:
    """Spec §5.0 item 1: the era is chosen per request; neither affects the other."""
    legacy_id = await raw.initialize()
    modern_id = new_id()
    for expected in (1, 2, 3):
        legacy = await raw.legacy("tools/call", COUNT, session_id=legacy_id, request_id=expected)
        modern = await raw.modern("tools/call", COUNT, meta=sid(modern_id), request_id=expected)
        assert tool_value(legacy)["count"] == expected
        assert tool_value(modern)["count"] == expected


@pytest.mark.parametrize("held_here", [True, False], ids=["stateful", "stateless"])
async def test_a_legacy_call_reads_its_session_once(
    serve: Callable[[Any], ThreadedServer], http: httpx2.AsyncClient, held_here: bool
) -> None:
    """The HTTP gate reads (and touches) the legacy session; the tool layer reuses that record
    instead of reading the store a second time — on the replica holding the connection and on
    any other one."""
    mcp, sessions = build_app()
    store = sessions.engine.store
    reads: list[str] = []
    original = store.get

    async def counting_get(kind: str, id: str, principal: str, **options: Any) -> Any:
        reads.append(id)
        return await original(kind, id, principal, **options)

    store.get = counting_get  # type: ignore[method-assign]
    app = sessions.streamable_http_app(mcp, host="127.0.0.1")
    raw = RawHttp(http, serve(app).url)
    legacy_id = await raw.initialize()
    if not held_here:
        # As if another replica had minted it: this process serves it statelessly.
        gate = next(
            r.app for r in app.router.routes if isinstance(getattr(r, "app", None), LegacyGate)
        )
        gate.local.discard(legacy_id)
    reads.clear()
    first = await raw.legacy("tools/call", COUNT, session_id=legacy_id)
    second = await raw.legacy("tools/call", COUNT, session_id=legacy_id, request_id=2)
    assert tool_value(first)["count"] + 1 == tool_value(second)["count"]
    assert reads == [legacy_id, legacy_id]  # one read per call
