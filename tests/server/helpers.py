"""Helpers for the server tests: real servers (subprocess, in-thread uvicorn, stdio), the
official SDK client on every transport, and raw HTTP for exact wire checks.

Everything binds to 127.0.0.1; every wait is a bounded poll; every process is stopped by its
own PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, Request, RequestParams, Result
from pydantic import ConfigDict
from tests.fixtures.redis_server import free_port

from mcp_sessions.core.names import (
    HEADER_CLIENT_SESSION_ID,
    META_PROTOCOL_VERSION,
    META_SESSION_ID,
    PROTOCOL_2025_11_25,
    PROTOCOL_2026_07_28,
)

REPO = Path(__file__).resolve().parents[2]
APP_SCRIPT = Path(__file__).with_name("_app.py")
MCP_SESSIONS_CLI = Path(sys.executable).with_name("mcp-sessions")

Transport = Literal["inproc", "stdio", "http"]
Version = Literal["legacy", "modern"]
VERSIONS: tuple[Version, ...] = ("legacy", "modern")
PROTOCOL = {"legacy": PROTOCOL_2025_11_25, "modern": PROTOCOL_2026_07_28}
#: ``auto`` probes ``server/discover`` (so the client sees the server's capabilities); the
#: clients below check that it did settle on 2026-07-28.
MODE = {"legacy": "legacy", "modern": "auto"}

STARTUP_TIMEOUT = 20.0
#: Bound on every request a test client makes (a hung server fails the test, never the run).
TIMEOUT = 30.0


def new_id() -> str:
    """A fresh client-proposed session id (a lowercase UUIDv4, as DESIGN §3 suggests)."""
    return str(uuid.uuid4())


def sid(session_id: str, **extra: Any) -> dict[str, Any]:
    """Request ``_meta`` naming ``session_id`` with our key."""
    return {META_SESSION_ID: session_id, **extra}


def value(result: CallToolResult) -> Any:
    """A tool's return value, from its structured content."""
    assert not result.is_error, f"tool failed: {result.content}"
    content = result.structured_content
    assert content is not None, f"no structured content: {result.content}"
    if set(content) == {"result"}:
        return content["result"]
    return content


def error_text(result: CallToolResult) -> str:
    """The text of a tool execution error."""
    assert result.is_error, f"expected a tool error, got {result.structured_content}"
    return " ".join(getattr(block, "text", "") for block in result.content)


# -- custom methods (DESIGN §3) ---------------------------------------------------------------


class _Params(RequestParams):
    model_config = ConfigDict(extra="allow")


class _SessionCreate(Request[_Params, Literal["session/create"]]):
    method: Literal["session/create"] = "session/create"
    params: _Params


class _SessionDestroy(Request[_Params, Literal["session/destroy"]]):
    method: Literal["session/destroy"] = "session/destroy"
    params: _Params


