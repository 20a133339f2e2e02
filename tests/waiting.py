"""Waiting for something to happen in a test: poll to a deadline, never sleep a fixed time.

The blocking twin is ``duro.testing.wait_for`` (for tests that drive a server from a thread); this
is the one for tests on the event loop, whose predicate may be a coroutine (an RPC call, say).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Callable

__all__ = ["wait_until"]


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.005,
                     what: str = "condition") -> Any:
    """Call ``predicate`` (awaiting what it returns when that is awaitable) until the value is
    truthy, and return it; raise ``TimeoutError`` naming ``what`` once ``timeout`` seconds of real
    time have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
