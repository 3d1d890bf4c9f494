"""The "everything" server that the official MCP conformance suite tests.

`conformance server` (package `@modelcontextprotocol/conformance`) acts as a client against
a running server and calls fixed tools, resources and prompts by name. This module defines
every one that the server scenarios at 2025-11-25 and 2026-07-28 call, on the SDK's
`MCPServer` with mcp-sessions installed as an application would install it (issue #6):
`Sessions` with every carrier on (implicit lifecycle, handle fallback off) as an extension
and as middleware, so that every request passes through it, and the app built by
`sessions.streamable_http_app`, which keeps legacy `Mcp-Session-Id` sessions in the session
store. The suite thus checks the SDK *and* what mcp-sessions adds to it. The names, texts and
values that a scenario checks are the suite's own (read from its sources); the
implementation is this project's.

Two tools exist so that checks of `server-stateless` exercise something instead of passing
by default (a server lacking them answers "Unknown tool", which that scenario counts as a
pass): `test_streaming_elicitation` streams progress and a log entry, then elicits (over the
back-channel on a 2025-11-25 session, as an `input_required` result on 2026-07-28, where an
independent request on the response stream is forbidden), and `test_logging_tool` emits a
log entry (which 2026-07-28 must drop unless the request's `_meta` opted in to a log level).
One tool exists for mcp-sessions itself: `session_counter` counts calls per session (the
suite never calls it; the Redis leg does, to show that the store is really in use).

The server is assembled here; what it registers lives in sibling modules, by concept:
fixture_payloads.py (media, schemas, input-request builders), fixture_tools.py (tools that
answer on their own), fixture_input_tools.py (tools that ask the client first) and
fixture_catalog.py (resources, prompts, completion).

Run:  python tests/conformance/fixture_server.py --port 3001 [--store URL]
Serves http://127.0.0.1:PORT/mcp; DNS-rebinding protection is on (the SDK enables it for a
loopback host), an in-memory event store makes SSE streams resumable (SEP-1699), sessions
live in the store at URL (default `memory://`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from mcp.server import Server, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.tools.base import Tool
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.types import (
    EmptyResult,
    JSONRPCMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    UnsubscribeRequestParams,
)
from starlette.applications import Starlette

# Run as a script, this file sees only its own folder; its sibling modules are imported by
# their package path, as pytest imports them.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.conformance.fixture_catalog import add_completion, add_prompts, add_resources
from tests.conformance.fixture_input_tools import add_back_channel_tools, add_input_required_tools
from tests.conformance.fixture_payloads import JSON_SCHEMA_2020_12
from tests.conformance.fixture_tools import (
    add_content_tools,
    add_header_tool,
    add_list_change_tools,
    add_notification_tools,
    json_schema_tool,
)

from mcp_sessions.core.records import JSONObject
from mcp_sessions.server import CurrentSession, Sessions, uvicorn_config

SERVER_NAME = "mcp-sessions-conformance-fixture"
MCP_PATH = "/mcp"
SSE_RETRY_MS = 100  # the `retry` hint of SSE priming events; short, so polling tests stay fast


# --------------------------------------------------------------------------------------
# SSE resumability (SEP-1699): an in-memory event store, bounded.
# --------------------------------------------------------------------------------------


class MemoryEventStore(EventStore):
    """Keeps the last `capacity` SSE events so a client can resume with `Last-Event-ID`."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._next = 0
        # event id -> (stream id, message); insertion order is event order.
        self._events: OrderedDict[str, tuple[str, JSONRPCMessage | None]] = OrderedDict()

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        self._next += 1
        event_id = f"e{self._next}"
        self._events[event_id] = (stream_id, message)
        while len(self._events) > self._capacity:
            self._events.popitem(last=False)
        return event_id

    async def replay_events_after(
        self, last_event_id: str, send_callback: EventCallback
    ) -> str | None:
        if last_event_id not in self._events:
            return None
        stream_id, _ = self._events[last_event_id]
        later = False
        for event_id, (event_stream, message) in list(self._events.items()):
            if event_id == last_event_id:
                later = True
            elif later and event_stream == stream_id and message is not None:
                # `None` marks a priming event: it carries no message to replay.
                await send_callback(EventMessage(message, event_id))
        return stream_id


# --------------------------------------------------------------------------------------
# The server.
# --------------------------------------------------------------------------------------


def sessions_options(store_url: str | None = None) -> dict[str, Any]:
    """mcp-sessions with every carrier on (the default `CarrierPolicy`), the implicit
    lifecycle and no handle fallback, its sessions in the store at `store_url` (the options
    of both fixtures' `Sessions`)."""
    return {
        "store": store_url or "memory://",
        "lifecycle": "implicit",
        "handle_fallback": False,
        "audience": SERVER_NAME,
    }


def build_sessions(store_url: str | None = None) -> Sessions:
    return Sessions(**sessions_options(store_url))


