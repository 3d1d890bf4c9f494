"""The gateway's own JSON-RPC errors.

Codes sit beside the session codes (-31001…-31004), outside the ranges JSON-RPC and MCP
reserve (spec §5.0 item 3). A session whose upstream or process is gone gets the contract's
SessionNotFound (-31001, HTTP 404): it is exactly "start a new session", the answer every
client of DESIGN §3 — and every legacy client after SEP-1372 — already acts on. A handle
whose upstream is gone is not a lost session (the caller's session may live on elsewhere), so
it gets -31010 with HTTP 502 (:class:`HandleLost`, issue #11), saying to start over.
"""

from __future__ import annotations

from ..core.errors import SessionError, SessionNotFound
from ..core.names import HEADER_LEGACY_SESSION_ID, META_SESSION_ID

UPSTREAM_FAILED = -31010
GATEWAY_AT_CAPACITY = -31011
NO_UPSTREAM = -31012
UNAUTHENTICATED = -31013
PARSE_ERROR = -32700


class UpstreamFailed(SessionError):
    """The upstream (or the session's process) failed while handling this request."""

    code = UPSTREAM_FAILED
    http_status = 502
    default_message = (
        "The server handling this request failed before answering; the request may or may "
        "not have been applied. Check before retrying anything that is not idempotent."
    )


class GatewayAtCapacity(SessionError):
    """``--max-processes`` reached: no process for a new session."""

    code = GATEWAY_AT_CAPACITY
    http_status = 503
    default_message = (
        "The gateway is at capacity: every server process is serving a session. Retry "
        "later, end sessions you no longer use (DELETE or let them idle out), or raise "
        "--max-processes."
    )


class NoUpstream(SessionError):
    """No healthy upstream to send the request to."""

    code = NO_UPSTREAM
    http_status = 503
    default_message = (
        "No upstream server is available: every upstream failed its health checks. Retry shortly."
    )


class ParseError(SessionError):
    """The request body is not JSON the decoder accepts (JSON-RPC 2.0 §5.1), nesting too
    deep for it included: refused before anything is sent on (issue #12)."""

    code = PARSE_ERROR
    http_status = 400
    default_message = "Parse error: the request body is not valid JSON (or is nested too deeply)."


class Unauthenticated(SessionError):
    """A credential the gateway was configured to verify failed verification (or is missing).

    Answered with 401 and ``WWW-Authenticate: Bearer error="invalid_token"`` (RFC 6750 §3).
    """

    code = UNAUTHENTICATED
    http_status = 401
    default_message = (
        "Unauthorized: send a valid bearer token (Authorization: Bearer ...) that this gateway "
        "can verify."
    )


def session_lost(reason: str) -> SessionNotFound:
    """The answer for a session whose upstream or process is gone (see the module docstring)."""
    return SessionNotFound(
        f"Session lost: {reason}. Its state is gone with it; start a new session (a new "
        f"{META_SESSION_ID}, or initialize again for {HEADER_LEGACY_SESSION_ID} clients)."
    )


class HandleLost(UpstreamFailed):
    """A handle pinned to an upstream that is gone (issue #11). Not a session error: the
    request's session, if any, may well live on; only the handle's state is lost."""

    default_message = (
        "Handle lost: the server that holds this handle is unavailable. Its state is gone "
        "with it; call the tool that made the handle again to start over."
    )


def handle_lost(handle: str, reason: str) -> HandleLost:
    """The answer for a request carrying a handle whose upstream is gone. The request was
    not sent anywhere, so nothing of it was applied (-31010, like an upstream failure)."""
    kind = handle.split("-", 1)[0]
    maker = "session_start" if kind == "session" else f"the tool that made the {kind} handle"
    return HandleLost(
        f"Handle lost: the {kind} handle {handle!r} lives on a server that {reason}. Its "
        f"state is gone with it, and this request was not applied: start over by calling "
        f"{maker} again."
    )
