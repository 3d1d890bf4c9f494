"""The server under test: mcp-sessions on an ``MCPServer`` (or, with ``framework="fastmcp"``,
on FastMCP: the same tools), with tools that report what the tool author sees (the
:class:`Session` a carrier brought, its state, its principal), a handle kind, a
session-dependent resource and a tool that logs.

Imported by the tests (in-process and in-thread servers) and run as a script for stdio and
HTTP subprocesses::

    python tests/server/_app.py --stdio --store memory://
    python tests/server/_app.py --port 8123 --store sqlite:///x.db --log-file log.txt

Not collected by pytest (no ``test_`` prefix).
"""

# No `from __future__ import annotations`: the SDK evaluates tool annotations such as
# `Annotated[str, NOTE.arg]` where NOTE is local to build_app (as in mcp_sessions.demo).

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

from mcp.server.caching import CacheHint
from mcp.server.mcpserver import MCPServer

from mcp_sessions.core.limits import Limits
from mcp_sessions.core.records import JSONObject
from mcp_sessions.core.sealing import KeyRing
from mcp_sessions.demo import StaticTokens, mcpserver_with_sessions
from mcp_sessions.keyfiles import read_key_file
from mcp_sessions.server import CurrentSession, OptionalSession, Session, Sessions
from mcp_sessions.server.extension import current_scope
from mcp_sessions.stores import Store
from mcp_sessions.telemetry import SessionTelemetry

#: The logger the ``log`` tool writes to (the correlation tests read its records).
LOGGER_NAME = "tests.server.app"
LOG_FORMAT = "%(mcp_session_id)s|%(mcp_conversation_id)s|%(message)s"
AUDIENCE = "mcp-sessions-test"


def describe(session: Session) -> dict[str, Any]:
    """Everything a tool can see of its session."""
    return {
        "id": session.id,
        "carrier": session.carrier.value,
        "origin": session.origin,
        "principal": session.principal.key,
        "created": session.created,
        "conversationId": session.conversation_id,
        "version": session.version,
        "state": dict(session.state),
    }


def _mcpserver_app(
    options: dict[str, Any], auth_tokens: StaticTokens | None, base_url: str
) -> tuple[MCPServer, Sessions, Any]:
    # Public and cacheable unless the session makes a read private (spec §5.4 item 47).
    hints = {"resources/read": CacheHint(ttl_ms=60_000, scope="public")}
    return mcpserver_with_sessions(
        "mcp-sessions-test", options, auth_tokens, base_url, cache_hints=hints
    )


def _fastmcp_app(
    options: dict[str, Any], auth_tokens: StaticTokens | None, base_url: str
) -> tuple[Any, Any, Any]:
    from mcp_sessions.demo_fastmcp import fastmcp_with_sessions

    # Public and cacheable unless the session makes a read private (spec §5.4 item 47); FastMCP
    # hints every cacheable result alike (its server-level cache_ttl).
    return fastmcp_with_sessions(
        "mcp-sessions-test", options, auth_tokens, base_url, cache_ttl=60, cache_scope="public"
    )


def http_app(mcp: Any, sessions: Any) -> Any:
    """The Streamable HTTP app of either framework, legacy sessions served from the store."""
    return sessions.streamable_http_app(mcp, host="127.0.0.1")


#: The framework ``build_app`` uses when none is named (tests/server/conftest.py sets it per
#: test from the ``framework`` fixture).
FRAMEWORK = "mcp"


