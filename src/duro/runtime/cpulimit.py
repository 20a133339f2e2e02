"""The CPU budget of one event (``limits.cpu_ms``): Python past it is interrupted, SQL past it too.

How CPU is counted. Events interleave on one loop, so a per-event clock read at start and end would
charge an event for the CPU of every other event that ran while it awaited. Instead a profiling
timer (``ITIMER_PROF``) fires every ``tick`` seconds of process CPU; its handler runs in the loop
thread between two bytecodes and charges the loop thread's CPU since the previous tick
(``time.thread_time()``) to the event whose code is running at that moment: the :class:`Budget` in
the current context (a context variable set by ``Activation.run``, copied into the tasks the event
starts). An event's code runs only in its own task, so a tick is never charged to an event that is
waiting. It is a sampling account: each tick's CPU goes to the event running when it fires, so an
event that runs a fraction of a tick is charged a whole tick with that probability (right on
average, never by more than one tick per switch). The cost on the hot path is one object and one
context-variable set/reset per event; the timer costs one Python call per tick of busy CPU.

What happens past the budget. The tick handler marks the budget fired, schedules the object's
reset, and raises :class:`~duro.errors.CpuLimitExceeded` (a ``BaseException``, so ``except
Exception`` does not swallow it) in the running code — but only in the user's frames, never inside
duro's or asyncio's own code, where an exception between two bytecodes could leave their state
half-changed; there it waits for the next tick. If the code catches it and keeps running, every
later tick raises again; past twice the budget the limiter also turns on tracing for that event,
which raises on every line of its frames — so a ``try``/``except BaseException`` inside a loop
cannot keep it alive either (the exception escapes from the ``except`` body or the loop line).

SQL: a statement runs inside SQLite with no bytecode to interrupt; the connection's progress
handler (every ``PROGRESS_STEPS`` virtual machine steps) asks :func:`over_budget`, and a statement
of an event past its budget is interrupted. A tick that arrives during the statement is taken in
the progress handler (Python code), which is how the budget learns that it ran out.

What it cannot do: C code that never returns to the interpreter (an extension spinning, ``sum()``
over an endless C iterator) is never interrupted — no Python handler runs. Only killing the worker
stops it: that is the supervisor's job (issue 11 item 1); ``duro serve`` meanwhile ends on SIGTERM
after its drain timeout however busy the loop is (``cli/stopping.py``).

Linux delivers the process-wide SIGPROF to the main thread whenever it does not block it, so other
threads (fsync, checkpoints) are not interrupted by it. The timer and the signal handler are
process-wide: :func:`install` counts its callers (a runtime
each) and works only in the main thread (Python runs signal handlers there); elsewhere events run
without a CPU limit, and it says so once. It must never raise inside duro's own code, nor run
user code.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any, Callable

from ..core.limits import TEXT_CPU_EXCEEDED
from ..errors import CpuLimitExceeded

__all__ = ["Budget", "install", "uninstall", "start_event", "end_event", "over_budget", "interrupt_running",
           "fail_running",
           "installed", "PROGRESS_STEPS", "TICK_S"]

log = logging.getLogger("duro.runtime")

TICK_S = 0.01  # seconds of process CPU between two ticks (at most; less for a small budget)
PROGRESS_STEPS = 20_000  # SQLite VM steps between two progress checks of a user statement
_HARD_FACTOR = 2.0  # past this many budgets, every line of the event's frames raises

# Frames where the tick never raises: duro's own code and asyncio's (an exception between two of
# their bytecodes could leave a gate, a transaction or the loop's queues half-changed).
_RUNTIME_DIRS = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
                 os.path.dirname(asyncio.__file__) + os.sep)


class Budget:
    """The CPU budget of one event: ``limit`` seconds; ``used`` so far (charged by ticks);
    ``fired`` once it ran out (then the event is stopped and the object reset); ``text`` what the
    caller is told. ``on_fired`` is called once, from the tick, when it runs out."""

    __slots__ = ("limit", "used", "fired", "text", "on_fired", "hard", "ended")

    def __init__(self, limit: float, on_fired: Callable[["Budget"], None] | None = None) -> None:
        self.limit = limit
        self.used = 0.0
        self.fired = False
        self.text = TEXT_CPU_EXCEEDED
        self.on_fired = on_fired
        self.hard = False  # tracing on: every line of the event's frames raises
        # The event has returned; tasks it started (``wait_until``) still spend from this budget,
        # but only in user code: a task duro started during the event (a socket's reader, say)
        # lives on with this context and must not, over hours, exhaust it.
        self.ended = False

    def error(self) -> CpuLimitExceeded:
        return CpuLimitExceeded(self.text)


_budget: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("duro_cpu_budget", default=None)


class _Limiter:
    def __init__(self) -> None:
        self.users = 0
        self.tick = TICK_S
        self.last = 0.0
        self.previous: Any = None
        self.stop_text: str | None = None  # set by interrupt_running: every running event is stopped
        self.fail_text: str | None = None  # set by fail_running: events fail as if past their budget
        self.tracing: Budget | None = None
        self.warned = False


_lim = _Limiter()


def installed() -> bool:
    return _lim.users > 0


def install(cpu_ms: int) -> bool:
    """Start the profiling timer (once per process; later callers share it). False (events then run
    without a CPU limit) when not called from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        if not _lim.warned:
            _lim.warned = True
            log.warning("the event loop is not in the main thread: limits.cpu_ms is not enforced")
        return False
    tick = min(TICK_S, max(cpu_ms / 1000 / 10, 0.001))
    if _lim.users == 0:
        _lim.tick = tick
        _lim.previous = signal.signal(signal.SIGPROF, _on_tick)
        _lim.last = time.thread_time()
        signal.setitimer(signal.ITIMER_PROF, tick, tick)
    elif tick < _lim.tick:
        _lim.tick = tick
        signal.setitimer(signal.ITIMER_PROF, tick, tick)
    _lim.users += 1
    return True


