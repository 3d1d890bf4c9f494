"""``mcp-sessions demo --framework fastmcp``: the FastMCP server that ``demo.build_demo`` puts
the demo's tools on (``demo.add_demo_tools``, the same definitions as on ``MCPServer``; issue
#14). Needs the ``fastmcp`` extra."""

from __future__ import annotations

from typing import Any

from fastmcp import FastMCP
from fastmcp.server.auth import AccessToken, TokenVerifier

from .demo_tokens import StaticTokens, ToolDecorator
from .fastmcp import Sessions, portable_tool


class StaticTokenVerifier(TokenVerifier):
    """:class:`~mcp_sessions.demo_tokens.StaticTokens` as FastMCP's auth: the same principals."""

    def __init__(self, tokens: StaticTokens, *, base_url: str) -> None:
        super().__init__(base_url=base_url)
        self._tokens = tokens

    async def verify_token(self, token: str) -> AccessToken | None:
        found = await self._tokens.verify_token(token)
        return None if found is None else AccessToken(**found.model_dump(exclude_none=True))


def fastmcp_with_sessions(
    name: str,
    options: dict[str, Any],
    auth_tokens: StaticTokens | None,
    base_url: str,
    **server_options: Any,
) -> tuple[FastMCP[Any], Sessions, ToolDecorator]:
    """A ``FastMCP`` server named ``name`` with :class:`~mcp_sessions.fastmcp.Sessions` (of
    ``options``) installed, the bearer tokens of ``auth_tokens`` if any, and a tool decorator
    that takes ``MCPServer``-style tools (``demo.mcpserver_with_sessions``'s FastMCP twin)."""
    sessions = Sessions(**options)
    auth = None if auth_tokens is None else StaticTokenVerifier(auth_tokens, base_url=base_url)
    mcp: FastMCP[Any] = FastMCP(name, auth=auth, **server_options)
    sessions.install(mcp)

    def tool(fn: Any) -> Any:
        return mcp.tool(portable_tool(fn))

    return mcp, sessions, tool
