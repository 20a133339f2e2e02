"""Owned background tasks: one owner for every task that runs as long as the runtime, and one way
to stop a task.

A :class:`TaskSupervisor` holds the long-lived tasks of one runtime (the sweeper, the alarm
scheduler's loop, the history pruner). A task that ends with an exception is logged at once, with
its traceback, counted in ``statistics()``, and raised again by :meth:`TaskSupervisor.stop`: a
crash is never lost, and never waits for garbage collection to be noticed. Tasks are not
restarted: a loop that must survive its own failures catches them itself.

It must never swallow ``asyncio.CancelledError`` of the caller, and never hold a task that no one
will stop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Coroutine, Iterable

__all__ = ["TaskSupervisor", "drain_tasks", "log_failure", "stop_task"]

log = logging.getLogger("duro.runtime")


def log_failure(task: "asyncio.Task[Any]") -> None:
    """Done-callback for user background work (``wait_until``), which has no caller to raise to:
    its failure is logged with its traceback, once, instead of being lost."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("background task %s failed: %r", task.get_name(), exc, exc_info=exc)


async def drain_tasks(tasks: "Iterable[asyncio.Task[Any]]", timeout: float) -> None:
    """Give ``tasks`` up to ``timeout`` seconds to finish (a shutdown's grace period), then cancel
    the rest and wait for them: work that never ends must not keep the server from stopping."""
    running = [t for t in tasks if not t.done()]
    if not running:
        return
    _, pending = await asyncio.wait(running, timeout=timeout)
    for t in pending:
        t.cancel()
    await asyncio.gather(*running, return_exceptions=True)


async def stop_task(task: "asyncio.Task[Any] | None") -> None:
    """Cancel ``task`` and wait for it to finish. Its cancellation is absorbed; a cancellation of
    the caller itself is not (``asyncio.CancelledError`` is never swallowed)."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


class TaskSupervisor:
    """The owner of a runtime's background tasks: ``spawn(coro, name)``, ``cancel(task)`` for one,
    ``stop()`` for all. ``crashes`` lists ``(name, exception)`` of every task that failed."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.crashes: list[tuple[str, BaseException]] = []

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> "asyncio.Task[Any]":
        """Run ``coro`` as a task owned by this supervisor (on the running loop)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: "asyncio.Task[Any]") -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.crashes.append((task.get_name(), exc))
            log.error("background task %s crashed", task.get_name(), exc_info=exc)

    async def cancel(self, task: "asyncio.Task[Any] | None") -> None:
        """Stop one task and wait for it. A crash it ended with was logged and is kept for
        :meth:`stop`, which raises it."""
        if task is None:
            return
        try:
            await stop_task(task)
        except asyncio.CancelledError:
            raise
        except BaseException:  # noqa: B036 - recorded by _done, raised again by stop()
            pass

    async def stop(self) -> None:
        """Cancel every task still running, wait for all of them, then raise what crashed (one
        exception as it is, several as an exception group)."""
        for task in list(self._tasks):
            await self.cancel(task)
        crashes, self.crashes = self.crashes, []
        if len(crashes) == 1:
            raise crashes[0][1]
        if crashes:
            raise BaseExceptionGroup("background tasks crashed", [e for _, e in crashes])

    def statistics(self) -> dict[str, Any]:
        return {"running": sorted(t.get_name() for t in self._tasks),
                "crashed": [name for name, _ in self.crashes]}
