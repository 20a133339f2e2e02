"""One live instance of one object: its gates, its implicit transaction and its event delivery.

Input gate: storage calls are synchronous SQLite calls on the loop, so nothing can interleave inside
a read-modify-write; ``block_concurrency_while`` (and the constructor's use of it) locks the gate so
that new events wait. Output gate: every write between two awaits joins one implicit transaction,
committed at the end of the turn; any output (a response, an RPC result, a WebSocket message, an
outgoing call) waits until the writes before it are durable. A failed commit resets the object.
The gates' state and rules are ``core/gates.py`` and ``runtime/gates.py``; this module drives them.

Every lifecycle change goes through ``core.lifecycle.check_transition``. An activation reaches its
host (the runtime) only through ``ActivationHost``. This module never blocks the loop on the disk:
durability waits go through the barrier.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import os
import time
from time import perf_counter, thread_time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar

from ..core.lifecycle import ActivationState, DeactivationReason, check_transition
from ..core.limits import (
    BCW_TIMEOUT_S, TEXT_BCW_TIMEOUT, TEXT_OVERLOADED_AGE, TEXT_OVERLOADED_BYTES, TEXT_OVERLOADED_QUEUE,
)
from ..errors import DurableObjectAbort, ObjectResetError, OverloadedError, mark_remote
from ..ids import DurableObjectId
from ..storage import ObjectDatabase
from . import cpulimit, portal
from .restores import apply_pending_restore
from .gates import InputGate, OutputGate
from .tasks import drain_tasks, log_failure
from .host import ActivationHost
from .writenote import WriteNote, _noted, note_writes

if TYPE_CHECKING:
    from .events import EventHub

__all__ = ["Activation", "ActivationHost", "WriteNote", "current_activation", "note_writes"]

T = TypeVar("T")
log = logging.getLogger("duro.runtime")

# Which bound an OverloadedError's text names, for ``duro_overloaded_total{limit=...}``.
_OVERLOAD_LIMITS = {TEXT_OVERLOADED_QUEUE: "queue", TEXT_OVERLOADED_BYTES: "bytes", TEXT_OVERLOADED_AGE: "age"}

_current: contextvars.ContextVar["Activation | None"] = contextvars.ContextVar("duro_activation", default=None)


def current_activation() -> "Activation | None":
    """The activation whose code is running in this task, if any."""
    return _current.get()


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class Activation:
    """The single instance of one object in this process, and everything that gates its events.

    ``in_gate`` and ``out_gate`` are its input and output gates; ``state`` its place in the
    lifecycle table; ``broken`` (the input gate's) the error that reset it, or None."""

    def __init__(self, runtime: ActivationHost, unique_key: str, object_id: DurableObjectId,
                 factory: Callable[["Activation"], Any], db_path: str | os.PathLike[str]) -> None:
        self.runtime = runtime
        self._hub: "EventHub | None" = getattr(runtime, "events", None)
        self.unique_key = unique_key
        self.id = object_id
        self.factory = factory
        self.state = ActivationState.CREATED
        self.instance: Any = None
        journal = runtime.journal
        self.link = journal.link(db_path) if journal is not None else None
        self.db = ObjectDatabase(db_path, on_transaction_open=self._on_transaction_open, name=object_id.name,
                                 history=runtime.history, offload=runtime.offload, journal=self.link,
                                 interrupt=cpulimit.over_budget)
        self.inflight = 0
        self.inflight_bytes = 0  # the payload bytes (request bodies, RPC arguments) of those events
        self.waiting = 0
        self.last_used = time.monotonic()
        self.uses = 0  # events delivered: the eviction keeps objects used again before those used once
        self.constructions = 0
        self.in_gate = InputGate()
        self.out_gate = OutputGate(self.in_gate)
        self._synced_since_open = False
        self._discard_when_durable = False
        self._tasks: set[asyncio.Task[Any]] = set()
        # Those of ``_tasks`` that are pending I/O (wait_until work, outgoing calls) -> when each
        # started: each keeps the object alive for ``limits.io_keepalive`` seconds at most.
        self._io_started: dict[asyncio.Task[Any], float] = {}
        # Hooks later layers attach to (alarms, sockets, history): called with this activation.
        self.on_commit: list[Callable[["Activation"], None]] = []
        self.on_reset: list[Callable[["Activation", BaseException], None]] = []
        self.pins: set[str] = set()  # reasons this activation must not be evicted (e.g. "websocket")
        # Further holds, asked with the sweep's time (a parent object's running facets), and hooks
        # called when the activation is closed (its facets close with it).
        self.holds: list[Callable[[float], bool]] = []
        self.on_close: list[Callable[["Activation"], None]] = []
        self.facet_depth = 0  # 0: an object; n: a facet n levels below one (api/facets.py)
        self.suppress_alarm_retry = False  # set by ``ctx.abort(retryAlarm=False)``
        # A storage call failed and was dropped without being awaited: the object is reset (at
        # the next safe point: the end of this turn, or before an output leaves, if sooner).
        self._unawaited_error: BaseException | None = None

    # ------------------------------------------------------------------ state
    def _set_state(self, new: ActivationState) -> None:
        check_transition(self.state, new)
        self.state = new

    @property
    def broken(self) -> BaseException | None:
        """The error that reset this activation, or None. Kept by the input gate alone; ``state``
        is BROKEN exactly when it is set (``reset`` does both)."""
        return self.in_gate.broken

    @property
    def is_idle(self) -> bool:
        return self.idle_at(time.monotonic())

    def idle_at(self, now: float) -> bool:
        """Whether nothing holds the activation in memory at monotonic time ``now``: no event, no
        lock, no open transaction, no pin, no background task — except pending I/O started more
        than ``limits.io_keepalive`` seconds before (Cloudflare's 15-minute protection)."""
        return (self.inflight == 0 and self.waiting == 0 and self.in_gate.locks == 0
                and self.out_gate.txn is None and not self.pins and not self._tasks_hold(now)
                and not any(hold(now) for hold in self.holds))

    def _tasks_hold(self, now: float) -> bool:
        if not self._tasks:
            return False
        if len(self._io_started) < len(self._tasks):
            return True  # a storage call or a critical section: always holds
        horizon = self.runtime.limits.io_keepalive
        return any(now - started < horizon for started in self._io_started.values())

    def check_usable(self) -> None:
        """Raise if this activation was reset or evicted: a stale instance (a task it left behind)
        must not touch storage beside the live one. Notes storage use during another event's
        ``transaction()`` (``InputGate.note_storage_use``)."""
        gate = self.in_gate
        if gate.broken is not None:
            raise gate.reset_error()
        if self.state is ActivationState.CLOSED:
            err = ObjectResetError("This Durable Object instance was evicted; its storage is used by a newer "
                                   "instance. Work that outlives a request belongs in ctx.wait_until().")
            mark_remote(err)
            raise err
        if gate.owner is not None:
            gate.note_storage_use()

    # ------------------------------------------------------------------ events
    async def run(self, event: Callable[[Any], Awaitable[T]], *, size: int = 0, kind: str = "other",
                  label: str = "") -> T:
        """Deliver one event: construct the instance if needed, pass the input gate, run ``event``
        with the instance, then hold the result at the output gate until its writes are durable.

        ``size`` is the event's payload in bytes (a request body, RPC arguments). The object's queue
        is bounded by count, bytes and age (``limits.max_queued_events`` / ``max_queued_bytes`` /
        ``max_queue_age``); past a bound the event is refused with :class:`OverloadedError`
        *before* it runs, so a refused event never wrote anything. An event that has started is
        never refused.

        The event has a CPU budget of ``limits.cpu_ms`` (``cpulimit``): past it, its code is
        stopped, the object is reset and the caller gets Cloudflare's "Durable Object exceeded its
        CPU time limit and was reset." (even if the code caught the exception and finished).

        ``kind`` (fetch, rpc, alarm, websocket) and ``label`` (the method, the request, the socket
        event) name the event for ``/metrics`` and ``duro tail``: every event, refused or not,
        ends in one ``EventHub.finish`` call with its status, time, CPU time and rows."""
        hub = self._hub
        if hub is None:
            return await self._run(event, size)
        t0 = perf_counter()
        # CPU time only while a tail listens: time.thread_time() is a system call (~2 µs here).
        tailing = hub.capturing
        c0 = thread_time() if tailing else 0.0
        rows0 = self.db.row_totals()
        logs = hub.begin_logs() if tailing else None
        span = hub.tracer.start_event(self, kind, label) if hub.tracer is not None else None
        status = "ok"
        error: BaseException | None = None
        try:
            return await self._run(event, size)
        except OverloadedError as e:
            status, error = "overloaded", e
            hub.note_overloaded(_OVERLOAD_LIMITS.get(str(e), "databases"))
            raise
        except ObjectResetError as e:
            status, error = "reset", e
            raise
        except asyncio.CancelledError:
            status = "canceled"
            raise
        except BaseException as e:
            status, error = ("reset" if self.in_gate.broken is not None else "error"), e
            raise
        finally:
            rows1 = self.db.row_totals()
            rows = (max(0, rows1[0] - rows0[0]), max(0, rows1[1] - rows0[1]))
            hub.finish(self, kind, label, status, error, perf_counter() - t0,
                       thread_time() - c0 if tailing else None, rows, logs)
            if span is not None:
                hub.tracer.end_event(span, status, error, rows)

    async def _run(self, event: Callable[[Any], Awaitable[T]], size: int) -> T:
        gate = self.in_gate
        if gate.broken is not None:
            raise gate.reset_error()
        limits = self.runtime.limits
        if self.inflight >= limits.max_queued_events:  # events waiting at a locked gate are in flight too
            raise OverloadedError(TEXT_OVERLOADED_QUEUE)
        # One event alone is never "too much data": the front bounds a single body by itself.
        if self.inflight and self.inflight_bytes + size > limits.max_queued_bytes:
            raise OverloadedError(TEXT_OVERLOADED_BYTES)
        self.inflight += 1
        self.inflight_bytes += size
        token = _current.set(self)
        budget, budget_token = cpulimit.start_event(limits.cpu_ms / 1000, self._cpu_limit_fired)
        try:
            if self.instance is None and self.state is not ActivationState.CONSTRUCTING:
                await self._construct_in_portal() if portal.enabled() else self._construct()
            if gate.locks:  # a constructor waiting in a portal holds the gate too
                self.waiting += 1
                try:
                    async with asyncio.timeout(limits.max_queue_age or None):  # 0: no bound
                        await gate.wait()
                except TimeoutError:
                    raise OverloadedError(TEXT_OVERLOADED_AGE) from None
                finally:
                    self.waiting -= 1
            if self.instance is None:
                await self._construct_in_portal() if portal.enabled() else self._construct()
            try:
                if portal.enabled():
                    result = await portal.run(event(self.instance))
                else:
                    result = await event(self.instance)
            except DurableObjectAbort as e:
                if gate.broken is None:
                    self.reset(ObjectResetError(e.reason), DeactivationReason.ABORT)
                raise gate.reset_error() from None
            except BaseException:
                if gate.broken is None:
                    if self._unawaited_error is not None:
                        self._reset_for_unawaited()
                    await self.out_gate.wait()
                raise
            if self._unawaited_error is not None:
                self._reset_for_unawaited()
            await self.out_gate.wait()
            if budget.fired:  # the code caught the exception and returned: the limit holds anyway
                raise budget.error()
            return result
        except BaseException as e:
            if budget.fired and not isinstance(e, asyncio.CancelledError):
                self._reset_for_cpu(budget)
                raise gate.reset_error() from None
            raise
        finally:
            cpulimit.end_event(budget, budget_token)
            _current.reset(token)
            self.inflight -= 1
            self.inflight_bytes -= size
            self.last_used = time.monotonic()
            self.uses += 1

    def _construct(self) -> None:
        self._set_state(ActivationState.CONSTRUCTING)
        self.constructions += 1
        try:
            apply_pending_restore(self)
            self.instance = self.factory(self)
        except DurableObjectAbort as e:
            self.reset(ObjectResetError(e.reason), DeactivationReason.ABORT)
            raise self.in_gate.reset_error() from None
        except Exception as e:
            self.reset(e, DeactivationReason.CONSTRUCTOR_FAILED)
            raise
        self._set_state(ActivationState.ACTIVE)

    async def _construct_in_portal(self) -> None:
        """The constructor in a portal (it may ``run_sync``), with the input gate locked: while it
        waits, no other event sees the half-built object or builds a second one."""
        gate = self.in_gate
        gate.lock()
        try:
            await portal.call(self._construct)
        finally:
            gate.unlock()

    # ------------------------------------------------------------------ output gate
    def durable_future(self) -> "asyncio.Future[Any] | None":
        """Resolves when every commit so far is durable; None when none is still in flight."""
        return self.out_gate.durable_future()

    def hold_outputs_for(self, fut: "asyncio.Future[Any]") -> None:
        """Outputs from now on also wait for ``fut``: another file that must be durable together
        with this object's last commit (the alarm index)."""
        self.out_gate.lock_while(fut)

    async def output_gate(self) -> None:
        """Wait at the output gate, for sockets and outgoing calls; raises at once once reset."""
        if self._unawaited_error is not None:
            self._reset_for_unawaited()
        gate = self.in_gate
        if gate.broken is not None:
            raise gate.reset_error()
        await self.out_gate.wait()

    def output_open(self) -> bool:
        """True when ``output_gate()`` would return at once: no write is waiting to be durable.
        Lets sockets send without scheduling a task in the common case. (Called for every socket
        send: the output gate's fields are read here rather than through another call.)"""
        out = self.out_gate
        if self.in_gate.broken is not None or (out.txn is not None and out.gated) \
                or self._unawaited_error is not None:
            return False
        dur = out.durable
        return dur is None or (dur.done() and not dur.cancelled() and dur.exception() is None)

    # ------------------------------------------------------------------ implicit transaction
    def _on_transaction_open(self) -> None:
        _noted()
        if self.db.name is None:  # the catalog learns the name later when first reached by ID
            self.db.name = self.id.name
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        fut.add_done_callback(_retrieve)
        out = self.out_gate
        out.txn = fut
        if out.transaction_opened():
            loop.call_soon(self._commit_turn)

    def mark_unconfirmed_only(self) -> None:
        """The open transaction holds only ``allow_unconfirmed`` writes so far."""
        _noted()
        self.out_gate.gated = False

    def mark_confirmed(self) -> None:
        """A write (or SQL, which may write) joined the open transaction."""
        _noted()
        self.out_gate.gated = True

    def _commit_turn(self) -> None:
        if self.out_gate.commit_turn() and self.in_gate.broken is None:
            self.commit_now()

    def commit_now(self) -> None:
        """Commit the implicit transaction (end of turn) and submit it to the durability barrier."""
        out = self.out_gate
        fut = out.txn
        if fut is None:
            return
        out.txn = None
        try:
            wrote = self.db.commit()
        except Exception as e:  # a failed commit breaks the output gate
            log.error("commit failed for %s: %s", self.describe(), e)
            self.reset(e, DeactivationReason.COMMIT_FAILED)
            if not fut.done():
                fut.set_exception(self.in_gate.reset_error())
            return
        if wrote:
            link = self.link
            append = getattr(self.runtime.barrier, "append", None) if link is not None else None
            if append is not None:
                # The node journal (or a test's barrier around it) takes the commit's record.
                port = self.db.port
                captured = port.captured
                dur = append(link.key, captured) if captured is not None else None
                if port.needs_checkpoint:
                    port.checkpoint_journaled()
            else:
                dur = self.runtime.barrier.submit(str(self.db.wal_path), sync_dir=not self._synced_since_open)
                self._synced_since_open = True
            if dur is not None:
                out.durable = dur
                dur.add_done_callback(self._on_durable)
            elif self._discard_when_durable:
                self._discard_files()
            for hook in self.on_commit:
                hook(self)
        if not fut.done():
            fut.set_result(None)

    def _on_durable(self, fut: asyncio.Future[None]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None and self.in_gate.broken is None:
            log.error("durability failed for %s: %s", self.describe(), exc)
            self.reset(exc, DeactivationReason.COMMIT_FAILED)
        elif self._discard_when_durable and fut is self.out_gate.durable:
            self._discard_files()

    def after_delete_all(self) -> None:
        """``delete_all()`` ran in the open transaction: once it is durable, remove the files."""
        self._discard_when_durable = True

    def _discard_files(self) -> None:
        if self.out_gate.txn is not None or self.in_gate.broken is not None:
            return
        self._discard_when_durable = False
        if self.db.discard_files_if_empty():
            self._synced_since_open = False

    def hold_commits(self) -> None:
        """A ``transaction()`` begins: the open implicit transaction waits for it to end."""
        self.out_gate.hold()

    def release_commits(self) -> None:
        out = self.out_gate
        if out.release(out.txn is not None):
            asyncio.get_running_loop().call_soon(self._commit_turn)

    async def sync(self) -> None:
        """Wait until every write issued so far is durable (``storage.sync()``). Inside
        ``transaction()`` the open transaction cannot commit yet; then this waits for everything
        committed before it."""
        out = self.out_gate
        if out.txn is not None and not out.holds:
            self.commit_now()
        fut = out.txn
        if fut is not None and not out.holds:
            await fut
        dur = out.durable
        if dur is not None and not dur.done():
            await dur

    # ------------------------------------------------------------------ calls nobody awaited
    def unawaited_storage_failure(self, error: BaseException, what: str) -> None:
        """A storage call of this object failed and its result was dropped without being awaited
        (``runtime.calls.Failed``): log it once and reset the object, as a failed write does.
        Called from ``__del__``, so it only records and schedules; the reset happens at the end
        of this turn, or before an output of this object leaves if that comes first."""
        if self.in_gate.broken is not None or self._unawaited_error is not None:
            return
        self._unawaited_error = error
        log.error("%s: ctx.storage.%s() failed and was never awaited; the object is reset: %s",
                  self.describe(), what, error, exc_info=error)
        try:
            asyncio.get_running_loop().call_soon(self._reset_for_unawaited)
        except RuntimeError:  # no loop (interpreter shutdown): nothing is left to protect
            pass

    def _reset_for_unawaited(self) -> None:
        err = self._unawaited_error
        if err is not None and self.in_gate.broken is None:
            self.reset(err, DeactivationReason.UNAWAITED_CALL_FAILED)

    # ------------------------------------------------------------------ the CPU limit
    def _cpu_limit_fired(self, budget: cpulimit.Budget) -> None:
        """Called from the CPU tick (a signal handler in the loop thread) once an event of this
        object runs past its budget: the reset waits until the loop runs again, so that it never
        happens in the middle of the code the tick interrupted."""
        try:
            asyncio.get_running_loop().call_soon(self._reset_for_cpu, budget)
        except RuntimeError:  # no loop runs (a closed runtime's leftover): nothing to reset on
            pass

    def _reset_for_cpu(self, budget: cpulimit.Budget) -> None:
        if self.in_gate.broken is None:
            # Outside the event's context: the rollback and close must not be interrupted by the
            # very budget that ran out.
            contextvars.Context().run(self.reset, ObjectResetError(budget.text), DeactivationReason.CPU_LIMIT)

    def own(self, task: "asyncio.Task[Any]", *, io: bool = False) -> None:
        """Keep ``task`` (a call still running for this object's code) among the work the
        activation waits for before it is evicted or shut down. Its failure is its caller's.
        ``io``: an outgoing call, which holds the object for ``limits.io_keepalive`` at most."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if io:
            self._note_io(task)

    def _note_io(self, task: "asyncio.Task[Any]") -> None:
        self._io_started[task] = time.monotonic()
        task.add_done_callback(self._io_done)

    def _io_done(self, task: "asyncio.Task[Any]") -> None:
        self._io_started.pop(task, None)

    # ------------------------------------------------------------------ critical sections
    def block_concurrency_while(self, callback: Callable[[], Awaitable[T]]) -> "asyncio.Task[T]":
        """Run ``callback()`` with the input gate locked. Returns a task (awaitable); works unawaited
        from a constructor. If the callback raises or takes longer than 30 s, the object is reset."""
        self.in_gate.lock()
        critical = self._critical(callback)
        task = asyncio.ensure_future(portal.run(critical) if portal.enabled() else critical)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_retrieve)
        return task

    async def _critical(self, callback: Callable[[], Awaitable[T]]) -> T:
        try:
            try:
                result = callback()
                if inspect.isawaitable(result):
                    result = await asyncio.wait_for(result, BCW_TIMEOUT_S)
            except asyncio.TimeoutError:
                err = ObjectResetError(TEXT_BCW_TIMEOUT)
                self.reset(err, DeactivationReason.CRITICAL_SECTION_FAILED)
                raise err from None
            except DurableObjectAbort as e:
                self.reset(ObjectResetError(e.reason), DeactivationReason.ABORT)
                raise self.in_gate.reset_error() from None
            except BaseException as e:
                if self.in_gate.broken is None:
                    self.reset(e, DeactivationReason.CRITICAL_SECTION_FAILED)
                raise
            return result  # type: ignore[return-value]
        finally:
            self.in_gate.unlock()

    def spawn(self, coro: Awaitable[Any], *, name: str | None = None) -> "asyncio.Task[Any]":
        """Own a background task (``ctx.wait_until``): the activation is not evicted while it runs."""
        ctx = contextvars.copy_context()
        ctx.run(_current.set, self)
        if portal.enabled():
            coro = portal.run(coro)
        task = asyncio.get_running_loop().create_task(coro, name=name, context=ctx)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(log_failure)
        self._note_io(task)
        return task

    async def drain(self, timeout: float) -> None:
        """Give background tasks (``wait_until``) up to ``timeout`` seconds, then cancel them."""
        await drain_tasks(self._tasks, timeout)

    # ------------------------------------------------------------------ resets and closing
    def reset(self, error: BaseException, reason: DeactivationReason) -> None:
        """Drop the instance and its uncommitted writes; sticky. Pending and future callers through
        this activation get ``ObjectResetError``; the next event builds a fresh activation. The one
        place that breaks the gates and enters BROKEN."""
        gate = self.in_gate
        if gate.broken is not None:
            return
        log.warning("resetting %s: %s (%s)", self.describe(), error, reason.value)
        if self._hub is not None:
            self._hub.note_reset(reason.value)
        self._set_state(ActivationState.BROKEN)
        gate.break_with(error)  # the events waiting at the gate wake up and raise
        out = self.out_gate
        fut = out.txn
        out.txn = None
        try:
            self.db.rollback()
        except Exception:  # pragma: no cover - rollback of a broken connection
            log.exception("rollback failed for %s", self.describe())
        if fut is not None and not fut.done():
            fut.set_exception(gate.reset_error())
        self.instance = None
        for hook in list(self.on_reset):
            try:
                hook(self, error)
            except Exception:
                log.exception("reset hook failed for %s", self.describe())
        self.runtime.forget(self)
        try:
            self.db.close()
        except Exception:
            log.exception("closing database failed for %s", self.describe())

    def close(self, reason: DeactivationReason) -> None:
        """Evict an idle activation: commit anything open, close its database. A reset one stays
        BROKEN (its database is closed already; closing again is harmless)."""
        broken = self.in_gate.broken is not None
        if self.out_gate.txn is not None and not broken:
            self.commit_now()
        if not broken and self.state is not ActivationState.CLOSED:
            log.debug("closing %s (%s)", self.describe(), reason.value)
            self._set_state(ActivationState.CLOSED)
        self.instance = None
        for task in list(self._io_started):  # pending I/O past its protection ends with the instance
            task.cancel()
        for hook in list(self.on_close):
            try:
                hook(self)
            except Exception:
                log.exception("close hook failed for %s", self.describe())
        self.db.close(offload=True)  # its fsyncs and checkpoint run on the maintenance thread

    def describe(self) -> str:
        name = f" ({self.id.name})" if self.id.name else ""
        return f"{self.unique_key}/{self.id}{name}"

    def statistics(self) -> dict[str, Any]:
        return {"state": self.state.value, "inflight": self.inflight, "inflight_bytes": self.inflight_bytes,
                "waiting": self.waiting,
                "constructions": self.constructions, "db_open": self.db.is_open}
