"""What is FastMCP's own in the FastMCP integration (issue #14): the example of docs/fastmcp.md
runs as written (HTTP and stdio, real subprocesses), the session parameter is hidden from the
schema, FastMCP's middleware, mounting and transforms keep working, and misuse is refused.

The wire itself is checked on both integrations by the parametrised server tests."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from fastmcp import FastMCP
from fastmcp.server.middleware import Middleware, MiddlewareContext
from fastmcp.server.transforms import Namespace
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from mcp_sessions.core.errors import SESSION_REQUIRED
from mcp_sessions.fastmcp import CurrentSession, OptionalSession, Sessions, portable_tool

from .helpers import (
    REPO,
    TIMEOUT,
    ServerProcess,
    Target,
    expect_error,
    new_id,
    sid,
    start_process,
    value,
)

pytestmark = pytest.mark.anyio

DOC = REPO / "docs" / "fastmcp.md"


def doc_example() -> str:
    """The Python block of docs/fastmcp.md that installs mcp-sessions."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    found = [block for block in blocks if "sessions.install(mcp)" in block]
    assert len(found) == 1, found
    return str(found[0])


def example_script(tmp_path: Path, transport: str) -> Path:
    """The example as written, with its store in ``tmp_path``, and its port from ``--port``
    (HTTP) or its run call on stdio (the ``# or transport="stdio"`` of the block)."""
    code = doc_example()
    store = 'sqlite:///sessions.sqlite3"'
    assert store in code and "port=8000" in code
    code = code.replace(store, f'sqlite:///{tmp_path / "sessions.sqlite3"}"')
    if transport == "http":
        code = "import sys\n" + code.replace(
            "port=8000", 'port=int(sys.argv[sys.argv.index("--port") + 1])'
        )
    else:
        code = re.sub(r"mcp\.run\(.*\)", 'mcp.run(transport="stdio", show_banner=False)', code)
    script = tmp_path / f"example_{transport}.py"
    script.write_text(code, encoding="utf-8")
    return script


async def test_doc_example_runs_over_http(tmp_path: Path) -> None:
    server: ServerProcess = start_process(
        [sys.executable, str(example_script(tmp_path, "http"))], tmp_path / "example.log"
    )
    try:
        target = Target("http", url=server.url)
        session_id = new_id()
        async with target.client("modern") as client:
            counts = [
                value(await client.call_tool("count", {}, meta=sid(session_id))) for _ in range(2)
            ]
            assert counts == [1, 2]
            error = await expect_error(client.call_tool("count", {}))
            assert error.error.code == SESSION_REQUIRED
        # A 2025-11-25 client keeps its state in its Mcp-Session-Id session, in the store.
        async with target.client("legacy") as client:
            assert [value(await client.call_tool("count", {})) for _ in range(2)] == [1, 2]
    finally:
        server.stop()
    assert (tmp_path / "sessions.sqlite3").exists()


async def test_doc_example_runs_over_stdio(tmp_path: Path) -> None:
    """Over stdio the connection is the session (carrier 5): a plain client keeps state."""
    params = StdioServerParameters(
        command=sys.executable, args=[str(example_script(tmp_path, "stdio"))], cwd=str(tmp_path)
    )
    for _connection in range(2):  # each connection has its own session
        async with Client(params, mode="legacy", read_timeout_seconds=TIMEOUT) as client:
            assert [value(await client.call_tool("count", {})) for _ in range(3)] == [1, 2, 3]


def fresh() -> tuple[FastMCP[Any], Sessions]:
    sessions = Sessions(store="memory://")
    mcp: FastMCP[Any] = FastMCP("t")
    sessions.install(mcp)
    return mcp, sessions


