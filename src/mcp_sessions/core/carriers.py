"""Carrier resolution: which carrier brings a request's session, and which id it names.

Pure function of a request view (method, ``_meta``, headers, protocol version), in the order
of DESIGN §2:

1. ``_meta["dev.mcpsessions/sessionId"]``, with its HTTP mirror ``Mcp-Client-Session-Id``;
2. the input aliases: SEP-2822 (``_meta.clientSessionId`` with the same header),
   ``_meta["openai/session"]``, header ``X-Amzn-Bedrock-AgentCore-Runtime-Session-Id``;
3. ``Mcp-Session-Id`` on a 2025-11-25 or older request (legacy sessions, DESIGN §5);
4. a session handle in a ``tools/call`` argument (opt-in, for plain 2026-07-28 clients).

The first carrier present wins and later ones are not consulted (a host may legitimately send
its own vendor id beside ours). Header names are case-insensitive (RFC 9110 §5.1).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import HeaderMismatch, InvalidSessionId
from .ids import validate_session_id
from .names import (
    HEADER_BEDROCK_SESSION_ID,
    HEADER_CLIENT_SESSION_ID,
    HEADER_LEGACY_SESSION_ID,
    META_MINTED_HANDLES,
    META_OPENAI_SESSION,
    META_SEP2822_SESSION_ID,
    META_SESSION_ID,
    META_STATE,
    MODERN_PROTOCOL_VERSIONS,
)

_OUR_PREFIX = META_SESSION_ID.split("/", 1)[0] + "/"
# The minted-handles key is a result key; in a request it is tolerated and ignored (issue #11:
# only upstream results pin handles), not refused as a typo.
_OUR_KEYS = frozenset({META_SESSION_ID, META_STATE, META_MINTED_HANDLES})
_HEADER_CLIENT = HEADER_CLIENT_SESSION_ID.lower()
_HEADER_BEDROCK = HEADER_BEDROCK_SESSION_ID.lower()
_HEADER_LEGACY = HEADER_LEGACY_SESSION_ID.lower()
# Where an id came from, for error messages; built once rather than on every request.
_SOURCE_META = f"params._meta[{META_SESSION_ID!r}]"
_SOURCE_SEP2822 = f"params._meta[{META_SEP2822_SESSION_ID!r}]"
_SOURCE_OPENAI = f"params._meta[{META_OPENAI_SESSION!r}]"
_SOURCE_BEDROCK = f"{HEADER_BEDROCK_SESSION_ID} header"


class Carrier(enum.Enum):
    """How a request named its session."""

    META = "meta"
    """``dev.mcpsessions/sessionId`` (extension-aware clients; HTTP mirror checked)."""
    SEP2822 = "sep2822"
    """SEP-2822 as drafted: ``_meta.clientSessionId`` with ``Mcp-Client-Session-Id``."""
    OPENAI = "openai"
    """``_meta["openai/session"]``."""
    BEDROCK = "bedrock"
    """``X-Amzn-Bedrock-AgentCore-Runtime-Session-Id`` header."""
    LEGACY = "legacy"
    """``Mcp-Session-Id`` on a 2025-11-25 or older request."""
    HANDLE = "handle"
    """A session handle passed as a tool argument (opt-in fallback for plain clients)."""
    NONE = "none"
    """No session carrier (a handle argument may still apply)."""


@dataclass(frozen=True, slots=True)
class CarrierPolicy:
    """Which carriers are honoured. Every input alias can be switched off (DESIGN §2)."""

    sep2822: bool = True
    openai: bool = True
    bedrock: bool = True
    legacy: bool = True
    #: Further vendor ``_meta`` keys read as client session ids, after the built-in aliases.
    extra_meta_keys: tuple[str, ...] = field(default=())
    #: Name of the ``tools/call`` argument that may carry a session handle (carrier 4, for
    #: plain 2026-07-28 clients); ``None`` switches the fallback off.
    handle_argument: str | None = None

    def __post_init__(self) -> None:
        for key in self.extra_meta_keys:
            validate_meta_key(key)


@dataclass(frozen=True, slots=True)
class RequestView:
    """What carrier resolution needs to know about one request; built by the adapters.

    ``headers`` is ``None`` where the transport has none (stdio, in-process).
    ``protocol_version`` is the request's negotiated or declared version, if known.
    """

    method: str
    meta: Mapping[str, Any] | None = None
    headers: Mapping[str, str] | None = None
    protocol_version: str | None = None
    #: ``tools/call`` arguments, for the handle fallback.
    arguments: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Resolution:
    """The outcome: a carrier and the id it names (``None`` only for :attr:`Carrier.NONE`).

    ``alias_key`` is the ``_meta`` key or header the id came from, for logs and metrics.
    """

    carrier: Carrier
    session_id: str | None = None
    alias_key: str | None = None


NO_SESSION = Resolution(Carrier.NONE)

# Spec §2.9: an optional prefix (dot-separated labels, each starting with a letter and ending
# with a letter or digit, hyphens inside), then a name that starts and ends alphanumeric with
# [-_.A-Za-z0-9] inside, and no '/'.
_LABEL = r"[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_META_KEY_RE = re.compile(
    rf"(?:(?P<prefix>{_LABEL}(?:\.{_LABEL})*)/)?(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)?"
)
_RESERVED_SECOND_LABELS = frozenset({"modelcontextprotocol", "mcp"})


def validate_meta_key(key: str) -> str:
    """Check a ``_meta`` key the library is asked to mint or read as its own (spec §2.9).

    Refuses malformed keys and prefixes reserved for MCP (second label ``modelcontextprotocol``
    or ``mcp``): those keys belong to the protocol, never to an extension (spec §5.0 item 4).
    """
    match = _META_KEY_RE.fullmatch(key) if isinstance(key, str) and key else None
    if match is None:
        raise ValueError(
            f"{key!r} is not a valid _meta key: use 'vendor.prefix/name' with no '/' in the name"
        )
    prefix = match.group("prefix")
    if prefix is not None:
        labels = prefix.split(".")
        if len(labels) >= 2 and labels[1].lower() in _RESERVED_SECOND_LABELS:
            raise ValueError(
                f"{key!r} uses a prefix reserved for MCP itself (second label "
                f"{labels[1]!r}); choose a vendor prefix you control"
            )
    return key


def _lower_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    if not headers:
        return {}
    # Surrounding whitespace is not part of a field value (RFC 9110 §5.5).
    return {name.lower(): value.strip() for name, value in headers.items()}


def _check_mirror(meta_value: str, header_value: str | None, meta_key: str) -> None:
    # DESIGN §3: both present and not byte-identical -> 400 / -32020 (as SEP-2243 does).
    if header_value is not None and header_value != meta_value:
        raise HeaderMismatch(
            f"Header mismatch: {HEADER_CLIENT_SESSION_ID} header does not match "
            f"params._meta[{meta_key!r}]; send the same session id in both"
        )


def check_meta_keys(meta: Mapping[str, Any]) -> None:
    """Refuse keys under our own prefix that the contract does not define (typos such as
    ``dev.mcpsessions/sessionid``): silently ignoring one would start a session-less call."""
    for key in meta:
        if isinstance(key, str) and key.startswith(_OUR_PREFIX) and key not in _OUR_KEYS:
            known = ", ".join(sorted(_OUR_KEYS))
            raise InvalidSessionId(
                f"params._meta key {key!r} is not defined by {_OUR_PREFIX[:-1]}; "
                f"the defined keys are {known}"
            )


def resolve_carrier(view: RequestView, policy: CarrierPolicy = CarrierPolicy()) -> Resolution:
    """Decide which carrier applies to ``view`` and which session id it names.

    Raises :class:`HeaderMismatch` (HTTP 400, -32020) when the mirror header disagrees with
    ``_meta``, and :class:`InvalidSessionId` for a malformed id or a misused key of our prefix.
    The legacy ``Mcp-Session-Id`` value is returned as sent: it is only ever looked up, and an
    unknown value gets the legacy 404 (DESIGN §5).
    """
    meta = view.meta or {}
    headers = _lower_headers(view.headers)
    if meta:
        check_meta_keys(meta)
    header_client = headers.get(_HEADER_CLIENT)

    # 1. Our own key, with its header mirror.
    if META_SESSION_ID in meta:
        session_id = validate_session_id(meta[META_SESSION_ID], source=_SOURCE_META)
        _check_mirror(session_id, header_client, META_SESSION_ID)
        return Resolution(Carrier.META, session_id, META_SESSION_ID)

    # 2. Input aliases, each can be switched off.
    if policy.sep2822 and META_SEP2822_SESSION_ID in meta:
        session_id = validate_session_id(meta[META_SEP2822_SESSION_ID], source=_SOURCE_SEP2822)
        _check_mirror(session_id, header_client, META_SEP2822_SESSION_ID)
        return Resolution(Carrier.SEP2822, session_id, META_SEP2822_SESSION_ID)
    if policy.openai and META_OPENAI_SESSION in meta:
        session_id = validate_session_id(meta[META_OPENAI_SESSION], source=_SOURCE_OPENAI)
        return Resolution(Carrier.OPENAI, session_id, META_OPENAI_SESSION)
    for key in policy.extra_meta_keys:
        if key in meta:
            session_id = validate_session_id(meta[key], source=f"params._meta[{key!r}]")
            return Resolution(Carrier.META, session_id, key)
    if policy.bedrock and _HEADER_BEDROCK in headers:
        session_id = validate_session_id(headers[_HEADER_BEDROCK], source=_SOURCE_BEDROCK)
        return Resolution(Carrier.BEDROCK, session_id, HEADER_BEDROCK_SESSION_ID)

    # 3. Legacy sessions. On a modern request the header is ignored, never answered with a
    # 404 (spec §5.1 item 10: "never mint or echo on modern requests").
    if (
        policy.legacy
        and _HEADER_LEGACY in headers
        and view.protocol_version not in MODERN_PROTOCOL_VERSIONS
    ):
        return Resolution(Carrier.LEGACY, headers[_HEADER_LEGACY], HEADER_LEGACY_SESSION_ID)

    # 4. A session handle argument (SEP-2567 style), only where switched on.
    name = policy.handle_argument
    if name is not None and view.arguments and view.method == "tools/call":
        value = view.arguments.get(name)
        if value is not None:
            session_id = validate_session_id(value, source=f"tool argument {name!r}")
            return Resolution(Carrier.HANDLE, session_id, name)

    return NO_SESSION
