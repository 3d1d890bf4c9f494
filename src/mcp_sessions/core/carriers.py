"""Carrier resolution: which carrier brings a request's session, and which id it names.

Pure function of a request view (method, ``_meta``, headers, protocol version, ``tools/call``
arguments, and the connection's own id where the transport has one), in the order of
DESIGN §2 (revised for issue #11):

1. ``_meta["dev.mcpsessions/sessionId"]``, with its HTTP mirror ``Mcp-Client-Session-Id``;
2. the input aliases: SEP-2822 (``_meta.clientSessionId`` with the same header),
   ``_meta["openai/session"]``, header ``X-Amzn-Bedrock-AgentCore-Runtime-Session-Id``;
3. a session handle in a ``tools/call`` argument (opt-in, for clients that can only pass
   arguments). It is explicit, so it beats the connection-scoped carriers below; a handle that
   disagrees with a carrier above in the same call is refused (:class:`CarrierConflict`),
   never settled by a silent choice;
4. ``Mcp-Session-Id`` on a 2025-11-25 or older request (legacy sessions, DESIGN §5);
5. the connection itself, where one connection is one client (a stdio process): a request
   that carries none of the above belongs to its connection's implicit session, at both
   protocol versions. The adapter supplies the connection's id; the core never mints it.

Otherwise the first carrier present wins and later ones are not consulted (a host may
legitimately send its own vendor id beside ours). Header names are case-insensitive
(RFC 9110 §5.1).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import CarrierConflict, HeaderMismatch, InvalidSessionId, MalformedHandle
from .ids import validate_session_id
from .names import (
    HEADER_BEDROCK_SESSION_ID,
    HEADER_CLIENT_SESSION_ID,
    HEADER_LEGACY_SESSION_ID,
    META_MINTED_HANDLES,
    META_OPENAI_SESSION,
    META_SEP2822_SESSION_ID,
    META_SESSION_ID,
    META_SHARED_CONNECTION,
    META_STATE,
    MODERN_PROTOCOL_VERSIONS,
    SESSION_ID_MAX_LENGTH,
    SESSION_ID_MIN_LENGTH,
)

_OUR_PREFIX = META_SESSION_ID.split("/", 1)[0] + "/"
# The minted-handles key is a result key; in a request it is tolerated and ignored (issue #11:
# only upstream results pin handles), not refused as a typo.
_OUR_KEYS = frozenset({META_SESSION_ID, META_STATE, META_MINTED_HANDLES, META_SHARED_CONNECTION})
_HEADER_CLIENT = HEADER_CLIENT_SESSION_ID.lower()
_HEADER_BEDROCK = HEADER_BEDROCK_SESSION_ID.lower()
_HEADER_LEGACY = HEADER_LEGACY_SESSION_ID.lower()
_CARRIER_HEADERS = frozenset({_HEADER_CLIENT, _HEADER_BEDROCK, _HEADER_LEGACY})
# Where an id came from, for error messages; built once rather than on every request.
_SOURCE_META = f"params._meta[{META_SESSION_ID!r}]"
_SOURCE_SEP2822 = f"params._meta[{META_SEP2822_SESSION_ID!r}]"
_SOURCE_OPENAI = f"params._meta[{META_OPENAI_SESSION!r}]"
_SOURCE_BEDROCK = f"{HEADER_BEDROCK_SESSION_ID} header"
# The session id alphabet (DESIGN §3), which session handles share.
_HANDLE_RE = re.compile(r"[A-Za-z0-9-]+")


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
    CONNECTION = "connection"
    """The connection's own implicit session (stdio: one process serves one client)."""
    NONE = "none"
    """No session carrier."""


#: Carriers through which a client proposes its own id: implicit creation applies, and the id
#: is the client's conversation id on traces (issue #13).
CLIENT_CARRIERS = frozenset({Carrier.META, Carrier.SEP2822, Carrier.OPENAI, Carrier.BEDROCK})


@dataclass(frozen=True, slots=True)
class CarrierPolicy:
    """Which carriers are honoured. Every input alias can be switched off (DESIGN §2)."""

    sep2822: bool = True
    openai: bool = True
    bedrock: bool = True
    legacy: bool = True
    #: Further vendor ``_meta`` keys read as client session ids, after the built-in aliases.
    extra_meta_keys: tuple[str, ...] = field(default=())
    #: Name of the ``tools/call`` argument that may carry a session handle (carrier 3, for
    #: clients that can only pass arguments); ``None`` switches the fallback off.
    handle_argument: str | None = None
    #: Carrier 5: a request with no other carrier belongs to its connection's session where
    #: the transport is one connection per client (stdio).
    connection: bool = True

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
    #: The id of the connection's implicit session, where one connection is one client
    #: (stdio); ``None`` on transports whose connections are shared or per request (HTTP).
    connection_id: str | None = None


