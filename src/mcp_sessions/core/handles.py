"""Handle strings, SEP-2567 (DESIGN §4): ``<kind>-<random>``.

A handle is an ordinary string argument; the library adds no wire field for it (spec §5.2
item 20). The random part is 128 bits from the CSPRNG as lowercase hex, so the whole string
stays in the session-id alphabet and can be mirrored into an ``Mcp-Param-*`` header as is.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from .names import MINTED_ID_BITS

_KIND_RE = re.compile(r"[a-z][a-z0-9]{0,31}")
_RANDOM_HEX_LENGTH = MINTED_ID_BITS // 4
_HANDLE_RE = re.compile(rf"([a-z][a-z0-9]{{0,31}})-([0-9a-f]{{{_RANDOM_HEX_LENGTH}}})")


class InvalidHandle(ValueError):
    """A string that is not a handle of the expected kind. The message says why."""


@dataclass(frozen=True, slots=True)
class Handle:
    """A parsed handle string."""

    kind: str
    random: str

    def __str__(self) -> str:
        return f"{self.kind}-{self.random}"


def validate_kind(kind: str) -> str:
    """A handle kind: a lowercase letter then up to 31 lowercase letters or digits."""
    if not isinstance(kind, str) or _KIND_RE.fullmatch(kind) is None:
        raise ValueError(
            f"handle kind {kind!r} is not valid: use a lowercase letter followed by up to 31 "
            "lowercase letters or digits (e.g. 'vm', 'cart', 'db2')"
        )
    return kind


def mint_handle(kind: str) -> str:
    """A new handle string of ``kind``."""
    return f"{validate_kind(kind)}-{secrets.token_hex(MINTED_ID_BITS // 8)}"


def parse_handle(value: object, *, kind: str | None = None) -> Handle:
    """Parse ``value``; with ``kind``, also require that kind. Raises :class:`InvalidHandle`."""
    if not isinstance(value, str):
        raise InvalidHandle(f"a handle must be a string, got {type(value).__name__}")
    match = _HANDLE_RE.fullmatch(value)
    if match is None:
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise InvalidHandle(
            f"{shown!r} is not a handle: expected '<kind>-<{_RANDOM_HEX_LENGTH} hex digits>' "
            "as returned by the tool that created it"
        )
    handle = Handle(kind=match.group(1), random=match.group(2))
    if kind is not None and handle.kind != kind:
        raise InvalidHandle(
            f"{value!r} is a {handle.kind!r} handle, but a {kind!r} handle is needed"
        )
    return handle
