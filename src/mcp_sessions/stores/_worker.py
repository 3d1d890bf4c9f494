"""One long-lived thread that runs blocking calls in submission order, for the event loop.

It owns the blocking side of a store (the SQLite store's writer connection runs only here):
jobs go in through a queue, results come back to the loop through ``call_soon_threadsafe``.
A round trip costs ~40-100 µs, where ``anyio.to_thread`` costs ~180 µs, because the thread
is started once and never handed back to a pool (issue #3). Jobs run one at a time, so
whatever a job touches needs no lock against the other jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread

T = TypeVar("T")


class Worker:
    """One thread that runs jobs in the order submitted.

    Started on first use and stopped by :meth:`stop`; a daemon, so an owner that is never
    closed does not keep the interpreter alive (a store's acknowledged writes are already on
    disk by then).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job`` and return at once; nobody waits for it."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                self._thread.start()
        self._jobs.put(job)

    def stop(self) -> None:
        """End the thread once the jobs queued so far have run."""
        self._jobs.put(None)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the worker thread, awaited without blocking the event loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # another anyio backend (trio): wait in a helper thread
            return await anyio.to_thread.run_sync(self._run_blocking, fn)
        future: asyncio.Future[T] = loop.create_future()

        def job() -> None:
            try:
                outcome: tuple[bool, Any] = (True, fn())
            except BaseException as exc:
                outcome = (False, exc)
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
                loop.call_soon_threadsafe(_settle, future, outcome)

        self.submit(job)
        return await future

    def _run_blocking(self, fn: Callable[[], T]) -> T:
        done = threading.Event()
        box: list[tuple[bool, Any]] = []

        def job() -> None:
            try:
                box.append((True, fn()))
            except BaseException as exc:
                box.append((False, exc))
            done.set()

        self.submit(job)
        done.wait()
        ok, value = box[0]
        if ok:
            return value  # type: ignore[no-any-return]
        raise value


def _settle(future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if future.done():  # the caller was cancelled; the job ran or failed regardless
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
