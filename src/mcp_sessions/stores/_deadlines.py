"""One time limit for many operations, with one timer (issue #15: the Redis store's hot path).

``asyncio.timeout`` arms and cancels a timer per use, about 13 µs in Python 3.11: more than a
read from the Redis store's local copy, and a tenth of a compare-and-set. Every operation of
one store has the same limit (``op_timeout``), so their deadlines come in the order they
started: one timer, armed for the oldest operation still running, serves them all. An
operation costs an insertion and a removal in a dict; the timer wakes at most once per
``seconds`` while operations run, and cancels the tasks whose deadline has passed, which
:meth:`Deadlines.expired` then turns into ``TimeoutError`` as ``asyncio.timeout`` does.
"""

from __future__ import annotations

import asyncio


class Bound:
    """One operation under its deadline."""

    __slots__ = ("cancelling", "deadline", "expired", "settled", "task")

    def __init__(self, task: asyncio.Task[object], deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.cancelling = task.cancelling()
        self.expired = False
        self.settled = False


class Deadlines:
    """Operations of ``seconds`` each, bounded by one timer per event loop."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._running: dict[Bound, None] = {}  # in start order, so in deadline order
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> Bound | None:
        """Bound the current task; ``None`` outside a task (nothing to cancel)."""
        task = asyncio.current_task()
        if task is None:
            return None
        loop = task.get_loop()
        if loop is not self._loop:  # first use, or a new event loop: start afresh
            self._loop, self._running, self._timer = loop, {}, None
        bound = Bound(task, loop.time() + self.seconds)
        self._running[bound] = None
        if self._timer is None:
            self._timer = loop.call_at(bound.deadline, self._fire)
        return bound

    def end(self, bound: Bound | None) -> None:
        """The operation is over (in a ``finally``): its cancellation request, if its
        deadline made one, is withdrawn as ``asyncio.timeout`` withdraws its own."""
        if bound is None:
            return
        self._running.pop(bound, None)
        self.expired(bound)

    @staticmethod
    def expired(bound: Bound | None) -> bool:
        """Whether a ``CancelledError`` caught in ``bound``'s task is its deadline's doing
        (and no one else cancelled the task as well): raise ``TimeoutError`` then."""
        if bound is None or not bound.expired or bound.settled:
            return False
        bound.settled = True
        return bound.task.uncancel() <= bound.cancelling

    def _fire(self) -> None:
        self._timer = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        for bound in list(self._running):
            if bound.deadline > now:
                self._timer = loop.call_at(bound.deadline, self._fire)
                return
            del self._running[bound]
            bound.expired = True
            bound.task.cancel()