class AnyResult(Result):
    model_config = ConfigDict(extra="allow")

    def body(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


async def session_create(
    client: Client, meta: Mapping[str, Any] | None = None, **params: Any
) -> dict[str, Any]:
    """``session/create`` through the SDK client; returns the result as sent (camelCase)."""
    request = _SessionCreate(params=_Params(**params, _meta=dict(meta) if meta else None))
    result = await client.session.send_request(request, AnyResult)
    return result.body()


async def session_destroy(
    client: Client, meta: Mapping[str, Any] | None = None, **params: Any
) -> dict[str, Any]:
    request = _SessionDestroy(params=_Params(**params, _meta=dict(meta) if meta else None))
    result = await client.session.send_request(request, AnyResult)
    return result.body()


async def expect_error(awaitable: Any) -> MCPError:
    """Await and return the :class:`MCPError` it raised (fails if it raised none)."""
    try:
        outcome = await awaitable
    except MCPError as error:
        return error
    raise AssertionError(f"expected an MCPError, got {outcome!r}")


# -- raw HTTP ---------------------------------------------------------------------------------

ACCEPT = "application/json, text/event-stream"


@dataclass
class Reply:
    status: int
    headers: httpx2.Headers
    body: Any
    text: str

    @property
    def error(self) -> dict[str, Any]:
        assert isinstance(self.body, dict) and "error" in self.body, self.text
        error: dict[str, Any] = self.body["error"]
        return error

    @property
    def result(self) -> dict[str, Any]:
        assert isinstance(self.body, dict) and "result" in self.body, self.text
        result: dict[str, Any] = self.body["result"]
        return result


def _parse(response: httpx2.Response) -> Reply:
    text = response.text
    body: Any = None
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        # The response to our request is the last `data:` event carrying a JSON-RPC id.
        for line in text.splitlines():
            if line.startswith("data:"):
                data = line[5:].strip()
                if data:
                    message = json.loads(data)
                    if isinstance(message, dict) and ("result" in message or "error" in message):
                        body = message
    elif text:
        with contextlib.suppress(ValueError):
            body = json.loads(text)
    return Reply(response.status_code, response.headers, body, text)


def modern_request(
    method: str,
    params: Mapping[str, Any] | None = None,
    *,
    meta: Mapping[str, Any] | None = None,
    request_id: int = 1,
) -> tuple[dict[str, Any], dict[str, str]]:
    """A 2026-07-28 JSON-RPC request body and the headers the SDK client would send with it."""
    envelope = {
        META_PROTOCOL_VERSION: PROTOCOL_2026_07_28,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw-test", "version": "0"},
    }
    body_params = {**(params or {}), "_meta": {**envelope, **(meta or {})}}
    headers = {
        "accept": ACCEPT,
        "content-type": "application/json",
        "mcp-protocol-version": PROTOCOL_2026_07_28,
        "mcp-method": method,
    }
    name = {"tools/call": "name", "resources/read": "uri", "prompts/get": "name"}.get(method)
    if name is not None and params is not None and name in params:
        headers["mcp-name"] = str(params[name])
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": body_params}
    return body, headers


class RawHttp:
    """JSON-RPC over plain HTTP POSTs, for exact statuses, headers and bodies."""

    def __init__(self, http: httpx2.AsyncClient, url: str) -> None:
        self.http = http
        self.url = url

    async def post(self, body: Any, headers: Mapping[str, str]) -> Reply:
        response = await self.http.post(self.url, content=json.dumps(body), headers=dict(headers))
        return _parse(response)

    async def modern(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        meta: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        request_id: int = 1,
    ) -> Reply:
        body, base = modern_request(method, params, meta=meta, request_id=request_id)
        return await self.post(body, {**base, **(headers or {})})

    async def post_initialize(
        self,
        headers: Mapping[str, str] | None = None,
        *,
        capabilities: Mapping[str, Any] | None = None,
        client_info: Mapping[str, str] | None = None,
    ) -> Reply:
        """A 2025-11-25 ``initialize`` request, its reply as it comes (see :meth:`initialize`)."""
        return await self.post(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": PROTOCOL_2025_11_25,
                    "capabilities": dict(capabilities or {}),
                    "clientInfo": dict(client_info or {"name": "raw-test", "version": "0"}),
                },
            },
            {"accept": ACCEPT, "content-type": "application/json", **(headers or {})},
        )

    async def initialize(self, headers: Mapping[str, str] | None = None) -> str:
        """A 2025-11-25 handshake; returns the ``Mcp-Session-Id`` the server minted."""
        reply = await self.post_initialize(headers)
        assert reply.status == 200, reply.text
        session_id = reply.headers.get("mcp-session-id")
        assert session_id, f"no Mcp-Session-Id on the initialize response: {reply.headers}"
        initialized = await self.http.post(
            self.url,
            json={"jsonrpc": "2.0", "method": "notifications/initialized"},
            headers={
                "accept": ACCEPT,
                "mcp-session-id": session_id,
                "mcp-protocol-version": PROTOCOL_2025_11_25,
                **(headers or {}),
            },
        )
        assert initialized.status_code == 202, initialized.text
        return session_id

    async def legacy(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        session_id: str | None,
        headers: Mapping[str, str] | None = None,
        request_id: int = 1,
    ) -> Reply:
        base = {
            "accept": ACCEPT,
            "content-type": "application/json",
            "mcp-protocol-version": PROTOCOL_2025_11_25,
        }
        if session_id is not None:
            base["mcp-session-id"] = session_id
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": dict(params or {})}
        return await self.post(body, {**base, **(headers or {})})

    async def delete(self, session_id: str, headers: Mapping[str, str] | None = None) -> int:
        response = await self.http.delete(
            self.url,
            headers={
                "mcp-session-id": session_id,
                "mcp-protocol-version": PROTOCOL_2025_11_25,
                **(headers or {}),
            },
        )
        return response.status_code


def tool_value(reply: Reply) -> Any:
    """The structured value of a raw ``tools/call`` reply."""
    assert reply.status == 200, reply.text
    result = reply.result
    assert not result.get("isError"), result
    content = result["structuredContent"]
    return content["result"] if set(content) == {"result"} else content


