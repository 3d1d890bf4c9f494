"""Real processes on 127.0.0.1 for the gateway tests, and raw Streamable HTTP calls.

Every process is started here and stopped by its own PID; every wait is a bounded poll.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from tests.fixtures.redis_server import free_port

from mcp_sessions.core.names import META_PROTOCOL_VERSION, META_SESSION_ID, PROTOCOL_2026_07_28

UPSTREAM_SCRIPT = Path(__file__).with_name("_upstream.py")
CLI = str(Path(sys.executable).with_name("mcp-sessions"))
STARTUP_TIMEOUT = 40.0
ACCEPT = "application/json, text/event-stream"


def new_id() -> str:
    return str(uuid.uuid4())


# -- processes --------------------------------------------------------------------------------


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    port: int | None
    log: Path
    name: str

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def running(self) -> bool:
        return self.popen.poll() is None


def _answers(url: str) -> bool:
    try:
        httpx2.get(url, timeout=1.0)
    except httpx2.HTTPError:
        return False
    return True


def start(
    argv: Sequence[str],
    *,
    port: int | None,
    log_dir: Path,
    name: str,
    ready: Callable[[], bool] | None = None,
) -> Proc:
    """Start ``argv`` and wait (bounded) until ``ready()`` (default: the port answers HTTP)."""
    log = log_dir / f"{name}.log"
    handle = log.open("wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    popen = subprocess.Popen(
        list(argv), stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
    )
    handle.close()
    proc = Proc(popen, port, log, name)
    check = ready or (lambda: _answers(f"http://127.0.0.1:{port}/"))
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"{name} exited with {popen.returncode}:\n{proc.log_tail()}")
        if check():
            return proc
        time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"{name} did not start within {STARTUP_TIMEOUT} s:\n{proc.log_tail()}")


def stop(proc: Proc, sig: int = signal.SIGTERM) -> None:
    """Stop by PID: ``sig``, then SIGKILL after 10 s."""
    if proc.popen.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.popen.wait(timeout=10)


def kill(proc: Proc) -> None:
    """SIGKILL by PID and reap (an upstream dying without a goodbye)."""
    if proc.popen.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.popen.wait(timeout=10)


def start_upstream(log_dir: Path, name: str) -> Proc:
    port = free_port()
    argv = [sys.executable, str(UPSTREAM_SCRIPT), "--name", name, "--port", str(port)]
    return start(argv, port=port, log_dir=log_dir, name=f"upstream-{name}")


def start_demo(log_dir: Path, name: str, store: str = "memory://") -> Proc:
    port = free_port()
    argv = [
        CLI,
        "demo",
        "--port",
        str(port),
        "--store",
        store,
        "--key-file",
        str(log_dir / f"{name}-keys.txt"),
    ]
    return start(argv, port=port, log_dir=log_dir, name=f"demo-{name}")


def start_gateway(log_dir: Path, name: str, *options: str) -> Proc:
    port = free_port()
    argv = [CLI, "gateway", "--port", str(port), *options]

    def healthy() -> bool:
        try:
            return httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200
        except httpx2.HTTPError:
            return False

    return start(argv, port=port, log_dir=log_dir, name=f"gateway-{name}", ready=healthy)


def upstream_args(*upstreams: Proc) -> list[str]:
    return [arg for u in upstreams for arg in ("--upstream", u.url)]


def fast_health() -> list[str]:
    return [
        "--health-interval",
        "0.2",
        "--health-timeout",
        "0.5",
        "--health-fall",
        "1",
        "--health-rise",
        "1",
    ]


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


def metrics(gateway: Proc) -> dict[str, float]:
    """The gateway's Prometheus samples, ``name{labels}`` → value."""
    text = httpx2.get(f"{gateway.base}/metrics", timeout=5).text
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


