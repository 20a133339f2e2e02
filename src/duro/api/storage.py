"""``ctx.storage``: the async KV API, ``sql``, ``kv``, transactions and ``sync`` for one object.

Every method checks that the activation is still live (a stale instance after a reset must not
write), then calls the synchronous storage layer. The async methods never suspend while they touch
SQLite, so a read-modify-write cannot interleave with another event (the input gate). Writes join
the activation's implicit transaction (write coalescing); outputs wait for them (output gate).
"""

from __future__ import annotations

import asyncio
import datetime
import math
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Generator, Mapping, TypeVar

from ..core.lifecycle import ActivationState, DeactivationReason
from ..core.limits import TEXT_ALARM_NO_HANDLER, TEXT_ALARM_TIME_NOT_POSITIVE, TEXT_DELETE_ALL_IN_TXN
from ..storage.history import schedule_restore, to_epoch_ms
from ..storage.journal import parse_bookmark
from ..errors import ObjectResetError
from .namespace import find_handler

if TYPE_CHECKING:
    from ..runtime import Activation

TRANSACTION_TIMEOUT_S = 30.0
TEXT_STORAGE_TIMEOUT = "Durable Object storage operation exceeded timeout which caused object to be reset."

__all__ = ["DurableObjectStorage", "JsDict", "Transaction"]

T = TypeVar("T")

_MISSING: Any = object()  # put()'s value when none was given (JavaScript's undefined)

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


