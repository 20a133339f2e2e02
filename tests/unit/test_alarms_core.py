"""The Sans-I/O alarm table: retry policy, state transitions, and the lower/settle rules that keep
the node's index from ever being later than an object's alarm. No event loop, no files."""

import pytest

from duro.core.alarms import (
    AlarmInvocationInfo, AlarmState, AlarmTable, AttemptOutcome, AttemptResult, Decision, RetryPolicy,
    check_alarm_transition,
)

K = ("ns", "a" * 64)
ZERO = lambda: 0.0  # noqa: E731
ONE = lambda: 1.0  # noqa: E731


def test_backoff_doubles_from_two_seconds_with_up_to_25_percent_jitter():
    p = RetryPolicy()
    assert [p.delay_ms(n, ZERO) for n in range(1, 7)] == [2000, 4000, 8000, 16000, 32000, 64000]
    assert [p.delay_ms(n, ONE) for n in range(1, 4)] == [2500, 5000, 10000]
    assert p.infra_delay_ms(1, ZERO) == 2000
    assert p.infra_delay_ms(50, ZERO) == 2000 * 2 ** 9  # capped


def test_invocation_info_spellings():
    info = AlarmInvocationInfo(retry_count=2, scheduled_time=123)
    assert (info.retry_count, info.retryCount, info.is_retry, info.isRetry) == (2, 2, True, True)
    assert info.scheduled_time == info.scheduledTime == 123
    assert AlarmInvocationInfo().is_retry is False


def test_illegal_transitions_are_refused():
    check_alarm_transition(AlarmState.WAITING, AlarmState.RUNNING)
    with pytest.raises(RuntimeError, match="illegal alarm transition IDLE -> RUNNING"):
        check_alarm_transition(AlarmState.IDLE, AlarmState.RUNNING)
    with pytest.raises(RuntimeError):
        check_alarm_transition(AlarmState.PARKED, AlarmState.WAITING)


def test_lower_only_moves_earlier_and_marks_for_persisting():
    t = AlarmTable()
    assert t.lower(K, "n", 1000) is True
    assert [(k, r.due_ms) for k, r in t.drain()] == [(K, 1000)]
    assert t.lower(K, "n", 5000) is False  # later: the index already looks by 1000
    assert t.drain() == []
    assert t.lower(K, "n", 500) is True
    assert t.get(K).due_ms == 500
    assert t.next_due() == 500


def test_settle_relaxes_only_for_the_current_change():
    t = AlarmTable()
    t.lower(K, None, 1000)
    g1 = t.changed(K)
    g2 = t.changed(K)  # a newer change (not yet durable)
    t.settle(K, g1, 9000)  # stale: ignored
    assert t.get(K).due_ms == 1000
    t.settle(K, g2, 9000)
    assert t.get(K).due_ms == 9000
    t.drain()
    g3 = t.changed(K)
    t.settle(K, g3, None)
    assert t.get(K) is None
    assert t.drain() == [(K, None)]


def test_pop_due_runs_each_record_once_and_respects_the_limit():
    t = AlarmTable()
    keys = [("ns", str(i)) for i in range(5)]
    for i, k in enumerate(keys):
        t.lower(k, None, 100 + i)
    assert t.pop_due(99, 10) == []
    assert t.pop_due(1000, 2) == keys[:2]
    assert t.pop_due(1000, 10) == keys[2:]
    assert t.pop_due(1000, 10) == []
    assert all(t.get(k).state is AlarmState.RUNNING for k in keys)
    assert t.next_due() is None


def _run_once(t, now, outcome, row, scheduled, rand=ZERO, read=True):
    """One attempt; ``read``: it got to read the row (a reset or an infrastructure failure does not)."""
    assert t.pop_due(now, 1) == [K]
    result = AttemptResult(outcome, t.gen(K), row) if read else AttemptResult(outcome)
    return t.finish(K, result, now, rand, scheduled)


