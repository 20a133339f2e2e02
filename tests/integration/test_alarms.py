"""Alarms on a real loop and real SQLite files, with the scheduler on a virtual clock: what a user
can observe of set/get/delete, delivery, retries with backoff, restarts and the index."""

import datetime
import logging
import pathlib
import re

import apsw
import pytest

from duro.clock import VirtualClock
from duro.core.alarms import AlarmState
from duro.errors import ObjectResetError
from duro.testing import LocalApp

PROJECT = pathlib.Path(__file__).parent / "projects" / "alarms"
NO_HANDLER = "Your Durable Object class must have an alarm() handler in order to call setAlarm()"
NOT_POSITIVE = "setAlarm() cannot be called with an alarm time <= 0"


class Harness:
    def __init__(self, local, clock):
        self.local = local
        self.app = local.app
        self.env = local.env
        self.clock = clock
        self.sched = local.runtime.alarms
        self.sched.rand = lambda: 0.0  # no jitter unless a test says so

    def now(self):
        return self.clock.now_ms()

    async def advance(self, seconds):
        await self.sched.wait_idle()
        await self.clock.advance(seconds)
        await self.sched.wait_idle()

    def record(self, stub):
        return self.sched.table.get((stub._ns.unique_key, str(stub.id)))

    def index_rows(self):
        conn = apsw.Connection(str(self.sched.path), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            return conn.execute("SELECT object_id, due_ms, scheduled_ms, retries FROM alarms").fetchall()
        finally:
            conn.close()


@pytest.fixture
def clock():
    return VirtualClock()


@pytest.fixture
async def h(tmp_path, clock):
    async with LocalApp(PROJECT, tmp_path / "data", clock=clock, durability="os") as local:
        yield Harness(local, clock)


# ------------------------------------------------------------------------------------ the API
async def test_set_get_delete_and_aliases(h):
    a = h.env.ALARMED.get_by_name("api")
    assert await a.get() is None
    t = h.now() + 60_000
    await a.set(t)
    assert await a.get() == t
    assert await a.set_camel(t + 1) == t + 1
    await a.delete_camel()
    assert await a.get() is None
    await a.set(t + 0.7)  # fractional milliseconds are truncated (§13.9)
    assert await a.get() == t
    await a.delete()
    await a.delete()  # deleting nothing is fine
    assert await a.get() is None


async def test_datetime_and_past_times(h):
    a = h.env.ALARMED.get_by_name("dt")
    when = datetime.datetime.fromtimestamp((h.now() + 5000) / 1000, tz=datetime.timezone.utc)
    await a.set(when)
    assert await a.get() == h.now() + 5000
    naive = when.replace(tzinfo=None)  # naive datetimes are UTC
    await a.set(naive)
    assert await a.get() == h.now() + 5000
    await a.set(1)  # in the past: becomes now, fires at once
    assert await a.get() == h.now()
    await h.advance(0)
    assert len(await a.log()) == 1
    assert await a.get() is None


async def test_bad_times_and_missing_handler_get_the_reference_errors(h):
    a = h.env.ALARMED.get_by_name("bad")
    for bad in (0, -5, 0.0):
        with pytest.raises(TypeError, match=r"^setAlarm\(\) cannot be called with an alarm time <= 0$"):
            await a.set(bad)
    for bad in ("123", None, True, [1], datetime.date(2030, 1, 1)):
        with pytest.raises(TypeError, match="setAlarm"):
            await a.set(bad)
    with pytest.raises(TypeError, match="finite"):
        await a.set(float("nan"))
    with pytest.raises(TypeError, match=re.escape(NOT_POSITIVE)):
        await a.set(datetime.datetime(1969, 1, 1, tzinfo=datetime.timezone.utc))
    assert await a.get() is None
    n = h.env.NO_HANDLER.get_by_name("x")
    with pytest.raises(TypeError) as info:
        await n.set(h.now() + 1000)
    assert str(info.value) == NO_HANDLER
    assert await n.get() is None
    with pytest.raises(TypeError, match="unknown option"):
        await a.set(h.now() + 1000, bogus=True)
    await a.set(h.now() + 1000, allowUnconfirmed=True, allow_concurrency=True)


# ------------------------------------------------------------------------------------ delivery
async def test_fires_when_due_once_with_alarm_info_and_clears_the_row(h):
    a = h.env.ALARMED.get_by_name("fire")
    t = h.now() + 3000
    await a.set(t)
    await h.advance(2.9)
    assert await a.log() == []
    await h.advance(0.2)
    log = await a.log()
    assert log == [{"retry": 0, "is_retry": False, "retryCount": 0, "isRetry": False, "scheduled": t,
                    "scheduledTime": t, "during": None, "name": "fire"}]
    assert await a.get() is None
    await h.advance(100)
    assert len(await a.log()) == 1
    assert h.sched.table.get((a._ns.unique_key, str(a.id))) is None
    assert h.index_rows() == []


async def test_handler_without_parameter_and_legacy_name(h):
    n = h.env.NO_ARG.get_by_name("n")
    legacy = h.env.LEGACY.get_by_name("l")
    await n.set(h.now() + 1000)
    await legacy.set(h.now() + 1000)
    await h.advance(1)
    assert await n.count() == 1
    assert await legacy.seen() == 0


async def test_setting_a_new_alarm_inside_the_handler(h):
    a = h.env.ALARMED.get_by_name("chain")
    t1, t2 = h.now() + 1000, h.now() + 5000
    await a.behave("set_next", t2)
    await a.set(t1)
    await h.advance(1)
    log = await a.log()
    assert log[0]["during"] is None and log[0]["after_set"] == t2
    assert await a.get() == t2  # not cleared: the handler set a new one
    await h.advance(4)
    log = await a.log()
    assert [e["scheduled"] for e in log] == [t1, t2]
    assert log[1]["retry"] == 0
    assert await a.get() is None


async def test_evicted_objects_are_woken_with_their_name(h):
    a = h.env.ALARMED.get_by_name("sleeper")
    await a.set(h.now() + 10_000)
    assert h.app.runtime.sweep(now=1e12) >= 1  # evict everything idle
    assert h.app.runtime.find(a._ns.unique_key, str(a.id)) is None
    await h.advance(10)
    log = await a.log()
    assert len(log) == 1 and log[0]["name"] == "sleeper"


async def test_a_failing_handler_does_not_disturb_other_objects(h):
    stubs = [h.env.ALARMED.get_by_name(f"o{i}") for i in range(20)]
    t = h.now() + 1000
    for i, s in enumerate(stubs):
        if i % 5 == 0:
            await s.behave("fail")
        await s.set(t)
    await h.advance(1)
    for i, s in enumerate(stubs):
        assert len(await s.log()) == 1
        assert (await s.get() is None) == (i % 5 != 0)
    assert h.sched.statistics()["failed"] == 4


# ------------------------------------------------------------------------------------ retries
async def test_retries_six_times_with_doubling_backoff_then_drops(h, caplog):
    a = h.env.ALARMED.get_by_name("doomed")
    await a.behave("fail")
    t = h.now() + 1000
    await a.set(t)
    await h.advance(1)
    delays = []
    for _ in range(6):
        rec = h.record(a)
        assert rec.state is AlarmState.RETRYING and rec.scheduled_ms == t
        delays.append(rec.due_ms - h.now())
        assert await a.get() == t  # failed and waiting for a retry still counts as set
        await h.advance(delays[-1] / 1000 - 0.001)
        assert len(await a.log()) == len(delays)  # not yet
        with caplog.at_level(logging.ERROR, logger="duro.alarms"):
            await h.advance(0.001)
    assert delays == [2000, 4000, 8000, 16000, 32000, 64000]
    log = await a.log()
    assert [e["retry"] for e in log] == [0, 1, 2, 3, 4, 5, 6]
    assert [e["is_retry"] for e in log] == [False] + [True] * 6
    assert {e["scheduled"] for e in log} == {t}
    assert await a.get() is None  # dropped
    assert h.record(a) is None and h.index_rows() == []
    assert any("failed 7 times; the alarm is dropped" in r.message for r in caplog.records)
    await h.advance(1000)
    assert len(await a.log()) == 7


async def test_backoff_has_up_to_25_percent_jitter(h):
    h.sched.rand = lambda: 1.0
    a = h.env.ALARMED.get_by_name("jitter")
    await a.behave("fail")
    await a.set(h.now() + 1)
    await h.advance(0.001)
    assert h.record(a).due_ms - h.now() == 2500


async def test_fails_twice_then_succeeds(h):
    a = h.env.ALARMED.get_by_name("flaky")
    await a.behave("fail_times", 2)
    await a.set(h.now() + 1000)
    await h.advance(1)
    await h.advance(2)
    await h.advance(4)
    assert [e["retry"] for e in await a.log()] == [0, 1, 2]
    assert await a.get() is None
    await h.advance(100)
    assert len(await a.log()) == 3


async def test_a_handler_past_its_time_limit_is_cancelled_and_retried(h, monkeypatch, caplog):
    import duro.runtime.alarms as scheduler_module
    monkeypatch.setattr(scheduler_module, "ALARM_HANDLER_TIMEOUT_S", 0.05)
    a, b = h.env.ALARMED.get_by_name("slow"), h.env.ALARMED.get_by_name("quick")
    await a.behave("hang_once", 30)
    await a.set(h.now() + 1000)
    await b.set(h.now() + 1000)
    with caplog.at_level(logging.WARNING, logger="duro.alarms"):
        await h.advance(1)
    assert "ran longer than" in caplog.text
    assert len(await b.log()) == 1 and await b.get() is None  # the other object is not held up
    assert h.record(a).retries == 1
    await h.advance(2)
    assert [e["retry"] for e in await a.log()] == [0, 1]
    assert await a.get() is None


async def test_a_new_alarm_set_by_a_failing_handler_runs_instead_of_a_retry(h):
    a = h.env.ALARMED.get_by_name("newer")
    t1, t2 = h.now() + 1000, h.now() + 30_000
    await a.behave("fail_and_set", t2)
    await a.set(t1)
    await h.advance(1)
    assert await a.get() == t2
    await h.advance(10)  # a retry of t1 would have come after 2 s
    assert len(await a.log()) == 1
    await h.advance(20)
    log = await a.log()
    assert [(e["scheduled"], e["retry"]) for e in log] == [(t1, 0), (t2, 0)]
    assert await a.get() is None


async def test_delete_alarm_in_a_failing_handler_prevents_the_retry(h):
    a = h.env.ALARMED.get_by_name("giveup")
    await a.behave("fail_and_delete")
    await a.set(h.now() + 1000)
    await h.advance(1)
    await h.advance(100)
    assert len(await a.log()) == 1
    assert await a.get() is None and h.record(a) is None


async def test_abort_retries_unless_retry_alarm_false(h):
    a = h.env.ALARMED.get_by_name("abort")
    b = h.env.ALARMED.get_by_name("abort-no-retry")
    await a.behave("abort")
    await b.behave("abort_no_retry")
    t = h.now() + 1000
    await a.set(t)
    await b.set(t)
    await h.advance(1)
    # abort() resets the object (stubs that reached it stay broken; take new ones), and the
    # handler's log write of that attempt is rolled back.
    a = h.env.ALARMED.get_by_name("abort")
    b = h.env.ALARMED.get_by_name("abort-no-retry")
    assert await a.get() == t
    assert h.record(a).state is AlarmState.RETRYING and h.record(a).retries == 1
    assert await b.get() is None and h.record(b) is None
    await h.advance(100)
    assert await b.log() == []


# ------------------------------------------------------------------------------------ transactions
async def test_alarm_writes_share_the_implicit_transaction(h):
    a = h.env.ALARMED.get_by_name("gate")
    with pytest.raises(ObjectResetError):
        await a.put_and_set_then_abort(h.now() + 1000)
    a = h.env.ALARMED.get_by_name("gate")
    assert await a.x() is None
    assert await a.get() is None  # rolled back with the put
    assert h.record(a) is not None  # the index still looks at it: a phantom
    h.app.runtime.sweep(now=1e12)
    before = h.app.module.Alarmed.constructed
    await h.advance(2)  # the phantom is skipped without running the constructor
    assert h.app.module.Alarmed.constructed == before
    assert h.sched.statistics()["skipped"] == 1
    assert await a.log() == []
    assert h.record(a) is None


async def test_failed_transaction_rolls_back_the_alarm(h):
    a = h.env.ALARMED.get_by_name("txn")
    assert await a.set_in_failed_transaction(h.now() + 1000) is None
    assert await a.set_in_transaction(h.now() + 2000) == h.now() + 2000
    await h.advance(1)
    assert await a.log() == []
    await h.advance(1)
    assert len(await a.log()) == 1


async def test_delete_all_deletes_the_alarm(h):
    a = h.env.ALARMED.get_by_name("wiped")
    await a.set(h.now() + 1000)
    await a.wipe()
    assert await a.get() is None
    await h.advance(5)
    assert await a.log() == []
    assert h.record(a) is None


# ------------------------------------------------------------------------------------ restarts
async def test_alarm_due_while_stopped_fires_on_start(tmp_path, clock):
    data = tmp_path / "data"
    async with LocalApp(PROJECT, data, clock=clock) as local:
        a = local.env.ALARMED.get_by_name("restart")
        t = clock.now_ms() + 5000
        await a.set(t)
    await clock.advance(60)  # the server is down when it comes due
    async with LocalApp(PROJECT, data, clock=clock) as local:
        await local.runtime.alarms.wait_idle()
        a = local.env.ALARMED.get_by_name("restart")
        log = await a.log()
        assert [(e["scheduled"], e["retry"], e["name"]) for e in log] == [(t, 0, "restart")]
        assert await a.get() is None


async def test_retry_count_survives_a_restart(tmp_path, clock):
    data = tmp_path / "data"
    async with LocalApp(PROJECT, data, clock=clock, durability="os") as local:
        local.runtime.alarms.rand = lambda: 0.0
        a = local.env.ALARMED.get_by_name("persist")
        await a.behave("fail_times", 3)
        await a.set(clock.now_ms() + 10)
        await clock.advance(0.01)
        await local.runtime.alarms.wait_idle()
        await clock.advance(2)
        await local.runtime.alarms.wait_idle()
        assert [e["retry"] for e in await a.log()] == [0, 1]
    await clock.advance(10)
    async with LocalApp(PROJECT, data, clock=clock, durability="os") as local:
        sched = local.runtime.alarms
        sched.rand = lambda: 0.0
        await sched.wait_idle()
        await clock.advance(8)
        await sched.wait_idle()
        a = local.env.ALARMED.get_by_name("persist")
        assert [e["retry"] for e in await a.log()] == [0, 1, 2, 3]
        assert await a.get() is None


async def test_rebuild_index_from_the_objects(tmp_path, clock):
    data = tmp_path / "data"
    async with LocalApp(PROJECT, data, clock=clock) as local:
        a = local.env.ALARMED.get_by_name("lost-index")
        t = clock.now_ms() + 1000
        await a.set(t)
    for p in data.glob("alarms.sqlite*"):
        p.unlink()
    async with LocalApp(PROJECT, data, clock=clock) as local:
        sched = local.runtime.alarms
        assert sched.rebuild_index() == 1
        await clock.advance(1)
        await sched.wait_idle()
        a = local.env.ALARMED.get_by_name("lost-index")
        log = await a.log()
        assert [e["scheduled"] for e in log] == [t]
        assert log[0]["name"] is None  # a rebuilt index does not know names


async def test_fsync_durability_path(tmp_path, clock):
    # The default durability: the index WAL is fsynced with the object's commit.
    async with LocalApp(PROJECT, tmp_path / "data", clock=clock) as local:
        stubs = [local.env.ALARMED.get_by_name(f"f{i}") for i in range(10)]
        t = clock.now_ms() + 1000
        for s in stubs:
            await s.set(t)
        assert local.runtime.barrier.statistics()["synced_files"] > 0
        await clock.advance(1)
        await local.runtime.alarms.wait_idle()
        for s in stubs:
            assert len(await s.log()) == 1
            assert await s.get() is None
        assert local.runtime.alarms.statistics()["records"] == 0


async def test_local_app_advance_runs_retries_inside_the_step(h):
    a = h.env.ALARMED.get_by_name("harness")
    await a.behave("fail_times", 3)
    await a.set(h.now() + 1000)
    await h.local.advance(1 + 2 + 4 + 8)  # first attempt and three retries, in one call
    assert [e["retry"] for e in await a.log()] == [0, 1, 2, 3]
    assert await a.get() is None


async def test_an_alarm_of_a_namespace_no_class_serves_is_parked_not_fired(h, caplog):
    # An index row naming a namespace the project no longer has (a class removed or renamed): the
    # attempt is not delivered, the row is kept for a run that has the class, nothing else stops.
    from duro.ids import NamespaceKey
    ghost = str(NamespaceKey("no-such-namespace").id_from_name("x"))
    h.sched.note_outside_alarm("no-such-namespace", ghost, "x", h.now())
    a = h.env.ALARMED.get_by_name("alive")
    t = h.now() + 1000
    await a.set(t)
    with caplog.at_level(logging.WARNING, logger="duro.alarms"):
        await h.advance(1)
    assert h.sched.table.get(("no-such-namespace", ghost)).state is AlarmState.PARKED
    assert any("not delivered: no class registered for namespace 'no-such-namespace'" in r.getMessage()
               for r in caplog.records)
    assert [e["scheduled"] for e in await a.log()] == [t]
    assert [r for r in h.index_rows() if r[0] == ghost]  # kept in the index


async def test_the_runtime_is_the_alarm_schedulers_host(h):
    from duro.errors import UnknownNamespaceError
    from duro.ids import NamespaceKey
    from duro.runtime.alarms import AlarmHost
    runtime = h.local.runtime
    assert isinstance(runtime, AlarmHost)
    assert not runtime.serves("no-such-namespace")
    with pytest.raises(UnknownNamespaceError, match="no class registered for namespace 'no-such-namespace'"):
        runtime.activation("no-such-namespace", NamespaceKey("no-such-namespace").id_from_name("x"))
    assert runtime.statistics()["tasks"] == {"running": ["duro-alarm-scheduler", "duro-history-pruner",
                                                         "duro-sweeper"], "crashed": []}
