"""Interop driver for `fastmcp` 4.x, through its public API: `fastmcp.Client` (its default
"auto" negotiation) with StreamableHttpTransport or StdioTransport. Runs in .tools/py-fastmcp;
plan on stdin, results on stdout: see _scenarios.py."""

from __future__ import annotations

import importlib.metadata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from _scenarios import Connection, main, tool_value
from fastmcp import Client
from fastmcp.client.transports import StdioTransport, StreamableHttpTransport


class FastMCPConnection:
    def __init__(self, client: Client[Any]) -> None:
        self.client = client
        self.protocol: str | None = client.protocol_version

    async def tools(self) -> list[str]:
        return [tool.name for tool in await self.client.list_tools()]

    async def call(self, name: str, args: dict[str, Any], meta: dict[str, Any] | None) -> Any:
        result = await self.client.call_tool_mcp(name, args, meta=meta)
        return tool_value(result.structured_content, result.is_error, result.content)


def open_for(plan: dict[str, Any]) -> Any:
    target = plan["target"]
    timeout = plan["timeout_ms"] / 1000

    @asynccontextmanager
    async def open_connection() -> AsyncIterator[Connection]:
        transport: Any
        if "url" in target:
            transport = StreamableHttpTransport(target["url"])
        else:
            # keep_alive=False: each Client is its own connection, as for the other clients.
            transport = StdioTransport(
                target["command"], target["args"], env=target.get("env"), keep_alive=False
            )
        async with Client(transport, timeout=timeout) as client:
            yield FastMCPConnection(client)

    return open_connection


if __name__ == "__main__":
    main("fastmcp", importlib.metadata.version("fastmcp"), open_for)
