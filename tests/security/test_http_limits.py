"""Issue #12, items 4 and 5 (table rows 5–7), over the wire.

* Row 5: a body the JSON decoder refuses — 100,000-deep nesting included — is HTTP 400 with
  JSON-RPC -32700 on every path of the served app (legacy, legacy with a session id,
  2026-07-28); JSON that is not one message object is 400 / -32600. Never a 500.
* Row 6: a request head that does not arrive within the header timeout is answered 408 and
  closed (50 slow connections while a normal client is served; more slow connections than
  the demo has file descriptors, after which it answers again); an idle keep-alive
  connection is closed after the idle timeout.
* Row 7: 10,000 header fields, more fields than the limit, or more bytes than the limit get
  431 before the app runs.

Real ``mcp-sessions demo`` and ``gateway`` subprocesses, and real uvicorn servers (both HTTP
parsers) in a thread; raw sockets on 127.0.0.1; every read is bounded by a socket timeout.
"""

from __future__ import annotations

import importlib.util
import json
import select
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from tests.gateway.helpers import start_gateway, start_upstream, stop, upstream_args
from tests.server.helpers import (
    MCP_SESSIONS_CLI,
    ServerProcess,
    ThreadedServer,
    start_demo,
    start_process,
)

from mcp_sessions.core.bodies import (
    MAX_JSON_DEPTH,
    MalformedBody,
    NotAMessage,
    nesting_exceeds,
    parse_message,
)
from mcp_sessions.serving import HTTPLimits, uvicorn_config

#: The short timeouts the servers under test run with.
HEADER_TIMEOUT = 1.0
IDLE_TIMEOUT = 1.0
#: Bound on every socket read: far above the timeouts above, far below uvicorn's default
#: keep-alive and a test run's patience.
READ_BOUND = 4.0
SLOW_CLIENTS = 50

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "limits-test", "version": "1"},
    },
}


