"""Principal binding (DESIGN §2): sessions, legacy ids, handles and state tokens belong to the
principal that made them; another principal gets exactly the unknown-id answer.

Served by ``mcp-sessions demo --auth-tokens`` (bearer token → subject), as an operator runs it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from mcp_sessions.core.errors import INVALID_STATE, SESSION_NOT_FOUND
from mcp_sessions.core.names import META_STATE

from ._app import build_app
from .conftest import ALICE, BOB, TOKENS
from .helpers import (
    BOTH_FRAMEWORKS,
    MODE,
    PROTOCOL,
    TIMEOUT,
    VERSIONS,
    RawHttp,
    ServerProcess,
    ThreadedServer,
    Version,
    error_text,
    expect_error,
    new_id,
    session_create,
    session_destroy,
    sid,
    start_demo,
    tool_value,
    value,
)

pytestmark = [pytest.mark.anyio, BOTH_FRAMEWORKS]


def answer(error: MCPError) -> tuple[int, str, Any]:
    return error.code, error.message, error.data


@pytest.fixture(scope="module")
def auth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("auth")
    (directory / "tokens.json").write_text(json.dumps(TOKENS), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def explicit_server(auth_dir: Path) -> Iterator[ServerProcess]:
    """Server-side state, explicit lifecycle, bearer auth, SQLite."""
    server = start_demo(
        auth_dir,
        "--store",
        f"sqlite:///{auth_dir}/explicit.sqlite3",
        "--lifecycle",
        "explicit",
        "--auth-tokens",
        str(auth_dir / "tokens.json"),
        name="explicit",
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sealed_server(auth_dir: Path) -> Iterator[ServerProcess]:
    """Sealed state, implicit lifecycle, bearer auth."""
    server = start_demo(
        auth_dir,
        "--store",
        "memory://",
        "--state",
        "sealed",
        "--auth-tokens",
        str(auth_dir / "tokens.json"),
        name="sealed",
    )
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def client_as(url: str, headers: dict[str, str], version: Version) -> AsyncIterator[Client]:
    """The SDK client at ``version`` with a bearer token on every request."""
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(
            streamable_http_client(url, http_client=http),
            mode=MODE[version],
            read_timeout_seconds=TIMEOUT,
        ) as client,
    ):
        assert client.protocol_version == PROTOCOL[version]
        yield client


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=30) as client:
        yield client


async def test_requests_without_a_known_token_get_401(
    explicit_server: ServerProcess, http: httpx2.AsyncClient
) -> None:
    raw = RawHttp(http, explicit_server.url)
    for headers in ({}, {"Authorization": "Bearer mallory-token"}):
        reply = await raw.modern("tools/list", {}, headers=headers)
        assert reply.status == 401, reply.text
        assert "bearer" in reply.headers.get("www-authenticate", "").lower()


@pytest.mark.parametrize("version", VERSIONS)
async def test_session_ids_are_bound_to_their_principal(
    explicit_server: ServerProcess, version: Version
) -> None:
    url = explicit_server.url
    async with client_as(url, ALICE, version) as alice, client_as(url, BOB, version) as bob:
        alices = (await session_create(alice))["sessionId"]
        assert value(await alice.call_tool("count", {}, meta=sid(alices))) == 1
        value(await alice.call_tool("add_item", {"item": "tea"}, meta=sid(alices)))

        unknown = new_id()
        for tool, args in (("count", {}), ("add_item", {"item": "x"}), ("checkout", {})):
            theirs = await expect_error(bob.call_tool(tool, args, meta=sid(alices)))
            nobody = await expect_error(bob.call_tool(tool, args, meta=sid(unknown)))
            assert answer(theirs) == answer(nobody)
            assert theirs.code == SESSION_NOT_FOUND
        # The same for session/destroy and for forking another principal's session.
        theirs = await expect_error(session_destroy(bob, sessionId=alices))
        nobody = await expect_error(session_destroy(bob, sessionId=unknown))
        assert answer(theirs) == answer(nobody)
        theirs = await expect_error(session_create(bob, forkFrom=alices))
        nobody = await expect_error(session_create(bob, forkFrom=unknown))
        assert answer(theirs) == answer(nobody)

        # Alice's session is untouched by all of it.
        assert value(await alice.call_tool("count", {}, meta=sid(alices))) == 2
        order = value(await alice.call_tool("checkout", {}, meta=sid(alices)))
        assert order["items"] == ["tea"]


def without_id(result: dict[str, Any]) -> dict[str, Any]:
    """A tool result with the session id left out, to compare two sessions' answers."""
    return {name: item for name, item in result.items() if name != "id"}


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_implicit_ids_are_bound_to_their_principal(
    serve: Callable[[Any], ThreadedServer], static_tokens: Any, tmp_path: Path, store: str
) -> None:
    """Implicit lifecycle: ids are per principal. Bob's first request with Alice's id is
    answered exactly as one with an id nobody holds: it creates a fresh session of Bob's own
    (count starts at 1), and Alice's session and state stay hers, untouched."""
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path}/implicit.sqlite3"
    mcp, sessions = build_app(store=url, auth_tokens=static_tokens)
    server = serve(sessions.streamable_http_app(mcp, host="127.0.0.1"))
    session_id = new_id()
    async with client_as(server.url, ALICE, "modern") as alice:
        who = value(
            await alice.call_tool("put", {"key": "secret", "value": "a"}, meta=sid(session_id))
        )
        assert who == {"secret": "a"}
        assert value(await alice.call_tool("count", {}, meta=sid(session_id)))["count"] == 1
        owner = value(await alice.call_tool("whoami", {}, meta=sid(session_id)))["principal"]
        assert "alice" in owner
        async with client_as(server.url, BOB, "modern") as bob:
            unknown = new_id()
            theirs = value(await bob.call_tool("count", {}, meta=sid(session_id)))
            nobody = value(await bob.call_tool("count", {}, meta=sid(unknown)))
            assert theirs == {"count": 1, "created": True, "id": session_id}
            assert without_id(theirs) == without_id(nobody)
            # From then on the id names Bob's own session, bound to Bob, with Bob's state.
            theirs = value(await bob.call_tool("whoami", {}, meta=sid(session_id)))
            nobody = value(await bob.call_tool("whoami", {}, meta=sid(unknown)))
            assert "bob" in theirs["principal"]
            assert theirs["state"] == {"count": 1} and theirs["created"] is False
            assert without_id(theirs) == without_id(nobody)
            mine = value(
                await bob.call_tool("put", {"key": "secret", "value": "b"}, meta=sid(session_id))
            )
            assert mine == {"count": 1, "secret": "b"}
            assert value(await bob.call_tool("count", {}, meta=sid(session_id)))["count"] == 2
        # Alice's session is untouched by all of it.
        after = value(await alice.call_tool("whoami", {}, meta=sid(session_id)))
        assert after["principal"] == owner
        assert after["state"] == {"secret": "a", "count": 1}
        assert value(await alice.call_tool("count", {}, meta=sid(session_id)))["count"] == 2


