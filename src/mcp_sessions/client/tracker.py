"""One connection's session bookkeeping, sans-IO: what each request carries, and what each
result teaches the jar.

The transport wrapper (:mod:`.transport`) calls :meth:`SessionTracker.stamp` for every
outgoing JSON-RPC request (in the caller's task, so :meth:`SessionTracker.using` is
task-local) and :meth:`~SessionTracker.on_result` / :meth:`~SessionTracker.on_error` for
every answer. Plain dicts in, plain dicts out: no SDK types, no I/O but the jar's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from ..core.names import (
    META_EXPIRES_AT,
    META_SESSION_ID,
    META_STATE,
    METHOD_SESSION_CREATE,
    METHOD_SESSION_DESTROY,
    SESSION_INDEPENDENT_METHODS,
)
from .jar import DEFAULT_SLOT, JarScope, StateJar

#: Requests that send no state token, up to 4 KB: those whose results never depend on the
#: session, and ``session/destroy``, which ends the session whatever its state.
_TOKENLESS_METHODS = SESSION_INDEPENDENT_METHODS | {METHOD_SESSION_DESTROY}
#: Results the session helpers read themselves (they concern another session than the one
#: the request named).
_SELF_HANDLED = frozenset({METHOD_SESSION_CREATE, METHOD_SESSION_DESTROY})
#: Requests whose answers never come (cancelled) are forgotten beyond this many.
_MAX_PENDING = 4096


@dataclass(frozen=True, slots=True)
class Stamp:
    """What one request carried."""

    session_id: str
    generation: int
    method: str


class SessionTracker:
    """The session of one client connection, and the requests in flight."""

    def __init__(
        self, jar: StateJar, scope: JarScope, session_id: str, *, slot: str = DEFAULT_SLOT
    ) -> None:
        self.jar = jar
        self.scope = scope
        self.slot = slot
        self._current = session_id
        self._pending: OrderedDict[Hashable, Stamp] = OrderedDict()
        # One variable per tracker: using() on one client never leaks into another.
        self._override: ContextVar[str | None] = ContextVar(
            f"mcp_sessions_client_{id(self):x}", default=None
        )

    # -- which session -------------------------------------------------------------------------

    @property
    def current(self) -> str:
        """The client's session (what a restarted client resumes)."""
        return self._current

    @property
    def active(self) -> str:
        """The session requests sent from here carry: :meth:`using` wins over :attr:`current`."""
        return self._override.get() or self._current

    def switch(self, session_id: str, *, remember: bool = True) -> None:
        self._current = session_id
        if remember:
            self.jar.set_current(self.scope, session_id, self.slot)

    @contextmanager
    def using(self, session_id: str) -> Iterator[str]:
        token = self._override.set(session_id)
        try:
            yield session_id
        finally:
            self._override.reset(token)

    # -- requests ------------------------------------------------------------------------------

    def stamp(
        self, request_id: Hashable, method: str, params: Mapping[str, Any] | None
    ) -> tuple[dict[str, Any], str]:
        """``params`` with our ``_meta`` keys added; returns them and the id they name.

        Keys the caller set explicitly (``meta=`` on a call) are left alone, so a caller can
        always address another session, or send a token of their own, for one request.
        """
        out = dict(params or {})
        meta = dict(out.get("_meta") or {})
        session_id = meta.get(META_SESSION_ID)
        if not isinstance(session_id, str):
            session_id = self.active
            meta[META_SESSION_ID] = session_id
        if META_STATE not in meta and method not in _TOKENLESS_METHODS:
            token = self.jar.token(self.scope, session_id)
            if token is not None:
                meta[META_STATE] = token  # echoed exactly as the server sent it
        out["_meta"] = meta
        self._pending[request_id] = Stamp(
            session_id, self.jar.generation(self.scope, session_id), method
        )
        while len(self._pending) > _MAX_PENDING:
            self._pending.popitem(last=False)
        return out, session_id

    def discard(self, request_id: Hashable) -> Stamp | None:
        return self._pending.pop(request_id, None)

    def on_result(self, request_id: Hashable, result: Mapping[str, Any]) -> Stamp | None:
        """Keep the new token and expiry a result carries, for the session its request named."""
        stamp = self._pending.pop(request_id, None)
        if stamp is None or stamp.method in _SELF_HANDLED:
            return stamp
        meta = result.get("_meta")
        if not isinstance(meta, Mapping):
            return stamp
        token = meta.get(META_STATE)
        expires_at = meta.get(META_EXPIRES_AT)
        if isinstance(token, str) or isinstance(expires_at, str):
            self.jar.offer(
                self.scope,
                stamp.session_id,
                token=token if isinstance(token, str) else None,
                expires_at=expires_at if isinstance(expires_at, str) else None,
                generation=stamp.generation,
            )
        return stamp

    def on_error(self, request_id: Hashable) -> Stamp | None:
        """An error changes nothing in the jar: the caller decides (typed exceptions)."""
        return self._pending.pop(request_id, None)
