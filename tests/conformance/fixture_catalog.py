"""The conformance fixture's resources, prompts and completion: fixed and templated
resources (one of them for subscriptions), prompts with and without arguments, with an
embedded resource, an image, and one that asks for input (SEP-2322), and a completion
handler. fixture_server.build_server registers them on its MCPServer, and fastmcp_fixture.py
the resources and completion (module-level, framework-neutral) on FastMCP; the URIs, names
and texts are the ones the suite's scenarios check.
"""

from __future__ import annotations

import json

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.types import (
    Completion,
    CompletionArgument,
    CompletionContext,
    EmbeddedResource,
    ImageContent,
    InputRequiredResult,
    PromptReference,
    ResourceTemplateReference,
    TextContent,
    TextResourceContents,
)
from tests.conformance.fixture_payloads import PNG, _accepted, _ask, _b64


def static_text() -> str:
    """A fixed text resource."""
    return "This is the content of the static text resource."


def static_binary() -> bytes:
    """A fixed binary resource (the 1x1 PNG)."""
    return PNG


def templated(id: str) -> str:
    """A resource template; the id is substituted into the content."""
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


def watched() -> str:
    """A resource clients subscribe to."""
    return "Watched resource content"


#: Static text and binary resources, a template, and a resource to subscribe to:
#: (URI, MIME type, body).
RESOURCES = (
    ("test://static-text", "text/plain", static_text),
    ("test://static-binary", "image/png", static_binary),
    ("test://template/{id}/data", "application/json", templated),
    ("test://watched-resource", "text/plain", watched),
)


def add_resources(mcp: MCPServer) -> None:
    for uri, mime_type, body in RESOURCES:
        mcp.resource(uri, mime_type=mime_type)(body)


def add_prompts(mcp: MCPServer) -> None:
    """The prompts the scenarios get, including one that asks for input (SEP-2322)."""

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


async def complete(
    ref: PromptReference | ResourceTemplateReference,
    argument: CompletionArgument,
    context: CompletionContext | None,
) -> Completion:
    """Suggests values that extend what the user typed."""
    candidates = [f"{argument.value}-{n}" for n in ("one", "two", "three")]
    return Completion(values=candidates, total=len(candidates), has_more=False)


def add_completion(mcp: MCPServer) -> None:
    """A completion handler for prompt and resource-template arguments."""
    mcp.completion()(complete)
