"""The conformance suite's "everything" server on FastMCP 4, with mcp-sessions installed
(issue #14): the same tools, resources and prompts by the same names as fixture_server.py
(reusing its event store, and the media and schemas of fixture_payloads.py), written with
FastMCP's own APIs, and ``mcp_sessions.fastmcp.Sessions`` installed as an application
would (``sessions.install``, then ``mcp.http_app()``, which keeps legacy ``Mcp-Session-Id``
sessions in the store).

Run:  python tests/conformance/fastmcp_fixture.py --port 3001 [--store URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastmcp import Context, FastMCP
from fastmcp.prompts import Message
from fastmcp.tools import Tool
from mcp.server import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.types import (
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    AudioContent,
    Completion,
    CompletionArgument,
    CompletionContext,
    CreateMessageResult,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    InputRequest,
    InputRequiredResult,
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
from pydantic import Field
from starlette.applications import Starlette

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.conformance.fixture_payloads import (
    ENUM_SHAPES_SCHEMA,
    JSON_SCHEMA_2020_12,
    PNG,
    WAV,
    Contact,
    ProfileWithDefaults,
    _accepted,
    _ask,
    _b64,
    _sample,
)
from tests.conformance.fixture_server import MCP_PATH, SERVER_NAME, SSE_RETRY_MS, MemoryEventStore

from mcp_sessions.core.records import JSONObject
from mcp_sessions.fastmcp import CurrentSession, Sessions
from mcp_sessions.server import uvicorn_config

MODERN = "2026-07-28"


def build_sessions(store_url: str | None = None) -> Sessions:
    """As fixture_server.build_sessions: every carrier, implicit lifecycle, no fallback."""
    return Sessions(
        store=store_url or "memory://",
        lifecycle="implicit",
        handle_fallback=False,
        audience=SERVER_NAME,
    )


def _modern(ctx: Context) -> bool:
    request = ctx.request_context
    return request is not None and request.protocol_version == MODERN


def build_server(sessions: Sessions) -> FastMCP[Any]:
    subscribed: set[str] = set()
    mcp: FastMCP[Any] = FastMCP(
        name=SERVER_NAME,
        version="0.1.0",
        instructions="Fixture for the MCP conformance suite (mcp-sessions on FastMCP).",
        # FastMCP inlines $ref and drops $defs by default (for clients that cannot follow
        # references); json_schema_2020_12_tool's schema must reach tools/list as written.
        dereference_schemas=False,
    )
    sessions.install(mcp)

    def json_schema_tool() -> str:
        """Carries a JSON Schema 2020-12 inputSchema (SEP-1613, SEP-2106)."""
        return "schema preserved"

    schema_tool = Tool.from_function(json_schema_tool, name="json_schema_2020_12_tool")
    mcp.add_tool(schema_tool.model_copy(update={"parameters": JSON_SCHEMA_2020_12}))

    @mcp.tool
    async def session_counter(session: CurrentSession) -> int:
        """Counts the calls of this session (1 on the first); the count lives in the store."""

        def bump(state: JSONObject) -> int:
            value = int(state.get("count", 0)) + 1
            state["count"] = value
            return value

        return await session.update(bump)

    # ---- content ---------------------------------------------------------------------

    @mcp.tool
    def test_simple_text() -> str:
        """Returns one text block."""
        return "This is a simple text response for testing."

    @mcp.tool(output_schema=None)
    def test_image_content() -> list[ImageContent]:
        """Returns one PNG image."""
        return [ImageContent(type="image", data=_b64(PNG), mime_type="image/png")]

    @mcp.tool(output_schema=None)
    def test_audio_content() -> list[AudioContent]:
        """Returns one WAV clip."""
        return [AudioContent(type="audio", data=_b64(WAV), mime_type="audio/wav")]

    @mcp.tool(output_schema=None)
    def test_embedded_resource() -> list[EmbeddedResource]:
        """Returns one embedded text resource."""
        contents = TextResourceContents(
            uri="test://embedded-resource",
            mime_type="text/plain",
            text="This is an embedded resource content.",
        )
        return [EmbeddedResource(type="resource", resource=contents)]

    @mcp.tool(output_schema=None)
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

    @mcp.tool
    def test_error_handling() -> str:
        """Always fails: FastMCP turns the exception into an `isError` result."""
        raise RuntimeError("This tool intentionally returns an error for testing")

    # ---- notifications during a call --------------------------------------------------

    @mcp.tool
    async def test_tool_with_logging(ctx: Context) -> str:
        """Sends three info log entries, about 50 ms apart."""
        for step, text in enumerate(
            ("Tool execution started", "Tool processing data", "Tool execution completed")
        ):
            if step:
                await asyncio.sleep(0.05)
            await ctx.info(text)
        return "Tool with logging executed successfully"

    @mcp.tool
    async def test_tool_with_progress(ctx: Context) -> str:
        """Reports progress 0, 50 and 100 of 100."""
        for step, done in enumerate((0, 50, 100)):
            if step:
                await asyncio.sleep(0.05)
            await ctx.report_progress(done, 100, f"{done} of 100")
        return "Progress reported: 0, 50, 100 of 100"

    @mcp.tool
    async def test_logging_tool(ctx: Context) -> str:
        """Emits one info log entry (2026-07-28 drops it unless the request opted in)."""
        await ctx.info("test_logging_tool ran")
        return "logged one entry"

    @mcp.tool
    async def test_reconnection(ctx: Context) -> str:
        """Closes its own SSE stream mid-call, so the client must resume (SEP-1699)."""
        await ctx.info("before the stream closes")
        await ctx.close_sse_stream()
        await asyncio.sleep(0.2)
        await ctx.info("after the client resumed")
        return "Reconnection test completed"

    # ---- server-to-client requests (back-channel on 2025-11-25) -----------------------

    @mcp.tool
    async def test_sampling(prompt: str, ctx: Context) -> str:
        """Asks the client's LLM to answer `prompt` (sampling/createMessage)."""
        result = await ctx.session.create_message(
            messages=[SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
            max_tokens=100,
            related_request_id=ctx.request_id,
        )
        text = result.content.text if result.content.type == "text" else "(non-text)"
        return f"LLM response: {text}"

    @mcp.tool
    async def test_elicitation(message: str, ctx: Context) -> str:
        """Asks the user for a user name and e-mail address (elicitation/create)."""
        outcome = await ctx.elicit(message, Contact)
        data = outcome.data.model_dump() if outcome.action == "accept" else {}
        return f"User response: action={outcome.action}, content={json.dumps(data)}"

    @mcp.tool
    async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
        """Elicits a form whose every primitive field has a default (SEP-1034)."""
        outcome = await ctx.elicit("Please review your profile", ProfileWithDefaults)
        data = outcome.data.model_dump() if outcome.action == "accept" else {}
        return f"Elicitation result: action={outcome.action}, content={json.dumps(data)}"

    @mcp.tool
    async def test_elicitation_sep1330_enums(ctx: Context) -> str:
        """Elicits a form with the five enum shapes of SEP-1330."""
        result = await ctx.session.elicit_form(
            message="Please choose",
            requested_schema=ENUM_SHAPES_SCHEMA,
            related_request_id=ctx.request_id,
        )
        return f"Elicitation result: action={result.action}, content={json.dumps(result.content)}"

    @mcp.tool(output_schema=None)
    async def test_streaming_elicitation(ctx: Context) -> Any:
        """Streams progress and a log entry, then elicits: over the back-channel on
        2025-11-25, as an `input_required` result on 2026-07-28."""
        if _modern(ctx):
            answer = _accepted(ctx.input_responses, "contact")
            if answer is None:
                await ctx.report_progress(1, 2, "streaming before the question")
                await ctx.info("about to ask the user")
                question = _ask("Who is streaming?", "username")
                return InputRequiredResult(input_requests={"contact": question})
            await ctx.report_progress(2, 2, "answer received")
            return f"Streaming elicitation answered by {answer.get('username')}"
        await ctx.report_progress(1, 2, "streaming before the question")
        await ctx.info("about to ask the user")
        outcome = await ctx.elicit("Who is streaming?", Contact)
        await ctx.report_progress(2, 2, "answer received")
        name = outcome.data.username if outcome.action == "accept" else "nobody"
        return f"Streaming elicitation answered by {name}"

    @mcp.tool
    async def test_missing_capability(ctx: Context) -> str:
        """Needs the client's `sampling` capability; refuses with -32021 without it."""
        capabilities = ctx.session.client_capabilities
        if capabilities is None or capabilities.sampling is None:
            raise MCPError(
                code=MISSING_REQUIRED_CLIENT_CAPABILITY,
                message="test_missing_capability needs the client capability 'sampling'",
                data={"requiredCapabilities": {"sampling": {}}},
            )
        return "client declared sampling"

    @mcp.tool
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

    # ---- list changes -----------------------------------------------------------------

    def ephemeral() -> str:
        """Exists for an instant, to change the lists."""
        return "ephemeral"

    @mcp.tool
    async def test_trigger_tool_change(ctx: Context) -> str:
        """Adds and removes a tool (FastMCP announces the changed list)."""
        mcp.add_tool(Tool.from_function(ephemeral, name="test_ephemeral_tool"))
        mcp.remove_tool("test_ephemeral_tool")
        return "tools changed"

    @mcp.tool
    async def test_trigger_prompt_change(ctx: Context) -> str:
        """Adds and removes a prompt (FastMCP announces the changed list)."""
        from fastmcp.prompts import Prompt

        mcp.add_prompt(Prompt.from_function(ephemeral, name="test_ephemeral_prompt"))
        mcp.local_provider.remove_prompt("test_ephemeral_prompt")
        return "prompts changed"

    # ---- SEP-2322 multi round-trip requests (2026-07-28) ------------------------------

    @mcp.tool(output_schema=None)
    async def test_input_required_result_elicitation(ctx: Context) -> Any:
        """Asks for a name (input key `user_name`), then greets."""
        answer = _accepted(ctx.input_responses, "user_name")
        if answer is None:
            return InputRequiredResult(input_requests={"user_name": _ask("Your name?", "name")})
        return f"Hello, {answer.get('name', 'stranger')}!"

    @mcp.tool(output_schema=None)
    async def test_input_required_result_sampling(ctx: Context) -> Any:
        """Asks the client's LLM one question, then reports its answer."""
        answer = (ctx.input_responses or {}).get("llm")
        if not isinstance(answer, CreateMessageResult):
            return InputRequiredResult(input_requests={"llm": _sample("Capital of France?")})
        text = answer.content.text if answer.content.type == "text" else "(non-text)"
        return f"The model answered: {text}"

    @mcp.tool(output_schema=None)
    async def test_input_required_result_list_roots(ctx: Context) -> Any:
        """Asks for the client's roots, then counts them."""
        answer = (ctx.input_responses or {}).get("roots")
        if not isinstance(answer, ListRootsResult):
            return InputRequiredResult(input_requests={"roots": ListRootsRequest()})
        return f"{len(answer.roots)} root(s)"

    @mcp.tool(output_schema=None)
    async def test_input_required_result_request_state(ctx: Context) -> Any:
        """Completes only when the answer arrives together with the state it issued."""
        if ctx.request_state == "awaiting-confirmation" and "confirm" in (
            ctx.input_responses or {}
        ):
            return "confirmed with the state this server issued"
        return InputRequiredResult(
            input_requests={"confirm": _ask("Confirm?", "ok")},
            request_state="awaiting-confirmation",
        )

    @mcp.tool(output_schema=None)
    async def test_input_required_result_multiple_inputs(ctx: Context) -> Any:
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

    @mcp.tool(output_schema=None)
    async def test_input_required_result_multi_round(ctx: Context) -> Any:
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
        return InputRequiredResult(
            input_requests={"name": _ask("Your name?", "name")},
            request_state=json.dumps({"round": 1}),
        )

    @mcp.tool(output_schema=None)
    async def test_input_required_result_tampered_state(ctx: Context) -> Any:
        """Issues a state; the SDK refuses an altered echo before this body runs again."""
        if ctx.request_state is None:
            return InputRequiredResult(
                input_requests={"confirm": _ask("Confirm?", "ok")}, request_state="issued"
            )
        return f"state came back intact: {ctx.request_state}"

    @mcp.tool(output_schema=None)
    async def test_input_required_result_capabilities(ctx: Context) -> Any:
        """Asks only through the capabilities the client declared."""
        caps = ctx.session.client_capabilities
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

    @mcp.prompt
    def test_simple_prompt() -> list[Message]:
        """A prompt without arguments."""
        return [Message("This is a simple prompt.")]

    @mcp.prompt
    def test_prompt_with_arguments(arg1: str, arg2: str) -> list[Message]:
        """A prompt with two required arguments."""
        return [Message(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")]

    @mcp.prompt
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[Message]:
        """A prompt that embeds the resource it is given."""
        contents = TextResourceContents(
            uri=resourceUri, mime_type="text/plain", text="Embedded resource content."
        )
        return [
            Message(EmbeddedResource(type="resource", resource=contents)),
            Message("Summarise the resource above."),
        ]

    @mcp.prompt
    def test_prompt_with_image() -> list[Message]:
        """A prompt with an image."""
        return [
            Message(ImageContent(type="image", data=_b64(PNG), mime_type="image/png")),
            Message("Describe the image above."),
        ]

    @mcp.prompt
    async def test_input_required_result_prompt(ctx: Context) -> Any:
        """prompts/get can ask for input too (SEP-2322)."""
        answer = _accepted(ctx.input_responses, "context")
        if answer is None:
            return InputRequiredResult(input_requests={"context": _ask("Context?", "context")})
        return [Message(f"Use this context: {answer.get('context', '')}")]

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

    # ---- 2025-11-25 handlers FastMCP does not serve itself --------------------------

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

    lowlevel = mcp._mcp_server
    if lowlevel.get_request_handler("resources/subscribe") is None:
        lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
        lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)
    if lowlevel.get_request_handler("logging/setLevel") is None:

        async def set_level(
            ctx: ServerRequestContext[Any], params: SetLevelRequestParams
        ) -> EmptyResult:
            return EmptyResult()

        lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)
    return mcp


def build_app(*, store_url: str | None = None) -> Starlette:
    sessions = build_sessions(store_url)
    mcp = build_server(sessions)
    app: Starlette = mcp.http_app(
        path=MCP_PATH,
        event_store=MemoryEventStore(),
        retry_interval=SSE_RETRY_MS,
        host_origin_protection="auto",
    )
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument("--store", default=None, help="mcp-sessions store URL")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    app = build_app(store_url=args.store)
    config = uvicorn_config(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=2,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
