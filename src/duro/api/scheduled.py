"""The ``scheduled`` event: Cloudflare's ``ScheduledController`` and the call of the entrypoint's
``scheduled(controller, env, ctx)`` handler.

One run is the handler plus every ``ctx.wait_until`` it started: it ends when all of them have
(the first failure among them is the run's failure, as Cloudflare records it). It never catches
the failure itself: the cron scheduler logs it, the dev endpoint answers it.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from typing import Any

from .namespace import fit_args
from .objects import ExecutionContext

__all__ = ["ScheduledController", "find_scheduled_handler", "run_scheduled"]

_NAMES = ("scheduled", "on_scheduled")  # the handler, and the legacy Python Workers spelling


class ScheduledController:
    """What ``scheduled(controller, env, ctx)`` receives: ``cron`` (the expression exactly as
    configured), ``scheduled_time`` (epoch milliseconds, a whole minute for a trigger), ``type``
    (always ``"scheduled"``) and ``no_retry()``. camelCase spellings are aliases."""

    __slots__ = ("cron", "scheduled_time", "retry")

    type = "scheduled"

    def __init__(self, cron: str, scheduled_time: int) -> None:
        self.cron = cron
        self.scheduled_time = scheduled_time
        self.retry = True  # duro never retries a failed run; kept for code that checks it

    def no_retry(self) -> None:
        """Accepted for compatibility: duro does not retry a failed run in any case."""
        self.retry = False

    noRetry = no_retry  # noqa: N815

    @property
    def scheduledTime(self) -> int:  # noqa: N802 - Cloudflare spelling
        return self.scheduled_time

    def __repr__(self) -> str:
        return f"ScheduledController(cron={self.cron!r}, scheduled_time={self.scheduled_time})"


def find_scheduled_handler(entrypoint: Any) -> Any:
    """The ``scheduled`` handler: a method of the WorkerEntrypoint class, or, for a module-level
    ``on_fetch`` project, a module-level ``scheduled`` / ``on_scheduled`` function. None if absent."""
    if entrypoint is None:
        return None
    if isinstance(entrypoint, type):
        return next((getattr(entrypoint, n) for n in _NAMES if callable(getattr(entrypoint, n, None))), None)
    module = sys.modules.get(getattr(entrypoint, "__module__", ""), None)
    for n in _NAMES:
        fn = getattr(module, n, None)
        if inspect.isfunction(fn):
            return fn
    return None




class _RunContext(ExecutionContext):
    """``ctx`` of one scheduled run: it keeps every ``wait_until`` task, to wait for them and to
    learn how they ended."""

    def __init__(self) -> None:
        super().__init__(set())
        self.started: list[asyncio.Task[Any]] = []

    def wait_until(self, awaitable: Any) -> None:
        self.started.append(asyncio.ensure_future(_await(awaitable)))

    waitUntil = wait_until  # noqa: N815


async def _await(aw: Any) -> Any:
    return await aw


async def run_scheduled(entrypoint: Any, env: Any, cron: str, scheduled_time: int) -> None:
    """Run ``scheduled(controller, env, ctx)`` and the ``wait_until`` work it starts; raises the
    handler's exception, else the first failure among its ``wait_until`` tasks."""
    handler = find_scheduled_handler(entrypoint)
    if handler is None:
        raise TypeError("the project's entrypoint has no scheduled() handler; add "
                        "`async def scheduled(self, controller, env, ctx)` to its WorkerEntrypoint class")
    ctx = _RunContext()
    controller = ScheduledController(cron, scheduled_time)
    fn = getattr(entrypoint(ctx, env), handler.__name__) if isinstance(entrypoint, type) else handler
    try:
        try:
            result = fn(*fit_args(fn, (controller, env, ctx)))
            if inspect.isawaitable(result):
                await result
        finally:
            # Work handed to ctx.wait_until belongs to this run, even when the handler failed.
            while pending := [t for t in ctx.started if not t.done()]:
                await asyncio.wait(pending)
            failures = [e for t in ctx.started if not t.cancelled() and (e := t.exception()) is not None]
    except asyncio.CancelledError:
        for t in ctx.started:
            t.cancel()
        await asyncio.gather(*ctx.started, return_exceptions=True)
        raise
    if failures:
        raise failures[0]
