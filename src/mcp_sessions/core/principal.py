"""Who is asking: the identity every session, handle and state token is bound to (DESIGN §2)."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated identity, or :data:`ANONYMOUS`.

    The triple is the one python-sdk binds legacy sessions to (PR #2718). A verifier that
    supplies no subject degrades the binding to the OAuth client, which every user of that
    client shares: that is the verifier's choice, recorded here as is.
    """

    issuer: str | None = None
    subject: str | None = None
    client_id: str | None = None

    @property
    def is_anonymous(self) -> bool:
        return self.issuer is None and self.subject is None and self.client_id is None

    @property
    def key(self) -> str:
        """A stable, unambiguous string form, used as the binding key in stores and tokens."""
        if self.is_anonymous:
            return "anonymous"
        # JSON keeps the three parts unambiguous whatever characters they contain.
        return json.dumps([self.issuer, self.subject, self.client_id], separators=(",", ":"))

    @classmethod
    def from_key(cls, key: str) -> Principal:
        """Inverse of :attr:`key`; raises ``ValueError`` on anything else."""
        if key == "anonymous":
            return ANONYMOUS
        try:
            parts = json.loads(key)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a principal key: {key!r}") from exc
        if (
            not isinstance(parts, list)
            or len(parts) != 3
            or not all(p is None or isinstance(p, str) for p in parts)
        ):
            raise ValueError(f"not a principal key: {key!r}")
        return cls(issuer=parts[0], subject=parts[1], client_id=parts[2])

    def __str__(self) -> str:
        if self.is_anonymous:
            return "anonymous"
        return (
            f"{self.subject or '-'} (issuer {self.issuer or '-'}, client {self.client_id or '-'})"
        )


ANONYMOUS = Principal()
