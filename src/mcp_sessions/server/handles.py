"""Handles (SEP-2567, DESIGN §4): server-minted strings naming state, passed as tool arguments.

A handle is stored as a record of its own kind, bound to the principal that created it, with
an idle TTL refreshed on use and renewable explicitly. Tools take a handle as an ordinary
string argument typed :attr:`HandleKind.Arg`; the extension checks every such argument before
the tool body runs (format and kind by the input schema, principal and expiry by the store),
and an unknown, expired or foreign handle becomes a tool execution error (``isError``) that
says so (spec §5.2 item 22), never a protocol error.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Concatenate, ParamSpec, TypeVar

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from ..core.errors import (
    LimitExceeded,
    OversizedState,
    SessionError,
    SessionNotFound,
    StoreUnavailable,
)
from ..core.handles import InvalidHandle, mint_handle, parse_handle, validate_kind
from ..core.limits import json_size
from ..core.records import JSONObject, Record
from ..stores import NotFound
from .errors import to_mcp_error
from .session import Edit

if TYPE_CHECKING:
    from .engine import SessionEngine
    from .session import RequestScope

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")


class HandleError(ToolError):
    """A handle argument that cannot be used; the message is shown to the model as is.

    A :class:`~mcp.server.mcpserver.exceptions.ToolError`: the SDK turns any other exception
    escaping a tool body into a bare "Error executing tool <name>", which would hide why.
    """


def _readable_outage(
    method: Callable[Concatenate[HandleKind, P], Awaitable[R]],
) -> Callable[Concatenate[HandleKind, P], Awaitable[R]]:
    """A store outage met in a tool body reaches the client as -31006, not as the SDK's bare
    "Error executing tool" (issue #12 item 8)."""

    @functools.wraps(method)
    async def wrapper(self: HandleKind, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(self, *args, **kwargs)
        except StoreUnavailable as error:
            raise to_mcp_error(error) from None

    return wrapper


class HandleKind:
    """One kind of handle, e.g. ``vm``. Made by :meth:`mcp_sessions.Sessions.handle_kind`."""

    def __init__(
        self,
        engine: SessionEngine,
        scope_getter: Any,
        kind: str,
        *,
        ttl: float = 3600.0,
        header: str | None = None,
        created_by: str | None = None,
        description: str | None = None,
    ) -> None:
        self.kind = validate_kind(kind)
        if not (ttl > 0 and math.isfinite(ttl)):
            raise ValueError(f"handle ttl must be a positive number of seconds, not {ttl!r}")
        self.ttl = float(ttl)
        self.created_by = created_by
        self._engine = engine
        self._scope = scope_getter
        extra: dict[str, Any] = {"x-mcpsessions-handle": kind}
        if header is not None:
            # SEP-2243: clients mirror this argument into `Mcp-Param-<header>`, so that
            # infrastructure can route on it (spec §5.2 item 24).
            extra["x-mcp-header"] = header
        text = (
            description
            or f"A {kind} handle, as returned by {created_by or 'the tool that made it'}."
        )
        #: The metadata that makes a ``str`` tool parameter a handle of this kind:
        #: ``vm: Annotated[str, VM.arg]`` (schema pattern, description, header mirror).
        self.arg: Any = Field(
            description=text,
            pattern=rf"^{kind}-[0-9a-f]{{32}}$",
            json_schema_extra=extra,
        )
        #: The same as a ready type, ``Annotated[str, arg]``, for code that is not type-checked.
        self.Arg: Any = Annotated[str, self.arg]

    def _current(self) -> RequestScope:
        scope: RequestScope | None = self._scope()
        if scope is None:
            raise RuntimeError(
                f"{self.kind} handles are used outside a request: call this from a tool of a "
                "server that has the mcp-sessions middleware installed"
            )
        return scope

    def unknown(self, value: str) -> HandleError:
        hint = f" Call {self.created_by} to make a new one." if self.created_by else ""
        return HandleError(
            f"The {self.kind} handle {value!r} is unknown or has expired (handles expire "
            f"{int(self.ttl)} s after their last use, and work only for whoever made them).{hint}"
        )

    @_readable_outage
    async def create(self, state: JSONObject | None = None) -> str:
        """Mint a handle bound to the caller's principal, holding ``state``.

        Refused whole, nothing stored (issue #12): a ``state`` over the server's state size
        limit (:class:`HandleError`, a tool error), and a caller at its handle quota or
        creation rate (-31005, :class:`~mcp_sessions.core.errors.LimitExceeded`).
        """
        scope = self._current()
        limit = self._engine.config.max_server_state_bytes
        try:
            size = json_size(state or {})
        except ValueError as exc:
            raise HandleError(f"The {self.kind} handle's data is not JSON: {exc}") from None
        if size > limit:
            # The same limit every later edit of the handle meets, so a handle that could be
            # made can always be used (issue #12 row 3).
            raise HandleError(
                f"The {self.kind} handle's data would be {size} bytes of JSON, over this "
                f"server's limit of {limit}; nothing was created. Use smaller values."
            )
        attributes = {"session": scope.session_id} if scope.session_id else {}
        record = Record.new(
            kind=self.kind,
            id=mint_handle(self.kind),
            principal=scope.principal.key,
            origin="handle",
            now=time.time(),
            idle_ttl=self.ttl,
            state=state or {},
            attributes=attributes,
        )
        caller = scope.caller()
        quotas = self._engine.quotas
        try:
            await quotas.admit(caller, "handles", now=record.created_at)
        except LimitExceeded as error:
            raise to_mcp_error(error) from None
        await self._engine.store.create(record)
        await quotas.note(caller, "handles", record)
        scope.handles[(self.kind, record.id)] = record
        scope.minted.append((self.kind, record.id))
        return record.id

    @_readable_outage
    async def load(self, value: str) -> Record:
        """The live record of ``value`` for the caller; raises :class:`HandleError`."""
        scope = self._current()
        cached = scope.handles.get((self.kind, value))
        if cached is not None:
            return cached
        try:
            parse_handle(value, kind=self.kind)
        except InvalidHandle as exc:
            raise HandleError(str(exc)) from None
        record = await self._engine.open_record(self.kind, value, scope.principal.key)
        if record is None:
            raise self.unknown(value)
        scope.handles[(self.kind, value)] = record
        return record

    async def state(self, value: str) -> Mapping[str, Any]:
        """A snapshot of the handle's state."""
        return (await self.load(value)).state

    @_readable_outage
    async def update(self, value: str, edit: Edit[T]) -> T:
        """Read-modify-write of the handle's state, retried on conflict (like sessions)."""
        scope = self._current()
        record = await self.load(value)
        try:
            updated, result = await scope.edit(record, edit)
        except SessionNotFound:
            raise self.unknown(value) from None  # revoked or expired meanwhile
        except OversizedState as error:
            # The handle's own data: a tool error that says why (issue #12 row 3), as at
            # creation; nothing was stored.
            raise HandleError(
                f"The {self.kind} handle {value!r} was not changed: {error.message}"
            ) from None
        except SessionError as error:
            raise to_mcp_error(error) from None
        scope.handles[(self.kind, value)] = updated
        return result

    @_readable_outage
    async def renew(self, value: str, ttl: float | None = None) -> float:
        """Extend the handle's life (optionally with a new TTL); returns the new expiry."""
        scope = self._current()
        record = await self.load(value)
        try:
            renewed = await self._engine.store.touch(record, force=True, idle_ttl=ttl)
        except NotFound:
            raise self.unknown(value) from None
        scope.handles[(self.kind, value)] = renewed
        return renewed.expires_at

    @_readable_outage
    async def revoke(self, value: str) -> None:
        """End the handle now; later use gets the unknown-or-expired tool error."""
        scope = self._current()
        await self.load(value)
        if await self._engine.store.delete(self.kind, value, scope.principal.key):
            await self._engine.quotas.release(scope.caller(), "handles", value)
        scope.handles.pop((self.kind, value), None)
