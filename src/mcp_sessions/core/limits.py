"""Per-caller limits (issue #12): the rules, without I/O.

A server keeps state for whoever asks, so without limits one caller can fill the store, or a
cap that every caller shares, for everyone else. :class:`Limits` says how much one caller may
hold and how fast it may create; the server adapter (``server/quotas.py``) counts in the store
and refuses with :class:`~mcp_sessions.core.errors.LimitExceeded` (-31005).

Who "one caller" is: an authenticated caller is its principal key; anonymous callers (who
all share the principal ``anonymous``, DESIGN §2) are told apart by client address, so one
anonymous address cannot use up the room of another. The address is the peer's unless the
deployment says how many reverse proxies in front of it append to ``X-Forwarded-For``
(:attr:`Limits.trusted_proxy_hops`); trusting a header nobody strips would let every request
claim a fresh address, so it is off by default.
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from .errors import LimitExceeded
from .names import HEADER_LEGACY_SESSION_ID

#: What a quota counts: stored sessions (``_meta`` / alias carriers, ``session/create``, the
#: handle fallback), legacy ``Mcp-Session-Id`` sessions, and handles of every kind.
Counted = Literal["sessions", "legacy", "handles"]

#: The :class:`Limits` field that caps each counted thing (named in error messages).
LIMIT_FIELD: Final[dict[Counted, str]] = {
    "sessions": "max_sessions_per_principal",
    "legacy": "max_legacy_sessions_per_principal",
    "handles": "max_handles_per_principal",
}
_NOUN: Final[dict[Counted, str]] = {
    "sessions": "live sessions",
    "legacy": f"live legacy ({HEADER_LEGACY_SESSION_ID}) sessions",
    "handles": "live handles",
}
_HOW_TO_FREE: Final[dict[Counted, str]] = {
    "sessions": "or at once when you destroy one (session/destroy)",
    "legacy": f"or at once when you end one (HTTP DELETE with its {HEADER_LEGACY_SESSION_ID})",
    "handles": "or sooner if the server revokes one",
}

#: Defaults: far above what one user of one deployment ever holds, low enough that a flood
#: from one caller stops long before the store or the process suffers (issue #12, table
#: rows 1 and 2: 50,000 sessions, 10,000 legacy sessions from one caller).
DEFAULT_MAX_SESSIONS: Final = 1000
DEFAULT_MAX_HANDLES: Final = 1000
DEFAULT_MAX_LEGACY_SESSIONS: Final = 1000
DEFAULT_CREATIONS_PER_MINUTE: Final = 1000
#: The stored ``initialize`` data of a legacy session (``protocolVersion`` and
#: ``clientInfo``), bytes of JSON: a real client sends a few hundred.
DEFAULT_MAX_INITIALIZE_BYTES: Final = 16 * 1024


@dataclass(frozen=True)
class Limits:
    """How much one caller may hold and create. ``None`` switches a limit off.

    Every default is one a real single-user deployment never meets (see docs/security.md).
    """

    #: Live stored sessions per caller (``_meta`` and alias carriers, ``session/create``,
    #: ``session_start``). Sealed sessions are not stored and not counted.
    max_sessions_per_principal: int | None = DEFAULT_MAX_SESSIONS
    #: Live handles per caller, all kinds together.
    max_handles_per_principal: int | None = DEFAULT_MAX_HANDLES
    #: Live legacy ``Mcp-Session-Id`` sessions per caller.
    max_legacy_sessions_per_principal: int | None = DEFAULT_MAX_LEGACY_SESSIONS
    #: Creations (sessions, legacy sessions and handles together) per caller per minute, a
    #: token bucket holding a minute's worth: bursts up to this many, then this rate.
    max_creations_per_minute: int | None = DEFAULT_CREATIONS_PER_MINUTE
    #: Largest ``initialize`` data a legacy session stores, bytes of JSON.
    max_initialize_bytes: int = DEFAULT_MAX_INITIALIZE_BYTES
    #: How many reverse proxies in front of the server append the address they saw to
    #: ``X-Forwarded-For``; 0 (the default) trusts no header and uses the peer address.
    trusted_proxy_hops: int = 0

    def __post_init__(self) -> None:
        for name in (*LIMIT_FIELD.values(), "max_creations_per_minute"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name} must be a whole number or None, not {value!r}")
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or None for no limit)")
        if self.max_initialize_bytes < 256:
            raise ValueError("max_initialize_bytes must be at least 256")
        if self.trusted_proxy_hops < 0:
            raise ValueError("trusted_proxy_hops must be 0 or more")

    def cap(self, counted: Counted) -> int | None:
        value: int | None = getattr(self, LIMIT_FIELD[counted])
        return value


def caller_key(
    principal_key: str,
    *,
    anonymous: bool,
    peer: str | None,
    forwarded_for: Sequence[str] = (),
    trusted_hops: int = 0,
) -> str:
    """Who a quota counts: the principal key, or for anonymous callers their address.

    ``forwarded_for`` are the ``X-Forwarded-For`` header values in order; with
    ``trusted_hops`` = n the address is the n-th from the right (what the outermost trusted
    proxy saw), so entries a client wrote itself further left are ignored. Without an address
    (stdio, a test transport) all anonymous callers share one key, as they share a principal.
    """
    if not anonymous:
        return principal_key
    address = peer
    if trusted_hops > 0:
        hops = [part.strip() for value in forwarded_for for part in value.split(",")]
        hops = [hop for hop in hops if hop]
        if len(hops) >= trusted_hops:
            address = hops[-trusted_hops]
    return f"anonymous@{address_group(address)}" if address else "anonymous"


def address_group(address: str) -> str:
    """The address a quota counts: an IPv6 address by its /64 (one subscriber's network,
    RFC 6177, in which a client picks addresses at will), IPv4 and IPv4-mapped IPv6 as is;
    anything else (a name a proxy wrote) verbatim."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass
