"""Implicit and explicit lifecycles, ``session/create`` / ``session/destroy`` / fork (DESIGN §3),
over every transport at both protocol versions."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime

import pytest
from mcp import Client

from mcp_sessions.core.errors import (
    INVALID_PARAMS,
    SESSION_NOT_FOUND,
    SESSION_REQUIRED,
    SessionNotFound,
)
from mcp_sessions.server.extension import fallback_session_required

from ._app import build_app
from .helpers import (
    BOTH_FRAMEWORKS,
    TIMEOUT,
    VERSIONS,
    ShiftedClock,
    Target,
    Version,
    expect_error,
    new_id,
    session_create,
    session_destroy,
    sid,
    value,
)

pytestmark = [pytest.mark.anyio, BOTH_FRAMEWORKS]

TRANSPORTS = ["inproc", "stdio", "http"]
MakeTarget = Callable[..., Target]
MINTED_ID = re.compile(r"[0-9a-f]{32}")


def parse_rfc3339(text: str) -> float:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_implicit_lifecycle(
    make_target: MakeTarget, transport: str, version: Version
) -> None:
    target = make_target(transport, lifecycle="implicit")
    session_id = new_id()
    async with target.client(version) as client:
        # A request that names no session: where one connection is one client (stdio, an
        # in-process 2025-11-25 loop) it belongs to the connection's session (carrier 5,
        # issue #11); elsewhere it has none, and a tool that needs one says what to do (a
        # 2025-11-25 HTTP client always names its legacy session).
        if transport == "stdio" or (transport, version) == ("inproc", "legacy"):
            own = value(await client.call_tool("maybe", {}))["session"]
            assert (own["carrier"], own["origin"]) == ("connection", "connection")
        elif not (transport == "http" and version == "legacy"):
            assert value(await client.call_tool("maybe", {})) == {"session": None}
            error = await expect_error(client.call_tool("whoami", {}))
            assert (error.code, error.message) == (
                SESSION_REQUIRED,
                fallback_session_required("session"),
            )
        # The first request with a new client id creates the session, later ones reuse it.
        first = await client.call_tool("count", {}, meta=sid(session_id))
        assert value(first) == {"count": 1, "created": True, "id": session_id}
        assert value(await client.call_tool("count", {}, meta=sid(session_id))) == {
            "count": 2,
            "created": False,
            "id": session_id,
        }
        # Results that used the session carry its expiry (DESIGN §3).
        assert first.meta is not None
        assert parse_rfc3339(first.meta["dev.mcpsessions/expiresAt"]) > time.time()
        # Another id is another session.
        assert value(await client.call_tool("count", {}, meta=sid(new_id())))["count"] == 1


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_explicit_lifecycle(
    make_target: MakeTarget, transport: str, version: Version
) -> None:
    target = make_target(transport, lifecycle="explicit")
    unknown = new_id()
    async with target.client(version) as client:
        error = await expect_error(client.call_tool("count", {}, meta=sid(unknown)))
        assert (error.code, error.message) == (SESSION_NOT_FOUND, SessionNotFound().message)
        # ...and the refused request created nothing: the id is still free for session/create.
        created = await session_create(client, sessionId=unknown)
        assert created["sessionId"] == unknown
        assert value(await client.call_tool("count", {}, meta=sid(unknown)))["count"] == 1

        # Without sessionId the server mints an id (128 random bits).
        minted = await session_create(client)
        session_id = minted["sessionId"]
        assert MINTED_ID.fullmatch(session_id), session_id
        assert parse_rfc3339(minted["expiresAt"]) > time.time()
        assert "state" not in minted  # server-side state: no token
        counted = value(await client.call_tool("count", {}, meta=sid(session_id)))
        assert counted == {"count": 1, "created": False, "id": session_id}

        # destroy by param, then the id is unknown, and destroying again says so.
        await session_destroy(client, sessionId=session_id)
        error = await expect_error(client.call_tool("count", {}, meta=sid(session_id)))
        assert error.code == SESSION_NOT_FOUND
        error = await expect_error(session_destroy(client, sessionId=session_id))
        assert (error.code, error.message) == (SESSION_NOT_FOUND, SessionNotFound().message)

        # destroy by the _meta id of the request.
        await session_destroy(client, meta=sid(unknown))
        error = await expect_error(client.call_tool("whoami", {}, meta=sid(unknown)))
        assert error.code == SESSION_NOT_FOUND


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("transport", ["inproc", "http"])  # stdio: see test_explicit_lifecycle
async def test_create_fork_destroy(
    make_target: MakeTarget, transport: str, version: Version
) -> None:
    target = make_target(transport, lifecycle="explicit")
    async with target.client(version) as client:
        parent = (await session_create(client))["sessionId"]
        value(await client.call_tool("put", {"key": "cart", "value": ["tea"]}, meta=sid(parent)))

        child = await session_create(client, forkFrom=parent)
        child_id = child["sessionId"]
        assert child_id != parent
        who = value(await client.call_tool("whoami", {}, meta=sid(child_id)))
        assert (who["origin"], who["state"]) == ("fork", {"cart": ["tea"]})

        # After the fork the two are independent.
        value(
            await client.call_tool(
                "put", {"key": "cart", "value": ["tea", "jam"]}, meta=sid(child_id)
            )
        )
        parent_state = value(await client.call_tool("whoami", {}, meta=sid(parent)))["state"]
        assert parent_state == {"cart": ["tea"]}

        # A fork may also take the id its client chose.
        chosen = new_id()
        assert (await session_create(client, sessionId=chosen, forkFrom=child_id))[
            "sessionId"
        ] == chosen
        assert value(await client.call_tool("whoami", {}, meta=sid(chosen)))["state"] == {
            "cart": ["tea", "jam"]
        }

        # Destroying the parent leaves its forks alone; forking a destroyed session fails.
        await session_destroy(client, sessionId=parent)
        assert value(await client.call_tool("whoami", {}, meta=sid(child_id)))["state"] == {
            "cart": ["tea", "jam"]
        }
        error = await expect_error(session_create(client, forkFrom=parent))
        assert (error.code, error.message) == (SESSION_NOT_FOUND, SessionNotFound().message)


async def test_create_with_ttl_seconds(make_target: MakeTarget) -> None:
    target = make_target("inproc", lifecycle="explicit")
    async with target.client("modern") as client:
        before = time.time()
        created = await session_create(client, ttlSeconds=60)
        expires = parse_rfc3339(created["expiresAt"])
        # RFC 3339 to the second: the expiry is 60 s after creation, not the default hour.
        assert before + 58 <= expires <= time.time() + 61
        used = await client.call_tool("count", {}, meta=sid(created["sessionId"]))
        assert used.meta is not None
        assert parse_rfc3339(used.meta["dev.mcpsessions/expiresAt"]) <= time.time() + 61


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"sessionId": "short"}, "at least 16"),
        ({"sessionId": "x" * 129}, "at most 128"),
        ({"sessionId": "has space in the id"}, "' '"),
        ({"ttlSeconds": -1}, "ttlSeconds"),
        ({"forkFrom": "bad!id-0123456789"}, "'!'"),
    ],
)
async def test_create_refuses_bad_params(
    make_target: MakeTarget, params: dict[str, object], needle: str
) -> None:
    target = make_target("inproc", lifecycle="explicit")
    async with target.client("modern") as client:
        error = await expect_error(session_create(client, **params))
        assert error.code == INVALID_PARAMS
        assert needle in error.message


async def test_create_refuses_an_id_in_use(make_target: MakeTarget) -> None:
    target = make_target("inproc", lifecycle="explicit")
    session_id = new_id()
    async with target.client("modern") as client:
        await session_create(client, sessionId=session_id)
        value(await client.call_tool("put", {"key": "k", "value": 1}, meta=sid(session_id)))
        error = await expect_error(session_create(client, sessionId=session_id))
        assert error.code == INVALID_PARAMS
        assert "already in use" in error.message
        # The existing session is untouched.
        assert value(await client.call_tool("whoami", {}, meta=sid(session_id)))["state"] == {
            "k": 1
        }


async def test_destroy_without_any_id_says_what_is_missing(make_target: MakeTarget) -> None:
    target = make_target("inproc")
    async with target.client("modern") as client:
        error = await expect_error(session_destroy(client))
        assert error.code == SESSION_NOT_FOUND
        assert "sessionId" in error.message


async def test_implicit_reuse_of_a_destroyed_id_starts_empty(make_target: MakeTarget) -> None:
    """Implicit lifecycle: a destroyed session's state is gone for good; the next request
    with its id starts a new, empty session (DESIGN §3: unknown client ids create)."""
    target = make_target("inproc", lifecycle="implicit")
    session_id = new_id()
    async with target.client("modern") as client:
        value(await client.call_tool("put", {"key": "k", "value": 1}, meta=sid(session_id)))
        await session_destroy(client, sessionId=session_id)
        again = value(await client.call_tool("whoami", {}, meta=sid(session_id)))
        assert (again["created"], again["state"]) == (True, {})


@pytest.mark.parametrize("lifecycle", ["implicit", "explicit"])
async def test_idle_expiry(lifecycle: str, clock: ShiftedClock) -> None:
    """Use keeps a session alive; idle past its TTL it is gone: explicit mode answers
    SessionNotFound, implicit mode starts a fresh, empty session under the same id."""
    mcp, _ = build_app(lifecycle=lifecycle, idle_ttl=60)
    async with Client(mcp, read_timeout_seconds=TIMEOUT) as client:
        if lifecycle == "explicit":
            session_id = (await session_create(client))["sessionId"]
        else:
            session_id = new_id()
        assert value(await client.call_tool("count", {}, meta=sid(session_id)))["count"] == 1
        for expected in (2, 3, 4):  # 45 s apart: each use refreshes the 60 s idle TTL
            clock.advance(45)
            counted = value(await client.call_tool("count", {}, meta=sid(session_id)))
            assert counted["count"] == expected
        clock.advance(61)
        if lifecycle == "explicit":
            error = await expect_error(client.call_tool("count", {}, meta=sid(session_id)))
            assert (error.code, error.message) == (SESSION_NOT_FOUND, SessionNotFound().message)
            error = await expect_error(session_destroy(client, sessionId=session_id))
            assert error.code == SESSION_NOT_FOUND
        else:
            fresh = value(await client.call_tool("count", {}, meta=sid(session_id)))
            assert fresh == {"count": 1, "created": True, "id": session_id}
