"""Pure pieces: the HTTP/1.1 response framing, configuration checks, the command line's refusals."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from mcp_sessions.gateway.app import Gateway
from mcp_sessions.gateway.config import GatewayConfig, SpawnSettings
from mcp_sessions.gateway.http1 import (
    Connection,
    HopDeadlines,
    MalformedResponse,
    RequestSent,
    ResponseHead,
    UpstreamError,
    parse_head,
)
from mcp_sessions.gateway.proxy import HTTPBackend
from mcp_sessions.gateway.upstreams import UpstreamAddress

from .helpers import CLI


def head(text: str, **options: bool) -> ResponseHead:
    return parse_head(text.replace("\n", "\r\n").encode() + b"\r\n", **options)


def test_response_framing_follows_rfc_9112() -> None:
    assert head("HTTP/1.1 200 OK\ncontent-length: 12\n").framing == "length"
    chunked = head("HTTP/1.1 200 OK\ntransfer-encoding: chunked\ncontent-length: 5\n")
    assert chunked.framing == "chunked"  # chunked wins over Content-Length (§6.3)
    to_close = head("HTTP/1.1 200 OK\ncontent-type: text/event-stream\n")
    assert (to_close.framing, to_close.keep_alive) == ("close", False)
    assert head("HTTP/1.1 204 No Content\n").framing == "none"
    assert head("HTTP/1.1 200 OK\ncontent-length: 12\n", head_request=True).framing == "none"
    assert head("HTTP/1.1 200 OK\nconnection: close\ncontent-length: 1\n").keep_alive is False
    assert head("HTTP/1.0 200 OK\ncontent-length: 1\n").keep_alive is False
    parsed = head("HTTP/1.1 404 Not Found\nMcp-Session-Id: abc\ncontent-length: 0\n")
    assert parsed.status == 404
    assert (b"mcp-session-id", b"abc") in parsed.headers
    for broken in (
        "SPDY 200 OK\n",
        "HTTP/1.1 abc OK\n",
        "HTTP/1.1 200 OK\n bad: fold\n",
        "HTTP/1.1 200 OK\ncontent-length: x\n",
    ):
        with pytest.raises(UpstreamError):
            head(broken)


def test_framing_is_strict() -> None:
    """RFC 9112 §6 leaves a recipient nothing to guess (issue #12, row 15)."""
    both = head("HTTP/1.1 200 OK\ncontent-length: 5\ntransfer-encoding: chunked\n")
    assert (both.framing, both.keep_alive) == ("chunked", False)
    assert all(name != b"content-length" for name, _ in both.headers)
    one = head("HTTP/1.1 200 OK\ncontent-length: 007\n")
    assert (one.framing, one.length, one.keep_alive) == ("length", 7, True)
    not_last = head("HTTP/1.1 200 OK\ntransfer-encoding: gzip\n")
    assert (not_last.framing, not_last.keep_alive) == ("close", False)
    named = head("HTTP/1.1 200 OK\nconnection: X-Secret, keep-alive\ncontent-length: 0\n")
    assert b"x-secret" in named.connection_fields
    for broken in (
        "HTTP/1.1 200 OK\ncontent-length: 5\ncontent-length: 6\n",
        "HTTP/1.1 200 OK\ncontent-length: 5, 6\n",
        # The same length twice: RFC 9112 §6.3 item 5 lets a recipient refuse it; llhttp does.
        "HTTP/1.1 200 OK\ncontent-length: 7\ncontent-length: 7, 007\n",
        "HTTP/1.1 200 OK\ncontent-length: 7\ncontent-length: 7\n",
        "HTTP/1.1 200 OK\ncontent-length: +5\n",
        "HTTP/1.1 200 OK\ncontent-length: 1_0\n",
        "HTTP/1.1 200 OK\ncontent-length: -1\n",
        "HTTP/1.1 200 OK\ntransfer-encoding: chunked, gzip\n",
        "HTTP/1.1 200 OK\ntransfer-encoding: chunked\ntransfer-encoding: chunked\n",
        "HTTP/1.0 200 OK\ntransfer-encoding: chunked\n",
        "HTTP/1.1 +20 OK\n",
        "HTTP/1.1 200 OK\nx-bad\x00: 1\n",
        "HTTP/1.1 200 OK\nx-bad: a\rb\n",
        "HTTP/1.1 200 OK\nbad name: 1\n",
    ):
        with pytest.raises(MalformedResponse):
            head(broken)


@pytest.mark.parametrize(
    "body",
    [b"-3\r\nabc\r\n0\r\n\r\n", b"0x3\r\nabc\r\n0\r\n\r\n", b"1_0\r\n", b"+3\r\nabc\r\n",
     b"3\r\nabcXY0\r\n\r\n", b" 3\r\nabc\r\n", b"\r\n",
     b"1" + b"0" * 16 + b"\r\n"],
)  # fmt: skip
def test_chunk_sizes_are_hex_digits_only(body: bytes) -> None:
    async def run() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(body)
        reader.feed_eof()
        connection = Connection(reader, None, HopDeadlines(read=5))  # type: ignore[arg-type]
        async for _chunk in connection.body(head("HTTP/1.1 200 OK\ntransfer-encoding: chunked\n")):
            pass

    with pytest.raises(MalformedResponse):
        asyncio.run(run())


def test_chunked_bodies_are_decoded_piece_by_piece() -> None:
    async def run() -> list[bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\ntrailer: x\r\n\r\n")
        reader.feed_eof()
        connection = Connection(reader, None, HopDeadlines(read=5))  # type: ignore[arg-type]
        framing = head("HTTP/1.1 200 OK\ntransfer-encoding: chunked\n")
        return [chunk async for chunk in connection.body(framing)]

    assert asyncio.run(run()) == [b"hello", b" world"]


def test_bytes_after_the_last_chunk_forbid_reuse() -> None:
    """Nothing may follow a response on a keep-alive connection (no pipelining on the hop):
    the body is passed on, but the connection is not given back to the pool."""

    async def run(tail: bytes) -> tuple[list[bytes], bool]:
        reader = asyncio.StreamReader()
        reader.feed_data(b"3\r\nabc\r\n0\r\n\r\n" + tail)
        reader.feed_eof()
        connection = Connection(reader, None, HopDeadlines(read=5))  # type: ignore[arg-type]
        framing = head("HTTP/1.1 200 OK\ntransfer-encoding: chunked\n")
        chunks = [chunk async for chunk in connection.body(framing)]
        return chunks, framing.keep_alive

    assert asyncio.run(run(b"")) == ([b"abc"], True)
    assert asyncio.run(run(b"GARBAGE")) == ([b"abc"], False)
    assert asyncio.run(run(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx")) == ([b"abc"], False)


def test_a_cut_response_is_an_error() -> None:
    async def run() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"abc")
        reader.feed_eof()
        connection = Connection(reader, None, HopDeadlines(read=5))  # type: ignore[arg-type]
        framing = head("HTTP/1.1 200 OK\ncontent-length: 10\n")
        async for _chunk in connection.body(framing):
            pass

    # The request reached the upstream: never replayed.
    with pytest.raises(RequestSent, match="cut the response short"):
        asyncio.run(run())


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="either --upstream"):
        GatewayConfig()
    with pytest.raises(ValueError, match="either --upstream"):
        GatewayConfig(upstreams=("http://a:1/mcp",), spawn=SpawnSettings(command=("x",)))
    with pytest.raises(ValueError, match="own endpoint"):
        GatewayConfig(upstreams=("http://a:1/mcp",), path="/metrics")
    with pytest.raises(ValueError, match="exceed"):
        SpawnSettings(command=("x",), warm=3, warm_legacy=1, max_processes=3)
    with pytest.raises(ValueError, match="not JSON"):
        SpawnSettings(command=("x",), warmup=("{nope",))
    with pytest.raises(ValueError, match="'method'"):
        SpawnSettings(command=("x",), warmup=('{"params": {}}',))
    settings = SpawnSettings(
        command=("x",), warmup=('{"method": "m", "params": {"id": "{random}"}}',)
    )
    first, second = settings.warmup_requests()[0], settings.warmup_requests()[0]
    assert first["params"]["id"] != second["params"]["id"]  # fresh per process
    with pytest.raises(ValueError, match="only http://"):
        UpstreamAddress.parse("https://a/mcp")
    assert UpstreamAddress.parse("http://[::1]:8000/mcp").netloc == "[::1]:8000"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "either --upstream"),
        (["--upstream", "ftp://x/mcp"], "only http://"),
        (["--upstream", "http://a:1/mcp", "--spawn", "x"], "not both"),
        (["--spawn", "x", "--warm", "40"], "exceed"),
        (["--emit-config", "nginx"], "needs the --upstream"),
        (["--spawn", "x", "--jwks", "http://10.0.0.1/jwks.json"], "plain http only"),
        (["--spawn", "x", "--jwks", "ftp://idp/jwks.json"], "https:// URL"),
        (["--spawn", "x", "--jwks", "/nonexistent/jwks.json"], "No such file"),
        (["--spawn", "x", "--jwt-audience", "a"], "need --jwks or --jwt-secret-file"),
        (["--spawn", "x", "--max-processes-per-principal", "0"], "x>=1"),
    ],
)
def test_the_command_refuses_clearly(arguments: list[str], message: str) -> None:
    result = subprocess.run(
        [CLI, "gateway", *arguments], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert message in result.stderr


def test_the_command_needs_httptools_for_upstreams() -> None:
    """Without the ``gateway`` extra's httptools, ``--upstream`` refuses to start and says how
    to get it (a ``None`` in ``sys.modules`` makes it unimportable, as if not installed)."""
    without = (
        "import sys; sys.modules['httptools'] = None; from mcp_sessions.cli import main; "
        "sys.argv = ['mcp-sessions', 'gateway', '--upstream', 'http://127.0.0.1:9/mcp']; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", without], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "needs httptools" in result.stderr
    assert "pip install 'mcp-sessions[gateway]'" in result.stderr


@pytest.mark.anyio
async def test_expired_pins_are_swept() -> None:
    gateway = Gateway(
        GatewayConfig(upstreams=("http://127.0.0.1:9/mcp",), session_idle=0.05),
        sweep_interval=0.05,
    )
    await gateway.startup()
    try:
        backend = gateway.backend
        assert isinstance(backend, HTTPBackend)
        await backend.pins.place("a" * 32, "anonymous", "http://127.0.0.1:9/mcp", "test")
        await asyncio.sleep(0.3)
        assert await gateway.store.sweep() == 0  # the gateway's own sweeper got there first
        assert await backend.pins.get("a" * 32, "anonymous", fresh=True) is None
    finally:
        await gateway.shutdown()
