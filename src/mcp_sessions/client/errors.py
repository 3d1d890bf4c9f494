"""The client's typed session errors, and the mark a lost legacy session leaves on an error.

Each is still an ``MCPError``, so code that catches those keeps working. The transport
(:mod:`.transport`) answers a request that a lost legacy session (SEP-1372) stopped with
:func:`legacy_lost_error`; :func:`translate_error` turns that mark and the session error
codes (DESIGN §3) into the types below.
"""

from __future__ import annotations

from typing import Any, ClassVar

from mcp.shared.exceptions import MCPError
from mcp.types import ErrorData

from ..core.errors import (
    INVALID_STATE,
    LIMIT_EXCEEDED,
    SESSION_NOT_FOUND,
    SESSION_REQUIRED,
    STATE_CONFLICT,
    STORE_UNAVAILABLE,
)

#: JSON-RPC "method not found": what a server without the extension answers ``session/create``.
METHOD_NOT_FOUND = -32601
#: Where the client marks, client-side only, an error caused by a lost legacy session.
_LOST_MARK = "dev.mcpsessions/legacySessionLost"


class ClientSessionError(MCPError):
    """A session error as the client receives it. Still an ``MCPError``: code that catches
    those keeps working; ``code``, ``message`` and ``data`` are what the server sent.

    (The server raises :class:`mcp_sessions.core.errors.SessionError`; this is its client-side
    counterpart, named apart so the two are never mistaken.)"""

    default_code: ClassVar[int] = -32603

    def __init__(self, message: str, *, code: int | None = None, data: Any = None) -> None:
        super().__init__(code if code is not None else self.default_code, message, data)


class SessionNotFoundError(ClientSessionError):
    """-31001: unknown, expired, destroyed, or another principal's session (DESIGN §3).

    Start over with ``await client.sessions.new()``."""

    default_code = SESSION_NOT_FOUND


class SessionRequiredError(ClientSessionError):
    """-31002: the request needed a session and named none."""

    default_code = SESSION_REQUIRED


class InvalidStateError(ClientSessionError):
    """-31003: the state token was refused (tampered, expired, another session, principal or
    server). Roll back to a good snapshot, or drop the state with
    ``client.sessions.forget_state()``."""

    default_code = INVALID_STATE


class StateConflictError(ClientSessionError):
    """-31004: the server lost too many compare-and-set races in a row; retry the request."""

    default_code = STATE_CONFLICT


class LimitExceededError(ClientSessionError):
    """-31005: a per-caller quota or the creation rate is used up; the message names the limit
    and when room frees up. Wait, or free room (destroy sessions you no longer need)."""

    default_code = LIMIT_EXCEEDED


class StoreUnavailableError(ClientSessionError):
    """-31006: the server's session store is down or too slow; nothing was changed. Retry
    shortly."""

    default_code = STORE_UNAVAILABLE


class LegacySessionLost(ClientSessionError):
    """The server answered HTTP 404 to a request carrying ``Mcp-Session-Id``: that legacy
    session is over (SEP-1372). The client no longer sends the id; further requests fail with
    this error until ``await client.sessions.renew_legacy()`` (or open the client with
    ``renew_legacy_sessions=True`` to renew automatically)."""

    default_code = -32600


class SessionsUnsupported(ClientSessionError):
    """The server does not offer what was asked (``session/create``, fork, rollback)."""

    default_code = METHOD_NOT_FOUND


#: The former name of :class:`ClientSessionError`, kept so existing ``except`` clauses work.
SessionsError = ClientSessionError

_BY_CODE: dict[int, type[ClientSessionError]] = {
    SESSION_NOT_FOUND: SessionNotFoundError,
    SESSION_REQUIRED: SessionRequiredError,
    INVALID_STATE: InvalidStateError,
    STATE_CONFLICT: StateConflictError,
    LIMIT_EXCEEDED: LimitExceededError,
    STORE_UNAVAILABLE: StoreUnavailableError,
}


def translate_error(error: MCPError) -> MCPError:
    """The typed exception for ``error`` (itself if it is not a session error).

    The verbs of :class:`SessionClient` apply this already; use it around
    ``client.session.send_request(...)`` and other direct SDK calls.
    """
    if isinstance(error, ClientSessionError):
        return error
    data = error.data
    if isinstance(data, dict) and _LOST_MARK in data:
        return LegacySessionLost(
            f"The server ended the legacy session {data[_LOST_MARK]} (HTTP 404: "
            f"{error.message.rstrip('.')}). Renew it with client.sessions.renew_legacy() or "
            "open the client with renew_legacy_sessions=True.",
            code=error.code,
            data=data.get("server"),
        )
    kind = _BY_CODE.get(error.code)
    if kind is None:
        return error
    return kind(error.message, code=error.code, data=data)


def legacy_lost_error(original: ErrorData | None, legacy_id: str | None) -> ErrorData:
    """The error a request gets when the legacy session ``legacy_id`` is lost: the server's
    own 404 answer (``original``) if there was one, marked for :func:`translate_error`."""
    return ErrorData(
        code=original.code if original is not None else LegacySessionLost.default_code,
        message=original.message if original is not None else "Session not found",
        data={_LOST_MARK: legacy_id, "server": original.data if original else None},
    )
