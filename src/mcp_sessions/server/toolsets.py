"""Toolsets on an ``MCPServer`` (issue #18): declaring them, changing a session's, gating
calls before the tool body, shaping list results, and telling the client what changed.

The rules (what a session sees) are ``core/toolsets.py``; this module is the SDK side, hooked
into :class:`~mcp_sessions.server.extension.Sessions` (the :class:`Toolsets` mixin) and its
middleware (:func:`finish`) with a few lines:

* ``Sessions.toolset(...)`` declares a set;
* a tool body calls ``await session.enable("billing")`` (``Session.enable``): the
  enabled sets live in the session's state under ``STATE_TOOLSETS``, edited by the same
  compare-and-set as any state, so replicas sharing a store agree;
* ``intercept_tool_call`` asks :meth:`Toolsets.gate` before the tool body runs, as it checks
  handles: a call outside the caller's surface is a tool error (``isError``) saying what
  enables it;
* the middleware passes list results through :func:`shape_list` (the session's surface for a
  client that asked for it, or a legacy session; the global list for everyone else) and call
  results through :func:`announce` (``_meta`` ``listChanged``, and at 2025-11-25
  ``notifications/*/list_changed`` on the request's own stream).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import (
    CallToolResult,
    PromptListChangedNotification,
    ResourceListChangedNotification,
    ServerNotification,
    TextContent,
    ToolListChangedNotification,
)

from ..core.carriers import Carrier
from ..core.errors import SessionRequired
from ..core.names import (
    LIST_METHOD_PROMPTS,
    LIST_METHOD_RESOURCES,
    LIST_METHOD_TOOLS,
    META_CLIENT_CAPABILITIES,
    META_LIST_CHANGED,
    META_SCOPED,
    MODERN_PROTOCOL_VERSIONS,
)
from ..core.toolsets import (
    KIND_OF_METHOD,
    Catalog,
    Toolset,
    scoped_lists_requested,
)

if TYPE_CHECKING:
    from mcp.server.context import HandlerResult, ServerRequestContext

    from .engine import SessionEngine
    from .session import RequestScope, Session

logger = logging.getLogger("mcp_sessions")

#: Sessions whose lists follow them without asking, at 2025-11-25 (where lists may vary per
#: session and ``list_changed`` reports it): the ``Mcp-Session-Id`` session, and a stdio
#: connection's own session.
_LEGACY_SESSION_CARRIERS = frozenset({Carrier.LEGACY, Carrier.CONNECTION})

_NOTIFICATIONS: Mapping[str, Callable[[], ServerNotification]] = {
    LIST_METHOD_TOOLS: ToolListChangedNotification,
    LIST_METHOD_PROMPTS: PromptListChangedNotification,
    LIST_METHOD_RESOURCES: ResourceListChangedNotification,
}


class Toolsets:
    """The toolset half of :class:`~mcp_sessions.server.extension.Sessions` (a mixin, so
    that the extension module only hooks it in)."""

    engine: SessionEngine

    def toolset(
        self,
        name: str,
        *,
        tools: Iterable[str] = (),
        prompts: Iterable[str] = (),
        resources: Iterable[str] = (),
        enabled_by: str | None = None,
        description: str | None = None,
    ) -> Toolset:
        """Declare a named set of tools (prompts by name, resources by URI) that a session
        enables with ``await session.enable(name)``; until then its members are hidden from
        the session's scoped lists and its tools refuse to run (docs/server.md).
        ``enabled_by`` tells the model how, e.g. ``"call connect(service='billing')"``.
        Raises ``ValueError`` on a bad or duplicate name.
        """
        return self.engine.toolsets.declare(
            Toolset(
                name=name,
                tools=frozenset(tools),
                prompts=frozenset(prompts),
                resources=frozenset(resources),
                enabled_by=enabled_by,
                description=description,
            )
        )

    async def gate(
        self, tool: str, scope: RequestScope, load: Callable[[], Awaitable[Session]]
    ) -> CallToolResult | None:
        """The tool error answering a call of a tool the session has not enabled, checked
        before the tool body as handles are; ``None`` lets the call run."""
        catalog = self.engine.toolsets
        if not catalog:
            return None
        no_session = self.engine.session_required_message or SessionRequired.default_message
        refused = await gate_refusal(catalog, tool, scope, load, no_session)
        if refused is None:
            return None
        return CallToolResult(content=[TextContent(type="text", text=refused)], is_error=True)


async def gate_refusal(
    catalog: Catalog,
    tool: str,
    scope: RequestScope,
    load: Callable[[], Awaitable[Session]],
    no_session: str,
) -> str | None:
    """Why this call may not run (a tool error's text), or ``None``. ``load`` resolves the
    session as a ``CurrentSession`` parameter would (its protocol errors propagate)."""
    if not catalog.sets_of("tools", tool):
        return None
    if scope.session_id is None:
        return (
            f"The tool {tool!r} needs a session that enables it: it is in "
            f"{catalog.hint(tool)}. {no_session}"
        )
    try:
        session = await load()
    except ToolError as error:  # an unknown session handle argument
        return str(error)
    return catalog.refusal(tool, catalog.enabled_in(session.state))


def _is_legacy(protocol_version: str | None) -> bool:
    return protocol_version not in MODERN_PROTOCOL_VERSIONS


def _follows_session(ctx: ServerRequestContext[Any, Any], scope: RequestScope) -> bool:
    """Whether this request's lists are its session's surface."""
    if scope.session_id is None:
        return False
    if _is_legacy(ctx.protocol_version):
        if scope.carrier in _LEGACY_SESSION_CARRIERS:
            return True
        # Declared at initialize, kept by the SDK for this connection (on a replica that
        # serves the session statelessly it is not known: such a client gets global lists).
        capabilities = ctx.session.client_capabilities
        declared = None if capabilities is None else capabilities.model_dump(by_alias=True)
        return scoped_lists_requested(declared)
    # 2026-07-28: the capabilities of this very request (servers must not infer them from
    # earlier requests, SEP-2575).
    meta = ctx.meta or {}
    return scoped_lists_requested(meta.get(META_CLIENT_CAPABILITIES))


async def shape_list(
    catalog: Catalog,
    ctx: ServerRequestContext[Any, Any],
    scope: RequestScope,
    result: dict[str, Any],
) -> dict[str, Any]:
    """A list result as this caller sees it: the global list unless the caller asked for its
    session's surface (or is a legacy session), then the surface, marked as such."""

    kind = KIND_OF_METHOD.get(ctx.method)
    items = result.get(kind) if kind is not None else None
    if kind is None or not isinstance(items, list) or not _follows_session(ctx, scope):
        return result
    state = await scope.peek_state()
    surface = catalog.surface(() if state is None else catalog.enabled_in(state))
    meta = result.get("_meta")
    shaped = {
        **result,
        kind: surface.filter(kind, items),
        "_meta": {**(meta if isinstance(meta, dict) else {}), META_SCOPED: True},
    }
    if not _is_legacy(ctx.protocol_version):
        # _meta is not in a cache's key, so no cache may keep or share this (spec §2.5).
        shaped["ttlMs"] = 0
        shaped["cacheScope"] = "private"
    return shaped


async def announce(
    ctx: ServerRequestContext[Any, Any], scope: RequestScope, result: dict[str, Any]
) -> dict[str, Any]:
    """A result of a call that changed its session's surface names the lists to fetch again;
    at 2025-11-25 the matching ``list_changed`` notifications go first, on this request's
    stream (the session's, never another client's)."""
    changed = scope.lists_changed
    if not changed:
        return result
    if _is_legacy(ctx.protocol_version) and _follows_session(ctx, scope):
        for method in changed:
            try:
                await ctx.session.send_notification(
                    _NOTIFICATIONS[method](), related_request_id=ctx.request_id
                )
            except Exception as exc:  # best effort: the result still says what changed
                logger.debug("could not send %s list_changed: %s", method, exc)
    meta = result.get("_meta")
    return {
        **result,
        "_meta": {**(meta if isinstance(meta, dict) else {}), META_LIST_CHANGED: list(changed)},
    }


def advertise(capabilities: dict[str, Any]) -> dict[str, Any]:
    """``initialize`` capabilities saying lists change (per session) at 2025-11-25."""
    changed = dict(capabilities)
    for key in ("tools", "prompts", "resources"):
        entry = changed.get(key)
        if isinstance(entry, dict):
            changed[key] = {**entry, "listChanged": True}
    return changed


async def finish(
    catalog: Catalog,
    ctx: ServerRequestContext[Any, Any],
    scope: RequestScope,
    result: HandlerResult,
) -> HandlerResult:
    """The middleware's one hook: a result as toolsets shape it (nothing without toolsets)."""
    if not catalog or not isinstance(result, dict):
        return result
    if ctx.method == "initialize":
        capabilities = result.get("capabilities")
        if isinstance(capabilities, dict):
            return {**result, "capabilities": advertise(capabilities)}
        return result
    if ctx.method in KIND_OF_METHOD:
        return await shape_list(catalog, ctx, scope, result)
    return await announce(ctx, scope, result)
