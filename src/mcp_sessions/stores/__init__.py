"""Session stores behind one contract (DESIGN §6), chosen by URL.

``open_store(url)`` picks the backend:

- ``memory://`` — one process, nothing persists (tests, single-process servers);
- ``sqlite:///relative/path`` or ``sqlite:////absolute/path`` — one machine, any number of
  processes; the default (see :func:`default_store_url`);
- ``redis://[user:password@]host[:port][/db]`` or ``rediss://…`` (TLS) — many machines;
  ``redis+cluster://host:port[,host:port…]`` (a Redis Cluster) and
  ``redis+sentinel://host:port[,host:port…]/service[/db]`` (a Sentinel-managed master), each
  with a ``rediss+…`` TLS form (see ``stores/_redis_topology.py``).

Options come as keywords or as the URL's query string (keywords win); unknown names are an
error. Opening does no I/O: the first operation, or ``async with store:``, connects and
reports an unusable store as :class:`StoreError`.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from ._common import hide_password, keyword_defaults, merge_options
from .base import (
    DEFAULT_TOUCH_FRACTION,
    AlreadyExists,
    NotFound,
    StateOverMaxBytes,
    StateTooLarge,
    Store,
    StoreError,
    StoreUnavailable,
    VersionConflict,
    touch_live,
)
from .memory import MemoryStore
from .sqlite import SQLiteStore

_EXPECTED = (
    "expected memory://, sqlite:///relative/path, sqlite:////absolute/path, "
    "redis://host:port/db, redis+cluster://host:port[,host:port…] or "
    "redis+sentinel://host:port[,host:port…]/service[/db] (rediss… for TLS)"
)

# Every option of each backend with its default; open_store refuses any other name. Memory
# and SQLite take theirs from their constructors' keyword-only parameters.
_MEMORY_OPTIONS = keyword_defaults(MemoryStore)

_SQLITE_OPTIONS = keyword_defaults(SQLiteStore, skip={"url"})

# RedisStore cannot be asked: its module needs the optional redis package, and a malformed
# URL is reported as such even without it. Its options are the constructor's keyword-only
# parameters after the connection's own (host … tls, tls_options), plus the TLS files;
# tests/stores/test_store_errors.py checks the two agree.
_REDIS_OPTIONS: dict[str, Any] = {
    "prefix": "mcps",
    "connect_timeout": 2.0,
    "timeout": 2.0,
    "op_timeout": 2.0,
    "retries": 1,
    "touch_fraction": DEFAULT_TOUCH_FRACTION,
    # the local copy of records (issue #15): entries and bytes; 0 turns it off
    "cache_entries": 10_000,
    "cache_bytes": 32 << 20,
    # TLS (rediss:// only), passed to redis-py as ssl_* keywords
    "ssl_ca_certs": None,
    "ssl_certfile": None,
    "ssl_keyfile": None,
    "ssl_cert_reqs": None,
}

#: Options of redis+sentinel:// only: the Sentinels' own credentials (issue #15).
_SENTINEL_OPTIONS: dict[str, Any] = {"sentinel_username": None, "sentinel_password": None}


def open_store(url: str, **options: Any) -> Store:
    """The store that ``url`` names, configured by ``options``; no I/O happens yet.

    Raises :class:`StoreError` naming the URL (password hidden) and what was expected when
    the URL or an option is malformed.
    """
    shown = hide_password(url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise StoreError(f"store URL {shown!r} has no scheme; {_EXPECTED}")
    scheme = scheme.lower()

    if scheme == "memory":
        path, _, query = rest.partition("?")
        if path not in ("", "/"):
            raise StoreError(f"store URL {shown!r}: memory:// takes no host or path")
        memory_options = merge_options(url, query, options, _MEMORY_OPTIONS)
        return MemoryStore(url, **memory_options)

    if scheme == "sqlite":
        # SQLAlchemy's convention: three slashes then the path, so an absolute path gives four.
        if not rest.startswith("/"):
            raise StoreError(
                f"store URL {shown!r}: an SQLite URL has no host; expected "
                "sqlite:///relative/path or sqlite:////absolute/path"
            )
        raw_path, _, query = rest[1:].partition("?")
        path = unquote(raw_path)
        if not path or path.endswith("/"):
            raise StoreError(
                f"store URL {shown!r}: no database file named; expected "
                "sqlite:///relative/path or sqlite:////absolute/path"
            )
        if path == ":memory:":
            raise StoreError(f"store URL {shown!r}: for a store in memory use memory://")
        sqlite_options = merge_options(url, query, options, _SQLITE_OPTIONS)
        return SQLiteStore(path, url=url, **sqlite_options)

    if scheme in ("redis", "rediss"):
        return _open_redis(url, shown, scheme, options)
    if scheme in ("redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel"):
        return _open_redis_topology(url, shown, scheme, options)

    raise StoreError(f"store URL {shown!r}: unknown scheme {scheme + '://'!r}; {_EXPECTED}")


def _tls_options(
    merged: dict[str, Any], shown: str, secure: bool, tls_scheme: str
) -> dict[str, Any]:
    """The ``ssl_*`` options taken out of ``merged`` (those set), refused unless the URL's
    scheme is a TLS one (``tls_scheme`` names it in the error)."""
    tls = {name: merged.pop(name) for name in list(merged) if name.startswith("ssl_")}
    tls = {name: value for name, value in tls.items() if value is not None}
    if tls and not secure:
        raise StoreError(f"store URL {shown!r}: ssl_* options need a {tls_scheme} URL")
    return tls


def _needs_redis(shown: str, exc: ImportError) -> StoreError:
    return StoreError(
        f"store URL {shown!r} needs the redis package: pip install 'mcp-sessions[redis]' ({exc})"
    )


def _open_redis(url: str, shown: str, scheme: str, options: dict[str, Any]) -> Store:
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise StoreError(f"store URL {shown!r}: no host; expected {scheme}://host:port/db")
    try:
        port = parts.port or 6379
    except ValueError:
        raise StoreError(
            f"store URL {shown!r}: the port must be a number from 1 to 65535"
        ) from None
    db_text = parts.path.strip("/")
    if db_text and not db_text.isdigit():
        raise StoreError(
            f"store URL {shown!r}: the path must be a database number, e.g. {scheme}://{host}:"
            f"{port}/0, got {db_text!r}"
        )
    merged = merge_options(url, parts.query, options, _REDIS_OPTIONS)
    tls_options = _tls_options(merged, shown, scheme == "rediss", "rediss://")
    try:
        from .redis import RedisStore
    except ImportError as exc:
        raise _needs_redis(shown, exc) from None
    return RedisStore(
        url,
        host=host,
        port=port,
        db=int(db_text or 0),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=scheme == "rediss",
        tls_options=tls_options,
        **merged,
    )


def _open_redis_topology(url: str, shown: str, scheme: str, options: dict[str, Any]) -> Store:
    """A Redis Cluster or a Sentinel-managed master (issue #15 item 2)."""
    query = url.partition("?")[2].partition("#")[0]
    known = {**_REDIS_OPTIONS, **(_SENTINEL_OPTIONS if "sentinel" in scheme else {})}
    merged = merge_options(url, query, options, known)
    sentinel = {name: merged.pop(name) for name in _SENTINEL_OPTIONS if name in merged}
    tls_options = _tls_options(merged, shown, scheme.startswith("rediss"), "rediss+…")
    try:
        from ._redis_topology import parse_url
        from .redis import RedisStore
    except ImportError as exc:
        raise _needs_redis(shown, exc) from None
    topology = parse_url(url, shown, scheme, sentinel)
    host, port = topology.nodes[0]
    return RedisStore(
        url,
        host=host,
        port=port,
        db=topology.db,
        username=topology.username,
        password=topology.password,
        tls=topology.tls,
        tls_options=tls_options,
        topology=topology,
        **merged,
    )


def state_dir() -> str:
    """``mcp-sessions`` in the user's state directory: ``$XDG_STATE_HOME`` when it is set to an
    absolute path, else ``~/.local/state`` (XDG Base Directory Specification). Sessions are
    state, not cache: they should survive a restart, and not configuration: they should not be
    backed up with it."""
    base = os.environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "mcp-sessions")


def default_store_url() -> str:
    """``sqlite:///…`` of ``sessions.sqlite3`` in :func:`state_dir`."""
    return "sqlite:///" + quote(os.path.join(state_dir(), "sessions.sqlite3"), safe="/")


__all__ = [
    "DEFAULT_TOUCH_FRACTION",
    "AlreadyExists",
    "MemoryStore",
    "NotFound",
    "SQLiteStore",
    "StateOverMaxBytes",
    "StateTooLarge",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "VersionConflict",
    "default_store_url",
    "open_store",
    "state_dir",
    "touch_live",
]
