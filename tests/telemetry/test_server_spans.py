"""Request spans carry the session by the GenAI/MCP conventions (issue #13): the SDK's span
of each request gets ``mcp.session.id`` for a legacy session, ``gen_ai.conversation.id`` for a
client-supplied id, the carrier and session kind, and joins the trace of a ``traceparent`` in
``_meta``; never a state token or a handle."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from mcp.server._otel import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.server._app import build_app
from tests.server.helpers import Target, ThreadedServer, new_id, sid, value

from mcp_sessions.core import otel_names as n
from mcp_sessions.core.names import META_STATE
from mcp_sessions.core.sealing import KeyRing

from .conftest import Metrics, server_spans

pytestmark = pytest.mark.anyio

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"


@pytest.fixture
def http_target(metered: Metrics) -> Iterator[Callable[..., Target]]:
    servers: list[ThreadedServer] = []

    def start(**options: Any) -> Target:
        mcp, sessions = build_app(telemetry=metered.telemetry, **options)
        server = ThreadedServer(sessions.streamable_http_app(mcp)).start()
        servers.append(server)
        return Target("http", url=server.url)

    yield start
    for server in servers:
        server.stop()


def inproc(metered: Metrics, **options: Any) -> Target:
    mcp, _ = build_app(telemetry=metered.telemetry, **options)
    return Target("inproc", server=mcp)


def only(spans: list[ReadableSpan]) -> ReadableSpan:
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


async def test_legacy_call_span_has_mcp_session_id(
    spans: InMemorySpanExporter, http_target: Callable[..., Target]
) -> None:
    target = http_target()
    async with target.client("legacy") as client:
        legacy_id = value(await client.call_tool("whoami", {}))["id"]
    span = only(server_spans(spans, "tools/call whoami"))
    attributes = dict(span.attributes or {})
    assert attributes[n.MCP_SESSION_ID] == legacy_id
    assert attributes[n.CARRIER] == "legacy"
    assert attributes[n.SESSION_KIND_ATTR] == "session"
    assert attributes[n.SESSION_ORIGIN] == "legacy"
    assert attributes[n.NETWORK_TRANSPORT] == "tcp"
    assert n.GEN_AI_CONVERSATION_ID not in attributes  # the server minted it: not the client's
    # The SDK's own attributes are still there: ours are added to its span, not a second one.
    assert attributes[n.MCP_METHOD_NAME] == "tools/call"
    assert attributes[n.GEN_AI_TOOL_NAME] == "whoami"


async def test_meta_id_call_span_has_conversation_id(
    spans: InMemorySpanExporter, metered: Metrics
) -> None:
    session_id = new_id()
    async with inproc(metered).client("modern") as client:
        value(await client.call_tool("count", {}, meta=sid(session_id)))
    span = only(server_spans(spans, "tools/call count"))
    attributes = dict(span.attributes or {})
    assert attributes[n.GEN_AI_CONVERSATION_ID] == session_id
    assert attributes[n.CARRIER] == "meta"
    assert attributes[n.SESSION_CREATED] is True
    assert attributes[n.SESSION_ORIGIN] == "client"
    assert n.MCP_SESSION_ID not in attributes


async def test_no_session_no_session_attributes(
    spans: InMemorySpanExporter, metered: Metrics
) -> None:
    async with inproc(metered).client("modern") as client:
        value(await client.call_tool("maybe", {}))
    attributes = dict(only(server_spans(spans, "tools/call maybe")).attributes or {})
    assert attributes[n.CARRIER] == "none"
    for name in (n.MCP_SESSION_ID, n.GEN_AI_CONVERSATION_ID, n.SESSION_KIND_ATTR):
        assert name not in attributes


async def test_baggage_conversation_id_on_a_legacy_span(
    spans: InMemorySpanExporter, http_target: Callable[..., Target]
) -> None:
    """A client's own conversation id (W3C baggage, SEP-414) where no carrier is its own."""
    target = http_target()
    async with target.client("legacy") as client:
        meta = {"baggage": "gen_ai.conversation.id=conv-7"}
        value(await client.call_tool("whoami", {}, meta=meta))
    attributes = dict(only(server_spans(spans, "tools/call whoami")).attributes or {})
    assert attributes[n.GEN_AI_CONVERSATION_ID] == "conv-7"
    assert n.MCP_SESSION_ID in attributes


