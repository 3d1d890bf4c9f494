"""Issue #12, rows 8 and 9: the spawn gateway trusts nothing it cannot verify.

Each stdio child keeps a counter per session in its own memory (``count``) and names its pid
(``whoami``), so whose process a request reached is visible over the wire.

* Row 8: a JWT claiming another user's ``sub`` under a bad signature was routed into that
  user's process. Now, without verification configured, a principal is a digest of the whole
  credential (a forged token is another caller); with ``--jwt-secret-file`` or ``--jwks``
  (a file, or a URL on loopback), an unverifiable token is refused with 401, and a verified
  user keeps their process across a token refresh.
* Row 9: one caller with many new session ids took the whole process pool. Now
  ``--max-processes-per-principal`` answers that caller 429 / -31005 with ``Retry-After``
  while others are still served.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import shlex
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.gateway.helpers import (
    UPSTREAM_SCRIPT,
    Proc,
    Reply,
    call,
    legacy_call,
    legacy_initialize,
    new_id,
    start_gateway,
    stop,
)

CHILD = shlex.join([sys.executable, str(UPSTREAM_SCRIPT), "--stdio", "--name", "child"])
ISSUER = "https://idp.test"
SECRET = b"s" * 48
WRONG_SECRET = b"w" * 48
SMALL_POOL = ("--warm", "1", "--warm-legacy", "0")


def claims(subject: str, **extra: Any) -> dict[str, Any]:
    return {"iss": ISSUER, "sub": subject, "exp": int(time.time()) + 600, **extra}


def hs256(payload: dict[str, Any], key: bytes, header: dict[str, Any] | None = None) -> str:
    """A JWT signed by hand (PyJWT refuses to HMAC with a public key, the attack below)."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", **(header or {})}).encode())
    body = b64(json.dumps(payload).encode())
    signature = b64(hmac.new(key, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + signature).decode()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def count(gateway: Proc, token: str | None, sid: str) -> Reply:
    with httpx2.Client(timeout=30) as client:
        return call(client, gateway.url, "count", sid=sid, headers=bearer(token) if token else {})


def pid(gateway: Proc, token: str, sid: str) -> int:
    with httpx2.Client(timeout=30) as client:
        value: int = call(client, gateway.url, "whoami", sid=sid, headers=bearer(token)).value[
            "pid"
        ]
        return value


def assert_refused(reply: Reply) -> None:
    assert reply.status == 401, reply.text
    assert reply.error["code"] == -31013
    assert reply.headers["www-authenticate"].startswith("Bearer")


# -- no verification configured: a digest of the whole credential ------------------------------


@pytest.fixture(scope="module")
def open_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    logs = tmp_path_factory.mktemp("spawn-trust-open")
    gateway = start_gateway(logs, "trust-open", "--spawn", CHILD, *SMALL_POOL)
    yield gateway
    stop(gateway)


def test_a_forged_token_never_reaches_another_callers_process(open_gateway: Proc) -> None:
    alice = jwt.encode(claims("alice"), SECRET, algorithm="HS256")
    forged = jwt.encode(claims("alice"), WRONG_SECRET, algorithm="HS256")
    unsigned = jwt.encode(claims("alice"), None, algorithm="none")
    sid = new_id()
    assert count(open_gateway, alice, sid).value == 1
    assert count(open_gateway, alice, sid).value == 2
    for impostor in (forged, unsigned):
        # Same sub, same session id: a process of its own, not Alice's.
        assert count(open_gateway, impostor, sid).value == 1
        assert pid(open_gateway, impostor, sid) != pid(open_gateway, alice, sid)
    # DELETE under the forged token ends the impostor's own process only.
    with httpx2.Client(timeout=30) as client:
        gone = client.delete(
            open_gateway.url, headers={**bearer(forged), "mcp-client-session-id": sid}
        )
    assert gone.status_code == 204
    assert count(open_gateway, alice, sid).value == 3


def test_a_forged_token_cannot_follow_a_legacy_session(open_gateway: Proc) -> None:
    alice = jwt.encode(claims("alice"), SECRET, algorithm="HS256")
    forged = jwt.encode(claims("alice"), WRONG_SECRET, algorithm="HS256")
    with httpx2.Client(timeout=30, headers=bearer(alice)) as client:
        session_id = legacy_initialize(client, open_gateway.url)
        assert legacy_call(client, open_gateway.url, session_id, "count").value == 1
    with httpx2.Client(timeout=30, headers=bearer(forged)) as client:
        stolen = legacy_call(client, open_gateway.url, session_id, "count")
    assert stolen.status == 404, stolen.text
    assert stolen.error["code"] == -31001
    with httpx2.Client(timeout=30, headers=bearer(alice)) as client:
        assert legacy_call(client, open_gateway.url, session_id, "count").value == 2


# -- verification configured --------------------------------------------------------------------


@pytest.fixture(scope="module")
def secret_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    logs = tmp_path_factory.mktemp("spawn-trust-secret")
    secret_file = logs / "jwt-secret"
    secret_file.write_bytes(SECRET + b"\n")
    secret_file.chmod(0o600)
    gateway = start_gateway(
        logs,
        "trust-secret",
        "--spawn",
        CHILD,
        *SMALL_POOL,
        "--jwt-secret-file",
        str(secret_file),
        "--jwt-issuer",
        ISSUER,
        "--max-processes-per-principal",
        "1",
    )
    yield gateway
    stop(gateway)


def test_a_shared_secret_verifies_and_refuses(secret_gateway: Proc) -> None:
    sid = new_id()
    first = jwt.encode(claims("alice", jti="1"), SECRET, algorithm="HS256")
    refreshed = jwt.encode(claims("alice", jti="2"), SECRET, algorithm="HS256")
    assert count(secret_gateway, first, sid).value == 1
    # A refreshed token of the same verified user reaches the same process.
    assert count(secret_gateway, refreshed, sid).value == 2
    for bad in (
        jwt.encode(claims("alice"), WRONG_SECRET, algorithm="HS256"),  # bad signature
        jwt.encode(claims("alice"), None, algorithm="none"),  # unsigned
        jwt.encode(claims("alice", exp=int(time.time()) - 3600), SECRET, algorithm="HS256"),
        jwt.encode(claims("alice", iss="https://other.test"), SECRET, algorithm="HS256"),
        jwt.encode({"iss": ISSUER, "sub": "alice"}, SECRET, algorithm="HS256"),  # no exp
        "not-a-jwt",
    ):
        assert_refused(count(secret_gateway, bad, sid))
    assert_refused(count(secret_gateway, None, sid))  # no credential at all
    assert count(secret_gateway, first, sid).value == 3  # Alice's process untouched


def test_the_command_refuses_a_short_secret(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_bytes(b"too-short")
    with pytest.raises(RuntimeError, match="at least 32"):
        start_gateway(tmp_path, "short-secret", "--spawn", CHILD, "--jwt-secret-file", str(short))


def _rsa_pem() -> tuple[Any, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public_pem


def _jwks(key: Any) -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]}


def _check_jwks_gateway(gateway: Proc, key: Any, public_pem: bytes) -> None:
    other, _ = _rsa_pem()
    sid = new_id()
    good = jwt.encode(claims("alice"), key, algorithm="RS256", headers={"kid": "k1"})
    assert count(gateway, good, sid).value == 1
    for bad in (
        # Another key under the same kid: a bad signature.
        jwt.encode(claims("alice"), other, algorithm="RS256", headers={"kid": "k1"}),
        # The public key used as an HMAC secret ("alg confusion").
        hs256(claims("alice"), public_pem, {"kid": "k1"}),
        # A kid the set does not have.
        jwt.encode(claims("alice"), other, algorithm="RS256", headers={"kid": "k2"}),
    ):
        assert_refused(count(gateway, bad, sid))
    assert count(gateway, good, sid).value == 2


def test_a_jwks_file_verifies_and_refuses(tmp_path_factory: pytest.TempPathFactory) -> None:
    logs = tmp_path_factory.mktemp("spawn-trust-jwks")
    key, public_pem = _rsa_pem()
    jwks_file = logs / "jwks.json"
    jwks_file.write_text(json.dumps(_jwks(key)))
    gateway = start_gateway(
        logs, "trust-jwks", "--spawn", CHILD, *SMALL_POOL, "--jwks", str(jwks_file)
    )
    try:
        _check_jwks_gateway(gateway, key, public_pem)
    finally:
        stop(gateway)


def test_a_jwks_url_on_loopback_verifies_and_refuses(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    logs = tmp_path_factory.mktemp("spawn-trust-jwks-url")
    key, public_pem = _rsa_pem()
    document = json.dumps(_jwks(key)).encode()

    fetches: list[str] = []

    class Keys(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetches.append(self.path)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Keys)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    try:
        gateway = start_gateway(
            logs, "trust-jwks-url", "--spawn", CHILD, *SMALL_POOL, "--jwks", url
        )
        try:
            _check_jwks_gateway(gateway, key, public_pem)
            # Made-up kids do not become one fetch each (at most one per 30 s).
            other, _ = _rsa_pem()
            for n in range(5):
                made_up = jwt.encode(
                    claims("alice"), other, algorithm="RS256", headers={"kid": f"made-up-{n}"}
                )
                assert_refused(count(gateway, made_up, new_id()))
            assert len(fetches) <= 2, fetches
        finally:
            stop(gateway)
    finally:
        server.shutdown()
        server.server_close()


# -- row 9: one caller cannot take the pool ------------------------------------------------------


def count_from(gateway: Proc, address: str, token: str | None, sid: str) -> Reply:
    """``count`` sent from ``address`` (a loopback address of its own: another caller)."""
    transport = httpx2.HTTPTransport(local_address=address)
    with httpx2.Client(timeout=30, transport=transport) as client:
        return call(client, gateway.url, "count", sid=sid, headers=bearer(token) if token else {})


def test_one_caller_cannot_take_the_pool(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Without verification a credential proves nothing (one is free to mint per session),
    so the cap counts the caller's address; a greedy caller rotating tokens is still one."""
    logs = tmp_path_factory.mktemp("spawn-per-principal")
    gateway = start_gateway(
        logs,
        "per-principal",
        "--spawn",
        CHILD,
        *SMALL_POOL,
        "--max-processes",
        "5",
        "--max-processes-per-principal",
        "2",
        "--idle-timeout",
        "600",
    )
    greedy = "127.0.0.2"
    try:
        sids = [new_id() for _ in range(8)]
        with ThreadPoolExecutor(len(sids)) as pool:
            replies = list(
                pool.map(lambda sid: count_from(gateway, greedy, f"token-{sid}", sid), sids)
            )
        served = [r for r in replies if r.status == 200]
        refused = [r for r in replies if r.status != 200]
        assert len(served) == 2, [r.text for r in replies]
        for reply in refused:
            assert reply.status == 429, reply.text
            assert reply.error["code"] == -31005
            assert "--max-processes-per-principal 2" in reply.error["message"]
            assert int(reply.headers["retry-after"]) >= 1
        # Everyone else is still served, with sessions of their own.
        for address, other in (("127.0.0.3", "token-of-carol"), ("127.0.0.4", None)):
            assert count_from(gateway, address, other, new_id()).value == 1
        # The greedy caller's own sessions still work; ending one makes room for a new one.
        kept = [sid for sid, r in zip(sids, replies, strict=True) if r.status == 200]
        assert count_from(gateway, greedy, f"token-{kept[0]}", kept[0]).value == 2
        transport = httpx2.HTTPTransport(local_address=greedy)
        with httpx2.Client(timeout=30, transport=transport) as client:
            ended = client.delete(
                gateway.url,
                headers={**bearer(f"token-{kept[0]}"), "mcp-client-session-id": kept[0]},
            )
        assert ended.status_code == 204
        fresh = new_id()
        assert count_from(gateway, greedy, f"token-{fresh}", fresh).value == 1
    finally:
        stop(gateway)


def test_verified_callers_are_counted_by_principal(secret_gateway: Proc) -> None:
    """With verification, the cap (here 1) counts the verified principal: two users behind
    one address are two callers, and one user's second session is over the cap."""
    bob = jwt.encode(claims("bob"), SECRET, algorithm="HS256")
    carol = jwt.encode(claims("carol"), SECRET, algorithm="HS256")
    assert count(secret_gateway, bob, new_id()).value == 1
    assert count(secret_gateway, carol, new_id()).value == 1
    over = count(secret_gateway, bob, new_id())
    assert over.status == 429, over.text
    assert over.error["code"] == -31005
