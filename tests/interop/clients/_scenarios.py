"""The interop scenarios, shared by the Python client drivers (py_mcp1.py, py_fastmcp.py,
py_mcp2.py); the TypeScript drivers follow the same plan in _scenarios.mjs.

A driver reads a plan (JSON on stdin, written by tests/interop/test_matrix.py), opens
connections with its client library's public API only, and prints one JSON object:
    {"client", "version", "protocol", "results": {scenario: {"value": ...} | {"error": "..."}}}

Standard library only: each driver runs in its client's own virtual environment.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

SESSION_META_KEY = "dev.mcpsessions/sessionId"


class Connection(Protocol):
    protocol: str | None

    async def tools(self) -> list[str]: ...

    async def call(self, name: str, args: dict[str, Any], meta: dict[str, Any] | None) -> Any: ...


Opener = Callable[[], AbstractAsyncContextManager[Connection]]


def tool_value(structured: Any, is_error: bool | None, content: Any) -> Any:
    """A tool's value: structuredContent.result (a wrapped scalar or list) or the object."""
    texts = [getattr(block, "text", "") or "" for block in content or []]
    if is_error:
        raise RuntimeError("tool error: " + " ".join(texts))
    if isinstance(structured, dict):
        return structured["result"] if set(structured) == {"result"} else structured
    return json.loads("".join(texts))


def describe(exc: BaseException) -> str:
    """`Type: message` of the innermost exception (task groups wrap the real one)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


async def _attempt(results: dict[str, Any], name: str, body: Callable[[], Awaitable[Any]]) -> None:
    try:
        results[name] = {"value": await body()}
    except Exception as exc:  # the scenario's outcome, reported to the test
        results[name] = {"error": describe(exc)}


async def run_plan(plan: dict[str, Any], open_connection: Opener) -> tuple[str | None, dict]:
    results: dict[str, Any] = {}

    def meta(key: str) -> dict[str, Any] | None:
        return {SESSION_META_KEY: plan["ids"][key]} if plan["carrier"] == "meta" else None

    protocol: str | None = None
    try:
        async with open_connection() as first:
            protocol = first.protocol
            await _attempt(results, "connect", first.tools)

            async def count() -> list[Any]:
                return [await first.call("count", {}, meta("count")) for _ in range(3)]

            await _attempt(results, "count", count)

            async def second_client() -> list[Any]:
                async with open_connection() as second:
                    return [await second.call("count", {}, meta("second"))]

            await _attempt(results, "second_client", second_client)

            async def parallel() -> list[Any]:
                async with open_connection() as third:
                    calls = [
                        third.call("count", {}, meta("parallel")) for _ in range(plan["parallel"])
                    ]
                    return list(await asyncio.gather(*calls))

            await _attempt(results, "parallel", parallel)

            # The handle flow passes arguments only: no carrier of ours in _meta.
            async def handle_count() -> list[Any]:
                handle = await first.call("session_start", {}, None)
                return [await first.call("count", {"session": handle}, None) for _ in range(3)]

            await _attempt(results, "handle_count", handle_count)

            async def handle_vm() -> dict[str, Any]:
                vm = await first.call("init_vm", {"name": "interop"}, None)
                await first.call("set_ram", {"vm": vm, "gb": 8}, None)
                state = await first.call("set_cpu", {"vm": vm, "n": 4}, None)
                return {"ram_gb": state["ram_gb"], "cpus": state["cpus"]}

            await _attempt(results, "handle_vm", handle_vm)

            if plan.get("no_carrier"):
                # A plain call with no session at all: the error a client that knows nothing sees.
                await _attempt(results, "no_carrier", lambda: first.call("count", {}, None))
    except Exception as exc:
        results.setdefault("connect", {"error": describe(exc)})
    return protocol, results


def main(client: str, version: str, open_for: Callable[[dict[str, Any]], Opener]) -> None:
    plan = json.load(sys.stdin)
    protocol, results = asyncio.run(run_plan(plan, open_for(plan)))
    out = {"client": client, "version": version, "protocol": protocol, "results": results}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
