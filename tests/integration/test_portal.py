"""The greenlet portal behind ``pyodide.ffi.run_sync`` (``runtime/portal.py``), on a real loop:
values, exceptions, cancellation and context variables cross it as they cross an ``await``."""

import asyncio
import contextvars
import gc
import weakref

import pytest

from duro.runtime import portal

var = contextvars.ContextVar("var", default="unset")


async def add_later(x):
    await asyncio.sleep(0)
    return x + 1


def sync_code(x):
    return portal.wait(add_later(x))


async def test_values_and_context_cross_the_portal():
    async def handler():
        var.set("handler")
        first = sync_code(1)
        assert var.get() == "handler"
        await asyncio.sleep(0)
        return [first, sync_code(first), portal.active()]
    assert await portal.run(handler()) == [2, 3, True]
    assert var.get() == "handler"  # the handler ran in this task's context
    assert not portal.active()


async def test_a_sync_function_in_a_portal_and_nested_waits():
    async def inner_uses_sync_code():
        await asyncio.sleep(0)
        return sync_code(10)  # a coroutine being waited for calls sync code that waits again
    assert await portal.call(lambda: portal.wait(inner_uses_sync_code())) == 11


async def test_exceptions_propagate_with_their_type():
    async def fails():
        await asyncio.sleep(0)
        raise KeyError("k")

    async def handler():
        with pytest.raises(KeyError):
            portal.wait(fails())
        portal.wait(fails())
    with pytest.raises(KeyError):
        await portal.run(handler())


async def test_cancellation_reaches_the_waiting_code():
    seen = []

    async def handler():
        try:
            portal.wait(asyncio.sleep(60))
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
    task = asyncio.ensure_future(portal.run(handler()))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]


async def test_no_portal_is_a_clear_error_and_the_coroutine_is_closed():
    coro = add_later(1)
    with pytest.raises(portal.NoPortalError, match="can only wait inside a handler duro runs"):
        portal.wait(coro)
    assert coro.cr_frame is None  # closed: no "never awaited" warning follows

    async def handler():
        async def spawned():
            return sync_code(1)
        return await asyncio.ensure_future(spawned())  # a task of its own has no portal
    with pytest.raises(portal.NoPortalError):
        await portal.run(handler())


async def test_an_idle_portal_keeps_nothing_of_its_last_job():
    class Payload:
        pass

    async def handler(payload):
        await asyncio.sleep(0)
        raise ValueError(payload)

    payload = Payload()
    ref = weakref.ref(payload)
    with pytest.raises(ValueError):
        await portal.run(handler(payload))
    del payload
    gc.collect()
    assert ref() is None  # the pooled greenlet does not hold the failed job's error
