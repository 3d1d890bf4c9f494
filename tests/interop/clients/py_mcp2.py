"""Interop driver for `mcp` 2.x (the Python SDK, the project's own dependency), through its
public API: `mcp.Client` (mode "auto": server/discover first, 2026-07-28 when offered) on a URL
or on StdioServerParameters. Runs in the project's .venv; plan on stdin, results on stdout:
see _scenarios.py."""

from __future__ import annotations

import importlib.metadata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from _scenarios import Connection, main, tool_value
from mcp import Client, StdioServerParameters


class Mcp2Connection:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.protocol: str | None = client.protocol_version

    async def tools(self) -> list[str]:
        return [tool.name for tool in (await self.client.list_tools()).tools]

    async def call(self, name: str, args: dict[str, Any], meta: dict[str, Any] | None) -> Any:
        result = await self.client.call_tool(name, args, meta=meta)  # type: ignore[arg-type]
        return tool_value(result.structured_content, result.is_error, result.content)


def open_for(plan: dict[str, Any]) -> Any:
    target = plan["target"]
    timeout = plan["timeout_ms"] / 1000

    @asynccontextmanager
    async def open_connection() -> AsyncIterator[Connection]:
        server: Any = target.get("url")
        if server is None:
            server = StdioServerParameters(
                command=target["command"], args=target["args"], env=target.get("env")
            )
        async with Client(server, read_timeout_seconds=timeout) as client:
            yield Mcp2Connection(client)

    return open_connection


if __name__ == "__main__":
    main("mcp (Python SDK 2.x, mcp.Client)", importlib.metadata.version("mcp"), open_for)
