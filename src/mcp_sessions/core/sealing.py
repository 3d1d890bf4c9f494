"""Sealed state tokens (DESIGN §4): the session state travels in ``_meta``, the server keeps
nothing.

Layers, one concept each (as itsdangerous separates signer, serializer and timing):

* :class:`SealingKey` / :class:`KeyRing` — key material, key ids, rotation: the first key
  seals, every key unseals, a key stops unsealing only when it is removed from the ring.
* :class:`StateCodec` — seals a JSON object bound to (audience, principal, session id), with
  an expiry and a monotonic ``seq``; refuses tokens over the size cap.
* :func:`read_token_header` — what a client may read without a key: ``seq`` and expiry, so its
  jar can keep the newest token (DESIGN §4: highest ``seq`` wins).

Token layout: ``"ms1." + base64url(header | nonce | ciphertext+tag)``, unpadded, where
``header = version(1) | kid(4) | seq(8) | expires_at(8)`` is in clear but authenticated
(AES-GCM associated data), and the plaintext carries the binding (audience, principal, session
id) followed by the state as compact JSON. Every failure raises :class:`InvalidState` and
nothing else: tokens are attacker-controlled input (spec §5.4 item 42).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import math
import os
import secrets
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import InvalidState, OversizedState
from .names import MAX_STATE_BYTES

TOKEN_PREFIX = "ms1."
_VERSION = 1
_HEADER = struct.Struct(">B4sQQ")  # version, kid, seq, expires_at (Unix seconds)
_BINDING = struct.Struct(">HHH")  # lengths of audience, principal, session id
_NONCE_LEN = 12
_TAG_LEN = 16
_MIN_RAW = _HEADER.size + _NONCE_LEN + _TAG_LEN + _BINDING.size
_TO_STD = bytes.maketrans(b"-_", b"+/")
_TO_URL = bytes.maketrans(b"+/", b"-_")
_B64_ALPHABET = {
    c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
}
_KEY_PREFIX = "mcps-key-1:"
_KID_LABEL = b"mcp-sessions/state-key-id/v1:"
_MAX_SEQ = 2**64 - 1
# Built once: json.dumps with non-default arguments builds a new encoder on every call.
# ASCII output is faster to encode and to parse back (as str) than UTF-8 output.
_ENCODER = json.JSONEncoder(separators=(",", ":"))

DEFAULT_TTL = 24 * 3600.0


# --- keys ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SealingKey:
    """One AES-256 key and its 4-byte id (a fingerprint: it reveals nothing of the key)."""

    secret: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) != 32:
            raise ValueError("a sealing key is exactly 32 random bytes")

    @property
    def kid(self) -> bytes:
        return hashlib.sha256(_KID_LABEL + self.secret).digest()[:4]

    @classmethod
    def generate(cls) -> SealingKey:
        return cls(secrets.token_bytes(32))

    def to_text(self) -> str:
        """The key-file line, e.g. ``mcps-key-1:<43 base64url characters>``."""
        return _KEY_PREFIX + _b64u(self.secret)

    @classmethod
    def from_text(cls, text: str) -> SealingKey:
        text = text.strip()
        if not text.startswith(_KEY_PREFIX):
            raise ValueError(
                f"not a sealing key: expected a line starting with {_KEY_PREFIX!r} "
                "(make one with 'mcp-sessions keys new')"
            )
        try:
            secret = _b64u_decode(text[len(_KEY_PREFIX) :])
        except ValueError:
            raise ValueError("sealing key is not valid base64url") from None
        if len(secret) != 32:
            raise ValueError(f"sealing key holds {len(secret)} bytes; 32 are required")
        return cls(secret)


class KeyRing:
    """Keys in order of preference: ``keys[0]`` seals, every key unseals.

    Rotation without downtime: add the new key second everywhere, then move it first, then
    remove the old one once every token it sealed has expired.
    """

    def __init__(self, keys: Iterable[SealingKey]) -> None:
        self.keys: tuple[SealingKey, ...] = tuple(keys)
        if not self.keys:
            raise ValueError("a key ring needs at least one key")
        self._aeads: dict[bytes, AESGCM] = {}
        for key in self.keys:
            if key.kid in self._aeads:
                raise ValueError("the key ring holds the same key twice")
            self._aeads[key.kid] = AESGCM(key.secret)
        self.sealing_kid = self.keys[0].kid

    @classmethod
    def generate(cls) -> KeyRing:
        """A ring of one new key, held only by this process (tokens die with it)."""
        return cls([SealingKey.generate()])

    @classmethod
    def from_text(cls, text: str, *, where: str = "key text") -> KeyRing:
        """Parse key-file text: one key per line, newest first; blank lines and ``#``
        comments are ignored."""
        keys = []
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                keys.append(SealingKey.from_text(line))
            except ValueError as exc:
                raise ValueError(f"{where}, line {number}: {exc}") from None
        if not keys:
            raise ValueError(
                f"{where} holds no sealing key (make one with 'mcp-sessions keys new')"
            )
        return cls(keys)

    def aead(self, kid: bytes) -> AESGCM | None:
        return self._aeads.get(kid)

    def seal_aead(self) -> AESGCM:
        return self._aeads[self.sealing_kid]


# --- tokens -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenHeader:
    """The clear, authenticated part of a token; readable without a key."""

    version: int
    kid: str
    seq: int
    expires_at: float


class UnsealedState(NamedTuple):
    """A verified token's content (a named tuple: built on every request, so kept cheap)."""

    state: dict[str, Any]
    seq: int
    expires_at: float
    kid: str
    audience: str
    principal: str
    session_id: str


