"""The legacy ``Mcp-Session-Id`` of a 2025-11-25 Streamable HTTP connection (DESIGN §5).

Status codes never reach JSON-RPC intact, so this watches the id through event hooks on the
httpx2 client: a 404 to a request that carried ``Mcp-Session-Id`` ends that legacy session
(SEP-1372 as in spec-digest §1.11: stop using the id; start a new session only if asked).
The transport (:mod:`.transport`) reads what is watched here to answer or renew.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Hashable

import httpx2

from ..core.names import HEADER_LEGACY_SESSION_ID

logger = logging.getLogger(__package__)

_LEGACY_HEADER = HEADER_LEGACY_SESSION_ID.lower()


class LegacyWatch:
    """Watches ``Mcp-Session-Id`` through httpx2 event hooks (status codes never reach
    JSON-RPC intact): which id is live, which are dead, which requests a 404 answered."""

    def __init__(self) -> None:
        self.current: str | None = None
        self.dead: set[str] = set()
        #: JSON-RPC request id → the dead legacy id its 404 named.
        self.failed: dict[Hashable, str] = {}

    @property
    def lost(self) -> bool:
        return self.current is not None and self.current in self.dead

    async def on_request(self, request: httpx2.Request) -> None:
        sent = request.headers.get(_LEGACY_HEADER)
        if sent is None or sent not in self.dead:
            return
        if request.method == "DELETE":
            # The SDK's close sends DELETE; the session is gone already, so send nothing
            # (the SDK logs this exception as a failed termination and carries on).
            raise httpx2.RequestError(
                f"mcp-sessions: legacy session {sent} already ended (HTTP 404); no DELETE sent",
                request=request,
            )
        # SEP-1372: the client stops using an id the server answered 404 for.
        del request.headers[_LEGACY_HEADER]

    async def on_response(self, response: httpx2.Response) -> None:
        sent = response.request.headers.get(_LEGACY_HEADER)
        if response.status_code == 404 and sent is not None:
            self.dead.add(sent)
            request_id = _jsonrpc_id(response.request)
            if request_id is not None:
                self.failed[request_id] = sent
            logger.info("legacy session %s ended by the server (HTTP 404)", sent)
        elif response.status_code < 400:
            minted = response.headers.get(_LEGACY_HEADER)
            if minted and minted not in self.dead:
                self.current = minted

    def install(self, client: httpx2.AsyncClient) -> Callable[[], None]:
        hooks = client.event_hooks
        # First among the request hooks, so that the caller's own hooks see what is sent.
        hooks["request"].insert(0, self.on_request)
        hooks["response"].append(self.on_response)
        client.event_hooks = hooks

        def remove() -> None:
            current = client.event_hooks
            for name, hook in (("request", self.on_request), ("response", self.on_response)):
                with contextlib.suppress(ValueError):
                    current[name].remove(hook)
            client.event_hooks = current

        return remove


def _jsonrpc_id(request: httpx2.Request) -> Hashable | None:
    try:
        body = json.loads(request.content)
    except (httpx2.RequestNotRead, ValueError, UnicodeDecodeError):
        return None
    value = body.get("id") if isinstance(body, dict) else None
    return value if isinstance(value, int | str) else None
