"""Owned background tasks: stopping one the same way everywhere."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["stop_task"]


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
