"""Store benchmarks (issue #3): our operations beside the raw driver, and SQLite at scale.

    .venv/bin/python bench/bench_stores.py            # full run, about two minutes
    .venv/bin/python bench/bench_stores.py --quick    # smaller counts, no 1,000,000 fill

For each backend it prints operations per second of ``get``, ``create`` and a
compare-and-set update, each beside a raw-driver baseline measured in the same run, and the
cost ratio (our time per operation / the raw one):

- SQLite: a primary-key SELECT, a plain INSERT and a primary-key UPDATE on the same table with
  plain ``sqlite3`` and the same pragmas as the store's default (WAL, synchronous=NORMAL:
  every commit is in the WAL, no fsync);
- Redis: GET / SET with plain redis-py (asyncio) on the same ``redis-server``, which this
  script starts on a free 127.0.0.1 port and stops by its PID;
- memory: no driver, so no baseline.

Then SQLite at scale: a ``get`` with 1,000,000 records stored against one with 1,000 stored,
and a sweep of 1,000 expired records in each. Every figure is the median of several rounds;
operations run one after another in one task (latency, not concurrency), ours and the raw
driver's alternating one by one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import redis
import redis.asyncio as aioredis

# The tests' process helpers (redis-server launcher, free ports): one copy for tests and bench/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.fixtures.redis_server import start_redis_server, stop_process

from mcp_sessions.core.records import Record
from mcp_sessions.stores import Store, open_store
from mcp_sessions.stores.sqlite import INSERT, record_row

PRINCIPAL = "bench:principal"
STATE = {"cart": ["apple", "pear", "plum"], "step": 3, "note": "n" * 40}
STATE_TEXT = json.dumps(STATE, separators=(",", ":"))
COLUMNS = (
    "kind, id, principal, origin, created_at, last_seen, idle_ttl, max_expires_at, "
    "version, state, attributes"
)
RAW_GET = f"SELECT {COLUMNS} FROM mcps_records WHERE kind = ? AND id = ? AND principal = ?"
RAW_INSERT = (
    f"INSERT INTO mcps_records ({COLUMNS}, expires_at) VALUES (:kind, :id, :principal, :origin, "
    ":created_at, :last_seen, :idle_ttl, :max_expires_at, :version, :state, :attributes, "
    ":expires_at)"
)
FIND_EXPIRED = "SELECT rowid FROM mcps_records WHERE expires_at <= ? ORDER BY expires_at LIMIT 1000"
RAW_UPDATE = (
    "UPDATE mcps_records SET state = ?, version = version + 1 "
    "WHERE kind = ? AND id = ? AND principal = ?"
)


@dataclass
class Row:
    backend: str
    op: str
    ours: float  # seconds per operation
    raw: float | None
    ratio: float | None  # median over rounds of ours / raw

    def cells(self) -> list[str]:
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}x"
        raw = "n/a" if self.raw is None else f"{1 / self.raw:,.0f}"
        return [self.backend, self.op, f"{1 / self.ours:,.0f}", raw, ratio]


def new_id() -> str:
    return f"s-{secrets.token_hex(16)}"


def record(id: str, now: float, *, idle_ttl: float = 3600.0) -> Record:
    return Record.new(
        kind="session",
        id=id,
        principal=PRINCIPAL,
        origin="bench",
        now=now,
        idle_ttl=idle_ttl,
        state=STATE,
    )


async def per_op(fn: Callable[[int], Awaitable[Any]], n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        await fn(i)
    return (time.perf_counter() - start) / n


async def paired(
    ours: Callable[[int], Awaitable[Any]],
    raw: Callable[[int], Any] | None,
    n: int,
    rounds: int,
    *,
    raw_async: bool = False,
) -> tuple[float, float | None, float | None]:
    """Seconds per operation, ours and raw, and the cost ratio: medians over ``rounds``.

    Within a round our operations and the raw ones alternate one by one, so a burst of
    background load (this machine is shared) falls on both sides alike.
    """
    if raw is None:
        return statistics.median([await per_op(ours, n) for _ in range(rounds)]), None, None
    mine: list[float] = []
    theirs: list[float] = []
    for _ in range(rounds):
        ours_total = raw_total = 0.0
        for i in range(n):
            start = time.perf_counter()
            await ours(i)
            middle = time.perf_counter()
            if raw_async:
                await raw(i)
            else:
                raw(i)
            raw_total += time.perf_counter() - middle
            ours_total += middle - start
        mine.append(ours_total / n)
        theirs.append(raw_total / n)
    ratio = statistics.median(m / t for m, t in zip(mine, theirs, strict=True))
    return statistics.median(mine), statistics.median(theirs), ratio


# -- throughput against the raw driver --------------------------------------------------------


async def bench_sqlite(directory: Path, scale: float) -> list[Row]:
    path = directory / "throughput.sqlite3"
    now = time.time()
    async with open_store(f"sqlite:///{path}") as store:
        keys = [new_id() for _ in range(1000)]
        for key in keys:
            await store.create(record(key, now))
        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute("PRAGMA synchronous = NORMAL")  # as the store's default: WAL, no fsync
        raw.execute("PRAGMA cache_size = -16384")
        raw.execute("PRAGMA mmap_size = 268435456")
        try:
            rows = await _sqlite_pairs(store, raw, keys, now, scale)
        finally:
            raw.close()
    return rows


async def _sqlite_pairs(
    store: Store, raw: sqlite3.Connection, keys: list[str], now: float, scale: float
) -> list[Row]:
    n_read = int(20_000 * scale)
    n_write = int(2_000 * scale)  # no fsync (NORMAL): tens of µs a write
    rows: list[Row] = []

    async def get(i: int) -> None:
        await store.get("session", keys[i % 1000], PRINCIPAL)

    def raw_get(i: int) -> None:
        raw.execute(RAW_GET, ("session", keys[i % 1000], PRINCIPAL)).fetchall()

    rows.append(Row("sqlite", "get", *await paired(get, raw_get, n_read, 5)))

    async def create(i: int) -> None:
        await store.create(record(new_id(), now))

    def raw_create(i: int) -> None:
        raw.execute(RAW_INSERT, record_row(record(new_id(), now)))

    rows.append(Row("sqlite", "create", *await paired(create, raw_create, n_write, 9)))

    ours_keys, raw_keys = keys[:500], keys[500:]
    versions = dict.fromkeys(ours_keys, 1)

    async def cas(i: int) -> None:
        key = ours_keys[i % 500]
        updated = await store.compare_and_set("session", key, PRINCIPAL, versions[key], STATE)
        versions[key] = updated.version

    def raw_update(i: int) -> None:
        raw.execute(RAW_UPDATE, (STATE_TEXT, "session", raw_keys[i % 500], PRINCIPAL))

    rows.append(Row("sqlite", "compare_and_set", *await paired(cas, raw_update, n_write, 9)))
    return rows


async def bench_redis(url: str, host: str, port: int, scale: float) -> list[Row]:
    n = int(5_000 * scale)
    now = time.time()
    rows: list[Row] = []
    raw = aioredis.Redis(host=host, port=port, decode_responses=True)
    try:
        async with open_store(url) as store:
            keys = [new_id() for _ in range(1000)]
            for key in keys:
                await store.create(record(key, now))
            blob = json.dumps({"k": "session", "s": STATE_TEXT, "pad": "p" * 150})
            for key in keys:
                await raw.set(f"raw:{key}", blob)

            async def get(i: int) -> None:
                await store.get("session", keys[i % 1000], PRINCIPAL)

            async def raw_get(i: int) -> None:
                await raw.get(f"raw:{keys[i % 1000]}")

            rows.append(Row("redis", "get", *await paired(get, raw_get, n, 5, raw_async=True)))

            async def create(i: int) -> None:
                await store.create(record(new_id(), now))

            async def raw_set_new(i: int) -> None:
                await raw.set(f"raw:{new_id()}", blob)

            rows.append(
                Row("redis", "create", *await paired(create, raw_set_new, n, 5, raw_async=True))
            )

            versions = dict.fromkeys(keys, 1)

            async def cas(i: int) -> None:
                key = keys[i % 1000]
                updated = await store.compare_and_set(
                    "session", key, PRINCIPAL, versions[key], STATE
                )
                versions[key] = updated.version

            async def raw_set(i: int) -> None:
                await raw.set(f"raw:{keys[i % 1000]}", blob)

            rows.append(
                Row("redis", "compare_and_set", *await paired(cas, raw_set, n, 5, raw_async=True))
            )
    finally:
        await raw.aclose()
    return rows


async def bench_memory(scale: float) -> list[Row]:
    n = int(50_000 * scale)
    now = time.time()
    rows: list[Row] = []
    async with open_store("memory://") as store:
        keys = [new_id() for _ in range(1000)]
        for key in keys:
            await store.create(record(key, now))

        async def get(i: int) -> None:
            await store.get("session", keys[i % 1000], PRINCIPAL)

        async def create(i: int) -> None:
            await store.create(record(new_id(), now))

        versions = dict.fromkeys(keys, 1)

        async def cas(i: int) -> None:
            key = keys[i % 1000]
            updated = await store.compare_and_set("session", key, PRINCIPAL, versions[key], STATE)
            versions[key] = updated.version

        for op, fn in (("get", get), ("create", create), ("compare_and_set", cas)):
            rows.append(Row("memory", op, *await paired(fn, None, n, 5)))
    return rows


# -- SQLite at scale ---------------------------------------------------------------------------


def fill(path: Path, ids: list[str], now: float) -> None:
    """Bulk-load live records with one executemany in one transaction (setup, not measured)."""
    anyio.run(_create_schema, path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -524288")
        conn.execute("BEGIN")
        conn.executemany(INSERT, (record_row(record(id, now)) for id in ids))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


async def _create_schema(path: Path) -> None:
    async with open_store(f"sqlite:///{path}"):
        pass


async def scale_case(
    path: Path, ids: list[str], n_gets: int, rounds: int
) -> tuple[float, float, float]:
    """Median seconds per random ``get``, per sweep of 1,000 expired records, and per walk of
    the expiry index that finds those 1,000 (the part of the sweep that depends on the index).
    """
    now = time.time()
    rng = random.Random(7)
    # sweep_interval=0: no background sweep may take the expired records before we time ours
    async with open_store(f"sqlite:///{path}", sweep_interval=0) as store:
        sample = [rng.choice(ids) for _ in range(n_gets)]
        for id in sample[:2000]:  # warm the connection and the first pages
            await store.get("session", id, PRINCIPAL)
        gets: list[float] = []
        for _ in range(rounds):

            async def get(i: int) -> None:
                assert await store.get("session", sample[i], PRINCIPAL) is not None

            gets.append(await per_op(get, n_gets))
        sweeps: list[float] = []
        finds: list[float] = []
        raw = sqlite3.connect(path, isolation_level=None)
        try:
            for _ in range(rounds):
                for _ in range(1000):  # expired an hour ago, ids as random as real ones
                    await store.create(record(new_id(), now - 3600, idle_ttl=60))
                # The sweep's own index walk, alone: which rows are expired.
                start = time.perf_counter()
                found = raw.execute(FIND_EXPIRED, (now,)).fetchall()
                finds.append(time.perf_counter() - start)
                assert len(found) == 1000, len(found)
                start = time.perf_counter()
                removed = await store.sweep(now=now, limit=1000)
                sweeps.append(time.perf_counter() - start)
                assert removed == 1000, removed
        finally:
            raw.close()
    return statistics.median(gets), statistics.median(sweeps), statistics.median(finds)


async def bench_scale(directory: Path, big: int, n_gets: int) -> list[list[str]]:
    now = time.time()
    small_ids = [new_id() for _ in range(1000)]
    big_ids = [new_id() for _ in range(big)]
    started = time.perf_counter()
    await anyio.to_thread.run_sync(fill, directory / "small.sqlite3", small_ids, now)
    await anyio.to_thread.run_sync(fill, directory / "big.sqlite3", big_ids, now)
    filled = time.perf_counter() - started
    size = (directory / "big.sqlite3").stat().st_size
    print(f"  filled {big:,} records in {filled:.1f}s ({size / 1e6:.0f} MB)", file=sys.stderr)
    small_get, small_sweep, small_find = await scale_case(
        directory / "small.sqlite3", small_ids, n_gets, 5
    )
    big_get, big_sweep, big_find = await scale_case(directory / "big.sqlite3", big_ids, n_gets, 5)
    return [
        _scale_row("get (µs)", small_get * 1e6, big_get * 1e6, "≤ 1.5x"),
        _scale_row("sweep of 1,000 expired (ms)", small_sweep * 1e3, big_sweep * 1e3, "≤ 2x"),
        _scale_row("finding the 1,000 expired (ms)", small_find * 1e3, big_find * 1e3, ""),
    ]


def _scale_row(what: str, small: float, big: float, target: str) -> list[str]:
    return [what, f"{small:.1f}", f"{big:.1f}", f"{big / small:.2f}x", target]


# -- report ------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> Iterator[str]:
    yield "| " + " | ".join(header) + " |"
    yield "|" + "|".join("---" for _ in header) + "|"
    for row in rows:
        yield "| " + " | ".join(row) + " |"


async def main(quick: bool, only: set[str]) -> None:
    scale = 0.2 if quick else 1.0
    big = 20_000 if quick else 1_000_000
    directory = Path(tempfile.mkdtemp(prefix="mcps-bench-"))
    rows: list[Row] = []
    scaled: list[list[str]] = []
    try:
        server, port = start_redis_server(directory)
    except FileNotFoundError as missing:
        raise SystemExit(str(missing)) from None
    try:
        if "sqlite" in only:
            print("  sqlite...", file=sys.stderr)
            rows += await bench_sqlite(directory, scale)
        if "redis" in only:
            print("  redis...", file=sys.stderr)
            rows += await bench_redis(f"redis://127.0.0.1:{port}/0", "127.0.0.1", port, scale)
        if "memory" in only:
            print("  memory...", file=sys.stderr)
            rows += await bench_memory(scale)
        if "scale" in only:
            print(f"  sqlite with 1,000 and {big:,} stored...", file=sys.stderr)
            scaled = await bench_scale(directory, big, int(20_000 * scale))
    finally:
        stop_process(server)
        shutil.rmtree(directory, ignore_errors=True)

    print(f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, ", end="")
    print(f"redis-py {redis.__version__}, {os.cpu_count()} CPUs\n")
    if rows:
        header = ["backend", "operation", "ours (ops/s)", "raw driver (ops/s)", "cost ratio"]
        for line in table(header, [row.cells() for row in rows]):
            print(line)
        print()
    if scaled:
        header = ["SQLite", "1,000 stored", f"{big:,} stored", "ratio", "target"]
        for line in table(header, scaled):
            print(line)


SECTIONS = ("sqlite", "redis", "memory", "scale")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, no 1M fill")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run, of {', '.join(SECTIONS)} (default: all)",
    )
    arguments = parser.parse_args()
    chosen = set(arguments.only.split(","))
    if not chosen <= set(SECTIONS):
        parser.error(f"--only takes {', '.join(SECTIONS)}")
    anyio.run(main, arguments.quick, chosen)
