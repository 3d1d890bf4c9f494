"""Times on the wire: RFC 3339 UTC, to the second (DESIGN §3 ``expiresAt``).

Every result of a session carries its expiry (``dev.mcpsessions/expiresAt``), and
``session/create`` and ``mcp-sessions token inspect`` print one too: all spell it here.
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime


def rfc3339(timestamp: float) -> str | None:
    """``timestamp`` as RFC 3339 UTC to the second; ``None`` for no expiry (infinity)."""
    if not math.isfinite(timestamp):
        return None
    return _rfc3339_second(int(timestamp))


@functools.lru_cache(maxsize=256)
def _rfc3339_second(second: int) -> str:
    # Every result carries its session's expiry, and most fall within the same few seconds:
    # formatting a datetime costs more than the rest of the result's _meta.
    return datetime.fromtimestamp(second, UTC).isoformat().replace("+00:00", "Z")
