"""Bad input on the wire (raw HTTP against a real server): each case gets its clear error, and
the store is exactly as it was before the request (issue #4)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from mcp_sessions.core.errors import (
    HEADER_MISMATCH,
    INVALID_PARAMS,
    SESSION_NOT_FOUND,
    SessionNotFound,
)
from mcp_sessions.core.names import (
    HEADER_BEDROCK_SESSION_ID,
    HEADER_CLIENT_SESSION_ID,
    META_SEP2822_SESSION_ID,
    META_SESSION_ID,
)
from mcp_sessions.stores import open_store

from ._app import build_app
from .helpers import (
    BOTH_FRAMEWORKS,
    RawHttp,
    Reply,
    ThreadedServer,
    modern_request,
    new_id,
    sid,
    tool_value,
)

pytestmark = [pytest.mark.anyio, BOTH_FRAMEWORKS]


@dataclass
class Wire:
    raw: RawHttp
    store_url: str

    async def snapshot(self) -> set[tuple[str, str, int, str]]:
        """Every live record: (kind, id, version, state) — what "no state change" compares."""
        async with open_store(self.store_url) as store:
            records = await store.list("anonymous")
        return {(r.kind, r.id, r.version, repr(sorted(r.state.items()))) for r in records}

    async def put(self, meta: dict[str, Any], headers: dict[str, Any] | None = None) -> Reply:
        return await self.raw.modern(
            "tools/call",
            {"name": "put", "arguments": {"key": "k", "value": "changed"}},
            meta=meta,
            headers=headers,
        )


def make_wire(
    tmp_path: Path, serve: Callable[[Any], ThreadedServer], http: httpx2.AsyncClient, **options: Any
) -> Wire:
    store_url = f"sqlite:///{tmp_path}/wire.sqlite3"
    mcp, sessions = build_app(store=store_url, **options)
    server = serve(sessions.streamable_http_app(mcp, host="127.0.0.1"))
    return Wire(RawHttp(http, server.url), store_url)


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=30) as client:
        yield client


@pytest.fixture
def wire(tmp_path: Path, serve: Callable[[Any], ThreadedServer], http: httpx2.AsyncClient) -> Wire:
    return make_wire(tmp_path, serve, http)


async def seed(wire: Wire) -> str:
    """One session with state, so that a change would show."""
    session_id = new_id()
    reply = await wire.put(sid(session_id))
    assert tool_value(reply) == {"k": "changed"}
    reply = await wire.raw.modern(
        "tools/call",
        {"name": "put", "arguments": {"key": "k", "value": "original"}},
        meta=sid(session_id),
    )
    assert tool_value(reply) == {"k": "original"}
    return session_id


def assert_error(reply: Reply, status: int, code: int, *needles: str) -> None:
    assert reply.status == status, reply.text
    assert reply.error["code"] == code, reply.error
    for needle in needles:
        assert needle in reply.error["message"], reply.error


async def test_header_meta_mismatch_is_400_32020_and_changes_nothing(wire: Wire) -> None:
    session_id = await seed(wire)
    before = await wire.snapshot()
    for meta in (sid(session_id), {META_SEP2822_SESSION_ID: session_id}):
        reply = await wire.put(meta, headers={HEADER_CLIENT_SESSION_ID: new_id()})
        assert_error(reply, 400, HEADER_MISMATCH, HEADER_CLIENT_SESSION_ID, "same session id")
        # Not byte-identical is a mismatch too (case, surrounding text).
        reply = await wire.put(meta, headers={HEADER_CLIENT_SESSION_ID: session_id.upper()})
        assert_error(reply, 400, HEADER_MISMATCH)
    assert await wire.snapshot() == before
    # The same request with a matching header goes through.
    ok = await wire.put(sid(session_id), headers={HEADER_CLIENT_SESSION_ID: session_id})
    assert tool_value(ok) == {"k": "changed"}


async def test_header_meta_mismatch_on_a_legacy_request(wire: Wire) -> None:
    legacy_id = await wire.raw.initialize()
    params = {"name": "put", "arguments": {"key": "k", "value": "changed"}}
    before = await wire.snapshot()
    mine = new_id()
    reply = await wire.raw.legacy(
        "tools/call",
        {**params, "_meta": sid(mine)},
        session_id=legacy_id,
        headers={HEADER_CLIENT_SESSION_ID: new_id()},
    )
    assert_error(reply, 400, HEADER_MISMATCH)
    assert await wire.snapshot() == before


BAD_IDS: list[tuple[str, Any, str]] = [
    ("15 characters", "a" * 15, "at least 16"),
    ("129 characters", "a" * 129, "at most 128"),
    ("oversize", "a" * 10_000, "at most 128"),
    ("underscore", "abc_defghijklmnopq", "'_'"),
    ("space", "abc defghijklmnopq", "' '"),
    ("slash", "abc/defghijklmnopq", "'/'"),
    ("non-ASCII", "é" * 16, "non-ASCII"),
    ("number", 12345678901234567890, "must be a string"),
    ("null", None, "must be a string"),
    ("object", {"id": "a" * 20}, "must be a string"),
]


@pytest.mark.parametrize(("case", "bad", "needle"), BAD_IDS, ids=[c[0] for c in BAD_IDS])
async def test_malformed_session_id_is_refused_and_changes_nothing(
    wire: Wire, case: str, bad: Any, needle: str
) -> None:
    await seed(wire)
    before = await wire.snapshot()
    reply = await wire.put({META_SESSION_ID: bad})
    assert_error(reply, 400, INVALID_PARAMS, META_SESSION_ID, needle)
    # The SEP-2822 alias is held to the same syntax.
    reply = await wire.put({META_SEP2822_SESSION_ID: bad})
    assert_error(reply, 400, INVALID_PARAMS, needle)
    assert await wire.snapshot() == before


async def test_boundary_lengths_are_accepted(wire: Wire) -> None:
    for session_id in ("a" * 16, "B-" * 64):
        assert tool_value(await wire.put(sid(session_id))) == {"k": "changed"}


async def test_non_ascii_headers_are_refused(wire: Wire, http: httpx2.AsyncClient) -> None:
    session_id = await seed(wire)
    before = await wire.snapshot()
    non_ascii = "é".encode() * 10
    # As the mirror of an ASCII _meta id: not byte-identical, so a mismatch.
    reply = await wire.put(sid(session_id), headers={HEADER_CLIENT_SESSION_ID: non_ascii})
    assert_error(reply, 400, HEADER_MISMATCH)
    # As the only carrier (Bedrock's header): an invalid id, named as coming from the header.
    reply = await wire.put({}, headers={HEADER_BEDROCK_SESSION_ID: non_ascii})
    assert_error(reply, 400, INVALID_PARAMS, HEADER_BEDROCK_SESSION_ID, "non-ASCII")
    assert await wire.snapshot() == before


async def test_undefined_key_under_our_prefix_is_refused(wire: Wire) -> None:
    """A typo such as ``dev.mcpsessions/sessionid`` must not silently start a session-less
    call."""
    session_id = await seed(wire)
    before = await wire.snapshot()
    reply = await wire.put({"dev.mcpsessions/sessionid": session_id})
    assert_error(reply, 400, INVALID_PARAMS, "dev.mcpsessions/sessionid", META_SESSION_ID)
    assert await wire.snapshot() == before


async def test_unknown_and_destroyed_sessions_in_explicit_mode(
    tmp_path: Path, serve: Callable[[Any], ThreadedServer], http: httpx2.AsyncClient
) -> None:
    wire = make_wire(tmp_path, serve, http, lifecycle="explicit")
    created = await wire.raw.modern("session/create", {})
    session_id = created.result["sessionId"]
    assert tool_value(await wire.put(sid(session_id))) == {"k": "changed"}
    before = await wire.snapshot()

    unknown = await wire.put(sid(new_id()))
    assert unknown.error == {"code": SESSION_NOT_FOUND, "message": SessionNotFound().message}
    assert await wire.snapshot() == before  # no session was created for the unknown id

    destroyed = await wire.raw.modern("session/destroy", {"sessionId": session_id})
    assert destroyed.status == 200 and "error" not in destroyed.body, destroyed.text
    after_destroy = await wire.snapshot()
    assert after_destroy == {r for r in before if r[1] != session_id}
    reply = await wire.put(sid(session_id))
    assert reply.error == unknown.error  # destroyed reads exactly like unknown
    assert await wire.snapshot() == after_destroy


async def test_unknown_protocol_version_gets_the_sdk_version_error(wire: Wire) -> None:
    """A version header that is not a handshake-era version takes the modern path, as in the
    SDK, so the client hears "unsupported version" (-32022), not a legacy session rule."""
    body, headers = modern_request("tools/list", {}, meta={})
    body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = "v999.0.0"
    reply = await wire.raw.post(body, {**headers, "mcp-protocol-version": "v999.0.0"})
    assert reply.status == 400
    assert reply.error is not None and reply.error["code"] == -32022
