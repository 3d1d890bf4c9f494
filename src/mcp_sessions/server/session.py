"""One request's session: the :class:`Session` tools see, whichever carrier brought it
(DESIGN §2), and the :class:`RequestScope` that resolves, loads, edits and stamps it."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from mcp.server.mcpserver.exceptions import ToolError

from ..core.carriers import CLIENT_CARRIERS, Carrier, Resolution
from ..core.errors import (
    OversizedState,
    SessionError,
    SessionNotFound,
    SessionRequired,
    StateConflict,
)
from ..core.names import (
    LIFECYCLE_EXPLICIT,
    LIFECYCLE_IMPLICIT,
    META_EXPIRES_AT,
    META_STATE,
    SESSION_KIND,
    STATE_TOOLSETS,
)
from ..core.principal import Principal
from ..core.records import JSONObject, Record, copy_json
from ..core.timestamps import rfc3339
from ..core.toolsets import Surface, ToolsetRefused
from ..stores import AlreadyExists, NotFound, StateOverMaxBytes, VersionConflict, touch_live
from .contention import conflict_backoff
from .errors import to_mcp_error

if TYPE_CHECKING:
    from .engine import SessionEngine

T = TypeVar("T")


Edit = Callable[[JSONObject], "T | Awaitable[T]"]


class ToolsetError(ToolError):
    """A toolset change that was refused (an unknown set, too many enabled): a tool error
    whose message says why (the SDK would hide any other exception's)."""


class Session:
    """A session as a tool sees it.

    ``state`` is a read-only snapshot; change it with :meth:`update`, a read-modify-write
    that retries on a version conflict, so parallel calls in one session never lose an update
    (DESIGN §4). In sealed mode the state travels in the token and edits are local to this
    request until the result carries the new token.
    """

    def __init__(self, scope: RequestScope, record: Record, *, created: bool) -> None:
        self._scope = scope
        self._record = record
        #: ``True`` when this very request created the session.
        self.created = created

    # -- identity --------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._record.id

    @property
    def principal(self) -> Principal:
        return self._scope.principal

    @property
    def carrier(self) -> Carrier:
        """How this request named the session."""
        return self._scope.carrier

    @property
    def origin(self) -> str:
        """How the session began: ``client``, ``create``, ``legacy``, ``fork``, ``handle`` or
        ``connection`` (a stdio connection's own session)."""
        return self._record.origin

    @property
    def created_at(self) -> float:
        return self._record.created_at

    @property
    def expires_at(self) -> float:
        return self._record.expires_at

    @property
    def conversation_id(self) -> str | None:
        """``gen_ai.conversation.id`` from the request's W3C baggage, if any."""
        return self._scope.conversation_id

    @property
    def version(self) -> int:
        return self._record.version

    # -- state -----------------------------------------------------------------------------

    @property
    def state(self) -> Mapping[str, Any]:
        """A read-only view of the state as last read or written by this request."""
        return MappingProxyType(self._record.state)

    def get(self, key: str, default: Any = None) -> Any:
        return self._record.state.get(key, default)

    async def update(self, edit: Edit[T]) -> T:
        """Run ``edit(state)`` on a private copy of the state and store the result atomically.

        ``edit`` mutates the dict it receives (sync or async) and may return a value, which
        ``update`` returns. On a version conflict the latest state is read and ``edit`` runs
        again, so it must not have side effects beyond the dict. Raises
        :class:`~mcp_sessions.core.errors.StateConflict` after too many lost races.
        """
        try:
            self._record, result = await self._scope.edit(self._record, edit)
        except SessionError as error:
            raise to_mcp_error(error) from None
        return result

    async def set(self, key: str, value: Any) -> None:
        """Set one key (an :meth:`update`)."""

        def put(state: JSONObject) -> None:
            state[key] = value

        await self.update(put)

    async def clear(self) -> None:
        """Empty the state (an :meth:`update`)."""
        await self.update(lambda state: state.clear())

    # -- toolsets (issue #18; the rules in core/toolsets.py, the wiring in toolsets.py) -----

    @property
    def surface(self) -> Surface:
        """The toolsets enabled in this session, and so what it sees and may call."""
        catalog = self._scope.engine.toolsets
        return catalog.surface(catalog.enabled_in(self._record.state))

    async def enable(self, *toolsets: str) -> Surface:
        """Enable toolsets for this session (an :meth:`update`); returns the new surface.
        An unknown name, or more enabled sets than the server allows, is a tool error and
        changes nothing."""
        return await self._change_toolsets(toolsets, enable=True)

    async def disable(self, *toolsets: str) -> Surface:
        """Disable toolsets for this session (an :meth:`update`); returns the new surface."""
        return await self._change_toolsets(toolsets, enable=False)

    async def _change_toolsets(self, names: tuple[str, ...], *, enable: bool) -> Surface:
        # One compare-and-set of the state, retried on conflict like any update, so replicas
        # sharing a store agree; refused whole (ToolsetError), nothing stored.
        catalog = self._scope.engine.toolsets
        try:
            catalog.changed(catalog.enabled_in(self.state), names, enable=enable)
        except ToolsetRefused as error:
            raise ToolsetError(str(error)) from None

        def edit(state: JSONObject) -> tuple[tuple[str, ...], tuple[str, ...]]:
            before = catalog.enabled_in(state)
            after = catalog.changed(before, names, enable=enable)
            if after:
                state[STATE_TOOLSETS] = list(after)
            else:
                state.pop(STATE_TOOLSETS, None)
            return before, after

        try:
            before, after = await self.update(edit)
        except ToolsetRefused as error:  # others enabled sets meanwhile: over the cap now
            raise ToolsetError(str(error)) from None
        changed = self._scope.lists_changed
        changed.extend(m for m in catalog.changed_lists(before, after) if m not in changed)
        return catalog.surface(after)

    def __repr__(self) -> str:
        return f"<Session {self.id} via {self.carrier.value} v{self.version}>"


class RequestScope:
    """One request's session, resolved from its carrier on first use."""

    def __init__(
        self,
        engine: SessionEngine,
        resolution: Resolution,
        principal: Principal,
        meta: Mapping[str, Any],
        conversation_id: str | None,
    ) -> None:
        self.engine = engine
        self.resolution = resolution
        self.principal = principal
        self.meta = meta
        self.conversation_id = conversation_id
        self._session: Session | None = None
        #: Handle records this request loaded or made, by (kind, handle).
        self.handles: dict[tuple[str, str], Record] = {}
        #: Handles this request minted, as (kind, handle): listed in the result's _meta so a
        #: gateway pins each to the replica that holds it (issue #11).
        self.minted: list[tuple[str, str]] = []
        self._token_out: str | None = None
        self._seq = 0
        self._conflict_current: Record | None = None
        #: A tool error to answer instead of running the tool (a malformed handle argument).
        self.refusal: str | None = None
        #: The transport's request (the SDK's Starlette request over HTTP, else ``None``):
        #: quotas tell anonymous callers apart by its client address.
        self.request: Any = None
        #: The legacy session record the HTTP gate has just read and touched for this request
        #: (``server/http.py``), handed over with the request so it is not read twice.
        self.legacy_record: Record | None = None
        #: The list methods whose result this request changed for its session (toolsets).
        self.lists_changed: list[str] = []

    def end(self) -> None:
        """The request is answered: let go of its session and the gate's record.

        A session refers to its scope and the scope to its session, a reference cycle that
        only the garbage collector frees, taking the request's record and HTTP request with
        it: a collection every few dozen requests (issue #14's benchmark). Breaking it here
        frees them at once. The session object keeps working for whoever holds it; a task the
        request started that asks for the session again opens it afresh from the store.
        """
        self._session = None
        self.legacy_record = None

    def caller(self) -> str:
        """This request's quota key (the principal, or an anonymous caller's address)."""
        return self.engine.quotas.caller(self.principal, self.request)

    @property
    def carrier(self) -> Carrier:
        return self.resolution.carrier

    @property
    def _sealed(self) -> bool:
        # Sealed state needs a client that echoes tokens: extension-aware carriers only.
        # Legacy sessions and session handles (plain clients) keep their state in the store.
        return self.engine.config.state == "sealed" and self.carrier in CLIENT_CARRIERS

    @property
    def session_id(self) -> str | None:
        return self.resolution.session_id

    @property
    def loaded(self) -> Session | None:
        """The session if this request used it, else ``None``."""
        return self._session

    async def session(self) -> Session:
        """The request's session; raises SessionRequired / SessionNotFound / InvalidState."""
        if self._session is not None:
            return self._session
        session_id = self.resolution.session_id
        if session_id is None:
            raise SessionRequired(self.engine.session_required_message)
        if self._sealed:
            self._session = self._open_sealed(session_id)
        else:
            self._session = await self._open_stored(session_id)
        return self._session

    async def peek_state(self) -> Mapping[str, Any] | None:
        """The session's state as stored (or sealed), without creating or touching it:
        ``None`` when the request names no session, or one unknown to this principal."""
        session_id = self.resolution.session_id
        if session_id is None:
            return None
        if self._session is not None:
            return self._session.state
        if self._sealed:
            try:
                return (await self.session()).state
            except SessionError:
                return None
        checked = self.legacy_record
        if (
            checked is not None
            and checked.id == session_id
            and checked.principal == self.principal.key
        ):
            return checked.state
        record = await self.engine.store.get(SESSION_KIND, session_id, self.principal.key)
        return None if record is None else record.state

    def _open_sealed(self, session_id: str) -> Session:
        now = time.time()
        config = self.engine.config
        token = self.meta.get(META_STATE)
        record = Record.new(
            kind=SESSION_KIND,
            id=session_id,
            principal=self.principal.key,
            origin="client",
            now=now,
            idle_ttl=self.engine.codec.ttl,
        )
        if token is not None:
            opened = self.engine.codec.unseal(
                token, principal=self.principal.key, session_id=session_id, now=now
            )
            self._seq = opened.seq
            record = record._replace(
                state=opened.state, version=opened.seq, max_expires_at=opened.expires_at
            )
            return Session(self, record, created=False)
        if config.lifecycle == LIFECYCLE_EXPLICIT:
            # Explicit sealed sessions prove their creation with the token session/create gave.
            raise SessionNotFound()
        self.engine.telemetry.session_created(record, self.carrier.value)
        return Session(self, record, created=True)

    async def _open_stored(self, session_id: str) -> Session:
        checked = self.legacy_record
        if (
            self.carrier is Carrier.LEGACY
            and checked is not None
            and checked.id == session_id
            and checked.principal == self.principal.key
        ):
            # The HTTP gate has just read and touched this legacy session: no second read.
            return Session(self, checked, created=False)
        store = self.engine.store
        config = self.engine.config
        key = self.principal.key
        record = await store.get(SESSION_KIND, session_id, key)
        created = False
        if record is None:
            # Unknown to this principal. Another principal's session with the same id is not
            # in the way: the store keys records by principal too, so the id is unknown here
            # and gets exactly the unknown-id answer (DESIGN §2).
            # A connection's session is created on first use whatever the lifecycle: its id
            # is minted by the adapter, never proposed by a client (carrier 5, issue #11).
            connection = self.carrier is Carrier.CONNECTION
            implicit = connection or (
                config.lifecycle == LIFECYCLE_IMPLICIT and self.carrier in CLIENT_CARRIERS
            )
            if not implicit:
                raise SessionNotFound()
            record = Record.new(
                kind=SESSION_KIND,
                id=session_id,
                principal=key,
                origin="connection" if connection else "client",
                now=time.time(),
                idle_ttl=config.idle_ttl,
                max_lifetime=config.max_lifetime,
            )
            caller = self.caller()
            await self.engine.quotas.admit(caller, "sessions")
            try:
                await store.create(record)
                created = True
                self.engine.telemetry.session_created(record, self.carrier.value)
                await self.engine.quotas.note(caller, "sessions", record)
            except AlreadyExists:
                # A parallel first request of this principal won the race: use its session.
                record = await store.get(SESSION_KIND, session_id, key)
                if record is None:  # and it was destroyed (or expired) in between
                    raise SessionNotFound() from None
        else:
            touched = await touch_live(store, record)
            if touched is None:
                raise SessionNotFound()
            record = touched
        return Session(self, record, created=created)

    # -- used by Session.update ---------------------------------------------------------------

    async def commit(self, record: Record, state: JSONObject) -> Record | None:
        """Store ``state`` if ``record`` is still current; ``None`` on a version conflict."""
        config = self.engine.config
        if record.kind == SESSION_KIND and self._sealed:
            # Sealing now surfaces an oversize state to the tool that caused it.
            self._token_out = self.engine.codec.seal(
                state, principal=self.principal.key, session_id=record.id, seq=self._seq + 1
            )
            return record._replace(state=state, version=self._seq + 1)
        limit = config.max_server_state_bytes
        try:
            return await self.engine.store.compare_and_set(
                record.kind, record.id, self.principal.key, record.version, state, max_bytes=limit
            )
        except VersionConflict as conflict:
            self._conflict_current = conflict.current
            return None
        except NotFound:
            raise SessionNotFound() from None
        except StateOverMaxBytes as error:
            raise OversizedState(
                f"The session state would be {error.size} bytes of JSON, over this server's "
                f"limit of {limit}. Store less per session."
            ) from None

    async def edit(self, record: Record, edit: Edit[T]) -> tuple[Record, T]:
        """Read-modify-write: ``edit`` a private copy of ``record``'s state, store it with a
        compare-and-set, and on a version conflict run ``edit`` again on the current state.

        Returns the stored record and what ``edit`` returned. Raises StateConflict after
        ``max_retries`` lost races, SessionNotFound if the record is gone.
        """
        queue = self.engine.edit_queue
        key = (record.kind, record.id, self.principal.key)
        held = False
        if not (record.kind == SESSION_KIND and self._sealed):  # sealed: nothing stored
            # One edit per record at a time in this process (issue #12 item 7): the others
            # wait and start from what it stored, so only other processes' writes conflict.
            held = queue.take(key, self) or await queue.wait(key, self) is not None
            # Start from what an earlier edit here stored (None above: an edit inside an edit).
            record = queue.latest(key, record)
        stored: Record | None = None
        try:
            for conflicts in range(self.engine.config.max_retries):
                if conflicts:
                    delay = conflict_backoff(conflicts)
                    if delay:
                        # Another process keeps winning: let it finish, not race in step.
                        await asyncio.sleep(delay)
                draft = copy_json(record.state)
                result = edit(draft)
                if inspect.isawaitable(result):
                    result = await result
                stored = await self.commit(record, draft)
                if stored is not None:
                    return stored, result
                retried = conflicts + 1 < self.engine.config.max_retries
                self.engine.telemetry.state_conflict(record.kind, retried)  # issue #13
                record = await self.reload(record)
            raise StateConflict()
        finally:
            if held:
                queue.leave(key, stored)

    async def reload(self, record: Record) -> Record:
        current, self._conflict_current = self._conflict_current, None
        if current is not None:
            return current
        fresh = await self.engine.store.get(record.kind, record.id, self.principal.key)
        if fresh is None:
            raise SessionNotFound()
        return fresh

    # -- what the result carries (DESIGN §3) ----------------------------------------------

    def result_meta(self) -> dict[str, Any]:
        """``_meta`` entries for the result: expiry, and a new state token if it changed."""
        if self._session is None:
            return {}
        meta: dict[str, Any] = {}
        expiry = rfc3339(self._session.expires_at)
        if expiry is not None:
            meta[META_EXPIRES_AT] = expiry
        if self._token_out is not None:
            meta[META_STATE] = self._token_out
        return meta
