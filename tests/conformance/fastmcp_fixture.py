"""The conformance suite's "everything" server on FastMCP 4, with mcp-sessions installed
(issue #14): the tools, resources and completion of fixture_server.py's modules registered
here too, the very same bodies (their SDK ``Context`` parameter swapped for FastMCP's, their
session parameters by ``mcp_sessions.fastmcp.portable_tool``), and written with FastMCP's
own APIs only what the two frameworks do differently (prompt messages, a Resolve parameter,
list changes). ``mcp_sessions.fastmcp.Sessions`` is installed as an application would
(``sessions.install``, then ``mcp.http_app()``, which keeps legacy ``Mcp-Session-Id``
sessions in the store).

Run:  python tests/conformance/fastmcp_fixture.py --port 3001 [--store URL]
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastmcp import Context, FastMCP
from fastmcp.prompts import Message
from fastmcp.tools import Tool
from mcp.server.mcpserver import Context as SdkContext
from mcp.types import (
    InputRequiredResult,
)
from starlette.applications import Starlette

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.conformance.fixture_catalog import PROMPTS, RESOURCES, complete
from tests.conformance.fixture_input_tools import BACK_CHANNEL_TOOLS, INPUT_REQUIRED_TOOLS
from tests.conformance.fixture_payloads import (
    JSON_SCHEMA_2020_12,
    Contact,
    _accepted,
    _ask,
)
from tests.conformance.fixture_server import (
    MCP_PATH,
    SERVER_NAME,
    SSE_RETRY_MS,
    MemoryEventStore,
    add_removed_methods,
    serve_fixture,
    session_counter,
    sessions_options,
)
from tests.conformance.fixture_tools import (
    CONTENT_TOOLS,
    NOTIFICATION_TOOLS,
    json_schema_tool,
    test_x_mcp_header,
)

from mcp_sessions.fastmcp import Sessions, portable_tool

MODERN = "2026-07-28"


def build_sessions(store_url: str | None = None) -> Sessions:
    """fixture_server.build_sessions's options, on FastMCP."""
    return Sessions(**sessions_options(store_url))


def _on_fastmcp(
    fn: Callable[..., Any], convert: Callable[[Any], Any] | None = None
) -> Callable[..., Any]:
    """An MCPServer fixture tool or prompt, ready for FastMCP: the SDK's ``Context`` parameter
    becomes FastMCP's (the bodies call only what both offer), ``convert`` (if given) turns its
    result into what FastMCP takes, then ``portable_tool`` maps the session parameters. A
    plain function with nothing to convert is taken as it is."""
    if convert is None and not inspect.iscoroutinefunction(fn):
        return fn
    # The fixture modules postpone annotations; the swap needs the real types.
    signature = inspect.signature(fn, eval_str=True)
    parameters = [
        p.replace(annotation=Context) if p.annotation is SdkContext else p
        for p in signature.parameters.values()
    ]

    @functools.wraps(fn)
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result if convert is None else convert(result)

    del wrapped.__wrapped__  # FastMCP reads __signature__ alone
    wrapped.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapped.__annotations__ = {p.name: p.annotation for p in parameters}
    wrapped.__annotations__["return"] = signature.return_annotation
    return portable_tool(wrapped)


def _messages(result: Any) -> Any:
    """A fixture prompt's bare content as FastMCP's Messages (MCPServer takes it bare)."""
    return [Message(item) for item in result] if isinstance(result, list) else result


def add_shared_tools(mcp: FastMCP[Any], *tools: Callable[..., Any]) -> None:
    """Registers fixture_server.py's tool bodies. A tool that returns content blocks or an
    ``input_required`` result gets no output schema (FastMCP would wrap it as structured
    content); one that returns a plain value keeps FastMCP's default."""
    for fn in tools:
        returns = inspect.signature(fn, eval_str=True).return_annotation
        options: dict[str, Any] = {} if returns in (str, int) else {"output_schema": None}
        mcp.tool(_on_fastmcp(fn), **options)


def _modern(ctx: Context) -> bool:
    request = ctx.request_context
    return request is not None and request.protocol_version == MODERN


def build_server(sessions: Sessions) -> FastMCP[Any]:
    mcp: FastMCP[Any] = FastMCP(
        name=SERVER_NAME,
        version="0.1.0",
        instructions="Fixture for the MCP conformance suite (mcp-sessions on FastMCP).",
        # FastMCP inlines $ref and drops $defs by default (for clients that cannot follow
        # references); json_schema_2020_12_tool's schema must reach tools/list as written.
        dereference_schemas=False,
    )
    sessions.install(mcp)

    schema_tool = Tool.from_function(json_schema_tool, name="json_schema_2020_12_tool")
    mcp.add_tool(schema_tool.model_copy(update={"parameters": JSON_SCHEMA_2020_12}))

    add_shared_tools(mcp, session_counter, *CONTENT_TOOLS, *NOTIFICATION_TOOLS)
    add_shared_tools(mcp, *BACK_CHANNEL_TOOLS)

    # FastMCP has no Resolve parameter: the tool streams and asks itself, over the
    # back-channel on 2025-11-25, as an `input_required` result on 2026-07-28.
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

    add_shared_tools(mcp, test_x_mcp_header)

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

    add_shared_tools(mcp, *INPUT_REQUIRED_TOOLS)
    for uri, mime_type, body in RESOURCES:
        mcp.resource(uri, mime_type=mime_type)(body)

    for prompt in PROMPTS:
        mcp.prompt(_on_fastmcp(prompt, _messages))
    mcp.completion()(complete)
    # FastMCP serves none of these 2025-11-25 methods itself.
    add_removed_methods(mcp._mcp_server)
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
    serve_fixture(build_app, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
