"""``mcp-sessions sessions list|show|delete|stats`` (issue #13), run as the real console script
against SQLite and a real Redis holding sessions a real demo server created over the wire; and
its refusals: no --yes, bad input, a missing file.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from tests.fixtures.redis_server import free_port
from tests.gateway.helpers import call, new_id, start_demo, stop

from mcp_sessions.core.records import Record
from mcp_sessions.stores import open_store

CLI = [sys.executable, "-m", "mcp_sessions", "sessions"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, check=False)


def ok_json(*args: str) -> Any:
    result = run(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def created(
    id: str,
    principal: str = "sub:a",
    *,
    kind: str = "session",
    ago: float = 0,
    idle_ttl: float = 600,
    state: dict[str, Any] | None = None,
) -> Record:
    """A record created ``ago`` seconds ago."""
    return Record.new(kind=kind, id=id, principal=principal, origin="create",
                      now=time.time() - ago, idle_ttl=idle_ttl, state=state)  # fmt: skip


def stored(url: str, *records: Record) -> None:
    """Create ``records`` in the store at ``url``, as a server would have."""

    async def fill() -> None:
        async with open_store(url) as store:
            for record in records:
                await store.create(record)

    asyncio.run(fill())


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/sessions.sqlite3"
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
def two_sessions(store_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two sessions made over the wire by a real demo server: one counted twice, one cart."""
    demo = start_demo(tmp_path, "demo", store=store_url)
    try:
        counted, cart = new_id(), new_id()
        with httpx2.Client(timeout=30) as client:
            assert call(client, demo.url, "count", sid=counted).value == 1
            assert call(client, demo.url, "count", sid=counted).value == 2
            assert call(client, demo.url, "add_item", {"item": "tea"}, sid=cart).value == ["tea"]
    finally:
        stop(demo)
    yield counted, cart


