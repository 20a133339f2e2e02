"""``ctx.storage``: the async KV API, ``sql``, ``kv``, transactions and ``sync`` for one object.

Every method checks that the activation is still live (a stale instance after a reset must not
write), then calls the synchronous storage layer. The "async" methods do their work when called,
awaited or not (as on Cloudflare), and return an already finished awaitable (``runtime.calls``);
they never suspend while they touch SQLite, so a read-modify-write cannot interleave with another
event (the input gate). Writes join the activation's implicit transaction (write coalescing);
outputs wait for them (output gate). A failed call nobody awaits resets the object.
"""

from __future__ import annotations

import asyncio
import datetime
import math
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine, Mapping, TypeVar, cast

from ..core.lifecycle import ActivationState, DeactivationReason
from ..core.limits import TEXT_ALARM_NO_HANDLER, TEXT_ALARM_TIME_NOT_POSITIVE, TEXT_DELETE_ALL_IN_TXN
from ..storage.history import schedule_restore, to_epoch_ms
from ..storage.journal import parse_bookmark
from ..errors import ObjectResetError, StorageError
from ..runtime.calls import Completed, Failed, Pending
from . import schedules, snapshots
from .snapshots import DurableObjectSnapshot
from .facets import refuse_alarm
from .namespace import find_handler
from .transaction import Transaction

if TYPE_CHECKING:
    from ..runtime import Activation

TRANSACTION_TIMEOUT_S = 30.0
TEXT_STORAGE_TIMEOUT = "Durable Object storage operation exceeded timeout which caused object to be reset."

__all__ = ["DurableObjectStorage", "JsDict", "Transaction"]

T = TypeVar("T")
_ListOf = list  # inside DurableObjectStorage, ``list`` names a method

_MISSING: Any = object()  # put()'s value when none was given (JavaScript's undefined)
_NONE = Completed(None)  # the result of every call that returns nothing (awaiting never changes it)

_OPTION_NAMES = {
    "allow_concurrency": "allow_concurrency", "allowConcurrency": "allow_concurrency",
    "allow_unconfirmed": "allow_unconfirmed", "allowUnconfirmed": "allow_unconfirmed",
    "no_cache": "no_cache", "noCache": "no_cache",
}
_LIST_NAMES = {
    "start": "start", "start_after": "start_after", "startAfter": "start_after", "end": "end",
    "prefix": "prefix", "reverse": "reverse", "limit": "limit",
}