def _b64u(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).translate(_TO_URL).rstrip(b"=").decode("ascii")


def _b64u_decode(text: str) -> bytes:
    """Strict unpadded base64url: one text per byte string, so no two tokens decode alike."""
    try:
        data = text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError("not base64url (non-ASCII character)") from None
    # '+', '/' and '=' would be accepted by the standard decoder after translation.
    if b"+" in data or b"/" in data or b"=" in data:
        raise ValueError("not base64url")
    rest = len(data) % 4
    if rest == 1:
        raise ValueError("impossible base64 length")
    if rest:
        # The unused low bits of the last character must be zero (RFC 4648 §3.5).
        last = _B64_ALPHABET.get(text[-1])
        if last is None or last & (0x0F if rest == 2 else 0x03):
            raise ValueError("non-canonical base64")
    try:
        return binascii.a2b_base64(data.translate(_TO_STD) + b"=" * (-rest % 4), strict_mode=True)
    except binascii.Error:
        raise ValueError("not base64url") from None


def _decode_raw(token: object) -> bytes:
    if not isinstance(token, str):
        raise InvalidState("malformed: a state token is a string")
    if not token.startswith(TOKEN_PREFIX):
        raise InvalidState(f"malformed: a state token starts with {TOKEN_PREFIX!r}")
    try:
        raw = _b64u_decode(token[len(TOKEN_PREFIX) :])
    except ValueError as exc:
        raise InvalidState(f"malformed: {exc}") from None
    if len(raw) < _MIN_RAW:
        raise InvalidState("malformed: too short")
    if raw[0] != _VERSION:
        raise InvalidState(f"malformed: unknown token version {raw[0]}")
    return raw


def read_token_header(token: object) -> TokenHeader:
    """Read ``seq`` and expiry without a key.

    They are authenticated only by :meth:`StateCodec.unseal`: this is for clients choosing the
    newest token, never for access decisions.
    """
    raw = _decode_raw(token)
    version, kid, seq, expires_at = _HEADER.unpack_from(raw)
    return TokenHeader(version=version, kid=kid.hex(), seq=seq, expires_at=float(expires_at))