async def test_session_parameters_are_not_in_the_input_schema() -> None:
    mcp, _ = fresh()

    @mcp.tool
    async def tag(label: str, session: CurrentSession, maybe: OptionalSession) -> str:
        return label

    async with Client(mcp._mcp_server, read_timeout_seconds=TIMEOUT) as client:
        tools = {tool.name: tool.input_schema for tool in (await client.list_tools()).tools}
    assert set(tools["tag"]["properties"]) == {"label"}
    assert tools["tag"].get("required") == ["label"]


class Recorder(Middleware):
    """FastMCP middleware that records the tools called and tags their results."""

    def __init__(self) -> None:
        self.called: list[str] = []

    async def on_call_tool(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        self.called.append(context.message.name)
        result = await call_next(context)
        result.meta = {**(result.meta or {}), "test/seen": True}
        return result


async def test_middleware_mounting_and_transforms_keep_working() -> None:
    """A mounted server's tools (renamed by its namespace and a server-level transform) see
    the caller's session;
    the parent's FastMCP middleware sees every call, and its edit to the result stays beside
    the session _meta."""
    mcp, _ = fresh()
    recorder = Recorder()
    mcp.add_middleware(recorder)

    @mcp.tool
    async def parent_count(session: CurrentSession) -> int:
        return await session.update(lambda s: s.__setitem__("n", s.get("n", 0) + 1) or s["n"])

    child: FastMCP[Any] = FastMCP("child")

    @child.tool
    async def count(session: CurrentSession) -> dict[str, Any]:
        value = await session.update(lambda s: s.__setitem__("n", s.get("n", 0) + 1) or s["n"])
        return {"n": value, "id": session.id}

    mcp.mount(child, namespace="shop")
    mcp.add_transform(Namespace("api"))  # a server-level transform over every provider
    session_id = new_id()
    async with Client(mcp._mcp_server, read_timeout_seconds=TIMEOUT) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert names == {"api_parent_count", "api_shop_count"}, names
        first = await client.call_tool("api_shop_count", {}, meta=sid(session_id))
        assert value(first) == {"n": 1, "id": session_id}
        assert (first.meta or {}).get("test/seen") is True
        assert "dev.mcpsessions/expiresAt" in (first.meta or {}), first.meta
        assert value(await client.call_tool("api_parent_count", {}, meta=sid(session_id))) == 2
        error = await expect_error(client.call_tool("api_shop_count", {}))
        assert error.error.code == SESSION_REQUIRED
    assert recorder.called == ["api_shop_count", "api_parent_count", "api_shop_count"]


async def test_a_server_without_install_says_so() -> None:
    """A tool declaring a session on a server where install was forgotten: a tool error that
    names the missing call, not a crash."""
    mcp: FastMCP[Any] = FastMCP("forgot")

    @mcp.tool
    async def count(session: CurrentSession) -> int:
        return 1

    async with Client(mcp._mcp_server, read_timeout_seconds=TIMEOUT) as client:
        result = await client.call_tool("count", {}, meta=sid(new_id()))
    assert result.is_error
    assert "sessions.install(mcp)" in str(result.content)


def test_one_sessions_serves_one_server() -> None:
    mcp, sessions = fresh()
    with pytest.raises(ValueError, match="already installed"):
        sessions.install(mcp)
    with pytest.raises(ValueError, match="one Sessions serves one FastMCP server"):
        sessions.install(FastMCP("other"))


def test_portable_tool_takes_async_tools_only() -> None:
    def plain() -> int:
        return 1

    with pytest.raises(TypeError, match="async tool"):
        portable_tool(plain)


def test_stateless_http_is_refused() -> None:
    """mcp-sessions serves legacy sessions from the store; a stateless app would drop them."""
    mcp, _ = fresh()
    with pytest.raises(ValueError, match="stateless_http is managed by mcp-sessions"):
        mcp.http_app(stateless_http=True)


def test_http_app_before_install_is_refused() -> None:
    sessions = Sessions(store="memory://")
    with pytest.raises(ValueError, match="install"):
        sessions.streamable_http_app(FastMCP("t"))
