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

Run:  python tests/conformance/fixture_server.py --port 3001 [--store URL]
Serves http://127.0.0.1:PORT/mcp; DNS-rebinding protection is on (the SDK enables it for a
loopback host), an in-memory event store makes SSE streams resumable (SEP-1699), sessions
live in the store at URL (default `memory://`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import logging
import struct
import wave
import zlib
from collections import OrderedDict
from typing import Annotated, Any

import uvicorn
from mcp.server import ServerRequestContext
from mcp.server.mcpserver import Context, Elicit, MCPServer, Resolve
from mcp.server.mcpserver.prompts.base import Prompt, UserMessage
from mcp.server.mcpserver.tools.base import Tool
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPError
from mcp.types import (
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    AudioContent,
    Completion,
    CompletionArgument,
    CompletionContext,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    InputRequest,
    InputRequiredResult,
    JSONRPCMessage,
    ListRootsRequest,
    ListRootsResult,
    PromptReference,
    ResourceTemplateReference,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from pydantic import BaseModel, Field
from starlette.applications import Starlette

from mcp_sessions.core.records import JSONObject
from mcp_sessions.server import CurrentSession, Sessions, uvicorn_config

SERVER_NAME = "mcp-sessions-conformance-fixture"
MCP_PATH = "/mcp"
SSE_RETRY_MS = 100  # the `retry` hint of SSE priming events; short, so polling tests stay fast


# --------------------------------------------------------------------------------------
# Media built here rather than pasted: a 1x1 PNG and a 1-sample WAV.
# --------------------------------------------------------------------------------------


def _png_pixel(rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A valid 1x1 truecolour PNG (PNG spec §5: signature, IHDR, IDAT, IEND chunks)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit, RGB
    scanline = b"\x00" + bytes(rgb)  # filter type 0, then one pixel
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(scanline))
        + chunk(b"IEND", b"")
    )


def _wav_blip() -> bytes:
    """A valid mono 8 kHz 16-bit WAV with one silent sample."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00")
    return buffer.getvalue()


PNG = _png_pixel()
WAV = _wav_blip()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


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
# Schemas the elicitation scenarios inspect.
# --------------------------------------------------------------------------------------


class Contact(BaseModel):
    """What `test_elicitation` asks for; the suite's client answers with these two fields."""

    username: str = Field(description="Your user name")
    email: str = Field(description="Your e-mail address")


class ProfileWithDefaults(BaseModel):
    """SEP-1034: a default on every primitive type (values fixed by the scenario)."""

    name: str = Field(default="John Doe", description="User name")
    age: int = Field(default=30, description="User age")
    score: float = Field(default=95.5, description="User score")
    status: str = Field(
        default="active",
        description="User status",
        json_schema_extra={"enum": ["active", "inactive", "pending"]},
    )
    verified: bool = Field(default=True, description="Verification status")


# SEP-1330: the five enum shapes, as a raw `requestedSchema` (field names fixed by the scenario).
ENUM_SHAPES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "untitledSingle": {
            "type": "string",
            "description": "Single choice, plain enum",
            "enum": ["red", "green", "blue"],
        },
        "titledSingle": {
            "type": "string",
            "description": "Single choice with titles",
            "oneOf": [
                {"const": "s", "title": "Small"},
                {"const": "m", "title": "Medium"},
                {"const": "l", "title": "Large"},
            ],
        },
        "untitledMulti": {
            "type": "array",
            "description": "Several choices, plain enum",
            "items": {"type": "string", "enum": ["read", "write", "admin"]},
        },
        "titledMulti": {
            "type": "array",
            "description": "Several choices with titles",
            "items": {
                "anyOf": [
                    {"const": "mon", "title": "Monday"},
                    {"const": "wed", "title": "Wednesday"},
                    {"const": "fri", "title": "Friday"},
                ]
            },
        },
        "legacyEnum": {
            "type": "string",
            "description": "Deprecated titled enum",
            "enum": ["lo", "hi"],
            "enumNames": ["Low", "High"],
        },
    },
    "required": ["untitledSingle"],
}

# SEP-1613 / SEP-2106: 2020-12 keywords that must reach tools/list untouched.
JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


def _ask(message: str, field: str) -> ElicitRequest:
    """A form elicitation for one required string field."""
    schema = {"type": "object", "properties": {field: {"type": "string"}}, "required": [field]}
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))


