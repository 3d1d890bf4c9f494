"""The client program that the official MCP conformance suite drives (`conformance client`).

Contract (the suite's): for each scenario the suite starts a mock server and runs
`<command> <server-url>`; the URL is the last argument. It sets
`MCP_CONFORMANCE_SCENARIO` (the scenario name), `MCP_CONFORMANCE_PROTOCOL_VERSION` (the wire
to speak: up to 2025-11-25 the initialize handshake, 2026-07-28 the per-request envelope) and,
for some scenarios, `MCP_CONFORMANCE_CONTEXT` (JSON). The program must exit, 0 on success,
within the suite's --timeout. Logs go to stderr.

Every scenario connects through `open_client`, which uses the mcp-sessions client
(`mcp_sessions.client.Client`, a subclass of the SDK's `mcp.Client`) exactly as an application
would after the one-line import swap (issue #6): every request carries a session id in
`_meta["dev.mcpsessions/sessionId"]` and the `Mcp-Client-Session-Id` header, the client
declares the extension, state tokens go to a jar and legacy 404s are handled per SEP-1372.
The suite's mock servers know nothing of the extension, so this shows that the helpers never
break a plain MCP exchange.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import mcp_types as types
from mcp.client.auth import OAuthClientProvider
from mcp.client.context import ClientRequestContext
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import AnyUrl

from mcp_sessions.client import Client

log = logging.getLogger("conformance.client")

SCENARIO = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
PROTOCOL_VERSION = os.environ.get("MCP_CONFORMANCE_PROTOCOL_VERSION")
REDIRECT_URI = (
    "http://localhost:3000/callback"  # never listened on: redirects are read, not followed
)
# The client id document URL the suite's auth/basic-cimd scenario expects (SEP-991).
CLIENT_METADATA_URL = "https://conformance-test.local/client-metadata.json"


def context() -> dict[str, Any]:
    raw = os.environ.get("MCP_CONFORMANCE_CONTEXT")
    return dict(json.loads(raw)) if raw else {}


def connect_mode() -> str:
    """`legacy` (initialize handshake) on a handshake-era wire, else `auto` (server/discover)."""
    return "legacy" if PROTOCOL_VERSION in HANDSHAKE_PROTOCOL_VERSIONS else "auto"


# ---------------------------------------------------------------------------------------------
# >>> mcp-sessions client helpers hook (issue #6) <<<
# ---------------------------------------------------------------------------------------------


def open_client(url: str, **options: Any) -> Client:
    """The client every scenario uses: the mcp-sessions `Client` (jar in memory, a new
    session id per run), on the wire the suite asks for."""
    return Client(url, mode=connect_mode(), **options)


# ---------------------------------------------------------------------------------------------
# Callbacks for server-to-client requests
# ---------------------------------------------------------------------------------------------


async def sample(
    ctx: ClientRequestContext, params: types.CreateMessageRequestParams
) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text="(conformance client: no model here)"),
        model="none",
    )


async def no_roots(ctx: ClientRequestContext) -> types.ListRootsResult:
    return types.ListRootsResult(roots=[])


async def accept_defaults(
    ctx: ClientRequestContext, params: types.ElicitRequestParams
) -> types.ElicitResult:
    """Accepts a form with every field the schema gives a default for (SEP-1034)."""
    content: dict[str, Any] = {}
    if isinstance(params, types.ElicitRequestFormParams):
        for name, schema in params.requested_schema.get("properties", {}).items():
            if isinstance(schema, dict) and "default" in schema:
                content[name] = schema["default"]
    return types.ElicitResult(action="accept", content=content)


def placeholder_arguments(input_schema: dict[str, Any]) -> dict[str, Any]:
    """A value of the right JSON type for every required argument."""
    placeholders = {"string": "x", "integer": 0, "number": 0, "boolean": False}
    placeholders |= {"object": {}, "array": [], "null": None}
    properties = input_schema.get("properties", {})
    return {
        name: placeholders.get(properties.get(name, {}).get("type"), "x")
        for name in input_schema.get("required", [])
    }


# ---------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------

Scenario = Callable[[str], Awaitable[None]]
SCENARIOS: dict[str, Scenario] = {}


def scenario(*names: str) -> Callable[[Scenario], Scenario]:
    def register(fn: Scenario) -> Scenario:
        for name in names:
            SCENARIOS[name] = fn
        return fn

    return register


@scenario("initialize", "json-schema-ref-no-deref")
async def list_tools_only(url: str) -> None:
    """Connect and list tools (json-schema-ref-no-deref: without fetching a network `$ref`)."""
    async with open_client(url) as client:
        listed = await client.list_tools()
        log.info("tools: %s", [tool.name for tool in listed.tools])


@scenario("tools_call", "request-metadata")
async def add_numbers(url: str) -> None:
    """Call `add_numbers`, declaring every client capability (request-metadata inspects the
    per-request `_meta` envelope and the MCP-Protocol-Version header on each request)."""
    async with open_client(
        url,
        sampling_callback=sample,
        list_roots_callback=no_roots,
        elicitation_callback=accept_defaults,
    ) as client:
        await client.list_tools()
        result = await client.call_tool("add_numbers", {"a": 5, "b": 3})
        log.info("add_numbers: %s", result.content)


@scenario("sse-retry")
async def reconnect(url: str) -> None:
    """The mock closes the SSE stream mid-call; the SDK must wait `retry` and resume with
    Last-Event-ID (SEP-1699)."""
    async with open_client(url) as client:
        await client.list_tools()
        result = await client.call_tool("test_reconnection", {})
        log.info("test_reconnection: %s", result.content)


@scenario("elicitation-sep1034-client-defaults")
async def elicitation_defaults(url: str) -> None:
    async with open_client(url, elicitation_callback=accept_defaults) as client:
        await client.list_tools()
        result = await client.call_tool("test_client_elicitation_defaults", {})
        log.info("test_client_elicitation_defaults: %s", result.content)


@scenario("http-standard-headers")
async def every_method(url: str) -> None:
    """Send every method the scenario checks Mcp-Method / Mcp-Name on (SEP-2243)."""
    async with open_client(url) as client:
        tools = await client.list_tools()
        for tool in tools.tools:
            await client.call_tool(tool.name, placeholder_arguments(tool.input_schema))
        resources = await client.list_resources()
        for resource in resources.resources:
            await client.read_resource(str(resource.uri))
        prompts = await client.list_prompts()
        for prompt in prompts.prompts:
            arguments = {arg.name: "x" for arg in prompt.arguments or [] if arg.required}
            await client.get_prompt(prompt.name, arguments)


@scenario("http-invalid-tool-headers")
async def call_every_listed_tool(url: str) -> None:
    """Tools with malformed `x-mcp-header` annotations must be dropped from the listing; the
    scenario checks that only the valid one is called."""
    async with open_client(url) as client:
        listed = await client.list_tools()
        for tool in listed.tools:
            try:
                await client.call_tool(tool.name, placeholder_arguments(tool.input_schema))
            except Exception:  # the scenario allows per-call errors; keep going
                log.exception("call_tool(%r) failed", tool.name)


@scenario("http-custom-headers")
async def replay_tool_calls(url: str) -> None:
    """Replay the calls the scenario lists, so `x-mcp-header` arguments become Mcp-Param-*
    headers (with Base64 where needed)."""
    calls = context().get("toolCalls", [])
    async with open_client(url) as client:
        listed = {tool.name for tool in (await client.list_tools()).tools}
        for call in calls:
            if call["name"] not in listed:
                log.info("skipping %r: the client dropped it from the listing", call["name"])
                continue
            try:
                await client.call_tool(call["name"], call.get("arguments") or {})
            except Exception:
                log.exception("call_tool(%r) failed", call["name"])


@scenario("json-schema-2020-12-preservation")
async def echo_schema(url: str) -> None:
    """Send the 2020-12 inputSchema back as received; the mock diffs it (SEP-1613, SEP-2106)."""
    async with open_client(url) as client:
        listed = await client.list_tools()
        focal = next(tool for tool in listed.tools if tool.name == "json_schema_2020_12_tool")
        await client.call_tool("json_schema_echo", {"schema": focal.input_schema})


@scenario("sep-2322-client-request-state")
async def multi_round_trip(url: str) -> None:
    """Drive the SDK's multi round-trip loop (SEP-2322). `test_mrtr_unrelated` is sent while
    `test_mrtr_echo_state` is between its rounds, so "isolation" is tested with the two
    exchanges actually interleaved."""
    unrelated_done = anyio.Event()

    async def confirm_after_unrelated(
        ctx: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        with anyio.fail_after(30):
            await unrelated_done.wait()
        return types.ElicitResult(action="accept", content={"confirmed": True})

    async with open_client(url, elicitation_callback=confirm_after_unrelated) as client:
        await client.list_tools()

        async def unrelated() -> None:
            await client.call_tool("test_mrtr_unrelated", {})
            unrelated_done.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(client.call_tool, "test_mrtr_echo_state", {})
            tasks.start_soon(unrelated)
        await client.call_tool("test_mrtr_no_state", {})
        result = await client.call_tool("test_mrtr_no_result_type", {})
        assert isinstance(result, types.CallToolResult), type(result)


# ---- OAuth (auth/*): the authorization-code flow of the SDK's OAuthClientProvider ------------


class MemoryTokens:
    """TokenStorage in memory: one run, one client."""

    def __init__(self, client: OAuthClientInformationFull | None = None) -> None:
        self.tokens: OAuthToken | None = None
        self.client = client

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class HeadlessUser:
    """Plays the user at the authorization endpoint: fetches the authorization URL and reads
    the code from the redirect (the mock authorization server approves at once)."""

    def __init__(self) -> None:
        self._result: AuthorizationCodeResult | None = None

    async def open(self, authorization_url: str) -> None:
        async with httpx2.AsyncClient(timeout=30) as http:
            response = await http.get(authorization_url, follow_redirects=False)
        location = response.headers.get("location")
        if response.status_code not in (301, 302, 303, 307, 308) or not location:
            raise RuntimeError(
                f"authorization endpoint answered {response.status_code}, no redirect"
            )
        query = parse_qs(urlsplit(location).query)
        if "code" not in query:
            raise RuntimeError(f"redirect without a code: {location}")
        self._result = AuthorizationCodeResult(
            code=query["code"][0],
            state=query.get("state", [None])[0],
            iss=query.get("iss", [None])[0],
        )

    async def callback(self) -> AuthorizationCodeResult:
        if self._result is None:
            raise RuntimeError("the authorization URL was never opened")
        result, self._result = self._result, None
        return result


async def authorization_code(url: str) -> None:
    """Any auth/* scenario: connect through OAuth, list tools, call the first one."""
    preregistered = None
    if client_id := context().get("client_id"):
        secret = context().get("client_secret")
        preregistered = OAuthClientInformationFull(
            client_id=client_id,
            client_secret=secret,
            redirect_uris=[AnyUrl(REDIRECT_URI)],
            token_endpoint_auth_method="client_secret_basic" if secret else "none",
        )
    user = HeadlessUser()
    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="mcp-sessions conformance client",
            redirect_uris=[AnyUrl(REDIRECT_URI)],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        ),
        storage=MemoryTokens(preregistered),
        redirect_handler=user.open,
        callback_handler=user.callback,
        client_metadata_url=CLIENT_METADATA_URL,
    )
    # An auth flow's tokens change, so the jar cannot derive who we are from them: the client
    # wants `principal=` (docs/client.md, "The state jar").
    async with (
        httpx2.AsyncClient(auth=provider, timeout=30) as http,
        open_client(
            url,
            http_client=http,
            principal=f"conformance/{SCENARIO}",
            elicitation_callback=accept_defaults,
        ) as client,
    ):
        listed = await client.list_tools()
        if listed.tools:
            try:
                await client.call_tool(listed.tools[0].name, {})
            except Exception:  # some auth mocks answer calls oddly; the auth is what counts
                log.exception("call_tool(%r) failed", listed.tools[0].name)


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    if len(sys.argv) < 2:
        print(
            "usage: client.py <server-url>  (scenario in MCP_CONFORMANCE_SCENARIO)", file=sys.stderr
        )
        return 2
    url = sys.argv[-1]
    run = SCENARIOS.get(SCENARIO)
    if run is None and SCENARIO.startswith("auth/"):
        run = authorization_code
    if run is None:
        print(f"unknown scenario {SCENARIO!r}", file=sys.stderr)
        return 2
    log.info("scenario %s at %s against %s", SCENARIO, PROTOCOL_VERSION, url)
    anyio.run(run, url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
