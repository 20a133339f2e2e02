"""The time source. Everything in duro that reads the wall clock or sleeps for a deadline goes
through a :class:`Clock`, so tests can run timers and alarms on virtual time.

This module imports nothing of duro.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time

__all__ = ["Clock", "SystemClock", "VirtualClock", "now_ms"]


def now_ms() -> int:
    """Wall-clock time in whole epoch milliseconds."""
    return time.time_ns() // 1_000_000


class Clock:
    """Interface: ``now()`` in epoch seconds (float), ``now_ms()`` in epoch ms, ``sleep(seconds)``."""

    def now(self) -> float:
        raise NotImplementedError

    def now_ms(self) -> int:
        return int(self.now() * 1000)

    async def sleep(self, seconds: float) -> None:
        raise NotImplementedError


class SystemClock(Clock):
    def now(self) -> float:
        return time.time()

    def now_ms(self) -> int:
        return now_ms()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class VirtualClock(Clock):
    """Time that moves only when a test says so: ``advance(seconds)`` wakes every sleeper whose
    deadline has passed, in deadline order."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + max(0.0, seconds), next(self._seq), fut))
        await fut

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, letting woken tasks run after each wake-up."""
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, when)
            if not fut.done():
                fut.set_result(None)
            for _ in range(5):
                await asyncio.sleep(0)
        self._now = target
        for _ in range(5):
            await asyncio.sleep(0)