@pytest.mark.parametrize("version", VERSIONS)
async def test_session_create_takes_an_id_another_principal_holds(
    explicit_server: ServerProcess, version: Version
) -> None:
    """Regression: session/create with an id Alice holds used to answer Bob "already in use",
    telling him the id exists. Ids are per principal: Bob gets his own session, exactly as
    for an id nobody holds, and Alice's is untouched."""
    url = explicit_server.url
    async with client_as(url, ALICE, version) as alice, client_as(url, BOB, version) as bob:
        chosen = new_id()
        assert (await session_create(alice, sessionId=chosen))["sessionId"] == chosen
        value(await alice.call_tool("add_item", {"item": "tea"}, meta=sid(chosen)))

        unknown = new_id()
        theirs = await session_create(bob, sessionId=chosen)
        nobody = await session_create(bob, sessionId=unknown)
        assert theirs["sessionId"] == chosen and nobody["sessionId"] == unknown
        assert set(theirs) == set(nobody) and "expiresAt" in theirs
        # Bob's session of that id is his own: an empty cart, a counter from 1.
        assert value(await bob.call_tool("count", {}, meta=sid(chosen))) == 1
        order = value(await bob.call_tool("checkout", {}, meta=sid(chosen)))
        assert order["items"] == []
        # Only his own live session makes the id "in use" for him, as for Alice.
        error = await expect_error(session_create(bob, sessionId=chosen))
        assert "already in use" in error.message
        error = await expect_error(session_create(alice, sessionId=chosen))
        assert "already in use" in error.message
        # Destroying his leaves hers.
        await session_destroy(bob, sessionId=chosen)
        gone = await expect_error(bob.call_tool("count", {}, meta=sid(chosen)))
        assert gone.code == SESSION_NOT_FOUND

        assert value(await alice.call_tool("count", {}, meta=sid(chosen))) == 1
        order = value(await alice.call_tool("checkout", {}, meta=sid(chosen)))
        assert order["items"] == ["tea"]


