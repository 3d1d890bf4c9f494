"""Session ids: minting and validation (DESIGN §2, §3).

Without authentication an id is a bearer capability, so minted ids carry 128 bits from the
OS CSPRNG (spec §5.0 item 33: at least 128 bits) and client-proposed ids shorter than 16
characters are refused. The alphabet ``[A-Za-z0-9-]`` fits every gateway and proxy header
charset found (DESIGN §3), and a lowercase UUIDv4 is a valid id.
"""

from __future__ import annotations

import re
import secrets

from .errors import InvalidSessionId
from .names import MINTED_ID_BITS, SESSION_ID_MAX_LENGTH, SESSION_ID_MIN_LENGTH

_ID_RE = re.compile(r"[A-Za-z0-9-]+")


def new_session_id() -> str:
    """A fresh id: 128 random bits as 32 lowercase hex characters."""
    return secrets.token_hex(MINTED_ID_BITS // 8)


def validate_session_id(value: object, *, source: str = "session id") -> str:
    """Return ``value`` if it is a well-formed session id, else raise :class:`InvalidSessionId`.

    ``source`` names where the value came from (a ``_meta`` key or a header), so the message
    points at the thing the caller must fix.
    """
    if not isinstance(value, str):
        raise InvalidSessionId(f"{source} must be a string, got {type(value).__name__}")
    if not value.isascii():
        raise InvalidSessionId(
            f"{source} contains non-ASCII characters; use 16-128 characters of [A-Za-z0-9-]"
        )
    length = len(value)
    if length < SESSION_ID_MIN_LENGTH:
        raise InvalidSessionId(
            f"{source} is {length} characters long; at least {SESSION_ID_MIN_LENGTH} are "
            "required (ids are bearer capabilities: use 128 random bits, e.g. a UUIDv4)"
        )
    if length > SESSION_ID_MAX_LENGTH:
        raise InvalidSessionId(
            f"{source} is {length} characters long; at most {SESSION_ID_MAX_LENGTH} are allowed"
        )
    if _ID_RE.fullmatch(value) is None:
        bad = next(c for c in value if not (c.isalnum() or c == "-"))
        raise InvalidSessionId(
            f"{source} contains {bad!r}; only letters, digits and '-' are allowed"
        )
    return value
