"""Stores shared by real OS processes: atomic compare-and-set, and SQLite durability (issue #3)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mcp_sessions.core.records import Record
from mcp_sessions.stores import VersionConflict, open_store

pytestmark = pytest.mark.anyio

WORKER = Path(__file__).with_name("_store_worker.py")
PRINCIPAL = "principal:worker"  # as in _store_worker.py
COUNTER = "s-counter-0000000000"


def spawn(*args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # A watchdog instead of a hang: a stuck child is killed and the test fails on its output.
    timer = threading.Timer(120, process.kill)
    timer.daemon = True
    timer.start()
    return process


def expect_line(process: subprocess.Popen[str], prefix: str) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith(prefix):
        process.kill()
        _, err = process.communicate()
        raise AssertionError(f"worker said {line!r}, expected {prefix!r}; stderr:\n{err}")
    return line


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/shared.sqlite3"
    return str(request.getfixturevalue("redis_url"))


async def test_two_processes_increment_without_losing_an_update(shared_url: str) -> None:
    async with open_store(shared_url) as store:
        await store.create(
            Record.new(
                kind="session",
                id=COUNTER,
                principal=PRINCIPAL,
                origin="t",
                now=time.time(),
                idle_ttl=600,
                state={"n": 0},
            )
        )
        workers = [spawn("increment", shared_url, COUNTER, "50") for _ in range(2)]
        for worker in workers:
            expect_line(worker, "ready")
        for worker in workers:  # release both at once so their increments interleave
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        for worker in workers:
            print(expect_line(worker, "done").strip())
            assert worker.wait(timeout=60) == 0
        record = await store.get("session", COUNTER, PRINCIPAL)
    assert record is not None
    assert record.state == {"n": 100}
    assert record.version == 101


async def test_sqlite_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "durable.sqlite3"
    url = f"sqlite:///{path}"
    writer = spawn("acked-writes", url)
    last = -1
    while last < 40:
        last = int(expect_line(writer, "acked ").split()[1])
    os.kill(writer.pid, signal.SIGKILL)  # no clean shutdown, no checkpoint, no close
    writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL

    check = sqlite3.connect(path)
    try:
        assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        check.close()
    async with open_store(url) as store:
        counter = await store.get("session", COUNTER, PRINCIPAL)
        assert counter is not None and counter.state["n"] >= last
        for n in range(last + 1):
            record = await store.get("session", f"s-durable-{n:010d}", PRINCIPAL)
            assert record is not None and record.state == {"n": n}, f"acked write {n} was lost"


async def test_two_stores_on_one_url_share_records(shared_url: str) -> None:
    now = time.time()
    record = Record.new(
        kind="session", id=COUNTER, principal=PRINCIPAL, origin="t", now=now, idle_ttl=60
    )
    async with open_store(shared_url) as one, open_store(shared_url) as two:
        await one.create(record)
        assert await two.get("session", COUNTER, PRINCIPAL, now=now) == record
        await two.compare_and_set("session", COUNTER, PRINCIPAL, 1, {"n": 1}, now=now + 1)
        with pytest.raises(VersionConflict):
            await one.compare_and_set("session", COUNTER, PRINCIPAL, 1, {"n": 2}, now=now + 1)