class StateCodec:
    """Seal and unseal session state for one audience (the server's name).

    ``ttl`` is how long a token stays valid after it was issued; ``max_bytes`` caps the token
    (DESIGN §4: 4096, so it fits any header budget should a carrier ever need it).
    """

    def __init__(
        self,
        ring: KeyRing,
        *,
        audience: str,
        ttl: float = DEFAULT_TTL,
        max_bytes: int = MAX_STATE_BYTES,
    ) -> None:
        if not audience:
            raise ValueError("a state codec needs an audience (the server's name)")
        if not (ttl > 0 and math.isfinite(ttl)):
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        self.ring = ring
        self.audience = audience
        self._audience = audience.encode("utf-8")
        self.ttl = ttl
        self.max_bytes = max_bytes

    def seal(
        self,
        state: dict[str, Any],
        *,
        principal: str,
        session_id: str,
        seq: int,
        now: float | None = None,
    ) -> str:
        """A new token for ``state``. Raises :class:`OversizedState` over the cap, and
        ``TypeError``/``ValueError`` if ``state`` is not a JSON object."""
        if not isinstance(state, dict):
            raise TypeError(
                f"session state must be a JSON object (dict), got {type(state).__name__}"
            )
        if not 0 <= seq <= _MAX_SEQ:
            raise ValueError(f"seq out of range: {seq}")
        body = _ENCODER.encode(state).encode("ascii")
        principal_b = principal.encode("utf-8")
        session_b = session_id.encode("utf-8")
        plain_len = (
            _BINDING.size + len(self._audience) + len(principal_b) + len(session_b) + len(body)
        )
        raw_len = _HEADER.size + _NONCE_LEN + plain_len + _TAG_LEN
        token_len = len(TOKEN_PREFIX) + (raw_len * 4 + 2) // 3
        if token_len > self.max_bytes:
            raise OversizedState(
                f"The session state seals to {token_len} bytes, over the {self.max_bytes}-byte "
                "limit of a state token. Keep large state on the server (state mode 'server') "
                "and put only small values in the token."
            )
        expires_at = int((time.time() if now is None else now) + self.ttl)
        header = _HEADER.pack(_VERSION, self.ring.sealing_kid, seq, expires_at)
        plain = b"".join(
            (
                _BINDING.pack(len(self._audience), len(principal_b), len(session_b)),
                self._audience,
                principal_b,
                session_b,
                body,
            )
        )
        nonce = os.urandom(_NONCE_LEN)
        sealed = self.ring.seal_aead().encrypt(nonce, plain, header)
        return TOKEN_PREFIX + _b64u(header + nonce + sealed)

    def _open(self, token: object) -> tuple[int, int, bytes, bytes, bytes, bytes, bytes]:
        """Decrypt and authenticate; returns (seq, expires_at, kid, audience, principal,
        session id, state JSON) as raw parts."""
        raw = _decode_raw(token)
        _, kid, seq, expires_at = _HEADER.unpack_from(raw)
        aead = self.ring.aead(kid)
        if aead is None:
            raise InvalidState(f"unknown key: sealed with key id {kid.hex()}, not in the ring")
        start = _HEADER.size
        try:
            plain = aead.decrypt(
                raw[start : start + _NONCE_LEN], raw[start + _NONCE_LEN :], raw[:start]
            )
        except InvalidTag:
            raise InvalidState("tampered: authentication failed") from None
        la, lp, ls = _BINDING.unpack_from(plain)
        a = _BINDING.size
        p = a + la
        s = p + lp
        b = s + ls
        return seq, expires_at, kid, plain[a:p], plain[p:s], plain[s:b], plain[b:]

    @staticmethod
    def _state(body: bytes) -> dict[str, Any]:
        state = json.loads(body.decode("utf-8"))
        if not isinstance(state, dict):
            raise InvalidState("malformed: state is not a JSON object")
        return state

    def open_unverified(self, token: object) -> UnsealedState:
        """Decrypt and authenticate ``token`` without checking its binding or expiry.

        For diagnostics (``mcp-sessions token inspect``); servers use :meth:`unseal`.
        """
        try:
            seq, expires_at, kid, audience, principal, session_id, body = self._open(token)
            return UnsealedState(
                state=self._state(body),
                seq=seq,
                expires_at=float(expires_at),
                kid=kid.hex(),
                audience=audience.decode("utf-8"),
                principal=principal.decode("utf-8"),
                session_id=session_id.decode("utf-8"),
            )
        except InvalidState:
            raise
        except Exception as exc:  # defence in depth: malformed input never escapes otherwise
            raise InvalidState(f"malformed: {type(exc).__name__}") from None

    def unseal(
        self,
        token: object,
        *,
        principal: str,
        session_id: str,
        now: float | None = None,
    ) -> UnsealedState:
        """Verify ``token`` for this audience, ``principal`` and ``session_id``, unexpired.

        Raises :class:`InvalidState` (one wire answer; ``reason`` tells the logs which check).
        """
        try:
            seq, expires_at, kid, audience, bound_principal, bound_session, body = self._open(token)
            # Constant-time comparisons: a foreign token is not told apart by timing.
            if not hmac.compare_digest(audience, self._audience):
                raise InvalidState("audience: sealed for another server")
            if not hmac.compare_digest(bound_principal, principal.encode("utf-8")):
                raise InvalidState("principal: sealed for another principal")
            if not hmac.compare_digest(bound_session, session_id.encode("utf-8")):
                raise InvalidState("session: sealed for another session")
            if (time.time() if now is None else now) >= expires_at:
                raise InvalidState("expired")
            return UnsealedState(
                state=self._state(body),
                seq=seq,
                expires_at=float(expires_at),
                kid=kid.hex(),
                audience=self.audience,
                principal=principal,
                session_id=session_id,
            )
        except InvalidState:
            raise
        except Exception as exc:  # defence in depth: malformed input never escapes otherwise
            raise InvalidState(f"malformed: {type(exc).__name__}") from None


def newest_token(tokens: Sequence[str]) -> str | None:
    """The token with the highest ``seq`` among ``tokens`` (unreadable ones are skipped)."""
    best: tuple[int, str] | None = None
    for token in tokens:
        try:
            seq = read_token_header(token).seq
        except InvalidState:
            continue
        if best is None or seq > best[0]:
            best = (seq, token)
    return None if best is None else best[1]
