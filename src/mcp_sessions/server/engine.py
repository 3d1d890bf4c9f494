"""Session logic between the SDK adapter and the store: no SDK import, no transport.

:class:`SessionsConfig` is how sessions behave; :class:`SessionEngine` holds it with the
store, the sealing codec and the quotas, and creates and destroys sessions
(``session/create``, ``session/destroy``). One request's view of its session,
:class:`~mcp_sessions.server.session.RequestScope`, lives with the session it loads.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Literal

from ..core.carriers import CarrierPolicy
from ..core.errors import (
    InvalidParams,
    InvalidSessionId,
    InvalidState,
    SessionNotFound,
)
from ..core.ids import new_session_id, validate_session_id
from ..core.limits import Limits
from ..core.names import (
    LIFECYCLE_EXPLICIT,
    LIFECYCLE_IMPLICIT,
    MAX_STATE_BYTES,
    SESSION_KIND,
)
from ..core.principal import Principal
from ..core.records import JSONObject, Record
from ..core.sealing import KeyRing, StateCodec
from ..core.toolsets import Catalog
from ..stores import AlreadyExists, Store, open_store, touch_live
from ..telemetry.instruments import SessionTelemetry
from .contention import EditQueue
from .outage import GuardedStore
from .quotas import Quotas

Lifecycle = Literal["implicit", "explicit"]
StateMode = Literal["server", "sealed"]


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
        telemetry: SessionTelemetry | None = None,
    ) -> None:
        self.config = config
        #: Spans and metrics through the OpenTelemetry API (issue #13, docs/observability.md).
        self.telemetry = telemetry if telemetry is not None else SessionTelemetry()
        #: The -31002 message, when the adapter can say more than the generic one (it names
        #: the ``session_start`` tool where the handle fallback is on; issue #11).
        self.session_required_message: str | None = None
        # Sealed mode keeps nothing for extension-aware clients, but legacy sessions and
        # handles still live in a store, so there is always one (memory by default).
        if store is None:
            store = "memory://"
        opened = open_store(store) if isinstance(store, str) else store
        #: Where sessions (server mode), legacy sessions and handles are kept; an outage of
        #: it is -31006 on every path (issue #12 item 8).
        guarded = opened if isinstance(opened, GuardedStore) else GuardedStore(opened)
        guarded.telemetry = self.telemetry
        self.store: Store = guarded
        #: Serialises edits of one record within this process (issue #12 item 7).
        self.edit_queue = EditQueue()
        #: The toolsets this server declares (issue #18, core/toolsets.py).
        self.toolsets = Catalog()
        ring = keys if keys is not None else KeyRing.generate()
        self.codec = StateCodec(
            ring, audience=config.audience, ttl=config.idle_ttl, max_bytes=config.max_state_bytes
        )
        #: Per-caller quotas and creation rate (issue #12), counted in :attr:`store`.
        self.quotas = Quotas(limits if limits is not None else Limits(), self.store)
        self.quotas.telemetry = self.telemetry

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

    # -- records -------------------------------------------------------------------------

    async def open_record(
        self, kind: str, record_id: str, principal: str, *, origin: str | None = None
    ) -> Record | None:
        """``principal``'s live record, touched (its idle TTL starts again), or ``None``:
        unknown, expired, another principal's, gone before the touch, or (with ``origin``)
        begun another way. One answer for all of them (DESIGN §2)."""
        record = await self.store.get(kind, record_id, principal)
        if record is None or (origin is not None and record.origin != origin):
            return None
        return await touch_live(self.store, record)

    async def record_legacy(
        self, session_id: str, principal: str, caller: str, attributes: JSONObject
    ) -> Record:
        """Store the legacy session the SDK has just minted ``session_id`` for (DESIGN §5),
        counted against ``caller``'s quota (admitted beforehand)."""
        record = Record.new(
            kind=SESSION_KIND,
            id=session_id,
            principal=principal,
            origin="legacy",
            now=time.time(),
            idle_ttl=self.config.idle_ttl,
            max_lifetime=self.config.max_lifetime,
            attributes=attributes,
        )
        with contextlib.suppress(AlreadyExists):
            await self.store.create(record)
            self.telemetry.session_created(record, "legacy")
        await self.quotas.note(caller, "legacy", record)
        return record

    async def end_legacy(self, session_id: str, principal: str, caller: str) -> bool:
        """End a legacy session (HTTP ``DELETE``, DESIGN §5); ``False`` if ``principal`` has
        no live one by that id. Its slot of ``caller``'s quota is freed."""
        if await self.open_record(SESSION_KIND, session_id, principal, origin="legacy") is None:
            return False
        if await self.store.delete(SESSION_KIND, session_id, principal):
            self.telemetry.session_destroyed(principal, session_id)
            await self.quotas.release(caller, "legacy", session_id)
        return True

    async def start_handle_session(self, session_id: str, principal: str, caller: str) -> Record:
        """A new session named by a handle argument (the ``session_start`` fallback, issue
        #11); raises LimitExceeded (-31005) or StoreUnavailable (-31006)."""
        record = Record.new(
            kind=SESSION_KIND,
            id=session_id,
            principal=principal,
            origin="handle",
            now=time.time(),
            idle_ttl=self.config.idle_ttl,
            max_lifetime=self.config.max_lifetime,
        )
        await self.quotas.admit(caller, "sessions", now=record.created_at)
        await self.store.create(record)
        self.telemetry.session_created(record, "handle")
        await self.quotas.note(caller, "sessions", record)
        return record

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
            # Explicit sessions are named by their _meta id afterwards (DESIGN §3).
            self.telemetry.session_created(record, "meta")
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
        self.telemetry.session_created(record, "meta")
        await self.quotas.note(caller, "sessions", record)
        return record, None

    async def destroy(
        self, principal: Principal, session_id: str, *, caller: str | None = None
    ) -> None:
        """Delete a session; unknown, expired and foreign ids all get SessionNotFound."""
        validate_session_id(session_id, source="sessionId")
        removed = await self.store.delete(SESSION_KIND, session_id, principal.key)
        if removed or self.config.state == "sealed":
            self.telemetry.session_destroyed(principal.key, session_id)
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


__all__ = ["InvalidState", "SessionEngine", "SessionsConfig"]
