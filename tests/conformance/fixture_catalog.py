"""The conformance fixture's resources, prompts and completion: fixed and templated
resources (one of them for subscriptions), prompts with and without arguments, with an
embedded resource, an image, and one that asks for input (SEP-2322), and a completion
handler. fixture_server.build_server registers them on its MCPServer, and fastmcp_fixture.py
the same bodies (module-level, framework-neutral) on FastMCP; the URIs, names and texts are
the ones the suite's scenarios check.
"""

from __future__ import annotations

import json

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import (
    Completion,
    CompletionArgument,
    CompletionContext,
    EmbeddedResource,
    ImageContent,
    InputRequiredResult,
    PromptReference,
    ResourceTemplateReference,
    TextResourceContents,
)
from tests.conformance.fixture_payloads import PNG, _accepted, _ask, _b64

#: What a prompt message of these prompts holds.
PromptContent = str | EmbeddedResource | ImageContent


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


# Prompts return bare content (MCPServer makes each item a user message; fastmcp_fixture.py
# wraps them in FastMCP's Message).


def test_simple_prompt() -> list[PromptContent]:
    """A prompt without arguments."""
    return ["This is a simple prompt."]


def test_prompt_with_arguments(arg1: str, arg2: str) -> list[PromptContent]:
    """A prompt with two required arguments."""
    return [f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"]


def test_prompt_with_embedded_resource(resourceUri: str) -> list[PromptContent]:
    """A prompt that embeds the resource it is given."""
    contents = TextResourceContents(
        uri=resourceUri, mime_type="text/plain", text="Embedded resource content."
    )
    return [
        EmbeddedResource(type="resource", resource=contents),
        "Summarise the resource above.",
    ]


def test_prompt_with_image() -> list[PromptContent]:
    """A prompt with an image."""
    return [
        ImageContent(type="image", data=_b64(PNG), mime_type="image/png"),
        "Describe the image above.",
    ]


async def test_input_required_result_prompt(
    ctx: Context,
) -> list[PromptContent] | InputRequiredResult:
    """prompts/get can ask for input too (SEP-2322)."""
    answer = _accepted(ctx.input_responses, "context")
    if answer is None:
        return InputRequiredResult(input_requests={"context": _ask("Context?", "context")})
    return [f"Use this context: {answer.get('context', '')}"]


#: The prompts the scenarios get, including one that asks for input (SEP-2322).
PROMPTS = (
    test_simple_prompt,
    test_prompt_with_arguments,
    test_prompt_with_embedded_resource,
    test_prompt_with_image,
    test_input_required_result_prompt,
)


def add_prompts(mcp: MCPServer) -> None:
    for prompt in PROMPTS:
        mcp.prompt()(prompt)


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
