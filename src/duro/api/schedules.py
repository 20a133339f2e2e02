"""Named schedules on top of the one alarm: ``ctx.storage.schedule(when, method, payload)``.

An object may hold many schedules — a delay, a time, or a cron expression, each with a method
to call and a payload — next to its own alarm. They live in the object's database
(:mod:`duro.storage.schedules`), written in its implicit transaction like any other write, and are
multiplexed on its one alarm: once an object has made a schedule, its alarm row holds the earliest
of the user's own alarm and every schedule's wake time, and :func:`fire` (called by the alarm
scheduler instead of ``alarm()``) runs what is due and sets the row again.

- ``get_alarm()`` keeps returning the user's own alarm; ``alarm()`` is called only when *that* time
  has come, with its own retry count.
- A failing schedule method is retried with the alarms' backoff (2 s, 4 s, ... 64 s, + 0-25 %),
  per schedule, at most 6 times; then a one-shot schedule is removed and a cron schedule waits for
  its next time. A failing ``alarm()`` is retried the same way, on its own count. Neither holds up
  the other or the other schedules.
- A reset (``abort()``, a failed commit) rolls back the whole turn; the alarm scheduler retries it
  with the same backoff. If that happens 7 times, or on ``abort(retryAlarm=False)``, everything
  due is given up (cron schedules wait for their next time) and the alarm row is set again
  (:func:`after_drop`), so the other schedules keep running.
- Catch-up for times missed while the server was down: ``core/schedules.py``.
"""

from __future__ import annotations

import datetime
import inspect
import logging
import secrets
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .. import codec
from ..core.alarms import AlarmInvocationInfo, RetryPolicy
from ..core.cron import CronExpression
from ..core.schedules import MISSED_AFTER_MS, CatchUp, Kind, ScheduleRecord, after_failure, after_success, gives_up, plan_fires
from ..storage.schedules import ScheduleStore
from .namespace import call_handler, find_handler, fit_args
from .facets import refuse_alarm

if TYPE_CHECKING:
    from ..runtime.activation import Activation

__all__ = ["Schedule", "after_drop", "fire", "install"]

log = logging.getLogger("duro.schedules")
_POLICY = RetryPolicy()
_MAX_ID = 256


@dataclass(frozen=True)
class Schedule:
    """A schedule as ``get_schedules()`` lists it, and as its method receives it (second argument).

    ``time`` is the time (epoch ms) of its next call — for the method, the time this call is for;
    ``missed`` the number of times missed while the server was down (or far behind) that this call
    stands for (``once``) or that were dropped (``skip``); ``retry_count`` the earlier failed calls
    for this same time."""

    id: str
    method: str
    payload: Any
    type: str
    time: int
    cron: str | None = None
    catch_up: str = "once"
    retry_count: int = 0
    missed: int = 0

    @property
    def callback(self) -> str:  # Agents SDK spelling
        return self.method

    @property
    def catchUp(self) -> str:  # noqa: N802
        return self.catch_up

    @property
    def retryCount(self) -> int:  # noqa: N802
        return self.retry_count

    @property
    def is_retry(self) -> bool:
        return self.retry_count > 0

    isRetry = is_retry  # noqa: N815

    @classmethod
    def of(cls, rec: ScheduleRecord, *, time: int | None = None, missed: int = 0) -> "Schedule":
        when = rec.due_ms if time is None else time
        return cls(rec.id, rec.method, codec.decode(rec.payload), rec.kind.value, when, rec.cron,
                   rec.catch_up.value, rec.retries if when == rec.due_ms else 0, missed)


# A Schedule can be returned from an RPC method as it is.
codec.register(Schedule, "duro.Schedule", lambda s: [s.id, s.method, s.payload, s.type, s.time, s.cron,
                                                     s.catch_up, s.retry_count, s.missed],
               lambda v: Schedule(*v))


# ---------------------------------------------------------------------------------------------- API
def _now(act: "Activation") -> int:
    return act.runtime.clock.now_ms()  # type: ignore[attr-defined, no-any-return]


def _store(act: "Activation") -> ScheduleStore:
    store = getattr(act, "_duro_schedule_store", None)
    if store is None:
        store = ScheduleStore(act.db)
        act._duro_schedule_store = store  # type: ignore[attr-defined]
    return store


