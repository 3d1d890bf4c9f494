"""The state jar: which session a client is in, and the newest state token of each session.

Everything is scoped by :class:`JarScope` — the server (its endpoint URL or its stdio command)
and the principal the client speaks as — so that a token is never sent to another server or
as another principal (spec-digest §5.4 item 46, TWG PR #20: "securely associate retained
sessions with the issuing Server").

Within a scope the jar keeps, per session id, the ``dev.mcpsessions/state`` token with the
highest ``seq`` (DESIGN §4: parallel calls are last-writer-wins by ``seq``), and, per named
slot, the session the client is in, so that a restarted client resumes it.

Persistence is optional: with a ``path`` every change is written at once, atomically (a
temporary file in the same directory, fsync, rename) and readable by the owner only (0600).
Writers sharing one file take a lock and merge per scope, so two clients talking to two
servers through one jar do not erase each other. No SDK import here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ..core.errors import InvalidState
from ..core.sealing import read_token_header

try:  # POSIX advisory locks; elsewhere the jar still works, without cross-process merging
    import fcntl
except ImportError:  # pragma: no cover - not on Linux
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("mcp_sessions.client")

#: Scopes whose server key starts with this are process-local (in-process servers, transport
#: objects): their identity does not survive a restart, so they are never written to a file.
LOCAL_PREFIX = "local:"
DEFAULT_SLOT = "default"
_FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class JarScope:
    """Where a session lives: one server, one principal.

    ``server`` is the endpoint URL without credentials, query or fragment
    (``http://127.0.0.1:8000/mcp``), ``stdio:<command as JSON>``, or ``local:…`` for a
    process-local server. ``principal`` is the identity the client speaks as: a name the
    application chose, a digest of a static ``Authorization`` header, or ``anonymous``.
    """

    server: str
    principal: str = "anonymous"

    @property
    def persistent(self) -> bool:
        return not self.server.startswith(LOCAL_PREFIX)

    def __str__(self) -> str:
        return f"{self.server} as {self.principal}"


@dataclass(frozen=True, slots=True)
class JarEntry:
    """What the jar knows about one session.

    ``generation`` changes whenever the token is replaced out of ``seq`` order (a rollback);
    a result of a request sent under an older generation is not allowed to overwrite it.
    """

    session_id: str
    token: str | None = None
    seq: int | None = None
    expires_at: str | None = None
    generation: int = 0

    def expired(self, now: float | None = None) -> bool:
        """``True`` if the server's last word on expiry, or the token's own, is in the past."""
        now = time.time() if now is None else now
        if self.expires_at is not None:
            stamp = parse_rfc3339(self.expires_at)
            if stamp is not None and stamp <= now:
                return True
        if self.token is not None:
            try:
                return read_token_header(self.token).expires_at <= now
            except InvalidState:
                return True
        return False


def parse_rfc3339(text: str) -> float | None:
    """Unix seconds of an RFC 3339 timestamp, or ``None`` if it is not one."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, TypeError):
        return None


def token_seq(token: object) -> int | None:
    """The ``seq`` of a state token, read without a key (never used for access decisions)."""
    try:
        return read_token_header(token).seq
    except InvalidState:
        return None


@dataclass
class _ScopeData:
    current: dict[str, str] = field(default_factory=dict)
    sessions: dict[str, JarEntry] = field(default_factory=dict)


class StateJar:
    """Session ids and state tokens, scoped by server and principal.

    ``StateJar()`` lives in memory; ``StateJar("~/.config/app/sessions.json")`` persists to
    that file (created 0600 on first write) and loads it now.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._path = Path(path).expanduser() if path is not None else None
        self._scopes: dict[JarScope, _ScopeData] = {}
        self._dirty: set[JarScope] = set()
        if self._path is not None:
            self._scopes = self._read_file(self._path)
            self.prune()  # what expired while no one was running

    @property
    def path(self) -> Path | None:
        return self._path

    def __repr__(self) -> str:
        where = str(self._path) if self._path is not None else "memory"
        return f"<StateJar {where}: {sum(len(d.sessions) for d in self._scopes.values())} sessions>"

    # -- reading -------------------------------------------------------------------------------

    def scopes(self) -> list[JarScope]:
        return list(self._scopes)

    def current(self, scope: JarScope, slot: str = DEFAULT_SLOT) -> str | None:
        """The session the client of ``scope`` was last in, under ``slot``."""
        data = self._scopes.get(scope)
        return data.current.get(slot) if data is not None else None

    def entry(self, scope: JarScope, session_id: str) -> JarEntry | None:
        data = self._scopes.get(scope)
        return data.sessions.get(session_id) if data is not None else None

    def token(self, scope: JarScope, session_id: str) -> str | None:
        """The token to echo for ``session_id`` at ``scope``: exactly as the server sent it."""
        found = self.entry(scope, session_id)
        return found.token if found is not None else None

    def generation(self, scope: JarScope, session_id: str) -> int:
        found = self.entry(scope, session_id)
        return found.generation if found is not None else 0

    def sessions(self, scope: JarScope) -> dict[str, JarEntry]:
        data = self._scopes.get(scope)
        return dict(data.sessions) if data is not None else {}

    # -- writing -------------------------------------------------------------------------------

    def set_current(self, scope: JarScope, session_id: str, slot: str = DEFAULT_SLOT) -> None:
        data = self._data(scope)
        changed = data.current.get(slot) != session_id
        data.current[slot] = session_id
        if session_id not in data.sessions:
            data.sessions[session_id] = JarEntry(session_id)
            changed = True
        if changed:
            self._changed(scope)

    def offer(
        self,
        scope: JarScope,
        session_id: str,
        *,
        token: str | None = None,
        expires_at: str | None = None,
        generation: int | None = None,
    ) -> bool:
        """Record what a result said about ``session_id``; returns ``True`` if the jar changed.

        A token replaces the kept one only if its ``seq`` is higher (DESIGN §4); a result of a
        request sent before a rollback (``generation`` older than the entry's) changes nothing.
        """
        data = self._data(scope)
        old = data.sessions.get(session_id) or JarEntry(session_id)
        if generation is not None and generation != old.generation:
            return False
        new = old
        if token is not None:
            seq = token_seq(token)
            if seq is None:
                logger.warning("ignoring a malformed dev.mcpsessions/state token from %s", scope)
            elif old.token is None or old.seq is None or seq > old.seq:
                new = replace(new, token=token, seq=seq)
        if expires_at is not None and expires_at != old.expires_at:
            new = replace(new, expires_at=expires_at)
        if new == old and session_id in data.sessions:
            return False
        data.sessions[session_id] = new
        self._changed(scope)
        return True

    def replace_token(self, scope: JarScope, session_id: str, token: str | None) -> JarEntry:
        """Put ``token`` in place whatever its ``seq`` (restore: rollback by replaying an older
        token, DESIGN §4). Results of requests already in flight no longer count."""
        data = self._data(scope)
        old = data.sessions.get(session_id) or JarEntry(session_id)
        new = replace(
            old,
            token=token,
            seq=token_seq(token) if token is not None else None,
            generation=old.generation + 1,
        )
        data.sessions[session_id] = new
        self._changed(scope)
        return new

    def forget(self, scope: JarScope, session_id: str) -> None:
        """Drop a session (destroyed or unknown to the server) and any slot pointing at it."""
        data = self._scopes.get(scope)
        if data is None:
            return
        removed = data.sessions.pop(session_id, None) is not None
        for slot in [s for s, sid in data.current.items() if sid == session_id]:
            del data.current[slot]
            removed = True
        if removed:
            self._changed(scope)

    def prune(self, now: float | None = None) -> int:
        """Drop sessions whose expiry has passed; returns how many."""
        now = time.time() if now is None else now
        dropped = 0
        for scope, data in self._scopes.items():
            for session_id, found in list(data.sessions.items()):
                if found.expired(now):
                    del data.sessions[session_id]
                    for slot in [s for s, sid in data.current.items() if sid == session_id]:
                        del data.current[slot]
                    dropped += 1
                    self._dirty.add(scope)
        if dropped:
            self._save()
        return dropped

    def clear(self) -> None:
        self._dirty.update(self._scopes)
        self._scopes.clear()
        self._save()

    # -- persistence ---------------------------------------------------------------------------

    def _data(self, scope: JarScope) -> _ScopeData:
        data = self._scopes.get(scope)
        if data is None:
            data = self._scopes[scope] = _ScopeData()
        return data

    def _changed(self, scope: JarScope) -> None:
        if scope.persistent:
            self._dirty.add(scope)
            try:
                self._save()
            except OSError as exc:
                # The jar still works in memory; the next change tries the file again.
                logger.warning("could not write the state jar %s: %s", self._path, exc)

    def _save(self) -> None:
        if self._path is None or not self._dirty:
            self._dirty.clear()
            return
        path = self._path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._locked(path):
            # Another writer may have changed other scopes since we read the file: keep theirs,
            # put ours (whole scopes; a scope belongs to one client at a time).
            merged = self._read_file(path) if path.exists() else {}
            for scope in self._dirty:
                data = self._scopes.get(scope)
                if data is None or not (data.sessions or data.current):
                    merged.pop(scope, None)
                else:
                    merged[scope] = data
            self._write_file(path, merged)
        self._dirty.clear()

    @staticmethod
    @contextlib.contextmanager
    def _locked(path: Path) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover
            yield
            return
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    @staticmethod
    def _write_file(path: Path, scopes: dict[JarScope, _ScopeData]) -> None:
        document = {
            "version": _FORMAT_VERSION,
            "scopes": [
                {
                    "server": scope.server,
                    "principal": scope.principal,
                    "current": dict(data.current),
                    "sessions": {
                        sid: {
                            k: v
                            for k, v in (
                                ("state", found.token),
                                ("seq", found.seq),
                                ("expiresAt", found.expires_at),
                            )
                            if v is not None
                        }
                        for sid, found in data.sessions.items()
                    },
                }
                for scope, data in scopes.items()
                if scope.persistent
            ],
        }
        payload = json.dumps(document, indent=1, sort_keys=True).encode("utf-8")
        # mkstemp creates the file 0600; the rename makes the write all-or-nothing.
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    @staticmethod
    def _read_file(path: Path) -> dict[JarScope, _ScopeData]:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ValueError(f"cannot read state jar {str(path)!r}: {exc.strerror}") from None
        try:
            document = json.loads(text)
            if document.get("version") != _FORMAT_VERSION:
                raise ValueError(f"unknown format version {document.get('version')!r}")
            scopes: dict[JarScope, _ScopeData] = {}
            for item in document["scopes"]:
                scope = JarScope(str(item["server"]), str(item["principal"]))
                data = _ScopeData(current={str(k): str(v) for k, v in item["current"].items()})
                for sid, raw in item["sessions"].items():
                    data.sessions[str(sid)] = _entry_from_json(str(sid), raw)
                scopes[scope] = data
            return scopes
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"state jar {str(path)!r} is not a jar file ({exc}); move it away to start afresh"
            ) from None


def _entry_from_json(session_id: str, raw: Any) -> JarEntry:
    if not isinstance(raw, dict):
        raise TypeError("a session entry must be an object")
    token = raw.get("state")
    expires_at = raw.get("expiresAt")
    if token is not None and not isinstance(token, str):
        raise TypeError("state must be a string")
    if expires_at is not None and not isinstance(expires_at, str):
        raise TypeError("expiresAt must be a string")
    return JarEntry(
        session_id,
        token=token,
        seq=token_seq(token) if token is not None else None,
        expires_at=expires_at,
    )
