"""The one object tools see, whichever carrier brought the session (DESIGN §2)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from ..core.carriers import Carrier
from ..core.errors import SessionError
from ..core.principal import Principal
from ..core.records import JSONObject, Record

if TYPE_CHECKING:
    from .engine import RequestScope

T = TypeVar("T")

Edit = Callable[[JSONObject], "T | Awaitable[T]"]


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
            raise self._scope.engine.translate(error) from None
        return result

    async def set(self, key: str, value: Any) -> None:
        """Set one key (an :meth:`update`)."""

        def put(state: JSONObject) -> None:
            state[key] = value

        await self.update(put)

    async def clear(self) -> None:
        """Empty the state (an :meth:`update`)."""
        await self.update(lambda state: state.clear())

    def __repr__(self) -> str:
        return f"<Session {self.id} via {self.carrier.value} v{self.version}>"
