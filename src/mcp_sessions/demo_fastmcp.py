"""``mcp-sessions demo --framework fastmcp``: the demo's tools (``demo.add_demo_tools``, the
same definitions as on ``MCPServer``) on a FastMCP server (issue #14). Needs the ``fastmcp``
extra."""

from __future__ import annotations

from typing import Any

from fastmcp import FastMCP
from fastmcp.server.auth import AccessToken, TokenVerifier

from .core.limits import Limits
from .core.sealing import KeyRing
from .demo import INSTRUCTIONS, StaticTokens, add_demo_tools, declare_demo_toolsets
from .fastmcp import Sessions, portable_tool
from .server.engine import Lifecycle, StateMode


class StaticTokenVerifier(TokenVerifier):
    """:class:`~mcp_sessions.demo.StaticTokens` as FastMCP's auth: the same principals."""

    def __init__(self, tokens: StaticTokens, *, base_url: str) -> None:
        super().__init__(base_url=base_url)
        self._tokens = tokens

    async def verify_token(self, token: str) -> AccessToken | None:
        found = await self._tokens.verify_token(token)
        return None if found is None else AccessToken(**found.model_dump(exclude_none=True))


def build_fastmcp_demo(
    *,
    store: str | None = "memory://",
    state: StateMode = "server",
    lifecycle: Lifecycle = "implicit",
    keys: KeyRing | None = None,
    auth_tokens: StaticTokens | None = None,
    handle_fallback: bool = True,
    base_url: str = "http://127.0.0.1:8000",
    limits: Limits | None = None,
) -> tuple[FastMCP[Any], Sessions]:
    """The demo on a ``FastMCP`` server and its :class:`~mcp_sessions.fastmcp.Sessions`."""
    sessions = Sessions(
        store=store,
        state=state,
        lifecycle=lifecycle,
        keys=keys,
        handle_fallback=handle_fallback,
        audience="mcp-sessions-demo",
        limits=limits,
    )
    auth = None if auth_tokens is None else StaticTokenVerifier(auth_tokens, base_url=base_url)
    mcp: FastMCP[Any] = FastMCP("mcp-sessions-demo", instructions=INSTRUCTIONS, auth=auth)
    sessions.install(mcp)
    VM = sessions.handle_kind("vm", ttl=3600, header="Vm", created_by="init_vm")

    def tool(fn: Any) -> Any:
        return mcp.tool(portable_tool(fn))

    declare_demo_toolsets(sessions)
    add_demo_tools(tool, VM)
    return mcp, sessions
