"""The cron trigger scheduler: sleeps until the next trigger time, starts ``scheduled()`` runs, and
keeps the last fired time of each trigger in ``DATA/crons.json``.

The rules (which times fire, which missed ones are skipped) are :class:`duro.core.cron.CronTimetable`;
this module is its asyncio shell. Its loop is a task of the runtime's :class:`TaskSupervisor`; each
run is a task it owns and waits for at close. A run's failure is logged, never raised into the
loop: one failing ``scheduled()`` does not stop the next. It never calls user code itself: the api
layer installs ``invoke(cron, scheduled_ms)``.

The last fired time is written before the run starts (a run is started at most once per time,
even if the process dies during it), by write-and-rename without fsync: it guards against firing
twice after a restart, which a crash of the process cannot undo, and the event loop never waits
for the disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pathlib
from typing import Any, Awaitable, Callable, Iterable, Protocol

from ..clock import Clock
from ..core.cron import CronExpression, CronTimetable, Fire
from ..storage.paths import file_mode
from .tasks import TaskSupervisor, drain_tasks

__all__ = ["CronHost", "CronScheduler", "STATE_FILE"]

log = logging.getLogger("duro.cron")

STATE_FILE = "crons.json"
CLOSE_GRACE_S = 5.0  # what running scheduled() calls get at shutdown, as wait_until work does
# Sleep at most this long at once, then look at the clock again: a wall clock that jumps (NTP, a
# suspended machine) is noticed within a minute.
MAX_SLEEP_S = 60.0

Invoke = Callable[[str, int], Awaitable[Any]]


class CronHost(Protocol):
    """What the scheduler needs of the runtime: its clock, its task owner, its data directory."""

    @property
    def clock(self) -> Clock: ...
    @property
    def tasks(self) -> TaskSupervisor: ...
    @property
    def data_dir(self) -> pathlib.Path: ...


class CronScheduler:
    """Fires a project's cron triggers. A runtime service: ``start()`` / ``close()``."""

    def __init__(self, host: CronHost, expressions: Iterable[CronExpression], invoke: Invoke) -> None:
        self.host = host
        self.timetable = CronTimetable(expressions)
        self.invoke = invoke
        self.path = host.data_dir / STATE_FILE
        self._loop_task: asyncio.Task[None] | None = None
        self._runs: set[asyncio.Task[None]] = set()
        self.fired = 0
        self.failed = 0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.timetable.start(self.host.clock.now_ms(), self._load())
        self._loop_task = self.host.tasks.spawn(self._run(), "duro-cron")

    async def close(self) -> None:
        await self.host.tasks.cancel(self._loop_task)
        self._loop_task = None
        await drain_tasks(self._runs, CLOSE_GRACE_S)

    async def wait_idle(self) -> None:
        """Wait until every run started so far has finished (tests, after moving a virtual clock)."""
        while True:
            runs = [t for t in self._runs if not t.done()]
            if not runs:
                return
            await asyncio.gather(*runs, return_exceptions=True)

    def statistics(self) -> dict[str, Any]:
        return {**self.timetable.statistics(), "fired": self.fired, "failed": self.failed,
                "running": sum(1 for t in self._runs if not t.done())}

    # ------------------------------------------------------------------ the loop
    async def _run(self) -> None:
        clock = self.host.clock
        while True:
            wake = self.timetable.next_wake()
            if wake is None:
                log.warning("no cron trigger will ever fire again; the cron scheduler stops")
                return
            delay = (wake - clock.now_ms()) / 1000
            if delay > 0:
                await clock.sleep(min(delay, MAX_SLEEP_S))
                continue
            due = self.timetable.take_due(clock.now_ms())
            if due:
                self._save()
            for fire in due:
                self._start_run(fire)

    def _start_run(self, fire: Fire) -> None:
        task = asyncio.get_running_loop().create_task(self._one(fire), name=f"duro-cron {fire.cron!r}")
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)

    async def _one(self, fire: Fire) -> None:
        self.fired += 1
        try:
            await self.invoke(fire.cron, fire.scheduled_ms)
        except asyncio.CancelledError:
            raise
        except Exception:  # a failed run is reported here, its only observer; the next still runs
            self.failed += 1
            log.exception("scheduled() for cron %r (scheduled at %d) failed", fire.cron, fire.scheduled_ms)

    # ------------------------------------------------------------------ the state file
    def _load(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text())
            fired = data["last_fired"]
            return {str(k): int(v) for k, v in fired.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("ignoring %s (%s): a trigger due in the current minute may fire again", self.path, e)
            return {}

    def _save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, file_mode())
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps({"version": 1, "last_fired": self.timetable.last_fired}))
            os.replace(tmp, self.path)
        except OSError as e:
            log.error("cannot record the fired cron times in %s: %s; a restart within this minute may "
                      "fire them again", self.path, e)
