"""The CPU limit's parts without a timer or a clock: the tick handler (called by hand) charges,
fires once and raises only in user code; the SQL progress check interrupts a statement."""

import signal
import sys
import time

import pytest

from duro.errors import CpuLimitExceeded, SqlError
from duro.runtime import cpulimit
from duro.storage import ObjectDatabase

COUNT = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) SELECT count(*) FROM c"


def _tick(frame):
    cpulimit._lim.last = time.thread_time()  # charge (almost) nothing: the tests set ``used`` themselves
    cpulimit._on_tick(signal.SIGPROF, frame)


def test_a_budget_past_its_limit_fires_once_and_raises_in_user_code_only():
    fired = []
    budget, token = cpulimit.start_event(10.0, fired.append)
    budget.used = 10.0  # at the limit, far from twice it
    try:
        _tick(None)  # a frame of duro's own (or none): charged and fired, but nothing raised there
        assert budget.fired and fired == [budget]
        assert cpulimit.over_budget()
        with pytest.raises(CpuLimitExceeded, match="^Durable Object exceeded its CPU time limit and was reset.$"):
            _tick(sys._getframe())  # this test's frame is user code
        with pytest.raises(CpuLimitExceeded):
            _tick(sys._getframe())  # again at every tick
        assert fired == [budget] and not budget.hard
        # Past twice the budget, code that catches the exception is stopped on its next line:
        # the ``except`` clause itself raises again (and Python then unsets the tracer).
        budget.used = 25.0
        ran_except_body = False
        try:
            try:
                _tick(sys._getframe())
            except CpuLimitExceeded:
                ran_except_body = True
        except CpuLimitExceeded:
            pass
        assert budget.hard and not ran_except_body
    finally:
        cpulimit.end_event(budget, token)
        sys.settrace(None)
    assert not cpulimit.over_budget()


def test_no_budget_no_charge_and_an_ended_event_is_charged_for_user_code_only():
    _tick(sys._getframe())  # outside any event: nothing happens
    budget, token = cpulimit.start_event(1000.0, None)
    cpulimit.end_event(budget, token)
    ctx_budget = budget
    # A task the event started still runs with its budget: duro's code is not charged, user code is.
    token = cpulimit._budget.set(ctx_budget)
    try:
        used = ctx_budget.used
        _tick(None)
        assert ctx_budget.used == used
    finally:
        cpulimit._budget.reset(token)


def test_an_interrupting_progress_check_stops_a_statement(tmp_path):
    calls = []

    def interrupt():
        calls.append(1)
        return True

    db = ObjectDatabase(tmp_path / "a.sqlite", interrupt=interrupt)
    try:
        with pytest.raises(SqlError) as info:
            db.sql.exec(COUNT).one()
        assert info.value.code == "SQLITE_INTERRUPT" and calls
    finally:
        db.close()
    calm = ObjectDatabase(tmp_path / "b.sqlite", interrupt=lambda: False)
    try:
        assert list(calm.sql.exec(COUNT).one().values()) == [300000]
    finally:
        calm.close()
