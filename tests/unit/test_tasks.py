"""The task supervisor: every long-lived background task has an owner, and a crash is logged with
its traceback when it happens, shown by ``statistics()`` and raised again by ``stop()``."""

import asyncio
import logging

import pytest

from duro.runtime.tasks import TaskSupervisor, stop_task


async def test_a_crash_is_logged_counted_and_raised_by_stop(caplog):
    sup = TaskSupervisor()

    async def boom():
        await asyncio.sleep(0)
        raise ValueError("the loop had a bug")

    with caplog.at_level(logging.ERROR, logger="duro.runtime"):
        task = sup.spawn(boom(), "duro-test-boom")
        await asyncio.wait([task], timeout=5)
        await asyncio.sleep(0)  # the done callback runs
    assert sup.statistics() == {"running": [], "crashed": ["duro-test-boom"]}
    [record] = [r for r in caplog.records if "duro-test-boom" in r.getMessage()]
    assert record.exc_info is not None and record.exc_info[0] is ValueError  # the traceback is logged
    with pytest.raises(ValueError, match="the loop had a bug"):
        await sup.stop()
    assert sup.statistics()["crashed"] == []  # raised once


async def test_stop_cancels_and_awaits_every_task():
    sup = TaskSupervisor()
    ended = []

    async def forever(n):
        try:
            await asyncio.Event().wait()
        finally:
            ended.append(n)

    for n in range(3):
        sup.spawn(forever(n), f"duro-test-{n}")
    await asyncio.sleep(0)
    assert sup.statistics()["running"] == ["duro-test-0", "duro-test-1", "duro-test-2"]
    await sup.stop()  # nothing crashed: no exception
    assert sorted(ended) == [0, 1, 2]
    assert sup.statistics() == {"running": [], "crashed": []}


async def test_cancel_one_keeps_its_crash_for_stop():
    sup = TaskSupervisor()

    async def crash_on_cancel():
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    task = sup.spawn(crash_on_cancel(), "duro-test-cleanup")
    await asyncio.sleep(0)
    await sup.cancel(task)  # does not raise here...
    assert task.done()
    with pytest.raises(RuntimeError, match="cleanup failed"):
        await sup.stop()  # ...but is not lost


async def test_several_crashes_are_raised_together():
    sup = TaskSupervisor()

    async def fail(e):
        raise e

    a = sup.spawn(fail(KeyError("a")), "duro-test-a")
    b = sup.spawn(fail(OSError("b")), "duro-test-b")
    await asyncio.wait([a, b], timeout=5)
    await asyncio.sleep(0)
    with pytest.raises(ExceptionGroup) as info:
        await sup.stop()
    assert sorted(type(e).__name__ for e in info.value.exceptions) == ["KeyError", "OSError"]


async def test_stop_task_does_not_swallow_the_callers_cancellation():
    inner_started = asyncio.Event()

    async def inner():
        inner_started.set()
        await asyncio.Event().wait()

    task = asyncio.get_running_loop().create_task(inner())
    await inner_started.wait()

    async def stopper():
        await stop_task(task)

    outer = asyncio.get_running_loop().create_task(stopper())
    await asyncio.sleep(0)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
