"""``client.sessions``: what a client knows of its session, and the verbs that change it.

Which session requests carry (``use()``, ``switch()``), what the server advertises, the
extension's methods ``session/create`` and ``session/destroy`` (DESIGN §3: ``create()``,
``fork()``, ``destroy()``, ``new()``), and rollback of sealed state (``snapshot()``,
``restore()``). The bookkeeping itself is the tracker's and the jar's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from mcp.client import Client
from mcp.shared.exceptions import MCPError
from mcp.types import Request, RequestParams, Result
from pydantic import ConfigDict

from ..core.ids import new_session_id, validate_session_id
from ..core.names import EXTENSION_ID, LIFECYCLE_EXPLICIT
from .errors import METHOD_NOT_FOUND, ClientSessionError, SessionsUnsupported, translate_error
from .jar import JarScope, StateJar, token_seq
from .policy import (
    AutoSession,
    CreateSession,
    NewSession,
    ResumeSession,
    SessionRef,
    SessionSnapshot,
)
from .tracker import SessionTracker
from .transport import SessionTransport

# == the extension's methods (DESIGN §3) =======================================================


class _Params(RequestParams):
    model_config = ConfigDict(extra="allow")


class _SessionCreate(Request[_Params, Literal["session/create"]]):
    method: Literal["session/create"] = "session/create"
    params: _Params


class _SessionDestroy(Request[_Params, Literal["session/destroy"]]):
    method: Literal["session/destroy"] = "session/destroy"
    params: _Params


class _AnyResult(Result):
    model_config = ConfigDict(extra="allow")


# == the helper object =========================================================================


class ClientSessions:
    """The session side of a :class:`~.client.SessionClient`: ``client.sessions``."""

    def __init__(
        self,
        client: Client,
        tracker: SessionTracker,
        transport: SessionTransport,
        policy: AutoSession | NewSession | ResumeSession | CreateSession,
        *,
        resumed: bool,
    ) -> None:
        self._client = client
        self._tracker = tracker
        self._transport = transport
        self._policy = policy
        self._resumed = resumed
        self._settings: Mapping[str, Any] | None = None
        self._connected = False

    def __repr__(self) -> str:
        return f"<ClientSessions {self.id} at {self.scope}>"

    # -- what is known -------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The session requests from here carry (inside ``use()``, that session)."""
        return self._tracker.active

    @property
    def current(self) -> SessionRef:
        """The client's own session (what ``use()`` blocks return to)."""
        current = self._tracker.current
        found = self.jar.entry(self.scope, current)
        return SessionRef(current, found.expires_at if found else None)

    @property
    def scope(self) -> JarScope:
        return self._tracker.scope

    @property
    def jar(self) -> StateJar:
        return self._tracker.jar

    @property
    def token(self) -> str | None:
        """The state token the next request will echo (sealed-state servers)."""
        return self.jar.token(self.scope, self.id)

    @property
    def expires_at(self) -> str | None:
        """The expiry the server last reported for this session (RFC 3339)."""
        found = self.jar.entry(self.scope, self.id)
        return found.expires_at if found else None

    @property
    def advertised(self) -> bool:
        """Whether the server advertises ``dev.mcpsessions/sessions`` (known once connected).

        A server that does not still works: it ignores the ``_meta`` key."""
        return self._settings is not None

    @property
    def settings(self) -> Mapping[str, Any] | None:
        """The server's extension settings (``lifecycle``, ``state``, ``header``, …)."""
        return self._settings

    @property
    def lifecycle(self) -> str | None:
        value = self._settings.get("lifecycle") if self._settings else None
        return value if isinstance(value, str) else None

    @property
    def sealed(self) -> bool:
        """``True`` when the server keeps no state and seals it into tokens for the client."""
        return bool(self._settings and self._settings.get("state") is True)

    @property
    def legacy_session_id(self) -> str | None:
        """The ``Mcp-Session-Id`` of a 2025-11-25 HTTP connection, if any."""
        return self._transport.legacy.current if self._transport.legacy is not None else None

    # -- choosing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def use(self, session: SessionRef | str) -> Iterator[SessionRef]:
        """Send requests of this block (this task and tasks it starts) in ``session``."""
        ref = self._ref(session)
        with self._tracker.using(ref.id):
            yield ref

    def switch(self, session: SessionRef | str) -> SessionRef:
        """Make ``session`` the client's own (and what a restarted client resumes)."""
        ref = self._ref(session)
        self._tracker.switch(ref.id)
        return ref

    def _ref(self, session: SessionRef | str) -> SessionRef:
        if isinstance(session, SessionRef):
            return session
        validate_session_id(session, source="session id")
        return SessionRef(session)

    # -- server methods ------------------------------------------------------------------------

    async def create(self, *, ttl_seconds: float | None = None, switch: bool = True) -> SessionRef:
        """A new session through ``session/create``; the client moves into it unless
        ``switch=False``."""
        ref = await self._create(new_session_id(), ttl_seconds=ttl_seconds)
        if switch:
            self._tracker.switch(ref.id)
        return ref

    async def fork(self, *, ttl_seconds: float | None = None, switch: bool = False) -> SessionRef:
        """A new session with a copy of this one's state (``session/create`` with
        ``forkFrom``; in sealed mode the server reads the state from this session's token).

        The client stays where it is unless ``switch=True``; use the fork with
        ``with client.sessions.use(fork): ...``, or open another client on it with
        ``session_policy=ResumeSession(fork.id)`` and the same jar."""
        self._require_advertised("fork()")
        parent = self.id
        fork_from: str | None = parent
        if self.sealed and self.jar.token(self.scope, parent) is None:
            fork_from = None  # no state yet: a copy of nothing is a new session
        return await self._create(new_session_id(), ttl_seconds=ttl_seconds, fork_from=fork_from)

    async def destroy(self, session: SessionRef | str | None = None) -> None:
        """End a session on the server (``session/destroy``) and forget it.

        Destroying the client's own session moves it to a fresh client-generated id; on a
        server with the ``explicit`` lifecycle call :meth:`create` (or :meth:`new`) before
        the next request."""
        target = self._ref(session).id if session is not None else self.id
        await self._call(_SessionDestroy(params=_Params.model_validate({"sessionId": target})))
        self.jar.forget(self.scope, target)
        if target == self._tracker.current:
            self._tracker.switch(new_session_id())

    async def new(self) -> SessionRef:
        """Start over in a new session: ``session/create`` if the server's lifecycle is
        ``explicit``, else a new client-generated id (no request)."""
        if self.lifecycle == LIFECYCLE_EXPLICIT:
            return await self.create()
        return self.switch(new_session_id())

    async def renew_legacy(self) -> str | None:
        """After :class:`~.errors.LegacySessionLost`: start a new legacy session (re-initialize).
        Returns the new ``Mcp-Session-Id`` (``None`` off legacy HTTP)."""
        return await self._transport.renew_legacy()

    # -- rollback (sealed state) ---------------------------------------------------------------

    def snapshot(self) -> SessionSnapshot:
        """The current point of this session, to :meth:`restore` later (sealed state only)."""
        self._require_sealed("snapshot()")
        token = self.jar.token(self.scope, self.id)
        return SessionSnapshot(self.scope, self.id, token, token_seq(token) if token else None)

    def restore(self, snapshot: SessionSnapshot) -> None:
        """Roll the snapshot's session back: the next request replays its token.

        Results of requests already in flight no longer update the jar."""
        self._require_sealed("restore()")
        if snapshot.scope != self.scope:
            raise ValueError(
                f"this snapshot belongs to {snapshot.scope}, not {self.scope}: a token is "
                "never sent to another server or as another principal"
            )
        self.jar.replace_token(self.scope, snapshot.session_id, snapshot.token)

    def forget_state(self) -> None:
        """Stop echoing this session's state token (after :class:`~.errors.InvalidStateError`): the
        server then sees the session without state."""
        self.jar.replace_token(self.scope, self.id, None)

    def _require_advertised(self, what: str) -> None:
        if not self._connected:
            raise RuntimeError(f"{what} needs a connected client: use it inside 'async with'")
        if not self.advertised:
            raise SessionsUnsupported(
                f"{what}: this server does not advertise {EXTENSION_ID}, so it cannot copy or "
                "replay session state (plain requests still work)"
            )

    def _require_sealed(self, what: str) -> None:
        self._require_advertised(what)
        if not self.sealed:
            raise SessionsUnsupported(
                f"{what} replays sealed state tokens, and this server keeps session state on "
                "its side (state mode 'server'); use fork() to branch instead"
            )

    async def _create(
        self, proposed: str, *, ttl_seconds: float | None, fork_from: str | None = None
    ) -> SessionRef:
        params: dict[str, Any] = {"sessionId": proposed}
        if ttl_seconds is not None:
            params["ttlSeconds"] = ttl_seconds
        if fork_from is not None:
            params["forkFrom"] = fork_from
        result = await self._call(_SessionCreate(params=_Params.model_validate(params)))
        session_id = result.get("sessionId")
        if not isinstance(session_id, str):
            raise ClientSessionError(f"session/create answered without a sessionId: {result!r}")
        token = result.get("state")
        expires_at = result.get("expiresAt")
        self.jar.offer(
            self.scope,
            session_id,
            token=token if isinstance(token, str) else None,
            expires_at=expires_at if isinstance(expires_at, str) else None,
        )
        return SessionRef(session_id, expires_at if isinstance(expires_at, str) else None)

    async def _call(self, request: Request[Any, Any]) -> dict[str, Any]:
        try:
            result = await self._client.session.send_request(request, _AnyResult)
        except MCPError as error:
            if error.code == METHOD_NOT_FOUND:
                raise SessionsUnsupported(
                    f"the server does not serve {request.method} ({error.message}); it does "
                    f"not implement {EXTENSION_ID}",
                    code=error.code,
                    data=error.data,
                ) from None
            raise translate_error(error) from None
        return result.model_dump(by_alias=True, exclude_none=True)

    # -- lifecycle (called by SessionClient) ---------------------------------------------------

    async def _start(self) -> None:
        capabilities = self._client.server_capabilities
        extensions = capabilities.extensions or {}
        settings = extensions.get(EXTENSION_ID)
        self._settings = settings if isinstance(settings, Mapping) else None
        self._connected = True
        policy = self._policy
        explicit = self.lifecycle == LIFECYCLE_EXPLICIT
        if isinstance(policy, CreateSession) or (
            isinstance(policy, AutoSession) and explicit and not self._resumed
        ):
            ttl = policy.ttl_seconds if isinstance(policy, CreateSession) else None
            ref = await self._create(self._tracker.current, ttl_seconds=ttl)
            self._tracker.switch(ref.id)
