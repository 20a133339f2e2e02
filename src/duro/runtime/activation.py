"""One live instance of one object: its gates, its implicit transaction and its event delivery.

Input gate: storage calls are synchronous SQLite calls on the loop, so nothing can interleave inside
a read-modify-write; ``block_concurrency_while`` (and the constructor's use of it) closes the gate so
that new events wait. Output gate: every write between two awaits joins one implicit transaction,
committed at the end of the turn; any output (a response, an RPC result, a WebSocket message, an
outgoing call) waits until the writes before it are durable. A failed commit resets the object.

This module never blocks the loop on the disk: durability waits go through the barrier.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar

from ..core.lifecycle import ActivationState, DeactivationReason, check_transition
from ..core.limits import BCW_TIMEOUT_S, MAX_BCW_DEPTH, TEXT_BCW_NESTED, TEXT_BCW_TIMEOUT, TEXT_OVERLOADED_QUEUE
from ..errors import DurableObjectAbort, ObjectResetError, OverloadedError, mark_remote
from ..ids import DurableObjectId
from ..storage import ObjectDatabase
from ..storage.journal import marker_path

if TYPE_CHECKING:
    from .catalog import Runtime

__all__ = ["Activation", "current_activation"]

T = TypeVar("T")
log = logging.getLogger("duro.runtime")

_current: contextvars.ContextVar["Activation | None"] = contextvars.ContextVar("duro_activation", default=None)
_critical_var: contextvars.ContextVar[object | None] = contextvars.ContextVar("duro_critical", default=None)


def current_activation() -> "Activation | None":
    """The activation whose code is running in this task, if any."""
    return _current.get()


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _log_failure(task: "asyncio.Task[Any]") -> None:
    """Background work (``wait_until``) has no caller to raise to: log its failure."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("background task %s failed: %r", task.get_name(), exc, exc_info=exc)


