"""The alarm scheduler: the delivery of due alarms, for every object of one runtime.

It owns one loop task (held by the runtime's task supervisor) that starts an attempt for every
due alarm, the attempt tasks, the handlers' time limit, the retry decisions and the reporting and
statistics of deliveries. The bookkeeping that says *when* an object must be looked at (the node's
alarm index and its in-memory table, and why no alarm is lost) is :mod:`duro.runtime.alarm_book`;
this module reads the table and tells the book of the changes an attempt makes. What it needs
from the catalog is :class:`AlarmHost`, and nothing more.

It must never call user code except through ``invoke`` (installed by the api layer), never delete
an object's alarm row except after its handler succeeded (or its retries are used up), and never
let a failing handler stop other alarms.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import random
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol, runtime_checkable

from ..clock import Clock, SystemClock
from ..core.alarms import AlarmInvocationInfo, AlarmState, AttemptOutcome, AttemptResult, Decision, RetryPolicy
from ..core.limits import ALARM_HANDLER_TIMEOUT_S
from ..errors import (
    InternalError, InvalidIdError, ObjectResetError, OverloadedError, SqlError, StorageError, UnknownNamespaceError,
)
from ..ids import NamespaceKey
from .alarm_book import AlarmBook, Key, alarm_key

if TYPE_CHECKING:
    from ..ids import DurableObjectId
    from .activation import Activation
    from .tasks import TaskSupervisor

__all__ = ["AlarmHost", "AlarmScheduler"]

log = logging.getLogger("duro.alarms")

Invoke = Callable[[Any, AlarmInvocationInfo], Awaitable[bool]]


@runtime_checkable
class AlarmHost(Protocol):
    """What the alarm scheduler needs from the catalog that hosts it (the runtime)."""

    @property
    def clock(self) -> Clock:
        """The time source alarms are due on."""

    @property
    def tasks(self) -> "TaskSupervisor":
        """The owner of the scheduler's loop task."""

    @property
    def objects_dir(self) -> pathlib.Path:
        """The directory of every object's database (scanned by ``rebuild_index``)."""

    @property
    def max_open_databases(self) -> int:
        """The bound on open databases, known once the host has started."""

    def serves(self, unique_key: str) -> bool:
        """Whether a class is registered for the namespace."""

    def owns(self, hex_id: str) -> bool:
        """Whether this process serves the object (a worker of several serves its own share; the
        alarm index is shared, and each worker fires only its own objects' alarms)."""

    def find(self, unique_key: str, hex_id: str) -> "Activation | None":
        """The live activation of an object, if any."""

    def activation(self, unique_key: str, object_id: "DurableObjectId") -> "Activation":
        """Get or create the one activation of an object (``UnknownNamespaceError`` if no class
        is registered for its namespace)."""

    def make_durable(self, path: str, *, sync_dir: bool) -> "asyncio.Future[None] | None":
        """A future that resolves when ``path``'s writes so far are durable (None: nothing to wait)."""

    def namespace_key(self, unique_key: str) -> "NamespaceKey":
        """What mints and checks the namespace's IDs (a migrated namespace keeps its old key)."""


