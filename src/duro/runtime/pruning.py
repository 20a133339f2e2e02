"""The history pruner: a runtime service that drops point-in-time-recovery history older than
the retention window, for every object under the data directory.

Each object is pruned in one synchronous step on the loop (so no activation can open or commit
in the middle of it); the loop is yielded between objects. An object whose database is open is
pruned through its live history, which reopens the rewritten file. A failure on one object is
counted in ``statistics()`` and logged, and the pass goes on to the next: one damaged history
must not stop retention for the others.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..errors import StorageError
from ..storage.database import wait_closed
from ..storage.history import prune
from ..storage.journal import HistoryOptions

if TYPE_CHECKING:
    from .catalog import Runtime

__all__ = ["HistoryPruner"]

log = logging.getLogger("duro.runtime")


class HistoryPruner:
    """Owned by the runtime (``add_service``): ``start()`` runs a pass now and then every
    ``interval`` seconds of the runtime's clock, in a task held by the runtime's supervisor
    (which logs and keeps a crash); ``close()`` stops and awaits it."""

    def __init__(self, runtime: "Runtime", options: HistoryOptions, *, interval: float = 3600.0) -> None:
        self.runtime = runtime
        self.options = options
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self.passes = 0
        self.pruned = 0
        self.failures = 0

    async def start(self) -> None:
        if self._task is None:
            self._task = self.runtime.tasks.spawn(self._run(), "duro-history-pruner")

    async def close(self) -> None:
        task, self._task = self._task, None
        await self.runtime.tasks.cancel(task)

    async def prune_all(self) -> int:
        """One pass over every history file; returns how many were rewritten or removed."""
        changed = 0
        for path in sorted(self.runtime.objects_dir.glob("*/*.history")):
            if not self.runtime.owns(path.stem):
                continue  # another worker's object: it prunes its own
            act = self.runtime.find(path.parent.name, path.stem)
            live = act.db.history if act is not None and act.db.is_open else None
            try:
                if live is None:
                    wait_closed(path.with_suffix(".sqlite"))  # an eviction may still be closing it
                if prune(path.with_suffix(".sqlite"), options=self.options, live=live):
                    changed += 1
            except (StorageError, OSError) as e:
                self.failures += 1
                log.error("pruning history %s failed: %s", path, e)
            await asyncio.sleep(0)
        self.passes += 1
        self.pruned += changed
        return changed

    async def _run(self) -> None:
        while True:
            await self.prune_all()
            await self.runtime.clock.sleep(self.interval)

    def statistics(self) -> dict[str, Any]:
        return {"passes": self.passes, "pruned": self.pruned, "failures": self.failures}