def _first_time(when: Any, now_ms: int) -> tuple[Kind, str | None, int]:
    """``when`` as (kind, cron text, first due time)."""
    if isinstance(when, str):
        expr = CronExpression.parse(when)
        first = expr.next_after(now_ms)
        assert first is not None  # parse refuses expressions that never fire
        return Kind.CRON, expr.text, first
    if isinstance(when, datetime.datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
        return Kind.SCHEDULED, None, int(when.timestamp() * 1000)
    if isinstance(when, datetime.timedelta):
        return Kind.DELAYED, None, now_ms + int(when.total_seconds() * 1000)
    if isinstance(when, bool) or not isinstance(when, (int, float)):
        raise TypeError("schedule(when, ...): when must be a delay in seconds (int, float, timedelta), "
                        f"a datetime, or a cron string, not {type(when).__name__}")
    if when < 0:
        raise ValueError(f"schedule(when, ...): a delay cannot be negative ({when})")
    return Kind.DELAYED, None, now_ms + int(when * 1000)


def schedule(act: "Activation", when: Any, method: str, payload: Any = None, *, id: str | None = None,
             catch_up: "str | CatchUp" = "once", missed_after: Any = None) -> Schedule:
    """Make (or, with an ``id`` that exists, keep or replace) a schedule. See DurableObjectStorage."""
    if not isinstance(method, str) or not method:
        raise TypeError("schedule(when, method, ...): method must be the name of a method of the object")
    if method.startswith("_"):
        raise ValueError(f"schedule(): {method!r} is private; schedules call public methods only")
    instance = act.instance
    if instance is not None and not callable(getattr(instance, method, None)):
        raise TypeError(f"{type(instance).__name__} has no method {method!r} to schedule")
    policy = CatchUp.parse(catch_up)
    if id is not None and (not isinstance(id, str) or not id or len(id) > _MAX_ID):
        raise ValueError(f"schedule(): id must be a non-empty str of at most {_MAX_ID} characters")
    missed_after_ms = MISSED_AFTER_MS if missed_after is None else _seconds_ms(missed_after, "missed_after")
    now = _now(act)
    kind, cron, due = _first_time(when, now)
    data = codec.encode(payload)
    store = _store(act)
    ensure_mode(act, store)
    sid = id if id is not None else secrets.token_hex(8)
    rec = ScheduleRecord(sid, method, data, kind, cron, due, policy, rev=secrets.randbits(62),
                         missed_after_ms=missed_after_ms)
    old = store.get(sid) if id is not None else None
    if old is not None and (old.same_definition(rec) or (kind is Kind.DELAYED and old.kind is Kind.DELAYED
                                                          and _same_but_time(old, rec))):
        return Schedule.of(old)  # idempotent: the same schedule is not moved or reset
    store.put(rec)
    rearm(act, store)
    return Schedule.of(rec)


def _seconds_ms(v: Any, what: str) -> int:
    if isinstance(v, datetime.timedelta):
        v = v.total_seconds()
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise ValueError(f"schedule(): {what} must be a number of seconds >= 0 (or a timedelta), not {v!r}")
    return int(v * 1000)


def _same_but_time(a: ScheduleRecord, b: ScheduleRecord) -> bool:
    # A delay is relative to the call: asking again for the same delay keeps the first one's time.
    return (a.method, a.payload, a.catch_up, a.missed_after_ms) == (b.method, b.payload, b.catch_up,
                                                                   b.missed_after_ms)


def get_schedule(act: "Activation", schedule_id: str) -> Schedule | None:
    rec = _store(act).get(schedule_id)
    return None if rec is None else Schedule.of(rec)


def get_schedules(act: "Activation", type: str | None = None, time_range: Any = None) -> list[Schedule]:
    """Every schedule, soonest first; ``type`` ("delayed", "scheduled", "cron") and ``time_range``
    (``{"start": ms or datetime, "end": ...}``, on the next call's time) filter, as in the Agents SDK."""
    out = [Schedule.of(r) for r in _store(act).all()]
    if type is not None:
        Kind(type)  # a clear error for an unknown type
        out = [s for s in out if s.type == type]
    if time_range:
        get = time_range.get if isinstance(time_range, dict) else (lambda k: getattr(time_range, k, None))
        start, end = (_ms(get("start")), _ms(get("end")))
        out = [s for s in out if (start is None or s.time >= start) and (end is None or s.time <= end)]
    return out


def _ms(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.timezone.utc)
        return int(v.timestamp() * 1000)
    return int(v)


def cancel_schedule(act: "Activation", schedule_id: str) -> bool:
    """Remove a schedule; False if there was none with that id. A call already running finishes."""
    store = _store(act)
    if not store.delete(schedule_id):
        return False
    rearm(act, store)
    return True


# ---------------------------------------------------------------------------- the user's own alarm
def in_schedule_mode(act: "Activation") -> bool:
    return _store(act).active()


def get_user_alarm(act: "Activation") -> int | None:
    return _store(act).user_alarm()


def set_user_alarm(act: "Activation", when_ms: int) -> None:
    store = _store(act)
    store.set_user_alarm(max(int(when_ms), _now(act)))
    act._duro_user_alarm_touched = True  # type: ignore[attr-defined]
    rearm(act, store)


def delete_user_alarm(act: "Activation") -> None:
    store = _store(act)
    store.set_user_alarm(None)
    act._duro_user_alarm_touched = True  # type: ignore[attr-defined]
    rearm(act, store)


def ensure_mode(act: "Activation", store: ScheduleStore) -> None:
    """Enter schedule mode: the user's alarm moves from the alarm row to its own row."""
    if not store.active():
        store.activate(act.runtime.alarms.get_alarm(act))  # type: ignore[attr-defined]


def rearm(act: "Activation", store: ScheduleStore, *, force: bool = False) -> None:
    """Set the alarm row to the earliest of the user's alarm and every schedule's wake time.
    ``force``: write it even if unchanged (inside a firing, so the scheduler keeps it)."""
    ua = store.user_wake()
    sw = store.earliest_wake()
    target = min((t for t in (ua, sw) if t is not None), default=None)
    alarms = act.runtime.alarms  # type: ignore[attr-defined]
    if not force and target == act.db.get_alarm():
        return
    if target is None:
        alarms.delete_alarm(act)
    else:
        refuse_alarm(act)
        alarms.set_alarm(act, target)


# ---------------------------------------------------------------------------------------- firing
def install(scheduler: Any, legacy: Any) -> None:
    """Route the alarm scheduler's calls through :func:`fire`; ``legacy`` is the plain ``alarm()`` call."""

    async def invoke(instance: Any, info: AlarmInvocationInfo) -> bool:
        act = _activation_of(instance)
        if act is None or not _store(act).active():
            return bool(await legacy(instance, info))
        await fire(act, instance)
        return True

    scheduler.invoke = invoke
    scheduler.on_drop = after_drop


def _activation_of(instance: Any) -> "Activation | None":
    ctx = getattr(instance, "ctx", None)
    return getattr(ctx, "_act", None)


async def fire(act: "Activation", instance: Any) -> None:
    """Run every due schedule, then the user's alarm if its time has come, then set the row again."""
    store = _store(act)
    now = _now(act)
    for rec in store.due(now):
        current = store.get(rec.id)
        if current is None or current.rev != rec.rev:
            continue  # cancelled or replaced by an earlier call of this firing
        await _run_schedule(act, instance, store, current, now)
    await _run_user_alarm(act, instance, store, now)
    rearm(act, store, force=True)


def _rand(act: "Activation") -> float:
    return act.runtime.alarms.rand()  # type: ignore[attr-defined, no-any-return]


async def _run_schedule(act: "Activation", instance: Any, store: ScheduleStore, rec: ScheduleRecord,
                        now: int) -> None:
    plan = plan_fires(rec, now)
    what = f"schedule {rec.id!r} ({rec.method}) of {act.describe()}"
    if plan.missed:
        log.info("%s missed %d time(s) while the server was down or behind; catch_up=%s", what, plan.missed,
                 rec.catch_up.value)
    if not plan.fires:
        _save(store, rec, after_success(rec, plan))
        return
    payload = codec.decode(rec.payload)
    cur = rec
    for i, t in enumerate(plan.fires):
        view = Schedule.of(cur, time=t, missed=plan.missed)
        error: Exception | None = None
        try:
            fn = getattr(instance, rec.method, None)
            if fn is None or not callable(fn):
                raise TypeError(f"{type(instance).__name__} has no method {rec.method!r}")
            result = fn(*fit_args(fn, (payload, view)))
            if inspect.isawaitable(result):
                await result
        except Exception as e:
            if act.broken is not None:
                raise  # a reset: the turn is rolled back and the alarm scheduler retries it
            error = e
        latest = store.get(rec.id)
        if latest is None or latest.rev != rec.rev:
            return  # cancelled or replaced by the call itself
        if error is not None:
            last = gives_up(cur, t)
            nxt = after_failure(cur, t, plan, _now(act), lambda: _rand(act))
            if last:
                log.error("%s failed %d times; given up for %d (last error: %s: %s)", what,
                          _POLICY.max_retries + 1, t, type(error).__name__, error)
            else:
                assert nxt is not None
                log.warning("%s failed (retry %d of %d in %.1f s): %s: %s", what, nxt.retries,
                            _POLICY.max_retries, ((nxt.retry_at_ms or 0) - _now(act)) / 1000,
                            type(error).__name__, error)
            _save(store, cur, nxt)
            return
        if i + 1 < len(plan.fires):
            cur = replace(cur, due_ms=plan.fires[i + 1], retries=0, retry_at_ms=None)
            store.put(cur)  # progress through the missed times is kept even if a later call fails
        else:
            _save(store, cur, after_success(cur, plan))


def _save(store: ScheduleStore, old: ScheduleRecord, new: ScheduleRecord | None) -> None:
    if new is None:
        store.delete(old.id)
    else:
        store.put(new)


async def _run_user_alarm(act: "Activation", instance: Any, store: ScheduleStore, now: int) -> None:
    ua, wake = store.user_alarm(), store.user_wake()
    if ua is None or wake is None or wake > now:
        return
    retries = store.user_retries()
    store.set_user_alarm(None)  # while alarm() runs, get_alarm() is None unless it sets a new one
    if find_handler(instance, "alarm") is None:
        log.warning("%s has no alarm() handler; its alarm is dropped", act.describe())
        return
    act._duro_user_alarm_touched = False  # type: ignore[attr-defined]
    try:
        await call_handler(instance, "alarm", AlarmInvocationInfo(retry_count=retries, scheduled_time=ua))
    except Exception as e:
        if act.broken is not None:
            raise
        if getattr(act, "_duro_user_alarm_touched", False):
            log.warning("alarm() of %s failed after setting or deleting its alarm (no retry): %s: %s",
                        act.describe(), type(e).__name__, e)
        elif retries >= _POLICY.max_retries:
            log.error("alarm() of %s failed %d times; the alarm is dropped (last error: %s: %s)",
                      act.describe(), _POLICY.max_retries + 1, type(e).__name__, e)
        else:
            delay = _POLICY.delay_ms(retries + 1, lambda: _rand(act))
            store.set_user_alarm(ua, retries + 1, _now(act) + delay)
            log.warning("alarm() of %s failed (retry %d of %d in %.1f s): %s: %s", act.describe(), retries + 1,
                        _POLICY.max_retries, delay / 1000, type(e).__name__, e)


def after_drop(act: "Activation") -> None:
    """The alarm scheduler dropped the object's alarm row (7 resets in a row, or
    ``abort(retryAlarm=False)``): give up what is due and set the row for the rest."""
    store = _store(act)
    if not store.active():
        return
    now = _now(act)
    for rec in store.due(now):
        plan = plan_fires(rec, now)
        log.error("schedule %r (%s) of %s is given up for now: its calls reset the object", rec.id,
                  rec.method, act.describe())
        nxt = None if rec.kind is not Kind.CRON else after_success(rec, plan)
        if nxt is not None and nxt.due_ms <= now:  # ``all`` with a backlog: skip to the future
            expr = CronExpression.parse(rec.cron or "")
            n = expr.next_after(now)
            nxt = None if n is None else replace(rec, due_ms=n, retries=0, retry_at_ms=None)
        _save(store, rec, nxt)
    wake = store.user_wake()
    if wake is not None and wake <= now:
        store.set_user_alarm(None)
    rearm(act, store, force=True)
