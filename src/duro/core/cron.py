"""Cron expressions as Cloudflare's Cron Triggers read them, the minutes they fire at (UTC), and the
timetable of a project's triggers, Sans-I/O.

Owns the syntax (five fields, the Quartz-like extensions Cloudflare supports: ranges, steps, lists,
``JAN``-``DEC`` and ``SUN``-``SAT``, ``L``, ``W``, ``LW``, ``L-n``, ``xL``, ``x#n``; weekdays are
numbered 1-7 from Sunday, as Cloudflare numbers them), next-fire computation, and the rule for
times missed while the server was down: they are not run later (Cloudflare does not backfill).
It never reads a clock, sleeps, touches a file or uses asyncio: callers pass ``now_ms`` in and
persist what :class:`CronTimetable` says was fired.
"""

from __future__ import annotations

import calendar
import datetime
import enum
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

from ..errors import InvalidInputError

__all__ = ["CronExpression", "CronSyntaxError", "CronTimetable", "DayRule", "Fire", "MINUTE_MS"]

MINUTE_MS = 60_000
_DAY_MS = 86_400_000
_UTC = datetime.timezone.utc
# The longest gap between two matching days of an expression that matches at all: "29 FEB" skips
# the century years that are not leap years (2096 -> 2104), so look eight years and a bit ahead.
_HORIZON_DAYS = 366 * 8 + 31
# A fixed day to ask "does this ever fire?" from (never the clock: this module does not read it).
_PROBE_MS = 946_684_800_000  # 2000-01-01T00:00Z

_MONTHS = {m.upper(): i for i, m in enumerate(calendar.month_abbr) if m}
# Cloudflare's weekday numbers: 1 = Sunday ... 7 = Saturday.
_WEEKDAYS = {name: i + 1 for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}


class CronSyntaxError(InvalidInputError):
    """A cron expression is not valid Cloudflare cron syntax (or can never fire). Raised when the
    configuration is read; nothing is scheduled."""


def _python_weekday(cf: int) -> int:
    """Cloudflare's 1 (Sunday) ... 7 (Saturday) as ``date.weekday()`` numbers (Monday = 0)."""
    return (cf + 5) % 7


class DayRule(enum.Enum):
    """How a day-of-month or day-of-week field picks days."""

    ANY = "*"  # every day: the field does not restrict
    DAYS = "days"  # day of month: the listed days 1-31 (``values``)
    WEEKDAYS = "weekdays"  # day of week: the listed weekdays (``values``, Python numbers, Monday = 0)
    LAST = "L"  # day of month: the last day, ``offset`` days before it (``L``, ``L-3``)
    LAST_WEEKDAY = "LW"  # day of month: the weekday nearest to ``L`` / ``L-n`` (``LW``, ``L-3W``)
    NEAREST_WEEKDAY = "W"  # day of month: the weekday nearest to day ``offset`` in the month (``15W``)
    LAST_OF_MONTH = "xL"  # day of week: the last ``weekday`` of the month (``6L``, ``friL``)
    NTH_OF_MONTH = "x#n"  # day of week: the ``nth`` ``weekday`` of the month (``2#1``)


@dataclass(frozen=True)
class _Days:
    rule: DayRule
    values: frozenset[int] = frozenset()  # DAYS: days of month 1-31; WEEKDAYS: Python weekdays 0-6
    offset: int = 0
    weekday: int = 0  # Python weekday (Monday = 0)
    nth: int = 0

    def matches(self, d: datetime.date) -> bool:
        rule = self.rule
        if rule is DayRule.ANY:
            return True
        if rule is DayRule.DAYS:
            return d.day in self.values
        if rule is DayRule.WEEKDAYS:
            return d.weekday() in self.values
        dim = calendar.monthrange(d.year, d.month)[1]
        if rule is DayRule.LAST:
            return d.day + self.offset == dim
        if rule is DayRule.LAST_WEEKDAY:
            return self.offset < dim and d.day == _nearest_weekday(d.year, d.month, dim - self.offset, dim)
        if rule is DayRule.NEAREST_WEEKDAY:
            return self.offset <= dim and d.day == _nearest_weekday(d.year, d.month, self.offset, dim)
        if rule is DayRule.LAST_OF_MONTH:
            return d.weekday() == self.weekday and d.day + 7 > dim
        return d.weekday() == self.weekday and (d.day - 1) // 7 + 1 == self.nth  # NTH_OF_MONTH


def _nearest_weekday(year: int, month: int, day: int, dim: int) -> int:
    """The weekday (Monday-Friday) nearest to ``day`` without leaving the month (Quartz's ``W``)."""
    wd = datetime.date(year, month, day).weekday()
    if wd == 5:  # Saturday: the Friday before, unless that is last month (then the Monday after)
        return day - 1 if day > 1 else day + 2
    if wd == 6:  # Sunday: the Monday after, unless that is next month (then the Friday before)
        return day + 1 if day < dim else day - 2
    return day


