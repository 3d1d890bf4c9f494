"""Every name of the wire contract, in one place (DESIGN §3).

Clients, servers, the gateway and the tests import these; nothing else spells them out.
"""

from __future__ import annotations

from typing import Final

#: Extension identifier, advertised in ``capabilities.extensions`` (SEP-2133 vendor prefix;
#: the second label is not ``mcp``/``modelcontextprotocol``, so it is not reserved, spec §2.9).
EXTENSION_ID: Final = "dev.mcpsessions/sessions"

#: Request ``params._meta`` key naming the session (carrier 1, DESIGN §2).
META_SESSION_ID: Final = "dev.mcpsessions/sessionId"
#: Request and result ``_meta`` key carrying the sealed state token (DESIGN §4).
META_STATE: Final = "dev.mcpsessions/state"
#: Result ``_meta`` key listing the handles the call minted (``[{"handle": ..., "kind": ...}]``)
#: so that a gateway pins each to the upstream that answered (issue #11). Only results count:
#: the key in a request is ignored.
META_MINTED_HANDLES: Final = "dev.mcpsessions/handles"
#: Request ``_meta`` flag (``true``) set by a gateway that relays many clients' requests over
#: one connection (``mcp-sessions gateway --spawn``, keyless requests): the connection is then
#: not one client, so carrier 5 must not apply (issue #11). A client that sets it itself only
#: gives up its own connection session.
META_SHARED_CONNECTION: Final = "dev.mcpsessions/sharedConnection"
#: Result ``_meta`` key with the session's expiry as RFC 3339.
META_EXPIRES_AT: Final = "dev.mcpsessions/expiresAt"

#: HTTP mirror of :data:`META_SESSION_ID` (ids only, never state: DESIGN §3).
HEADER_CLIENT_SESSION_ID: Final = "Mcp-Client-Session-Id"
#: Legacy session header, 2025-11-25 Streamable HTTP (DESIGN §5).
HEADER_LEGACY_SESSION_ID: Final = "Mcp-Session-Id"
#: The protocol version header every HTTP request carries after negotiation.
HEADER_PROTOCOL_VERSION: Final = "MCP-Protocol-Version"
#: SSE resumption header (Streamable HTTP 2025-11-25, "Resumability and Redelivery"): the
#: last event id a client saw, sent on the GET that resumes its stream (issue #15).
HEADER_LAST_EVENT_ID: Final = "Last-Event-ID"
#: Prefix of SEP-2243 parameter headers, used to mirror handle arguments.
HEADER_PARAM_PREFIX: Final = "Mcp-Param-"

# Input aliases (carrier 2): SEP-2822 as drafted, and de-facto vendor client ids.
#: SEP-2822's ``_meta`` spelling (unprefixed, paired with :data:`HEADER_CLIENT_SESSION_ID`).
META_SEP2822_SESSION_ID: Final = "clientSessionId"
#: OpenAI Apps SDK conversation id in ``_meta``.
META_OPENAI_SESSION: Final = "openai/session"
#: AWS Bedrock AgentCore runtime session header.
HEADER_BEDROCK_SESSION_ID: Final = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"

#: W3C baggage key for conversation correlation (OTel GenAI semantic conventions, SEP-414).
BAGGAGE_CONVERSATION_ID: Final = "gen_ai.conversation.id"
META_BAGGAGE: Final = "baggage"

# Methods (DESIGN §3).
METHOD_SESSION_CREATE: Final = "session/create"
METHOD_SESSION_DESTROY: Final = "session/destroy"
#: Requests whose results never depend on the session (DESIGN §3): a server adds no session
#: ``_meta`` to their results (lists do not vary by session, SEP-2567), and a client sends no
#: state token with them. They still carry the id (routing affinity, spec-digest item 37).
SESSION_INDEPENDENT_METHODS: Final = frozenset(
    {
        "initialize",
        "server/discover",
        "ping",
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
    }
)

# Protocol versions this library knows (spec §1, §2).
PROTOCOL_2025_11_25: Final = "2025-11-25"
PROTOCOL_2026_07_28: Final = "2026-07-28"
LEGACY_PROTOCOL_VERSIONS: Final = frozenset(
    {"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"}
)
MODERN_PROTOCOL_VERSIONS: Final = frozenset({"2026-07-28"})
#: Envelope key of a modern request (SEP-2575).
META_PROTOCOL_VERSION: Final = "io.modelcontextprotocol/protocolVersion"

# Limits (DESIGN §3, §4).
SESSION_ID_MIN_LENGTH: Final = 16
SESSION_ID_MAX_LENGTH: Final = 128
MAX_STATE_BYTES: Final = 4096
#: Random bits in every id and handle the library mints.
MINTED_ID_BITS: Final = 128

# Lifecycle names (DESIGN §3).
LIFECYCLE_IMPLICIT: Final = "implicit"
LIFECYCLE_EXPLICIT: Final = "explicit"

#: The record kind of a session; handle records use their handle kind instead.
SESSION_KIND: Final = "session"

# 2026-07-28 request envelope and subscription keys (SEP-2575), besides META_PROTOCOL_VERSION;
# the spawn gateway sets them on its own probe requests and rewrites the subscription id.
#: Envelope key with the client's capabilities.
META_CLIENT_CAPABILITIES: Final = "io.modelcontextprotocol/clientCapabilities"
#: Envelope key with the client's name and version.
META_CLIENT_INFO: Final = "io.modelcontextprotocol/clientInfo"
#: Notification ``_meta`` key naming the ``subscriptions/listen`` request a listen-stream
#: notification belongs to (its request id).
META_SUBSCRIPTION_ID: Final = "io.modelcontextprotocol/subscriptionId"

# Toolsets: per-session tool scoping (issue #18, docs/wire.md "Scoped lists").
#: Setting of :data:`EXTENSION_ID` in the *client's* capabilities (2026-07-28: per request in
#: ``_meta[META_CLIENT_CAPABILITIES].extensions``; 2025-11-25: in ``initialize``): only the
#: JSON value ``true`` asks for the session's surface from the list methods.
CAPABILITY_SCOPED_LISTS: Final = "scopedLists"
#: List result ``_meta`` flag (``true``): this list is the session's surface, not the global
#: list (sent with ``ttlMs: 0`` and ``cacheScope: "private"`` at 2026-07-28, since ``_meta``
#: is not in a cache's key: spec §2.5, §5.4 item 47).
META_SCOPED: Final = "dev.mcpsessions/scoped"
#: Result ``_meta`` key on a call that changed the session's surface: the list methods to
#: fetch again (``["tools/list", ...]``); the 2026-07-28 stand-in for a per-session
#: ``list_changed`` notification.
META_LIST_CHANGED: Final = "dev.mcpsessions/listChanged"
#: The session state key holding the enabled toolsets (a list of names): in the record, so
#: every replica sharing a store (or the sealed token) agrees, edited by compare-and-set.
STATE_TOOLSETS: Final = "dev.mcpsessions/toolsets"
#: Most toolsets one session may have enabled at once (issue #18: bounded per session).
MAX_ENABLED_TOOLSETS: Final = 32
#: Most toolsets one server may declare, and the longest toolset name.
MAX_DECLARED_TOOLSETS: Final = 256
TOOLSET_NAME_MAX_LENGTH: Final = 64
#: The list methods a toolset scopes, by the kind of member they list.
LIST_METHOD_TOOLS: Final = "tools/list"
LIST_METHOD_PROMPTS: Final = "prompts/list"
LIST_METHOD_RESOURCES: Final = "resources/list"
