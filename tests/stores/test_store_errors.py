"""What goes wrong says what and where, in bounded time (issue #3): URLs, files, servers."""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from tests.fixtures.redis_server import RedisServer

from mcp_sessions.core.records import Record
from mcp_sessions.stores import StoreError, default_store_url, open_store
from mcp_sessions.stores.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

ALICE = "principal:alice"

#: Far more than any bounded failure below needs; it turns a hang into a failing test.
HANG_GUARD = 60


def session(id: str = "s-0123456789abcdef") -> Record:
    return Record.new(
        kind="session", id=id, principal=ALICE, origin="t", now=time.time(), idle_ttl=60
    )


# -- URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("", "has no scheme"),
        ("sessions.sqlite3", "has no scheme"),
        ("ftp://example.com/x", "unknown scheme 'ftp://'"),
        ("postgres://db/sessions", "expected memory://, sqlite:///"),
        ("memory://somewhere", "memory:// takes no host or path"),
        ("memory://?touch_fraction=2", "touch_fraction must be in [0, 1)"),
        (
            "memory://?bogus=1",
            "unknown option(s) bogus; known options: sweep_interval, touch_fraction",
        ),
        ("sqlite://", "expected sqlite:///relative/path or sqlite:////absolute/path"),
        ("sqlite:///", "no database file named"),
        ("sqlite://host/sessions.db", "an SQLite URL has no host"),
        ("sqlite:///:memory:", "use memory://"),
        ("sqlite:////tmp/x.sqlite3?busy_timeout=soon", "busy_timeout='soon' is not a valid float"),
        ("sqlite:////tmp/x.sqlite3?timeout=5", "unknown option(s) timeout"),
        ("sqlite:////tmp/x.sqlite3?synchronous=sometimes", "synchronous must be 'normal'"),
        ("redis://", "no host"),
        ("redis://127.0.0.1:port/0", "the port must be a number"),
        ("redis://127.0.0.1:6379/zero", "the path must be a database number"),
        ("redis://127.0.0.1:6379/0?retries=many", "retries='many' is not a valid int"),
        ("redis://127.0.0.1:6379/0?ssl_ca_certs=/ca.pem", "ssl_* options need a rediss:// URL"),
    ],
)
def test_a_bad_url_names_itself_and_what_was_expected(url: str, says: str) -> None:
    with pytest.raises(StoreError) as error:
        open_store(url)
    message = str(error.value)
    assert says in message
    assert repr(url) in message


def test_url_options_are_the_constructors_keywords_with_their_defaults() -> None:
    """Issue #17: each default is written once, in the backend's constructor; open_store
    knows exactly those options and converts a URL value to its default's type. Redis's
    table is written by hand (its module needs the optional package) and must agree."""
    from mcp_sessions import stores
    from mcp_sessions.stores._common import keyword_defaults
    from mcp_sessions.stores.redis import RedisStore

    with pytest.raises(StoreError) as error:
        open_store("sqlite:////tmp/x.sqlite3?bogus=1")
    assert str(error.value).endswith(
        "known options: busy_timeout, cache_size_mb, inline_reads, inline_writes, "
        "mmap_size_mb, read_only, sweep_interval, synchronous, touch_fraction"
    )
    store = open_store("sqlite:////tmp/x.sqlite3?cache_size_mb=8&inline_reads=off&busy_timeout=1")
    assert isinstance(store, SQLiteStore)
    assert store._cache_size_mb == 8 and store.inline_reads is False
    assert store.busy_timeout == 1.0 and store.sweep_interval == 60.0  # the rest: defaults

    connection = {"host", "port", "db", "username", "password", "tls", "tls_options", "topology"}
    by_hand = dict(stores._REDIS_OPTIONS)
    tls_files = {name for name in by_hand if name.startswith("ssl_")}
    for name in tls_files:
        del by_hand[name]
    assert tls_files == {"ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"}
    assert by_hand == keyword_defaults(RedisStore, skip=connection)


def test_a_bad_url_does_not_show_its_password() -> None:
    with pytest.raises(StoreError) as error:
        open_store("redis://user:hunter2@127.0.0.1:6379/zero")
    assert "hunter2" not in str(error.value)
    assert "redis://user:***@127.0.0.1:6379/zero" in str(error.value)


def test_keyword_options_must_be_known() -> None:
    with pytest.raises(StoreError, match="unknown option"):
        open_store("memory://", busy_timeout=1)


def test_default_url_is_sqlite_in_the_user_state_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    url = default_store_url()
    assert url == f"sqlite:///{tmp_path}/state/mcp-sessions/sessions.sqlite3"
    store = open_store(url)
    assert isinstance(store, SQLiteStore)
    assert store.path == str(tmp_path / "state" / "mcp-sessions" / "sessions.sqlite3")

    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")  # the spec says: ignore it
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_store_url() == (
        f"sqlite:///{tmp_path}/home/.local/state/mcp-sessions/sessions.sqlite3"
    )


