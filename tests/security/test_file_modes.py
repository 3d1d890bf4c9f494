"""Store and key files are their owner's alone (issue #12, table row 14): session ids are
bearer capabilities and sealing keys are secrets, so what the project creates is 0600 in a
0700 directory, and a key file that group or others can read is refused with ``chmod 600``.

Real ``mcp-sessions`` processes and a real SQLite store; POSIX file modes only.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import httpx2
import pytest
from tests.server.helpers import (
    MCP_SESSIONS_CLI,
    REPO,
    RawHttp,
    mirror,
    new_id,
    sid,
    start_process,
    tool_value,
)

from mcp_sessions.core.sealing import SealingKey
from mcp_sessions.stores import open_store

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.anyio
async def test_the_demo_makes_its_store_and_keys_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default store and key file live in the user's state directory.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    server = start_process([str(MCP_SESSIONS_CLI), "demo"], tmp_path / "demo.log")
    try:
        async with httpx2.AsyncClient(timeout=30) as http:
            session_id = new_id()
            reply = await RawHttp(http, server.url).modern(
                "tools/call",
                {"name": "count", "arguments": {}},
                meta=sid(session_id),
                headers=mirror(session_id),
            )
            assert tool_value(reply) == 1
    finally:
        server.stop()
    directory = tmp_path / "state" / "mcp-sessions"
    assert mode(directory) == 0o700
    files = sorted(directory.iterdir())
    assert directory / "sessions.sqlite3" in files and directory / "demo-keys.txt" in files
    for path in files:  # the database, its -wal and -shm files, the keys
        assert mode(path) == 0o600, (path, oct(mode(path)))


@pytest.mark.anyio
async def test_a_new_sqlite_store_is_private(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "sessions.sqlite3"
    async with open_store(f"sqlite:///{path}"):
        pass
    assert mode(path.parent) == 0o700
    assert mode(path) == 0o600


@pytest.mark.parametrize("loose", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_others_can_read_is_refused(tmp_path: Path, loose: int) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text(SealingKey.generate().to_text() + "\n", encoding="utf-8")
    key_file.chmod(loose)
    demo = subprocess.run(
        [str(MCP_SESSIONS_CLI), "demo", "--store", "memory://", "--key-file", str(key_file)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert demo.returncode != 0
    assert f"chmod 600 {key_file}" in demo.stderr, demo.stderr
    assert f"{loose:04o}" in demo.stderr
    inspect = subprocess.run(
        [str(MCP_SESSIONS_CLI), "token", "inspect", "--key-file", str(key_file), "x"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert inspect.returncode != 0 and "chmod 600" in inspect.stderr, inspect.stderr
    # Once private, the same file is accepted.
    key_file.chmod(0o600)
    accepted = subprocess.run(
        [str(MCP_SESSIONS_CLI), "token", "inspect", "--key-file", str(key_file), "x"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert "chmod" not in accepted.stderr and "not a state token" in accepted.stderr
