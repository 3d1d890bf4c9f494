"""Interop driver for `mcp` 1.x (the Python SDK before 2026-07-28; a 2025-11-25 client), through
its public API: ClientSession over streamable_http_client or stdio_client.
Runs in .tools/py-mcp1; plan on stdin, results on stdout: see _scenarios.py."""

from __future__ import annotations

import importlib.metadata
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import Any

from _scenarios import Connection, main, tool_value
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client


class Mcp1Connection:
    def __init__(self, session: ClientSession, protocol: str, timeout: float) -> None:
        self.session = session
        self.protocol: str | None = protocol
        self.timeout = timedelta(seconds=timeout)

    async def tools(self) -> list[str]:
        return [tool.name for tool in (await self.session.list_tools()).tools]

    async def call(self, name: str, args: dict[str, Any], meta: dict[str, Any] | None) -> Any:
        result = await self.session.call_tool(name, args, self.timeout, meta=meta)
        return tool_value(result.structuredContent, result.isError, result.content)


def open_for(plan: dict[str, Any]) -> Any:
    target = plan["target"]
    timeout = plan["timeout_ms"] / 1000

    @asynccontextmanager
    async def open_connection() -> AsyncIterator[Connection]:
        async with AsyncExitStack() as stack:
            streams: AbstractAsyncContextManager[Any]
            if "url" in target:
                streams = streamable_http_client(target["url"])
            else:
                server = StdioServerParameters(
                    command=target["command"], args=target["args"], env=target.get("env")
                )
                streams = stdio_client(server)
            read, write, *_ = await stack.enter_async_context(streams)
            session = await stack.enter_async_context(
                ClientSession(read, write, timedelta(seconds=timeout))
            )
            initialized = await session.initialize()
            yield Mcp1Connection(session, str(initialized.protocolVersion), timeout)

    return open_connection


if __name__ == "__main__":
    main("mcp (Python SDK 1.x)", importlib.metadata.version("mcp"), open_for)