@dataclass(frozen=True, slots=True)
class Resolution:
    """The outcome: a carrier and the id it names (``None`` only for :attr:`Carrier.NONE`).

    ``alias_key`` is the ``_meta`` key or header the id came from, for logs and metrics.
    ``argument`` is the ``tools/call`` argument that carried the session (the handle
    fallback), which the adapter takes out before the tool's own arguments are validated.
    """

    carrier: Carrier
    session_id: str | None = None
    alias_key: str | None = None
    argument: str | None = None


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
    """The carrier headers of ``headers``, by lower-case name; the rest are never read (and
    every request resolves its carrier, so they are not copied: issue #14's benchmark)."""
    if not headers:
        return {}
    found = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in _CARRIER_HEADERS:
            # Surrounding whitespace is not part of a field value (RFC 9110 §5.5).
            found[lowered] = value.strip()
    return found


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
    ``_meta``; :class:`InvalidSessionId` for a malformed id or a misused key of our prefix;
    :class:`MalformedHandle` for a handle argument that cannot be a session id (the adapter
    makes it a tool error); :class:`CarrierConflict` when a handle argument names another
    session than ``_meta`` or an alias. The legacy ``Mcp-Session-Id`` value is returned as
    sent: it is only ever looked up, and an unknown value gets the legacy 404 (DESIGN §5).
    """
    meta = view.meta or {}
    headers = _lower_headers(view.headers)
    explicit = _explicit_carrier(meta, headers, policy) if meta or headers else None
    handle = _handle_argument(view, policy)

    if explicit is not None:
        if handle is None:
            return explicit
        name, handle_id = handle
        if handle_id != explicit.session_id:
            # DESIGN §2: two explicit carriers naming two sessions is an error, never a choice.
            source = f"params._meta[{explicit.alias_key!r}]"
            if explicit.carrier is Carrier.BEDROCK:
                source = _SOURCE_BEDROCK
            raise CarrierConflict(
                f"{source} and the tool argument {name!r} name different sessions; send "
                "one of them, or the same session id in both"
            )
        return Resolution(explicit.carrier, explicit.session_id, explicit.alias_key, name)

    # 3. A session handle argument: explicit, so it beats the connection-scoped carriers.
    if handle is not None:
        name, handle_id = handle
        return Resolution(Carrier.HANDLE, handle_id, name, name)

    # 4. Legacy sessions. On a modern request the header is ignored, never answered with a
    # 404 (spec §5.1 item 10: "never mint or echo on modern requests").
    if (
        policy.legacy
        and _HEADER_LEGACY in headers
        and view.protocol_version not in MODERN_PROTOCOL_VERSIONS
    ):
        return Resolution(Carrier.LEGACY, headers[_HEADER_LEGACY], HEADER_LEGACY_SESSION_ID)

    # 5. The connection's own session (one connection, one client).
    # A gateway relaying many clients over this connection says so: then it is no session.
    if (
        policy.connection
        and view.connection_id is not None
        and meta.get(META_SHARED_CONNECTION) is not True
    ):
        return Resolution(Carrier.CONNECTION, view.connection_id)

    return NO_SESSION


def _explicit_carrier(
    meta: Mapping[str, Any], headers: Mapping[str, str], policy: CarrierPolicy
) -> Resolution | None:
    """Carriers 1 and 2: our ``_meta`` key and the input aliases."""
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
    return None


def _handle_argument(view: RequestView, policy: CarrierPolicy) -> tuple[str, str] | None:
    """The handle fallback's argument name and value, where the call carries one."""
    name = policy.handle_argument
    if name is None or not view.arguments or view.method != "tools/call":
        return None
    value = view.arguments.get(name)
    if value is None:
        return None
    # A tool argument is the tool's input: its fault is a tool error (DESIGN §4), and the
    # message speaks of handles, which the client got from a tool, not of ids it would mint.
    if not isinstance(value, str):
        problem = f"must be a string, got {type(value).__name__}"
    elif not SESSION_ID_MIN_LENGTH <= len(value) <= SESSION_ID_MAX_LENGTH:
        problem = (
            f"is {len(value)} characters long; a session handle is "
            f"{SESSION_ID_MIN_LENGTH}-{SESSION_ID_MAX_LENGTH} characters long"
        )
    elif not value.isascii() or _HANDLE_RE.fullmatch(value) is None:
        problem = "is not a session handle: handles hold only letters, digits and '-'"
    else:
        return name, value
    raise MalformedHandle(f"The {name!r} argument {problem}.", argument=name)
