"""The stored shape of sessions and handles (DESIGN §2, §4, §6).

A handle is stored exactly like a session, under its own kind: one record type, one store
contract and one expiry mechanism serve both, and a handle's state is edited with the same
compare-and-set as a session's.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

JSONObject = dict[str, Any]


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists, scalars).

    Several times faster than ``copy.deepcopy``, which keeps a memo for cycles and shared
    references that JSON cannot have; every state edit pays for one copy.
    """
    if isinstance(value, dict):
        return {key: copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_json(item) for item in value]
    return value


class Record(NamedTuple):
    """One session (``kind == "session"``) or one handle (``kind`` is the handle kind).

    ``(kind, id, principal)`` is the key: two principals may hold the same id, each their own
    record (DESIGN §2). Times are Unix seconds (floats). The record expires at the
    earlier of ``last_seen + idle_ttl`` and ``max_expires_at`` (the absolute cap).
    ``state`` is the server-side JSON document, versioned by ``version`` for compare-and-set;
    ``attributes`` are fixed at creation (e.g. the negotiated protocol version of a legacy
    session, the parent of a fork).

    Immutable. A named tuple rather than a frozen dataclass: every request builds a few, and
    a frozen dataclass costs several times more to build and to ``replace`` (issue #4).
    Derive changed records with ``record._replace(...)``.
    """

    kind: str
    id: str
    principal: str
    origin: str
    created_at: float
    last_seen: float
    idle_ttl: float
    max_expires_at: float
    version: int = 1
    state: JSONObject = {}  # noqa: RUF012 - never mutated: Record.new and the stores pass their own
    attributes: JSONObject = {}  # noqa: RUF012

    @property
    def expires_at(self) -> float:
        return min(self.last_seen + self.idle_ttl, self.max_expires_at)

    def is_expired(self, now: float) -> bool:
        return now >= self.expires_at

    @classmethod
    def new(
        cls,
        *,
        kind: str,
        id: str,
        principal: str,
        origin: str,
        now: float,
        idle_ttl: float,
        max_lifetime: float | None = None,
        state: JSONObject | None = None,
        attributes: JSONObject | None = None,
    ) -> Record:
        """A fresh record at version 1; ``max_lifetime=None`` means no absolute cap."""
        if not (idle_ttl > 0 and math.isfinite(idle_ttl)):
            raise ValueError(f"idle_ttl must be a positive number of seconds, got {idle_ttl!r}")
        if max_lifetime is not None and not max_lifetime > 0:
            raise ValueError(f"max_lifetime must be positive, got {max_lifetime!r}")
        cap = math.inf if max_lifetime is None else now + max_lifetime
        return cls(
            kind=kind,
            id=id,
            principal=principal,
            origin=origin,
            created_at=now,
            last_seen=now,
            idle_ttl=float(idle_ttl),
            max_expires_at=cap,
            version=1,
            state=dict(state or {}),
            attributes=dict(attributes or {}),
        )

    def with_documents(self, state: JSONObject, attributes: JSONObject) -> Record:
        """This record with another ``state`` and ``attributes`` (the stores' read path)."""
        record: Record = _new_record(Record, (*self[:9], state, attributes))
        return record

    def with_state(self, state: JSONObject, now: float) -> Record:
        """The record after a successful compare-and-set: next version, seen now."""
        return self._replace(
            state=state, version=self.version + 1, last_seen=max(now, self.last_seen)
        )


# tuple.__new__ skips the keyword handling of the generated __new__ (every read builds one).
_new_record: Any = tuple.__new__
