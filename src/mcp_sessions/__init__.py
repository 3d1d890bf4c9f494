"""mcp-sessions: sessions for the Model Context Protocol.

One session model (:class:`~mcp_sessions.core.records.Record`) reached through several
carriers: a client-generated id in ``_meta`` and a header, the SEP-2822 and vendor aliases,
legacy ``Mcp-Session-Id``, ``session/create``, sealed state tokens, and SEP-2567 handles.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