class AlarmScheduler:
    """Fires alarms for every object of one runtime. ``start()`` / ``close()`` with the runtime.

    ``invoke(instance, info)`` calls the object's ``alarm()`` handler and returns False if it has
    none; the api layer installs it. ``rand`` is the jitter source (tests set it). ``book`` is the
    index bookkeeping; ``table`` its in-memory table."""

    def __init__(self, host: AlarmHost, path: pathlib.Path, *, policy: RetryPolicy | None = None,
                 rand: Callable[[], float] | None = None, max_concurrent: int | None = None,
                 shutdown_grace: float = 10.0) -> None:
        self.host = host
        self.book = AlarmBook(host, path, self._wake, policy=policy)
        self.table = self.book.table
        self.path = path
        self.rand = rand or random.random
        # Each running attempt holds its object's database open (five file descriptors, and the
        # activation cannot be evicted until the attempt's writes are durable): stay inside the
        # catalog's bound on open databases (known once the runtime has started), leaving a quarter
        # for the objects that serve requests. Not much less: an attempt stays running until its
        # commit is fsync'd, so in a burst a low bound makes the next alarms wait for fsyncs
        # (measured: at 10,000 alarms/s, 1,500 instead of 2,250 doubled the p99).
        self._max_concurrent = max_concurrent
        self.max_concurrent = 0  # set by start()
        self.shutdown_grace = shutdown_grace
        self.invoke: Invoke | None = None
        # Called (inside the object's event, or directly with no instance) right after a spent
        # alarm row was deleted: the api layer sets the row again for the object's schedules.
        self.on_drop: Callable[["Activation"], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._sleep_until: int | None = None
        self._attempts: set[asyncio.Task[None]] = set()
        self._running: dict[Key, tuple[int, int]] = {}  # handler running: (row, gen at start)
        self._blocked = False  # the loop waits for a running attempt to end (max_concurrent)
        self._deadlines: dict[asyncio.Task[Any], float] = {}  # running handlers' time limits
        self._expired: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.TimerHandle | None = None
        self.fired = self.succeeded = self.failed = self.dropped = self.skipped = self.crashed = 0

    # ------------------------------------------------------------------ the storage API
    def get_alarm(self, act: "Activation") -> int | None:
        """The object's alarm, or None; None also while its handler runs, unless it set a new one."""
        row = act.db.get_alarm()
        if row is not None:
            key = alarm_key(act)
            if self._running.get(key) == (row, self.table.gen(key)):
                return None
        return row

    def set_alarm(self, act: "Activation", when_ms: int) -> None:
        """Write the alarm into the object's open transaction; times in the past become now."""
        self.book.set_alarm(act, when_ms)

    def delete_alarm(self, act: "Activation") -> None:
        self.book.delete_alarm(act)

    def note_delete_all(self, act: "Activation") -> None:
        """``delete_all()`` removed the alarm along with everything else."""
        self.book.note_delete_all(act)

    def note_outside_alarm(self, unique_key: str, hex_id: str, name: str | None, when_ms: int) -> None:
        """An object's files were changed outside the runtime (restore, import, ``sql --write``) and
        now hold an alarm at ``when_ms``: make sure the index looks at the object by then."""
        self.book.note_outside_alarm(unique_key, hex_id, name, when_ms)

    def rebuild_index(self) -> int:
        """Recreate the index from every object's own alarm row (opens every database: slow). For a
        data directory whose ``alarms.sqlite`` was lost. Returns how many alarms were found."""
        return self.book.rebuild_index()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.max_concurrent = self._max_concurrent or max(16, self.host.max_open_databases * 3 // 4)
        self._wakeup = asyncio.Event()
        self.book.open()
        if self._task is None:
            self._task = self.host.tasks.spawn(self._run(), "duro-alarm-scheduler")

    async def close(self) -> None:
        """Stop firing; give running handlers ``shutdown_grace`` seconds, then cancel them (their
        alarms stay set and fire after the next start)."""
        task, self._task = self._task, None
        await self.host.tasks.cancel(task)
        if self._attempts:
            await asyncio.wait(list(self._attempts), timeout=self.shutdown_grace)
            for t in list(self._attempts):
                t.cancel()
            await asyncio.gather(*list(self._attempts), return_exceptions=True)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self.book.close()

    def _wake(self, when: int | None = None) -> None:
        ev = self._wakeup
        if ev is None or ev.is_set():
            return
        if when is None or self._sleep_until is None or when < self._sleep_until:
            ev.set()

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until nothing is due and no attempt is running (for tests on a virtual clock)."""
        deadline = time.monotonic() + timeout
        while True:
            for _ in range(5):
                await asyncio.sleep(0)
            nxt = self.table.next_due()
            if (not self._attempts and not self.book.flush_pending
                    and (nxt is None or nxt > self.host.clock.now_ms())):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"alarms still busy after {timeout}s: {self.statistics()}")
            await asyncio.sleep(0.001)

    # ------------------------------------------------------------------ the loop
    async def _run(self) -> None:
        assert self._wakeup is not None
        clock = self.host.clock
        while True:
            try:
                now = clock.now_ms()
                room = self.max_concurrent - len(self._attempts)
                if room > 0:
                    for key in self.table.pop_due(now, room):
                        self._start_attempt(key)
                nxt = self.table.next_due()
                self._wakeup.clear()
                self._blocked = len(self._attempts) >= self.max_concurrent
                if nxt is None or self._blocked:
                    self._sleep_until = None
                    await self._wakeup.wait()
                else:
                    self._sleep_until = nxt
                    await self._sleep(nxt)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop every alarm of the node
                log.exception("alarm scheduler iteration failed")
                await asyncio.sleep(0.1)

    async def _sleep(self, due_ms: int) -> None:
        """Sleep until ``due_ms`` on the runtime's clock, or until woken."""
        clock = self.host.clock
        delay = (due_ms - clock.now_ms()) / 1000
        if delay <= 0:
            await asyncio.sleep(0)
            return
        ev = self._wakeup
        assert ev is not None
        loop = asyncio.get_running_loop()
        if type(clock).sleep is SystemClock.sleep:
            # The real clock: one timer that sets the wake-up event (no tasks per sleep; during a
            # burst the scheduler sleeps once per millisecond).
            handle = loop.call_later(delay, ev.set)
            try:
                await ev.wait()
            finally:
                handle.cancel()
            return

        async def until() -> None:
            # The delay is computed when this task first runs, which on a busy loop can be a while
            # after it was created.
            await clock.sleep(max(0.0, (due_ms - clock.now_ms()) / 1000))

        sleeper = loop.create_task(until())
        waiter = loop.create_task(ev.wait())
        try:
            await asyncio.wait((sleeper, waiter), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waiter.cancel()
            await asyncio.gather(sleeper, waiter, return_exceptions=True)

    def _start_attempt(self, key: Key) -> None:
        task = asyncio.get_running_loop().create_task(self._attempt(key), name=f"duro-alarm {key[1][:12]}")
        self._attempts.add(task)
        task.add_done_callback(self._attempt_done)

    def _attempt_done(self, task: "asyncio.Task[None]") -> None:
        self._attempts.discard(task)
        if not task.cancelled() and task.exception() is not None:  # pragma: no cover - a bug
            # The scheduler owns its attempts: a crash is logged with its traceback and counted.
            self.crashed += 1
            log.error("alarm attempt %s crashed", task.get_name(), exc_info=task.exception())
        if self._blocked:
            self._wake()  # room for the next attempt

    # ------------------------------------------------------------------ one attempt
    def _activation(self, key: Key, name: str | None) -> "Activation":
        unique_key, hex_id = key
        act = self.host.find(unique_key, hex_id)
        if act is not None and act.broken is None and (act.id.name is not None or name is None):
            return act  # (skips rebuilding and checking the ID)
        if not self.host.serves(unique_key):
            raise UnknownNamespaceError(f"no class registered for namespace {unique_key!r}")
        oid = self.host.namespace_key(unique_key).id_from_string(hex_id)
        oid.name = name
        return self.host.activation(unique_key, oid)

    async def _attempt(self, key: Key) -> None:
        rec = self.table.get(key)
        assert rec is not None and rec.state is AlarmState.RUNNING
        info: dict[str, Any] = {}
        act: "Activation | None" = None
        try:
            act, result = await self._deliver(key, rec.name, info)
        except asyncio.CancelledError:
            raise  # closing: the row stays and fires after the next start
        except Exception:  # pragma: no cover - a bug in the delivery path
            log.exception("delivering the alarm of %s failed", key)
            result = AttemptResult(AttemptOutcome.INFRA_FAILED)
        scheduled = info.get("scheduled")
        self._count(result)
        decision = self.table.finish(key, result, self.host.clock.now_ms(), self.rand, scheduled)
        self._report(key, act, result, info.get("error"))
        if decision is Decision.DROP:
            try:
                dropped = await self._drop(key, rec.name, rec.scheduled_ms)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("deleting the spent alarm of %s failed: %s", key, e)
                dropped = AttemptResult(AttemptOutcome.INFRA_FAILED)
            self.table.finish(key, dropped, self.host.clock.now_ms(), self.rand)
        if rec.state is AlarmState.WAITING or rec.state is AlarmState.RETRYING:
            self._wake(rec.due_ms)  # looked at again later (a retry, or a newer alarm)
        self.book.schedule_flush()

    async def _deliver(self, key: Key, name: str | None,
                       info: dict[str, Any]) -> tuple["Activation | None", AttemptResult]:
        """One attempt. ``info`` receives ``scheduled`` (the alarm time it was about, when known)
        and ``error`` (what the handler or the constructor raised)."""
        try:
            act = self._activation(key, name)
        except (UnknownNamespaceError, InvalidIdError) as e:
            log.warning("alarm for %s/%s not delivered: %s (kept for a later run)", key[0], key[1], e)
            return None, AttemptResult(AttemptOutcome.ORPHANED)
        try:
            # Look before waking the instance: a phantom or early index row must not run the
            # constructor. Only a durable reading may relax the index. Not needed when the record
            # is this process's own durable reading of the row (``exact``); the event reads it anyway.
            rec = self.table.get(key)
            if (act.instance is None and act.broken is None and not act.db.in_transaction
                    and (rec is None or not rec.exact)):
                gen = self.table.gen(key)
                pre = act.db.get_alarm()
                if pre is not None:
                    info["scheduled"] = pre
                if act.durable_future() is None:
                    if pre is None:
                        return act, AttemptResult(AttemptOutcome.NO_ALARM, gen, None)
                    if pre > self.host.clock.now_ms():
                        info.pop("scheduled", None)
                        return act, AttemptResult(AttemptOutcome.NOT_DUE, gen, pre)
            return act, await act.run(partial(self._event, key, act, info), kind="alarm", label="alarm")
        except OverloadedError as e:
            log.warning("alarm of %s postponed: %s", act.describe(), e)
            return act, AttemptResult(AttemptOutcome.INFRA_FAILED)
        except ObjectResetError as e:
            if act.suppress_alarm_retry:
                return act, AttemptResult(AttemptOutcome.NO_RETRY)
            cause = act.broken
            if isinstance(cause, OSError) or (isinstance(cause, StorageError) and not isinstance(cause, SqlError)):
                # The commit could not be made durable: not the handler's fault.
                log.warning("alarm of %s postponed: %s", act.describe(), cause)
                return act, AttemptResult(AttemptOutcome.INFRA_FAILED)
            info["error"] = e
            return act, AttemptResult(AttemptOutcome.FAILED)
        except StorageError as e:
            log.warning("alarm of %s postponed: storage failed: %s", act.describe(), e)
            return act, AttemptResult(AttemptOutcome.INFRA_FAILED)
        except Exception as e:  # the constructor raised
            info["error"] = e
            return act, AttemptResult(AttemptOutcome.FAILED)

    async def _event(self, key: Key, act: "Activation", info: dict[str, Any], instance: Any) -> AttemptResult:
        """Runs inside the object's input gate: check the row, call the handler, clear the row."""
        db = act.db
        gen = self.table.gen(key)
        row = db.get_alarm()
        if row is None:
            return AttemptResult(AttemptOutcome.NO_ALARM, gen, None)
        if row > self.host.clock.now_ms():
            return AttemptResult(AttemptOutcome.NOT_DUE, gen, row)
        info["scheduled"] = row
        alarm_info = self.table.retry_info(key, row)
        invoke = self.invoke
        if invoke is None:
            raise InternalError("no alarm dispatcher installed (the api layer sets AlarmScheduler.invoke)")
        self.fired += 1
        hub = getattr(self.host, "events", None)
        if hub is not None:
            hub.note_alarm_lateness((self.host.clock.now_ms() - row) / 1000)
        self._running[key] = (row, gen)
        error: Exception | None = None
        handled = True
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        self._watch(task)
        try:
            handled = await invoke(instance, alarm_info)
        except asyncio.CancelledError:
            if not self._timed_out(task, cancelling):
                raise
            error = TimeoutError(f"alarm() ran longer than {ALARM_HANDLER_TIMEOUT_S:.0f} s")
        except Exception as e:
            error = e
        finally:
            self._running.pop(key, None)
            self._deadlines.pop(task, None)
        if task in self._expired:  # it swallowed the time limit's cancellation: it counts as it ended
            self._timed_out(task, cancelling)
        if not handled:
            log.warning("%s has no alarm() handler; its alarm is dropped", act.describe())
        if error is None:
            # Clear the alarm unless something set or deleted it while the handler ran (every such
            # change goes through the scheduler and moves the object's change counter).
            if self.table.gen(key) == gen:
                db.delete_alarm()
                self.book.note_change(act, key)
                return AttemptResult(AttemptOutcome.SUCCEEDED, self.table.gen(key), None)
            return AttemptResult(AttemptOutcome.SUCCEEDED, self.table.gen(key), db.get_alarm())
        info["error"] = error
        return AttemptResult(AttemptOutcome.FAILED, self.table.gen(key), db.get_alarm())

    # ------------------------------------------------------------------ the handler's time limit
    # One timer for all running handlers instead of an ``asyncio.timeout`` (a loop timer created
    # and cancelled) per alarm: deadlines only grow, so the earliest is the one to wait for.
    def _watch(self, task: "asyncio.Task[Any]") -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ALARM_HANDLER_TIMEOUT_S
        self._deadlines[task] = deadline
        if self._watchdog is None:
            self._watchdog = loop.call_at(deadline, self._check_deadlines)

    def _check_deadlines(self) -> None:
        self._watchdog = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        earliest = None
        for task, deadline in list(self._deadlines.items()):
            if deadline <= now:
                del self._deadlines[task]
                self._expired.add(task)
                task.cancel()
            elif earliest is None or deadline < earliest:
                earliest = deadline
        if earliest is not None:
            self._watchdog = loop.call_at(earliest, self._check_deadlines)

    def _timed_out(self, task: "asyncio.Task[Any]", cancelling: int) -> bool:
        """After the handler ended: was it cancelled by the time limit (and by nothing else)?"""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        return task.uncancel() <= cancelling

    async def _drop(self, key: Key, name: str | None, scheduled: int | None) -> AttemptResult:
        """Delete the alarm row whose retries are used up, if it still holds ``scheduled``."""
        act = self._activation(key, name)

        def clear() -> AttemptResult:
            if scheduled is not None and act.db.get_alarm() == scheduled:
                act.db.delete_alarm()
                self.book.note_change(act, key)
                if self.on_drop is not None:
                    self.on_drop(act)
            return AttemptResult(AttemptOutcome.DROPPED, self.table.gen(key), act.db.get_alarm())

        if act.instance is None and act.inflight == 0 and act.broken is None and not act.db.in_transaction:
            # No instance to go through (e.g. after abort): write directly, then wait until durable.
            result = clear()
            await act.sync()
            return result

        async def event(instance: Any) -> AttemptResult:
            return clear()
        return await act.run(event, kind="alarm", label="drop spent alarm")

    # ------------------------------------------------------------------ reporting
    def _count(self, result: AttemptResult) -> None:
        o = result.outcome
        if o is AttemptOutcome.SUCCEEDED:
            self.succeeded += 1
        elif o in (AttemptOutcome.FAILED, AttemptOutcome.NO_RETRY):
            self.failed += 1
        elif o in (AttemptOutcome.NOT_DUE, AttemptOutcome.NO_ALARM):
            self.skipped += 1

    def _report(self, key: Key, act: "Activation | None", result: AttemptResult, error: BaseException | None) -> None:
        rec = self.table.get(key)
        if rec is None or (rec.state is not AlarmState.DROPPING and rec.state is not AlarmState.RETRYING):
            return  # the common case: nothing to say
        what = act.describe() if act is not None else f"{key[0]}/{key[1]}"
        if rec.state is AlarmState.DROPPING:
            self.dropped += 1
            if result.outcome is AttemptOutcome.NO_RETRY:
                log.info("alarm of %s dropped: abort(retryAlarm=False)", what)
            else:
                log.error("alarm() of %s failed %d times; the alarm is dropped (last error: %s: %s)", what,
                          self.table.policy.max_retries + 1, type(error).__name__, error)
        elif result.outcome is AttemptOutcome.FAILED:
            log.warning("alarm() of %s failed (retry %d of %d in %.1f s): %s: %s", what, rec.retries,
                        self.table.policy.max_retries, (rec.due_ms - self.host.clock.now_ms()) / 1000,
                        type(error).__name__, error)

    def statistics(self) -> dict[str, Any]:
        return {"fired": self.fired, "succeeded": self.succeeded, "failed": self.failed,
                "dropped": self.dropped, "skipped": self.skipped, "running": len(self._attempts),
                "crashed": self.crashed, "index_commits": self.book.commits,
                **self.table.statistics()}
