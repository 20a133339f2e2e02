"""Named schedules of one object, Sans-I/O: what a schedule is, when it is due, which times to call
its method for when it fires (the catch-up policy), and what comes after a success or a failure.

A schedule is a delay, a time, or a cron expression (Cloudflare syntax, :mod:`duro.core.cron`),
with a method name and a payload. Many live in one object; they are multiplexed on its one alarm
(the runtime side is :mod:`duro.api.schedules`). This module never reads a clock, touches a file or
uses asyncio: callers pass ``now_ms`` and ``rand`` in and persist what it returns.

The catch-up policy says what to do with times that were *missed* — due more than the schedule's
``missed_after_ms`` (default :data:`MISSED_AFTER_MS`, one minute) ago when the schedule is looked
at (the server was down, or far behind):

- ``once`` (default): call the method once, for the latest missed time (its info says how many
  times were folded into that call);
- ``all``: call it for every missed time, oldest first (at most :data:`MAX_CATCH_UP` of them per
  wake-up; older ones are skipped and counted);
- ``skip``: call it for none of them; a cron schedule waits for its next time, a one-shot schedule
  is removed. (As Quartz's "do nothing" misfire rule: it is the schedule's *first* due time that
  decides; when that one was missed, every later time up to now is skipped with it.)

A time that is due but not missed (the usual few milliseconds late) is always called.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Callable

from .alarms import RetryPolicy
from .cron import MINUTE_MS, CronExpression

__all__ = ["CatchUp", "FirePlan", "Kind", "MAX_CATCH_UP", "MISSED_AFTER_MS", "ScheduleRecord",
           "after_failure", "after_success", "gives_up", "plan_fires"]

# Later than this, a due time counts as missed (Quartz's default misfire threshold is the same).
MISSED_AFTER_MS = 60_000
# ``all`` calls at most this many missed times per wake-up; older ones are skipped (and logged).
MAX_CATCH_UP = 1_000


class CatchUp(enum.Enum):
    ONCE = "once"
    ALL = "all"
    SKIP = "skip"

    @classmethod
    def parse(cls, value: "str | CatchUp") -> "CatchUp":
        if isinstance(value, CatchUp):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise ValueError(f"catch_up must be 'once', 'all' or 'skip', not {value!r}") from None


class Kind(enum.Enum):
    """Agents SDK's names for the three kinds."""

    DELAYED = "delayed"      # a delay from the time it was made
    SCHEDULED = "scheduled"  # a point in time
    CRON = "cron"            # a cron expression (UTC)


@dataclass(frozen=True)
class ScheduleRecord:
    """One schedule as stored. ``due_ms`` is the time the next call is for; ``retry_at_ms`` (with
    ``retries`` > 0) is when a failed call of ``due_ms`` is tried again. ``rev`` changes whenever
    the schedule is replaced, so a fire never overwrites a newer definition."""

    id: str
    method: str
    payload: bytes
    kind: Kind
    cron: str | None
    due_ms: int
    catch_up: CatchUp
    rev: int
    retries: int = 0
    retry_at_ms: int | None = None
    missed_after_ms: int = MISSED_AFTER_MS

    @property
    def wake_ms(self) -> int:
        """When the object must be woken for this schedule."""
        return self.retry_at_ms if self.retry_at_ms is not None else self.due_ms

    def same_definition(self, other: "ScheduleRecord") -> bool:
        """Whether ``other`` asks for the same thing (``schedule()`` with an existing id)."""
        return (self.method, self.payload, self.kind, self.cron, self.catch_up, self.missed_after_ms) == \
            (other.method, other.payload, other.kind, other.cron, other.catch_up, other.missed_after_ms) and \
            (self.kind is Kind.CRON or self.due_ms == other.due_ms)


@dataclass(frozen=True)
class FirePlan:
    """The times to call the method for now (oldest first), how many missed times were folded
    into them or skipped, and the schedule's next time after them (None: a one-shot schedule)."""

    fires: tuple[int, ...]
    missed: int
    next_due: int | None


def _expr(rec: ScheduleRecord) -> CronExpression:
    assert rec.cron is not None
    return CronExpression.parse(rec.cron)


