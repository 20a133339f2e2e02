"""The alarm state machine, the retry policy and the in-memory alarm table, Sans-I/O.

Owns what the scheduler knows about each object's alarm: when to look at the object next, which
alarm time is being retried and how often it failed, and the legal state transitions (a table, h11
style). It never sleeps, reads a clock, touches a database or uses asyncio: callers pass ``now_ms``
and a random source in, act on what comes out, and persist the records :meth:`AlarmTable.drain`
hands them.

The object's own alarm row is the truth; a record here only says "look at this object by
``due_ms``". Two kinds of update keep that safe (the argument is in ``runtime/alarms.py``):
:meth:`AlarmTable.lower` may only make a record earlier and is applied *before* the object's write
commits; :meth:`AlarmTable.settle` may make it later or remove it, and is applied only once the
object's write is durable, and only if no newer change to that object's alarm happened since
(``gen``, a node-wide change counter, tells).
"""

from __future__ import annotations

import enum
import heapq
import itertools
from dataclasses import dataclass
from typing import Callable, Iterator

__all__ = [
    "AlarmInvocationInfo", "AlarmRecord", "AlarmState", "AlarmTable", "AttemptOutcome", "AttemptResult",
    "Decision", "RetryPolicy", "check_alarm_transition",
]

Key = tuple[str, str]  # (namespace unique key, object hex id)


@dataclass(frozen=True)
class AlarmInvocationInfo:
    """What ``alarm(alarm_info)`` receives. ``retry_count`` counts the earlier failed attempts of this
    same alarm (0 on the first); ``scheduled_time`` is the alarm time in epoch milliseconds."""

    retry_count: int = 0
    scheduled_time: int = 0

    @property
    def is_retry(self) -> bool:
        return self.retry_count > 0

    @property
    def retryCount(self) -> int:  # noqa: N802 - Cloudflare spelling
        return self.retry_count

    @property
    def isRetry(self) -> bool:  # noqa: N802
        return self.is_retry

    @property
    def scheduledTime(self) -> int:  # noqa: N802
        return self.scheduled_time


@dataclass(frozen=True)
class RetryPolicy:
    """Cloudflare's: a failed ``alarm()`` is retried after 2 s, 4 s, 8 s ... (+0-25 % jitter), at most
    6 times (7 attempts), then dropped. Failures that are not the handler's (an overloaded object, a
    storage error) are retried without limit, their backoff capped at 2 s x 2^9."""

    first_delay_ms: int = 2000
    max_retries: int = 6
    jitter: float = 0.25
    infra_cap_exponent: int = 9

    def delay_ms(self, retry: int, rand: Callable[[], float]) -> int:
        """Delay before retry number ``retry`` (1-based) of a handler failure."""
        base = self.first_delay_ms * 2 ** min(retry - 1, self.infra_cap_exponent)
        return int(base * (1.0 + self.jitter * rand()))

    def infra_delay_ms(self, failures: int, rand: Callable[[], float]) -> int:
        base = self.first_delay_ms * 2 ** min(failures - 1, self.infra_cap_exponent)
        return int(base * (1.0 + self.jitter * rand()))


# ---------------------------------------------------------------------------------------------- states
class AlarmState(enum.Enum):
    IDLE = "idle"
    """No alarm known for the object; the record is gone. Next: WAITING."""
    WAITING = "waiting"
    """Look at the object at ``due_ms``. Next: RUNNING, IDLE, WAITING (moved)."""
    RUNNING = "running"
    """An attempt is being delivered; nothing else is started for the object. Next: WAITING,
    RETRYING, DROPPING, PARKED, IDLE."""
    RETRYING = "retrying"
    """The handler failed; the next attempt is at ``due_ms``. Next: RUNNING, WAITING (a new alarm was
    set), IDLE (the alarm was deleted)."""
    DROPPING = "dropping"
    """Retries are used up (or ``abort(retryAlarm=False)``); the alarm row is being deleted. Next:
    IDLE, WAITING (a new alarm was set meanwhile), RETRYING (the delete failed)."""
    PARKED = "parked"
    """The object's class is not served by this process; left in the index for a later run, never
    scheduled here. Terminal for this process."""