# ---------------------------------------------------------------------- parsing
_VALUE = r"(\d+|[A-Za-z]{3})"
_ITEM = re.compile(rf"(\*|{_VALUE}(?:-{_VALUE})?)(?:/(\d+))?")


def _value(text: str, lo: int, hi: int, names: Mapping[str, int] | None, field: str) -> int:
    if text.isdigit():
        v = int(text)
    elif names is not None and text.upper() in names:
        v = names[text.upper()]
    else:
        allowed = "a number" if names is None else "a number or a 3-letter name"
        raise CronSyntaxError(f"{field}: {text!r} is not {allowed}")
    if not lo <= v <= hi:
        hint = " (weekdays are 1-7 from Sunday: SUN = 1, SAT = 7)" if field == "day of week" else ""
        raise CronSyntaxError(f"{field}: {v} is out of range {lo}-{hi}{hint}")
    return v


def _list(text: str, lo: int, hi: int, names: Mapping[str, int] | None, field: str) -> frozenset[int]:
    """``*``, ``5``, ``1-5``, ``*/15``, ``10/5``, ``1-20/3``, ``FRI-MON`` (wraps), comma lists."""
    out: set[int] = set()
    for item in text.split(","):
        m = _ITEM.fullmatch(item)
        if m is None:
            raise CronSyntaxError(f"{field}: cannot read {item!r} (use *, a value, a-b, */n, a/n, a-b/n)")
        whole, start, end, step = m.group(1), m.group(2), m.group(3), m.group(4)
        if whole == "*":
            a, b = lo, hi
        else:
            a = _value(start, lo, hi, names, field)
            b = _value(end, lo, hi, names, field) if end is not None else (hi if step is not None else a)
        n = 1
        if step is not None:
            n = int(step)
            if not 1 <= n <= hi - lo:
                raise CronSyntaxError(f"{field}: step {n} is out of range 1-{hi - lo}")
        # A range whose start is after its end wraps around (``FRI-MON``, ``22-2``), as Cloudflare's.
        span = list(range(a, b + 1)) if a <= b else list(range(a, hi + 1)) + list(range(lo, b + 1))
        out.update(span[::n])
    return frozenset(out)


def _dom(text: str) -> _Days:
    t = text.upper()
    if t == "*":
        return _Days(DayRule.ANY)
    m = re.fullmatch(r"L(?:-(\d+))?(W?)", t)
    if m is not None:
        offset = int(m.group(1)) if m.group(1) is not None else 0
        if m.group(1) is not None and not 1 <= offset <= 30:
            raise CronSyntaxError(f"day of month: offset {offset} in {text!r} is out of range 1-30")
        return _Days(DayRule.LAST_WEEKDAY if m.group(2) else DayRule.LAST, offset=offset)
    m = re.fullmatch(r"(\d+)W", t)
    if m is not None:
        return _Days(DayRule.NEAREST_WEEKDAY, offset=_value(m.group(1), 1, 31, None, "day of month"))
    return _Days(DayRule.DAYS, _list(text, 1, 31, None, "day of month"))


def _dow(text: str) -> _Days:
    t = text.upper()
    if t == "*":
        return _Days(DayRule.ANY)
    if t == "L":  # Quartz: "L" alone in the weekday field is the last day of the week, Saturday
        return _Days(DayRule.WEEKDAYS, frozenset({_python_weekday(7)}))
    m = re.fullmatch(rf"{_VALUE}L", t)
    if m is not None:
        return _Days(DayRule.LAST_OF_MONTH, weekday=_python_weekday(_value(m.group(1), 1, 7, _WEEKDAYS, "day of week")))
    m = re.fullmatch(rf"{_VALUE}#(\d+)", t)
    if m is not None:
        nth = int(m.group(2))
        if not 1 <= nth <= 5:
            raise CronSyntaxError(f"day of week: #{nth} in {text!r} is out of range 1-5")
        return _Days(DayRule.NTH_OF_MONTH, weekday=_python_weekday(_value(m.group(1), 1, 7, _WEEKDAYS, "day of week")),
                     nth=nth)
    days = _list(text, 1, 7, _WEEKDAYS, "day of week")
    return _Days(DayRule.WEEKDAYS, frozenset(_python_weekday(d) for d in days))


