"""Every OpenTelemetry name the library emits: span attributes, metrics, units (issue #13).

The MCP names follow the OpenTelemetry GenAI/MCP semantic conventions
(open-telemetry/semantic-conventions-genai ``docs/gen-ai/mcp.md``); the library's own
attributes and metrics sit under the ``mcp_sessions.`` namespace. Constants only: the
instrumentation is :mod:`mcp_sessions.telemetry`, and docs/observability.md lists them all.
"""

from __future__ import annotations

from typing import Final

#: The instrumentation scope of every tracer and meter of the library.
SCOPE: Final = "mcp_sessions"

# -- semantic-convention attributes (GenAI/MCP) -------------------------------------------
MCP_METHOD_NAME: Final = "mcp.method.name"
#: Only for a session of the transport (legacy ``Mcp-Session-Id``, a stdio connection).
MCP_SESSION_ID: Final = "mcp.session.id"
MCP_PROTOCOL_VERSION: Final = "mcp.protocol.version"
JSONRPC_REQUEST_ID: Final = "jsonrpc.request.id"
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
#: Only an id the client supplied (semconv-genai PR #219: never synthesised).
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
ERROR_TYPE: Final = "error.type"
NETWORK_TRANSPORT: Final = "network.transport"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"

# -- the library's own attributes -----------------------------------------------------------
#: How the request named its session (``meta``, ``sep2822``, ``openai``, ``bedrock``,
#: ``handle``, ``legacy``, ``connection``; ``none``).
CARRIER: Final = "mcp_sessions.carrier"
#: The kind of record the request's session is (``session``); a handle kind for handles.
SESSION_KIND_ATTR: Final = "mcp_sessions.session.kind"
#: How a session began: ``client``, ``create``, ``fork``, ``legacy``, ``handle``,
#: ``connection`` (the record's origin).
SESSION_ORIGIN: Final = "mcp_sessions.session.origin"
#: Whether this request created its session (implicit creation).
SESSION_CREATED: Final = "mcp_sessions.session.created"
#: How a session ended: ``destroyed`` or ``expired``.
SESSION_END: Final = "mcp_sessions.session.end"
#: A session that saw exactly one request (a client opening a session per call).
SESSION_DEGENERATE: Final = "mcp_sessions.session.degenerate"
#: The store operation (``get``, ``create``, ``touch``, ``compare_and_set``, ``delete``,
#: ``list``, ``count``).
STORE_OPERATION: Final = "mcp_sessions.store.operation"
#: What a quota counts (``sessions``, ``legacy``, ``handles``) and why it refused.
QUOTA_COUNTED: Final = "mcp_sessions.quota.counted"
QUOTA_REASON: Final = "mcp_sessions.quota.reason"
#: Gateway hops: the upstream, the routing decision and how the upstream was chosen.
GATEWAY_UPSTREAM: Final = "mcp_sessions.gateway.upstream"
GATEWAY_DECISION: Final = "mcp_sessions.gateway.decision"
#: ``pinned`` (an existing pin), ``placed`` (a pin placed now), ``hashed`` (rendezvous, no
#: pin), ``least_loaded`` (no key).
GATEWAY_PLACEMENT: Final = "mcp_sessions.gateway.placement"

# -- metrics -------------------------------------------------------------------------------
#: Semconv histograms, seconds.
METRIC_OPERATION_DURATION: Final = "mcp.server.operation.duration"
METRIC_SESSION_DURATION: Final = "mcp.server.session.duration"
#: The library's counters and histograms.
METRIC_SESSIONS_CREATED: Final = "mcp_sessions.sessions.created"
METRIC_SESSIONS_DESTROYED: Final = "mcp_sessions.sessions.destroyed"
METRIC_SESSIONS_EXPIRED: Final = "mcp_sessions.sessions.expired"
METRIC_DEGENERATE_RATIO: Final = "mcp_sessions.sessions.degenerate.ratio"
METRIC_STATE_CONFLICTS: Final = "mcp_sessions.state.conflicts"
METRIC_STATE_RETRIES: Final = "mcp_sessions.state.retries"
METRIC_STATE_EXHAUSTED: Final = "mcp_sessions.state.exhausted"
METRIC_QUOTA_REFUSALS: Final = "mcp_sessions.quota.refusals"
METRIC_STORE_DURATION: Final = "mcp_sessions.store.operation.duration"

UNIT_SECONDS: Final = "s"
UNIT_SESSIONS: Final = "{session}"
UNIT_CONFLICTS: Final = "{conflict}"
UNIT_REFUSALS: Final = "{refusal}"
UNIT_RATIO: Final = "1"

#: Buckets for second-scale histograms of MCP operations and store calls (the SDK's default
#: ones start at 5 s-scale values meant for milliseconds).
DURATION_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: Buckets for session lifetimes, seconds (a second to a week).
SESSION_DURATION_BUCKETS: Final = (
    1.0,
    10.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4 * 3600.0,
    24 * 3600.0,
    7 * 24 * 3600.0,
)
