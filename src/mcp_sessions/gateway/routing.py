"""Routing: which session key a request carries, and which upstream a key belongs to.

Pure functions, no I/O (DESIGN §9: a core that knows the rules, thin adapters around it).

**The key.** A request is routed by the first of (DESIGN §2, issues #7 and #11):

1. the client session id header ``Mcp-Client-Session-Id`` (the mirror of carrier 1, also
   SEP-2822's header): the gateway routes on it without reading the body — DESIGN §3 lets a
   gateway route on the header alone, and a header that disagrees with ``_meta`` is the
   server's to refuse (400, -32020), exactly as when no gateway is in between;
2. the ``_meta`` ids, the SEP-2822 and vendor aliases and the Bedrock header, in the order
   of :func:`~mcp_sessions.core.carriers.resolve_carrier`;
3. a *pinned handle*: a ``tools/call`` argument value or ``Mcp-Param-*`` header value that a
   result of an upstream listed as minted (:mod:`.handles`). Pins need the store, so this
   step is the proxy's (:meth:`.proxy.HTTPBackend._route`), between this module's answers:
   it overrides only the decisions below it;
4. legacy ``Mcp-Session-Id`` on a 2025-11-25 or older request;
5. a configured ``Mcp-Param-*`` header (``--route-param``), hashed: the same handle reaches
   the same replica even before (or without) a pin;
6. the caller's principal, read from ``Authorization`` (so one user's keyless calls share a
   replica);
7. nothing: the least-loaded healthy upstream.

**The upstream.** Rendezvous (highest random weight) hashing: every upstream gets a score
``H(upstream, key)`` and the highest wins. Every gateway replica computes the same answer
with no coordination, and removing an upstream moves exactly the keys it held, each to its
own second choice, so the others' keys never move (Thaler and Ravishankar, "A Name-Based
Mapping Scheme for Rendezvous", 1996).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.carriers import Carrier, CarrierPolicy, RequestView, resolve_carrier
from ..core.errors import InvalidSessionId
from ..core.ids import validate_session_id
from ..core.names import HEADER_CLIENT_SESSION_ID, HEADER_PARAM_PREFIX
from ..core.principal import ANONYMOUS, Principal

_HEADER_CLIENT = HEADER_CLIENT_SESSION_ID.lower()

#: Routing decision labels (the ``carrier`` label of the routing metric).
CLIENT_HEADER = "client_header"
PARAM_HEADER = "param_header"
PRINCIPAL = "principal"
LEAST_LOADED = "least_loaded"
#: Every label a decision can carry, for pre-registering metric children.
DECISIONS: tuple[str, ...] = (
    CLIENT_HEADER,
    *(c.value for c in Carrier if c is not Carrier.NONE),
    PARAM_HEADER,
    PRINCIPAL,
    LEAST_LOADED,
)


# -- rendezvous hashing ---------------------------------------------------------------------


def score(node: str, key: str) -> int:
    """The rendezvous weight of ``node`` for ``key``: 64 bits of BLAKE2b over both.

    The separator byte keeps ``("ab", "c")`` and ``("a", "bc")`` apart.
    """
    digest = hashlib.blake2b(
        node.encode() + b"\x00" + key.encode(), digest_size=8, person=b"mcps-hrw"
    ).digest()
    return int.from_bytes(digest, "big")


def rank(key: str, nodes: Iterable[str]) -> list[str]:
    """``nodes`` from first to last choice for ``key`` (ties, astronomically rare, by name)."""
    return sorted(nodes, key=lambda node: (score(node, key), node), reverse=True)


def choose(key: str, nodes: Iterable[str]) -> str | None:
    """The first choice for ``key`` among ``nodes``, or ``None`` if there are none."""
    best: str | None = None
    best_score = -1
    for node in nodes:
        weight = score(node, key)
        if weight > best_score or (weight == best_score and best is not None and node > best):
            best, best_score = node, weight
    return best


# -- the key ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteKey:
    """What a request is routed by.

    ``key`` is the rendezvous input; it is the bare session id for every session carrier, so
    a session reaches the same upstream whichever carrier brings its id on a given request.
    ``session`` says the key names a session (the gateway remembers where sessions live);
    ``legacy`` says it is a server-minted ``Mcp-Session-Id`` (placed by the server that
    minted it and learned from its response, never placed by hashing first). ``handle`` is
    the pinned handle a request is routed by (then ``key`` is its pin and ``session`` is set:
    it lives where its pin says, and is lost with its upstream).
    """

    decision: str
    key: str | None = None
    session: bool = False
    legacy: bool = False
    handle: str | None = None

    @property
    def below_handles(self) -> bool:
        """Whether a pinned handle in the request overrides this decision (DESIGN §2: a
        handle argument beats legacy ids, but not ``_meta`` ids and their aliases)."""
        return self.decision in _BELOW_HANDLES


LEAST_LOADED_ROUTE = RouteKey(LEAST_LOADED)
_BELOW_HANDLES = frozenset({Carrier.LEGACY.value, PARAM_HEADER, PRINCIPAL, LEAST_LOADED})


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """Which carriers the gateway routes on."""

    carriers: CarrierPolicy = field(default_factory=CarrierPolicy)
    #: Handle parameter names whose ``Mcp-Param-<Name>`` header is a routing key.
    param_names: tuple[str, ...] = ()
    #: Route keyless requests by the caller's principal before falling back to least-loaded.
    principal: bool = True

    @property
    def param_headers(self) -> tuple[str, ...]:
        return tuple((HEADER_PARAM_PREFIX + name).lower() for name in self.param_names)


def route_from_headers(headers: Mapping[str, str]) -> RouteKey | None:
    """The fast path: a well-formed ``Mcp-Client-Session-Id`` header decides alone.

    ``headers`` has lowercase names. A malformed value is not routed on (the body decides);
    if ``_meta`` names a session, the server refuses the mismatch as it would anyway.
    """
    value = headers.get(_HEADER_CLIENT)
    if value is None:
        return None
    try:
        session_id = validate_session_id(value.strip())
    except InvalidSessionId:
        return None
    return RouteKey(CLIENT_HEADER, session_id, session=True)


def route_for(
    *,
    method: str,
    meta: Mapping[str, Any] | None,
    headers: Mapping[str, str],
    protocol_version: str | None,
    policy: RoutingPolicy,
) -> RouteKey:
    """The decision of module docstring steps 2 and 4-7 (the proxy adds step 3).
    ``headers`` has lowercase names.

    Raises :class:`~mcp_sessions.core.errors.HeaderMismatch` or
    :class:`~mcp_sessions.core.errors.InvalidSessionId` exactly where a server would.
    """
    resolution = resolve_carrier(
        RequestView(method=method, meta=meta, headers=headers, protocol_version=protocol_version),
        policy.carriers,
    )
    if resolution.carrier is not Carrier.NONE and resolution.session_id is not None:
        legacy = resolution.carrier is Carrier.LEGACY
        return RouteKey(resolution.carrier.value, resolution.session_id, True, legacy)
    for name in policy.param_headers:
        value = headers.get(name)
        if value:
            # Namespaced: a handle is not a session id, and must not collide with one.
            return RouteKey(PARAM_HEADER, f"param:{name}:{value.strip()}")
    if policy.principal:
        principal = principal_from_authorization(headers.get("authorization"))
        if principal is not None:
            return RouteKey(PRINCIPAL, f"principal:{principal.key}")
    return LEAST_LOADED_ROUTE


# -- the principal ---------------------------------------------------------------------------


def principal_from_authorization(value: str | None) -> Principal | None:
    """Who is calling, as far as routing needs to know; ``None`` without credentials.

    The gateway does not authenticate — every upstream verifies every request itself
    (spec §5.1 item 16) — so nothing here is trusted. A bearer JWT is read *unverified* for
    its ``iss``/``sub``/client id, which keeps a user's affinity across token refreshes; any
    other credential routes by a digest of itself. A forged claim can only steer a request
    to an upstream that then refuses it.
    """
    if not value:
        return None
    scheme, _, credentials = value.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        claims = _jwt_claims(credentials)
        if claims is not None:
            principal = principal_from_claims(claims)
            if principal.subject is not None:
                return principal
    digest = hashlib.sha256(value.strip().encode()).hexdigest()[:32]
    return Principal(subject=f"credential-sha256:{digest}")


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    """The principal a token's claims name: ``iss``, ``sub``, and ``client_id`` (else
    ``azp``); a claim that is not a string counts as absent."""
    issuer, subject = claims.get("iss"), claims.get("sub")
    client = claims.get("client_id", claims.get("azp"))
    return Principal(
        issuer=issuer if isinstance(issuer, str) else None,
        subject=subject if isinstance(subject, str) else None,
        client_id=client if isinstance(client, str) else None,
    )


def _jwt_claims(token: str) -> dict[str, Any] | None:
    parts = token.split(".")
    if len(parts) != 3 or len(parts[1]) > 8192:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, binascii.Error, RecursionError):  # RecursionError: nesting (#12)
        return None
    return claims if isinstance(claims, dict) else None


def principal_key(headers: Mapping[str, str]) -> str:
    """The principal key a gateway record (a pin) is bound to: ``"anonymous"`` without
    credentials. Routing information only: see :func:`principal_from_authorization`. What
    the gateway *acts* on (``--spawn`` processes, and pins once tokens are verified) comes
    from :mod:`.trust` instead."""
    principal = principal_from_authorization(headers.get("authorization"))
    return (principal or ANONYMOUS).key


def least_loaded(loads: Sequence[tuple[str, int]], tiebreak: int) -> str | None:
    """The node with the fewest requests in flight; ``tiebreak`` rotates among equals so that
    idle upstreams share keyless traffic instead of the first one taking it all."""
    if not loads:
        return None
    fewest = min(load for _, load in loads)
    candidates = [node for node, load in loads if load == fewest]
    return candidates[tiebreak % len(candidates)]
