"""mcp-sessions for FastMCP servers (``pip install 'mcp-sessions[fastmcp]'``, issue #14).

::

    from fastmcp import FastMCP
    from mcp_sessions.fastmcp import CurrentSession, Sessions

    sessions = Sessions(store="sqlite:///sessions.sqlite3")
    mcp = FastMCP("shop")
    sessions.install(mcp)

See docs/fastmcp.md.
"""

from __future__ import annotations

from ..server.handles import HandleError, HandleKind
from ..server.session import Session
from .integration import (
    CurrentSession,
    OptionalSession,
    Sessions,
    current_session,
    optional_session,
    portable_tool,
)

__all__ = [
    "CurrentSession",
    "HandleError",
    "HandleKind",
    "OptionalSession",
    "Session",
    "Sessions",
    "current_session",
    "optional_session",
    "portable_tool",
]