async def test_an_overlong_baggage_conversation_id_stays_off_the_span(
    spans: InMemorySpanExporter, http_target: Callable[..., Target]
) -> None:
    """Baggage may carry kilobytes: a caller cannot make every span that large."""
    target = http_target()
    async with target.client("legacy") as client:
        meta = {"baggage": "gen_ai.conversation.id=" + "c" * 5000}
        value(await client.call_tool("whoami", {}, meta=meta))
    attributes = dict(only(server_spans(spans, "tools/call whoami")).attributes or {})
    assert n.GEN_AI_CONVERSATION_ID not in attributes
    assert n.MCP_SESSION_ID in attributes


async def test_traceparent_in_meta_joins_the_trace(
    spans: InMemorySpanExporter, metered: Metrics
) -> None:
    traceparent = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
    async with inproc(metered).client("modern") as client:
        value(await client.call_tool("count", {}, meta=sid(new_id(), traceparent=traceparent)))
    span = only(server_spans(spans, "tools/call count"))
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == PARENT_SPAN_ID


async def test_no_state_token_or_handle_on_any_span(
    spans: InMemorySpanExporter, metered: Metrics
) -> None:
    """Sealed state tokens and handles are capabilities: no span attribute carries one."""
    target = inproc(metered, state="sealed", keys=KeyRing.generate())
    session_id = new_id()
    async with target.client("modern") as client:
        first = await client.call_tool("count", {}, meta=sid(session_id))
        token = (first.meta or {})[META_STATE]
        await client.call_tool("count", {}, meta=sid(session_id, **{META_STATE: token}))
        handle = value(await client.call_tool("session_start", {}))
        value(await client.call_tool("count", {"session": handle}))
    finished = spans.get_finished_spans()
    assert len(server_spans(spans, "tools/call count", 3)) == 3
    handle_span = server_spans(spans, "tools/call count", 3)[-1]
    assert (handle_span.attributes or {})[n.CARRIER] == "handle"
    for span in finished:
        for key, attribute in (span.attributes or {}).items():
            text = str(attribute)
            assert token not in text and handle not in text, (span.name, key)


async def test_without_the_sdk_span_the_session_middleware_opens_its_own(
    spans: InMemorySpanExporter, metered: Metrics
) -> None:
    """An application that removed the SDK's OpenTelemetry middleware still gets one span per
    request, with the same name, parent and attributes."""
    mcp, _ = build_app(telemetry=metered.telemetry)
    mcp.middleware[:] = [m for m in mcp.middleware if not isinstance(m, OpenTelemetryMiddleware)]
    session_id = new_id()
    traceparent = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
    async with Target("inproc", server=mcp).client("modern") as client:
        value(await client.call_tool("count", {}, meta=sid(session_id, traceparent=traceparent)))
    span = only(server_spans(spans, "tools/call count"))
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == n.SCOPE  # ours, not the SDK's
    assert format(span.context.trace_id, "032x") == TRACE_ID
    attributes = dict(span.attributes or {})
    assert attributes[n.GEN_AI_CONVERSATION_ID] == session_id
    assert attributes[n.MCP_METHOD_NAME] == "tools/call"
    assert attributes[n.GEN_AI_TOOL_NAME] == "count"


@pytest.mark.parametrize("traceparent", [123, ["x"], {"a": 1}, "garbage"])
async def test_own_span_survives_a_malformed_traceparent(
    spans: InMemorySpanExporter, metered: Metrics, traceparent: object
) -> None:
    mcp, _ = build_app(telemetry=metered.telemetry)
    mcp.middleware[:] = [m for m in mcp.middleware if not isinstance(m, OpenTelemetryMiddleware)]
    async with Target("inproc", server=mcp).client("modern") as client:
        meta = sid(new_id(), traceparent=traceparent)
        assert value(await client.call_tool("count", {}, meta=meta))["count"] == 1
    span = only(server_spans(spans, "tools/call count"))
    assert span.parent is None