_S = AlarmState
_ALLOWED: dict[AlarmState, frozenset[AlarmState]] = {
    _S.IDLE: frozenset({_S.WAITING}),
    _S.WAITING: frozenset({_S.RUNNING, _S.IDLE, _S.WAITING}),
    _S.RUNNING: frozenset({_S.WAITING, _S.RETRYING, _S.DROPPING, _S.PARKED, _S.IDLE}),
    _S.RETRYING: frozenset({_S.RUNNING, _S.WAITING, _S.IDLE, _S.RETRYING}),
    _S.DROPPING: frozenset({_S.WAITING, _S.IDLE, _S.RETRYING}),
    _S.PARKED: frozenset(),
}


def check_alarm_transition(old: AlarmState, new: AlarmState) -> None:
    if new not in _ALLOWED[old]:
        raise RuntimeError(f"illegal alarm transition {old.name} -> {new.name}")


class AttemptOutcome(enum.Enum):
    """How one attempt on an object ended."""

    SUCCEEDED = "succeeded"        # the handler returned; the row was cleared unless it was re-set
    FAILED = "failed"              # the handler (or the constructor) raised, or the object was reset
    NO_RETRY = "no retry"          # reset by ``abort(retryAlarm=False)``: drop without retrying
    INFRA_FAILED = "infra failed"  # not the handler's fault: overloaded, storage error
    NOT_DUE = "not due"            # the row holds a later time (``row``)
    NO_ALARM = "no alarm"          # the row is empty: a phantom record
    DROPPED = "dropped"            # the row was deleted after the last retry (second step of DROPPING)
    ORPHANED = "orphaned"          # no class registered for the namespace


@dataclass(frozen=True)
class AttemptResult:
    outcome: AttemptOutcome
    gen: int | None = None   # the object's change counter when ``row`` was read, if it was
    row: int | None = None   # the alarm row at the end of the attempt (authoritative if ``gen`` is current)


class Decision(enum.Enum):
    DONE = "done"
    DROP = "drop"  # delete the row if it still holds ``scheduled_ms``, then finish(DROPPED)


@dataclass
class AlarmRecord:
    """One row of the node's alarm index, plus in-memory state."""

    name: str | None
    due_ms: int
    scheduled_ms: int | None = None   # the alarm time whose failures ``retries`` counts
    retries: int = 0
    infra_failures: int = 0
    state: AlarmState = AlarmState.WAITING
    gen: int = 0
    begin_gen: int = 0
    pending: tuple[int, int | None] | None = None  # a settle that arrived while RUNNING/DROPPING
    # ``due_ms`` is the object's durable alarm row, learned from this process's own commit (a
    # settle) with no change since: firing need not look at the row before waking the instance.
    exact: bool = False

    def _to(self, new: AlarmState) -> None:
        check_alarm_transition(self.state, new)
        self.state = new


