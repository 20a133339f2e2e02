"""The alarm scheduler: one owned task that fires due alarms, and the bookkeeping that keeps the
node's alarm index (``DATA/alarms.sqlite``) consistent with every object's own alarm row.

It owns the index file, the in-memory :class:`~duro.core.alarms.AlarmTable`, and every task that
delivers an alarm. It must never call user code except through ``invoke`` (installed by the api
layer), never delete an object's alarm row except after its handler succeeded (or its retries are
used up), and never let a failing handler stop other alarms.

Why no alarm is lost. The object's row is the truth; the index only says when to look. Invariant:
for every object whose committed alarm row holds T, the index has that object's row with
``due_ms <= T`` (or a retry row for exactly T, ``scheduled_ms = T``).

1. *Setting* (``set_alarm``): the index row is made earlier (``lower``) and committed to the index
   file *first*; only then is T written into the object's open transaction, which commits at the
   end of the turn. Both files receive their commits in that order, so a process crash (SIGKILL) at
   any instant leaves either no T in the object or T and an index row. Against power loss, the
   commit hook hands the index WAL to the durability barrier and the object's output gate waits
   for it as well as for the object's own WAL: an *acknowledged* alarm is durable in both.
2. *Relaxing* (a later ``due_ms``, or removing the row) is done only once the object's write that
   justifies it is durable, and only if the object's alarm has not changed since (a node-wide
   change counter, ``gen``). A relaxation that is skipped or lost leaves the index too early: a
   phantom.
3. *Firing* reads the object's row, under its input gate. A phantom costs one look that finds
   nothing due and relaxes the index (by 2); the user's constructor does not run for it.
4. *Clearing*: the row is deleted inside the successful attempt's event, through the object's own
   implicit transaction, after the handler returned. A crash before that commit leaves the row and
   the index row, and the alarm fires again after restart: delivery is at least once.
5. *Start*: the index is loaded and whatever is due fires at once. The index file is created on
   the first ``set_alarm``; :meth:`AlarmScheduler.rebuild_index` rebuilds it from the objects.

Remaining window: a power loss in the middle of one barrier flush can persist an object's WAL but
not the index's; the alarm in it was never acknowledged, but ``get_alarm()`` will show it after
restart while the index misses it (``rebuild_index()`` repairs that).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from functools import partial
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ..clock import SystemClock
from ..core.alarms import (
    AlarmInvocationInfo, AlarmState, AlarmTable, AttemptOutcome, AttemptResult, Decision, RetryPolicy,
)
from ..core.limits import ALARM_HANDLER_TIMEOUT_S
from ..errors import InternalError, InvalidIdError, ObjectResetError, OverloadedError, SqlError, StorageError
from ..ids import NamespaceKey
from ..storage.alarm_index import AlarmIndex, IndexRow, scan_object_alarms
from .tasks import stop_task

if TYPE_CHECKING:
    from .activation import Activation
    from .catalog import Runtime

__all__ = ["AlarmScheduler"]

log = logging.getLogger("duro.alarms")

Key = tuple[str, str]
FLUSH_DELAY = 0.01  # seconds a relaxation may wait to share an index commit with others
Invoke = Callable[[Any, AlarmInvocationInfo], Awaitable[bool]]


class AlarmScheduler:
    """Fires alarms for every object of one runtime. ``start()`` / ``close()`` with the runtime.

    ``invoke(instance, info)`` calls the object's ``alarm()`` handler and returns False if it has
    none; the api layer installs it. ``rand`` is the jitter source (tests set it)."""

    def __init__(self, runtime: "Runtime", *, policy: RetryPolicy | None = None,
                 rand: Callable[[], float] | None = None, max_concurrent: int | None = None,
                 shutdown_grace: float = 10.0) -> None:
        self.runtime = runtime
        self.table = AlarmTable(policy)
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
        self.path = runtime.data_dir / "alarms.sqlite"
        self._index: AlarmIndex | None = None
        self._index_dir_synced = False
        self._index_seq = 0      # index commits so far
        self._synced_seq = 0     # index commits covered by the last barrier submission
        self._sync_fut: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._sleep_until: int | None = None
        self._attempts: set[asyncio.Task[None]] = set()
        # Activations whose open transaction changed the alarm / set one (relying on an index row).
        # Weak: an evicted activation whose change was rolled back never commits again.
        self._dirty: "weakref.WeakSet[Activation]" = weakref.WeakSet()
        self._armed: "weakref.WeakSet[Activation]" = weakref.WeakSet()
        self._watched: "weakref.WeakSet[Activation]" = weakref.WeakSet()
        self._running: dict[Key, tuple[int, int]] = {}  # handler running: (row, gen at start)
        self._ns_keys: dict[str, NamespaceKey] = {}
        self._flush_handle: asyncio.Handle | asyncio.TimerHandle | None = None
        self._blocked = False  # the loop waits for a running attempt to end (max_concurrent)
        self._deadlines: dict[asyncio.Task[Any], float] = {}  # running handlers' time limits
        self._expired: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False
        self.fired = self.succeeded = self.failed = self.dropped = self.skipped = 0

    # ------------------------------------------------------------------ the storage API
    @staticmethod
    def _key(act: "Activation") -> Key:
        return (act.unique_key, str(act.id))

    def get_alarm(self, act: "Activation") -> int | None:
        """The object's alarm, or None; None also while its handler runs, unless it set a new one."""
        row = act.db.get_alarm()
        if row is not None:
            key = self._key(act)
            if self._running.get(key) == (row, self.table.gen(key)):
                return None
        return row

    def set_alarm(self, act: "Activation", when_ms: int) -> None:
        """Write the alarm into the object's open transaction; times in the past become now."""
        when = max(int(when_ms), self.runtime.clock.now_ms())
        key = self._key(act)
        # The index first (argument 1 in the module docstring): if this fails, the object is untouched.
        self._ensure_index()
        if self.table.lower(key, act.id.name, when):
            self._flush()
            self._wake(when)
        act.db.set_alarm(when)
        self._armed.add(act)
        self._note_change(act, key)

    def delete_alarm(self, act: "Activation") -> None:
        act.db.delete_alarm()
        self._note_change(act, self._key(act))

    def note_delete_all(self, act: "Activation") -> None:
        """``delete_all()`` removed the alarm along with everything else."""
        self._note_change(act, self._key(act))

    def note_outside_alarm(self, unique_key: str, hex_id: str, name: str | None, when_ms: int) -> None:
        """An object's files were changed outside the runtime (restore, import, ``sql --write``) and
        now hold an alarm at ``when_ms``: make sure the index looks at the object by then."""
        self._ensure_index()
        if self.table.lower((unique_key, hex_id), name, int(when_ms)):
            self._flush()
            self._wake(int(when_ms))

    def _note_change(self, act: "Activation", key: Key) -> None:
        self.table.changed(key)
        self._dirty.add(act)
        if act not in self._watched:
            self._watched.add(act)
            act.on_commit.append(self._on_commit)
            act.on_reset.append(self._on_reset)

    # ------------------------------------------------------------------ commit hooks
    def _on_commit(self, act: "Activation") -> None:
        if act not in self._dirty:
            return
        self._dirty.discard(act)
        key = self._key(act)
        gen = self.table.gen(key)
        value = act.db.get_alarm()  # just committed: no transaction is open
        if act in self._armed:
            # The index row this alarm relies on must be durable before the commit is acknowledged.
            self._armed.discard(act)
            fut = self._index_durable()
            if fut is not None:
                act.hold_outputs_for(fut)
        dur = act.durable_future()
        if dur is None:
            self._settle(key, gen, value)
        else:
            dur.add_done_callback(partial(self._settle_if_durable, key, gen, value))

    def _on_reset(self, act: "Activation", error: BaseException) -> None:
        # Its uncommitted alarm changes are gone; any index row they lowered is a harmless phantom.
        self._dirty.discard(act)
        self._armed.discard(act)

    def _settle_if_durable(self, key: Key, gen: int, value: int | None, fut: "asyncio.Future[Any]") -> None:
        if not fut.cancelled() and fut.exception() is None:
            self._settle(key, gen, value)

    def _settle(self, key: Key, gen: int, value: int | None) -> None:
        if self._closed:
            return  # a relaxation may be skipped (argument 2)
        self.table.settle(key, gen, value)
        self._schedule_flush()
        if value is not None:
            self._wake(value)

    # ------------------------------------------------------------------ the index file
    def _ensure_index(self) -> AlarmIndex:
        if self._index is None:
            self._index = AlarmIndex(self.path)
            for row in self._index.load():
                self.table.load((row.namespace, row.object_id), row.name, row.due_ms, row.scheduled_ms, row.retries)
        return self._index

    def _flush(self) -> None:
        """Write every changed record to the index, in one transaction (committed, not fsynced)."""
        changes = self.table.drain()
        if not changes:
            return
        index = self._ensure_index()
        ups = [IndexRow(k[0], k[1], r.name, r.due_ms, r.scheduled_ms, r.retries) for k, r in changes if r is not None]
        dels = [k for k, r in changes if r is None]
        index.apply(ups, dels)
        self._index_seq += 1

    def _schedule_flush(self) -> None:
        """Write the batched changes (relaxations, retry counts) a little later: one index commit
        per ``FLUSH_DELAY`` rather than one per settled alarm. A ``lower`` never waits for this."""
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_DELAY, self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_handle = None
        if self._closed and self._index is None:
            return
        try:
            self._flush()
        except Exception:
            # Only relaxations are batched here; losing them leaves phantoms, never lost alarms.
            log.exception("writing the alarm index failed")

    def _index_durable(self) -> "asyncio.Future[None] | None":
        """A future that resolves when every index commit so far is durable (None: nothing to wait)."""
        if self._index is None:
            return None
        if self._index_seq != self._synced_seq:
            self._synced_seq = self._index_seq
            self._sync_fut = self.runtime.barrier.submit(str(self._index.wal_path),
                                                         sync_dir=not self._index_dir_synced)
            self._index_dir_synced = True
        fut = self._sync_fut
        return fut if fut is not None and not fut.done() else None

    def rebuild_index(self) -> int:
        """Recreate the index from every object's own alarm row (opens every database: slow). For a
        data directory whose ``alarms.sqlite`` was lost. Returns how many alarms were found."""
        rows = list(scan_object_alarms(self.runtime.data_dir / "do"))
        index = self._ensure_index()
        index.apply(rows, [])
        self._index_seq += 1
        for row in rows:
            if self.table.lower((row.namespace, row.object_id), row.name, row.due_ms):
                self._wake(row.due_ms)
        self._flush()
        return len(rows)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._closed = False
        self.max_concurrent = self._max_concurrent or max(16, self.runtime.max_open_databases * 3 // 4)
        self._wakeup = asyncio.Event()
        if self._index is None and self.path.exists():
            self._ensure_index()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="duro-alarm-scheduler")

    async def close(self) -> None:
        """Stop firing; give running handlers ``shutdown_grace`` seconds, then cancel them (their
        alarms stay set and fire after the next start)."""
        task, self._task = self._task, None
        await stop_task(task)
        if self._attempts:
            await asyncio.wait(list(self._attempts), timeout=self.shutdown_grace)
            for t in list(self._attempts):
                t.cancel()
            await asyncio.gather(*list(self._attempts), return_exceptions=True)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        try:
            self._flush()
        except Exception:
            log.exception("writing the alarm index failed")
        self._closed = True
        if self._index is not None:
            self._index.close()
            self._index = None

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
            if (not self._attempts and self._flush_handle is None
                    and (nxt is None or nxt > self.runtime.clock.now_ms())):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"alarms still busy after {timeout}s: {self.statistics()}")
            await asyncio.sleep(0.001)

    # ------------------------------------------------------------------ the loop
    async def _run(self) -> None:
        assert self._wakeup is not None
        clock = self.runtime.clock
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
        clock = self.runtime.clock
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
            log.error("alarm attempt crashed", exc_info=task.exception())
        if self._blocked:
            self._wake()  # room for the next attempt

    # ------------------------------------------------------------------ one attempt
    def _activation(self, key: Key, name: str | None) -> "Activation":
        unique_key, hex_id = key
        act = self.runtime.find(unique_key, hex_id)
        if act is not None and act.broken is None and (act.id.name is not None or name is None):
            return act  # (skips rebuilding and checking the ID)
        if unique_key not in self.runtime.classes:
            raise InternalError(f"no class registered for namespace {unique_key!r}")
        ns = self._ns_keys.get(unique_key)
        if ns is None:
            ns = self._ns_keys[unique_key] = NamespaceKey(unique_key)
        oid = ns.id_from_string(hex_id)
        oid.name = name
        return self.runtime.activation(unique_key, oid)

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
        decision = self.table.finish(key, result, self.runtime.clock.now_ms(), self.rand, scheduled)
        self._report(key, act, result, info.get("error"))
        if decision is Decision.DROP:
            try:
                dropped = await self._drop(key, rec.name, rec.scheduled_ms)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("deleting the spent alarm of %s failed: %s", key, e)
                dropped = AttemptResult(AttemptOutcome.INFRA_FAILED)
            self.table.finish(key, dropped, self.runtime.clock.now_ms(), self.rand)
        if rec.state is AlarmState.WAITING or rec.state is AlarmState.RETRYING:
            self._wake(rec.due_ms)  # looked at again later (a retry, or a newer alarm)
        self._schedule_flush()

    async def _deliver(self, key: Key, name: str | None,
                       info: dict[str, Any]) -> tuple["Activation | None", AttemptResult]:
        """One attempt. ``info`` receives ``scheduled`` (the alarm time it was about, when known)
        and ``error`` (what the handler or the constructor raised)."""
        try:
            act = self._activation(key, name)
        except (InternalError, InvalidIdError) as e:
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
                    if pre > self.runtime.clock.now_ms():
                        info.pop("scheduled", None)
                        return act, AttemptResult(AttemptOutcome.NOT_DUE, gen, pre)
            return act, await act.run(partial(self._event, key, act, info))
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
        if row > self.runtime.clock.now_ms():
            return AttemptResult(AttemptOutcome.NOT_DUE, gen, row)
        info["scheduled"] = row
        alarm_info = self.table.retry_info(key, row)
        invoke = self.invoke
        if invoke is None:
            raise InternalError("no alarm dispatcher installed (the api layer sets AlarmScheduler.invoke)")
        self.fired += 1
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
                self._note_change(act, key)
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
                self._note_change(act, key)
            return AttemptResult(AttemptOutcome.DROPPED, self.table.gen(key), act.db.get_alarm())

        if act.instance is None and act.inflight == 0 and act.broken is None and not act.db.in_transaction:
            # No instance to go through (e.g. after abort): write directly, then wait until durable.
            result = clear()
            await act.sync()
            return result

        async def event(instance: Any) -> AttemptResult:
            return clear()
        return await act.run(event)

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
                        self.table.policy.max_retries, (rec.due_ms - self.runtime.clock.now_ms()) / 1000,
                        type(error).__name__, error)

    def statistics(self) -> dict[str, Any]:
        return {"fired": self.fired, "succeeded": self.succeeded, "failed": self.failed,
                "dropped": self.dropped, "skipped": self.skipped, "running": len(self._attempts),
                "index_commits": self._index.commits if self._index is not None else 0,
                **self.table.statistics()}
