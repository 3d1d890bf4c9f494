"""How a client picks its session when it opens, and the small values its helpers return.

No SDK import. Policies (DESIGN §7):

* :class:`AutoSession` (``"auto"``, the default) — resume the session the jar remembers for
  this server and principal, if it has not expired; otherwise a new client-generated id, or
  ``session/create`` when the server advertises the ``explicit`` lifecycle;
* :class:`NewSession` (``"new"``) — always a new client-generated id; it exists before the
  first request, so parallel first calls land in one session (implicit lifecycle);
* :class:`ResumeSession` — a given id;
* :class:`CreateSession` (``"create"``) — ask the server with ``session/create``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..core.ids import validate_session_id
from .jar import JarScope


@dataclass(frozen=True, slots=True)
class AutoSession:
    """Resume what the jar remembers, else start one as the server's lifecycle asks."""


@dataclass(frozen=True, slots=True)
class NewSession:
    """A new client-generated id (128 random bits), known before the first request."""


@dataclass(frozen=True, slots=True)
class ResumeSession:
    """Continue the session ``session_id`` (with its state token, if the jar holds one)."""

    session_id: str

    def __post_init__(self) -> None:
        validate_session_id(self.session_id, source="ResumeSession id")


@dataclass(frozen=True, slots=True)
class CreateSession:
    """Open the session with ``session/create``; ``ttl_seconds`` may shorten its idle TTL."""

    ttl_seconds: float | None = None


SessionPolicy = (
    AutoSession | NewSession | ResumeSession | CreateSession | Literal["auto", "new", "create"]
)


def normalize_policy(
    policy: SessionPolicy,
) -> AutoSession | NewSession | ResumeSession | CreateSession:
    if isinstance(policy, AutoSession | NewSession | ResumeSession | CreateSession):
        return policy
    if policy == "auto":
        return AutoSession()
    if policy == "new":
        return NewSession()
    if policy == "create":
        return CreateSession()
    raise ValueError(
        f"session_policy must be 'auto', 'new', 'create' or a policy object such as "
        f"ResumeSession('<id>'), not {policy!r}"
    )


@dataclass(frozen=True, slots=True)
class SessionRef:
    """A session this client knows: pass it to ``client.sessions.use()`` or ``switch()``."""

    id: str
    expires_at: str | None = None

    def __str__(self) -> str:
        return self.id


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    """A point to roll a sealed-state session back to: its token at that moment.

    Tokens are immutable and stay valid until they expire (DESIGN §4), so replaying an older
    one is a rollback. ``token`` is ``None`` when the session had no state yet.
    """

    scope: JarScope
    session_id: str
    token: str | None
    seq: int | None
