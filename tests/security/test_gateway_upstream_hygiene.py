"""Issue #12, rows 13 and 15: what the gateway passes between an upstream and its clients.

A raw-socket upstream on 127.0.0.1 (a thread of this test process, speaking bytes, not a
library) sends each malformed response exactly as written below, and records which TCP
connection every request came on, the fields it carried, and which connections the gateway
closed. Through a real gateway process:

* broken response framing (RFC 9112 §6) is a 502 with a JSON-RPC error, and that upstream
  connection is closed, never reused (row 15);
* ``Transfer-Encoding`` with ``Content-Length``: the body is read by its chunks, the stale
  length is dropped, and the connection is closed after it (row 15);
* a body cut short by the upstream closing the connection is a 502 too (issue #17).

Issue #17's table of malformed upstream responses is ``RESPONSES``: negative, hex-prefixed,
signed, underscored and oversized chunk sizes, conflicting and signed ``Content-Length``
(``MALFORMED``: 502, connection closed), TE with CL (read by chunks, connection closed), and
truncated bodies (``TRUNCATED``: 502).
* a field the upstream names in ``Connection`` never reaches the client (row 13);
* a client's own ``X-Forwarded-*`` is replaced by the gateway's view, unless
  ``--trust-forwarded`` (row 13);
* client-visible errors never name the upstream's address (row 13).
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest
from tests.gateway.helpers import Proc, start_gateway, stop, wait_until

BODY = b'{"jsonrpc":"2.0","id":1,"result":{}}'
_JSON = b"content-type: application/json\r\n"


def _chunked(size_line: bytes) -> bytes:
    """A chunked 200 whose first chunk-size line is ``size_line`` (followed by 16 bytes)."""
    return (
        b"HTTP/1.1 200 OK\r\n" + _JSON + b"transfer-encoding: chunked\r\n\r\n"
        + size_line + b"\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n"
    )  # fmt: skip


RESPONSES: dict[str, bytes] = {
    "good": b"HTTP/1.1 200 OK\r\n" + _JSON
    + b"content-length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY,
    "good-chunked": b"HTTP/1.1 200 OK\r\n" + _JSON + b"transfer-encoding: chunked\r\n\r\n"
    + hex(len(BODY))[2:].encode() + b"\r\n" + BODY + b"\r\n0\r\n\r\n",
    # A negative size: a ValueError outside every handler before (a 500 and a traceback).
    "chunk-negative": _chunked(b"-3"),
    # Sizes Python's int() takes but RFC 9112 §7.1 (chunk-size = 1*HEXDIG) does not.
    "chunk-0x": _chunked(b"0x10"),
    "chunk-underscore": _chunked(b"1_0"),
    "chunk-plus": _chunked(b"+10"),
    # More than 64 bits of size (llhttp: "Chunk size overflow").
    "chunk-oversized": _chunked(b"1" + b"0" * 16),
    # Two different lengths (§6.3 item 5): the last one used to win.
    "two-lengths": b"HTTP/1.1 200 OK\r\n" + _JSON + b"content-length: 36\r\n"
    b"content-length: 20\r\n\r\n" + BODY,
    "length-sign": b"HTTP/1.1 200 OK\r\n" + _JSON + b"content-length: +36\r\n\r\n" + BODY,
    # Transfer-Encoding with Content-Length (§6.3 item 3): chunked wins, the connection goes.
    "te-and-length": b"HTTP/1.1 200 OK\r\n" + _JSON + b"content-length: 3\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
    + hex(len(BODY))[2:].encode() + b"\r\n" + BODY + b"\r\n0\r\n\r\n",
    # An event stream whose second chunk breaks the framing, after the status went out.
    "sse-then-negative": b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
    + hex(len(b"event: message\ndata: {}\n\n"))[2:].encode() + b"\r\n"
    + b"event: message\ndata: {}\n\n\r\n-3\r\nabc\r\n0\r\n\r\n",
    # Truncated bodies: the upstream closes the connection before the body is complete.
    "length-truncated": b"HTTP/1.1 200 OK\r\n" + _JSON + b"content-length: 100\r\n\r\n" + BODY,
    "chunked-truncated": b"HTTP/1.1 200 OK\r\n" + _JSON + b"transfer-encoding: chunked\r\n\r\n"
    + b"40\r\n" + BODY,
    # A field named in Connection is hop-by-hop (RFC 9110 §7.6.1).
    "connection-named": b"HTTP/1.1 200 OK\r\n" + _JSON + b"connection: X-Secret, keep-alive\r\n"
    b"x-secret: upstream-internal-token\r\nx-visible: yes\r\n"
    b"content-length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY,
}  # fmt: skip
MALFORMED = (
    "chunk-negative",
    "chunk-0x",
    "chunk-underscore",
    "chunk-plus",
    "chunk-oversized",
    "two-lengths",
    "length-sign",
)
#: Cases after which the raw upstream closes the connection (it died mid-response).
TRUNCATED = ("length-truncated", "chunked-truncated")
HEALTHY = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


@dataclass
class Post:
    connection: int
    case: str
    headers: dict[str, str]


@dataclass
class RawUpstream:
    """Answers ``GET`` (health checks) with 200 and each ``POST`` with ``RESPONSES[x-case]``."""

    server: socket.socket = field(init=False)
    posts: list[Post] = field(default_factory=list)
    closed: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        port: int = self.server.getsockname()[1]
        return port

    def last(self, case: str) -> Post:
        with self._lock:
            return next(p for p in reversed(self.posts) if p.case == case)

    def close(self) -> None:
        self.server.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn, next(self._ids)), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        conn.settimeout(20)
        buffer = b""
        with conn:
            try:
                while True:
                    while b"\r\n\r\n" not in buffer:
                        data = conn.recv(65536)
                        if not data:
                            with self._lock:
                                self.closed.add(number)
                            return
                        buffer += data
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")
                    fields = [line.partition(":") for line in lines[1:]]
                    headers = {name.strip().lower(): value.strip() for name, _, value in fields}
                    length = int(headers.get("content-length", "0"))
                    while len(buffer) < length:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buffer += data
                    buffer = buffer[length:]
                    if lines[0].startswith("GET"):
                        conn.sendall(HEALTHY)
                        continue
                    case = headers.get("x-case", "good")
                    with self._lock:
                        self.posts.append(Post(number, case, headers))
                    conn.sendall(RESPONSES[case])
                    if case in TRUNCATED:
                        return
            except OSError:
                return


@pytest.fixture(scope="module")
def raw() -> Iterator[RawUpstream]:
    upstream = RawUpstream()
    yield upstream
    upstream.close()


def _gateway(logs: Path, name: str, raw: RawUpstream, *options: str) -> Proc:
    url = f"http://127.0.0.1:{raw.port}/mcp"
    return start_gateway(logs, name, "--upstream", url, "--health-interval", "30", *options)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, raw: RawUpstream) -> Iterator[Proc]:
    proc = _gateway(tmp_path_factory.mktemp("gateway-hygiene"), "hygiene", raw)
    yield proc
    stop(proc)


def post(client: httpx2.Client, gateway: Proc, case: str, **headers: str) -> httpx2.Response:
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    return client.post(
        gateway.url,
        content=json.dumps(request),
        headers={"content-type": "application/json", "x-case": case, **headers},
    )


def test_a_well_formed_response_keeps_its_connection(raw: RawUpstream, gateway: Proc) -> None:
    """The control: what the cases below must not do (keep-alive reuse) does happen here."""
    with httpx2.Client(timeout=20) as client:
        first = post(client, gateway, "good-chunked")
        assert (first.status_code, first.content) == (200, BODY)
        second = post(client, gateway, "good")
        assert (second.status_code, second.content) == (200, BODY)
    assert raw.last("good").connection == raw.last("good-chunked").connection


@pytest.mark.parametrize("case", MALFORMED)
def test_broken_framing_is_a_502_and_the_connection_is_dropped(
    raw: RawUpstream, gateway: Proc, case: str
) -> None:
    with httpx2.Client(timeout=20) as client:
        reply = post(client, gateway, case)
        assert reply.status_code == 502, reply.text
        error = reply.json()["error"]
        assert error["code"] == -31010
        assert "breaks HTTP/1.1 framing" in error["message"]
        assert str(raw.port) not in reply.text and "127.0.0.1" not in reply.text
        broken = raw.last(case).connection
        wait_until(lambda: broken in raw.closed, timeout=10, what="the connection to close")
        # The upstream stays in service (a broken response is not a dead server), on a new
        # connection.
        after = post(client, gateway, "good")
        assert (after.status_code, after.content) == (200, BODY)
        assert raw.last("good").connection != broken


def test_broken_framing_mid_stream_ends_the_stream_with_an_error(
    raw: RawUpstream, gateway: Proc
) -> None:
    """The status went out with the first event: the stream ends with the error the request
    is owed, and the upstream connection goes."""
    with httpx2.Client(timeout=20) as client:
        reply = post(client, gateway, "sse-then-negative")
        assert reply.status_code == 200
        events = [
            json.loads(line[5:]) for line in reply.text.splitlines() if line.startswith("data:")
        ]
        assert events[0] == {}
        assert events[-1]["error"]["code"] == -31010
        assert "breaks HTTP/1.1 framing" in events[-1]["error"]["message"]
        assert str(raw.port) not in reply.text
        broken = raw.last("sse-then-negative").connection
        wait_until(lambda: broken in raw.closed, timeout=10, what="the connection to close")


def test_transfer_encoding_with_content_length_closes_the_connection(
    raw: RawUpstream, gateway: Proc
) -> None:
    with httpx2.Client(timeout=20) as client:
        reply = post(client, gateway, "te-and-length")
        assert (reply.status_code, reply.content) == (200, BODY)
        assert reply.headers.get("content-length") != "3"
        suspect = raw.last("te-and-length").connection
        wait_until(lambda: suspect in raw.closed, timeout=10, what="the connection to close")
        after = post(client, gateway, "good")
        assert after.status_code == 200
        assert raw.last("good").connection != suspect


def test_fields_named_in_connection_are_dropped(gateway: Proc) -> None:
    with httpx2.Client(timeout=20) as client:
        reply = post(client, gateway, "connection-named")
    assert (reply.status_code, reply.content) == (200, BODY)
    assert "x-secret" not in reply.headers
    assert reply.headers["x-visible"] == "yes"


SPOOFED = {
    "x-forwarded-for": "203.0.113.9",
    "x-forwarded-host": "evil.example",
    "x-forwarded-proto": "https",
    "forwarded": "for=203.0.113.9;host=evil.example",
}


def test_client_forwarding_fields_are_replaced(raw: RawUpstream, gateway: Proc) -> None:
    with httpx2.Client(timeout=20) as client:
        assert post(client, gateway, "good", **SPOOFED).status_code == 200
    seen = raw.last("good").headers
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-host"] == f"127.0.0.1:{gateway.port}"
    assert seen["x-forwarded-proto"] == "http"
    assert "forwarded" not in seen


def test_trust_forwarded_keeps_them(
    raw: RawUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    logs = tmp_path_factory.mktemp("gateway-trusting")
    trusting = _gateway(logs, "trusting", raw, "--trust-forwarded")
    try:
        with httpx2.Client(timeout=20) as client:
            assert post(client, trusting, "good", **SPOOFED).status_code == 200
        seen = raw.last("good").headers
        assert seen["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
        assert seen["x-forwarded-host"] == "evil.example"
        assert seen["x-forwarded-proto"] == "https"
    finally:
        stop(trusting)


def test_errors_do_not_name_the_upstream(tmp_path_factory: pytest.TempPathFactory) -> None:
    """An upstream that refuses connections: the client learns that, not where it is."""
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    logs = tmp_path_factory.mktemp("gateway-refused")
    gateway = start_gateway(
        logs, "refused", "--upstream", f"http://127.0.0.1:{port}/mcp", "--health-interval", "30"
    )
    try:
        with httpx2.Client(timeout=20) as client:
            sid = "4f1c2a9e-0000-4000-8000-00000000beef"
            reply = client.post(
                gateway.url,
                content=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
                headers={"content-type": "application/json", "mcp-client-session-id": sid},
            )
            again = client.post(
                gateway.url,
                content=json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
                headers={"content-type": "application/json", "mcp-client-session-id": sid},
            )
        for answer in (reply, again):
            assert answer.status_code in (404, 502, 503), answer.text
            assert str(port) not in answer.text and "127.0.0.1" not in answer.text
        assert str(port) in gateway.log_tail(200)  # the operator still learns where
    finally:
        stop(gateway)


@pytest.mark.parametrize("case", TRUNCATED)
def test_a_truncated_body_is_a_502(
    raw: RawUpstream, tmp_path_factory: pytest.TempPathFactory, case: str
) -> None:
    """The upstream dies mid-body (RFC 9112 §8: an incomplete message): the client gets a
    502 with the JSON-RPC error, not a 200 with half a body, and the gateway takes that
    upstream out of rotation (a connection that dies mid-request; see gateway/upstreams.py).
    Its own gateway: the module's one must keep its upstream in service."""
    proc = _gateway(tmp_path_factory.mktemp(f"gateway-{case}"), case, raw)
    try:
        with httpx2.Client(timeout=20) as client:
            reply = post(client, proc, case)
        assert reply.status_code == 502, reply.text
        error = reply.json()["error"]
        assert error["code"] == -31010
        assert "lost the connection" in error["message"]
        assert str(raw.port) not in reply.text and "127.0.0.1" not in reply.text
        assert "cut the response short" in proc.log_tail(200)  # the operator learns why
    finally:
        stop(proc)