def test_list_show_stats_delete_sessions_a_demo_server_made(
    store_url: str, two_sessions: tuple[str, str]
) -> None:
    counted, cart = two_sessions
    listed = ok_json("list", "--store", store_url, "--kind", "session")
    by_id = {entry["id"]: entry for entry in listed}
    assert {counted, cart} <= set(by_id)
    principal = by_id[counted]["principal"]
    assert by_id[counted]["kind"] == "session"
    assert by_id[counted]["stateBytes"] == len('{"count":2}')

    table = run("list", "--store", store_url)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["ID", "KIND", "PRINCIPAL"]
    assert any(row.startswith(counted) and principal in row for row in rows)

    shown = ok_json("show", counted, "--store", store_url, "--kind", "session")
    assert shown["state"] == {"count": 2}
    assert shown["principal"] == principal

    stats = ok_json("stats", "--store", store_url)
    assert stats["byKind"] == {"session": 2}  # the quota ledger's records only when asked
    ledger = ok_json("list", "--store", store_url, "--kind", "quota.sessions")
    assert {entry["id"] for entry in ledger} == {counted, cart}
    assert stats["byPrincipal"][principal] >= 2
    assert stats["largest"][0]["id"] == cart  # {"items": ["tea"]} beats {"count": 2}
    text = run("stats", "--store", store_url)
    assert text.returncode == 0 and "session" in text.stdout

    refused = run("delete", cart, "--store", store_url, "--kind", "session")
    assert refused.returncode == 1
    assert "without --yes" in refused.stderr and "nothing was changed" in refused.stderr
    assert cart in {entry["id"] for entry in ok_json("list", "--store", store_url)}

    deleted = run("delete", cart, "--store", store_url, "--kind", "session", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    remaining = {e["id"] for e in ok_json("list", "--store", store_url)}
    assert cart not in remaining and counted in remaining
    again = run("delete", cart, "--store", store_url, "--kind", "session", "--yes")
    assert again.returncode == 1 and "no live record" in again.stderr


def test_principal_filter_and_ambiguous_ids(store_url: str, tmp_path: Path) -> None:
    stored(
        store_url,
        *(
            created("same", principal, state={"who": principal})
            for principal in ("sub:alice", "sub:bob")
        ),
    )
    bobs = ok_json("list", "--store", store_url, "--principal", "sub:bob")
    assert [entry["principal"] for entry in bobs] == ["sub:bob"]
    ambiguous = run("show", "same", "--store", store_url)
    assert ambiguous.returncode == 2 and "--principal" in ambiguous.stderr
    refused = run("delete", "same", "--store", store_url, "--yes")
    assert refused.returncode == 2
    assert len(ok_json("list", "--store", store_url)) == 2  # nothing deleted
    shown = ok_json("show", "same", "--store", store_url, "--principal", "sub:alice")
    assert shown["state"] == {"who": "sub:alice"}


def file_digests(path: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in path.parent.glob(path.name + "*")
        if not p.name.endswith("-shm") and p.stat().st_size
    }


def test_reading_commands_change_no_byte_of_an_sqlite_store(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    url = f"sqlite:///{path}"

    # "old" has expired: a sweep would remove it.
    stored(url, created("s1", ago=500, idle_ttl=510), created("old", ago=100, idle_ttl=1))
    before = file_digests(path)
    for command in (["list"], ["stats"], ["show", "s1"], ["delete", "s1"]):
        run(*command, "--store", url)
    assert file_digests(path) == before
    with sqlite3.connect(path) as conn:  # the expired row is still there: nothing swept
        assert conn.execute("SELECT COUNT(*) FROM mcps_records").fetchall() == [(2,)]
    stats = ok_json("stats", "--store", url, "--soon", "60")
    assert stats["expiringSoon"] == 1 and stats["soonest"][0]["id"] == "s1"


def test_show_names_an_opaque_state_instead_of_failing(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    url = f"sqlite:///{path}"

    stored(url, created("s1", state={"a": 1}))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE mcps_records SET state = ?", ("[1, 2] not an object",))
    shown = run("show", "s1", "--store", url)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["state"] is None
    assert "opaque" in shown.stderr and "Traceback" not in shown.stderr
    listed = run("list", "--store", url)
    assert "opaque" in listed.stdout


def test_a_hostile_principal_is_escaped_in_the_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.sqlite3"

    stored(url, created("s1", "sub:\x1b[2J\u202eevil"))
    listed = run("list", "--store", url)
    assert listed.returncode == 0
    assert "\x1b" not in listed.stdout and "\u202e" not in listed.stdout
    assert "\\x1b[2J" in listed.stdout
    shown = run("show", "s1", "--store", url)
    assert "\x1b" not in shown.stdout and json.loads(shown.stdout)["principal"].startswith(
        "sub:\x1b"
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["list", "--store", "ftp://x"], "unknown scheme"),
        (["list", "--store", "sqlite:///{tmp}/missing/s.sqlite3"], "no such file"),
        (["stats", "--store", "redis://127.0.0.1:{port}/0"], "cannot connect"),
        (["list", "--store", "memory://", "--kind", "Session!"], "not a record kind"),
        (["list", "--store", "memory://", "--principal", ""], "--principal is empty"),
        (["show", "x", "--store", "sqlite:///{tmp}/s.sqlite3?bogus=1"], "unknown option"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    port = str(free_port())  # nothing listens there
    result = run(*(arg.format(tmp=tmp_path, port=port) for arg in args))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "missing").exists()


def test_memory_store_lists_nothing_and_says_why() -> None:
    result = run("list", "--store", "memory://")
    assert result.returncode == 0
    assert "memory://" in result.stderr and "no live records" in result.stderr


def test_the_bookkeeping_prefix_covers_every_quota_ledger_kind() -> None:
    from mcp_sessions.admin import BOOKKEEPING_PREFIX
    from mcp_sessions.server.quotas import LEDGER_KIND

    assert all(kind.startswith(BOOKKEEPING_PREFIX) for kind in LEDGER_KIND.values())


def test_a_file_that_is_not_a_store_is_bad_input_and_stays_as_it_was(tmp_path: Path) -> None:
    garbage = tmp_path / "notes.txt"
    garbage.write_bytes(b"not a database, just notes\n" * 100)
    empty = tmp_path / "empty.sqlite3"
    sqlite3.connect(empty).close()
    for path, expected in ((garbage, "not a valid SQLite database"), (empty, "no mcp-sessions")):
        before = path.read_bytes()
        result = run("list", "--store", f"sqlite:///{path}")
        assert result.returncode == 2 and expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert path.read_bytes() == before


def test_show_names_a_sealed_token_in_a_state_without_opening_it(tmp_path: Path) -> None:
    from mcp_sessions.core import KeyRing, SealingKey, StateCodec

    codec = StateCodec(KeyRing([SealingKey.generate()]), audience="demo")
    token = codec.seal({"secret": "s3cr3t"}, principal="sub:a", session_id="s" * 20, seq=1)
    url = f"sqlite:///{tmp_path}/s.sqlite3"

    stored(url, created("vm-1", kind="vm", state={"parked": token, "n": 1}))
    shown = run("show", "vm-1", "--store", url)
    assert shown.returncode == 0, shown.stderr
    note = json.loads(shown.stdout)["stateNote"]
    assert note.startswith("sealed: parked") and "token inspect" in note
    assert "s3cr3t" not in shown.stdout  # shown as the token it is, not opened
