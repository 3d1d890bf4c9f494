"""The conformance fixture's tools that ask the client something before they answer:
sampling and elicitation over the back-channel (2025-11-25), a refusal for a missing client
capability (-32021), and the multi round-trip tools of SEP-2322 (2026-07-28), which return
`input_required` results instead. fixture_server.build_server registers them on its
MCPServer, and fastmcp_fixture.py the same bodies (module-level, in the tuples below) on
FastMCP (so they use only what both Contexts offer: `ctx.session.client_capabilities`,
positional `elicit` arguments); the names and texts are the ones the suite's scenarios check.
"""

from __future__ import annotations

import json
from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer, Resolve
from mcp.shared.exceptions import MCPError
from mcp.types import (
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    CreateMessageResult,
    InputRequest,
    InputRequiredResult,
    ListRootsRequest,
    ListRootsResult,
    SamplingMessage,
    TextContent,
)
from tests.conformance.fixture_payloads import (
    ENUM_SHAPES_SCHEMA,
    Contact,
    ProfileWithDefaults,
    _accepted,
    _ask,
    _sample,
    stream_then_ask,
)


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


async def test_elicitation(message: str, ctx: Context) -> str:
    """Asks the user for a user name and e-mail address (elicitation/create)."""
    outcome = await ctx.elicit(message, Contact)
    data = outcome.data.model_dump() if outcome.action == "accept" else {}
    return f"User response: action={outcome.action}, content={json.dumps(data)}"


async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
    """Elicits a form whose every primitive field has a default (SEP-1034)."""
    outcome = await ctx.elicit("Please review your profile", ProfileWithDefaults)
    data = outcome.data.model_dump() if outcome.action == "accept" else {}
    return f"Elicitation result: action={outcome.action}, content={json.dumps(data)}"


async def test_elicitation_sep1330_enums(ctx: Context) -> str:
    """Elicits a form with the five enum shapes of SEP-1330."""
    result = await ctx.session.elicit_form(
        message="Please choose",
        requested_schema=ENUM_SHAPES_SCHEMA,
        related_request_id=ctx.request_id,
    )
    return f"Elicitation result: action={result.action}, content={json.dumps(result.content)}"


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


async def test_input_required_result_elicitation(ctx: Context) -> str | InputRequiredResult:
    """Asks for a name (input key `user_name`), then greets."""
    answer = _accepted(ctx.input_responses, "user_name")
    if answer is None:
        return InputRequiredResult(input_requests={"user_name": _ask("Your name?", "name")})
    return f"Hello, {answer.get('name', 'stranger')}!"


async def test_input_required_result_sampling(ctx: Context) -> str | InputRequiredResult:
    """Asks the client's LLM one question, then reports its answer."""
    answer = (ctx.input_responses or {}).get("llm")
    if not isinstance(answer, CreateMessageResult):
        return InputRequiredResult(input_requests={"llm": _sample("Capital of France?")})
    text = answer.content.text if answer.content.type == "text" else "(non-text)"
    return f"The model answered: {text}"


async def test_input_required_result_list_roots(ctx: Context) -> str | InputRequiredResult:
    """Asks for the client's roots, then counts them."""
    answer = (ctx.input_responses or {}).get("roots")
    if not isinstance(answer, ListRootsResult):
        return InputRequiredResult(input_requests={"roots": ListRootsRequest()})
    return f"{len(answer.roots)} root(s)"


async def test_input_required_result_request_state(ctx: Context) -> str | InputRequiredResult:
    """Completes only when the answer arrives together with the state it issued."""
    if ctx.request_state == "awaiting-confirmation" and "confirm" in (ctx.input_responses or {}):
        return "confirmed with the state this server issued"
    return InputRequiredResult(
        input_requests={"confirm": _ask("Confirm?", "ok")},
        request_state="awaiting-confirmation",
    )


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


async def test_input_required_result_tampered_state(
    ctx: Context,
) -> str | InputRequiredResult:
    """Issues a state; the SDK refuses an altered echo before this body runs again."""
    if ctx.request_state is None:
        return InputRequiredResult(
            input_requests={"confirm": _ask("Confirm?", "ok")}, request_state="issued"
        )
    return f"state came back intact: {ctx.request_state}"


async def test_input_required_result_capabilities(ctx: Context) -> str | InputRequiredResult:
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


#: Tools that send sampling or elicitation requests to the client during the call (on the
#: back-channel at 2025-11-25), and one that needs a client capability.
BACK_CHANNEL_TOOLS = (
    test_sampling,
    test_elicitation,
    test_elicitation_sep1034_defaults,
    test_elicitation_sep1330_enums,
    test_missing_capability,
)
#: SEP-2322 multi round-trip tools: each returns an `input_required` result until the
#: client's answers (and, where issued, the request state) come back with the retry. The SDK
#: seals `request_state` (RequestStateBoundary), so tampering is rejected before a tool runs;
#: the tools see plaintext.
INPUT_REQUIRED_TOOLS = (
    test_input_required_result_elicitation,
    test_input_required_result_sampling,
    test_input_required_result_list_roots,
    test_input_required_result_request_state,
    test_input_required_result_multiple_inputs,
    test_input_required_result_multi_round,
    test_input_required_result_tampered_state,
    test_input_required_result_capabilities,
)


def add_back_channel_tools(mcp: MCPServer) -> None:
    for tool in BACK_CHANNEL_TOOLS:
        mcp.add_tool(tool)

    # MCPServer's own way to stream, then ask (a Resolve parameter); FastMCP's fixture has its own.
    @mcp.tool()
    async def test_streaming_elicitation(
        contact: Annotated[Contact, Resolve(stream_then_ask)], ctx: Context
    ) -> str:
        """Streams progress and a log entry, then elicits. At 2026-07-28 the question must
        come back as an `input_required` result, never as a request on the stream."""
        await ctx.report_progress(2, 2, "answer received")
        return f"Streaming elicitation answered by {contact.username}"


def add_input_required_tools(mcp: MCPServer) -> None:
    for tool in INPUT_REQUIRED_TOOLS:
        mcp.add_tool(tool)
