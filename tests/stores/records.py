"""The records and principals the store contract tests build (DESIGN §6, issue #3):
two principals, one session id, and `session()`, a fresh record with the contract's
defaults (a 60 s idle TTL, no absolute cap) that any field can override.
"""

from __future__ import annotations

from typing import Any

from mcp_sessions.core.records import Record

ALICE = "principal:alice"
BOB = "principal:bob"
SID = "s-0123456789abcdef"


def session(
    now: float,
    id: str = SID,
    *,
    principal: str = ALICE,
    kind: str = "session",
    idle_ttl: float = 60.0,
    max_lifetime: float | None = None,
    state: dict[str, Any] | None = None,
    attributes: dict[str, Any] | None = None,
) -> Record:
    return Record.new(
        kind=kind,
        id=id,
        principal=principal,
        origin="client",
        now=now,
        idle_ttl=idle_ttl,
        max_lifetime=max_lifetime,
        state=state,
        attributes=attributes,
    )
