"""What the gateway's WebSocket relay sends upstream in its handshake (issue #16): the client's
end-to-end fields, never its handshake fields or its own ``X-Forwarded-*`` claims."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_sessions.gateway.app import Gateway
from mcp_sessions.gateway.asgi import Incoming
from mcp_sessions.gateway.config import GatewayConfig
from mcp_sessions.gateway.proxy import HTTPBackend
from mcp_sessions.gateway.websocket import WebSocketProxy, _Relay

HEAD = [
    (b"host", b"gateway.test:8080"),
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"sec-websocket-version", b"13"),
    (b"sec-websocket-protocol", b"mcp"),
    (b"sec-websocket-extensions", b"permessage-deflate"),
    (b"authorization", b"Bearer t"),
    (b"origin", b"http://gateway.test:8080"),
    (b"x-forwarded-for", b"6.6.6.6"),
    (b"x-real-ip", b"6.6.6.6"),
    (b"forwarded", b"for=6.6.6.6"),
]


def relay(trust_forwarded: bool) -> _Relay:
    config = GatewayConfig(upstreams=("http://127.0.0.1:9/mcp",), trust_forwarded=trust_forwarded)
    backend = Gateway(config).backend
    assert isinstance(backend, HTTPBackend)
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/mcp",
        "scheme": "wss",
        "headers": HEAD,
        "client": ("10.0.0.7", 5555),
    }

    async def receive() -> dict[str, Any]:
        raise AssertionError("not read")

    async def send(message: Any) -> None:
        raise AssertionError("not sent")

    request = Incoming.from_scope(scope, receive)
    return _Relay(WebSocketProxy(backend), request, "anonymous", receive, send)


def test_the_upstream_handshake_carries_end_to_end_fields_and_the_gateway_s_view() -> None:
    fields = dict(relay(trust_forwarded=False)._forwarded_headers())
    assert fields == {
        "authorization": "Bearer t",
        "origin": "http://gateway.test:8080",
        "x-forwarded-for": "10.0.0.7",
        "x-forwarded-proto": "https",
        "x-forwarded-host": "gateway.test:8080",
    }


def test_trusted_forwarded_fields_are_kept() -> None:
    fields = relay(trust_forwarded=True)._forwarded_headers()
    assert ("x-forwarded-for", "6.6.6.6, 10.0.0.7") in fields  # appended to
    assert ("forwarded", "for=6.6.6.6") in fields
    assert not any(name.startswith("sec-websocket") or name == "host" for name, _ in fields)


@pytest.mark.parametrize("trust", [False, True])
def test_no_handshake_field_goes_upstream(trust: bool) -> None:
    names = {name for name, _ in relay(trust_forwarded=trust)._forwarded_headers()}
    assert not names & {"host", "upgrade", "connection", "sec-websocket-key"}
