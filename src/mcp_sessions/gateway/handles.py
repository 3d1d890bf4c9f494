"""Handle pins: a handle stays on the upstream that minted it (issue #11, DESIGN §4).

A handle (``vm-…``, or the ``session-…`` of the ``session_start`` fallback) names state that
lives where it was made. With per-replica stores only that replica can serve it, and nothing
in a later request says where that is: the handle is an ordinary tool argument. So the server
lists what a call minted in the result's ``_meta`` (:data:`META_MINTED_HANDLES`, a list of
``{"handle", "kind"}`` objects, docs/wire.md), the gateway reads that key as the response
passes — JSON bodies whole, event streams event by event, without holding anything back —
and pins each handle to the upstream that answered, in the same pin store as sessions
(:mod:`.pins`: bound to the caller's principal, expiring when idle, shared through Redis).

A request is then routed to a pinned handle's upstream when it carries the handle as a
``tools/call`` argument value or in an ``Mcp-Param-*`` header (SEP-2243's mirror of an
argument). That sits where DESIGN §2 puts handles: below ``_meta`` ids and their aliases,
above legacy ``Mcp-Session-Id``.

Only results pin: the key in a *request* is never read. A value shaped like a handle that no
result pinned finds no pin and is routed by the other rules. Everything scanned is bounded.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeGuard

from ..core.carriers import Carrier
from ..core.names import HEADER_PARAM_PREFIX, META_MINTED_HANDLES
from ..stores import StoreError

if TYPE_CHECKING:
    from prometheus_client import Counter

    from .pins import PinTable

logger = logging.getLogger("mcp_sessions.gateway")

#: The routing decision (and metric label) of a request routed by a handle pin.
HANDLE = Carrier.HANDLE.value
#: Pin ids of handles are namespaced, so that a handle never collides with a session id.
PIN_PREFIX = "handle:"
#: The longest response body, or SSE event, scanned for minted handles; larger ones pass
#: through unscanned (a result that mints a handle is small).
MAX_SCAN_BYTES = 1024 * 1024
#: Most handles pinned from one response.
MAX_HANDLES = 32
#: Most values of one request looked up in the pin store (each may cost a store read).
MAX_LOOKUPS = 8

_KEY = META_MINTED_HANDLES.encode()
_PARAM_PREFIX = HEADER_PARAM_PREFIX.lower().encode("latin-1")
# A handle as this library mints them (core.handles: ``<kind>-<128 bits hex>``; the fallback's
# ``session-<session id>``), loosely: kind, dash, 16-128 characters of the session-id alphabet.
_SHAPE = re.compile(r"[a-z][a-z0-9]{0,31}-[A-Za-z0-9-]{16,128}")


def pin_key(handle: str) -> str:
    return PIN_PREFIX + handle


def is_handle_pin(key: str) -> bool:
    return key.startswith(PIN_PREFIX)


def looks_like_handle(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and len(value) <= 161 and _SHAPE.fullmatch(value) is not None


# -- requests: which handles a request carries -----------------------------------------------


def request_handles(
    rpc: Mapping[str, Any], raw_headers: Iterable[tuple[bytes, bytes]]
) -> list[str]:
    """The handle-shaped values of a request, in order: ``tools/call`` argument values, then
    ``Mcp-Param-*`` header values. At most :data:`MAX_LOOKUPS`, without repeats."""
    found: list[str] = []
    if rpc.get("method") == "tools/call":
        params = rpc.get("params")
        arguments = params.get("arguments") if isinstance(params, dict) else None
        if isinstance(arguments, dict):
            found.extend(v for v in arguments.values() if looks_like_handle(v))
    for name, raw in raw_headers:
        if name.lower().startswith(_PARAM_PREFIX):
            value = raw.decode("latin-1").strip()
            if looks_like_handle(value):
                found.append(value)
    return list(dict.fromkeys(found))[:MAX_LOOKUPS]


# -- responses: which handles a result minted ------------------------------------------------


def minted_in(message: Any) -> list[str]:
    """The handles a JSON-RPC response (or batch) lists under :data:`META_MINTED_HANDLES` in
    its result ``_meta``; malformed entries are skipped."""
    found: list[str] = []
    for item in message if isinstance(message, list) else [message]:
        result = item.get("result") if isinstance(item, dict) else None
        meta = result.get("_meta") if isinstance(result, dict) else None
        entries = meta.get(META_MINTED_HANDLES) if isinstance(meta, dict) else None
        if not isinstance(entries, list):
            continue
        for entry in entries:
            handle = entry.get("handle") if isinstance(entry, dict) else None
            if looks_like_handle(handle):
                found.append(handle)
    return list(dict.fromkeys(found))[:MAX_HANDLES]


def minted_in_json(body: bytes) -> list[str]:
    """:func:`minted_in` of a JSON body (parsed only if the key occurs in it)."""
    if _KEY not in body or len(body) > MAX_SCAN_BYTES:
        return []
    try:
        return minted_in(json.loads(body))
    except (ValueError, UnicodeDecodeError):
        return []


def minted_in_body(body: bytes, event_stream: bool) -> list[str]:
    """The handles a whole response body lists as minted (cheap when it lists none)."""
    if _KEY not in body:
        return []
    if event_stream:
        return ResponseScanner(event_stream=True).feed(body)
    return minted_in_json(body)


class ResponseScanner:
    """Finds minted handles in a response body fed chunk by chunk, as it is forwarded.

    For an event stream, :meth:`feed` returns the handles of every ``message`` event a chunk
    completes, so the gateway can pin them before that chunk reaches the client. For any
    other body, the handles come from :meth:`finish`. Memory is bounded by
    :data:`MAX_SCAN_BYTES` (an event or body over it is skipped, not held).
    """

    def __init__(self, event_stream: bool) -> None:
        self.event_stream = event_stream
        self._pending = bytearray()
        self._skipping = False

    def feed(self, chunk: bytes) -> list[str]:
        if not self.event_stream:
            if not self._skipping:
                self._pending += chunk
                if len(self._pending) > MAX_SCAN_BYTES:
                    self._pending.clear()
                    self._skipping = True
            return []
        pending = self._pending
        start = len(pending)
        pending += chunk
        # An event ends at a blank line; search from just before the new bytes.
        end = _last_boundary(pending, max(0, start - 3))
        found: list[str] = []
        if end >= 0:
            if self._skipping:
                # The oversized event ended within this chunk: resume after it.
                self._skipping = False
                first = _first_boundary(pending, max(0, start - 3))
                complete = bytes(pending[first:end])
            else:
                complete = bytes(pending[:end])
            del pending[:end]
            if _KEY in complete:
                found = _minted_in_events(complete)
        if len(pending) > MAX_SCAN_BYTES:
            self._skipping = True
        if self._skipping:
            del pending[:-3]  # keep a possible half of the next boundary
        return found

    def finish(self) -> list[str]:
        if self.event_stream or self._skipping:
            return []
        return minted_in_json(bytes(self._pending))


class MintedPins:
    """Pins the handles one upstream response mints, as the response passes through."""

    def __init__(
        self, pins: PinTable, minted: Counter, upstream: str, principal: str, event_stream: bool
    ) -> None:
        self._pins = pins
        self._minted = minted
        self._upstream = upstream
        self._principal = principal
        self._scanner = ResponseScanner(event_stream)

    async def feed(self, chunk: bytes) -> None:
        """Scan ``chunk``; pins what it completes (call before forwarding it)."""
        found = self._scanner.feed(chunk)
        if found:
            await self.pin(found)

    async def finish(self) -> None:
        """The body ended (call before ending the response)."""
        found = self._scanner.finish()
        if found:
            await self.pin(found)

    async def pin(self, handles: Iterable[str]) -> None:
        for handle in handles:
            try:
                await self._pins.place(pin_key(handle), self._principal, self._upstream, HANDLE)
            except StoreError as error:
                # The response still goes through; the handle is then routed by the other
                # rules, as without a gateway-side pin.
                logger.warning("could not pin handle %s to %s: %s", handle, self._upstream, error)
                return
            self._minted.inc()


_BOUNDARIES = (b"\n\n", b"\r\n\r\n", b"\r\r")


def _last_boundary(data: bytearray, start: int) -> int:
    """The offset just past the last blank line at or after ``start``, or -1."""
    best = -1
    for sep in _BOUNDARIES:
        at = data.rfind(sep, start)
        if at >= 0:
            best = max(best, at + len(sep))
    return best


def _first_boundary(data: bytearray, start: int) -> int:
    ends = [at + len(sep) for sep in _BOUNDARIES if (at := data.find(sep, start)) >= 0]
    return min(ends) if ends else len(data)


def _minted_in_events(block: bytes) -> list[str]:
    """Handles minted in the complete SSE events of ``block`` (``message`` events only)."""
    found: list[str] = []
    text = block.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    for event in text.split("\n\n"):
        if len(event) > MAX_SCAN_BYTES:
            continue  # completed by the chunk that crossed the bound: still too large
        name = "message"
        data: list[str] = []
        for line in event.split("\n"):
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if name == "message" and META_MINTED_HANDLES in "".join(data):
            try:
                found.extend(minted_in(json.loads("\n".join(data))))
            except ValueError:
                continue
    return list(dict.fromkeys(found))[:MAX_HANDLES]