class Activation:
    """The single instance of one object in this process, and everything that gates its events."""

    def __init__(self, runtime: "Runtime", unique_key: str, object_id: DurableObjectId,
                 factory: Callable[["Activation"], Any], db_path: str | os.PathLike[str]) -> None:
        self.runtime = runtime
        self.unique_key = unique_key
        self.id = object_id
        self.factory = factory
        self.state = ActivationState.CREATED
        self.instance: Any = None
        self.db = ObjectDatabase(db_path, on_transaction_open=self._on_transaction_open, name=object_id.name,
                                 history=runtime.history, offload=runtime.offload)
        self.broken: BaseException | None = None
        self.inflight = 0
        self.waiting = 0
        self.last_used = time.monotonic()
        self.constructions = 0
        self._gate = asyncio.Event()
        self._gate.set()
        self._bcw_depth = 0
        self._critical_owner: object | None = None  # the token of the running transaction()
        self._foreign_in_critical = False
        self._hold_commits = 0
        self._commit_pending = False
        self._txn_future: asyncio.Future[None] | None = None
        self._txn_gated = False
        self._last_durable: asyncio.Future[None] | None = None
        self._synced_since_open = False
        self._discard_when_durable = False
        self._tasks: set[asyncio.Task[Any]] = set()
        # Hooks later layers attach to (alarms, sockets, history): called with this activation.
        self.on_commit: list[Callable[["Activation"], None]] = []
        self.on_reset: list[Callable[["Activation", BaseException], None]] = []
        self.pins: set[str] = set()  # reasons this activation must not be evicted (e.g. "websocket")
        self.suppress_alarm_retry = False  # set by ``ctx.abort(retryAlarm=False)``

    # ------------------------------------------------------------------ state
    def _set_state(self, new: ActivationState) -> None:
        check_transition(self.state, new)
        self.state = new

    @property
    def is_idle(self) -> bool:
        return (self.inflight == 0 and self.waiting == 0 and self._bcw_depth == 0
                and self._txn_future is None and not self._tasks and not self.pins)

    def check_usable(self) -> None:
        """Raise if this activation was reset or evicted: a stale instance (a task it left behind)
        must not touch storage beside the live one."""
        if self.broken is not None:
            raise self._broken_copy()
        if self.state is ActivationState.CLOSED:
            err = ObjectResetError("This Durable Object instance was evicted; its storage is used by a newer "
                                   "instance. Work that outlives a request belongs in ctx.wait_until().")
            mark_remote(err)
            raise err
        if self._critical_owner is not None:
            self.note_storage_use()

    def note_storage_use(self) -> None:
        """Storage is used from the current task. During a ``transaction()`` of another task, that
        work lands inside the transaction's savepoint: remember it, so a failed transaction resets
        the object instead of silently undoing another event's acknowledged write."""
        owner = self._critical_owner
        if owner is not None and _critical_var.get() is not owner:
            self._foreign_in_critical = True

    def in_foreign_critical_section(self) -> bool:
        """Whether a ``transaction()`` of another event is running (this code is not inside it)."""
        owner = self._critical_owner
        return owner is not None and _critical_var.get() is not owner

    async def wait_for_critical_section(self) -> None:
        """An event already in flight waits for another event's ``transaction()`` to end before it
        uses the async storage API, as if the input gate had held it back."""
        while self.in_foreign_critical_section():
            await self._gate.wait()

    def _broken_copy(self) -> BaseException:
        assert self.broken is not None
        err = ObjectResetError(str(self.broken))
        mark_remote(err)
        return err

    # ------------------------------------------------------------------ events
    async def run(self, event: Callable[[Any], Awaitable[T]]) -> T:
        """Deliver one event: construct the instance if needed, pass the input gate, run ``event``
        with the instance, then hold the result at the output gate until its writes are durable."""
        if self.broken is not None:
            raise self._broken_copy()
        limit = self.runtime.limits.max_queued_events
        if self.inflight >= limit:  # events waiting at a closed gate are in flight too
            raise OverloadedError(TEXT_OVERLOADED_QUEUE)
        self.inflight += 1
        token = _current.set(self)
        try:
            if self.instance is None:
                self._construct()
            while not self._gate.is_set():
                self.waiting += 1
                try:
                    await self._gate.wait()
                finally:
                    self.waiting -= 1
                if self.broken is not None:
                    raise self._broken_copy()
            if self.instance is None:
                self._construct()
            try:
                result = await event(self.instance)
            except DurableObjectAbort as e:
                if self.broken is None:
                    self.reset(ObjectResetError(e.reason), DeactivationReason.ABORT)
                raise self._broken_copy() from None
            except BaseException:
                if self.broken is None:
                    await self._settle_output()
                raise
            await self._settle_output()
            return result
        finally:
            _current.reset(token)
            self.inflight -= 1
            self.last_used = time.monotonic()

    def _construct(self) -> None:
        self._set_state(ActivationState.CONSTRUCTING)
        self.constructions += 1
        try:
            self._apply_pending_restore()
            self.instance = self.factory(self)
        except DurableObjectAbort as e:
            self.reset(ObjectResetError(e.reason), DeactivationReason.ABORT)
            raise self._broken_copy() from None
        except Exception as e:
            self.reset(e, DeactivationReason.CONSTRUCTOR_FAILED)
            raise
        self._set_state(ActivationState.ACTIVE)

    def _apply_pending_restore(self) -> None:
        """A restore scheduled by ``on_next_session_restore_bookmark`` happens before the constructor
        runs. The restored alarm is set again through the scheduler, so its index knows it."""
        db = self.db
        if db.history is None or not marker_path(db.path).exists():
            return
        db.attached_history()  # opening the database carries out the restore
        when = db.get_alarm()
        if when is not None:
            self.runtime.alarms.set_alarm(self, when)

    async def _settle_output(self) -> None:
        """The output gate: wait until every write made so far is committed and durable. Inside a
        ``transaction()`` its own task cannot wait for the transaction's commit (that would never
        come): its outputs wait for everything committed before the transaction began."""
        fut = self._txn_future
        if fut is not None and self._txn_gated and not (
                self._hold_commits and self._critical_owner is not None
                and _critical_var.get() is self._critical_owner):
            await fut
        dur = self._last_durable
        if dur is not None:
            if not dur.done():
                await dur
            elif dur.exception() is not None:
                raise dur.exception()  # type: ignore[misc]
        if self.broken is not None:
            raise self._broken_copy()

    def durable_future(self) -> "asyncio.Future[Any] | None":
        """Resolves when every commit so far is durable; None when none is still in flight."""
        dur = self._last_durable
        return dur if dur is not None and not dur.done() else None

    def hold_outputs_for(self, fut: "asyncio.Future[Any]") -> None:
        """Outputs from now on also wait for ``fut``: another file that must be durable together
        with this object's last commit (the alarm index)."""
        prev = self._last_durable
        self._last_durable = fut if prev is None or prev.done() else asyncio.gather(prev, fut)

    async def output_gate(self) -> None:
        """Public form of the output gate, for sockets and outgoing calls."""
        if self.broken is not None:
            raise self._broken_copy()
        await self._settle_output()

    def output_open(self) -> bool:
        """True when ``output_gate()`` would return at once: no write is waiting to be durable.
        Lets sockets send without scheduling a task in the common case."""
        if self.broken is not None or (self._txn_future is not None and self._txn_gated):
            return False
        dur = self._last_durable
        return dur is None or (dur.done() and not dur.cancelled() and dur.exception() is None)

    # ------------------------------------------------------------------ implicit transaction
    def _on_transaction_open(self) -> None:
        if self.db.name is None:  # the catalog learns the name later when first reached by ID
            self.db.name = self.id.name
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        fut.add_done_callback(_retrieve)
        self._txn_future = fut
        self._txn_gated = True
        if not self._commit_pending and self._hold_commits == 0:
            self._commit_pending = True
            loop.call_soon(self._commit_turn)

    def mark_unconfirmed_only(self) -> None:
        """The open transaction holds only ``allow_unconfirmed`` writes so far."""
        self._txn_gated = False

    def mark_confirmed(self) -> None:
        self._txn_gated = True

    def _commit_turn(self) -> None:
        self._commit_pending = False
        if self._hold_commits or self.broken is not None:
            return
        self.commit_now()

    def commit_now(self) -> None:
        """Commit the implicit transaction (end of turn) and submit it to the durability barrier."""
        fut = self._txn_future
        if fut is None:
            return
        self._txn_future = None
        try:
            wrote = self.db.commit()
        except Exception as e:  # a failed commit breaks the output gate
            log.error("commit failed for %s: %s", self.describe(), e)
            self.reset(e, DeactivationReason.COMMIT_FAILED)
            if not fut.done():
                fut.set_exception(self._broken_copy())
            return
        if wrote:
            dur = self.runtime.barrier.submit(str(self.db.wal_path), sync_dir=not self._synced_since_open)
            self._synced_since_open = True
            if dur is not None:
                self._last_durable = dur
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
        if exc is not None and self.broken is None:
            log.error("durability failed for %s: %s", self.describe(), exc)
            self.reset(exc, DeactivationReason.COMMIT_FAILED)
        elif self._discard_when_durable and fut is self._last_durable:
            self._discard_files()

    def after_delete_all(self) -> None:
        """``delete_all()`` ran in the open transaction: once it is durable, remove the files."""
        self._discard_when_durable = True

    def _discard_files(self) -> None:
        if self._txn_future is not None or self.broken is not None:
            return
        self._discard_when_durable = False
        if self.db.discard_files_if_empty():
            self._synced_since_open = False

    def hold_commits(self) -> None:
        self._hold_commits += 1

    def release_commits(self) -> None:
        self._hold_commits -= 1
        if self._hold_commits == 0 and self._txn_future is not None and not self._commit_pending:
            self._commit_pending = True
            asyncio.get_running_loop().call_soon(self._commit_turn)

    async def sync(self) -> None:
        """Wait until every write issued so far is durable (``storage.sync()``). Inside
        ``transaction()`` the open transaction cannot commit yet; then this waits for everything
        committed before it."""
        if self._txn_future is not None and self._hold_commits == 0:
            self.commit_now()
        fut = self._txn_future
        if fut is not None and self._hold_commits == 0:
            await fut
        dur = self._last_durable
        if dur is not None and not dur.done():
            await dur

    # ------------------------------------------------------------------ critical sections
    def block_concurrency_while(self, callback: Callable[[], Awaitable[T]]) -> "asyncio.Task[T]":
        """Run ``callback()`` with the input gate closed. Returns a task (awaitable); works unawaited
        from a constructor. If the callback raises or takes longer than 30 s, the object is reset."""
        if self._bcw_depth >= MAX_BCW_DEPTH:
            raise RuntimeError(TEXT_BCW_NESTED)
        self._bcw_depth += 1
        self._gate.clear()
        task = asyncio.ensure_future(self._critical(callback))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_retrieve)
        return task

    async def _critical(self, callback: Callable[[], Awaitable[T]]) -> T:
        try:
            try:
                result = callback()
                if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                    result = await asyncio.wait_for(result, BCW_TIMEOUT_S)
            except asyncio.TimeoutError:
                err = ObjectResetError(TEXT_BCW_TIMEOUT)
                self.reset(err, DeactivationReason.CRITICAL_SECTION_FAILED)
                raise err from None
            except DurableObjectAbort as e:
                self.reset(ObjectResetError(e.reason), DeactivationReason.ABORT)
                raise self._broken_copy() from None
            except BaseException as e:
                if self.broken is None:
                    self.reset(e, DeactivationReason.CRITICAL_SECTION_FAILED)
                raise
            return result  # type: ignore[return-value]
        finally:
            self._bcw_depth -= 1
            if self._bcw_depth == 0:
                self._gate.set()

    @contextlib.asynccontextmanager
    async def critical_section(self) -> Any:
        """Close the input gate for the body (``transaction()``); an error does not reset. The
        current task owns it: storage use from other tasks meanwhile is noted (``note_storage_use``)."""
        if self._bcw_depth >= MAX_BCW_DEPTH:
            raise RuntimeError(TEXT_BCW_NESTED)
        self._bcw_depth += 1
        self._gate.clear()
        outer_owner, outer_foreign = self._critical_owner, self._foreign_in_critical
        # The owner is this context: the closure's task and any task it starts (they copy it).
        owner = self._critical_owner = object()
        token = _critical_var.set(owner)
        self._foreign_in_critical = False
        try:
            yield
        finally:
            _critical_var.reset(token)
            self._critical_owner = outer_owner
            self._foreign_in_critical = self._foreign_in_critical or outer_foreign
            self._bcw_depth -= 1
            if self._bcw_depth == 0:
                self._gate.set()
                self._foreign_in_critical = False

    @property
    def foreign_storage_use(self) -> bool:
        """Whether another task used storage during the current critical section."""
        return self._foreign_in_critical

    def spawn(self, coro: Awaitable[Any], *, name: str | None = None) -> "asyncio.Task[Any]":
        """Own a background task (``ctx.wait_until``): the activation is not evicted while it runs."""
        ctx = contextvars.copy_context()
        ctx.run(_current.set, self)
        task = asyncio.get_running_loop().create_task(coro, name=name, context=ctx)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)
        return task

    async def drain(self, timeout: float) -> None:
        """Give background tasks (``wait_until``) up to ``timeout`` seconds, then cancel them."""
        tasks = [t for t in self._tasks if not t.done()]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # ------------------------------------------------------------------ resets and closing
    def reset(self, error: BaseException, reason: DeactivationReason) -> None:
        """Drop the instance and its uncommitted writes; sticky. Pending and future callers through
        this activation get ``ObjectResetError``; the next event builds a fresh activation."""
        if self.broken is not None:
            return
        log.warning("resetting %s: %s (%s)", self.describe(), error, reason.value)
        self.broken = error
        self.state = ActivationState.BROKEN
        fut = self._txn_future
        self._txn_future = None
        try:
            self.db.rollback()
        except Exception:  # pragma: no cover - rollback of a broken connection
            log.exception("rollback failed for %s", self.describe())
        if fut is not None and not fut.done():
            fut.set_exception(self._broken_copy())
        self.instance = None
        self._gate.set()
        for hook in list(self.on_reset):
            try:
                hook(self, error)
            except Exception:
                log.exception("reset hook failed for %s", self.describe())
        self.runtime._forget(self)
        try:
            self.db.close()
        except Exception:
            log.exception("closing database failed for %s", self.describe())

    def close(self, reason: DeactivationReason) -> None:
        """Evict an idle activation: commit anything open, close its database."""
        if self._txn_future is not None and self.broken is None:
            self.commit_now()
        if self.state not in (ActivationState.BROKEN, ActivationState.CLOSED):
            self.state = ActivationState.CLOSED
        self.instance = None
        self.db.close(offload=True)  # its fsyncs and checkpoint run on the maintenance thread

    def describe(self) -> str:
        name = f" ({self.id.name})" if self.id.name else ""
        return f"{self.unique_key}/{self.id}{name}"

    def statistics(self) -> dict[str, Any]:
        return {"state": self.state.value, "inflight": self.inflight, "waiting": self.waiting,
                "constructions": self.constructions, "db_open": self.db.is_open}
