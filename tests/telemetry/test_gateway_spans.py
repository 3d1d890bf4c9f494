"""The gateway's hop spans (issue #13): one client span per upstream hop with the routing
decision, a child of the caller's trace, and the upstream's request span joins the same trace
under it (the hop's context goes on in ``_meta`` and the ``traceparent`` header)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx2
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from tests.server._app import build_app
from tests.server.helpers import RawHttp, ThreadedServer, new_id, sid, tool_value

from mcp_sessions.core import otel_names as n
from mcp_sessions.gateway.app import Gateway
from mcp_sessions.gateway.asgi import Incoming
from mcp_sessions.gateway.config import GatewayConfig
from mcp_sessions.gateway.tracing import HopTracer

from .conftest import Metrics, finished, server_spans

pytestmark = pytest.mark.anyio

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN_ID = "b7ad6b7169203331"


@pytest.fixture
def gateway(metered: Metrics) -> Iterator[ThreadedServer]:
    mcp, sessions = build_app(telemetry=metered.telemetry)
    upstream = ThreadedServer(sessions.streamable_http_app(mcp)).start()
    front = ThreadedServer(Gateway(GatewayConfig(upstreams=(upstream.url,)))).start()
    yield front
    front.stop()
    upstream.stop()


def hops(spans: InMemorySpanExporter, count: int = 1) -> list[ReadableSpan]:
    return finished(
        spans,
        lambda span: span.kind is SpanKind.CLIENT and n.GATEWAY_UPSTREAM in (span.attributes or {}),
        count,
    )


def hex_trace(span: ReadableSpan) -> str:
    return format(span.context.trace_id, "032x")


async def test_traceparent_in_meta_joins_through_the_gateway(
    spans: InMemorySpanExporter, gateway: ThreadedServer
) -> None:
    session_id = new_id()
    traceparent = f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"
    async with httpx2.AsyncClient(timeout=30) as http:
        raw = RawHttp(http, gateway.url)
        meta = sid(session_id, traceparent=traceparent, baggage="k=v")
        for _ in range(2):
            assert tool_value(await raw.modern("tools/call", {"name": "count"}, meta=meta))
    first_hop, second_hop = hops(spans, 2)
    first_server, second_server = server_spans(spans, "tools/call count", 2)
    for hop, upstream_span in ((first_hop, first_server), (second_hop, second_server)):
        # The hop is a child of the caller's span ...
        assert hex_trace(hop) == TRACE_ID
        assert hop.parent is not None and format(hop.parent.span_id, "016x") == CALLER_SPAN_ID
        assert hop.name == "tools/call count"
        # ... and the upstream's request span a child of the hop, in the same trace.
        assert hex_trace(upstream_span) == TRACE_ID
        assert upstream_span.parent is not None
        assert upstream_span.parent.span_id == hop.context.span_id
        # The upstream still saw the client's session (and its baggage) in _meta.
        assert (upstream_span.attributes or {})[n.GEN_AI_CONVERSATION_ID] == session_id
    attributes = dict(first_hop.attributes or {})
    assert attributes[n.GATEWAY_DECISION] == "meta"
    assert attributes[n.MCP_METHOD_NAME] == "tools/call"
    assert attributes[n.GEN_AI_TOOL_NAME] == "count"
    # A new client-id session is pinned by this request; the next one follows the pin.
    assert attributes[n.GATEWAY_PLACEMENT] == "placed"
    assert (second_hop.attributes or {})[n.GATEWAY_PLACEMENT] == "pinned"


async def test_traceparent_header_joins_through_the_gateway(
    spans: InMemorySpanExporter, gateway: ThreadedServer
) -> None:
    """A caller that sends the W3C header only: the upstream still joins (the gateway puts
    its hop's context into ``_meta``, where an MCP server reads it)."""
    async with httpx2.AsyncClient(timeout=30) as http:
        raw = RawHttp(http, gateway.url)
        reply = await raw.modern(
            "tools/call",
            {"name": "count"},
            meta=sid(new_id()),
            headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"},
        )
        assert tool_value(reply)
    (hop,) = hops(spans)
    (upstream_span,) = server_spans(spans, "tools/call count")
    assert hex_trace(hop) == TRACE_ID == hex_trace(upstream_span)
    assert upstream_span.parent is not None
    assert upstream_span.parent.span_id == hop.context.span_id


async def test_a_request_without_trace_context_starts_one_trace(
    spans: InMemorySpanExporter, gateway: ThreadedServer
) -> None:
    async with httpx2.AsyncClient(timeout=30) as http:
        reply = await RawHttp(http, gateway.url).modern("tools/list", {})
        assert reply.status == 200
    (hop,) = hops(spans)
    (upstream_span,) = server_spans(spans, "tools/list")
    assert hop.parent is None
    assert upstream_span.context.trace_id == hop.context.trace_id
    assert (hop.attributes or {})[n.GATEWAY_PLACEMENT] == "least_loaded"


@pytest.mark.parametrize(
    "traceparent", [123, "garbage", ["00"], "00-" + "0" * 32 + "-" + "0" * 16 + "-01"]
)
async def test_a_broken_traceparent_is_ignored(
    spans: InMemorySpanExporter, gateway: ThreadedServer, traceparent: object
) -> None:
    """Whatever a caller puts in ``_meta.traceparent``, the request is served and the hop
    starts a trace of its own (an all-zero id is invalid by W3C Trace Context)."""
    async with httpx2.AsyncClient(timeout=30) as http:
        reply = await RawHttp(http, gateway.url).modern(
            "tools/call", {"name": "count"}, meta=sid(new_id(), traceparent=traceparent)
        )
        assert tool_value(reply)["count"] == 1
    (hop,) = hops(spans)
    assert hop.parent is None
    (upstream_span,) = server_spans(spans, "tools/call count")
    assert upstream_span.context.trace_id == hop.context.trace_id


def incoming(body: bytes) -> Incoming:
    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    request = Incoming.from_scope({"method": "POST", "path": "/mcp", "headers": []}, receive)
    request.body = body
    return request


def test_the_hop_context_goes_into_meta_and_headers(spans: InMemorySpanExporter) -> None:
    request = incoming(
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x",'
        b'"_meta":{"baggage":"k=v","traceparent":"00-'
        + TRACE_ID.encode()
        + b"-"
        + CALLER_SPAN_ID.encode()
        + b'-01"}}}'
    )
    with HopTracer().hop(request, "http://up/mcp", "meta", "pinned") as span:
        assert span is not None
        mine = format(span.get_span_context().span_id, "016x")
    sent = json.loads(request.body or b"")
    meta = sent["params"]["_meta"]
    assert meta["traceparent"] == f"00-{TRACE_ID}-{mine}-01"
    assert meta["baggage"] == "k=v"  # the client's other keys are kept
    assert sent["params"]["name"] == "x" and sent["id"] == 1
    assert (b"traceparent", meta["traceparent"].encode()) in request.raw_headers


@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"n":1e400}}}',
        b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]',
        b'{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}',
        b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":"x"}}',
        b"not json",
    ],
)
def test_a_body_the_hop_cannot_rewrite_faithfully_goes_on_unchanged(
    spans: InMemorySpanExporter, body: bytes
) -> None:
    """A number beyond a float (it would come back as the non-JSON ``Infinity``), a batch,
    params or ``_meta`` of another shape, no JSON: only the header carries the context."""
    request = incoming(body)
    with HopTracer().hop(request, "http://up/mcp", "least_loaded", "least_loaded"):
        pass
    assert request.body == body
    assert any(name == b"traceparent" for name, _ in request.raw_headers)