class TokenBucket:
    """``capacity`` tokens, refilled at ``capacity`` per minute (RFC 2697's idea, per caller)."""

    capacity: int
    tokens: float
    updated: float

    @classmethod
    def full(cls, capacity: int, now: float) -> TokenBucket:
        return cls(capacity, float(capacity), now)

    def _refill(self, now: float) -> None:
        if now > self.updated:
            rate = self.capacity / 60.0
            self.tokens = min(float(self.capacity), self.tokens + (now - self.updated) * rate)
            self.updated = now

    def wait(self, now: float) -> float:
        """Seconds until one token is there (0 when one is there now)."""
        self._refill(now)
        if self.tokens >= 1.0:
            return 0.0
        return (1.0 - self.tokens) * 60.0 / self.capacity

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens = max(0.0, self.tokens - 1.0)

    def is_full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.capacity


#: The stores' encoding (compact, UTF-8), so a size measured here is the size they store.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def json_size(value: object) -> int:
    """Bytes of the compact UTF-8 JSON of ``value``; raises ``ValueError`` if it has none."""
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    return len(text) if text.isascii() else len(text.encode())


def too_many(counted: Counted, cap: int, retry_after: float) -> LimitExceeded:
    """The -31005 answer when ``cap`` live things of one caller exist already."""
    wait = max(1, math.ceil(retry_after))
    return LimitExceeded(
        f"Limit reached: {cap} {_NOUN[counted]} per caller ({LIMIT_FIELD[counted]} on this "
        f"server). Room frees up when one expires, at the latest in {wait} s, "
        f"{_HOW_TO_FREE[counted]}.",
        retry_after=wait,
    )


def too_fast(per_minute: int, retry_after: float) -> LimitExceeded:
    """The -31005 answer when the caller's creation rate is used up."""
    wait = max(1, math.ceil(retry_after))
    return LimitExceeded(
        f"Limit reached: {per_minute} creations per minute per caller "
        f"(max_creations_per_minute on this server). Retry in {wait} s.",
        retry_after=wait,
    )


__all__ = [
    "DEFAULT_CREATIONS_PER_MINUTE",
    "DEFAULT_MAX_HANDLES",
    "DEFAULT_MAX_INITIALIZE_BYTES",
    "DEFAULT_MAX_LEGACY_SESSIONS",
    "DEFAULT_MAX_SESSIONS",
    "LIMIT_FIELD",
    "Counted",
    "Limits",
    "TokenBucket",
    "address_group",
    "caller_key",
    "json_size",
    "too_fast",
    "too_many",
]
