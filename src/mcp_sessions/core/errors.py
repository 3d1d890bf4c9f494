"""Errors of the wire contract, with their JSON-RPC codes (DESIGN §3).

The session codes sit outside the ranges JSON-RPC (-32768…-32000) and MCP reserve
(spec §5.0 item 3). Messages tell the caller what to do next; ``data`` never says whether an id
exists (DESIGN §2: a foreign id and an unknown id get the very same answer).
"""

from __future__ import annotations

from typing import Any, ClassVar

from .names import (
    HEADER_CLIENT_SESSION_ID,
    HEADER_LEGACY_SESSION_ID,
    META_SESSION_ID,
    METHOD_SESSION_CREATE,
)

SESSION_NOT_FOUND = -31001
SESSION_REQUIRED = -31002
INVALID_STATE = -31003
STATE_CONFLICT = -31004
LIMIT_EXCEEDED = -31005
STORE_UNAVAILABLE = -31006
#: SEP-2243's code for a header that disagrees with the body; DESIGN §3 reuses it.
HEADER_MISMATCH = -32020
INVALID_PARAMS = -32602
#: JSON-RPC 2.0 §5.1: the message is not a valid request.
INVALID_REQUEST = -32600


class SessionError(Exception):
    """Base of every error that crosses the wire as a JSON-RPC error.

    ``code``, ``message`` and ``data`` are exactly what the peer receives; ``http_status`` is
    the status an HTTP carrier answers with, or ``None`` for "whatever the transport uses".
    """

    code: ClassVar[int]
    default_message: ClassVar[str]
    http_status: ClassVar[int | None] = None

    def __init__(self, message: str | None = None, *, data: dict[str, Any] | None = None) -> None:
        self.message = message or self.default_message
        self.data = data
        super().__init__(self.message)

    def to_jsonrpc(self) -> dict[str, Any]:
        """The JSON-RPC ``error`` object."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error

    def response(self, request_id: Any = None) -> dict[str, Any]:
        """The whole JSON-RPC error response answering ``request_id`` (``null`` when the
        request's id is unknown, JSON-RPC 2.0 §5)."""
        return {"jsonrpc": "2.0", "id": request_id, "error": self.to_jsonrpc()}


class SessionNotFound(SessionError):
    """Unknown, expired, destroyed, or another principal's session: one answer for all."""

    code = SESSION_NOT_FOUND
    default_message = (
        "Session not found: it never existed, expired, was destroyed, or belongs to someone "
        "else. Start a new session (send a new dev.mcpsessions/sessionId, or call "
        "session/create)."
    )


class SessionRequired(SessionError):
    """The request needs a session and carried none."""

    code = SESSION_REQUIRED
    default_message = (
        f"This request needs a session: send params._meta['{META_SESSION_ID}'] "
        f"(and the {HEADER_CLIENT_SESSION_ID} header over HTTP), or call "
        f"{METHOD_SESSION_CREATE} first."
    )


class InvalidState(SessionError):
    """A sealed state token failed verification.

    The wire message is fixed; ``reason`` is for logs and ``mcp-sessions token inspect`` only,
    so a client cannot probe which check failed.
    """

    code = INVALID_STATE
    default_message = (
        "The dev.mcpsessions/state token is invalid or expired (tampered, too old, or issued "
        "for another session, principal or server). Drop it and continue without state, or "
        "resend the newest token this server gave you."
    )

    def __init__(self, reason: str = "invalid", message: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.message} [reason: {self.reason}]"


class StateConflict(SessionError):
    """An edit lost its compare-and-set race too many times in a row."""

    code = STATE_CONFLICT
    default_message = (
        "The session state changed concurrently and the edit could not be applied after "
        "retrying. Retry the request."
    )


class OversizedState(SessionError):
    """Session state over a size cap, answered -32602: a sealed token over ``max_state_bytes``
    (DESIGN §4) or a stored state over ``max_server_state_bytes``.

    The wire error; a store's own refusal of a large document is
    :class:`mcp_sessions.stores.StateTooLarge`, which the server turns into this one.
    """

    code = INVALID_PARAMS
    default_message = (
        "The session state is larger than the 4096 bytes a sealed token may carry. Keep large "
        "state on the server (state mode 'server') and put only small values in the token."
    )


#: The name of :class:`OversizedState` before issue #17 (it shared its name with the store's
#: own error); kept so that existing imports work.
StateTooLarge = OversizedState


class LimitExceeded(SessionError):
    """A per-principal quota or creation rate is used up (DESIGN §3, issue #12).

    The message names the limit and when room frees up; ``retry_after`` (seconds) is what a
    legacy HTTP answer puts in ``Retry-After``.
    """

    code = LIMIT_EXCEEDED
    http_status = 429
    default_message = "A session limit for this caller is used up. Retry later."

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreUnavailable(SessionError):
    """The session store is down or too slow; retryable (DESIGN §3, issue #12).

    Never says more than that: the store's address and the driver's error go to the log only.
    """

    code = STORE_UNAVAILABLE
    http_status = 503
    default_message = (
        "The session store is unavailable right now; nothing was changed. Retry the request "
        "shortly."
    )

    def __init__(self, message: str | None = None, *, retry_after: float | None = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class HeaderMismatch(SessionError):
    """The HTTP mirror header disagrees with ``_meta`` (DESIGN §3, SEP-2243)."""

    code = HEADER_MISMATCH
    http_status = 400
    default_message = "Header mismatch"


class InvalidSessionId(SessionError):
    """A session id that breaks the syntax of DESIGN §3."""

    code = INVALID_PARAMS
    http_status = 400
    default_message = "Invalid session id"


class MalformedHandle(InvalidSessionId):
    """A session handle argument of the wrong type, length or alphabet (issue #11).

    An argument is the tool's input, so the adapter answers it as a tool execution error
    naming ``argument`` (like an unknown handle, DESIGN §4), not as a JSON-RPC error.
    """

    def __init__(self, message: str, *, argument: str) -> None:
        super().__init__(message)
        self.argument = argument


class CarrierConflict(SessionError):
    """Two explicit carriers of one request name different sessions (DESIGN §2, issue #11):
    refused, never settled by a silent choice."""

    code = INVALID_PARAMS
    http_status = 400
    default_message = "The request names two different sessions"


class InvalidParams(SessionError):
    """A request parameter of ours (e.g. ``session/create``'s ``ttlSeconds``) is malformed.

    The message names the parameter and what it must be.
    """

    code = INVALID_PARAMS
    http_status = 400
    default_message = "Invalid params"


class InvalidRequest(SessionError):
    """An HTTP request refused before any JSON-RPC method runs (JSON-RPC 2.0 §5.1: -32600);
    the message says what was wrong, the subclass or ``http_status`` which status."""

    code = INVALID_REQUEST
    http_status = 400
    default_message = "Invalid Request"


class MissingLegacySessionId(InvalidRequest):
    """A 2025-11-25 Streamable HTTP request after ``initialize`` without the legacy session
    header (spec 2025-11-25 "Session Management" item 3: the server answers 400)."""

    default_message = (
        f"Bad Request: missing {HEADER_LEGACY_SESSION_ID} header; send the id from the "
        "initialize response on every later request"
    )


class BodyTooLarge(InvalidRequest):
    """An HTTP request body over the size the endpoint accepts, refused unread (413)."""

    http_status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"Request body over {limit} bytes")
        self.limit = limit
