"""The event-recording seam: one :class:`EventRecord` per event an object runs, counted for
``/metrics`` and fanned out to ``duro tail`` subscribers.

``Activation.run`` calls :meth:`EventHub.finish` once per event (a fetch, an RPC call, an alarm, a
WebSocket message, close or error), refused and failed ones included. The hub counts it (events,
latency, CPU, rows, by class and kind) and, only when someone is subscribed, builds the record and
offers it to each subscriber's bounded queue. A subscriber that does not keep up loses records —
counted in ``dropped`` — and never slows the event: nothing here awaits or blocks.

Log lines: while at least one subscriber exists, each event gets a list in a context variable; a
logging handler on the root logger and a tee on ``sys.stdout`` append what the handler's code logs
or prints during the event (the variable follows the event's task, so an RPC the handler makes
records its own lines in its own event). With no subscriber the variable is never set and the
handler and tee cost one ``ContextVar.get`` per line. Printed text still reaches stdout.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import logging
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

from .metrics import Counter, Gauge, Histogram, SIZE_BUCKETS, Metric

__all__ = ["EventRecord", "EventHub", "Subscription", "TailFilter", "EVENT_KINDS", "EVENT_STATUSES",
           "current_log_lines"]

EVENT_KINDS = ("fetch", "rpc", "alarm", "websocket", "other")
EVENT_STATUSES = ("ok", "error", "overloaded", "reset", "canceled")
MAX_LOG_LINES = 100  # per event; more are counted in the last line
MAX_LOG_LINE = 2000  # characters per line

_log_lines: contextvars.ContextVar["list[str] | None"] = contextvars.ContextVar("duro_event_logs", default=None)


def current_log_lines() -> "list[str] | None":
    """The log lines of the event running in this task, when a tail is listening."""
    return _log_lines.get()


def _add_line(lines: list[str], text: str) -> None:
    if len(lines) < MAX_LOG_LINES:
        lines.append(text if len(text) <= MAX_LOG_LINE else text[:MAX_LOG_LINE] + "…")
    elif len(lines) == MAX_LOG_LINES:
        lines.append("… more lines were not kept")


@dataclass(slots=True)
class EventRecord:
    """What ``duro tail`` shows of one event. Times are milliseconds; ``time_ms`` is when the
    event arrived (epoch). ``cpu_ms`` is the event loop thread's CPU time from arrival to end —
    events of other objects that ran while this one awaited are in it too."""

    time_ms: int
    namespace: str
    class_name: str
    object_id: str
    object_name: str | None
    kind: str
    label: str
    status: str
    error: str | None
    duration_ms: float
    cpu_ms: float
    rows_read: int
    rows_written: int
    logs: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"time_ms": self.time_ms, "namespace": self.namespace, "class": self.class_name,
                "id": self.object_id, "name": self.object_name, "kind": self.kind, "label": self.label,
                "status": self.status, "error": self.error, "duration_ms": round(self.duration_ms, 3),
                "cpu_ms": round(self.cpu_ms, 3), "rows_read": self.rows_read,
                "rows_written": self.rows_written, "logs": self.logs}


@dataclass(frozen=True)
class TailFilter:
    """Which records a subscriber wants. ``objects``: names or 64-hex IDs; ``classes``: class
    names or namespace keys; ``statuses``: from ``EVENT_STATUSES``; ``sample``: the fraction of the
    matching records to keep (0 < sample <= 1)."""

    objects: frozenset[str] = frozenset()
    classes: frozenset[str] = frozenset()
    statuses: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()
    sample: float = 1.0

    def matches(self, namespace: str, class_name: str, object_id: str, name: str | None, kind: str,
                status: str) -> bool:
        if self.statuses and status not in self.statuses:
            return False
        if self.kinds and kind not in self.kinds:
            return False
        if self.classes and class_name not in self.classes and namespace not in self.classes:
            return False
        if self.objects and object_id not in self.objects and name not in self.objects:
            return False
        return self.sample >= 1.0 or random.random() < self.sample


class Subscription:
    """One subscriber's bounded queue. ``get()`` waits for the next record; records offered while
    it is full are dropped and counted."""

    def __init__(self, hub: "EventHub", filter: TailFilter, maxsize: int) -> None:
        self.hub = hub
        self.filter = filter
        self.maxsize = maxsize
        self.queue: list[EventRecord] = []
        self.dropped = 0
        self.delivered = 0
        self._ready = asyncio.Event()

    def offer(self, record: EventRecord) -> None:
        if len(self.queue) >= self.maxsize:
            self.dropped += 1
            self.hub.dropped.inc()
            return
        self.queue.append(record)
        if not self._ready.is_set():
            self._ready.set()

    def take_nowait(self) -> list[EventRecord]:
        """Every queued record (possibly none), oldest first."""
        batch, self.queue = self.queue, []
        self._ready.clear()
        self.delivered += len(batch)
        return batch

    async def wait(self, timeout: float | None = None) -> list[EventRecord]:
        """The queued records, waiting up to ``timeout`` seconds for one (then maybe none)."""
        if not self.queue:
            try:
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                pass
        return self.take_nowait()

    def close(self) -> None:
        self.hub.unsubscribe(self)


class _LogHandler(logging.Handler):
    """Appends a log record's message to the running event's lines (only while a tail listens)."""

    def emit(self, record: logging.LogRecord) -> None:
        lines = _log_lines.get()
        if lines is None:
            return
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the logging module's to report
            return
        _add_line(lines, f"{record.levelname} {record.name}: {text}")


class _StdoutTee(io.TextIOBase):
    """``sys.stdout`` while tails may listen: writes go to the real stdout, and complete lines
    printed during an event are also kept with it."""

    def __init__(self, real: TextIO) -> None:
        self.real = real
        self._partial: dict[int, str] = {}

    def write(self, s: str) -> int:
        lines = _log_lines.get()
        if lines is not None and s:
            key = id(lines)
            text = self._partial.pop(key, "") + s
            *done, rest = text.split("\n")
            for line in done:
                _add_line(lines, line)
            if rest:
                if len(self._partial) > 1000:
                    self._partial.clear()
                self._partial[key] = rest
        return self.real.write(s)

    def flush(self) -> None:
        try:
            self.real.flush()
        except ValueError:  # the real stream was closed under us (a test harness's capture): nothing to do
            pass

    def isatty(self) -> bool:
        return self.real.isatty()

    def fileno(self) -> int:
        return self.real.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.real, "encoding", "utf-8")

    def finish(self, lines: list[str]) -> None:
        rest = self._partial.pop(id(lines), None)
        if rest:
            _add_line(lines, rest)


class EventHub:
    """The runtime's event counters and tail subscribers. ``class_of(unique_key)`` names a
    namespace's class."""

    def __init__(self, class_of: Callable[[str], str]) -> None:
        self.class_of = class_of
        self.subscribers: list[Subscription] = []
        self.capturing = False  # True once a subscriber exists: events collect their log lines
        self._tee: _StdoutTee | None = None
        self._handler: _LogHandler | None = None
        self.events = Counter("duro_events", "Events delivered to objects, by class, kind and status "
                              "(ok, error, overloaded, reset, canceled).", ("class", "kind", "status"))
        self.latency = Histogram("duro_event_duration_seconds", "Time from an event's arrival at its "
                                 "object to its end (queueing and the output gate included).", ("class", "kind"))
        self.cpu = Counter("duro_event_cpu_seconds", "Event loop CPU time spent during events, counted "
                           "only while a duro tail is connected (measuring it costs a system call).",
                           ("class", "kind"))
        self.rows_read = Counter("duro_rows_read", "Rows read by objects' SQL statements.", ("class",))
        self.rows_written = Counter("duro_rows_written", "Rows written by objects' SQL statements.", ("class",))
        self.resets = Counter("duro_resets", "Object resets, by reason.", ("reason",))
        self.overloaded = Counter("duro_overloaded", "Events refused before they ran, by the bound "
                                  "they hit (queue, bytes, age, databases).", ("limit",))
        self.alarm_lateness = Histogram("duro_alarm_lateness_seconds", "How long after its scheduled "
                                        "time an alarm's handler started.")
        self.dropped = Counter("duro_tail_dropped", "Event records a slow duro tail client did not get.")
        self.tails = Gauge("duro_tail_subscribers", "duro tail clients connected.")
        self._names: dict[str, str] = {}
        self.tracer: Any = None  # a tracing.Tracing once OpenTelemetry traces are on

    def metrics(self) -> list[Metric]:
        self.tails.set(len(self.subscribers))
        return [self.events, self.latency, self.cpu, self.rows_read, self.rows_written, self.resets,
                self.overloaded, self.alarm_lateness, self.dropped, self.tails]

    # ------------------------------------------------------------------ subscribers
    def subscribe(self, filter: TailFilter | None = None, maxsize: int = 1000) -> Subscription:
        sub = Subscription(self, filter or TailFilter(), maxsize)
        self.subscribers.append(sub)
        self._install()
        self.capturing = True
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)
        self.capturing = bool(self.subscribers)

    def _install(self) -> None:
        if self._handler is None:
            self._handler = _LogHandler()
            logging.getLogger().addHandler(self._handler)
        if self._tee is None and not isinstance(sys.stdout, _StdoutTee) and sys.stdout is not None:
            self._tee = _StdoutTee(sys.stdout)
            sys.stdout = self._tee  # type: ignore[assignment]

    def close(self) -> None:
        """Take the log handler and the stdout tee away again."""
        for sub in list(self.subscribers):
            self.unsubscribe(sub)
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler = None
        if self._tee is not None:
            if sys.stdout is self._tee:
                sys.stdout = self._tee.real  # type: ignore[assignment]
            self._tee = None

    # ------------------------------------------------------------------ events
    def begin_logs(self) -> "tuple[list[str], contextvars.Token[list[str] | None]] | None":
        """Start collecting the running event's log lines (only while someone listens)."""
        if not self.capturing:
            return None
        lines: list[str] = []
        return lines, _log_lines.set(lines)

    def class_name(self, unique_key: str) -> str:
        name = self._names.get(unique_key)
        if name is None:
            try:
                name = self.class_of(unique_key)
            except Exception:  # noqa: BLE001 - a namespace no longer served keeps its key
                name = unique_key
            self._names[unique_key] = name
        return name

    def finish(self, act: Any, kind: str, label: str, status: str, error: BaseException | None,
               duration: float, cpu: float | None, rows: tuple[int, int],
               logs: "tuple[list[str], contextvars.Token[list[str] | None]] | None") -> None:
        """Count one event of ``act`` (an Activation) that ended, and offer its record to the
        subscribers. ``cpu`` is None when it was not measured (nobody was tailing at its start)."""
        unique_key = act.unique_key
        cls = self._names.get(unique_key) or self.class_name(unique_key)
        events = self.events.values
        key3 = (cls, kind, status)
        events[key3] = events.get(key3, 0) + 1
        self.latency.observe(duration, (cls, kind))
        read, written = rows
        if read:
            self.rows_read.inc((cls,), read)
        if written:
            self.rows_written.inc((cls,), written)
        if cpu is not None:
            self.cpu.inc((cls, kind), cpu)
        if logs is None and not self.subscribers:
            return
        lines: list[str] = []
        if logs is not None:
            lines = logs[0]
            _log_lines.reset(logs[1])
            if self._tee is not None:
                self._tee.finish(lines)
        record: EventRecord | None = None
        object_id = act.id.to_string()
        name = act.id.name
        for sub in self.subscribers:
            if not sub.filter.matches(unique_key, cls, object_id, name, kind, status):
                continue
            if record is None:
                record = EventRecord(int((time.time() - duration) * 1000), unique_key, cls, object_id, name, kind,
                                     label, status, None if error is None else f"{type(error).__name__}: {error}",
                                     duration * 1000, (cpu or 0.0) * 1000, read, written, lines)
            sub.offer(record)

    def note_reset(self, reason: str) -> None:
        self.resets.inc((reason,))

    def note_overloaded(self, limit: str) -> None:
        self.overloaded.inc((limit,))

    def note_alarm_lateness(self, seconds: float) -> None:
        self.alarm_lateness.observe(max(0.0, seconds))


def batch_histograms() -> tuple[Histogram, Histogram]:
    """The node journal's: commits per fdatasync, and fdatasync latency."""
    return (Histogram("duro_journal_batch_commits", "Commits made durable by one journal fdatasync "
                      "(group commit across objects).", buckets=SIZE_BUCKETS),
            Histogram("duro_journal_fsync_seconds", "Latency of one journal write + fdatasync."))


def now_wall() -> float:
    return time.time()