# -- raw HTTP ---------------------------------------------------------------------------------


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=READ_BOUND)
    sock.settimeout(READ_BOUND)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; fails if it keeps the connection open."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            pytest.fail(f"the server kept the connection open; received so far: {received!r}")
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def read_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length, leaving the connection as it is."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed before answering: {received!r}"
        received += chunk
    top, _, body = received.partition(b"\r\n\r\n")
    fields = dict(line.split(b":", 1) for line in top.split(b"\r\n")[1:])
    length = int({k.lower(): v for k, v in fields.items()}[b"content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed in the middle of a response"
        body += chunk
    return top + b"\r\n\r\n" + body


def head(method: str, host: str, extra: list[tuple[str, str]], length: int | None) -> bytes:
    lines = [f"{method} /mcp HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in extra]
    if length is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response[9:12])


def body_of(response: bytes) -> Any:
    return json.loads(response.partition(b"\r\n\r\n")[2])


def many_fields(count: int) -> list[tuple[str, str]]:
    return [(f"X-Field-{i}", "v") for i in range(count)]


# -- the demo ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_demo(
        tmp_path_factory.mktemp("limits-demo"),
        "--store",
        "memory://",
        "--header-timeout",
        str(HEADER_TIMEOUT),
        "--keep-alive-timeout",
        str(IDLE_TIMEOUT),
    )
    try:
        yield server
    finally:
        server.stop()


def host_of(server: ServerProcess) -> str:
    return f"127.0.0.1:{server.port}"


DEEP = b"[" * 100_000 + b"]" * 100_000
BAD_BODIES: dict[str, tuple[bytes, int]] = {
    "100,000-deep arrays": (DEEP, -32700),
    "deep objects in initialize params": (
        json.dumps(INITIALIZE).encode()[:-2] + b', "x": ' + b'{"a":' * 5000 + b"1" + b"}" * 5002,
        -32700,
    ),
    "deep nesting in tool arguments": (
        b'{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "count", '
        b'"arguments": {"x": ' + b"[" * 2000 + b"]" * 2000 + b"}}}",
        -32700,
    ),
    "truncated": (json.dumps(INITIALIZE).encode()[:40], -32700),
    "invalid UTF-8": (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "x": "\xff\xfe"}', -32700),
    "empty": (b"", -32700),
    "NaN": (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": NaN}}', -32700),
    "5,000-digit id": (b'{"jsonrpc": "2.0", "method": "ping", "id": ' + b"9" * 5000 + b"}", -32700),
    "batch": (b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]', -32600),
    "a number": (b"42", -32600),
    "a string": (b'"initialize"', -32600),
    "null": (b"null", -32600),
}
ROUTES: dict[str, list[tuple[str, str]]] = {
    "legacy": [],
    "legacy with a session id": [("Mcp-Session-Id", "0" * 32)],
    "modern": [("Mcp-Protocol-Version", "2026-07-28")],
}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", BAD_BODIES)
def test_malformed_bodies_are_400_with_a_json_rpc_error_on_every_path(
    demo: ServerProcess, route: str, case: str
) -> None:
    body, code = BAD_BODIES[case]
    response = httpx2.post(
        demo.url,
        content=body,
        headers={
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            **dict(ROUTES[route]),
        },
        timeout=READ_BOUND * 5,
    )
    assert response.status_code == 400, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    assert "Traceback" not in response.text
    reply = response.json()
    assert reply["jsonrpc"] == "2.0"
    assert reply["id"] is None
    assert reply["error"]["code"] == code, reply


@pytest.mark.parametrize("route", ROUTES)
def test_an_oversized_body_is_413_with_a_json_rpc_error(demo: ServerProcess, route: str) -> None:
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": "'
    body += b"x" * (4 * 1024 * 1024) + b'"}}'
    response = httpx2.post(
        demo.url,
        content=body,
        headers={"content-type": "application/json", **dict(ROUTES[route])},
        timeout=30,
    )
    assert response.status_code == 413
    reply = response.json()
    assert reply["error"]["code"] == -32600
    assert str(4 * 1024 * 1024) in reply["error"]["message"]


def test_the_demo_serves_normally_next_to_malformed_bodies(demo: ServerProcess) -> None:
    for _ in range(3):
        refused = httpx2.post(
            demo.url, content=DEEP, headers={"content-type": "application/json"}, timeout=30
        )
        assert refused.status_code == 400
        served = httpx2.post(
            demo.url,
            json=INITIALIZE,
            headers={"accept": "application/json, text/event-stream"},
            timeout=30,
        )
        assert served.status_code == 200, served.text
        assert served.headers.get("mcp-session-id")


def test_slow_request_heads_are_closed_after_the_header_timeout(demo: ServerProcess) -> None:
    slow: list[socket.socket] = []
    try:
        for _ in range(SLOW_CLIENTS):
            sock = connect(demo.port)
            sock.sendall(f"POST /mcp HTTP/1.1\r\nHost: {host_of(demo)}\r\nX-Slow: ".encode())
            slow.append(sock)
        silent = connect(demo.port)  # connects and sends nothing at all
        slow.append(silent)
        # Meanwhile a normal client is served.
        served = httpx2.post(
            demo.url,
            json=INITIALIZE,
            headers={"accept": "application/json, text/event-stream"},
            timeout=30,
        )
        assert served.status_code == 200, served.text
        for sock in slow[:-1]:
            answer = read_until_closed(sock)
            assert status_of(answer) == 408
            assert "did not arrive in time" in body_of(answer)["error"]["message"]
        assert read_until_closed(silent) == b""
    finally:
        for sock in slow:
            sock.close()


#: Runs the demo with a low file limit (RLIMIT_NOFILE), as a small deployment might have.
LOW_FILE_LIMIT = 128
_WITH_FILE_LIMIT = (
    "import os, resource, sys; "
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({LOW_FILE_LIMIT}, {LOW_FILE_LIMIT})); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def test_slow_clients_beyond_the_file_limit_do_not_stop_the_demo(tmp_path: Path) -> None:
    """Row 6: more slow connections than the process has file descriptors. Before, they held
    every descriptor for good and the demo stopped answering; now each is closed after the
    header timeout, and the demo answers again."""
    argv = [sys.executable, "-c", _WITH_FILE_LIMIT, str(MCP_SESSIONS_CLI), "demo"]
    argv += ["--store", "memory://", "--key-file", str(tmp_path / "keys.txt")]
    argv += ["--header-timeout", str(HEADER_TIMEOUT)]
    server = start_process(argv, tmp_path / "demo.log")
    slow: list[socket.socket] = []
    try:
        for _ in range(LOW_FILE_LIMIT + 30):
            sock = connect(server.port)
            sock.sendall(f"POST /mcp HTTP/1.1\r\nHost: {host_of(server)}\r\nX-Slow: ".encode())
            slow.append(sock)
        for sock in slow:
            assert status_of(read_until_closed(sock)) == 408
        served = httpx2.post(
            server.url,
            json=INITIALIZE,
            headers={"accept": "application/json, text/event-stream"},
            timeout=30,
        )
        assert served.status_code == 200, served.text
    finally:
        for sock in slow:
            sock.close()
        server.stop()


def test_the_header_timeout_bounds_the_whole_head_not_each_read(demo: ServerProcess) -> None:
    """One byte every 0.1 s keeps a per-read timer happy forever; the head deadline is not."""
    request = head("POST", host_of(demo), many_fields(5), 2) + b"{}"
    with connect(demo.port) as sock:
        closed_after = None
        for sent in range(len(request)):
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable:
                closed_after = sent
                break
            sock.sendall(request[sent : sent + 1])
        assert closed_after is not None, "the server read the whole slow head"
        assert closed_after < len(request)
        assert status_of(read_until_closed(sock)) == 408


def test_an_idle_keep_alive_connection_is_closed(demo: ServerProcess) -> None:
    with connect(demo.port) as sock:
        sock.sendall(head("GET", host_of(demo), [], None).replace(b"/mcp", b"/nowhere"))
        response = read_response(sock)
        assert status_of(response) == 404
        assert b"connection: close" not in response.lower()  # kept alive ...
        read_until_closed(sock)  # ... until idle for IDLE_TIMEOUT (< READ_BOUND)


@pytest.mark.parametrize(
    ("fields", "label"),
    [
        (many_fields(10_000), "10,000 fields"),
        (many_fields(150), "150 short fields (under the byte limit)"),
        ([("X-Big", "b" * 40_000)], "one 40 KB field"),
    ],
)
def test_oversized_request_heads_get_431(
    demo: ServerProcess, fields: list[tuple[str, str]], label: str
) -> None:
    body = json.dumps(INITIALIZE).encode()
    with connect(demo.port) as sock:
        sock.sendall(head("POST", host_of(demo), fields, len(body)) + body)
        answer = read_until_closed(sock)
    assert status_of(answer) == 431, label
    message = body_of(answer)["error"]["message"]
    assert "Request Header Fields Too Large" in message
    assert "limit" in message


def test_a_head_within_the_limits_is_served(demo: ServerProcess) -> None:
    body = json.dumps(INITIALIZE).encode()
    fields = [("Accept", "application/json, text/event-stream"), *many_fields(90)]
    with connect(demo.port) as sock:
        sock.sendall(head("POST", host_of(demo), [*fields, ("Connection", "close")], len(body)))
        sock.sendall(body)
        assert status_of(read_until_closed(sock)) == 200


# -- any app served with mcp_sessions.serving, on both HTTP parsers ---------------------------

IMPLEMENTATIONS = ["h11", "httptools"]
LIMITS = HTTPLimits(
    header_timeout=HEADER_TIMEOUT,
    keep_alive_timeout=IDLE_TIMEOUT,
    max_header_bytes=8192,
    max_headers=20,
)


class CountingApp:
    """A plain ASGI app that counts the requests it was given."""

    def __init__(self) -> None:
        self.calls = 0
        self.headers: list[tuple[bytes, bytes]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.calls += 1
        self.headers = list(scope["headers"])
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False) and message["type"] == "http.request"
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(params=IMPLEMENTATIONS)
def served(request: pytest.FixtureRequest) -> Iterator[tuple[ThreadedServer, CountingApp]]:
    if importlib.util.find_spec(request.param) is None:
        pytest.skip(f"{request.param} is not installed")
    app = CountingApp()
    config = uvicorn_config(
        app, host="127.0.0.1", port=0, limits=LIMITS, http=request.param, log_level="warning"
    )
    server = ThreadedServer(app, config).start()
    try:
        yield server, app
    finally:
        server.stop()


@pytest.mark.parametrize(
    "fields",
    [many_fields(20), many_fields(10_000), [("X-Big", "b" * 9000)]],
    ids=["one field over", "10,000 fields", "one field over the bytes"],
)
def test_the_limits_refuse_before_the_app_runs(
    served: tuple[ThreadedServer, CountingApp], fields: list[tuple[str, str]]
) -> None:
    server, app = served
    with connect(server.port) as sock:
        sock.sendall(head("GET", "127.0.0.1", fields, None))
        assert status_of(read_until_closed(sock)) == 431
    with connect(server.port) as sock:
        sock.sendall(head("GET", "127.0.0.1", many_fields(19), None))  # Host + 19: served
        assert status_of(read_response(sock)) == 200
    assert app.calls == 1


def test_field_values_lose_their_surrounding_whitespace_on_both_parsers(
    served: tuple[ThreadedServer, CountingApp],
) -> None:
    server, app = served
    with connect(server.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padded:  \t a b \t \r\n\r\n")
        assert status_of(read_response(sock)) == 200
    assert (b"x-padded", b"a b") in app.headers


def test_a_pipelined_head_over_the_limits_is_refused(
    served: tuple[ThreadedServer, CountingApp],
) -> None:
    server, app = served
    with connect(server.port) as sock:
        over = head("GET", "127.0.0.1", many_fields(20), None)
        sock.sendall(head("GET", "127.0.0.1", [], None) + over)
        answer = read_until_closed(sock)
    assert answer.count(b"HTTP/1.1 200 ") == 1
    assert b"HTTP/1.1 431 " in answer
    assert app.calls == 1


def test_slow_heads_and_idle_connections_are_closed(
    served: tuple[ThreadedServer, CountingApp],
) -> None:
    server, app = served
    with connect(server.port) as partial, connect(server.port) as silent:
        partial.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        with connect(server.port) as idle:
            idle.sendall(head("GET", "127.0.0.1", [], None))
            assert status_of(read_response(idle)) == 200
            assert status_of(read_until_closed(partial)) == 408
            assert read_until_closed(silent) == b""
            assert read_until_closed(idle) == b""
    assert app.calls == 1


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="header_timeout"):
        HTTPLimits(header_timeout=0)
    with pytest.raises(ValueError, match="max_headers"):
        HTTPLimits(max_headers=0)
    with pytest.raises(ValueError, match="HTTPLimits"):
        uvicorn_config(CountingApp(), timeout_keep_alive=3)


# -- the gateway uses the same protocol -------------------------------------------------------


def test_the_gateway_refuses_too_many_header_fields(tmp_path: Path) -> None:
    upstream = start_upstream(tmp_path, "limits")
    gateway = None
    try:
        gateway = start_gateway(tmp_path, "limits", *upstream_args(upstream))
        assert gateway.port is not None
        with connect(gateway.port) as sock:
            sock.sendall(head("POST", f"127.0.0.1:{gateway.port}", many_fields(150), 2) + b"{}")
            answer = read_until_closed(sock)
        assert status_of(answer) == 431
        assert "header fields" in body_of(answer)["error"]["message"]
    finally:
        for proc in (gateway, upstream):
            if proc is not None:
                stop(proc)


# -- the body guard itself (sans-IO) ----------------------------------------------------------


def test_nesting_is_measured_on_the_raw_bytes() -> None:
    limit = MAX_JSON_DEPTH
    assert not nesting_exceeds(b"[" * limit + b"]" * limit)
    assert nesting_exceeds(b"[" * (limit + 1) + b"]" * (limit + 1))
    assert nesting_exceeds(b'{"a":' * (limit + 1))  # unterminated: still measured
    # Brackets inside strings (escaped quotes included) are text, not nesting.
    text = json.dumps({"s": "[" * 5000 + '\\"[[' + "{" * 5000}).encode()
    assert not nesting_exceeds(text)
    assert parse_message(text)["s"].startswith("[[")
    wide = b"[" + b",".join([b"[]"] * 100_000) + b"]"  # many brackets, depth 2
    assert not nesting_exceeds(wide)


def test_parse_message_refusals_name_the_problem() -> None:
    with pytest.raises(MalformedBody, match="nested deeper than 100"):
        parse_message(b"[" * 101 + b"]" * 101)
    with pytest.raises(MalformedBody, match="line 1 column"):
        parse_message(b'{"a": }')
    with pytest.raises(MalformedBody, match="UTF-8"):
        parse_message(b'{"a": "\xc3"}')
    with pytest.raises(NotAMessage, match="batches"):
        parse_message(b"[]")
    assert MalformedBody().to_jsonrpc()["code"] == -32700
    assert NotAMessage().to_jsonrpc()["code"] == -32600
    assert parse_message(b' {"jsonrpc": "2.0", "id": 1, "method": "ping"} ')["id"] == 1
