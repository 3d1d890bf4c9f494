"""The one store contract every backend implements (DESIGN §6).

Principal isolation is part of the contract, not of its callers: records are keyed by
``(kind, id, principal)``, and every operation takes the caller's principal key. Two principals
may hold the same id independently, each seeing only their own record; a record of another
principal is therefore reported exactly like a missing one (``None`` / :class:`NotFound`), and
never makes ``create`` fail, so nothing a store answers tells one principal whether an id
exists for another (DESIGN §2). Expired records are misses too, whether or not a sweep has
removed them yet.
"""

from __future__ import annotations

from typing import Protocol, Self, runtime_checkable

from ..core.records import JSONObject, Record


class StoreError(Exception):
    """A store cannot do its job: bad URL, unreachable server, unusable file.

    The message names what is wrong and where (the URL with any password hidden).
    """


class StoreUnavailable(StoreError):
    """The backend did not answer in time or at all (connection refused, reset, timed out).

    Retryable: nothing is known to have been written. The server answers it with -31006
    (:class:`mcp_sessions.core.errors.StoreUnavailable`).
    """


class AlreadyExists(StoreError):
    """``create`` found a live record with the same ``(kind, id, principal)``."""


class NotFound(StoreError):
    """The record is missing, expired, or another principal's (one answer for all three)."""


class VersionConflict(StoreError):
    """``compare_and_set`` saw a version other than the expected one."""

    def __init__(self, message: str, *, current: Record | None = None) -> None:
        super().__init__(message)
        #: The record as it is now, so a retry need not read it again.
        self.current = current


class StateOverMaxBytes(StoreError):
    """``compare_and_set`` was given ``max_bytes`` and the state's JSON is larger.

    A store answer about its own encoding, with the sizes; not the wire error
    :class:`mcp_sessions.core.errors.StateTooLarge` (a sealed token over its cap), though the
    server answers this one with that (issue #17: two concepts, two names).
    """

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        #: The state's size in bytes of UTF-8 JSON, and the limit it broke.
        self.size = size
        self.limit = limit


#: The name :class:`StateOverMaxBytes` had before issue #17; kept so imports keep working.
StateTooLarge = StateOverMaxBytes


#: By default ``touch`` writes ``last_seen`` only once it moved by more than this fraction of
#: the idle TTL, so reads stay reads (issue #3).
DEFAULT_TOUCH_FRACTION = 0.1

#: Seconds between the sweeps of expired records a backend runs by itself (memory, SQLite).
DEFAULT_SWEEP_INTERVAL = 60.0


@runtime_checkable
class Store(Protocol):
    """Async storage of :class:`~mcp_sessions.core.records.Record` (sessions and handles).

    ``now`` is Unix seconds; every method defaults it to ``time.time()``.
    """

    #: The URL it was opened with, password hidden (for logs and errors).
    url: str

    async def create(self, record: Record) -> None:
        """Store a new record under ``(kind, id, principal)``.

        Raises :class:`AlreadyExists` only if a live record with the same kind, id *and*
        principal exists; another principal's record with that id is irrelevant. An expired
        record under the same key is replaced.
        """
        ...

    async def get(
        self, kind: str, id: str, principal: str, *, now: float | None = None
    ) -> Record | None:
        """The live record, or ``None`` if missing, expired or another principal's."""
        ...

    async def compare_and_set(
        self,
        kind: str,
        id: str,
        principal: str,
        expected_version: int,
        state: JSONObject,
        *,
        now: float | None = None,
        max_bytes: int | None = None,
    ) -> Record:
        """Replace the state if the stored version is ``expected_version``, atomically.

        ``max_bytes`` refuses (:class:`StateOverMaxBytes`, nothing written) a state whose JSON is
        longer, measured on the encoding the store makes anyway.

        Returns the new record (version + 1) whose ``state`` is the caller's ``state`` object
        (the store keeps its own copy). ``last_seen`` moves to now as :meth:`touch` moves it:
        surely once it lags by more than ``touch_fraction`` of the idle TTL; before that a
        backend may leave it (SQLite and memory do, which spares them an index write; Redis
        rewrites the record anyway and moves it). Raises :class:`NotFound` or
        :class:`VersionConflict` (carrying the current record).
        """
        ...

    async def touch(
        self,
        record: Record,
        *,
        now: float | None = None,
        force: bool = False,
        idle_ttl: float | None = None,
    ) -> Record:
        """Extend the idle expiry of ``record``; cheap.

        Writes only when ``now - record.last_seen`` exceeds the touch fraction of the idle TTL,
        or when ``force`` (handle renewal) or a new ``idle_ttl`` is given. Never moves expiry
        past ``max_expires_at``. Returns the record as it now stands. Raises :class:`NotFound`
        if it is gone, expired or another principal's.
        """
        ...

    async def delete(self, kind: str, id: str, principal: str) -> bool:
        """Remove a record; ``True`` if a live record of this principal was removed."""
        ...

    async def scan(
        self,
        *,
        principal: str | None = None,
        kind: str | None = None,
        id: str | None = None,
        now: float | None = None,
    ) -> list[Record]:
        """The live records of every principal (or one), of every kind (or one), with any id
        (or one), oldest first: what an operator sees (``mcp-sessions sessions``, issue #13).

        Reads only: no sweep, no touch, no clean-up of indexes. Its cost grows with the whole
        store, so request handling never calls it (it has :meth:`list`). A stored state that
        is not a JSON object comes back as :func:`~mcp_sessions.stores.opaque_state` says,
        so one unreadable record does not hide the others.
        """
        ...

    async def list(
        self, principal: str, *, kind: str | None = None, now: float | None = None
    ) -> list[Record]:
        """The live records of ``principal`` (of one kind, or all), oldest first."""
        ...

    async def count(
        self, principal: str, *, kind: str | None = None, now: float | None = None
    ) -> int:
        """How many live records ``principal`` has (of one kind, or all): what ``len(list(…))``
        returns, without building the records. Quotas count with it (issue #12)."""
        ...

    async def sweep(self, *, now: float | None = None, limit: int = 1000) -> int:
        """Remove up to ``limit`` expired records; returns how many. Cost grows with that
        number, not with how many records are stored."""
        ...

    async def close(self) -> None:
        """Release connections and files. Idempotent."""
        ...

    async def __aenter__(self) -> Self:
        """Connect or open now, so an unusable store fails at start-up with :class:`StoreError`
        rather than at the first request (opening a store by URL does no I/O)."""
        ...

    async def __aexit__(self, *exc_info: object) -> None:
        """:meth:`close`."""
        ...


async def touch_live(store: Store, record: Record) -> Record | None:
    """``record`` touched (its idle TTL starts again), or ``None`` if it went away since it was
    read (expired, deleted): the get-then-touch step every reader of a live record takes."""
    try:
        return await store.touch(record)
    except NotFound:
        return None
