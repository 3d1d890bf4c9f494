"""How a session error reaches the client through the SDK: the one translation.

The SDK passes a JSON-RPC error through to the client only as an ``MCPError``; any other
exception escaping a tool body becomes a bare "Error executing tool". Every server module
that raises a :class:`~mcp_sessions.core.errors.SessionError` where the SDK will see it
(handlers, resolvers, tool bodies calling ``Session.update`` or a handle kind) raises
:func:`to_mcp_error` of it, so the peer gets exactly the code, message and data of DESIGN §3.
"""

from __future__ import annotations

from mcp.shared.exceptions import MCPError

from ..core.errors import SessionError


def to_mcp_error(error: SessionError) -> MCPError:
    """``error`` as the SDK's ``MCPError``: the same code, message and data."""
    return MCPError(code=error.code, message=error.message, data=error.data)
