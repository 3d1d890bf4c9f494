"""The sessions this process created, followed until they end (issue #13).

A session's duration and its request count are known only to whoever saw it begin and end;
the store keeps neither a request count nor a record of expiry (Redis drops keys silently).
So each process follows the sessions *it created*: when one is destroyed here, or its idle
deadline as this process saw it passes, its duration is recorded and whether it was
**degenerate** — it saw exactly one request (a client opening a new session per call).

A request *counts* for a session when it names it by a carrier and is neither
``session/create`` nor ``session/destroy``: a legacy session's ``initialize`` does not name
it, so ``initialize`` + one ``tools/call`` is one request; an implicit ``_meta`` session's
first call is its first request.

Exact where every request of a session reaches the process that created it (one replica, or
the gateway pinning sessions to upstreams); a session whose later requests go to another
replica looks degenerate (or expired early) here. Bounded: at most ``limit`` sessions are
followed, the least recently used one is dropped (uncounted) beyond that.

Not thread-safe: everything runs on the server's event loop.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from ..core.records import Record

#: Sessions followed at most (about 270 bytes each besides the id strings, measured).
DEFAULT_LIMIT = 100_000
#: Expired sessions retired per call of :meth:`SessionTracker.expired`, so no request pays
#: for a long backlog at once.
SWEEP_BATCH = 32


@dataclass(slots=True)
class Tracked:
    """One followed session."""

    carrier: str
    origin: str
    created_at: float
    deadline: float
    idle_ttl: float
    max_expires_at: float
    requests: int = 0

    @property
    def degenerate(self) -> bool:
        return self.requests == 1


class SessionTracker:
    """Sessions created here, least recently seen first."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self._live: OrderedDict[tuple[str, str], Tracked] = OrderedDict()
        #: Sessions that ended while followed, and those of them that were degenerate.
        self.ended = 0
        self.degenerate = 0
        #: Sessions dropped unended because more than ``limit`` were followed.
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._live)

    def created(self, record: Record, carrier: str) -> Tracked | None:
        """Follow ``record``, just created; returns an entry it replaced (a session of that
        id which had expired unnoticed), to be reported as expired."""
        key = (record.principal, record.id)
        previous = self._live.pop(key, None)
        self._live[key] = Tracked(
            carrier,
            record.origin,
            record.created_at,
            record.expires_at,
            record.idle_ttl,
            record.max_expires_at,
        )
        if len(self._live) > self.limit:
            self._live.popitem(last=False)
            self.dropped += 1
        if previous is not None:
            self._count(previous)
        return previous

    def seen(self, principal: str, session_id: str, now: float) -> None:
        """A request named the session: one more request, and its idle deadline moves."""
        key = (principal, session_id)
        entry = self._live.get(key)
        if entry is None:
            return
        entry.requests += 1
        entry.deadline = min(now + entry.idle_ttl, entry.max_expires_at)
        self._live.move_to_end(key)

    def ended_now(self, principal: str, session_id: str) -> Tracked | None:
        """The session was destroyed: stop following it; its entry, if it was followed."""
        entry = self._live.pop((principal, session_id), None)
        if entry is not None:
            self._count(entry)
        return entry

    def expired(self, now: float) -> list[Tracked]:
        """Retire sessions whose deadline passed, from the least recently seen (at most
        :data:`SWEEP_BATCH`; the rest at later calls)."""
        live = self._live
        retired: list[Tracked] = []
        while live and len(retired) < SWEEP_BATCH:
            key, entry = next(iter(live.items()))
            if entry.deadline > now:
                break
            del live[key]
            self._count(entry)
            retired.append(entry)
        return retired

    def _count(self, entry: Tracked) -> None:
        self.ended += 1
        if entry.degenerate:
            self.degenerate += 1