def uninstall() -> None:
    if _lim.users == 0:
        return
    _lim.users -= 1
    if _lim.users == 0:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, _lim.previous if _lim.previous is not None else signal.SIG_DFL)
        _lim.stop_text = None
        _lim.fail_text = None


def start_event(limit_s: float, on_fired: Callable[[Budget], None]) -> tuple[Budget, contextvars.Token[Any]]:
    """Give the code that runs from now on in this context a fresh budget; :func:`end_event` with
    the token when the event is over."""
    budget = Budget(limit_s, on_fired)
    return budget, _budget.set(budget)


def end_event(budget: Budget, token: contextvars.Token[Any]) -> None:
    _budget.reset(token)
    budget.ended = True
    if budget.hard and _lim.tracing is budget:
        _lim.tracing = None
        sys.settrace(None)


def over_budget() -> bool:
    """True when the code running now belongs to an event past its budget (the SQL progress check)."""
    b = _budget.get()
    return b is not None and b.fired


def interrupt_running(text: str) -> None:
    """From now on, stop whatever event is running at the next tick (the server is stopping and
    its drain time is running out). Safe to call from a signal handler or another thread."""
    _lim.stop_text = text


def fail_running(text: str) -> None:
    """From now on, every event that runs fails at its next tick with ``text`` as if it had passed
    its budget (its object is reset), raised only in the user's frames: the worker is past its
    memory limit and about to restart. Safe to call from another thread."""
    _lim.fail_text = text


def _is_runtime(frame: FrameType | None) -> bool:
    return frame is None or frame.f_code.co_filename.startswith(_RUNTIME_DIRS) or _in_gc_callback(frame)


def _in_gc_callback(frame: FrameType) -> bool:
    """Whether ``frame`` runs inside a garbage-collector callback (``gc.callbacks``, which libraries
    such as hypothesis register): an exception raised there is only printed as "ignored" by the
    collector, and the event would run on. The raise waits for the next tick."""
    if not gc.callbacks:
        return False
    codes = {getattr(cb, "__code__", None) for cb in gc.callbacks}
    f: FrameType | None = frame
    while f is not None:
        if f.f_code in codes:
            return True
        f = f.f_back
    return False


def _on_tick(signum: int, frame: FrameType | None) -> None:
    now = time.thread_time()
    spent = now - _lim.last
    _lim.last = now
    b = _budget.get()
    if b is None or (b.ended and _is_runtime(frame)):
        return
    b.used += spent
    if not b.fired:
        stop = _lim.stop_text or _lim.fail_text
        if b.used < b.limit and stop is None:
            return
        b.fired = True
        if stop is not None and b.used < b.limit:
            b.text = stop
        log.warning("an event used %.0f ms of CPU (limit %.0f ms): stopping it", b.used * 1000, b.limit * 1000)
        if b.on_fired is not None:
            b.on_fired(b)
    if _is_runtime(frame):
        return  # duro's or asyncio's code: raise at the next tick that lands in the user's
    if b.used >= b.limit * _HARD_FACTOR or _lim.stop_text is not None:
        _arm_trace(b, frame)
    raise b.error()


def _arm_trace(b: Budget, frame: FrameType | None) -> None:
    """The event caught the exception and kept running: the next line of its code that runs —
    in the ``except`` clause that caught this tick's exception — raises again, and that one
    escapes the ``try``. (A trace function that raises is unset by Python: this is done again
    at every tick.)"""
    if not b.hard:
        b.hard = True
        log.warning("an event caught the CPU-limit exception and ran on: stopping it on its next line")

    def tracer(fr: FrameType, event: str, arg: Any) -> Any:
        if _budget.get() is not b or _is_runtime(fr):
            return None
        if event == "line":
            raise b.error()
        return tracer

    f = frame
    while f is not None:
        if not _is_runtime(f):
            f.f_trace_lines = True
            f.f_trace = tracer
        f = f.f_back
    _lim.tracing = b
    sys.settrace(tracer)
