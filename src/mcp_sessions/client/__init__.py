"""The client side of mcp-sessions: sessions for the official ``mcp.Client`` (DESIGN §7).

Change one line::

    from mcp_sessions.client import Client     # was: from mcp import Client

and every request carries ``dev.mcpsessions/sessionId`` (and ``Mcp-Client-Session-Id`` over
HTTP), sealed state tokens are kept in a jar and echoed, and ``client.sessions`` offers
``fork()``, ``snapshot()``/``restore()``, ``destroy()`` and what the server advertises.
See docs/client.md.
"""

from __future__ import annotations

from .client import SessionClient
from .errors import (
    ClientSessionError,
    InvalidStateError,
    LegacySessionLost,
    LimitExceededError,
    SessionNotFoundError,
    SessionRequiredError,
    SessionsError,
    SessionsUnsupported,
    StateConflictError,
    StoreUnavailableError,
    translate_error,
)
from .jar import JarEntry, JarScope, StateJar
from .policy import (
    AutoSession,
    CreateSession,
    NewSession,
    ResumeSession,
    SessionPolicy,
    SessionRef,
    SessionSnapshot,
)
from .sessions import ClientSessions
from .transport import SessionTransport

#: The one-line swap: ``from mcp_sessions.client import Client``.
Client = SessionClient

__all__ = [
    "AutoSession",
    "Client",
    "ClientSessionError",
    "ClientSessions",
    "CreateSession",
    "InvalidStateError",
    "JarEntry",
    "JarScope",
    "LegacySessionLost",
    "LimitExceededError",
    "NewSession",
    "ResumeSession",
    "SessionClient",
    "SessionNotFoundError",
    "SessionPolicy",
    "SessionRef",
    "SessionRequiredError",
    "SessionSnapshot",
    "SessionTransport",
    "SessionsError",
    "SessionsUnsupported",
    "StateConflictError",
    "StateJar",
    "StoreUnavailableError",
    "translate_error",
]
