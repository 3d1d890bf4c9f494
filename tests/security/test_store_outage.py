"""Issue #12 row 11: a store that is down or slow is an error a client can read.

Before: with Redis stopped, tools answered "Error executing tool count", ``session/create``
-32603 "Internal server error", legacy ``initialize`` a plain-text 500. Now every path answers
-31006 (legacy HTTP: 503 with a JSON-RPC body and ``Retry-After``), the cause goes to the log
once, and the server serves again as soon as the store is back — without a restart.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from tests.fixtures.redis_server import (
    RedisServer,
    free_port,
    start_redis_server,
    stop_process,
)
from tests.server._app import build_app
from tests.server.helpers import (
    ACCEPT,
    PROTOCOL,
    TIMEOUT,
    RawHttp,
    Reply,
    ServerProcess,
    ThreadedServer,
    expect_error,
    new_id,
    session_create,
    session_destroy,
    sid,
    start_demo,
    value,
)

from mcp_sessions.core.errors import STORE_UNAVAILABLE, SessionNotFound, StoreUnavailable
from mcp_sessions.stores import open_store

pytestmark = pytest.mark.anyio

UNAVAILABLE = {"code": STORE_UNAVAILABLE, "message": StoreUnavailable().message}


@dataclass
class Redis:
    """A redis-server of this test alone, which the test may stop and start again."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def start(self) -> None:
        assert self.process is None
        self.process, _ = start_redis_server(self.directory, self.port)


@pytest.fixture
def redis(redis_server: RedisServer, tmp_path: Path) -> Iterator[Redis]:
    """Its own server (the shared ``redis_server`` is asked for its skip-or-fail rule when
    redis-server is missing, and must never be stopped)."""
    directory = tmp_path / "redis"
    directory.mkdir()
    process, port = start_redis_server(directory)
    server = Redis(directory, port, process)
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.send_signal(signal.SIGCONT)  # in case a test left it stopped
        server.stop()


def assert_unavailable(reply: Reply, request_id: int | None = 1) -> None:
    """The legacy HTTP answer to an outage: 503, Retry-After, a JSON-RPC -31006 body."""
    assert reply.status == 503, reply.text
    assert int(reply.headers["retry-after"]) >= 1
    assert reply.body == {"jsonrpc": "2.0", "id": request_id, "error": UNAVAILABLE}


def no_store_details(text: str, redis: Redis) -> None:
    """What the client reads names neither the store nor its address."""
    assert str(redis.port) not in text and "redis" not in text.lower(), text


@pytest.mark.redis
async def test_redis_stopped_every_path_answers_31006_and_recovers(
    redis: Redis, tmp_path: Path
) -> None:
    demo = start_demo(tmp_path, "--store", redis.url, "--handle-fallback")
    try:
        await _outage_and_recovery(demo, redis)
    finally:
        demo.stop()
    log = demo.log.read_text(errors="replace")
    # Warned at start: the test server keeps nothing (save '' and appendonly no).
    assert "no persistence" in log
    # The cause, password hidden, at warning level: once for this outage, not per request.
    assert log.count("session store unavailable, answering -31006") == 1, log
    assert f"127.0.0.1:{redis.port}" in log
    assert "answers again" in log
    assert "Traceback" not in log


