"""Who is calling, as far as the gateway may act on it (issue #12, item 6).

The gateway binds what it keeps to a principal: the pins of :mod:`.pins`, and — in ``--spawn``
mode — the stdio process that holds a session's state. A stdio process has no
authentication of its own, so there the gateway is the only guard, and the principal must be
one the gateway can *verify*:

* **verification configured** (``--jwks FILE|URL`` or ``--jwt-secret-file``): every request
  carries a bearer JWT whose signature, expiry (and issuer/audience when configured) verify;
  the principal is its ``iss``/``sub``/client id. Anything else gets 401 with
  ``WWW-Authenticate: Bearer error="invalid_token"`` (RFC 6750 §3);
* **no verification configured**: the principal is a SHA-256 of the whole ``Authorization``
  value, so two callers share a principal only if they send the same credential. A forged
  claim (another user's ``sub`` under a bad signature) is a different credential, hence a
  different principal: it never reaches the other user's process (row 8 of issue #12).

Quotas (``--max-processes-per-principal``) count a verified principal, or else the caller's
address: an unverified credential is free to mint, so it is no identity to count by.

In HTTP mode without verification, pins keep the claims read *unverified* (as before): every
upstream verifies every request itself (spec §5.1 item 16), so a forged claim only steers a
request to an upstream that refuses it, while a user's pins survive a token refresh.

Forwarding fields: a client's own ``X-Forwarded-*`` would let it claim any address or host,
so they are replaced by the gateway's view unless ``--trust-forwarded`` (a proxy in front
that sets them); the same choice says which address counts an anonymous caller.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..asgi import Send, send_error
from ..core.principal import ANONYMOUS, Principal
from .asgi import Incoming
from .errors import Unauthenticated
from .routing import principal_from_claims, principal_key

logger = logging.getLogger("mcp_sessions.gateway")

#: Request fields a client could use to claim another address, host or scheme; replaced by
#: the gateway's own view unless ``--trust-forwarded``.
FORWARDED_FIELDS = frozenset(
    {b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto", b"forwarded", b"x-real-ip"}
)
#: Signature algorithms accepted with a JWKS: asymmetric only, so a public key can never be
#: used as an HMAC secret (the "alg confusion" attack), and never ``none``.
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
#: Shortest HS256 secret accepted (RFC 7518 §3.2: a key of at least the hash's size).
MIN_SECRET_BYTES = 32
#: How long a fetched JWK set is used before it is fetched again.
JWKS_LIFESPAN = 300.0
#: Shortest time between two fetches for an unknown ``kid`` (a key rotation shows up within
#: it; a flood of made-up kids costs one fetch per interval).
JWKS_REFETCH_INTERVAL = 30.0
_CHALLENGE = [(b"www-authenticate", b'Bearer error="invalid_token"')]


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """How the gateway verifies bearer tokens (``--jwks`` or ``--jwt-secret-file``)."""

    #: A JWKS file path, or an ``https://`` URL (``http://`` only on a loopback address).
    jwks: str | None = None
    #: A file holding the HS256 shared secret.
    secret_file: str | None = None
    #: Required ``iss``, when given.
    issuer: str | None = None
    #: Required ``aud`` member, when given (else ``aud`` is not checked).
    audience: str | None = None
    #: Clock skew allowed on ``exp``/``nbf``, in seconds.
    leeway: float = 30.0

    def __post_init__(self) -> None:
        if (self.jwks is None) == (self.secret_file is None):
            raise ValueError("give one of --jwks and --jwt-secret-file")
        if self.jwks is not None and "://" in self.jwks:
            url = urlsplit(self.jwks)
            if url.scheme == "http":
                try:
                    loopback = ipaddress.ip_address(url.hostname or "").is_loopback
                except ValueError:
                    loopback = url.hostname == "localhost"
                if not loopback:
                    raise ValueError(
                        f"--jwks {self.jwks}: fetch signing keys over https (plain http only "
                        "from a loopback address), or give a file"
                    )
            elif url.scheme != "https":
                raise ValueError(f"--jwks {self.jwks}: give an https:// URL or a file path")


class TokenVerifier:
    """Verifies bearer JWTs with PyJWT (``pip install 'mcp-sessions[gateway]'``)."""

    def __init__(self, settings: AuthSettings) -> None:
        try:
            import jwt
        except ImportError:
            raise ValueError(
                "verifying tokens needs PyJWT: pip install 'mcp-sessions[gateway]'"
            ) from None
        self._jwt = jwt
        self.settings = settings
        self._secret: bytes | None = None
        self._keys: Any = None  # PyJWKSet for a file
        self._client: Any = None  # PyJWKClient for a URL
        self._url_keys: Any = []  # its keys, as last fetched
        self._fetched_at = -JWKS_LIFESPAN
        self._fetching = asyncio.Lock()
        if settings.secret_file is not None:
            try:
                secret = Path(settings.secret_file).read_bytes().strip()
            except OSError as exc:
                raise ValueError(f"--jwt-secret-file: {exc.strerror or exc}") from None
            if len(secret) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"--jwt-secret-file: the secret is {len(secret)} bytes; HS256 needs at "
                    f"least {MIN_SECRET_BYTES}"
                )
            self._secret = secret
        elif settings.jwks is not None and "://" in settings.jwks:
            # Caching is ours (_fetch_keys): the client only fetches and parses.
            self._client = jwt.PyJWKClient(
                settings.jwks, cache_keys=False, cache_jwk_set=False, timeout=5
            )
        elif settings.jwks is not None:
            try:
                data = json.loads(Path(settings.jwks).read_text())
                self._keys = jwt.PyJWKSet.from_dict(data)
            except OSError as exc:
                raise ValueError(f"--jwks {settings.jwks}: {exc.strerror or exc}") from None
            except (ValueError, jwt.PyJWTError) as exc:
                raise ValueError(f"--jwks {settings.jwks}: not a usable JWK set ({exc})") from None

    async def verify(self, token: str) -> Principal:
        """The token's principal; :class:`Unauthenticated` saying why when it does not verify."""
        jwt = self._jwt
        try:
            if self._secret is not None:
                key: Any = self._secret
                algorithms: list[str] = ["HS256", "HS384", "HS512"]
            else:
                key = await self._signing_key(token)
                algorithms = list(ASYMMETRIC_ALGORITHMS)
            claims = jwt.decode(
                token,
                key=key,
                algorithms=algorithms,
                issuer=self.settings.issuer,
                audience=self.settings.audience,
                leeway=self.settings.leeway,
                options={"require": ["exp"], "verify_aud": self.settings.audience is not None},
            )
        except (jwt.PyJWTError, ValueError, RecursionError) as exc:
            # ValueError, RecursionError: a payload no JSON decoder takes (issue #12).
            if not isinstance(exc, jwt.PyJWTError):
                exc = jwt.DecodeError("its payload is not JSON the gateway can decode")
            raise Unauthenticated(
                f"Unauthorized: the bearer token does not verify ({exc})."
            ) from None
        principal = principal_from_claims(claims)
        if principal.subject is None and principal.client_id is None:
            raise Unauthenticated("Unauthorized: the bearer token names no sub or client_id.")
        return principal

    async def _signing_key(self, token: str) -> Any:
        jwt = self._jwt
        kid = jwt.get_unverified_header(token).get("kid")
        if self._client is None:
            found = _match(self._keys.keys, kid)
        else:
            found = _match(self._url_keys, kid)
            stale = time.monotonic() - self._fetched_at >= JWKS_LIFESPAN
            if found is None or stale:
                await self._fetch_keys(force=stale or not self._url_keys)
                found = _match(self._url_keys, kid)
        if found is None:
            raise jwt.InvalidTokenError("no signing key matches its kid")
        return found

    async def _fetch_keys(self, *, force: bool) -> None:
        """Fetch the JWK set again: when it is stale, or for an unknown ``kid`` at most once
        per :data:`JWKS_REFETCH_INTERVAL` — tokens with made-up kids must not turn into one
        fetch each. A fetch blocks, so it runs off the event loop; a failed one keeps the keys
        already known."""
        async with self._fetching:
            now = time.monotonic()
            if not force and now - self._fetched_at < JWKS_REFETCH_INTERVAL:
                return
            if force and now - self._fetched_at < 1.0:
                return  # another request just fetched it (or tried: at most once a second)
            self._fetched_at = now
            try:
                self._url_keys = await asyncio.to_thread(self._client.get_signing_keys, True)
            except Exception as exc:  # unreachable, not JSON, no usable key: logged, kept
                logger.warning("fetching the JWK set %s failed: %s", self.settings.jwks, exc)


