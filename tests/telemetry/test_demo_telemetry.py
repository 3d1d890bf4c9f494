"""``mcp-sessions demo`` with OpenTelemetry (issue #13): ``--metrics`` serves the session
metrics as Prometheus text at ``/metrics``; the standard ``OTEL_*`` variables choose the
exporters (a console exporter here), and a setting it cannot honour stops it with the reason."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from tests.fixtures.redis_server import free_port
from tests.gateway import helpers as gateway_helpers
from tests.server.helpers import MCP_SESSIONS_CLI, RawHttp, start_demo, tool_value

from mcp_sessions.core.names import META_SESSION_ID

pytestmark = pytest.mark.anyio


def meta(session_id: str) -> dict[str, Any]:
    return {META_SESSION_ID: session_id}


async def exercise(url: str) -> None:
    """One session created, used once and destroyed; another used twice and left."""
    async with httpx2.AsyncClient(timeout=30) as http:
        raw = RawHttp(http, url)
        created = await raw.modern("session/create", {})
        session_id = created.result["sessionId"]
        assert tool_value(await raw.modern("tools/call", {"name": "count"}, meta=meta(session_id)))
        assert (await raw.modern("session/destroy", {"sessionId": session_id})).status == 200
        other = "a1b2c3d4-0000-4000-8000-00000000beef"
        for _ in range(2):
            assert tool_value(await raw.modern("tools/call", {"name": "count"}, meta=meta(other)))


def spans_in(text: str) -> list[dict[str, Any]]:
    """The spans a console exporter printed (one indented JSON object each)."""
    decoder = json.JSONDecoder()
    found = []
    index = text.find("{\n")
    while index != -1:
        try:
            value, end = decoder.raw_decode(text, index)
        except ValueError:
            end = index + 1
        else:
            if isinstance(value, dict) and "context" in value and "name" in value:
                found.append(value)
        index = text.find("{\n", end)
    return found


@pytest.mark.parametrize("also_exporter", [False, True])
async def test_demo_metrics_endpoint_shows_the_session_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, also_exporter: bool
) -> None:
    """``--metrics``; and with ``OTEL_METRICS_EXPORTER=prometheus`` as well, the one reader
    serves both places (each series once, not twice)."""
    port = free_port()
    if also_exporter:
        monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus")
        monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
        monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", str(port))
    server = start_demo(tmp_path, "--metrics", "--store", "memory://")
    try:
        await exercise(server.url)
        async with httpx2.AsyncClient(timeout=30) as http:
            response = await http.get(server.url.replace("/mcp", "/metrics"))
            if also_exporter:
                scraped = await http.get(f"http://127.0.0.1:{port}/metrics")
                assert "mcp_sessions_sessions_created_total{" in scraped.text
    finally:
        server.stop()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()

    def sample(prefix: str) -> float:
        values = [float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix)]
        assert values, f"no {prefix} in /metrics:\n{response.text[:3000]}"
        return sum(values)

    assert sample("mcp_sessions_sessions_created_total{") == 2
    assert sample("mcp_sessions_sessions_destroyed_total{") == 1
    assert sample("mcp_server_session_duration_seconds_count{") == 1
    assert sample("mcp_sessions_sessions_degenerate_ratio") == 1.0  # the one that ended
    assert sample("mcp_server_operation_duration_seconds_count{") >= 4
    assert sample("mcp_sessions_store_operation_duration_seconds_count{") >= 1


async def test_demo_without_metrics_flag_serves_no_metrics(tmp_path: Path) -> None:
    server = start_demo(tmp_path, "--store", "memory://")
    try:
        async with httpx2.AsyncClient(timeout=30) as http:
            response = await http.get(server.url.replace("/mcp", "/metrics"))
    finally:
        server.stop()
    assert response.status_code == 404


async def test_demo_console_exporter_prints_the_request_spans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "demo-under-test")
    # Batches leave every 30 s: the spans below are those flushed when SIGTERM stops it.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "30000")
    server = start_demo(tmp_path, "--store", "memory://")
    try:
        await exercise(server.url)
    finally:
        server.stop()
    text = server.log.read_text(errors="replace")
    assert "OpenTelemetry: traces:console" in text
    calls = [span for span in spans_in(text) if span["name"] == "tools/call count"]
    assert len(calls) == 3, text[-3000:]
    assert server.process.returncode == 128 + 15  # SIGTERM's status, after the flush
    attributes = calls[-1]["attributes"]
    assert attributes["gen_ai.conversation.id"] == "a1b2c3d4-0000-4000-8000-00000000beef"
    assert attributes["mcp_sessions.carrier"] == "meta"
    assert calls[-1]["resource"]["attributes"]["service.name"] == "demo-under-test"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("OTEL_TRACES_EXPORTER", "zipkin", "OTEL_TRACES_EXPORTER='zipkin' is not supported"),
        ("OTEL_METRICS_EXPORTER", "carrier-pigeon", "use console, otlp, prometheus or none"),
    ],
)
def test_an_unknown_exporter_stops_the_demo_with_the_reason(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    result = subprocess.run(
        [str(MCP_SESSIONS_CLI), "demo", "--store", "memory://", "--port", "9"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, variable: value},
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


async def test_one_trace_across_gateway_and_demo_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both commands with ``OTEL_TRACES_EXPORTER=console``: the gateway's hop span is a child
    of the caller's ``traceparent``, the demo's request span a child of the hop."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    trace_id, caller = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    upstream = gateway_helpers.start_demo(tmp_path, "traced")
    try:
        front = gateway_helpers.start_gateway(tmp_path, "traced", "--upstream", upstream.url)
        try:
            async with httpx2.AsyncClient(timeout=30) as http:
                reply = await RawHttp(http, front.url).modern(
                    "tools/call",
                    {"name": "count"},
                    meta={
                        **meta("c0ffee00-0000-4000-8000-000000000001"),
                        "traceparent": (f"00-{trace_id}-{caller}-01"),
                    },
                )
                assert tool_value(reply)
        finally:
            gateway_helpers.stop(front)
    finally:
        gateway_helpers.stop(upstream)
    (hop,) = [
        span
        for span in spans_in(front.log.read_text(errors="replace"))
        if span["kind"] == "SpanKind.CLIENT"
    ]
    (served,) = [
        span
        for span in spans_in(upstream.log.read_text(errors="replace"))
        if span["name"] == "tools/call count"
    ]
    assert hop["context"]["trace_id"] == served["context"]["trace_id"] == f"0x{trace_id}"
    assert hop["parent_id"] == f"0x{caller}"
    assert served["parent_id"] == hop["context"]["span_id"]
    assert hop["attributes"]["mcp_sessions.gateway.upstream"] == upstream.url
    assert hop["resource"]["attributes"]["service.name"] == "mcp-sessions-gateway"


async def test_stdio_demo_keeps_console_telemetry_off_its_protocol_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over stdio, stdout is the MCP stream: console exporters write to stderr instead."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "console")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "50")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "1")
    params = StdioServerParameters(
        command=str(MCP_SESSIONS_CLI),
        args=["demo", "--stdio", "--store", "memory://", "--key-file", str(tmp_path / "k.txt")],
        env=dict(os.environ),
        cwd=str(tmp_path),
    )
    errors = (tmp_path / "stderr.txt").open("w+")
    async with Client(stdio_client(params, errlog=errors), read_timeout_seconds=30) as client:
        for expected in (1, 2, 3):
            result = await client.call_tool("count", {})
            assert result.structured_content == {"result": expected}
            await anyio.sleep(0.2)  # batches leave meanwhile (1 ms schedule delay)
    errors.seek(0)
    logged = errors.read()
    assert any(span["name"] == "tools/call count" for span in spans_in(logged)), logged[-2000:]