# -- servers ----------------------------------------------------------------------------------


@dataclass
class ServerProcess:
    """A server in a subprocess, stopped by its own PID."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def _listening(port: int) -> bool:
    try:
        response = httpx2.get(f"http://127.0.0.1:{port}/mcp", timeout=1.0)
    except httpx2.HTTPError:
        return False
    return response.status_code < 500


def start_process(argv: Sequence[str], log: Path) -> ServerProcess:
    """Run ``argv + ["--port", N]`` on a free port and wait (bounded) until it answers."""
    last = "did not start"
    for _attempt in range(3):  # another process may take the free port first
        port = free_port()
        with log.open("ab") as sink:
            process = subprocess.Popen(
                [*argv, "--port", str(port)],
                stdout=sink,
                stderr=sink,
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
        server = ServerProcess(process, port, log)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            if _listening(port):
                return server
            time.sleep(0.05)
        server.stop()
        last = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"server {argv} did not start:\n{last}")


def start_demo(directory: Path, *args: str, name: str = "demo") -> ServerProcess:
    """``mcp-sessions demo ARGS --key-file DIRECTORY/keys.txt --port <free>``; servers
    started in one directory share their sealing keys, as replicas must."""
    from mcp_sessions.core.sealing import SealingKey

    key_file = directory / "keys.txt"
    if not key_file.exists():
        key_file.write_text(SealingKey.generate().to_text() + "\n", encoding="utf-8")
        key_file.chmod(0o600)
    argv = [str(MCP_SESSIONS_CLI), "demo", *args, "--key-file", str(key_file)]
    return start_process(argv, directory / f"{name}.log")


class ThreadedServer:
    """An ASGI app on uvicorn in a thread of the test process, on a port the OS picks."""

    def __init__(self, app: Any, config: uvicorn.Config | None = None) -> None:
        """``config`` (host 127.0.0.1, port 0) replaces the default one when given."""
        if config is None:
            config = uvicorn.Config(
                app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", ws="none"
            )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> ThreadedServer:
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        socket = self._server.servers[0].sockets[0]
        self.port = int(socket.getsockname()[1])
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout=5)


# -- clients ----------------------------------------------------------------------------------


@dataclass
class Target:
    """Where a test's client connects: an in-process server, a stdio command, or a URL."""

    transport: Transport
    server: Any = None  # the MCPServer for inproc
    stdio: StdioServerParameters | None = None
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def client(
        self, version: Version, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[Client]:
        """An SDK client at ``version``; ``headers`` go on every HTTP request."""
        mode: Any = MODE[version]
        async with contextlib.AsyncExitStack() as stack:
            if self.transport == "inproc":
                client = Client(self.server, mode=mode, read_timeout_seconds=TIMEOUT)
            elif self.transport == "stdio":
                assert self.stdio is not None
                client = Client(self.stdio, mode=mode, read_timeout_seconds=TIMEOUT)
            else:
                assert self.url is not None
                all_headers = {**self.headers, **(headers or {})}
                http = await stack.enter_async_context(
                    httpx2.AsyncClient(headers=all_headers, timeout=30)
                )
                client = Client(
                    streamable_http_client(self.url, http_client=http),
                    mode=mode,
                    read_timeout_seconds=TIMEOUT,
                )
            await stack.enter_async_context(client)
            assert client.protocol_version == PROTOCOL[version], client.protocol_version
            yield client


def stdio_params(*args: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=[str(APP_SCRIPT), "--stdio", *args],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=str(REPO),
    )


def mirror(session_id: str) -> dict[str, str]:
    """The HTTP mirror header for ``session_id``."""
    return {HEADER_CLIENT_SESSION_ID: session_id}


# -- a clock the test can move ----------------------------------------------------------------


class ShiftedClock:
    """``time.time`` plus an offset the test advances: expiry without sleeping.

    Installed process-wide (the engine, the stores, sealing and the in-thread servers all
    read ``time.time``), so every part agrees on what time it is.
    """

    def __init__(self, monkeypatch: Any) -> None:
        self.offset = 0.0
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + self.offset)

    def advance(self, seconds: float) -> None:
        self.offset += seconds


#: ``pytestmark`` entry that runs every test of a module on both integrations (issue #14).
BOTH_FRAMEWORKS = pytest.mark.parametrize("framework", ["mcp", "fastmcp"], indirect=True)