def _match(keys: Any, kid: Any) -> Any:
    """The key of ``kid`` in ``keys``; a token without a kid matches a set of one key."""
    if kid is None:
        return keys[0] if len(keys) == 1 else None
    return next((key for key in keys if key.key_id == kid), None)


class TrustPolicy:
    """The principal each request is bound to (module docstring), and the caller a quota
    counts."""

    def __init__(
        self,
        auth: AuthSettings | None,
        *,
        trust_forwarded: bool = False,
        unverified_claims: bool = False,
    ) -> None:
        self.verifier = TokenVerifier(auth) if auth is not None else None
        self.trust_forwarded = trust_forwarded
        self.unverified_claims = unverified_claims

    async def principal(self, request: Incoming) -> str | Unauthenticated:
        """The principal key of ``request``, or the refusal to send."""
        value = request.headers.get("authorization")
        if self.verifier is not None:
            scheme, _, token = (value or "").strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return Unauthenticated()
            try:
                return (await self.verifier.verify(token.strip())).key
            except Unauthenticated as refusal:
                return refusal
        if not value:
            return ANONYMOUS.key
        if self.unverified_claims:
            return principal_key(request.headers)
        return credential_principal(value).key

    def quota_key(self, principal: str, request: Incoming) -> str:
        """Who a per-principal quota counts: a verified principal; otherwise the caller's
        address (the gateway's peer, or the address the trusted proxy in front saw) — an
        unverified credential costs nothing to mint, so counting per credential would let
        one caller take the pool with a fresh one per session (issue #12, row 9)."""
        if self.verifier is not None:
            return principal
        address = ""
        client = request.scope.get("client")
        if client:
            address = str(client[0])
        if self.trust_forwarded:
            forwarded = request.headers.get("x-forwarded-for")
            if forwarded and forwarded.split(",")[-1].strip():
                address = forwarded.split(",")[-1].strip()
        return f"address:{address}"


def credential_principal(authorization: str) -> Principal:
    """The principal of an unverified credential: a digest of the whole header value."""
    digest = hashlib.sha256(authorization.encode("latin-1", "replace")).hexdigest()
    return Principal(subject=f"credential-sha256:{digest}")


async def refuse(send: Send, error: Unauthenticated, request_id: Any = None) -> int:
    """Answer 401 with the JSON-RPC error and the RFC 6750 challenge."""
    return await send_error(send, error, request_id, extra_headers=_CHALLENGE)