class _Ready:
    """What a storage call returns: the call has happened (as on Cloudflare, where
    ``self.ctx.storage.put(k, v)`` without ``await`` still writes), and awaiting gives its result.
    It is a coroutine to asyncio (``send``/``throw``/``close``), so ``asyncio.create_task`` takes
    it; awaiting it costs about as much as awaiting a coroutine that does not suspend."""

    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value

    def __await__(self) -> Generator[Any, None, Any]:
        return self._value
        yield  # pragma: no cover - makes __await__ a generator that returns at once

    def send(self, _value: Any) -> Any:
        raise StopIteration(self._value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        raise typ if val is None else val

    def close(self) -> None:
        pass


_READY_NONE = _Ready(None)


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
        self.sql = _Guarded(activation, activation.db.sql)
        self.kv = _Guarded(activation, activation.db.kv)

    def _after_critical_section(self, method: Callable[..., Awaitable[T]], *args: Any,
                                **kwargs: Any) -> "asyncio.Task[T]":
        """The call once another event's ``transaction()`` is over, as a task (so that it is still
        made if nobody awaits it)."""
        async def later() -> T:
            await self._gate.wait_for_critical_section()
            return await method(*args, **kwargs)
        return asyncio.ensure_future(later())

    # ------------------------------------------------------------------ KV
    def get(self, key: str | list[str], opts: Any = None, **kwargs: Any) -> "Awaitable[Any]":
        if self._gate.owner is not None and self._gate.must_wait_for_critical_section():
            return self._after_critical_section(self.get, key, opts, **kwargs)
        _options("get", opts, kwargs)
        self._act.check_usable()
        if isinstance(key, (list, tuple)):
            return _Ready(JsDict(self._db.kv_get_many([_check_key(k) for k in key])))
        return _Ready(self._db.kv_get(_check_key(key)))

    def put(self, key: str | Mapping[str, Any], value: Any = _MISSING, opts: Any = None,
            **kwargs: Any) -> "Awaitable[None]":
        if self._gate.owner is not None and self._gate.must_wait_for_critical_section():
            return self._after_critical_section(self.put, key, value, opts, **kwargs)
        if isinstance(key, Mapping):
            if value is _MISSING:
                value = None
            if value is not None and opts is not None:
                raise TypeError(
                    "put() may only be called with a single key-value pair and optional options as "
                    "put(key, value, options) or with multiple key-value pairs and optional options as "
                    "put(entries, options)")
            o = _options("put", value if value is not None else opts, kwargs)
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
        return _READY_NONE

    def delete(self, key: str | list[str], opts: Any = None, **kwargs: Any) -> "Awaitable[bool | int]":
        if self._gate.owner is not None and self._gate.must_wait_for_critical_section():
            return self._after_critical_section(self.delete, key, opts, **kwargs)
        o = _options("delete", opts, kwargs)
        self._act.check_usable()
        was_open = self._db.in_transaction
        if isinstance(key, (list, tuple)):
            result: bool | int = self._db.kv_delete_many([_check_key(k) for k in key])
        else:
            result = self._db.kv_delete(_check_key(key))
        self._after_write(o, was_open)
        return _Ready(result)

    def list(self, opts: Any = None, **kwargs: Any) -> "Awaitable[JsDict]":
        if self._gate.owner is not None and self._gate.must_wait_for_critical_section():
            return self._after_critical_section(self.list, opts, **kwargs)
        o = _options("list", opts, kwargs, _LIST_NAMES)
        self._act.check_usable()
        args = {k: o[k] for k in ("start", "start_after", "end", "prefix", "reverse", "limit") if k in o}
        return _Ready(JsDict(self._db.kv_list(**args)))

    def _after_write(self, o: Mapping[str, Any], was_open: bool) -> None:
        # allow_unconfirmed exempts a transaction from the output gate only while every write in
        # it asked for that; any ordinary write makes the whole transaction gate outputs again.
        if o.get("allow_unconfirmed"):
            if not was_open:
                self._act.mark_unconfirmed_only()
        else:
            self._act.mark_confirmed()

    def delete_all(self, opts: Any = None, **kwargs: Any) -> "Awaitable[None]":
        if self._gate.owner is not None and self._gate.must_wait_for_critical_section():
            return self._after_critical_section(self.delete_all, opts, **kwargs)
        _options("deleteAll", opts, kwargs)
        if self._txn_depth:
            raise RuntimeError(TEXT_DELETE_ALL_IN_TXN)
        self._act.check_usable()
        self._db.delete_all()
        self._act.runtime.alarms.note_delete_all(self._act)  # the alarm goes too (§13.10)
        self._act.mark_confirmed()
        self._act.after_delete_all()
        return _READY_NONE

    deleteAll = delete_all  # noqa: N815

    # ------------------------------------------------------------------ alarms
    def get_alarm(self, opts: Any = None, **kwargs: Any) -> "Awaitable[int | None]":
        """The alarm time in epoch milliseconds, or None. None also while ``alarm()`` runs, unless
        a new alarm was set meanwhile; a failed alarm waiting for its retry still counts as set."""
        if self._gate.owner is not None and self._gate.must_wait_for_critical_section():
            return self._after_critical_section(self.get_alarm, opts, **kwargs)
        _options("getAlarm", opts, kwargs)
        self._act.check_usable()
        return _Ready(self._act.runtime.alarms.get_alarm(self._act))

    def set_alarm(self, scheduled_time: Any, opts: Any = None, **kwargs: Any) -> "Awaitable[None]":
        """Replace the object's alarm: ``alarm()`` runs at ``scheduled_time`` (epoch milliseconds, or
        a ``datetime``; naive means UTC). A time in the past fires at once. The write joins the
        implicit transaction like any other."""
        if self._gate.owner is not None and self._gate.must_wait_for_critical_section():
            return self._after_critical_section(self.set_alarm, scheduled_time, opts, **kwargs)
        o = _options("setAlarm", opts, kwargs)
        when = alarm_time_ms(scheduled_time)
        act = self._act
        act.check_usable()
        # Inside the constructor the handler is not checked (as on Cloudflare); a class without one
        # then has its alarm dropped when it fires.
        if act.instance is not None and act.state is not ActivationState.CONSTRUCTING \
                and find_handler(act.instance, "alarm") is None:
            raise TypeError(TEXT_ALARM_NO_HANDLER)
        was_open = self._db.in_transaction
        act.runtime.alarms.set_alarm(act, when)
        self._after_write(o, was_open)
        return _READY_NONE

    def delete_alarm(self, opts: Any = None, **kwargs: Any) -> "Awaitable[None]":
        """Remove the alarm. Does not stop a running ``alarm()``; called inside it, it prevents the
        retry should that call fail."""
        if self._gate.owner is not None and self._gate.must_wait_for_critical_section():
            return self._after_critical_section(self.delete_alarm, opts, **kwargs)
        o = _options("deleteAlarm", opts, kwargs)
        self._act.check_usable()
        was_open = self._db.in_transaction
        self._act.runtime.alarms.delete_alarm(self._act)
        self._after_write(o, was_open)
        return _READY_NONE

    getAlarm = get_alarm  # noqa: N815
    setAlarm = set_alarm  # noqa: N815
    deleteAlarm = delete_alarm  # noqa: N815

    # ------------------------------------------------------------------ transactions
    def transaction_sync(self, fn: Callable[[], T]) -> T:
        self._act.check_usable()
        return self._db.transaction_sync(fn)

    transactionSync = transaction_sync  # noqa: N815

    async def transaction(self, closure: Callable[["Transaction"], Awaitable[T]]) -> T:
        """Run ``closure(txn)`` atomically with the input gate closed. If it raises, every write
        it made (including the alarm) is rolled back and the error re-raised; the object is not
        reset."""
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
                    result = closure(txn)
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
                return result  # type: ignore[no-any-return]
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

    async def get_current_bookmark(self) -> str:
        """A bookmark (opaque string, sorts in commit order) for the current state."""
        await self._commit_for_bookmark()
        return self._db.attached_history().current().bookmark

    async def get_bookmark_for_time(self, timestamp: Any) -> str:
        """The bookmark of the state at ``timestamp`` (epoch ms or ``datetime``; naive = UTC), which
        must lie within the retention window (30 days by default)."""
        ms = to_epoch_ms(timestamp)
        self._act.check_usable()
        return self._db.attached_history().for_time(ms).bookmark

    async def on_next_session_restore_bookmark(self, bookmark: str) -> str:
        """Restore the database to ``bookmark`` when the object next starts; call ``ctx.abort()``
        to make that now. Returns a bookmark of the state just before the restore (to undo it)."""
        parse_bookmark(bookmark)
        await self._commit_for_bookmark()
        history = self._db.attached_history()
        history.resolve(bookmark)
        undo = history.current().bookmark
        schedule_restore(self._db.path, bookmark)
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


class Transaction:
    """The ``txn`` handed to a ``transaction()`` closure. Every storage call inside the closure is
    part of the transaction anyway; ``txn`` exists for Cloudflare compatibility and ``rollback()``."""

    def __init__(self, storage: DurableObjectStorage) -> None:
        self._storage = storage
        self._done = False
        self._rolled_back = False
        self._savepoint: str | None = None

    def _check(self, op: str) -> None:
        if self._done:
            raise RuntimeError(f"Cannot call {op} on transaction that has already committed: "
                               "did you move `txn` outside of the closure?")
        if self._rolled_back:
            raise RuntimeError(f"Cannot {op} on rolled back transaction")

    async def get(self, *a: Any, **k: Any) -> Any:
        self._check("get")
        return await self._storage.get(*a, **k)

    async def put(self, *a: Any, **k: Any) -> None:
        self._check("put")
        await self._storage.put(*a, **k)

    async def delete(self, *a: Any, **k: Any) -> Any:
        self._check("delete")
        return await self._storage.delete(*a, **k)

    async def list(self, *a: Any, **k: Any) -> JsDict:
        self._check("list")
        return await self._storage.list(*a, **k)

    async def delete_all(self, *a: Any, **k: Any) -> None:
        raise RuntimeError(TEXT_DELETE_ALL_IN_TXN)

    deleteAll = delete_all  # noqa: N815

    def rollback(self) -> None:
        self._check("rollback")
        assert self._savepoint is not None
        self._storage._db.rollback_to(self._savepoint)
        self._rolled_back = True

    def __getattr__(self, name: str) -> Any:
        # Alarm methods and any other storage method, with the same checks.
        target = getattr(self._storage, name)
        if not callable(target):
            return target

        async def call(*a: Any, **k: Any) -> Any:
            self._check(name)
            r = target(*a, **k)
            return await r if hasattr(r, "__await__") else r
        return call