def _sample(text: str) -> CreateMessageRequest:
    message = SamplingMessage(role="user", content=TextContent(type="text", text=text))
    return CreateMessageRequest(
        params=CreateMessageRequestParams(messages=[message], max_tokens=64)
    )


def _accepted(responses: Any, key: str) -> dict[str, Any] | None:
    """The content of an accepted elicitation answer under `key`, if there is one."""
    answer = (responses or {}).get(key)
    if isinstance(answer, ElicitResult) and answer.action == "accept":
        return dict(answer.content or {})
    return None


async def stream_then_ask(ctx: Context) -> Elicit[Contact]:
    """Resolver of `test_streaming_elicitation`: streams, then asks. The SDK sends the
    question over the back-channel at 2025-11-25 and as an `input_required` result at
    2026-07-28."""
    await ctx.report_progress(1, 2, "streaming before the question")
    await ctx.info("about to ask the user")
    return Elicit("Who is streaming?", Contact)


# --------------------------------------------------------------------------------------
# The server.
# --------------------------------------------------------------------------------------


def build_sessions(store_url: str | None = None) -> Sessions:
    """mcp-sessions with every carrier on (the default `CarrierPolicy`), the implicit
    lifecycle and no handle fallback, its sessions in the store at `store_url`."""
    return Sessions(
        store=store_url or "memory://",
        lifecycle="implicit",
        handle_fallback=False,
        audience=SERVER_NAME,
    )


