"""A second OS process for the store suite (run as a script, never collected by pytest).

_store_worker.py increment URL ID COUNT   read-modify-write COUNT times, after "go" on stdin
_store_worker.py acked-writes URL         create and update until killed, "acked N" each time
"""

from __future__ import annotations

import sys

import anyio

from mcp_sessions.core.records import Record
from mcp_sessions.stores import VersionConflict, open_store

PRINCIPAL = "principal:worker"
COUNTER = "s-counter-0000000000"


async def increment(url: str, id: str, count: int) -> None:
    async with open_store(url) as store:
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)  # both workers start together
        conflicts = 0
        for _ in range(count):
            record = await store.get("session", id, PRINCIPAL)
            assert record is not None, "the counter record disappeared"
            while True:
                try:
                    await store.compare_and_set(
                        "session", id, PRINCIPAL, record.version, {"n": record.state["n"] + 1}
                    )
                    break
                except VersionConflict as conflict:
                    assert conflict.current is not None
                    record = conflict.current
                    conflicts += 1
        print(f"done conflicts={conflicts}", flush=True)


async def acked_writes(url: str) -> None:
    """Each "acked N" is printed only after the store acknowledged both writes of step N."""
    async with open_store(url) as store:
        counter = Record.new(
            kind="session", id=COUNTER, principal=PRINCIPAL, origin="t", now=_now(), idle_ttl=3600
        )
        await store.create(counter)
        n = 0
        while True:
            record = Record.new(
                kind="session",
                id=f"s-durable-{n:010d}",
                principal=PRINCIPAL,
                origin="t",
                now=_now(),
                idle_ttl=3600,
                state={"n": n},
            )
            await store.create(record)
            counter = await store.compare_and_set(
                "session", COUNTER, PRINCIPAL, counter.version, {"n": n}
            )
            print(f"acked {n}", flush=True)
            n += 1


def _now() -> float:
    import time

    return time.time()


def main(argv: list[str]) -> None:
    if argv[0] == "increment":
        anyio.run(increment, argv[1], argv[2], int(argv[3]))
    elif argv[0] == "acked-writes":
        anyio.run(acked_writes, argv[1])
    else:
        raise SystemExit(f"unknown command {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
