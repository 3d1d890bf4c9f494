"""Session logic between the SDK adapter and the store: no SDK import, no transport.

:class:`SessionEngine` holds the configuration, the store and the sealing codec;
:class:`RequestScope` is one request's view of its session, loaded lazily so that requests
which never touch a session pay for nothing but carrier resolution.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from ..core.carriers import Carrier, CarrierPolicy, Resolution
from ..core.errors import (
    InvalidParams,
    InvalidSessionId,
    InvalidState,
    SessionError,
    SessionNotFound,
    SessionRequired,
    StateConflict,
    StateTooLarge,
)
from ..core.ids import new_session_id, validate_session_id
from ..core.limits import Limits
from ..core.names import (
    LIFECYCLE_EXPLICIT,
    LIFECYCLE_IMPLICIT,
    MAX_STATE_BYTES,
    META_EXPIRES_AT,
    META_STATE,
    SESSION_KIND,
)
from ..core.principal import Principal
from ..core.records import JSONObject, Record, copy_json
from ..core.sealing import KeyRing, StateCodec
from ..core.timestamps import rfc3339
from ..stores import AlreadyExists, NotFound, Store, VersionConflict
from ..stores import StateTooLarge as StoreStateTooLarge
from .contention import EditQueue, conflict_backoff
from .outage import GuardedStore
from .quotas import Quotas
from .session import Edit, Session

Lifecycle = Literal["implicit", "explicit"]
StateMode = Literal["server", "sealed"]

#: The legacy session record the HTTP gate read and touched for the current request.
legacy_record_var: ContextVar[Record | None] = ContextVar("mcp_sessions_legacy", default=None)

T = TypeVar("T")

#: Carriers through which a client proposes its own id (implicit creation applies).
CLIENT_CARRIERS = frozenset({Carrier.META, Carrier.SEP2822, Carrier.OPENAI, Carrier.BEDROCK})


@dataclass(frozen=True)
class SessionsConfig:
    """How sessions behave. Every field has a sane default."""

    #: ``implicit``: the first request with an unknown client id creates the session (parallel
    #: first calls work); ``explicit``: ids must come from ``session/create``.
    lifecycle: Lifecycle = "implicit"
    #: ``server``: state in the store; ``sealed``: state travels in ``_meta``, server keeps none.
    state: StateMode = "server"
    #: Idle time after which a session expires, in seconds.
    idle_ttl: float = 3600.0
    #: Absolute cap on a session's life, in seconds; ``None`` for none.
    max_lifetime: float | None = 7 * 24 * 3600.0
    #: Which carriers are honoured (aliases can be switched off).
    carriers: CarrierPolicy = field(default_factory=CarrierPolicy)
    #: Sealed mode: largest token, bytes (DESIGN §4).
    max_state_bytes: int = MAX_STATE_BYTES
    #: Server mode: largest state document, bytes of JSON.
    max_server_state_bytes: int = 1 << 20
    #: Compare-and-set attempts before :class:`StateConflict`.
    max_retries: int = 64
    #: Legacy HTTP: answer 400 to a non-initialize request without ``Mcp-Session-Id``.
    legacy_sessions_required: bool = True
    #: Sealed-token audience; defaults to the server's name where the adapter knows it.
    audience: str = "mcp-sessions"

    def __post_init__(self) -> None:
        if self.lifecycle not in (LIFECYCLE_IMPLICIT, LIFECYCLE_EXPLICIT):
            raise ValueError(f"lifecycle must be 'implicit' or 'explicit', not {self.lifecycle!r}")
        if self.state not in ("server", "sealed"):
            raise ValueError(f"state must be 'server' or 'sealed', not {self.state!r}")
        if not (self.idle_ttl > 0 and math.isfinite(self.idle_ttl)):
            raise ValueError(
                f"idle_ttl must be a positive number of seconds, not {self.idle_ttl!r}"
            )
        if self.max_lifetime is not None and not self.max_lifetime > 0:
            raise ValueError(f"max_lifetime must be positive or None, not {self.max_lifetime!r}")
        if self.max_retries < 1:
            raise ValueError("max_retries must be at least 1")


class SessionEngine:
    """Configuration, store and codec shared by every request of one server."""

    def __init__(
        self,
        config: SessionsConfig,
        *,
        store: Store | str | None = None,
        keys: KeyRing | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.config = config
        #: Turns a session error raised inside a tool body into what the adapter needs.
        self.translate: Callable[[SessionError], Exception] = lambda error: error
        #: The -31002 message, when the adapter can say more than the generic one (it names
        #: the ``session_start`` tool where the handle fallback is on; issue #11).
        self.session_required_message: str | None = None
        from ..stores import open_store

        # Sealed mode keeps nothing for extension-aware clients, but legacy sessions and
        # handles still live in a store, so there is always one (memory by default).
        if store is None:
            store = "memory://"
        opened = open_store(store) if isinstance(store, str) else store
        #: Where sessions (server mode), legacy sessions and handles are kept; an outage of
        #: it is -31006 on every path (issue #12 item 8).
        self.store: Store = opened if isinstance(opened, GuardedStore) else GuardedStore(opened)
        #: Serialises edits of one record within this process (issue #12 item 7).
        self.edit_queue = EditQueue()
        ring = keys if keys is not None else KeyRing.generate()
        self.codec = StateCodec(
            ring, audience=config.audience, ttl=config.idle_ttl, max_bytes=config.max_state_bytes
        )
        #: Per-caller quotas and creation rate (issue #12), counted in :attr:`store`.
        self.quotas = Quotas(limits if limits is not None else Limits(), self)

    @property
    def store_url(self) -> str:
        """The store's URL, password hidden."""
        return self.store.url

    async def start(self) -> None:
        """Open or connect the store now (server start-up): an unusable store is logged, a
        Redis server without persistence warned about; the server starts either way."""
        if isinstance(self.store, GuardedStore):
            await self.store.start()

    async def aclose(self) -> None:
        await self.store.close()

    # -- session/create and session/destroy (DESIGN §3) ----------------------------------

    async def create(
        self,
        principal: Principal,
        *,
        session_id: str | None = None,
        ttl_seconds: float | None = None,
        fork_from: str | None = None,
        fork_token: str | None = None,
        now: float | None = None,
        caller: str | None = None,
    ) -> tuple[Record, str | None]:
        """Create a session; returns the record and, in sealed mode, its first state token.

        ``fork_from`` copies the state of a session of the same principal (server mode from
        the store, sealed mode from ``fork_token``, which must be sealed for that session).
        ``caller`` is the quota key (:meth:`Quotas.caller`); by default the principal's.
        """
        now = time.time() if now is None else now
        if session_id is not None:
            validate_session_id(session_id, source="sessionId")
        # ttlSeconds only ever shortens the idle TTL (DESIGN §3, issue #12 row 4).
        idle_ttl = min(self.config.idle_ttl, validate_ttl_seconds(ttl_seconds))
        state: JSONObject = {}
        origin = "create"
        parent_seq = 0
        if fork_from is not None:
            validate_session_id(fork_from, source="forkFrom")
            origin = "fork"
            if self.config.state == "server":
                parent = await self.store.get(SESSION_KIND, fork_from, principal.key, now=now)
                if parent is None:
                    raise SessionNotFound()
                state = parent.state
            else:
                if fork_token is None:
                    raise SessionNotFound(
                        "forkFrom needs the parent's state: send its dev.mcpsessions/state "
                        "token in params._meta"
                    )
                opened = self.codec.unseal(
                    fork_token, principal=principal.key, session_id=fork_from, now=now
                )
                state, parent_seq = opened.state, opened.seq
        attributes = {"parent": fork_from} if fork_from else {}
        record = Record.new(
            kind=SESSION_KIND,
            id=session_id or new_session_id(),
            principal=principal.key,
            origin=origin,
            now=now,
            idle_ttl=idle_ttl,
            max_lifetime=self.config.max_lifetime,
            state=state,
            attributes=attributes,
        )
        if self.config.state == "sealed":
            token = self.codec.seal(
                record.state,
                principal=principal.key,
                session_id=record.id,
                seq=parent_seq + 1,
                now=now,
            )
            return record, token
        caller = principal.key if caller is None else caller
        await self.quotas.admit(caller, "sessions", now=now)
        try:
            # Ids are per principal (the store keys records by kind, id and principal), so
            # only the caller's own live session can make this fail: another principal's
            # session with this id is invisible here, as everywhere (DESIGN §2).
            await self.store.create(record)
        except AlreadyExists:
            raise InvalidSessionId(
                "sessionId is already in use by a live session of yours; omit it to get a "
                "fresh id from the server"
            ) from None
        await self.quotas.note(caller, "sessions", record)
        return record, None

    async def destroy(
        self, principal: Principal, session_id: str, *, caller: str | None = None
    ) -> None:
        """Delete a session; unknown, expired and foreign ids all get SessionNotFound."""
        validate_session_id(session_id, source="sessionId")
        removed = await self.store.delete(SESSION_KIND, session_id, principal.key)
        if removed:
            caller = principal.key if caller is None else caller
            await self.quotas.release(caller, "sessions", session_id)
        # Sealed sessions are not stored: their tokens simply expire (documented).
        if not removed and self.config.state == "server":
            raise SessionNotFound()


