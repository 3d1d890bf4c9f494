"""The client over stdio, at 2025-11-25 and 2026-07-28: the demo server (``mcp-sessions demo
--stdio``) and a plain SDK server as subprocesses, started and stopped by the SDK's stdio
client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.types import CallToolResult

from mcp_sessions.client import Client, SessionsUnsupported
from mcp_sessions.client.identity import server_key_for_command

from .servers import demo_stdio, plain_stdio

pytestmark = pytest.mark.anyio


def value(result: CallToolResult) -> Any:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    content = result.structured_content
    return content["result"] if set(content) == {"result"} else content


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return tmp_path / "keys.txt"  # created by the demo on first start


async def test_a_plain_stdio_server_sees_the_id_on_every_request(mode: str) -> None:
    async with Client(plain_stdio(), mode=mode) as client:
        assert not client.sessions.advertised
        assert value(await client.call_tool("echo", {"text": "hi"})) == "hi"
        seen = value(await client.call_tool("seen", {}))
        sid = client.sessions.id
    handshake = "initialize" if mode == "legacy" else "server/discover"
    methods = [s["method"] for s in seen]
    # (the SDK lists tools by itself, to validate structured output)
    assert methods[0] == handshake and methods.count("tools/call") == 2
    assert set(methods) <= {handshake, "tools/list", "tools/call"}
    assert all(s["meta_id"] == sid for s in seen), seen
    assert all(s["header_id"] is None for s in seen)  # stdio has no headers


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_stdio_parallel_first_calls_land_in_one_session(mode: str, keys: Path) -> None:
    async with Client(demo_stdio("memory://", "server", keys), mode=mode) as client:
        results: list[int] = []

        async def one() -> None:
            results.append(value(await client.call_tool("count", {})))

        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(one)
        assert sorted(results) == list(range(1, 7))
        assert value(await client.call_tool("count", {})) == 7


async def test_stdio_sealed_fork_and_rollback(mode: str, keys: Path) -> None:
    async with Client(demo_stdio("memory://", "sealed", keys), mode=mode) as client:
        assert client.sessions.advertised and client.sessions.sealed
        assert client.sessions.scope.server.startswith("stdio:")
        await client.call_tool("add_item", {"item": "apple"})
        snap = client.sessions.snapshot()
        fork = await client.sessions.fork()
        with client.sessions.use(fork):
            assert value(await client.call_tool("add_item", {"item": "pear"})) == ["apple", "pear"]
        assert value(await client.call_tool("add_item", {"item": "oops"})) == ["apple", "oops"]
        client.sessions.restore(snap)
        assert value(await client.call_tool("add_item", {"item": "plum"})) == ["apple", "plum"]
        with client.sessions.use(fork):
            assert value(await client.call_tool("checkout", {}))["items"] == ["apple", "pear"]


async def test_stdio_server_state_fork_isolation(mode: str, keys: Path) -> None:
    async with Client(demo_stdio("memory://", "server", keys), mode=mode) as client:
        await client.call_tool("add_item", {"item": "apple"})
        fork = await client.sessions.fork()
        with client.sessions.use(fork):
            await client.call_tool("add_item", {"item": "pear"})
        assert value(await client.call_tool("checkout", {}))["items"] == ["apple"]
        with pytest.raises(SessionsUnsupported):
            client.sessions.snapshot()


@pytest.mark.parametrize("state", ["server", "sealed"])
async def test_stdio_client_restart_resumes_from_the_jar(
    mode: str, state: str, keys: Path, tmp_path: Path
) -> None:
    # Both sides restart: the server keeps sessions in SQLite (and sealing keys in a file),
    # the client keeps its session id and token in the jar file.
    store = f"sqlite:///{tmp_path / 'sessions.sqlite3'}"
    jar = tmp_path / "jar.json"
    server = demo_stdio(store, state, keys)
    async with Client(server, mode=mode, jar=jar) as client:
        await client.call_tool("add_item", {"item": "apple"})
        sid = client.sessions.id
        assert client.sessions.scope.server == server_key_for_command(server.command, server.args)
    async with Client(server, mode=mode, jar=jar) as restarted:
        assert restarted.sessions.id == sid
        assert value(await restarted.call_tool("add_item", {"item": "pear"})) == ["apple", "pear"]
