"""The Sans-I/O schedule rules: which times a firing calls (catch-up), the next time, retries."""

import pytest

from duro.core.schedules import (
    MAX_CATCH_UP, MISSED_AFTER_MS, CatchUp, FirePlan, Kind, ScheduleRecord, after_failure, after_success,
    gives_up, plan_fires,
)

MIN = 60_000
T0 = 1_700_000_040_000  # a whole minute (2023-11-14T22:14:00Z)


def cron(text="* * * * *", due=T0, policy=CatchUp.ONCE, **kw):
    return ScheduleRecord("c", "m", b"", Kind.CRON, text, due, policy, rev=1, **kw)


def one_shot(due=T0, policy=CatchUp.ONCE, **kw):
    return ScheduleRecord("o", "m", b"", Kind.DELAYED, None, due, policy, rev=1, **kw)


def test_on_time_every_policy_calls_once():
    for policy in CatchUp:
        assert plan_fires(cron(policy=policy), T0 + 5) == FirePlan((T0,), 0, T0 + MIN)
        assert plan_fires(one_shot(policy=policy), T0 + 5) == FirePlan((T0,), 0, None)


def test_late_within_the_threshold_is_not_missed():
    now = T0 + MISSED_AFTER_MS - 1
    assert plan_fires(cron(policy=CatchUp.SKIP), now).fires == (T0,)
    assert plan_fires(one_shot(policy=CatchUp.SKIP), now).fires == (T0,)


@pytest.mark.parametrize("policy, fires, missed", [
    (CatchUp.ONCE, (T0 + 10 * MIN,), 10),
    (CatchUp.ALL, tuple(T0 + i * MIN for i in range(11)), 10),
    (CatchUp.SKIP, (), 11),
])
def test_cron_catch_up(policy, fires, missed):
    now = T0 + 10 * MIN + 20_000  # ten minutes and a bit late: eleven times due, ten of them missed
    plan = plan_fires(cron(policy=policy), now)
    assert plan == FirePlan(fires, missed, T0 + 11 * MIN)
    assert plan.next_due > now


def test_one_shot_catch_up():
    now = T0 + 3600_000
    assert plan_fires(one_shot(policy=CatchUp.ONCE), now) == FirePlan((T0,), 1, None)
    assert plan_fires(one_shot(policy=CatchUp.ALL), now) == FirePlan((T0,), 1, None)
    assert plan_fires(one_shot(policy=CatchUp.SKIP), now) == FirePlan((), 1, None)


def test_sparse_cron_once_calls_the_latest_missed_time():
    # Daily at 09:00; the server was down for three days and comes back at 10:00.
    nine = 1_700_038_800_000  # 2023-11-15T09:00Z
    now = nine + 3 * 86_400_000 + 3600_000
    plan = plan_fires(cron("0 9 * * *", due=nine), now)
    assert plan == FirePlan((nine + 3 * 86_400_000,), 3, nine + 4 * 86_400_000)


def test_all_with_a_long_backlog_works_it_off_in_batches():
    now = T0 + (MAX_CATCH_UP + 500) * MIN
    plan = plan_fires(cron(policy=CatchUp.ALL), now)
    assert len(plan.fires) == MAX_CATCH_UP and plan.fires[0] == T0
    assert plan.next_due == T0 + MAX_CATCH_UP * MIN <= now  # the rest at the next wake-up, at once
    rest = plan_fires(after_success(cron(policy=CatchUp.ALL), plan), now)
    assert len(rest.fires) == 501 and rest.next_due > now


def test_once_with_a_long_backlog_finds_the_latest_time():
    now = T0 + 400 * 86_400_000 + 30_000  # more than a year of minutes
    plan = plan_fires(cron(), now)
    assert plan.fires == (T0 + 400 * 86_400_000,) and plan.next_due == plan.fires[0] + MIN
    assert plan.missed == MAX_CATCH_UP - 1  # (at least: counting stops at the cap)