class JsDict(dict):  # type: ignore[type-arg]
    """A dict in key order, as Cloudflare's Python SDK returns maps; ``to_py()`` is a no-op."""

    def to_py(self) -> "JsDict":
        return self

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _options(method: str, opts: Any, kwargs: Mapping[str, Any], extra: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Merge a trailing options dict and keyword options; refuse unknown names."""
    merged: dict[str, Any] = {}
    items: list[tuple[str, Any]] = []
    if opts is not None:
        if not isinstance(opts, Mapping):
            raise TypeError(f"{method}() options must be a dict of options, not {type(opts).__name__}")
        items.extend(opts.items())
    items.extend(kwargs.items())
    for name, value in items:
        canon = _OPTION_NAMES.get(name) or (extra or {}).get(name)
        if canon is None:
            raise TypeError(f"{method}() got an unknown option {name!r}")
        merged[canon] = value
    return merged


def _check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"storage keys must be str, not {type(key).__name__}")
    return key


class _Guarded:
    """Forwards to a storage-layer object after checking the activation is still live."""

    __slots__ = ("_act", "_target")

    def __init__(self, act: "Activation", target: Any) -> None:
        self._act = act
        self._target = target

    def __getattr__(self, name: str) -> Any:
        act = self._act
        act.check_usable()
        # SQL and sync-KV calls may write: the open transaction gates outputs again, even if it
        # began with an allow_unconfirmed put.
        act.mark_confirmed()
        return getattr(self._target, name)


class DurableObjectStorage:
    """The storage of one object (``ctx.storage``)."""

    def __init__(self, activation: "Activation") -> None:
        self._act = activation
        self._gate = activation.in_gate
        self._db = activation.db
        self._txn_depth = 0
        self._queued: "asyncio.Task[Any] | None" = None  # the last call waiting for a transaction()
        self.sql = _Guarded(activation, activation.db.sql)
        self.kv = _Guarded(activation, activation.db.kv)

    # ------------------------------------------------------------------ calls
    # Every async method does its work when it is called, awaited or not, and returns an
    # already-finished awaitable (``runtime.calls``): ``self.ctx.storage.put("k", v)`` without
    # ``await`` stores the value, as on Cloudflare. An error is raised where the result is
    # awaited; a failed result nobody awaits resets the object (``Activation.
    # unawaited_storage_failure``). Only while another event's ``transaction()`` runs does a call
    # wait (as if the input gate had held its event back): it then runs as a task, in call order.
    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        if self._gate.owner is not None or self._queued is not None:
            if self._must_queue():
                return self._queue(what, fn, args)
        try:
            result = fn(*args)
        except Exception as e:
            return Failed(e, what, self._act.unawaited_storage_failure)
        return _NONE if result is None else Completed(result)

    def _must_queue(self) -> bool:
        gate = self._gate
        if gate.owner is not None:
            # Another event's transaction() runs: wait for it. Its own calls never wait for it.
            return not gate.in_own_critical_section()
        queued = self._queued
        if queued is not None and not queued.done():
            return True  # after a call still waiting: keep call order
        self._queued = None
        return False

    def _queue(self, what: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> Pending:
        prev = self._queued
        gate = self._gate

        async def later() -> Any:
            if prev is not None and not prev.done():
                await asyncio.wait((prev,))
            await gate.wait_for_critical_section()
            return fn(*args)

        task = asyncio.get_running_loop().create_task(later())
        self._act.own(task)
        self._queued = task
        return Pending(task, what, self._act.unawaited_storage_failure)

    # ------------------------------------------------------------------ KV
    def get(self, key: str | list[str], opts: Any = None, **kwargs: Any) -> Awaitable[Any]:
        return self._call("get", self._get, key, opts, kwargs)

    def _get(self, key: Any, opts: Any, kwargs: Mapping[str, Any]) -> Any:
        _options("get", opts, kwargs)
        self._act.check_usable()
        if isinstance(key, (list, tuple)):
            return JsDict(self._db.kv_get_many([_check_key(k) for k in key]))
        return self._db.kv_get(_check_key(key))

    def put(self, key: str | Mapping[str, Any], value: Any = _MISSING, opts: Any = None,
            **kwargs: Any) -> Awaitable[None]:
        return self._call("put", self._put, key, value, opts, kwargs)

    def _put(self, key: Any, value: Any, opts: Any, kwargs: Mapping[str, Any]) -> None:
        if isinstance(key, Mapping):
            # put(entries, options): the second argument is the options (a third is ignored, as
            # on Cloudflare); anything but options there is refused with Cloudflare's text.
            if value is _MISSING or value is None:
                value = None
            elif not isinstance(value, Mapping):
                raise TypeError(
                    "put() may only be called with a single key-value pair and optional options as "
                    "put(key, value, options) or with multiple key-value pairs and optional options as "
                    "put(entries, options)")
            o = _options("put", value, kwargs)
            entries = {_check_key(k): v for k, v in key.items()}
            self._act.check_usable()
            was_open = self._db.in_transaction
            self._db.kv_put_many(entries)
        else:
            if value is _MISSING:  # put("k") with the value forgotten: Cloudflare refuses undefined
                raise TypeError("put() called with undefined value.")
            o = _options("put", opts, kwargs)
            self._act.check_usable()
            was_open = self._db.in_transaction
            self._db.kv_put(_check_key(key), value)
        self._after_write(o, was_open)

    def delete(self, key: str | list[str], opts: Any = None, **kwargs: Any) -> Awaitable[bool | int]:
        return self._call("delete", self._delete, key, opts, kwargs)

    def _delete(self, key: Any, opts: Any, kwargs: Mapping[str, Any]) -> bool | int:
        o = _options("delete", opts, kwargs)
        self._act.check_usable()
        was_open = self._db.in_transaction
        if isinstance(key, (list, tuple)):
            result: bool | int = self._db.kv_delete_many([_check_key(k) for k in key])
        else:
            result = self._db.kv_delete(_check_key(key))
        self._after_write(o, was_open)
        return result

    def list(self, opts: Any = None, **kwargs: Any) -> Awaitable[JsDict]:
        return self._call("list", self._list, opts, kwargs)

    def _list(self, opts: Any, kwargs: Mapping[str, Any]) -> JsDict:
        o = _options("list", opts, kwargs, _LIST_NAMES)
        self._act.check_usable()
        args = {k: o[k] for k in ("start", "start_after", "end", "prefix", "reverse", "limit") if k in o}
        return JsDict(self._db.kv_list(**args))

    def _after_write(self, o: Mapping[str, Any], was_open: bool) -> None:
        # allow_unconfirmed exempts a transaction from the output gate only while every write in
        # it asked for that; any ordinary write makes the whole transaction gate outputs again.
        if o.get("allow_unconfirmed"):
            if not was_open:
                self._act.mark_unconfirmed_only()
        else:
            self._act.mark_confirmed()

    def delete_all(self, opts: Any = None, **kwargs: Any) -> Awaitable[None]:
        return self._call("deleteAll", self._delete_all, opts, kwargs)

    def _delete_all(self, opts: Any, kwargs: Mapping[str, Any]) -> None:
        _options("deleteAll", opts, kwargs)
        if self._txn_depth:
            raise RuntimeError(TEXT_DELETE_ALL_IN_TXN)
        self._act.check_usable()
        self._db.delete_all()
        self._act.runtime.alarms.note_delete_all(self._act)  # the alarm goes too (§13.10)
        self._act.mark_confirmed()
        self._act.after_delete_all()

    deleteAll = delete_all  # noqa: N815

    # ------------------------------------------------------------------ alarms
    def get_alarm(self, opts: Any = None, **kwargs: Any) -> Awaitable[int | None]:
        """The alarm time in epoch milliseconds, or None. None also while ``alarm()`` runs, unless
        a new alarm was set meanwhile; a failed alarm waiting for its retry still counts as set."""
        return self._call("getAlarm", self._get_alarm, opts, kwargs)

    def _get_alarm(self, opts: Any, kwargs: Mapping[str, Any]) -> int | None:
        _options("getAlarm", opts, kwargs)
        self._act.check_usable()
        if schedules.in_schedule_mode(self._act):
            return schedules.get_user_alarm(self._act)  # the row also serves the schedules
        return self._act.runtime.alarms.get_alarm(self._act)

    def set_alarm(self, scheduled_time: Any, opts: Any = None, **kwargs: Any) -> Awaitable[None]:
        """Replace the object's alarm: ``alarm()`` runs at ``scheduled_time`` (epoch milliseconds, or
        a ``datetime``; naive means UTC). A time in the past fires at once. The write joins the
        implicit transaction like any other."""
        return self._call("setAlarm", self._set_alarm, scheduled_time, opts, kwargs)

    def _set_alarm(self, scheduled_time: Any, opts: Any, kwargs: Mapping[str, Any]) -> None:
        o = _options("setAlarm", opts, kwargs)
        when = alarm_time_ms(scheduled_time)
        act = self._act
        act.check_usable()
        refuse_alarm(act)
        # Inside the constructor the handler is not checked (as on Cloudflare); a class without one
        # then has its alarm dropped when it fires.
        if act.instance is not None and act.state is not ActivationState.CONSTRUCTING \
                and find_handler(act.instance, "alarm") is None:
            raise TypeError(TEXT_ALARM_NO_HANDLER)
        was_open = self._db.in_transaction
        if schedules.in_schedule_mode(act):
            schedules.set_user_alarm(act, when)
        else:
            act.runtime.alarms.set_alarm(act, when)
        self._after_write(o, was_open)

    def delete_alarm(self, opts: Any = None, **kwargs: Any) -> Awaitable[None]:
        """Remove the alarm. Does not stop a running ``alarm()``; called inside it, it prevents the
        retry should that call fail."""
        return self._call("deleteAlarm", self._delete_alarm, opts, kwargs)

    def _delete_alarm(self, opts: Any, kwargs: Mapping[str, Any]) -> None:
        o = _options("deleteAlarm", opts, kwargs)
        self._act.check_usable()
        was_open = self._db.in_transaction
        if schedules.in_schedule_mode(self._act):
            schedules.delete_user_alarm(self._act)
        else:
            self._act.runtime.alarms.delete_alarm(self._act)
        self._after_write(o, was_open)

    getAlarm = get_alarm  # noqa: N815
    setAlarm = set_alarm  # noqa: N815
    deleteAlarm = delete_alarm  # noqa: N815

    # ------------------------------------------------------------------ schedules (docs/schedules.md)
    def schedule(self, when: Any, method: str, payload: Any = None, *, id: str | None = None,
                 catch_up: str = "once", missed_after: Any = None,
                 **kwargs: Any) -> "Awaitable[schedules.Schedule]":
        """Call ``self.<method>(payload, schedule)`` later: ``when`` is a delay in seconds (or a
        ``timedelta``), a ``datetime``, or a cron expression (UTC, Cloudflare syntax; repeats).
        ``payload`` is stored with the value codec. With an ``id`` that already names the same
        schedule, nothing changes (idempotent); a different one with that id is replaced.
        ``catch_up`` ("once", "all", "skip") says what to do with times missed while the server
        was down; a time counts as missed once it is ``missed_after`` seconds late (default 60).
        Many schedules share the object's one alarm; ``get_alarm()`` still returns the object's
        own. Written in the implicit transaction, like any other write."""
        catch_up = kwargs.pop("catchUp", catch_up)
        missed_after = kwargs.pop("missedAfter", missed_after)
        if kwargs:
            raise TypeError(f"schedule() got unexpected keyword arguments: {', '.join(sorted(kwargs))}")
        return self._call("schedule", self._schedule, when, method, payload, id, catch_up, missed_after)

    def _schedule(self, when: Any, method: str, payload: Any, id: str | None, catch_up: str,
                  missed_after: Any) -> Any:
        act = self._act
        act.check_usable()
        was_open = self._db.in_transaction
        result = schedules.schedule(act, when, method, payload, id=id, catch_up=catch_up,
                                    missed_after=missed_after)
        self._after_write({}, was_open)
        return result

    def get_schedule(self, id: str) -> "Awaitable[schedules.Schedule | None]":
        """The schedule with this id, or None."""
        return self._call("getSchedule", self._read_schedules, schedules.get_schedule, id)

    def get_schedules(self, criteria: Any = None, *, type: str | None = None,
                      time_range: Any = None) -> "Awaitable[_ListOf[schedules.Schedule]]":
        """Every schedule, soonest first; filtered by ``type`` ("delayed", "scheduled", "cron") and
        ``time_range`` ({"start": ..., "end": ...}) as in the Agents SDK (``criteria`` may hold both)."""
        if isinstance(criteria, dict):
            type = criteria.get("type", type)
            time_range = criteria.get("timeRange", criteria.get("time_range", time_range))
        return self._call("getSchedules", self._read_schedules, schedules.get_schedules, type, time_range)

    def _read_schedules(self, fn: Callable[..., Any], *args: Any) -> Any:
        self._act.check_usable()
        return fn(self._act, *args)

    def cancel_schedule(self, id: str) -> Awaitable[bool]:
        """Remove a schedule; False if none has this id. A call already running is not stopped."""
        return self._call("cancelSchedule", self._cancel_schedule, id)

    def _cancel_schedule(self, id: str) -> bool:
        act = self._act
        act.check_usable()
        was_open = self._db.in_transaction
        result = schedules.cancel_schedule(act, id)
        self._after_write({}, was_open)
        return result

    getSchedule = get_schedule  # noqa: N815
    getSchedules = get_schedules  # noqa: N815
    cancelSchedule = cancel_schedule  # noqa: N815

    # ------------------------------------------------------------------ transactions
    def transaction_sync(self, fn: Callable[[], T]) -> T:
        self._act.check_usable()
        return self._db.transaction_sync(fn)

    transactionSync = transaction_sync  # noqa: N815

    def transaction(self, closure: Callable[["Transaction"], Awaitable[T]]) -> Awaitable[T]:
        """Run ``closure(txn)`` atomically with the input gate closed. If it raises, every write
        it made (including the alarm) is rolled back and the error re-raised; the object is not
        reset. It starts when called (as a task of its own), awaited or not."""
        return self._start("transaction", self._transaction, closure)

    def _start(self, what: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Start ``fn(*args)`` now as a task the activation owns; awaitable like every call."""
        try:
            self._act.check_usable()
        except Exception as e:
            return Failed(e, what, self._act.unawaited_storage_failure)
        task: "asyncio.Task[Any]" = asyncio.get_running_loop().create_task(cast("Coroutine[Any, Any, Any]", fn(*args)))
        self._act.own(task)
        return Pending(task, what, self._act.unawaited_storage_failure)

    async def _transaction(self, closure: Callable[["Transaction"], Awaitable[T]]) -> T:
        act = self._act
        act.check_usable()
        act.hold_commits()
        self._txn_depth += 1
        txn = Transaction(self)
        try:
            async with act.in_gate.critical_section():
                name = self._db.savepoint()
                txn._savepoint = name
                try:
                    result: Any = closure(txn)
                    if hasattr(result, "__await__"):
                        async with asyncio.timeout(TRANSACTION_TIMEOUT_S):
                            result = await result
                except BaseException as e:
                    if act.in_gate.broken is None:
                        if isinstance(e, TimeoutError):
                            act.reset(ObjectResetError(TEXT_STORAGE_TIMEOUT), DeactivationReason.CRITICAL_SECTION_FAILED)
                            raise act.in_gate.reset_error() from None
                        if act.in_gate.foreign_use:
                            # Another event's writes landed inside this savepoint while it was open;
                            # undoing them silently would lose acknowledged work: reset instead, which
                            # fails that event's output too.
                            act.reset(e, DeactivationReason.CRITICAL_SECTION_FAILED)
                        else:
                            self._db.rollback_to(name)
                    raise
                finally:
                    txn._done = True
                act.mark_confirmed()
                self._db.release(name)
                return cast(T, result)
        finally:
            self._txn_depth -= 1
            act.release_commits()

    async def sync(self) -> None:
        """Wait until every write made so far is durable."""
        self._act.check_usable()
        await self._act.sync()

    # ------------------------------------------------------------------ point-in-time recovery
    async def _commit_for_bookmark(self) -> None:
        self._act.check_usable()
        if self._db.in_transaction and not self._txn_depth:
            await self._act.sync()  # a bookmark covers every write made before asking for it

    def get_current_bookmark(self) -> Awaitable[str]:
        """A bookmark (opaque string, sorts in commit order) for the current state."""
        return self._start("getCurrentBookmark", self._get_current_bookmark)

    async def _get_current_bookmark(self) -> str:
        await self._commit_for_bookmark()
        return self._db.attached_history().current().bookmark

    def get_bookmark_for_time(self, timestamp: Any) -> Awaitable[str]:
        """The bookmark of the state at ``timestamp`` (epoch ms or ``datetime``; naive = UTC), which
        must lie within the retention window (30 days by default)."""
        return self._call("getBookmarkForTime", self._get_bookmark_for_time, timestamp)

    def _get_bookmark_for_time(self, timestamp: Any) -> str:
        ms = to_epoch_ms(timestamp)
        self._act.check_usable()
        return self._db.attached_history().for_time(ms).bookmark

    def on_next_session_restore_bookmark(self, bookmark: str) -> Awaitable[str]:
        """Restore the database to ``bookmark`` when the object next starts; call ``ctx.abort()``
        to make that now. Returns a bookmark of the state just before the restore (to undo it)."""
        try:
            parse_bookmark(bookmark)
        except Exception as e:
            return Failed(e, "onNextSessionRestoreBookmark", self._act.unawaited_storage_failure)
        return self._start("onNextSessionRestoreBookmark", self._on_next_session_restore_bookmark, bookmark)

    async def _on_next_session_restore_bookmark(self, bookmark: str) -> str:
        await self._commit_for_bookmark()
        history = self._db.attached_history()
        history.resolve(bookmark)
        undo = history.current().bookmark
        schedule_restore(self._db.path, bookmark)
        return undo

    def snapshot(self, bookmark: str | None = None) -> "Awaitable[DurableObjectSnapshot]":
        """A copy of this object's storage as it is now (or at ``bookmark``), to start another
        object from with ``ctx.onNextSessionRestore()`` (``api/snapshots.py``)."""
        return self._start("snapshot", self._snapshot, bookmark)

    async def _snapshot(self, bookmark: str | None) -> "DurableObjectSnapshot":
        if bookmark is not None:
            parse_bookmark(bookmark)
        if self._txn_depth:
            raise StorageError("snapshot() cannot be called inside transaction(): a snapshot is of committed "
                               "state; take it before or after the transaction")
        await self._commit_for_bookmark()
        return snapshots.take_snapshot(self._act, bookmark)

    def _next_session_restore(self, snapshot: "DurableObjectSnapshot") -> Awaitable[str]:
        """``ctx.onNextSessionRestore(snapshot)``: the next start replaces this object's storage
        with the snapshot's; returns a bookmark of the state just before (to undo it)."""
        return self._start("onNextSessionRestore", self._schedule_snapshot, snapshot)

    async def _schedule_snapshot(self, snapshot: "DurableObjectSnapshot") -> str:
        await self._commit_for_bookmark()
        undo = self._db.attached_history().current().bookmark
        snapshots.schedule_snapshot_restore(self._act, snapshot)
        return undo

    getCurrentBookmark = get_current_bookmark  # noqa: N815
    getBookmarkForTime = get_bookmark_for_time  # noqa: N815
    onNextSessionRestoreBookmark = on_next_session_restore_bookmark  # noqa: N815

    # ------------------------------------------------------------------ misc
    @property
    def database_size(self) -> int:
        self._act.check_usable()
        return int(self._db.database_size)


def alarm_time_ms(when: Any) -> int:
    """``set_alarm``'s argument as whole epoch milliseconds (fractions are truncated, §13.9)."""
    if isinstance(when, datetime.datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
        ms = (when - _EPOCH) // datetime.timedelta(milliseconds=1)
        if ms <= 0:
            raise TypeError(TEXT_ALARM_TIME_NOT_POSITIVE)
        return int(ms)
    if isinstance(when, bool) or not isinstance(when, (int, float)):
        raise TypeError(f"setAlarm() takes a time in epoch milliseconds (int or float) or a datetime, "
                        f"not {type(when).__name__}")
    if isinstance(when, float) and not math.isfinite(when):
        raise TypeError(f"setAlarm() takes a finite time, not {when}")
    if when <= 0:
        raise TypeError(TEXT_ALARM_TIME_NOT_POSITIVE)
    return int(when)


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
