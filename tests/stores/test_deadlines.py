"""One timer bounding many operations (stores/_deadlines.py, issue #15): an operation past its
deadline ends in TimeoutError and leaves its task usable; a cancellation from elsewhere stays
a cancellation; operations that end in time leave nothing behind."""

from __future__ import annotations

import asyncio

import pytest

from mcp_sessions.stores._deadlines import Deadlines

pytestmark = pytest.mark.anyio


async def bounded(deadlines: Deadlines, seconds: float) -> str:
    bound = deadlines.start()
    try:
        await asyncio.sleep(seconds)
        return "done"
    except asyncio.CancelledError:
        if deadlines.expired(bound):
            raise TimeoutError from None
        raise
    finally:
        deadlines.end(bound)


async def test_an_operation_past_its_deadline_times_out_and_its_task_goes_on() -> None:
    deadlines = Deadlines(0.05)
    with pytest.raises(TimeoutError):
        await bounded(deadlines, 30)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # no cancellation left pending for this task
    # Later operations of the same Deadlines still work, the quick ones end in time.
    assert await bounded(deadlines, 0) == "done"
    assert deadlines._running == {}


async def test_quick_and_slow_operations_side_by_side() -> None:
    deadlines = Deadlines(0.2)
    slow = asyncio.create_task(bounded(deadlines, 30))
    quick = [asyncio.create_task(bounded(deadlines, 0.01)) for _ in range(20)]
    assert [await q for q in quick] == ["done"] * 20
    with pytest.raises(TimeoutError):
        await slow


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    deadlines = Deadlines(30)
    task = asyncio.create_task(bounded(deadlines, 30))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert deadlines._running == {}