def test_after_success():
    assert after_success(one_shot(), FirePlan((T0,), 0, None)) is None
    nxt = after_success(cron(retries=3, retry_at_ms=T0 + 8000), FirePlan((T0,), 0, T0 + MIN))
    assert (nxt.due_ms, nxt.retries, nxt.retry_at_ms, nxt.wake_ms) == (T0 + MIN, 0, None, T0 + MIN)


def test_retries_back_off_then_give_up():
    rec = one_shot()
    plan = plan_fires(rec, T0)
    delays = []
    for _ in range(6):
        assert not gives_up(rec, T0)
        rec = after_failure(rec, T0, plan, T0, lambda: 0.0)
        delays.append(rec.retry_at_ms - T0)
        assert rec.due_ms == T0 and rec.wake_ms == rec.retry_at_ms
    assert delays == [2000, 4000, 8000, 16000, 32000, 64000]
    assert gives_up(rec, T0)
    assert after_failure(rec, T0, plan, T0, lambda: 0.0) is None  # a one-shot schedule is removed
    # A cron schedule given up waits for its next time.
    c = cron(retries=6, retry_at_ms=T0 + 64000)
    assert after_failure(c, T0, plan_fires(c, T0 + 64000), T0 + 64000, lambda: 0.0).due_ms == T0 + 2 * MIN


def test_jitter():
    rec = after_failure(one_shot(), T0, FirePlan((T0,), 0, None), T0, lambda: 1.0)
    assert rec.retry_at_ms == T0 + 2500


def test_a_retry_is_made_whatever_the_policy():
    # A failed call retried long after (the server was down meanwhile) is still made, once.
    for policy in (CatchUp.ONCE, CatchUp.SKIP):
        rec = one_shot(policy=policy, retries=2, retry_at_ms=T0 + 6000)
        assert plan_fires(rec, T0 + 3600_000).fires == (T0,)
        c = cron(policy=policy, retries=2, retry_at_ms=T0 + 6000)
        plan = plan_fires(c, T0 + 10 * MIN + 5)
        assert plan.fires == (T0,) and plan.next_due == T0 + 11 * MIN
    c = cron(policy=CatchUp.ALL, retries=1, retry_at_ms=T0 + 2000)
    assert plan_fires(c, T0 + 2 * MIN).fires == (T0, T0 + MIN, T0 + 2 * MIN)


def test_retry_count_restarts_for_another_time():
    rec = cron(policy=CatchUp.ALL, retries=3, retry_at_ms=T0 + 1)
    again = after_failure(rec, T0 + MIN, FirePlan((T0, T0 + MIN), 0, T0 + 2 * MIN), T0 + MIN, lambda: 0.0)
    assert (again.due_ms, again.retries) == (T0 + MIN, 1)


def test_same_definition():
    a = cron()
    assert a.same_definition(cron(due=T0 + MIN))  # a cron's next time is not part of it
    assert not a.same_definition(cron("*/2 * * * *"))
    assert not one_shot().same_definition(one_shot(due=T0 + 1))
    assert not a.same_definition(cron(policy=CatchUp.ALL))


def test_catch_up_parse():
    assert CatchUp.parse("ALL") is CatchUp.ALL
    with pytest.raises(ValueError, match="catch_up must be"):
        CatchUp.parse("never")


def test_missed_after_is_per_schedule():
    late = T0 + 2000
    assert plan_fires(one_shot(policy=CatchUp.SKIP, missed_after_ms=1000), late).fires == ()
    assert plan_fires(one_shot(policy=CatchUp.SKIP, missed_after_ms=5000), late).fires == (T0,)
    assert plan_fires(one_shot(policy=CatchUp.ONCE, missed_after_ms=1000), late) == FirePlan((T0,), 1, None)
    assert not one_shot(missed_after_ms=1).same_definition(one_shot())
