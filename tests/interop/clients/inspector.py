"""Interop driver for the MCP Inspector's CLI mode (`@modelcontextprotocol/inspector`), which
runs one MCP exchange per invocation: every call is a new connection, so a session lives on
only through a carrier the Inspector can be told to repeat, `--metadata
dev.mcpsessions/sessionId=…` (with its `Mcp-Client-Session-Id` header mirror over HTTP), or a
handle passed as a tool argument. Its 20 parallel calls are its own `--load` mode (20 calls
at once in one process), checked by the count that follows them.

Runs under any Python (standard library only); plan on stdin, results on stdout: see
_scenarios.py. The plan names the Node binary and the Inspector's launcher script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

SESSION_META_KEY = "dev.mcpsessions/sessionId"


class InspectorError(RuntimeError):
    pass


class Inspector:
    def __init__(self, plan: dict[str, Any], home: Path) -> None:
        self.plan = plan
        self.env = dict(os.environ)
        self.env["PATH"] = f"{Path(plan['node']).parent}{os.pathsep}{self.env.get('PATH', '')}"
        # The Inspector's own state (catalog, client config) stays in a temporary HOME.
        self.env |= {
            "HOME": str(home),
            "MCP_CATALOG_PATH": str(home / "catalog.json"),
            "MCP_CLIENT_CONFIG_PATH": str(home / "client.json"),
        }

    def run(self, *args: str, session: str | None = None) -> Any:
        """One invocation; its JSON `result`."""
        target = self.plan["target"]
        command = [self.plan["node"], self.plan["inspector_js"], "--cli"]
        # A URL goes first: --header and --metadata take every word after them.
        command += [target["url"]] if "url" in target else []
        command += ["--format", "json", "-q", "--protocol-era", "modern", *args]
        if session is not None:
            command += ["--metadata", f"{SESSION_META_KEY}={session}"]
            if "url" in target:
                command += ["--header", f"Mcp-Client-Session-Id: {session}"]
        if "url" not in target:
            command += ["--", target["command"], *target["args"]]
        timeout = self.plan["timeout_ms"] / 1000
        try:
            proc = subprocess.run(
                command, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise InspectorError(f"no answer within {timeout:g} s to {' '.join(args)}") from None
        try:
            answer = json.loads(proc.stdout or proc.stderr)
        except ValueError:
            raise InspectorError(f"exit {proc.returncode}: {proc.stderr[-500:]}") from None
        if "error" in answer:
            raise InspectorError(str(answer["error"].get("message", answer["error"])))
        return answer["result"]

    def call(self, tool: str, arguments: dict[str, Any] | None = None, **kw: Any) -> Any:
        args = ["--method", "tools/call", "--tool-name", tool]
        if arguments:
            args += ["--tool-args-json", json.dumps(arguments)]
        result = self.run(*args, **kw)
        if result.get("isError"):
            texts = " ".join(block.get("text", "") for block in result.get("content", []))
            raise InspectorError(f"tool error: {texts}")
        content = result["structuredContent"]
        return content["result"] if set(content) == {"result"} else content


def main() -> None:
    plan = json.load(sys.stdin)
    ids = plan["ids"]
    with tempfile.TemporaryDirectory(prefix="inspector-home-") as home:
        inspector = Inspector(plan, Path(home))
        protocol: list[str | None] = [None]

        def connect() -> list[str]:
            protocol[0] = inspector.run("--method", "initialize").get("protocolVersion")
            return [tool["name"] for tool in inspector.run("--method", "tools/list")["tools"]]

        def count() -> list[Any]:
            return [inspector.call("count", session=ids["count"]) for _ in range(3)]

        def second_client() -> list[Any]:
            return [inspector.call("count", session=ids["second"])]

        def parallel() -> dict[str, Any]:
            load = ["--load", "--load-requests", str(plan["parallel"])]
            load += ["--load-concurrency", str(plan["parallel"])]
            summary = inspector.run(
                "--method", "tools/call", "--tool-name", "count", *load, session=ids["parallel"]
            )
            after = inspector.call("count", session=ids["parallel"])
            return {"ok": summary.get("ok"), "errors": summary.get("errorMessages"), "next": after}

        def handle_count() -> list[Any]:
            handle = inspector.call("session_start")
            return [inspector.call("count", {"session": handle}) for _ in range(3)]

        def handle_vm() -> dict[str, Any]:
            vm = inspector.call("init_vm", {"name": "interop"})
            inspector.call("set_ram", {"vm": vm, "gb": 8})
            state = inspector.call("set_cpu", {"vm": vm, "n": 4})
            return {"ram_gb": state["ram_gb"], "cpus": state["cpus"]}

        scenarios: dict[str, Callable[[], Any]] = {
            "connect": connect,
            "count": count,
            "second_client": second_client,
            "parallel": parallel,
            "handle_count": handle_count,
            "handle_vm": handle_vm,
        }
        if plan.get("no_carrier"):
            scenarios["no_carrier"] = lambda: inspector.call("count")

        def attempt(body: Callable[[], Any]) -> dict[str, Any]:
            try:
                return {"value": body()}
            except (InspectorError, KeyError) as exc:
                return {"error": f"{type(exc).__name__}: {exc}"}

        # Connect first: when that fails, every other call would fail (or hang) the same way.
        results = {"connect": attempt(scenarios.pop("connect"))}
        if "error" in results["connect"]:
            skipped = {"error": "not run (connect failed)"}
            results |= {name: skipped for name in scenarios}
        else:
            # The rest are independent of one another: run them side by side (each is a
            # short chain of invocations), a few at a time on a small machine.
            with ThreadPoolExecutor(max_workers=3) as pool:
                futures = {name: pool.submit(attempt, body) for name, body in scenarios.items()}
                results |= {name: future.result() for name, future in futures.items()}
    version = plan.get("version")
    out = {
        "client": "@modelcontextprotocol/inspector --cli",
        "version": version,
        "protocol": protocol[0],
        "results": results,
    }
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