def plan_fires(rec: ScheduleRecord, now_ms: int, *, max_catch_up: int = MAX_CATCH_UP) -> FirePlan:
    """What to call for ``rec`` at ``now_ms`` (its wake time has come)."""
    missed_after_ms = rec.missed_after_ms
    if rec.kind is not Kind.CRON:
        if rec.retries > 0:
            return FirePlan((rec.due_ms,), 0, None)  # a retry is made whatever the policy
        missed = now_ms - rec.due_ms > missed_after_ms
        if missed and rec.catch_up is CatchUp.SKIP:
            return FirePlan((), 1, None)
        return FirePlan((rec.due_ms,), 1 if missed else 0, None)
    expr = _expr(rec)
    # Every time from due_ms up to now, at most max_catch_up of them (cron has one a minute at most).
    times = _times(expr, rec.due_ms, now_ms, max_catch_up)
    after = expr.next_after(times[-1])
    complete = after is None or after > now_ms
    if rec.catch_up is CatchUp.ALL:
        # Every time, oldest first; a longer backlog is worked off max_catch_up per wake-up (the
        # next time is then still in the past, and the alarm fires again at once).
        return FirePlan(tuple(times), sum(1 for t in times if now_ms - t > missed_after_ms), after)
    nxt = after if complete else expr.next_after(now_ms)
    if rec.retries > 0:
        return FirePlan((rec.due_ms,), len(times) - 1, nxt)  # the retried call stands for the rest
    latest = times[-1] if complete else _latest_at_or_before(expr, now_ms)
    folded = len(times) if complete else max_catch_up  # (at least)
    if rec.catch_up is CatchUp.SKIP and now_ms - rec.due_ms > missed_after_ms:
        return FirePlan((), folded, nxt)  # its time was missed: skip it and every later one up to now
    return FirePlan((latest,), folded - 1, nxt)


def _times(expr: CronExpression, first_ms: int, now_ms: int, limit: int) -> list[int]:
    """``first_ms`` and the expression's times after it, up to ``now_ms``, at most ``limit``."""
    out = [first_ms]
    t = first_ms
    while len(out) < limit:
        n = expr.next_after(t)
        if n is None or n > now_ms:
            break
        out.append(n)
        t = n
    return out


def _latest_at_or_before(expr: CronExpression, now_ms: int) -> int:
    """The expression's last time at or before ``now_ms`` (one exists): look back in windows that
    grow four-fold, then walk forward through the first that holds a time."""
    step = MINUTE_MS
    while True:
        t = expr.next_after(now_ms - step - 1)
        if t is not None and t <= now_ms:
            while True:
                n = expr.next_after(t)
                if n is None or n > now_ms:
                    return t
                t = n
        step *= 4


def after_success(rec: ScheduleRecord, plan: FirePlan) -> ScheduleRecord | None:
    """The schedule after every call of ``plan`` succeeded (None: it is done and removed)."""
    if plan.next_due is None:
        return None
    return replace(rec, due_ms=plan.next_due, retries=0, retry_at_ms=None)


def after_failure(rec: ScheduleRecord, failed_ms: int, plan: FirePlan, now_ms: int,
                  rand: Callable[[], float], policy: RetryPolicy | None = None) -> ScheduleRecord | None:
    """The schedule after its call for ``failed_ms`` raised: retried with the alarms' backoff
    (2 s, 4 s, ... + jitter), or after the last retry given up — a one-shot schedule is removed
    (None), a cron schedule waits for its next time."""
    policy = policy or RetryPolicy()
    retries = rec.retries + 1 if rec.due_ms == failed_ms and rec.retries else 1
    if retries > policy.max_retries:
        if rec.kind is not Kind.CRON:
            return None
        if rec.catch_up is CatchUp.ALL:  # go on with the missed times after the one given up
            nxt = _expr(rec).next_after(failed_ms)
            return None if nxt is None else replace(rec, due_ms=nxt, retries=0, retry_at_ms=None)
        return after_success(rec, plan)
    return replace(rec, due_ms=failed_ms, retries=retries,
                   retry_at_ms=now_ms + policy.delay_ms(retries, rand))


def gives_up(rec: ScheduleRecord, failed_ms: int, policy: RetryPolicy | None = None) -> bool:
    """Whether a failure of the call for ``failed_ms`` is the last one allowed."""
    policy = policy or RetryPolicy()
    return rec.due_ms == failed_ms and rec.retries >= policy.max_retries
