"""Servers of the interop matrix, shared by every cell that uses them (one of each per run),
and the hooks that record each cell's outcome and write docs/interop.md after a full run.

Every server is a real process on 127.0.0.1, started by tests/gateway/helpers.py and
stopped by its own PID; Redis comes from tests/fixtures/redis_server.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures.redis_server import RedisServer
from tests.gateway.helpers import CLI, Proc, start_demo, start_gateway, stop, upstream_args
from tests.interop.matrix import DOC
from tests.interop.table import RECORD

Target = dict[str, Any]


def _started(start: Callable[[], Proc]) -> Proc:
    """`start()`, again if the free port it picked was taken before the server bound it (the
    helpers choose a port, then the process binds it; other tests run beside this one)."""
    for _attempt in range(2):
        try:
            return start()
        except RuntimeError as exc:
            if "address already in use" not in str(exc):
                raise
    return start()


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("interop")


@pytest.fixture(scope="module")
def http_target(logs: Path) -> Iterator[Target]:
    """`mcp-sessions demo` on its default kind of store, SQLite."""
    store = f"sqlite:///{logs / 'direct.sqlite'}"
    demo = _started(lambda: start_demo(logs, "direct", store=store))
    try:
        yield {"url": demo.url}
    finally:
        stop(demo)


def _gateway(logs: Path, name: str, stores: tuple[str, str]) -> Generator[Target, None, None]:
    procs: list[Proc] = []
    try:
        for i, store in enumerate(stores):
            demo_name = f"{name}-{i}"
            procs.append(_started(lambda n=demo_name, s=store: start_demo(logs, n, store=s)))
        demos = list(procs)
        procs.append(_started(lambda: start_gateway(logs, name, *upstream_args(*demos))))
        gateway = procs[-1]
        yield {"url": gateway.url}
    finally:
        for proc in reversed(procs):
            stop(proc)


@pytest.fixture(scope="module")
def gateway_shared_target(logs: Path, redis_server: RedisServer) -> Iterator[Target]:
    """The gateway in front of two demo replicas sharing one Redis store (database 1: the
    Redis tests flush database 0 as they go)."""
    store = f"redis://{redis_server.host}:{redis_server.port}/1"
    yield from _gateway(logs, "shared", (store, store))


@pytest.fixture(scope="module")
def gateway_memory_target(logs: Path) -> Iterator[Target]:
    """docs/gateway.md's first example: two demo replicas, each with its own memory:// store."""
    yield from _gateway(logs, "memory", ("memory://", "memory://"))


@pytest.fixture(scope="module")
def gateway_spawn_target(logs: Path) -> Iterator[Target]:
    """The gateway running one `mcp-sessions demo --stdio` process per session."""
    child = f"{CLI} demo --stdio --store memory:// --key-file {logs / 'spawn-keys.txt'}"
    options = ("--spawn", child, "--max-processes", "64", "--idle-timeout", "600")
    gateway = _started(lambda: start_gateway(logs, "spawn", *options))
    try:
        yield {"url": gateway.url}
    finally:
        stop(gateway)


@pytest.fixture(scope="module")
def stdio_target(logs: Path) -> Target:
    """What the client spawns: the demo over stdio, on a SQLite store (so the Inspector, which
    starts a new server per call, finds its session again)."""
    store = f"sqlite:///{logs / 'stdio.sqlite'}"
    target: Target = {
        "command": CLI,
        "args": ["demo", "--stdio", "--store", store, "--key-file", str(logs / "stdio-keys.txt")],
    }
    # The Python SDK's stdio client gives the server a minimal environment of its own: pass
    # on an import path the tests run with, so the server is the code under test.
    if "PYTHONPATH" in os.environ:
        target["env"] = {"PYTHONPATH": os.environ["PYTHONPATH"]}
    return target


# -- recording outcomes, writing docs/interop.md ------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    params = getattr(getattr(item, "callspec", None), "params", {})
    if not {"client", "route", "scenario"} <= set(params) or report.when == "teardown":
        return
    key = (params["client"], params["route"], params["scenario"])
    if report.when == "setup" and report.passed:
        return
    if hasattr(report, "wasxfail"):
        RECORD.outcomes[key] = "xfail" if report.skipped else "xpass"
    elif report.skipped:
        RECORD.outcomes[key] = "skip"
    else:
        RECORD.outcomes[key] = "pass" if report.passed else "fail"


def pytest_sessionfinish(session: pytest.Session) -> None:
    if RECORD.outcomes and RECORD.complete():
        RECORD.write(DOC)