@dataclass(frozen=True)
class CronExpression:
    """One parsed expression. ``text`` is the expression exactly as configured (it is what
    ``controller.cron`` carries); ``next_after(ms)`` gives the next minute it fires at."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: frozenset[int]
    dom: _Days
    dow: _Days

    @classmethod
    def parse(cls, text: str) -> "CronExpression":
        if not isinstance(text, str):
            raise CronSyntaxError(f"a cron expression must be a string, not {type(text).__name__}")
        fields = text.split()
        if len(fields) != 5:
            raise CronSyntaxError(f"{text!r} has {len(fields)} fields; Cloudflare cron expressions have five: "
                                  "minute hour day-of-month month day-of-week (e.g. \"*/5 * * * *\")")
        minute, hour, dom, month, dow = fields
        expr = cls(text, tuple(sorted(_list(minute, 0, 59, None, "minute"))),
                   tuple(sorted(_list(hour, 0, 23, None, "hour"))), _list(month, 1, 12, _MONTHS, "month"),
                   _dom(dom), _dow(dow))
        if expr.next_after(_PROBE_MS) is None:
            raise CronSyntaxError(f"{text!r} never fires: none of its months has the day it names")
        return expr

    def _day_matches(self, d: datetime.date) -> bool:
        dom_any, dow_any = self.dom.rule is DayRule.ANY, self.dow.rule is DayRule.ANY
        if dom_any or dow_any:
            return self.dom.matches(d) and self.dow.matches(d)
        # Both fields restrict: a day matching either fires (as in Unix cron and Cloudflare).
        return self.dom.matches(d) or self.dow.matches(d)

    def matches(self, ms: int) -> bool:
        """Does the minute containing ``ms`` (epoch milliseconds, UTC) match?"""
        t = datetime.datetime.fromtimestamp(ms // MINUTE_MS * 60, _UTC)
        return (t.minute in self.minutes and t.hour in self.hours and t.month in self.months
                and self._day_matches(t.date()))

    def next_after(self, ms: int) -> int | None:
        """The first matching minute strictly after ``ms``, in epoch ms; None if none comes within
        the next eight years (the expression never fires)."""
        start = (ms // MINUTE_MS + 1) * MINUTE_MS
        t = datetime.datetime.fromtimestamp(start // 1000, _UTC)
        day = t.date()
        first_minute = t.hour * 60 + t.minute
        for i in range(_HORIZON_DAYS):
            d = day + datetime.timedelta(days=i)
            if d.month not in self.months or not self._day_matches(d):
                continue
            midnight = calendar.timegm(d.timetuple()) * 1000
            for h in self.hours:
                for m in self.minutes:
                    if i > 0 or h * 60 + m >= first_minute:
                        return midnight + (h * 60 + m) * MINUTE_MS
        return None

    def __str__(self) -> str:
        return self.text


# ---------------------------------------------------------------------- the timetable
@dataclass(frozen=True)
class Fire:
    """One run to start: ``cron`` (the configured text) at ``scheduled_ms`` (a whole minute)."""

    cron: str
    scheduled_ms: int


class CronTimetable:
    """When each of a project's triggers fires next, and what was last fired.

    The rule for missed times: at :meth:`start` (and after any wake-up more than a minute late, such
    as a suspended machine), a time before the current minute is skipped, never run late -- as on
    Cloudflare, which does not backfill missed cron runs. A time in the current minute still runs,
    unless ``last_fired`` says it already did (a restart within the same minute does not fire twice).
    ``last_fired`` is what the caller persists; :meth:`take_due` updates it.
    """

    def __init__(self, expressions: Iterable[CronExpression]) -> None:
        self.expressions = {e.text: e for e in expressions}
        self.last_fired: dict[str, int] = {}
        self._next: dict[str, int | None] = {}
        self.skipped = 0  # times not run because they were missed

    def start(self, now_ms: int, last_fired: Mapping[str, int] | None = None) -> None:
        self.last_fired = {k: int(v) for k, v in (last_fired or {}).items() if k in self.expressions}
        current_minute = now_ms // MINUTE_MS * MINUTE_MS
        for text, expr in self.expressions.items():
            floor = current_minute - 1
            last = self.last_fired.get(text)
            if last is not None:
                floor = max(floor, last)
            self._next[text] = expr.next_after(floor)

    def next_wake(self) -> int | None:
        """The earliest time any trigger is due (epoch ms), or None if none ever is."""
        times = [t for t in self._next.values() if t is not None]
        return min(times) if times else None

    def take_due(self, now_ms: int) -> list[Fire]:
        """The runs due at ``now_ms``, in time order; records them in ``last_fired`` and moves each
        trigger to its next time. A due time more than a minute old is skipped (counted in
        ``skipped``), not run."""
        current_minute = now_ms // MINUTE_MS * MINUTE_MS
        out: list[Fire] = []
        for text, expr in self.expressions.items():
            t = self._next.get(text)
            while t is not None and t <= now_ms:
                if t < current_minute:
                    self.skipped += 1
                    t = expr.next_after(current_minute - 1)  # the current minute may still run
                else:
                    out.append(Fire(text, t))
                    self.last_fired[text] = t
                    t = expr.next_after(t)
            self._next[text] = t
        out.sort(key=lambda f: f.scheduled_ms)
        return out

    def statistics(self) -> dict[str, object]:
        return {"next": dict(self._next), "last_fired": dict(self.last_fired), "skipped": self.skipped}
