"""Who the client talks to, and as whom: the two halves of a :class:`~.jar.JarScope`.

Pure functions, no SDK import. The server half is what a token must never leave (spec-digest
§5.4 item 46); the principal half keeps two users of one machine, or one user with two
accounts, from echoing each other's state.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from urllib.parse import urlsplit

from .jar import LOCAL_PREFIX

#: The jar principal of a client that sends no credentials. A label in the jar's scope, not
#: the server's :data:`mcp_sessions.core.principal.ANONYMOUS` (a ``Principal``).
NO_CREDENTIALS = "anonymous"
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: A WebSocket URL names the same endpoint as its HTTP twin (the server answers both on one
#: path, issue #16), so a session kept over one continues over the other.
_WEBSOCKET_TWIN = {"ws": "http", "wss": "https"}


def server_key_for_url(url: str) -> str:
    """``scheme://host:port/path`` of an endpoint: no credentials, query or fragment.

    Stricter than the origin (two MCP endpoints on one origin are two servers), and stable
    across spellings that name the same endpoint (case of scheme and host, default port).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    scheme = _WEBSOCKET_TWIN.get(scheme, scheme)
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an http(s) or ws(s) URL: {url!r}")
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = parts.port or _DEFAULT_PORTS[scheme]
    return f"{scheme}://{host}:{port}{parts.path or '/'}"


def server_key_for_command(
    command: str, args: Sequence[str] = (), cwd: str | os.PathLike[str] | None = None
) -> str:
    """``stdio:`` and the command line as JSON (its environment is left out: it may hold
    secrets, and it does not change which server the client talks to)."""
    line: list[str] = [command, *args]
    if cwd is not None:
        line.append(f"(cwd {os.fspath(cwd)})")
    return "stdio:" + json.dumps(line, separators=(",", ":"))


def local_server_key(kind: str, obj: object, name: str | None = None) -> str:
    """A key for a server that exists only in this process (never persisted)."""
    label = f"{kind}:{name}" if name else kind
    return f"{LOCAL_PREFIX}{label}:{id(obj):x}"


def principal_for_authorization(value: str | None) -> str:
    """A principal from a static ``Authorization`` header: a digest, never the secret itself
    (the jar file must not become a second copy of the credential)."""
    if not value:
        return NO_CREDENTIALS
    return "authorization:sha256:" + hashlib.sha256(value.encode("utf-8")).hexdigest()[:32]
