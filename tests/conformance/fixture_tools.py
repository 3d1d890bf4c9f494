"""The conformance fixture's tools that answer on their own, without asking the client
anything: content of every type, notifications sent during a call (log entries, progress, a
closed SSE stream to resume), a parameter mirrored into a header (SEP-2243) and changes to
the tool and prompt lists (for subscriptions/listen). fixture_server.build_server registers
them on its MCPServer, and fastmcp_fixture.py the same bodies (module-level, in the tuples
below) on FastMCP; the names and texts are the ones the suite's scenarios check.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts.base import Prompt
from mcp.types import (
    AudioContent,
    EmbeddedResource,
    ImageContent,
    TextContent,
    TextResourceContents,
)
from pydantic import Field
from tests.conformance.fixture_payloads import PNG, WAV, _b64


def test_simple_text() -> str:
    """Returns one text block."""
    return "This is a simple text response for testing."


def test_image_content() -> list[ImageContent]:
    """Returns one PNG image."""
    return [ImageContent(type="image", data=_b64(PNG), mime_type="image/png")]


def test_audio_content() -> list[AudioContent]:
    """Returns one WAV clip."""
    return [AudioContent(type="audio", data=_b64(WAV), mime_type="audio/wav")]


def test_embedded_resource() -> list[EmbeddedResource]:
    """Returns one embedded text resource."""
    contents = TextResourceContents(
        uri="test://embedded-resource",
        mime_type="text/plain",
        text="This is an embedded resource content.",
    )
    return [EmbeddedResource(type="resource", resource=contents)]


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


def test_error_handling() -> str:
    """Always fails: the SDK turns the exception into an `isError` result."""
    raise RuntimeError("This tool intentionally returns an error for testing")


async def test_tool_with_logging(ctx: Context) -> str:
    """Sends three info log entries, about 50 ms apart."""
    for step, text in enumerate(
        ("Tool execution started", "Tool processing data", "Tool execution completed")
    ):
        if step:
            await asyncio.sleep(0.05)
        await ctx.info(text)
    return "Tool with logging executed successfully"


async def test_tool_with_progress(ctx: Context) -> str:
    """Reports progress 0, 50 and 100 of 100 (sent only when the caller gave a token)."""
    for step, done in enumerate((0, 50, 100)):
        if step:
            await asyncio.sleep(0.05)
        await ctx.report_progress(done, 100, f"{done} of 100")
    return "Progress reported: 0, 50, 100 of 100"


async def test_logging_tool(ctx: Context) -> str:
    """Emits one info log entry. At 2026-07-28 it must reach the client only when the
    request's `_meta` carried `io.modelcontextprotocol/logLevel` (SEP-2575)."""
    await ctx.info("test_logging_tool ran")
    return "logged one entry"


async def test_reconnection(ctx: Context) -> str:
    """Closes its own SSE stream mid-call, so the client must resume (SEP-1699)."""
    await ctx.info("before the stream closes")
    await ctx.close_sse_stream()
    await asyncio.sleep(0.2)  # the client reconnects after fixture_server.SSE_RETRY_MS
    await ctx.info("after the client resumed")
    return "Reconnection test completed"


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


#: Tools that return one kind of content each, several kinds at once, or an error.
CONTENT_TOOLS = (
    test_simple_text,
    test_image_content,
    test_audio_content,
    test_embedded_resource,
    test_multiple_content_types,
    test_error_handling,
)
#: Tools that send log entries or progress during the call, or close their SSE stream.
NOTIFICATION_TOOLS = (
    test_tool_with_logging,
    test_tool_with_progress,
    test_logging_tool,
    test_reconnection,
)


def json_schema_tool() -> str:
    """Carries a JSON Schema 2020-12 inputSchema (SEP-1613, SEP-2106)."""
    return "schema preserved"


def add_content_tools(mcp: MCPServer) -> None:
    for tool in CONTENT_TOOLS:
        mcp.add_tool(tool)


def add_notification_tools(mcp: MCPServer) -> None:
    for tool in NOTIFICATION_TOOLS:
        mcp.add_tool(tool)


def add_header_tool(mcp: MCPServer) -> None:
    """SEP-2243: a tool parameter that clients mirror into a `Mcp-Param-*` header."""
    mcp.add_tool(test_x_mcp_header)


def add_list_change_tools(mcp: MCPServer) -> None:
    """Tools that change the tool or prompt list and announce it (2026-07-28 listen)."""

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