async def test_legacy_ids_are_bound_to_their_principal(
    explicit_server: ServerProcess, http: httpx2.AsyncClient
) -> None:
    raw = RawHttp(http, explicit_server.url)
    count = {"name": "count", "arguments": {}}
    legacy_id = await raw.initialize(headers=ALICE)
    assert (
        tool_value(await raw.legacy("tools/call", count, session_id=legacy_id, headers=ALICE)) == 1
    )
    theirs = await raw.legacy("tools/call", count, session_id=legacy_id, headers=BOB)
    nobody = await raw.legacy("tools/call", count, session_id=new_id(), headers=BOB)
    assert theirs.status == nobody.status == 404
    assert theirs.body == nobody.body
    assert await raw.delete(legacy_id, headers=BOB) == 404
    # Still Alice's, and unchanged by Bob's attempts.
    assert (
        tool_value(await raw.legacy("tools/call", count, session_id=legacy_id, headers=ALICE)) == 2
    )
    assert await raw.delete(legacy_id, headers=ALICE) == 204


async def test_handles_are_bound_to_their_principal(explicit_server: ServerProcess) -> None:
    url = explicit_server.url
    async with client_as(url, ALICE, "modern") as alice, client_as(url, BOB, "modern") as bob:
        vm = value(await alice.call_tool("init_vm", {"name": "alices"}))
        never = "vm-" + "0" * 32
        for tool, args in (("set_ram", {"gb": 64}), ("deploy_vm", {})):
            theirs = error_text(await bob.call_tool(tool, {"vm": vm, **args}))
            nobody = error_text(await bob.call_tool(tool, {"vm": never, **args}))
            assert theirs.replace(vm, never) == nobody
            assert "unknown or has expired" in theirs
        # Nothing changed for Alice: not deployed, RAM as she left it.
        state = value(await alice.call_tool("set_cpu", {"vm": vm, "n": 2}))
        assert state == {"name": "alices", "ram_gb": 2, "cpus": 2, "deployed": False}

        # The fallback's session handles too.
        handle = value(await alice.call_tool("session_start", {}))
        assert value(await alice.call_tool("count", {"session": handle})) == 1
        never = "session-" + "0" * 32
        theirs = error_text(await bob.call_tool("count", {"session": handle}))
        nobody = error_text(await bob.call_tool("count", {"session": never}))
        assert theirs.replace(handle, never) == nobody
        assert value(await alice.call_tool("count", {"session": handle})) == 2


async def test_state_tokens_are_bound_to_their_principal(sealed_server: ServerProcess) -> None:
    url = sealed_server.url
    session_id = new_id()
    async with client_as(url, ALICE, "modern") as alice, client_as(url, BOB, "modern") as bob:
        first = await alice.call_tool("add_item", {"item": "secret"}, meta=sid(session_id))
        assert first.meta is not None
        token = first.meta[META_STATE]
        with_token = sid(session_id, **{META_STATE: token})
        theirs = await expect_error(bob.call_tool("checkout", {}, meta=with_token))
        garbage = await expect_error(
            bob.call_tool("checkout", {}, meta=sid(session_id, **{META_STATE: "ms1.AAAA"}))
        )
        assert answer(theirs) == answer(garbage)
        assert theirs.code == INVALID_STATE
        # Bob under Alice's id without her token starts his own empty session: he sees
        # nothing of hers.
        order = value(await bob.call_tool("checkout", {}, meta=sid(session_id)))
        assert order["items"] == []
        # Alice's token still holds her cart.
        order = value(await alice.call_tool("checkout", {}, meta=with_token))
        assert order["items"] == ["secret"]