def test_success_clears_and_failure_retries_then_drops():
    t = AlarmTable()
    t.lower(K, None, 1000)
    assert _run_once(t, 1000, AttemptOutcome.SUCCEEDED, None, 1000) is Decision.DONE
    assert t.get(K) is None

    t.lower(K, None, 1000)
    now = 1000
    for n in range(1, 7):
        assert t.retry_info(K, 1000).retry_count == n - 1
        assert _run_once(t, now, AttemptOutcome.FAILED, 1000, 1000) is Decision.DONE
        rec = t.get(K)
        assert (rec.state, rec.retries, rec.scheduled_ms) == (AlarmState.RETRYING, n, 1000)
        assert rec.due_ms - now == 2000 * 2 ** (n - 1)
        now = rec.due_ms
    assert t.retry_info(K, 1000).retry_count == 6
    assert _run_once(t, now, AttemptOutcome.FAILED, 1000, 1000) is Decision.DROP
    assert t.get(K).state is AlarmState.DROPPING
    t.finish(K, AttemptResult(AttemptOutcome.DROPPED, t.gen(K), None), now, ZERO)
    assert t.get(K) is None


def test_a_newer_alarm_wins_over_the_retry():
    t = AlarmTable()
    t.lower(K, None, 1000)
    assert t.pop_due(1000, 1) == [K]
    t.lower(K, None, 800)  # set while running: kept, not started twice
    g = t.changed(K)
    assert t.pop_due(10_000, 5) == []
    t.finish(K, AttemptResult(AttemptOutcome.FAILED, g, 5000), 1000, ZERO, scheduled_ms=1000)
    rec = t.get(K)
    assert (rec.state, rec.due_ms, rec.retries) == (AlarmState.WAITING, 5000, 0)
    assert t.retry_info(K, 5000).retry_count == 0


def test_settle_during_an_attempt_is_kept_until_it_ends():
    t = AlarmTable()
    t.lower(K, None, 1000)
    t.pop_due(1000, 1)
    g = t.changed(K)
    t.settle(K, g, 7000)
    assert t.get(K).state is AlarmState.RUNNING
    t.finish(K, AttemptResult(AttemptOutcome.SUCCEEDED), 1000, ZERO, scheduled_ms=1000)
    assert t.get(K).due_ms == 7000


def test_no_retry_drops_and_infrastructure_failures_do_not_count():
    t = AlarmTable()
    t.lower(K, None, 1000)
    assert _run_once(t, 1000, AttemptOutcome.NO_RETRY, None, 1000, read=False) is Decision.DROP
    t.finish(K, AttemptResult(AttemptOutcome.DROPPED, t.gen(K), None), 1000, ZERO)
    assert t.get(K) is None
    t.lower(K, None, 1000)
    now = 1000
    for _ in range(20):
        assert _run_once(t, now, AttemptOutcome.INFRA_FAILED, None, None, read=False) is Decision.DONE
        now = t.get(K).due_ms
    rec = t.get(K)
    assert rec.retries == 0 and rec.infra_failures == 20 and rec.state is AlarmState.RETRYING


def test_phantoms_are_relaxed_by_a_reading_and_orphans_are_parked():
    t = AlarmTable()
    t.lower(K, None, 1000)
    _run_once(t, 1000, AttemptOutcome.NOT_DUE, 9000, None)
    assert t.get(K).due_ms == 9000 and t.get(K).state is AlarmState.WAITING
    _run_once(t, 9000, AttemptOutcome.NO_ALARM, None, None)
    assert t.get(K) is None
    t.lower(K, None, 1000)
    t.drain()
    _run_once(t, 1000, AttemptOutcome.ORPHANED, None, None)
    assert t.get(K).state is AlarmState.PARKED
    assert t.drain() == []  # the index row stays for a later run
    assert t.next_due() is None


def test_load_restores_retry_state():
    t = AlarmTable()
    t.load(K, "n", 5000, scheduled_ms=1000, retries=3)
    rec = t.get(K)
    assert rec.state is AlarmState.RETRYING and t.retry_info(K, 1000).retry_count == 3
    assert t.retry_info(K, 2000).retry_count == 0  # a different alarm is not a retry
    assert t.drain() == []
