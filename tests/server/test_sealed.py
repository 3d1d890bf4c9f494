"""Sealed state (DESIGN §4): the state travels in ``dev.mcpsessions/state``; round trip,
fork by replaying an older token, and every bad token refused with -31003 and no change."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from mcp import Client

from mcp_sessions.core.errors import (
    INVALID_PARAMS,
    INVALID_STATE,
    SESSION_NOT_FOUND,
    InvalidState,
)
from mcp_sessions.core.names import META_STATE
from mcp_sessions.core.sealing import KeyRing, StateCodec, read_token_header

from ._app import AUDIENCE, build_app
from .helpers import (
    BOTH_FRAMEWORKS,
    TIMEOUT,
    VERSIONS,
    Target,
    Version,
    expect_error,
    new_id,
    session_create,
    sid,
    value,
)

pytestmark = [pytest.mark.anyio, BOTH_FRAMEWORKS]

TRANSPORTS = ["inproc", "stdio", "http"]
MakeTarget = Callable[..., Target]


async def bump(client: Client, session_id: str, token: str | None) -> tuple[int, str]:
    """``count`` with the token echoed; returns the count and the new token."""
    meta = sid(session_id, **({META_STATE: token} if token is not None else {}))
    result = await client.call_tool("count", {}, meta=meta)
    assert result.meta is not None and META_STATE in result.meta, result.meta
    return value(result)["count"], result.meta[META_STATE]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_sealed_round_trip_and_fork_by_replay(
    make_target: MakeTarget, transport: str, version: Version
) -> None:
    target = make_target(transport, state="sealed", keys=KeyRing.generate())
    session_id = new_id()
    async with target.client(version) as client:
        one, t1 = await bump(client, session_id, None)
        two, t2 = await bump(client, session_id, t1)
        three, t3 = await bump(client, session_id, t2)
        assert (one, two, three) == (1, 2, 3)
        # seq grows with every change, so a client keeps the newest token.
        assert [read_token_header(t).seq for t in (t1, t2, t3)] == [1, 2, 3]

        # Tokens are immutable: replaying t1 forks from count 1, and both branches go on.
        fork, t_fork = await bump(client, session_id, t1)
        assert fork == 2
        assert (await bump(client, session_id, t_fork))[0] == 3
        assert (await bump(client, session_id, t3))[0] == 4

        # A read-only request issues no new token (only changes do, DESIGN §3).
        read = await client.call_tool("whoami", {}, meta=sid(session_id, **{META_STATE: t3}))
        assert value(read)["state"] == {"count": 3}
        assert read.meta is not None and META_STATE not in read.meta


async def test_sealed_server_keeps_nothing(make_target: MakeTarget) -> None:
    mcp, sessions = build_app(state="sealed", keys=KeyRing.generate())
    session_id = new_id()
    async with Client(mcp, read_timeout_seconds=TIMEOUT) as client:
        _, token = await bump(client, session_id, None)
        await bump(client, session_id, token)
    store = sessions.engine.store
    assert await store.list("anonymous") == []


def forged_tokens(ring: KeyRing, session_id: str, good: str) -> dict[str, str]:
    """Tokens this server must refuse, each for one reason."""
    codec = StateCodec(ring, audience=AUDIENCE)
    middle = len(good) // 2
    flipped = good[:middle] + ("A" if good[middle] != "A" else "B") + good[middle + 1 :]
    return {
        "tampered": flipped,
        "truncated": good[:-10],
        "garbage": "not-a-token",
        "expired": codec.seal(
            {"count": 99},
            principal="anonymous",
            session_id=session_id,
            seq=50,
            now=time.time() - 2 * codec.ttl,
        ),
        "other session": codec.seal(
            {"count": 99}, principal="anonymous", session_id=new_id(), seq=50
        ),
        "other principal": codec.seal(
            {"count": 99}, principal='["x","mallory",null]', session_id=session_id, seq=50
        ),
        "other server (audience)": StateCodec(ring, audience="another-server").seal(
            {"count": 99}, principal="anonymous", session_id=session_id, seq=50
        ),
        "other server (keys)": StateCodec(KeyRing.generate(), audience=AUDIENCE).seal(
            {"count": 99}, principal="anonymous", session_id=session_id, seq=50
        ),
    }


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("transport", ["inproc", "http"])
async def test_bad_tokens_are_refused_without_state_change(
    make_target: MakeTarget, transport: str, version: Version
) -> None:
    ring = KeyRing.generate()
    target = make_target(transport, state="sealed", keys=ring)
    session_id = new_id()
    async with target.client(version) as client:
        _, t1 = await bump(client, session_id, None)
        count, t2 = await bump(client, session_id, t1)
        assert count == 2
        for reason, token in forged_tokens(ring, session_id, t2).items():
            error = await expect_error(
                client.call_tool("count", {}, meta=sid(session_id, **{META_STATE: token}))
            )
            assert (error.code, error.message) == (INVALID_STATE, InvalidState().message), reason
            # The server says nothing about which check failed (one answer for all).
            assert error.data is None, reason
        # Nothing changed: the newest good token continues where it was.
        assert (await bump(client, session_id, t2))[0] == 3


@pytest.mark.parametrize("version", VERSIONS)
async def test_state_over_4096_bytes_is_refused_without_change(
    make_target: MakeTarget, version: Version
) -> None:
    target = make_target("http", state="sealed", keys=KeyRing.generate())
    session_id = new_id()
    async with target.client(version) as client:
        _, token = await bump(client, session_id, None)
        error = await expect_error(
            client.call_tool(
                "put",
                {"key": "blob", "value": "x" * 4096},
                meta=sid(session_id, **{META_STATE: token}),
            )
        )
        assert error.code == INVALID_PARAMS
        assert "4096" in error.message and "state mode 'server'" in error.message
        # No token came back, and the last good one still holds only the counter.
        who = await client.call_tool("whoami", {}, meta=sid(session_id, **{META_STATE: token}))
        assert value(who)["state"] == {"count": 1}
        # Just under the limit is fine.
        fits = await client.call_tool(
            "put",
            {"key": "blob", "value": "x" * 2000},
            meta=sid(session_id, **{META_STATE: token}),
        )
        assert fits.meta is not None and len(fits.meta[META_STATE]) <= 4096


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("transport", ["inproc", "http"])
async def test_explicit_sealed_sessions_and_fork(
    make_target: MakeTarget, transport: str, version: Version
) -> None:
    target = make_target(transport, state="sealed", lifecycle="explicit", keys=KeyRing.generate())
    async with target.client(version) as client:
        # Explicit: an id without the token session/create gave is unknown.
        error = await expect_error(client.call_tool("count", {}, meta=sid(new_id())))
        assert error.code == SESSION_NOT_FOUND

        created = await session_create(client)
        session_id, token = created["sessionId"], created["state"]
        assert created["_meta"][META_STATE] == token
        count, token = await bump(client, session_id, token)
        assert count == 1

        # Fork: the parent's token goes in _meta; the child gets its own token.
        put = await client.call_tool(
            "put", {"key": "k", "value": "v"}, meta=sid(session_id, **{META_STATE: token})
        )
        assert put.meta is not None
        parent_token = put.meta[META_STATE]
        child = await session_create(client, forkFrom=session_id, meta={META_STATE: parent_token})
        child_id, child_token = child["sessionId"], child["state"]
        assert child_id != session_id
        child_state = await client.call_tool(
            "whoami", {}, meta=sid(child_id, **{META_STATE: child_token})
        )
        assert value(child_state)["state"] == {"count": 1, "k": "v"}
        # seq continues from the parent's, so jars that keep the highest seq stay consistent.
        assert read_token_header(child_token).seq > read_token_header(parent_token).seq
        # The parent's token is not the child's.
        error = await expect_error(
            client.call_tool("whoami", {}, meta=sid(child_id, **{META_STATE: parent_token}))
        )
        assert error.code == INVALID_STATE

        # Forking without the parent's token is refused with a hint.
        error = await expect_error(session_create(client, forkFrom=session_id))
        assert error.code == SESSION_NOT_FOUND
        assert META_STATE in error.message


async def test_legacy_sessions_keep_state_on_the_server_in_sealed_mode(
    make_target: MakeTarget,
) -> None:
    """A 2025-11-25 client naming its session by Mcp-Session-Id knows nothing of tokens, so
    its state stays in the store even when the server seals state for everyone else."""
    target = make_target("http", state="sealed", keys=KeyRing.generate())
    async with target.client("legacy") as client:
        first = await client.call_tool("count", {})
        second = await client.call_tool("count", {})
        assert (value(first)["count"], value(second)["count"]) == (1, 2)
        meta: dict[str, Any] = second.meta or {}
        assert META_STATE not in meta