async def _outage_and_recovery(demo: ServerProcess, redis: Redis) -> None:
    kept = new_id()
    async with (
        httpx2.AsyncClient(timeout=TIMEOUT) as http,
        Client(demo.url, mode=PROTOCOL["modern"], read_timeout_seconds=TIMEOUT) as client,
    ):
        raw = RawHttp(http, demo.url)
        # Before the outage: a session, a legacy session, a vm handle, a fallback handle.
        assert value(await client.call_tool("count", {}, meta=sid(kept))) == 1
        legacy = await raw.initialize()
        vm = value(await client.call_tool("init_vm", {"name": "web"}))
        handle = value(await client.call_tool("session_start", {}))
        assert value(await client.call_tool("count", {"session": handle})) == 1

        redis.stop()

        # Tools: CurrentSession resolution, a new implicit session, session.update, handles.
        for arguments, meta in (
            ({}, sid(kept)),
            ({}, sid(new_id())),
            ({"session": handle}, None),
        ):
            error = await expect_error(client.call_tool("count", arguments, meta=meta))
            assert (error.code, error.message) == (STORE_UNAVAILABLE, UNAVAILABLE["message"])
        for name, arguments in (
            ("set_cpu", {"vm": vm, "n": 4}),
            ("init_vm", {"name": "db"}),
            ("session_start", {}),
        ):
            error = await expect_error(client.call_tool(name, arguments))
            assert error.code == STORE_UNAVAILABLE, (name, error.message)
            no_store_details(error.message, redis)
        # session/create and session/destroy.
        error = await expect_error(session_create(client))
        assert error.code == STORE_UNAVAILABLE
        error = await expect_error(session_destroy(client, sessionId=kept))
        assert error.code == STORE_UNAVAILABLE

        # Legacy HTTP: initialize, a later request, GET and DELETE.
        reply = await raw.post(
            {
                "jsonrpc": "2.0",
                "id": 7,
                "method": "initialize",
                "params": {
                    "protocolVersion": PROTOCOL["legacy"],
                    "capabilities": {},
                    "clientInfo": {"name": "raw-test", "version": "0"},
                },
            },
            {"accept": ACCEPT, "content-type": "application/json"},
        )
        assert_unavailable(reply, 7)
        assert "mcp-session-id" not in reply.headers  # no session was made
        no_store_details(reply.text, redis)
        assert_unavailable(await raw.legacy("tools/call", {"name": "count"}, session_id=legacy))
        response = await http.delete(demo.url, headers={"mcp-session-id": legacy})
        assert response.status_code == 503 and response.headers["retry-after"]
        assert response.json()["error"] == UNAVAILABLE

        redis.start()  # same port, empty: the test server keeps nothing

        # Served again without restarting the demo. An implicit session comes back empty on
        # its next use; the legacy session is gone (404), as docs/stores.md says.
        assert value(await client.call_tool("count", {}, meta=sid(kept))) == 1
        assert value(await client.call_tool("count", {}, meta=sid(new_id()))) == 1
        created = await session_create(client)
        assert value(await client.call_tool("count", {}, meta=sid(created["sessionId"]))) == 1
        reply = await raw.legacy("tools/call", {"name": "count"}, session_id=legacy)
        assert reply.status == 404
        assert reply.error == {"code": SessionNotFound.code, "message": SessionNotFound().message}
        assert await raw.initialize()


@pytest.mark.redis
async def test_redis_not_answering_gives_31006_within_op_timeout_then_recovers(
    redis: Redis, tmp_path: Path
) -> None:
    """A Redis that accepts connections but never answers (SIGSTOP): each operation ends at
    ``op_timeout`` with -31006, and the connections cut off mid-command do not confuse later
    commands once it answers again (SIGCONT)."""
    assert redis.process is not None
    demo = start_demo(tmp_path, "--store", f"{redis.url}?op_timeout=0.5")
    session_id = new_id()
    try:
        async with Client(demo.url, mode=PROTOCOL["modern"], read_timeout_seconds=TIMEOUT) as c:
            assert value(await c.call_tool("count", {}, meta=sid(session_id))) == 1
            redis.process.send_signal(signal.SIGSTOP)
            try:
                for _ in range(3):
                    error = await expect_error(c.call_tool("count", {}, meta=sid(session_id)))
                    assert error.code == STORE_UNAVAILABLE
            finally:
                redis.process.send_signal(signal.SIGCONT)
            # Every answer matches its command: the count goes on from where it was. The first
            # cut-off call may have been applied after all: its session was read from the
            # local copy (issue #15), so its write was sent at once, and the stopped Redis ran
            # it once resumed; -31006 says only that no acknowledgement came. The later ones
            # were never sent (the reconnect found no answer).
            seen = [value(await c.call_tool("count", {}, meta=sid(session_id))) for _ in range(5)]
            assert seen in ([2, 3, 4, 5, 6], [3, 4, 5, 6, 7])
    finally:
        demo.stop()
    assert "op_timeout=0.5s" in demo.log.read_text(errors="replace")


async def test_sqlite_locked_gives_31006_and_recovers(tmp_path: Path) -> None:
    """Another process holds the SQLite write lock for longer than ``busy_timeout``: writes
    answer -31006 (not "Error executing tool"), and succeed once the lock is released."""
    path = tmp_path / "sessions.sqlite3"
    demo = start_demo(tmp_path, "--store", f"sqlite:///{path}?busy_timeout=0.3")
    try:
        async with Client(demo.url, mode=PROTOCOL["modern"], read_timeout_seconds=TIMEOUT) as c:
            session_id = new_id()
            assert value(await c.call_tool("count", {}, meta=sid(session_id))) == 1
            holder = sqlite3.connect(path, isolation_level=None, timeout=10)
            try:
                holder.execute("BEGIN IMMEDIATE")  # the write lock, until ROLLBACK
                error = await expect_error(c.call_tool("count", {}, meta=sid(session_id)))
                assert (error.code, error.message) == (STORE_UNAVAILABLE, UNAVAILABLE["message"])
                error = await expect_error(session_create(c))
                assert error.code == STORE_UNAVAILABLE
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            assert value(await c.call_tool("count", {}, meta=sid(session_id))) == 2
    finally:
        demo.stop()
    log = demo.log.read_text(errors="replace")
    assert "busy_timeout=0.3s" in log and "Traceback" not in log


