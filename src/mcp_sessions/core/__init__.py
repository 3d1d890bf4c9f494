"""The sans-IO core: the wire rules of mcp-sessions and nothing else.

No sockets, no files (except reading a key file on request), no import of ``mcp``: the
adapters for the SDK, ASGI and each store build on this.
"""

from __future__ import annotations

from .carriers import (
    NO_SESSION,
    Carrier,
    CarrierPolicy,
    RequestView,
    Resolution,
    resolve_carrier,
    validate_meta_key,
)
from .errors import (
    CarrierConflict,
    HeaderMismatch,
    InvalidParams,
    InvalidSessionId,
    InvalidState,
    MalformedHandle,
    OversizedState,
    SessionError,
    SessionNotFound,
    SessionRequired,
    StateConflict,
    StateTooLarge,
)
from .handles import Handle, InvalidHandle, mint_handle, parse_handle, validate_kind
from .ids import new_session_id, validate_session_id
from .limits import Limits
from .principal import ANONYMOUS, Principal
from .records import Record
from .sealing import (
    KeyRing,
    SealingKey,
    StateCodec,
    TokenHeader,
    UnsealedState,
    newest_token,
    read_token_header,
)

__all__ = [
    "ANONYMOUS",
    "NO_SESSION",
    "Carrier",
    "CarrierConflict",
    "CarrierPolicy",
    "Handle",
    "HeaderMismatch",
    "InvalidHandle",
    "InvalidParams",
    "InvalidSessionId",
    "InvalidState",
    "KeyRing",
    "Limits",
    "MalformedHandle",
    "OversizedState",
    "Principal",
    "Record",
    "RequestView",
    "Resolution",
    "SealingKey",
    "SessionError",
    "SessionNotFound",
    "SessionRequired",
    "StateCodec",
    "StateConflict",
    "StateTooLarge",
    "TokenHeader",
    "UnsealedState",
    "mint_handle",
    "new_session_id",
    "newest_token",
    "parse_handle",
    "read_token_header",
    "resolve_carrier",
    "validate_kind",
    "validate_meta_key",
    "validate_session_id",
]