def build_app(
    *,
    store: Store | str = "memory://",
    state: str = "server",
    lifecycle: str = "implicit",
    keys: KeyRing | None = None,
    idle_ttl: float = 3600.0,
    handle_ttl: float = 3600.0,
    auth_tokens: StaticTokens | None = None,
    handle_fallback: bool = True,
    base_url: str = "http://127.0.0.1:8000",
    framework: str | None = None,
    telemetry: SessionTelemetry | None = None,
    limits: Limits | None = None,
) -> tuple[Any, Any]:
    """The test server on ``framework``: ``mcp`` (an ``MCPServer``) or ``fastmcp``; the tools
    are defined once, below, for both. For FastMCP the server returned is its low-level
    server, which the SDK's ``Client`` takes in process."""
    options: dict[str, Any] = dict(
        store=store,
        state=state,  # type: ignore[arg-type]
        lifecycle=lifecycle,  # type: ignore[arg-type]
        keys=keys,
        idle_ttl=idle_ttl,
        handle_fallback=handle_fallback,
        audience=AUDIENCE,
        telemetry=telemetry,
        limits=limits,
    )
    if (framework or FRAMEWORK) == "fastmcp":
        mcp, sessions, tool = _fastmcp_app(options, auth_tokens, base_url)
    else:
        mcp, sessions, tool = _mcpserver_app(options, auth_tokens, base_url)
    note_kind = sessions.handle_kind("note", ttl=handle_ttl, header="Note", created_by="new_note")
    logger = logging.getLogger(LOGGER_NAME)

    @tool
    async def whoami(session: CurrentSession) -> dict[str, Any]:
        """The session this request reached, as the tool author sees it."""
        return describe(session)

    @tool
    async def maybe(session: OptionalSession) -> dict[str, Any]:
        """The session if the request named one."""
        return {"session": None if session is None else describe(session)}

    @tool
    async def count(session: CurrentSession) -> dict[str, Any]:
        """Increment the session's counter."""

        def bump(state: JSONObject) -> int:
            value = int(state.get("count", 0)) + 1
            state["count"] = value
            return value

        value = await session.update(bump)
        return {"count": value, "created": session.created, "id": session.id}

    @tool
    async def put(key: str, value: Any, session: CurrentSession) -> dict[str, Any]:
        """Set one key of the session state; returns the state."""
        await session.set(key, value)
        return dict(session.state)

    @tool
    async def log(message: str, session: OptionalSession) -> str:
        """Log ``message`` while handling this request."""
        logger.warning(message)
        return message

    @tool
    async def new_note(text: str) -> str:
        """A note handle."""
        return await note_kind.create({"text": text})

    @tool
    async def read_note(note: Annotated[str, note_kind.arg]) -> dict[str, Any]:
        return dict(await note_kind.state(note))

    @tool
    async def edit_note(note: Annotated[str, note_kind.arg], text: str) -> dict[str, Any]:
        def edit(state: JSONObject) -> JSONObject:
            state["text"] = text
            state["edits"] = int(state.get("edits", 0)) + 1
            return dict(state)

        return await note_kind.update(note, edit)

    @tool
    async def peek_note(note: Annotated[str, note_kind.arg]) -> str:
        """Takes a note handle but never loads it: only the extension's check guards it."""
        return f"body ran for {note}"

    @tool
    async def renew_note(note: Annotated[str, note_kind.arg], ttl: float) -> float:
        return await note_kind.renew(note, ttl)

    @tool
    async def revoke_note(note: Annotated[str, note_kind.arg]) -> str:
        await note_kind.revoke(note)
        return "revoked"

    @mcp.resource("session://state", mime_type="application/json")
    async def session_state() -> str:
        """The session's state: depends on the session."""
        scope = current_scope()
        assert scope is not None
        session = await scope.session()
        return json.dumps(dict(session.state), sort_keys=True)

    @mcp.resource("static://hello")
    def hello() -> str:
        """The same for everyone."""
        return "hello"

    return (mcp if isinstance(mcp, MCPServer) else mcp._mcp_server), sessions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stdio", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--store", default="memory://")
    parser.add_argument("--state", default="server", choices=["server", "sealed"])
    parser.add_argument("--lifecycle", default="implicit", choices=["implicit", "explicit"])
    parser.add_argument("--idle-ttl", type=float, default=3600.0)
    parser.add_argument("--handle-ttl", type=float, default=3600.0)
    parser.add_argument("--key-file", type=Path)
    parser.add_argument("--auth-tokens", type=Path)
    parser.add_argument("--log-file", type=Path)
    parser.add_argument("--framework", default="mcp", choices=["mcp", "fastmcp"])
    args = parser.parse_args(argv)

    if args.log_file is not None:
        handler = logging.FileHandler(args.log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        app_logger = logging.getLogger(LOGGER_NAME)
        app_logger.addHandler(handler)
        app_logger.setLevel(logging.INFO)
    base_url = f"http://127.0.0.1:{args.port}"
    mcp, sessions = build_app(
        store=args.store,
        state=args.state,
        lifecycle=args.lifecycle,
        keys=read_key_file(args.key_file) if args.key_file else None,
        idle_ttl=args.idle_ttl,
        handle_ttl=args.handle_ttl,
        auth_tokens=StaticTokens.from_file(args.auth_tokens) if args.auth_tokens else None,
        base_url=base_url,
        framework=args.framework,
    )
    if args.stdio:
        if args.framework == "mcp":
            mcp.run("stdio")
        else:
            mcp.fastmcp.run("stdio", show_banner=False)
        return
    import uvicorn

    app = http_app(mcp, sessions)
    print(f"listening on {base_url}/mcp", file=sys.stderr, flush=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