# ---------------------------------------------------------------------------------------------- table
class AlarmTable:
    """Every alarm record of the node, a heap of due times, and the set of records to persist."""

    def __init__(self, policy: RetryPolicy | None = None) -> None:
        self.policy = policy or RetryPolicy()
        self._records: dict[Key, AlarmRecord] = {}
        self._heap: list[tuple[int, int, Key]] = []
        self._seq = itertools.count()
        self._gens = itertools.count(1)
        self._changed: set[Key] = set()
        self.running = 0

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: Key) -> AlarmRecord | None:
        return self._records.get(key)

    def items(self) -> Iterator[tuple[Key, AlarmRecord]]:
        return iter(list(self._records.items()))

    def gen(self, key: Key) -> int:
        rec = self._records.get(key)
        return rec.gen if rec is not None else 0

    # ---- keeping records ---------------------------------------------------------------------
    def load(self, key: Key, name: str | None, due_ms: int, scheduled_ms: int | None = None,
             retries: int = 0) -> None:
        """A record read back from the index at start (not marked for persisting)."""
        state = AlarmState.RETRYING if scheduled_ms is not None else AlarmState.WAITING
        rec = AlarmRecord(name, due_ms, scheduled_ms, retries, state=state, gen=next(self._gens))
        self._records[key] = rec
        self._push(key, rec)

    def _push(self, key: Key, rec: AlarmRecord) -> None:
        heapq.heappush(self._heap, (rec.due_ms, next(self._seq), key))

    def _remove(self, key: Key) -> None:
        rec = self._records.pop(key, None)
        if rec is not None:
            check_alarm_transition(rec.state, AlarmState.IDLE)
            rec.state = AlarmState.IDLE
            self._changed.add(key)

    def changed(self, key: Key) -> int:
        """The object's alarm was set or deleted (not yet committed). Returns the new change number."""
        g = next(self._gens)
        rec = self._records.get(key)
        if rec is not None:
            rec.gen = g
            rec.exact = False
        return g

    def lower(self, key: Key, name: str | None, when_ms: int) -> bool:
        """Make sure the object is looked at by ``when_ms``. Returns True if the record changed (it
        must then be persisted before the object's write commits)."""
        rec = self._records.get(key)
        if rec is None:
            rec = AlarmRecord(name, when_ms, gen=next(self._gens))
            self._records[key] = rec
            self._changed.add(key)
            self._push(key, rec)
            return True
        rec.exact = False
        if name is not None and rec.name is None:
            rec.name = name
            self._changed.add(key)
        if when_ms >= rec.due_ms:
            return False  # the index already looks at the object by then
        rec.due_ms = when_ms
        self._changed.add(key)
        if rec.state in (AlarmState.WAITING, AlarmState.RETRYING):
            rec._to(AlarmState.WAITING)
            self._push(key, rec)
        return True

    def settle(self, key: Key, gen: int, value: int | None) -> None:
        """The object's alarm row is durably ``value`` as of change ``gen``. Ignored if the object
        changed its alarm since; kept for later if an attempt is running."""
        rec = self._records.get(key)
        if rec is None:
            if value is not None:
                self.lower(key, None, value)
            return
        if rec.gen != gen:
            return
        if rec.state in (AlarmState.RUNNING, AlarmState.DROPPING):
            rec.pending = (gen, value)
            return
        if rec.state is AlarmState.PARKED:
            return
        self._apply(key, rec, value)

    def _apply(self, key: Key, rec: AlarmRecord, value: int | None) -> None:
        if value is None:
            self._remove(key)
            return
        if (rec.due_ms, rec.scheduled_ms, rec.retries) != (value, None, 0) or rec.state is not AlarmState.WAITING:
            self._changed.add(key)
        rec._to(AlarmState.WAITING)
        rec.due_ms, rec.scheduled_ms, rec.retries, rec.infra_failures = value, None, 0, 0
        rec.exact = True
        self._push(key, rec)

    # ---- the heap ------------------------------------------------------------------------------
    def next_due(self) -> int | None:
        heap = self._heap
        while heap:
            due, _, key = heap[0]
            rec = self._records.get(key)
            if rec is not None and rec.due_ms == due and rec.state in (AlarmState.WAITING, AlarmState.RETRYING):
                return due
            heapq.heappop(heap)
        return None

    def pop_due(self, now_ms: int, limit: int) -> list[Key]:
        """Keys whose time has come (at most ``limit``), now RUNNING."""
        out: list[Key] = []
        heap = self._heap
        while heap and len(out) < limit:
            due, _, key = heap[0]
            if due > now_ms:
                break
            heapq.heappop(heap)
            rec = self._records.get(key)
            if rec is None or rec.due_ms != due or rec.state not in (AlarmState.WAITING, AlarmState.RETRYING):
                continue
            rec._to(AlarmState.RUNNING)
            rec.begin_gen = rec.gen
            self.running += 1
            out.append(key)
        return out

    def retry_info(self, key: Key, row: int) -> AlarmInvocationInfo:
        """What the handler is told when the row holds ``row``: a retry only if it is the same alarm."""
        rec = self._records.get(key)
        retries = rec.retries if rec is not None and rec.scheduled_ms == row else 0
        return AlarmInvocationInfo(retry_count=retries, scheduled_time=row)

    # ---- finishing an attempt ------------------------------------------------------------------
    def finish(self, key: Key, result: AttemptResult, now_ms: int, rand: Callable[[], float],
               scheduled_ms: int | None = None) -> Decision:
        """Record how an attempt ended and decide what comes next. ``scheduled_ms`` is the alarm time
        the handler ran for, if it ran."""
        rec = self._records[key]
        if rec.state is AlarmState.RUNNING:
            self.running -= 1
        rec.exact = False  # unless a current reading of the row is applied below
        pending, rec.pending = rec.pending, None
        outcome = result.outcome
        if outcome is AttemptOutcome.ORPHANED:
            rec._to(AlarmState.PARKED)
            return Decision.DONE
        # A newer, durable state of the row wins over retrying the old alarm.
        newest: tuple[int, int | None] | None = None
        for cand in (pending, (result.gen, result.row) if result.gen is not None else None):
            if cand is not None and cand[0] == rec.gen:
                newest = cand
        failed = outcome in (AttemptOutcome.FAILED, AttemptOutcome.NO_RETRY)
        if failed and newest is not None and scheduled_ms is not None and newest[1] == scheduled_ms:
            newest = None  # the row still holds the alarm that failed: retry it
        if newest is not None:
            self._apply(key, rec, newest[1])
            return Decision.DONE
        if outcome is AttemptOutcome.NO_RETRY or (failed and rec.retries >= self.policy.max_retries
                                                  and scheduled_ms is not None and rec.scheduled_ms == scheduled_ms):
            rec._to(AlarmState.DROPPING)
            rec.scheduled_ms = scheduled_ms if scheduled_ms is not None else rec.scheduled_ms
            return Decision.DROP
        if failed:
            if scheduled_ms is not None and rec.scheduled_ms != scheduled_ms:
                rec.scheduled_ms, rec.retries = scheduled_ms, 0
            rec.retries += 1
            rec.due_ms = now_ms + self.policy.delay_ms(rec.retries, rand)
            rec._to(AlarmState.RETRYING)
            self._changed.add(key)
            self._push(key, rec)
            return Decision.DONE
        if outcome is AttemptOutcome.INFRA_FAILED:
            rec.infra_failures += 1
            rec.due_ms = now_ms + self.policy.infra_delay_ms(rec.infra_failures, rand)
            rec._to(AlarmState.RETRYING)
            self._changed.add(key)
            self._push(key, rec)
            return Decision.DONE
        # SUCCEEDED / NOT_DUE / NO_ALARM / DROPPED without a current reading: keep the record and look
        # again at its due time (which a newer change may have lowered); the row will tell then.
        if rec.state is not AlarmState.WAITING:
            rec._to(AlarmState.WAITING)
        self._push(key, rec)
        return Decision.DONE

    # ---- persistence -----------------------------------------------------------------------------
    def drain(self) -> list[tuple[Key, AlarmRecord | None]]:
        """Records changed since the last drain (None: deleted), for the index."""
        if not self._changed:
            return []
        out = [(key, self._records.get(key)) for key in self._changed]
        self._changed.clear()
        return out

    @property
    def has_changes(self) -> bool:
        return bool(self._changed)

    def statistics(self) -> dict[str, int]:
        counts = {s.value: 0 for s in AlarmState if s is not AlarmState.IDLE}
        for rec in self._records.values():
            counts[rec.state.value] += 1
        return {"records": len(self._records), "heap": len(self._heap), **counts}
