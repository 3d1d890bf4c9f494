"""Rules every backend shares, written once so that the three cannot drift apart (DESIGN §6).

Nothing here does I/O: the JSON codec, the touch decision, the one "not found" answer, and
the parsing of URL options.
"""

from __future__ import annotations

import inspect
import json
import math
import time
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ..core.records import JSONObject, Record
from .base import NotFound, StateOverMaxBytes, StoreError


def clock(now: float | None) -> float:
    """``now`` if the caller supplied one (tests, replays), else the wall clock."""
    return time.time() if now is None else float(now)


# Built once: json.dumps with options builds a new encoder on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_json(value: JSONObject, what: str, max_bytes: int | None = None) -> str:
    """Compact JSON for ``state`` / ``attributes``.

    Every backend stores the encoded text, so a value that would not survive Redis or SQLite is
    refused by the memory store too, and callers never share a mutable dict with the store.
    ``max_bytes`` refuses a longer encoding (bytes of UTF-8) with :class:`StateOverMaxBytes`.
    """
    if not isinstance(value, dict):
        raise TypeError(f"{what} must be a JSON object (a dict), got {type(value).__name__}")
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serialisable: {exc}") from None
    if max_bytes is not None and len(text) > max_bytes // 4:
        # Cheap unless it might be over: a character is at most 4 bytes of UTF-8.
        size = len(text) if text.isascii() else len(text.encode())
        if size > max_bytes:
            raise StateOverMaxBytes(
                f"{what} is {size} bytes of JSON, over the limit of {max_bytes}",
                size=size,
                limit=max_bytes,
            )
    return text


def decode_json(text: str) -> JSONObject:
    if text == "{}":  # most attributes, every new state: skip the parser
        return {}
    value = json.loads(text)
    if not isinstance(value, dict):  # only ever written by encode_json
        raise StoreError(f"stored JSON is not an object: {text[:60]!r}")
    return value


#: The key of the stand-in :func:`opaque_state` returns; no JSON state of a server has it.
OPAQUE_KEY = "$opaque"


def opaque_state(text: str) -> JSONObject:
    """The stand-in ``scan`` returns for a stored state that does not decode to a JSON object
    (written by something else, or damaged): its size and nothing of its content."""
    return {OPAQUE_KEY: True, "bytes": len(text.encode(errors="replace"))}


def decode_lenient(text: str) -> JSONObject:
    """``decode_json``, or :func:`opaque_state` for text that is not a JSON object."""
    try:
        return decode_json(text)
    except (ValueError, StoreError):
        return opaque_state(text)


def not_found(kind: str, id: str) -> NotFound:
    """The one answer for missing, expired and another principal's record (DESIGN §2).

    It names the key the caller asked for and nothing it could not already know.
    """
    return NotFound(f"no live {kind} record with id {id!r}")


def scan_matches(record: Record, principal: str | None, kind: str | None, id: str | None) -> bool:
    """Whether ``record`` answers the filters of :meth:`~.base.Store.scan` (``None``: any)."""
    return (
        (principal is None or record.principal == principal)
        and (kind is None or record.kind == kind)
        and (id is None or record.id == id)
    )


def scan_order(record: Record) -> tuple[float, str, str, str]:
    """The order of :meth:`~.base.Store.scan`: oldest first, then kind, id and principal (the
    SQLite store's ``ORDER BY``)."""
    return (record.created_at, record.kind, record.id, record.principal)


def touch_needs_write(
    record: Record,
    now: float,
    *,
    force: bool,
    idle_ttl: float | None,
    fraction: float,
) -> bool:
    """Whether ``touch`` must write: reads stay reads until ``last_seen`` is stale enough.

    Writing ``last_seen`` on every request would turn every read into a write (and, on SQLite,
    into an fsync). Skipping writes while ``now - last_seen`` is within ``fraction`` of the
    idle TTL costs at most that fraction of the TTL in expiry precision (issue #3).
    """
    if force or idle_ttl is not None:
        return True
    return now - record.last_seen > fraction * record.idle_ttl


def touch_without_write(
    record: Record,
    now: float | None,
    *,
    force: bool,
    idle_ttl: float | None,
    fraction: float,
) -> tuple[float, Record | None]:
    """The part of ``touch`` every backend shares: check the arguments, take the clock, and
    answer without a write when none is due.

    Returns ``(now, record)`` when the record the caller has just read can be returned as it is
    (DESIGN §6: reads stay reads), ``(now, None)`` when the backend must write. Raises
    :class:`NotFound` for a record that expired meanwhile.
    """
    check_idle_ttl(idle_ttl)
    t = clock(now)
    if touch_needs_write(record, t, force=force, idle_ttl=idle_ttl, fraction=fraction):
        return t, None
    if record.is_expired(t):
        raise not_found(record.kind, record.id)
    return t, record


def check_idle_ttl(idle_ttl: float | None) -> None:
    if idle_ttl is not None and not (idle_ttl > 0 and math.isfinite(idle_ttl)):
        raise ValueError(f"idle_ttl must be a positive number of seconds, got {idle_ttl!r}")


def hide_password(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit for logs and error messages."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    user = parts.username or ""
    if not password and user and parts.scheme.lower().endswith("+sentinel"):
        # redis+sentinel://secret@host: a password without a user (stores/_redis_topology.py).
        user, password = "", user
    if not password:
        return url
    # The hosts as written: a cluster or Sentinel URL lists several (host:port,host:port).
    hosts = parts.netloc.rpartition("@")[2]
    netloc = f"{user}:***@{hosts}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _convert(name: str, raw: Any, default: Any, where: str) -> Any:
    """Turn a URL query string value into the type of the option's default."""
    if not isinstance(raw, str):
        return raw
    try:
        if isinstance(default, bool):
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        kind = type(default).__name__
        raise StoreError(f"{where}: option {name}={raw!r} is not a valid {kind}") from None
    return raw


def merge_options(
    url: str,
    query: str,
    options: Mapping[str, Any],
    defaults: Mapping[str, Any],
) -> dict[str, Any]:
    """Options from the URL query string and from keywords (keywords win), checked by name.

    ``defaults`` lists every option the backend knows; an unknown name is an error rather than
    silently ignored, because a misspelt timeout should not become the default one.
    """
    where = f"store URL {hide_password(url)!r}"
    given: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    given.update(options)
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        known = ", ".join(sorted(defaults)) or "none"
        raise StoreError(f"{where}: unknown option(s) {', '.join(unknown)}; known options: {known}")
    merged = dict(defaults)
    for name, raw in given.items():
        merged[name] = _convert(name, raw, defaults[name], where)
    fraction = merged.get("touch_fraction")
    if fraction is not None and not 0 <= fraction < 1:
        raise StoreError(f"{where}: touch_fraction must be in [0, 1), got {fraction!r}")
    return merged


def keyword_defaults(cls: type, *, skip: Collection[str] = ()) -> dict[str, Any]:
    """The keyword-only parameters of ``cls``'s constructor with their defaults, but those
    named in ``skip``: the options a store URL may carry, so each default is written once, in
    the constructor (issue #17)."""
    return {
        name: parameter.default
        for name, parameter in inspect.signature(cls).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name not in skip
    }