def build_server(sessions: Sessions) -> MCPServer:
    """An MCPServer with every tool, resource, prompt and handler the scenarios call, and
    mcp-sessions installed: every request passes through `sessions.middleware`."""
    subscribed: set[str] = set()
    log_level: dict[str, str] = {"level": "info"}

    def json_schema_tool() -> str:
        """Carries a JSON Schema 2020-12 inputSchema (SEP-1613, SEP-2106)."""
        return "schema preserved"

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

    @mcp.tool()
    async def session_counter(session: CurrentSession) -> int:
        """Counts the calls of this session (1 on the first); the count lives in the store."""

        def bump(state: JSONObject) -> int:
            value = int(state.get("count", 0)) + 1
            state["count"] = value
            return value

        return await session.update(bump)

    # A toolset (issue #18): declared, so every list and call of the suite passes through the
    # toolset hooks; the suite never enables it, and its results must not change.
    sessions.toolset("fixture-extras", tools=["session_scoped_tool"])

    @mcp.tool()
    async def session_scoped_tool(session: CurrentSession) -> str:
        """Runs only in a session that enabled the fixture-extras toolset."""
        return session.id

    # ---- content ---------------------------------------------------------------------

    @mcp.tool()
    def test_simple_text() -> str:
        """Returns one text block."""
        return "This is a simple text response for testing."

    @mcp.tool()
    def test_image_content() -> list[ImageContent]:
        """Returns one PNG image."""
        return [ImageContent(type="image", data=_b64(PNG), mime_type="image/png")]

    @mcp.tool()
    def test_audio_content() -> list[AudioContent]:
        """Returns one WAV clip."""
        return [AudioContent(type="audio", data=_b64(WAV), mime_type="audio/wav")]

    @mcp.tool()
    def test_embedded_resource() -> list[EmbeddedResource]:
        """Returns one embedded text resource."""
        contents = TextResourceContents(
            uri="test://embedded-resource",
            mime_type="text/plain",
            text="This is an embedded resource content.",
        )
        return [EmbeddedResource(type="resource", resource=contents)]

    @mcp.tool()
    def test_multiple_content_types() -> list[TextContent | ImageContent | EmbeddedResource]:
        """Returns text, an image and an embedded resource together."""
        return [
            TextContent(type="text", text="Multiple content types test:"),
            ImageContent(type="image", data=_b64(PNG), mime_type="image/png"),
            EmbeddedResource(
                type="resource",
                resource=TextResourceContents(
                    uri="test://mixed-content-resource",
                    mime_type="application/json",
                    text=json.dumps({"test": "data", "value": 123}),
                ),
            ),
        ]

    @mcp.tool()
    def test_error_handling() -> str:
        """Always fails: the SDK turns the exception into an `isError` result."""
        raise RuntimeError("This tool intentionally returns an error for testing")

    # ---- notifications during a call --------------------------------------------------

    @mcp.tool()
    async def test_tool_with_logging(ctx: Context) -> str:
        """Sends three info log entries, about 50 ms apart."""
        for step, text in enumerate(
            ("Tool execution started", "Tool processing data", "Tool execution completed")
        ):
            if step:
                await asyncio.sleep(0.05)
            await ctx.info(text)
        return "Tool with logging executed successfully"

    @mcp.tool()
    async def test_tool_with_progress(ctx: Context) -> str:
        """Reports progress 0, 50 and 100 of 100 (sent only when the caller gave a token)."""
        for step, done in enumerate((0, 50, 100)):
            if step:
                await asyncio.sleep(0.05)
            await ctx.report_progress(done, 100, f"{done} of 100")
        return "Progress reported: 0, 50, 100 of 100"

    @mcp.tool()
    async def test_logging_tool(ctx: Context) -> str:
        """Emits one info log entry. At 2026-07-28 it must reach the client only when the
        request's `_meta` carried `io.modelcontextprotocol/logLevel` (SEP-2575)."""
        await ctx.info("test_logging_tool ran")
        return "logged one entry"

    @mcp.tool()
    async def test_reconnection(ctx: Context) -> str:
        """Closes its own SSE stream mid-call, so the client must resume (SEP-1699)."""
        await ctx.info("before the stream closes")
        await ctx.close_sse_stream()
        await asyncio.sleep(0.2)  # the client reconnects after SSE_RETRY_MS
        await ctx.info("after the client resumed")
        return "Reconnection test completed"

    # ---- server-to-client requests (back-channel on 2025-11-25) -----------------------

    @mcp.tool()
    async def test_sampling(prompt: str, ctx: Context) -> str:
        """Asks the client's LLM to answer `prompt` (sampling/createMessage)."""
        result = await ctx.session.create_message(
            messages=[SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
            max_tokens=100,
            # Ties the request to this call's stream; otherwise it would go to the
            # standalone GET stream, which the client may not have opened.
            related_request_id=ctx.request_id,
        )
        text = result.content.text if result.content.type == "text" else "(non-text)"
        return f"LLM response: {text}"

    @mcp.tool()
    async def test_elicitation(message: str, ctx: Context) -> str:
        """Asks the user for a user name and e-mail address (elicitation/create)."""
        outcome = await ctx.elicit(message=message, schema=Contact)
        data = outcome.data.model_dump() if outcome.action == "accept" else {}
        return f"User response: action={outcome.action}, content={json.dumps(data)}"

    @mcp.tool()
    async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
        """Elicits a form whose every primitive field has a default (SEP-1034)."""
        outcome = await ctx.elicit(message="Please review your profile", schema=ProfileWithDefaults)
        data = outcome.data.model_dump() if outcome.action == "accept" else {}
        return f"Elicitation result: action={outcome.action}, content={json.dumps(data)}"

    @mcp.tool()
    async def test_elicitation_sep1330_enums(ctx: Context) -> str:
        """Elicits a form with the five enum shapes of SEP-1330."""
        result = await ctx.session.elicit_form(
            message="Please choose",
            requested_schema=ENUM_SHAPES_SCHEMA,
            related_request_id=ctx.request_id,
        )
        return f"Elicitation result: action={result.action}, content={json.dumps(result.content)}"

    @mcp.tool()
    async def test_streaming_elicitation(
        contact: Annotated[Contact, Resolve(stream_then_ask)], ctx: Context
    ) -> str:
        """Streams progress and a log entry, then elicits. At 2026-07-28 the question must
        come back as an `input_required` result, never as a request on the stream."""
        await ctx.report_progress(2, 2, "answer received")
        return f"Streaming elicitation answered by {contact.username}"

    @mcp.tool()
    async def test_missing_capability(ctx: Context) -> str:
        """Needs the client's `sampling` capability; refuses with -32021 without it."""
        capabilities = ctx.client_capabilities
        if capabilities is None or capabilities.sampling is None:
            raise MCPError(
                code=MISSING_REQUIRED_CLIENT_CAPABILITY,
                message="test_missing_capability needs the client capability 'sampling'",
                data={"requiredCapabilities": {"sampling": {}}},
            )
        return "client declared sampling"

    # ---- SEP-2243: a parameter mirrored into a Mcp-Param-* header ----------------------

    @mcp.tool()
    def test_x_mcp_header(
        region: Annotated[
            str,
            Field(
                description="Also sent as the Mcp-Param-Region header",
                json_schema_extra={"x-mcp-header": "Region"},
            ),
        ] = "unset",
    ) -> str:
        """Echoes a parameter that clients mirror into `Mcp-Param-Region`."""
        return f"region={region}"

    # ---- list changes for subscriptions/listen (2026-07-28) ---------------------------

    def ephemeral() -> str:
        """Exists for an instant, to change the lists."""
        return "ephemeral"

    @mcp.tool()
    async def test_trigger_tool_change(ctx: Context) -> str:
        """Adds and removes a tool, then announces that the tool list changed."""
        mcp.add_tool(ephemeral, name="test_ephemeral_tool")
        mcp.remove_tool("test_ephemeral_tool")
        await ctx.notify_tools_changed()
        return "tools changed"

    @mcp.tool()
    async def test_trigger_prompt_change(ctx: Context) -> str:
        """Adds and removes a prompt, then announces that the prompt list changed."""
        mcp.add_prompt(Prompt.from_function(ephemeral, name="test_ephemeral_prompt"))
        mcp.remove_prompt("test_ephemeral_prompt")
        await ctx.notify_prompts_changed()
        return "prompts changed"

    # ---- SEP-2322 multi round-trip requests (2026-07-28) ------------------------------
    # The SDK seals `request_state` (RequestStateBoundary), so tampering is rejected
    # before a tool runs; the tools see plaintext.

    @mcp.tool()
    async def test_input_required_result_elicitation(ctx: Context) -> str | InputRequiredResult:
        """Asks for a name (input key `user_name`), then greets."""
        answer = _accepted(ctx.input_responses, "user_name")
        if answer is None:
            return InputRequiredResult(input_requests={"user_name": _ask("Your name?", "name")})
        return f"Hello, {answer.get('name', 'stranger')}!"

    @mcp.tool()
    async def test_input_required_result_sampling(ctx: Context) -> str | InputRequiredResult:
        """Asks the client's LLM one question, then reports its answer."""
        answer = (ctx.input_responses or {}).get("llm")
        if not isinstance(answer, CreateMessageResult):
            return InputRequiredResult(input_requests={"llm": _sample("Capital of France?")})
        text = answer.content.text if answer.content.type == "text" else "(non-text)"
        return f"The model answered: {text}"

    @mcp.tool()
    async def test_input_required_result_list_roots(ctx: Context) -> str | InputRequiredResult:
        """Asks for the client's roots, then counts them."""
        answer = (ctx.input_responses or {}).get("roots")
        if not isinstance(answer, ListRootsResult):
            return InputRequiredResult(input_requests={"roots": ListRootsRequest()})
        return f"{len(answer.roots)} root(s)"

    @mcp.tool()
    async def test_input_required_result_request_state(ctx: Context) -> str | InputRequiredResult:
        """Completes only when the answer arrives together with the state it issued."""
        if ctx.request_state == "awaiting-confirmation" and "confirm" in (
            ctx.input_responses or {}
        ):
            return "confirmed with the state this server issued"
        return InputRequiredResult(
            input_requests={"confirm": _ask("Confirm?", "ok")},
            request_state="awaiting-confirmation",
        )

    @mcp.tool()
    async def test_input_required_result_multiple_inputs(
        ctx: Context,
    ) -> str | InputRequiredResult:
        """Asks for an elicitation, a sampling and the roots in one round."""
        wanted = {"name", "greeting", "roots"}
        if wanted <= set(ctx.input_responses or {}):
            return "received all three inputs"
        return InputRequiredResult(
            input_requests={
                "name": _ask("Your name?", "name"),
                "greeting": _sample("Write a greeting"),
                "roots": ListRootsRequest(),
            },
            request_state="three-inputs",
        )

    @mcp.tool()
    async def test_input_required_result_multi_round(ctx: Context) -> str | InputRequiredResult:
        """Three rounds: name, then colour, then the answer; the state evolves each round."""
        state = json.loads(ctx.request_state) if ctx.request_state else {}
        responses = ctx.input_responses or {}
        if state.get("round") == 1 and (name := _accepted(responses, "name")) is not None:
            return InputRequiredResult(
                input_requests={"colour": _ask("Favourite colour?", "color")},
                request_state=json.dumps({"round": 2, "name": name.get("name")}),
            )
        if state.get("round") == 2 and (colour := _accepted(responses, "colour")) is not None:
            return f"{state.get('name')} likes {colour.get('color')}"
        # First round, or an answer that does not fit the round: (re)start.
        return InputRequiredResult(
            input_requests={"name": _ask("Your name?", "name")},
            request_state=json.dumps({"round": 1}),
        )

    @mcp.tool()
    async def test_input_required_result_tampered_state(
        ctx: Context,
    ) -> str | InputRequiredResult:
        """Issues a state; the SDK refuses an altered echo before this body runs again."""
        if ctx.request_state is None:
            return InputRequiredResult(
                input_requests={"confirm": _ask("Confirm?", "ok")}, request_state="issued"
            )
        return f"state came back intact: {ctx.request_state}"

    @mcp.tool()
    async def test_input_required_result_capabilities(ctx: Context) -> str | InputRequiredResult:
        """Asks only through the capabilities the client declared."""
        caps = ctx.client_capabilities
        requests: dict[str, InputRequest] = {}
        if caps is not None and caps.sampling is not None:
            requests["llm"] = _sample("Say hello")
        if caps is not None and caps.elicitation is not None:
            requests["name"] = _ask("Your name?", "name")
        if caps is not None and caps.roots is not None:
            requests["roots"] = ListRootsRequest()
        if not requests or set(requests) <= set(ctx.input_responses or {}):
            return "nothing (more) to ask"
        return InputRequiredResult(input_requests=requests, request_state="capability-gated")

    # ---- resources -------------------------------------------------------------------

    @mcp.resource("test://static-text", mime_type="text/plain")
    def static_text() -> str:
        """A fixed text resource."""
        return "This is the content of the static text resource."

    @mcp.resource("test://static-binary", mime_type="image/png")
    def static_binary() -> bytes:
        """A fixed binary resource (the 1x1 PNG)."""
        return PNG

    @mcp.resource("test://template/{id}/data", mime_type="application/json")
    def templated(id: str) -> str:
        """A resource template; the id is substituted into the content."""
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})

    @mcp.resource("test://watched-resource", mime_type="text/plain")
    def watched() -> str:
        """A resource clients subscribe to."""
        return "Watched resource content"

    # ---- prompts ---------------------------------------------------------------------

    @mcp.prompt()
    def test_simple_prompt() -> list[UserMessage]:
        """A prompt without arguments."""
        return [UserMessage(content=TextContent(type="text", text="This is a simple prompt."))]

    @mcp.prompt()
    def test_prompt_with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
        """A prompt with two required arguments."""
        text = f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"
        return [UserMessage(content=TextContent(type="text", text=text))]

    @mcp.prompt()
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:
        """A prompt that embeds the resource it is given."""
        contents = TextResourceContents(
            uri=resourceUri, mime_type="text/plain", text="Embedded resource content."
        )
        return [
            UserMessage(content=EmbeddedResource(type="resource", resource=contents)),
            UserMessage(content=TextContent(type="text", text="Summarise the resource above.")),
        ]

    @mcp.prompt()
    def test_prompt_with_image() -> list[UserMessage]:
        """A prompt with an image."""
        return [
            UserMessage(content=ImageContent(type="image", data=_b64(PNG), mime_type="image/png")),
            UserMessage(content=TextContent(type="text", text="Describe the image above.")),
        ]

    @mcp.prompt()
    async def test_input_required_result_prompt(
        ctx: Context,
    ) -> list[UserMessage] | InputRequiredResult:
        """prompts/get can ask for input too (SEP-2322)."""
        answer = _accepted(ctx.input_responses, "context")
        if answer is None:
            return InputRequiredResult(input_requests={"context": _ask("Context?", "context")})
        text = f"Use this context: {answer.get('context', '')}"
        return [UserMessage(content=TextContent(type="text", text=text))]

    # ---- completion ------------------------------------------------------------------

    @mcp.completion()
    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion:
        """Suggests values that extend what the user typed."""
        candidates = [f"{argument.value}-{n}" for n in ("one", "two", "three")]
        return Completion(values=candidates, total=len(candidates), has_more=False)

    # ---- 2025-11-25 handlers without an MCPServer API in mcp 2.3 ----------------------
    # (so they go to the low-level server; the 2026-07-28 wire must still answer these
    # removed methods with 404/-32601, which the SDK does by version).

    async def set_level(
        ctx: ServerRequestContext[Any], params: SetLevelRequestParams
    ) -> EmptyResult:
        log_level["level"] = params.level
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

    lowlevel = mcp._lowlevel_server
    lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument(
        "--store", default=None, help="mcp-sessions store URL (default memory://; e.g. redis://…)"
    )
    parser.add_argument("--log-level", default="warning", help="uvicorn log level")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    app = build_app(store_url=args.store)
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


if __name__ == "__main__":
    main()