def validate_ttl_seconds(value: object) -> float:
    """``session/create``'s ``ttlSeconds``: a whole number of seconds, at least 1.

    Refused (-32602): strings (``"10"``), booleans, fractions (``1.5``; a float with a whole
    value such as ``10.0`` is taken, as JSON does not tell 10 from 10.0), zero, negatives and
    anything not finite. ``None`` (absent) is no limit: ``math.inf``.
    """
    if value is None:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidParams(
            f"ttlSeconds must be a whole number of seconds, not {type(value).__name__} "
            f"{json_preview(value)}"
        )
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise InvalidParams(f"ttlSeconds must be a whole number of seconds, not {value!r}")
    if value < 1:
        raise InvalidParams(f"ttlSeconds must be at least 1 second, not {value!r}")
    # A huge integer is no error, only longer than any idle TTL (float() would overflow).
    return float(value) if value < 2**53 else math.inf


def json_preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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
        return Session(self, record, created=True)

    async def _open_stored(self, session_id: str) -> Session:
        checked = legacy_record_var.get()
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
                await self.engine.quotas.note(caller, "sessions", record)
            except AlreadyExists:
                # A parallel first request of this principal won the race: use its session.
                record = await store.get(SESSION_KIND, session_id, key)
                if record is None:  # and it was destroyed (or expired) in between
                    raise SessionNotFound() from None
        else:
            try:
                record = await store.touch(record)
            except NotFound:
                raise SessionNotFound() from None
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
        except StoreStateTooLarge as error:
            raise StateTooLarge(
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


__all__ = ["InvalidState", "RequestScope", "SessionEngine", "SessionsConfig"]