async def test_legacy_initialize_during_an_outage_keeps_no_sdk_session() -> None:
    """A refused ``initialize`` must not hold a slot of the SDK's own session table (whose cap
    every legacy client shares) until its idle timeout: the SDK's session is ended at once."""
    port = free_port()  # nothing listens there: every store operation is refused
    mcp, sessions = build_app(store=f"redis://127.0.0.1:{port}/0")
    server = ThreadedServer(sessions.streamable_http_app(mcp)).start()
    try:
        async with httpx2.AsyncClient(timeout=TIMEOUT) as http:
            raw = RawHttp(http, server.url)
            for request_id in range(3):
                reply = await raw.post(
                    {
                        "jsonrpc": "2.0",
                        "id": request_id,
                        "method": "initialize",
                        "params": {
                            "protocolVersion": PROTOCOL["legacy"],
                            "capabilities": {},
                            "clientInfo": {"name": "raw-test", "version": "0"},
                        },
                    },
                    {"accept": ACCEPT, "content-type": "application/json"},
                )
                assert_unavailable(reply, request_id)
        # The SDK's table of live legacy sessions (private; no public count exists).
        assert mcp.session_manager._server_instances == {}
    finally:
        server.stop()


@pytest.mark.redis
async def test_redis_without_persistence_is_warned_about_unless_config_is_refused(
    redis_server: RedisServer, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The shared test server keeps nothing (``save ''``, ``appendonly no``): entering the
    store warns. A user that may not run CONFIG (as on managed Redis) opens it silently."""
    with caplog.at_level(logging.WARNING, logger="mcp_sessions.stores"):
        async with open_store(redis_url):
            pass
    assert [r.getMessage() for r in caplog.records if "no persistence" in r.getMessage()]

    caplog.clear()
    admin = redis_server.client()
    admin.acl_setuser(
        "noconfig", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-config"]
    )
    try:
        url = f"redis://noconfig:pw@{redis_server.host}:{redis_server.port}/0"
        with caplog.at_level(logging.DEBUG, logger="mcp_sessions.stores"):
            async with open_store(url) as store:
                assert await store.get("session", new_id(), "anonymous") is None
        assert caplog.records == []
    finally:
        admin.acl_deluser("noconfig")
        admin.close()


@pytest.mark.redis
async def test_a_server_without_http_warns_at_its_first_store_operation(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Over stdio or in process there is no HTTP lifespan: the store is opened, and a Redis
    without persistence warned about, by the first operation — once."""
    mcp, sessions = build_app(store=redis_url)
    try:
        with caplog.at_level(logging.WARNING, logger="mcp_sessions"):
            async with Client(mcp, read_timeout_seconds=TIMEOUT) as client:
                session_id = new_id()
                for expected in (1, 2, 3):
                    reply = await client.call_tool("count", {}, meta=sid(session_id))
                    assert value(reply)["count"] == expected
    finally:
        await sessions.aclose()
    warnings = [r for r in caplog.records if "no persistence" in r.getMessage()]
    assert len(warnings) == 1


def remove_database(path: Path) -> None:
    """Delete an SQLite file with its WAL and shared-memory files, as a cleaner would."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def test_sqlite_file_removed_under_a_running_server_is_opened_again(
    tmp_path: Path,
) -> None:
    """SQLite keeps writing to a removed file without a word, so a server whose file was
    deleted (a temp-file cleaner, an operator) used to go on alone on a ghost, invisible to
    every process that opens the path after, and lose it all at restart. Now it notices, opens
    the path again, and a replica started afterwards shares its sessions."""
    path = tmp_path / "sessions.sqlite3"
    store = f"sqlite:///{path}"
    first = start_demo(tmp_path, "--store", store, name="first")
    second: ServerProcess | None = None
    try:
        async with Client(first.url, mode=PROTOCOL["modern"], read_timeout_seconds=TIMEOUT) as a:
            assert value(await a.call_tool("count", {}, meta=sid(new_id()))) == 1
            remove_database(path)
            for _ in range(100):  # bounded: the check runs at most a second apart
                assert value(await a.call_tool("count", {}, meta=sid(new_id()))) == 1
                if path.exists():
                    break
                await anyio.sleep(0.05)
            assert path.exists(), "the server never opened its path again"

            second = start_demo(tmp_path, "--store", store, name="second")
            shared = new_id()
            async with Client(
                second.url, mode=PROTOCOL["modern"], read_timeout_seconds=TIMEOUT
            ) as b:
                assert value(await a.call_tool("count", {}, meta=sid(shared))) == 1
                assert value(await b.call_tool("count", {}, meta=sid(shared))) == 2
                assert value(await a.call_tool("count", {}, meta=sid(shared))) == 3
    finally:
        if second is not None:
            second.stop()
        first.stop()
    assert "the database file was removed or replaced" in first.log.read_text(errors="replace")
