"""Issue #12, item 6 in HTTP mode: with ``--jwt-secret-file`` the HTTP gateway binds pins to
verified principals and refuses what does not verify (401 before anything reaches an
upstream), just as ``--spawn`` does; a verified user's refreshed token keeps the session's
pin."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx2
import jwt
import pytest
from tests.gateway.helpers import (
    Proc,
    call,
    new_id,
    start_gateway,
    start_upstream,
    stop,
    upstream_args,
)

ISSUER = "https://idp.test"
SECRET = b"k" * 40


def token(subject: str, key: bytes = SECRET, **extra: Any) -> str:
    claims = {"iss": ISSUER, "sub": subject, "exp": int(time.time()) + 600, **extra}
    return jwt.encode(claims, key, algorithm="HS256")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, list[Proc]]]:
    logs = tmp_path_factory.mktemp("gateway-http-trust")
    secret = logs / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    upstreams = [start_upstream(logs, name) for name in ("a", "b")]
    gateway = start_gateway(
        logs, "http-trust", *upstream_args(*upstreams), "--jwt-secret-file", str(secret)
    )
    yield gateway, upstreams
    stop(gateway)
    for upstream in upstreams:
        stop(upstream)


def test_unverifiable_tokens_are_refused_before_any_upstream(
    cluster: tuple[Proc, list[Proc]],
) -> None:
    gateway, _ = cluster
    sid = new_id()
    with httpx2.Client(timeout=30) as client:
        good = {"authorization": f"Bearer {token('alice', jti='1')}"}
        refreshed = {"authorization": f"Bearer {token('alice', jti='2')}"}
        assert call(client, gateway.url, "count", sid=sid, headers=good).value == 1
        assert call(client, gateway.url, "count", sid=sid, headers=refreshed).value == 2
        for headers in (
            {"authorization": f"Bearer {token('alice', key=b'x' * 40)}"},
            {"authorization": "Bearer not-a-jwt"},
            {"authorization": "Basic YWxpY2U6cGFzc3dvcmQ="},
            {},
        ):
            reply = call(client, gateway.url, "count", sid=sid, headers=headers)
            assert reply.status == 401, reply.text
            assert reply.error["code"] == -31013
            assert reply.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        # Nothing of the refused requests reached the session's upstream.
        assert call(client, gateway.url, "count", sid=sid, headers=good).value == 3