def test_sqlite_relative_and_absolute_paths(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///data/sessions.sqlite3")
    absolute = open_store(f"sqlite:///{tmp_path}/abs.sqlite3")
    spaced = open_store(f"sqlite:///{tmp_path}/with%20space.sqlite3")
    assert isinstance(relative, SQLiteStore) and isinstance(absolute, SQLiteStore)
    assert isinstance(spaced, SQLiteStore)
    assert relative.path == str(tmp_path / "data" / "sessions.sqlite3")
    assert absolute.path == str(tmp_path / "abs.sqlite3")
    assert spaced.path == str(tmp_path / "with space.sqlite3")


# -- SQLite files --------------------------------------------------------------------------


async def test_sqlite_creates_its_directory_and_file(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "sessions.sqlite3"
    async with open_store(f"sqlite:///{path}") as store:
        await store.create(session())
    assert path.is_file()


async def test_sqlite_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.sqlite3"
    path.write_bytes(b"definitely not an SQLite database\n" * 200)
    with anyio.fail_after(HANG_GUARD), pytest.raises(StoreError) as error:
        async with open_store(f"sqlite:///{path}"):
            pass
    assert str(path) in str(error.value)
    assert "not a valid SQLite database or is corrupt" in str(error.value)


async def test_sqlite_damaged_pages_are_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "damaged.sqlite3"
    url = f"sqlite:///{path}"
    async with open_store(url) as store:
        for n in range(300):
            await store.create(session(f"s-{n:016d}"))
    with path.open("r+b") as f:  # keep the header, garble everything after the first page
        f.seek(4096)
        f.write(os.urandom(path.stat().st_size - 4096))
    with anyio.fail_after(HANG_GUARD), pytest.raises(StoreError) as error:
        async with open_store(url) as store:
            await store.list(ALICE)
            for n in range(300):
                await store.get("session", f"s-{n:016d}", ALICE)
    assert str(path) in str(error.value)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make ``path`` read-only even for root (who ignores permission bits): chattr +i."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)
        return
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"running as root and cannot make a file immutable here: {made.stderr}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


async def test_sqlite_read_only_file(tmp_path: Path) -> None:
    path = tmp_path / "readonly.sqlite3"
    url = f"sqlite:///{path}"
    async with open_store(url) as store:
        await store.create(session())
    with read_only(path), anyio.fail_after(HANG_GUARD), pytest.raises(StoreError) as error:
        async with open_store(url):
            pass
    assert str(path) in str(error.value)
    assert "read-only" in str(error.value)


async def test_sqlite_path_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as error:
        async with open_store(f"sqlite:///{tmp_path}"):
            pass
    assert f"{tmp_path}: the path is a directory" in str(error.value)


async def test_sqlite_parent_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError) as error:
        async with open_store(f"sqlite:///{tmp_path}/file/sessions.sqlite3"):
            pass
    assert f"{tmp_path}/file exists and is not a directory" in str(error.value)
    with pytest.raises(StoreError) as error:
        async with open_store(f"sqlite:///{tmp_path}/file/deeper/sessions.sqlite3"):
            pass
    assert f"cannot create directory {tmp_path}/file/deeper: Not a directory" in str(error.value)


async def test_sqlite_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(StoreError, match="schema version 99 was written by a newer"):
        async with open_store(f"sqlite:///{path}"):
            pass


async def test_sqlite_lock_held_elsewhere_fails_after_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "locked.sqlite3"
    url = f"sqlite:///{path}"
    async with open_store(url, busy_timeout=0.2) as store:
        await store.create(session())
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # another process mid-write, for ever
        try:
            with anyio.fail_after(HANG_GUARD):
                with pytest.raises(StoreError) as error:
                    await store.create(session("s-fedcba9876543210"))
                assert "locked by another connection for longer than busy_timeout=0.2s" in str(
                    error.value
                )
                assert str(path) in str(error.value)
                # WAL readers are not blocked by the writer.
                assert await store.get("session", "s-0123456789abcdef", ALICE) is not None
                with pytest.raises(StoreError, match="locked"):
                    async with open_store(url, busy_timeout=0.2):
                        pass
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        await store.create(session("s-fedcba9876543210"))


# -- Redis servers -------------------------------------------------------------------------


async def test_redis_nothing_listening(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"
    with anyio.fail_after(HANG_GUARD), pytest.raises(StoreError) as error:
        async with open_store(url, connect_timeout=0.5, retries=0):
            pass
    assert f"127.0.0.1:{port}" in str(error.value)
    assert "cannot connect" in str(error.value)


async def test_redis_server_that_never_answers_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever replies
        port = silent.getsockname()[1]
        url = f"redis://127.0.0.1:{port}/0"
        store = open_store(url, connect_timeout=0.5, timeout=0.5, retries=1)
        with anyio.fail_after(HANG_GUARD), pytest.raises(StoreError) as error:
            await store.get("session", "s-0123456789abcdef", ALICE)
        await store.close()
    assert f"127.0.0.1:{port}" in str(error.value)
    assert "no answer within timeout=0.5s" in str(error.value)


@pytest.mark.redis
async def test_redis_wrong_password_is_reported_without_it(redis_server: RedisServer) -> None:
    admin = redis_server.client()
    admin.execute_command("ACL", "SETUSER", "tester", "on", ">right-password", "~*", "+@all")
    try:
        url = redis_server.url.replace("redis://", "redis://tester:hunter2@")
        store = open_store(url)
        assert "hunter2" not in store.url and "tester:***@" in store.url
        with anyio.fail_after(HANG_GUARD), pytest.raises(StoreError) as error:
            async with store:
                pass
        message = str(error.value)
        assert "authentication failed" in message
        assert "hunter2" not in message
        assert f"127.0.0.1:{redis_server.port}" in message
        # the right password works
        good = url.replace("hunter2", "right-password")
        async with open_store(good) as store:
            assert await store.get("session", "s-nobody-0000000000", ALICE) is None
    finally:
        admin.execute_command("ACL", "DELUSER", "tester")
        admin.close()


@pytest.mark.redis
async def test_redis_database_out_of_range(redis_url: str) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/999"
    with anyio.fail_after(HANG_GUARD), pytest.raises(StoreError) as error:
        async with open_store(url, retries=0):
            pass
    assert "/999" in str(error.value)
