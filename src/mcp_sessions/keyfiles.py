"""Key files: where sealing keys live on disk, and who may read them (issue #12 item 11).

The core (:mod:`mcp_sessions.core.sealing`) turns key text into a :class:`KeyRing` and does no
I/O; this module reads and writes the files. A key file holds one key per line, newest first
(``mcp-sessions keys new``): the first key seals, every key unseals. Sealing keys are secrets,
so a file that group or others can access is refused before its keys are read, and files made
here are 0600 (in a 0700 directory when one is made).
"""

from __future__ import annotations

import os
from pathlib import Path

from .core.sealing import KeyRing, SealingKey


def read_key_file(path: str | os.PathLike[str]) -> KeyRing:
    """The keys of the key file at ``path``.

    Raises ``ValueError`` naming the file: unreadable, open to group or others (with the
    ``chmod 600`` that mends it), or holding no valid key.
    """
    shown = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if os.name == "posix" and mode & 0o077:
                raise ValueError(
                    f"key file {shown!r} is open to group or others (mode "
                    f"{mode & 0o777:04o}); sealing keys must be secret: run chmod 600 {shown}"
                )
            text = handle.read()
    except OSError as exc:
        raise ValueError(f"cannot read key file {shown!r}: {exc.strerror}") from None
    return KeyRing.from_text(text, where=f"key file {shown!r}")


def write_key_file(path: str | os.PathLike[str], key: SealingKey, *, replace: bool) -> None:
    """Write ``key`` as the only line of a new key file at ``path``, mode 0600.

    Raises ``FileExistsError`` when the file exists and ``replace`` is false, ``OSError`` when
    it cannot be written. A replaced file is made 0600 too, whatever its mode was.
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(key.to_text() + "\n")


def load_or_create_key_file(path: Path) -> KeyRing:
    """The keys at ``path``, made (one new key, 0600, in a 0700 directory) if there is no file
    yet, so that sealed tokens survive a restart."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_key_file(path, SealingKey.generate(), replace=False)
    return read_key_file(path)


__all__ = ["load_or_create_key_file", "read_key_file", "write_key_file"]
