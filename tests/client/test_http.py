"""The client over Streamable HTTP, at 2025-11-25 and 2026-07-28, against the demo server and a
plain SDK server; what the servers saw is checked at the servers."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client as PlainClient
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult

from mcp_sessions.client import (
    Client,
    CreateSession,
    InvalidStateError,
    LegacySessionLost,
    ResumeSession,
    SessionClient,
    SessionNotFoundError,
    SessionsUnsupported,
    StateJar,
)
from mcp_sessions.core.errors import SessionNotFound
from mcp_sessions.core.names import META_STATE
from mcp_sessions.demo import StaticTokens

from .servers import Recorder

pytestmark = pytest.mark.anyio

Start = Callable[..., tuple[str, Recorder]]


def value(result: CallToolResult) -> Any:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    content = result.structured_content
    return content["result"] if set(content) == {"result"} else content


def requests_of(recorder: Recorder, since: int = 0) -> list[Any]:
    return recorder.seen[since:]


# -- the id on every request --------------------------------------------------------------------


async def test_a_plain_sdk_server_sees_the_id_on_every_request(
    plain_http: Callable[[], tuple[str, Recorder]], mode: str
) -> None:
    url, recorder = plain_http()
    async with Client(url, mode=mode) as client:
        assert not client.sessions.advertised  # the plain server does not know the extension
        assert isinstance(client, PlainClient)
        await client.list_tools()
        assert value(await client.call_tool("echo", {"text": "hi"})) == "hi"
        who = value(await client.call_tool("whoami", {}))
        sid = client.sessions.id
    assert who == {"meta": sid, "header": sid}
    seen = requests_of(recorder)
    handshake = "initialize" if mode == "legacy" else "server/discover"
    assert [s.method for s in seen] == [handshake, "tools/list", "tools/call", "tools/call"]
    assert all(s.meta_id == sid and s.header_id == sid for s in seen), seen
    assert not any(s.has_state for s in seen)


async def test_the_demo_server_keeps_the_session_across_calls(demo_http: Start, mode: str) -> None:
    url, recorder = demo_http()
    async with Client(url, mode=mode) as client:
        assert client.sessions.advertised
        assert client.sessions.lifecycle == "implicit" and not client.sessions.sealed
        assert [value(await client.call_tool("count", {})) for _ in range(3)] == [1, 2, 3]
        assert client.sessions.expires_at is not None  # from the result's _meta
        sid = client.sessions.id
    assert {(s.meta_id, s.header_id) for s in recorder.seen} == {(sid, sid)}


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_parallel_first_calls_land_in_one_session(demo_http: Start, mode: str) -> None:
    # Pinned at 2026-07-28 the client sends nothing before the calls: they are the very first
    # requests, all in flight before any response came back.
    url, recorder = demo_http()
    async with Client(url, mode=mode) as client:
        results: list[int] = []

        async def one() -> None:
            results.append(value(await client.call_tool("count", {})))

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(one)
        assert sorted(results) == list(range(1, 9))
        assert value(await client.call_tool("count", {})) == 9
        sid = client.sessions.id
    calls = [s for s in recorder.seen if s.method == "tools/call"]
    assert len(calls) == 9 and {(s.meta_id, s.header_id) for s in calls} == {(sid, sid)}


async def test_the_id_exists_before_the_first_request(demo_http: Start) -> None:
    url, recorder = demo_http()
    client = Client(url, mode="2026-07-28")
    sid = client.sessions.id
    assert len(sid) == 32
    async with client:
        await client.call_tool("count", {})
    assert recorder.seen[0].meta_id == sid


# -- sealed state: the jar ----------------------------------------------------------------------


async def test_sealed_state_tokens_are_kept_and_echoed_exactly(demo_http: Start, mode: str) -> None:
    url, recorder = demo_http(state="sealed")
    async with Client(url, mode=mode) as client:
        assert client.sessions.sealed
        first = await client.call_tool("add_item", {"item": "apple"})
        issued = (first.meta or {})[META_STATE]
        assert client.sessions.token == issued
        assert value(await client.call_tool("add_item", {"item": "pear"})) == ["apple", "pear"]
        assert client.sessions.snapshot().seq == 2
    calls = [s for s in recorder.seen if s.method == "tools/call"]
    assert not calls[0].has_state
    assert calls[1].state == issued  # byte for byte
    assert not any(s.has_state for s in recorder.seen if s.method.endswith("list"))


# -- fork and rollback --------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["server", "sealed"])
async def test_a_fork_copies_the_state_and_then_goes_its_own_way(
    demo_http: Start, mode: str, state: str
) -> None:
    url, recorder = demo_http(state=state)
    async with Client(url, mode=mode) as client:
        await client.call_tool("add_item", {"item": "apple"})
        parent = client.sessions.id
        fork = await client.sessions.fork()
        assert fork.id != parent and client.sessions.id == parent
        with client.sessions.use(fork):
            assert client.sessions.id == fork.id
            assert value(await client.call_tool("add_item", {"item": "pear"})) == ["apple", "pear"]
        assert value(await client.call_tool("add_item", {"item": "plum"})) == ["apple", "plum"]
        with client.sessions.use(fork):
            assert value(await client.call_tool("checkout", {}))["items"] == ["apple", "pear"]
        assert value(await client.call_tool("checkout", {}))["items"] == ["apple", "plum"]
    create = next(s for s in recorder.seen if s.method == "session/create")
    assert create.meta_id == parent  # the fork is asked for by the parent
    assert create.has_state == (state == "sealed")  # sealed: the parent's token carries the state


async def test_parallel_sub_agents_each_use_their_own_fork(demo_http: Start, mode: str) -> None:
    url, _ = demo_http(state="sealed")
    async with Client(url, mode=mode) as client:
        await client.call_tool("add_item", {"item": "base"})
        forks = [await client.sessions.fork() for _ in range(3)]
        carts: dict[int, list[str]] = {}

        async def agent(n: int) -> None:
            with client.sessions.use(forks[n]):
                for k in range(2):
                    carts[n] = value(await client.call_tool("add_item", {"item": f"{n}.{k}"}))

        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(agent, n)
        assert carts == {n: ["base", f"{n}.0", f"{n}.1"] for n in range(3)}
        assert value(await client.call_tool("checkout", {}))["items"] == ["base"]


async def test_restore_rolls_back_by_replaying_an_older_token(demo_http: Start, mode: str) -> None:
    url, recorder = demo_http(state="sealed")
    async with Client(url, mode=mode) as client:
        await client.call_tool("add_item", {"item": "apple"})
        good = client.sessions.snapshot()
        await client.call_tool("add_item", {"item": "mistake"})
        assert client.sessions.snapshot().seq == 2
        client.sessions.restore(good)
        assert client.sessions.token == good.token
        assert value(await client.call_tool("add_item", {"item": "pear"})) == ["apple", "pear"]
    replayed = [s for s in recorder.seen if s.method == "tools/call"][2]
    assert replayed.state == good.token


async def test_rollback_needs_sealed_state(demo_http: Start) -> None:
    url, _ = demo_http(state="server")
    async with Client(url) as client:
        with pytest.raises(SessionsUnsupported, match="keeps session state on its side"):
            client.sessions.snapshot()


async def test_a_snapshot_cannot_be_restored_into_another_scope(demo_http: Start) -> None:
    url, _ = demo_http(state="sealed")
    jar = StateJar()
    async with Client(url, jar=jar, principal="alice") as alice:
        await alice.call_tool("add_item", {"item": "apple"})
        snap = alice.sessions.snapshot()
    async with Client(url, jar=jar, principal="bob") as bob:
        with pytest.raises(ValueError, match="never sent to another server or as another"):
            bob.sessions.restore(snap)


async def test_a_plain_server_cannot_fork_or_roll_back(
    plain_http: Callable[[], tuple[str, Recorder]],
) -> None:
    url, _ = plain_http()
    async with Client(url) as client:
        with pytest.raises(SessionsUnsupported):
            await client.sessions.fork()
        with pytest.raises(SessionsUnsupported):
            client.sessions.snapshot()
        with pytest.raises(SessionsUnsupported, match="does not serve session/destroy"):
            await client.sessions.destroy()
        assert value(await client.call_tool("echo", {"text": "still fine"})) == "still fine"


# -- lifecycle and errors -----------------------------------------------------------------------


async def test_auto_policy_opens_with_session_create_on_an_explicit_server(
    demo_http: Start, mode: str
) -> None:
    url, recorder = demo_http(lifecycle="explicit")
    async with Client(url, mode=mode) as client:
        assert client.sessions.lifecycle == "explicit"
        sid = client.sessions.id
        assert [value(await client.call_tool("count", {})) for _ in range(2)] == [1, 2]
    methods = [s.method for s in recorder.seen]
    assert methods.index("session/create") < methods.index("tools/call")
    assert {s.meta_id for s in recorder.seen if s.method == "tools/call"} == {sid}


async def test_create_policy_asks_the_server_even_when_implicit_would_do(
    demo_http: Start,
) -> None:
    url, recorder = demo_http()
    async with Client(url, session_policy=CreateSession(ttl_seconds=60)) as client:
        assert value(await client.call_tool("count", {})) == 1
    assert "session/create" in [s.method for s in recorder.seen]


async def test_unknown_session_raises_a_typed_error_with_the_servers_message(
    demo_http: Start, mode: str
) -> None:
    url, _ = demo_http(lifecycle="explicit")
    async with Client(url, mode=mode, session_policy="new") as client:
        with pytest.raises(SessionNotFoundError) as caught:
            await client.call_tool("count", {})
        assert isinstance(caught.value, MCPError)  # code catching MCPError keeps working
        assert caught.value.code == -31001
        assert caught.value.message == SessionNotFound.default_message
        fresh = await client.sessions.new()
        assert client.sessions.id == fresh.id
        assert value(await client.call_tool("count", {})) == 1


async def test_destroy_ends_the_session_on_the_server(demo_http: Start, mode: str) -> None:
    url, _ = demo_http(lifecycle="explicit")
    jar = StateJar()
    async with Client(url, mode=mode, jar=jar) as client:
        await client.call_tool("count", {})
        ended = client.sessions.id
        await client.sessions.destroy()
        assert client.sessions.id != ended
        assert jar.entry(client.sessions.scope, ended) is None
        await client.sessions.create()
        assert value(await client.call_tool("count", {})) == 1
    async with Client(url, mode=mode, jar=jar, session_policy=ResumeSession(ended)) as again:
        with pytest.raises(SessionNotFoundError):
            await again.call_tool("count", {})


async def test_a_tampered_token_raises_invalid_state_and_can_be_dropped(
    demo_http: Start, mode: str
) -> None:
    url, _ = demo_http(state="sealed")
    async with Client(url, mode=mode) as client:
        await client.call_tool("count", {})
        snap = client.sessions.snapshot()
        assert snap.token is not None
        middle = len(snap.token) // 2
        flipped = "A" if snap.token[middle] != "A" else "B"
        tampered = snap.token[:middle] + flipped + snap.token[middle + 1 :]
        client.sessions.restore(dataclasses.replace(snap, token=tampered))
        with pytest.raises(InvalidStateError) as caught:
            await client.call_tool("count", {})
        assert caught.value.code == -31003
        assert "dev.mcpsessions/state token is invalid" in caught.value.message
        client.sessions.forget_state()
        assert value(await client.call_tool("count", {})) == 1


# -- the jar's scope, checked at the servers ----------------------------------------------------


async def test_a_token_is_never_sent_to_another_server(
    demo_http: Start, plain_http: Callable[[], tuple[str, Recorder]]
) -> None:
    sealed_url, _ = demo_http(state="sealed")
    other_url, other = plain_http()
    jar = StateJar()
    async with Client(sealed_url, jar=jar) as client:
        await client.call_tool("add_item", {"item": "secret"})
        sid = client.sessions.id
        assert client.sessions.token is not None
    # Even told to resume that very id, a client of another server sends no token.
    async with Client(other_url, jar=jar, session_policy=ResumeSession(sid)) as elsewhere:
        await elsewhere.call_tool("echo", {"text": "x"})
    assert other.seen and all(s.meta_id == sid and not s.has_state for s in other.seen)


async def test_a_token_is_never_sent_as_another_principal(demo_http: Start, mode: str) -> None:
    tokens = StaticTokens({"alice-token": "alice", "bob-token": "bob"})
    url, recorder = demo_http(state="sealed", auth_tokens=tokens)
    jar = StateJar()
    alice_http = httpx2.AsyncClient(headers={"Authorization": "Bearer alice-token"})
    bob_http = httpx2.AsyncClient(headers={"Authorization": "Bearer bob-token"})
    async with alice_http, bob_http:
        async with Client(url, mode=mode, jar=jar, http_client=alice_http) as alice:
            await alice.call_tool("add_item", {"item": "alice's"})
            sid = alice.sessions.id
            alice_scope = alice.sessions.scope
        before = len(recorder.seen)
        policy = ResumeSession(sid)
        async with Client(
            url, mode=mode, jar=jar, http_client=bob_http, session_policy=policy
        ) as bob:
            assert bob.sessions.scope != alice_scope
            assert value(await bob.call_tool("add_item", {"item": "bob's"})) == ["bob's"]
    assert not any(s.has_state for s in recorder.seen[before:])
    assert "alice-token" not in repr(jar.scopes())


async def test_an_auth_flow_without_a_principal_is_refused() -> None:
    class Flow(httpx2.Auth):
        pass

    async with httpx2.AsyncClient(auth=Flow()) as http:
        with pytest.raises(ValueError, match="pass principal="):
            Client("http://127.0.0.1:1/mcp", http_client=http)
        assert Client("http://127.0.0.1:1/mcp", http_client=http, principal="u1")


# -- persistence: a restarted client resumes ----------------------------------------------------


async def test_a_restarted_client_resumes_its_session_from_the_jar_file(
    demo_http: Start, mode: str, tmp_path: Path
) -> None:
    url, _ = demo_http(state="sealed")
    path = tmp_path / "jar.json"
    async with Client(url, mode=mode, jar=path) as client:
        await client.call_tool("add_item", {"item": "apple"})
        sid = client.sessions.id
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    async with Client(url, mode=mode, jar=path) as restarted:  # a new jar object, from the file
        assert restarted.sessions.id == sid
        assert value(await restarted.call_tool("add_item", {"item": "pear"})) == ["apple", "pear"]
    async with Client(url, mode=mode, jar=path, session_policy="new") as fresh:
        assert fresh.sessions.id != sid
        assert value(await fresh.call_tool("add_item", {"item": "kiwi"})) == ["kiwi"]


def test_a_client_process_restarted_twice_continues_its_session(
    demo_http: Start, tmp_path: Path
) -> None:
    url, _ = demo_http()
    script = textwrap.dedent(
        """
        import sys, anyio
        from mcp_sessions.client import Client

        async def main() -> None:
            async with Client(sys.argv[1], jar=sys.argv[2]) as client:
                result = await client.call_tool("count", {})
                print(client.sessions.id, result.structured_content["result"])

        anyio.run(main)
        """
    )
    runs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", script, url, str(tmp_path / "jar.json")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        runs.append(done.stdout.split())
    assert runs[0][0] == runs[1][0]  # the same session id
    assert (runs[0][1], runs[1][1]) == ("1", "2")


# -- legacy Mcp-Session-Id: SEP-1372 ------------------------------------------------------------


async def end_legacy_session(url: str, legacy_id: str) -> None:
    """What an operator or an idle timeout does: the server forgets the legacy session."""
    async with httpx2.AsyncClient() as http:
        response = await http.delete(
            url, headers={"Mcp-Session-Id": legacy_id, "MCP-Protocol-Version": "2025-11-25"}
        )
        assert response.status_code in (200, 204)


def after_first_404(recorder: Recorder, legacy_id: str) -> list[Any]:
    assert recorder.http is not None
    log = recorder.http.exchanges
    first = next(i for i, x in enumerate(log) if x.status == 404 and x.legacy_id == legacy_id)
    return log[first + 1 :]


@pytest.mark.parametrize("server", ["demo", "plain"])
async def test_after_a_legacy_404_the_id_is_dropped_and_errors_are_typed(
    demo_http: Start, plain_http: Callable[[], tuple[str, Recorder]], server: str
) -> None:
    url, recorder = demo_http() if server == "demo" else plain_http()
    assert recorder.http is not None
    tool, args = ("count", {}) if server == "demo" else ("echo", {"text": "1"})
    async with Client(url, mode="legacy") as client:
        await client.call_tool(tool, args)
        old = client.sessions.legacy_session_id
        assert old is not None
        await end_legacy_session(url, old)
        with pytest.raises(LegacySessionLost) as caught:
            await client.call_tool(tool, args)
        assert isinstance(caught.value, MCPError)
        assert old in caught.value.message
        posts = sum(x.method == "POST" for x in recorder.http.exchanges)
        with pytest.raises(LegacySessionLost):  # fails here: nothing goes out on a dead id
            await client.call_tool(tool, args)
        assert sum(x.method == "POST" for x in recorder.http.exchanges) == posts
        renewed = await client.sessions.renew_legacy()  # asked for: a new legacy session
        assert renewed is not None and renewed != old
        result = value(await client.call_tool(tool, args))
    if server == "demo":
        assert result == 2  # the extension session outlives the legacy one
    # SEP-1372: after the 404, the old id never went out again (not even in a DELETE).
    assert all(x.legacy_id != old for x in after_first_404(recorder, old))


async def test_closing_after_a_lost_legacy_session_sends_no_delete_for_it(
    demo_http: Start,
) -> None:
    url, recorder = demo_http()
    async with Client(url, mode="legacy") as client:
        await client.call_tool("count", {})
        old = client.sessions.legacy_session_id
        assert old is not None
        await end_legacy_session(url, old)
        with pytest.raises(LegacySessionLost):
            await client.call_tool("count", {})
    assert not any(x.method == "DELETE" for x in after_first_404(recorder, old))


@pytest.mark.parametrize("server", ["demo", "plain"])
async def test_automatic_legacy_renewal_resends_the_request(
    demo_http: Start, plain_http: Callable[[], tuple[str, Recorder]], server: str
) -> None:
    url, recorder = demo_http() if server == "demo" else plain_http()
    tool, args = ("count", {}) if server == "demo" else ("echo", {"text": "1"})
    async with Client(url, mode="legacy", renew_legacy_sessions=True) as client:
        await client.call_tool(tool, args)
        old = client.sessions.legacy_session_id
        assert old is not None
        await end_legacy_session(url, old)
        result = value(await client.call_tool(tool, args))
        assert client.sessions.legacy_session_id not in (None, old)
        assert value(await client.call_tool(tool, args)) is not None
    initializes = [s for s in recorder.seen if s.method == "initialize"]
    assert len(initializes) == 2  # the handshake, and the renewal
    assert all(x.legacy_id != old for x in after_first_404(recorder, old))
    assert {s.meta_id for s in recorder.seen} == {client.sessions.id}
    if server == "demo":
        assert result == 2


async def test_modern_requests_never_have_a_legacy_session(demo_http: Start) -> None:
    url, _ = demo_http()
    async with Client(url) as client:
        await client.call_tool("count", {})
        assert client.protocol_version == "2026-07-28"
        assert client.sessions.legacy_session_id is None
        assert await client.sessions.renew_legacy() is None


async def test_a_session_client_is_an_mcp_client() -> None:
    assert issubclass(SessionClient, PlainClient)
    assert Client is SessionClient