async def session_counter(session: CurrentSession) -> int:
    """Counts the calls of this session (1 on the first); the count lives in the store."""

    def bump(state: JSONObject) -> int:
        value = int(state.get("count", 0)) + 1
        state["count"] = value
        return value

    return await session.update(bump)


def add_removed_methods(lowlevel: Server[Any]) -> None:
    """logging/setLevel and resources/(un)subscribe (2025-11-25), on the low-level server,
    where the framework serves none of its own; they accept and remember nothing."""
    subscribed: set[str] = set()

    async def set_level(
        ctx: ServerRequestContext[Any], params: SetLevelRequestParams
    ) -> EmptyResult:
        return EmptyResult()

    async def subscribe(
        ctx: ServerRequestContext[Any], params: SubscribeRequestParams
    ) -> EmptyResult:
        subscribed.add(str(params.uri))
        return EmptyResult()

    async def unsubscribe(
        ctx: ServerRequestContext[Any], params: UnsubscribeRequestParams
    ) -> EmptyResult:
        subscribed.discard(str(params.uri))
        return EmptyResult()

    handlers: tuple[tuple[str, Any, Any], ...] = (
        ("logging/setLevel", SetLevelRequestParams, set_level),
        ("resources/subscribe", SubscribeRequestParams, subscribe),
        ("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe),
    )
    for method, params_type, handler in handlers:
        if lowlevel.get_request_handler(method) is None:
            lowlevel.add_request_handler(method, params_type, handler)


def build_server(sessions: Sessions) -> MCPServer:
    """An MCPServer with every tool, resource, prompt and handler the scenarios call, and
    mcp-sessions installed: every request passes through `sessions.middleware`."""
    # MCPServer.tool() derives inputSchema from the signature; a Tool built explicitly
    # carries the hand-written schema instead.
    schema_tool = Tool.from_function(json_schema_tool, name="json_schema_2020_12_tool")
    schema_tool = schema_tool.model_copy(update={"parameters": JSON_SCHEMA_2020_12})

    mcp = MCPServer(
        name=SERVER_NAME,
        version="0.1.0",
        instructions="Fixture for the MCP conformance suite (mcp-sessions).",
        tools=[schema_tool],
        log_level="WARNING",
        extensions=[sessions],
        middleware=[sessions.middleware],
    )

    # ---- mcp-sessions (not called by the suite) -----------------------------------------

    mcp.add_tool(session_counter)

    # A toolset (issue #18): declared, so every list and call of the suite passes through the
    # toolset hooks; the suite never enables it, and its results must not change.
    sessions.toolset("fixture-extras", tools=["session_scoped_tool"])

    @mcp.tool()
    async def session_scoped_tool(session: CurrentSession) -> str:
        """Runs only in a session that enabled the fixture-extras toolset."""
        return session.id

    # ---- what the suite calls, in the order tools/list and prompts/list show it ----------

    add_content_tools(mcp)
    add_notification_tools(mcp)
    add_back_channel_tools(mcp)
    add_header_tool(mcp)
    add_list_change_tools(mcp)
    add_input_required_tools(mcp)
    add_resources(mcp)
    add_prompts(mcp)
    add_completion(mcp)

    # ---- 2025-11-25 handlers without an MCPServer API in mcp 2.3 ----------------------
    # (so they go to the low-level server; the 2026-07-28 wire must still answer these
    # removed methods with 404/-32601, which the SDK does by version).
    add_removed_methods(mcp._lowlevel_server)

    return mcp


def build_app(*, store_url: str | None = None) -> Starlette:
    """The fixture as an ASGI app serving `MCP_PATH`, built by mcp-sessions rather than by
    `mcp.streamable_http_app`: legacy sessions are kept in the store (DESIGN §5)."""
    sessions = build_sessions(store_url)
    mcp = build_server(sessions)
    return sessions.streamable_http_app(
        mcp,
        streamable_http_path=MCP_PATH,
        event_store=MemoryEventStore(),
        retry_interval=SSE_RETRY_MS,
        host="127.0.0.1",  # turns on the SDK's DNS-rebinding protection for loopback
    )


def serve_fixture(
    build: Callable[..., Starlette], description: str, argv: list[str] | None = None
) -> None:
    """Serve ``build(store_url=…)``'s app on 127.0.0.1 as the command line says (this fixture's
    and fastmcp_fixture.py's)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument(
        "--store", default=None, help="mcp-sessions store URL (default memory://; e.g. redis://…)"
    )
    parser.add_argument("--log-level", default="warning", help="uvicorn log level")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    app = build(store_url=args.store)
    # Served as a deployment serves it: with mcp-sessions' request-head limits (which also trim
    # field values on either of uvicorn's parsers, SEP-2243's whitespace rule).
    config = uvicorn_config(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=2,  # open SSE streams must not hold up a SIGTERM
    )
    uvicorn.Server(config).run()


def main(argv: list[str] | None = None) -> None:
    serve_fixture(build_app, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
