"""What the event logs share: event ids, replays, bounds (see :mod:`.events`)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .base import StoreError

#: Defaults of the bounds (docs/stores.md, "Event logs").
DEFAULT_MAX_EVENTS = 1000
DEFAULT_MAX_EVENT_BYTES = 1 << 20
DEFAULT_EVENT_TTL = 900.0

_ID = re.compile(r"^([A-Za-z0-9_-]{1,128})\.([0-9a-f]{16})\.([0-9]{1,20}(?:-[0-9]{1,20})?)$")


class MalformedEventId(StoreError):
    """A ``Last-Event-ID`` that no event log ever issued."""


@dataclass(frozen=True)
class EventId:
    session: str
    token: str
    position: str

    def __str__(self) -> str:
        return f"{self.session}.{self.token}.{self.position}"

    @classmethod
    def parse(cls, text: str) -> EventId:
        match = _ID.match(text)
        if match is None:
            raise MalformedEventId(f"{text[:80]!r} is not an event id of this server")
        return cls(*match.groups())


def stream_token(stream: str) -> str:
    """The part of an event id that names the SDK's stream within its session."""
    return hashlib.sha256(stream.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Replay:
    """What follows an event in its stream: the SDK's stream name and ``(id, data)`` pairs;
    ``data`` is a JSON-RPC message's JSON text, or ``None`` for a priming event."""

    stream: str
    events: list[tuple[str, str | None]]