# -- raw Streamable HTTP ------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: httpx2.Headers
    body: Any
    text: str
    events: list[dict[str, Any]]

    @property
    def result(self) -> Any:
        assert isinstance(self.body, dict) and "result" in self.body, (self.status, self.text)
        return self.body["result"]

    @property
    def value(self) -> Any:
        """A tool's return value (structured content)."""
        result = self.result
        assert not result.get("isError"), self.text
        content = result["structuredContent"]
        return content["result"] if set(content) == {"result"} else content

    @property
    def error(self) -> dict[str, Any]:
        assert isinstance(self.body, dict) and "error" in self.body, (self.status, self.text)
        error: dict[str, Any] = self.body["error"]
        return error


def sse_messages(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.startswith("data:") and line[5:].strip():
            yield json.loads(line[5:].strip())


def parse(response: httpx2.Response) -> Reply:
    text = response.text
    body: Any = None
    events: list[dict[str, Any]] = []
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        events = list(sse_messages(iter(text.splitlines())))
        finals = [m for m in events if "result" in m or "error" in m]
        body = finals[-1] if finals else None
    elif text:
        try:
            body = json.loads(text)
        except ValueError:
            body = None
    return Reply(response.status_code, response.headers, body, text, events)


def modern(
    method: str,
    params: Mapping[str, Any] | None = None,
    *,
    sid: str | None = None,
    header: bool = True,
    request_id: int = 1,
    meta: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """A 2026-07-28 request body and headers; ``sid`` goes in ``_meta`` (and the header)."""
    envelope: dict[str, Any] = {
        META_PROTOCOL_VERSION: PROTOCOL_2026_07_28,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "gateway-test", "version": "0"},
        **(meta or {}),
    }
    headers = {
        "accept": ACCEPT,
        "content-type": "application/json",
        "mcp-protocol-version": PROTOCOL_2026_07_28,
        "mcp-method": method,
    }
    if sid is not None:
        envelope[META_SESSION_ID] = sid
        if header:
            headers["mcp-client-session-id"] = sid
    if method == "tools/call" and params:
        headers["mcp-name"] = str(params["name"])
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": method,
        "params": {**(params or {}), "_meta": envelope},
    }
    return body, headers


def call(
    client: httpx2.Client,
    url: str,
    tool: str,
    arguments: Mapping[str, Any] | None = None,
    *,
    sid: str | None = None,
    header: bool = True,
    headers: Mapping[str, str] | None = None,
    request_id: int = 1,
) -> Reply:
    body, base = modern(
        "tools/call",
        {"name": tool, "arguments": dict(arguments or {})},
        sid=sid,
        header=header,
        request_id=request_id,
    )
    response = client.post(url, json=body, headers={**base, **(headers or {})})
    return parse(response)


async def acall(
    client: httpx2.AsyncClient, url: str, tool: str, *, sid: str, request_id: int = 1
) -> Reply:
    body, headers = modern(
        "tools/call", {"name": tool, "arguments": {}}, sid=sid, request_id=request_id
    )
    return parse(await client.post(url, json=body, headers=headers))


LEGACY_HEADERS = {"accept": ACCEPT, "content-type": "application/json"}


def legacy_initialize(client: httpx2.Client, url: str) -> str:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "gateway-test", "version": "0"},
        },
    }
    reply = parse(client.post(url, json=body, headers=LEGACY_HEADERS))
    assert reply.status == 200, reply.text
    session_id = reply.headers.get("mcp-session-id")
    assert session_id, f"no Mcp-Session-Id on the initialize response: {reply.headers}"
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    note = client.post(url, json=initialized, headers=legacy_headers(session_id))
    assert note.status_code == 202, note.text
    return session_id


def legacy_headers(session_id: str) -> dict[str, str]:
    return {**LEGACY_HEADERS, "mcp-session-id": session_id, "mcp-protocol-version": "2025-11-25"}


def legacy_call(
    client: httpx2.Client,
    url: str,
    session_id: str,
    tool: str,
    arguments: Mapping[str, Any] | None = None,
    request_id: int = 2,
) -> Reply:
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": tool, "arguments": dict(arguments or {})},
    }
    return parse(client.post(url, json=body, headers=legacy_headers(session_id)))
