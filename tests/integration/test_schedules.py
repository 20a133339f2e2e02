"""Named schedules on a virtual clock with real SQLite files: the API, firing, many schedules with
the user's own alarm on one alarm row, retries, catch-up after a restart, idempotence by id."""

import datetime
import pathlib

import pytest

from duro.clock import VirtualClock
from duro.testing import LocalApp

PROJECT = pathlib.Path(__file__).parent / "projects" / "schedules"
START = 1_700_000_000.0  # 2023-11-14T22:13:20Z
MIN = 60_000


class Harness:
    def __init__(self, local, clock):
        self.local = local
        self.env = local.env
        self.clock = clock
        self.sched = local.runtime.alarms
        self.sched.rand = lambda: 0.0

    def now(self):
        return self.clock.now_ms()

    async def advance(self, seconds):
        await self.local.advance(seconds)  # stops at every alarm due inside the step


@pytest.fixture
def clock():
    return VirtualClock(START)


@pytest.fixture
async def h(tmp_path, clock):
    async with LocalApp(PROJECT, tmp_path / "data", clock=clock, durability="os") as local:
        yield Harness(local, clock)


async def test_api_list_get_cancel_and_aliases(h):
    p = h.env.PLANNER.get_by_name("api")
    a = await p.schedule(10, "ping", {"n": 1})
    b = await p.schedule(datetime.datetime.fromtimestamp(START + 5, datetime.timezone.utc), "ping", [2])
    c = await p.schedule("*/5 * * * *", "ping", None, id="every5", catch_up="all")
    assert a["type"] == "delayed" and a["time"] == h.now() + 10_000
    assert b["type"] == "scheduled" and b["time"] == h.now() + 5_000
    assert c == {"id": "every5", "type": "cron", "time": c["time"]} and c["time"] % (5 * MIN) == 0
    listed = await p.schedules()
    assert [s[0] for s in listed] == [b["id"], a["id"], "every5"]  # soonest first
    assert listed[1][1:4] == ("ping", {"n": 1}, "delayed")
    assert listed[2][5:] == ("*/5 * * * *", "all")
    assert [s[0] for s in await p.schedules(type="cron")] == ["every5"]
    ids, callback = await p.schedule_camel(60, "ping", catchUp="skip")
    assert len(ids) == 4 and callback == "ping"
    assert await p.cancel(a["id"]) is True
    assert await p.cancel(a["id"]) is False
    assert await p.cancel_camel("every5") is True
    assert len(await p.schedules()) == 2
    obj = await p.schedule_object(30, "ping")  # a Schedule crosses RPC as it is
    assert (obj.method, obj.callback, obj.type, obj.time, obj.payload) == ("ping", "ping", "delayed", h.now() + 30_000, None)
    assert await p.cancel(obj.id) is True
    with pytest.raises(TypeError, match="no method 'nope'"):
        await p.schedule(1, "nope")
    with pytest.raises(ValueError, match="catch_up must be"):
        await p.schedule(1, "ping", catch_up="sometimes")
    with pytest.raises(Exception, match="minute: 61 is out of range"):
        await p.schedule("61 * * * *", "ping")


async def test_many_schedules_fire_in_order_with_payloads(h):
    p = h.env.PLANNER.get_by_name("fire")
    for i in (3, 1, 2):
        await p.schedule(i, "ping", i, id=f"s{i}")
    await h.advance(1)
    assert [e[1] for e in await p.log()] == [1]
    await h.advance(5)
    assert [e[1:3] for e in await p.log()] == [[1, "s1"], [2, "s2"], [3, "s3"]]
    assert await p.schedules() == []  # one-shot schedules are gone after their call
    assert await p.raw_alarm_row() is None


async def test_user_alarm_side_by_side(h):
    p = h.env.PLANNER.get_by_name("side")
    t = h.now() + 10_000
    await p.set_alarm(t)
    await p.schedule(3, "ping", "early")
    await p.schedule(20, "ping", "late")
    assert await p.get_alarm() == t  # the user's own alarm, not the schedules'
    assert await p.raw_alarm_row() == h.now() + 3000  # the row serves the earliest
    await h.advance(3)
    assert [e[0:2] for e in await p.log()] == [["ping", "early"]]  # alarm() not called yet
    assert await p.get_alarm() == t
    await h.advance(7)
    assert (await p.log())[-1] == ["alarm", t, 0]
    assert await p.get_alarm() is None
    assert await p.raw_alarm_row() == h.now() + 10_000
    await h.advance(10)
    assert [e[:2] for e in await p.log()] == [["ping", "early"], ["alarm", t], ["ping", "late"]]
    assert await p.raw_alarm_row() is None
    # Deleting the user's alarm leaves the schedules alone, and the other way round.
    await p.set_alarm(h.now() + 5000)
    await p.schedule(2, "ping", "x", id="x")
    await p.delete_alarm()
    assert await p.get_alarm() is None
    await h.advance(5)
    assert (await p.log())[-1][:2] == ["ping", "x"]
    assert [e[0] for e in await p.log()].count("alarm") == 1


async def test_existing_alarm_kept_when_the_first_schedule_is_made(h):
    p = h.env.PLANNER.get_by_name("mode")
    t = h.now() + 30_000
    await p.set_alarm(t)
    await p.schedule(60, "ping")
    assert await p.get_alarm() == t
    assert await p.raw_alarm_row() == t
    await h.advance(30)
    assert await p.log() == [["alarm", t, 0]]


async def test_idempotent_by_id(h):
    p = h.env.PLANNER.get_by_name("idem")
    first = await p.schedule(10, "ping", "a", id="job")
    await h.advance(4)
    again = await p.schedule(10, "ping", "a", id="job")  # same request again: not moved
    assert again == first
    assert len(await p.schedules()) == 1
    changed = await p.schedule(10, "ping", "b", id="job")  # a different one replaces it
    assert changed["time"] == h.now() + 10_000
    await h.advance(6)
    assert await p.log() == []
    await h.advance(4)
    assert [e[1] for e in await p.log()] == ["b"]


async def test_cron_repeats(h):
    p = h.env.PLANNER.get_by_name("cron")
    s = await p.schedule("* * * * *", "ping", "tick")
    first = s["time"]
    await h.advance((first - h.now()) / 1000)
    for _ in range(2):
        await h.advance(60)
    assert [e[3] for e in await p.log()] == [first, first + MIN, first + 2 * MIN]
    assert [e[4] for e in await p.log()] == [0, 0, 0]  # nothing missed
    assert (await p.schedules())[0][4] == first + 3 * MIN


async def test_schedule_made_by_a_schedule_and_self_cancel(h):
    p = h.env.PLANNER.get_by_name("chain")
    await p.schedule(1, "chain", 1)
    for _ in range(3):
        await h.advance(1)
    assert await p.log() == [["chain", 1], ["chain", 2], ["chain", 3]]
    await p.schedule("* * * * *", "self_cancel", None, id="once-only")
    await h.advance(120)
    assert [e[0] for e in await p.log()].count("self_cancel") == 1
    assert await p.schedules() == []


async def test_failing_method_retries_with_backoff_then_succeeds(h):
    p = h.env.PLANNER.get_by_name("flaky")
    await p.fail_times(2)
    await p.schedule(1, "flaky", "f")
    await p.schedule(3, "ping", "other")
    await h.advance(1)
    assert [e[3] for e in await p.log()] == [0]
    await h.advance(2)  # retry 1 after 2 s, with the other schedule (not held up by the failure)
    assert sorted(e[0] for e in await p.log()) == ["flaky", "flaky", "ping"]
    await h.advance(4)  # retry 2 after 4 s succeeds
    flaky = [e for e in await p.log() if e[0] == "flaky"]
    assert [e[3] for e in flaky] == [0, 1, 2]
    assert len({e[2] for e in flaky}) == 1  # every retry is for the same time
    assert await p.schedules() == []


async def test_failing_method_given_up_after_six_retries(h, caplog):
    p = h.env.PLANNER.get_by_name("doomed")
    await p.fail_times(100)
    await p.schedule(1, "flaky", "f")
    await h.advance(1)
    for d in (2, 4, 8, 16, 32, 64):
        await h.advance(d)
    assert len(await p.log()) == 7
    assert await p.schedules() == []
    assert "failed 7 times; given up" in caplog.text
    await h.advance(600)
    assert len(await p.log()) == 7


async def test_failing_user_alarm_retries_on_its_own_count(h):
    p = h.env.PLANNER.get_by_name("alarmfail")
    await p.alarm_fails(1)
    await p.schedule("* * * * *", "ping", None)
    t = h.now() + 1000
    await p.set_alarm(t)
    await h.advance(1)
    await h.advance(2)
    alarms = [e for e in await p.log() if e[0] == "alarm"]
    assert alarms == [["alarm", t, 0], ["alarm", t, 1]]
    assert await p.get_alarm() is None


# ------------------------------------------------------------------ catch-up across a restart
@pytest.mark.parametrize("policy, expected", [
    ("once", lambda first: [(first + 9 * MIN, 9)]),
    ("all", lambda first: [(first + i * MIN, 1) for i in range(10)]),
    ("skip", lambda first: []),
])
async def test_catch_up_after_downtime(tmp_path, policy, expected):
    clock = VirtualClock(START)
    data = tmp_path / "data"
    async with LocalApp(PROJECT, data, clock=clock, durability="os") as local:
        p = local.env.PLANNER.get_by_name("down")
        s = await p.schedule("* * * * *", "ping", None, catch_up=policy)
        first = s["time"]
    # The server is down for ten minutes past the first time.
    await clock.advance((first - clock.now_ms()) / 1000 + 9 * 60 + 30)
    async with LocalApp(PROJECT, data, clock=clock, durability="os") as local:
        local.runtime.alarms.rand = lambda: 0.0
        await local.runtime.alarms.wait_idle()
        p = local.env.PLANNER.get_by_name("down")
        log = await p.log()
        got = [(e[3], e[4]) for e in log]
        if policy == "all":  # each call for its own time; ``missed`` counts the missed ones among them
            assert got == [(t, 9) for t, _ in expected(first)]
        else:
            assert got == expected(first)
        nxt = (await p.schedules())[0][4]
        assert nxt == first + 10 * MIN  # the next time is in the future, not a missed one
        await clock.advance(30)
        await local.runtime.alarms.wait_idle()
        assert (await p.log())[-1][3] == first + 10 * MIN


async def test_one_shot_catch_up_skip_and_once(tmp_path):
    clock = VirtualClock(START)
    data = tmp_path / "data"
    async with LocalApp(PROJECT, data, clock=clock, durability="os") as local:
        p = local.env.PLANNER.get_by_name("oneshot")
        await p.schedule(10, "ping", "kept", catch_up="once")
        await p.schedule(10, "ping", "skipped", catch_up="skip")
        await p.schedule(3600, "ping", "later", catch_up="skip")
    await clock.advance(600)
    async with LocalApp(PROJECT, data, clock=clock, durability="os") as local:
        await local.runtime.alarms.wait_idle()
        p = local.env.PLANNER.get_by_name("oneshot")
        assert [(e[1], e[4]) for e in await p.log()] == [("kept", 1)]
        assert [s[2] for s in await p.schedules()] == ["later"]


async def test_user_alarm_dropped_after_seven_failures_schedules_go_on(h, caplog):
    p = h.env.PLANNER.get_by_name("alarmdoomed")
    await p.alarm_fails(100)
    await p.schedule("* * * * *", "ping", None, id="tick")
    t = h.now() + 1000
    await p.set_alarm(t)
    await h.advance(1)
    for d in (2, 4, 8, 16, 32, 64):
        await h.advance(d)
    alarms = [e for e in await p.log() if e[0] == "alarm"]
    assert [e[2] for e in alarms] == [0, 1, 2, 3, 4, 5, 6] and {e[1] for e in alarms} == {t}
    assert "failed 7 times; the alarm is dropped" in caplog.text
    assert await p.get_alarm() is None
    ticks = len([e for e in await p.log() if e[0] == "ping"])
    await h.advance(120)
    assert len([e for e in await p.log() if e[0] == "ping"]) == ticks + 2


async def test_alarm_handler_sees_no_alarm_and_may_set_the_next(h):
    p = h.env.PLANNER.get_by_name("next")
    await p.schedule(3600, "ping")
    t = h.now() + 1000
    await p.set_alarm(t)
    await p.alarm_next(t + 5000)
    await h.advance(1)
    assert await p.alarm_during() is None  # as on Cloudflare: no alarm while alarm() runs
    assert await p.get_alarm() == t + 5000
    await h.advance(5)
    assert [e[1] for e in await p.log() if e[0] == "alarm"] == [t, t + 5000]
    assert await p.get_alarm() is None
    assert await p.raw_alarm_row() == (await p.schedules())[0][4]


async def test_a_reset_in_a_method_is_retried_by_the_alarm(h):
    p = h.env.PLANNER.get_by_name("reset")
    await p.aborts(2)
    await p.schedule(1, "aborter", None)
    await h.advance(1)
    await h.advance(2)
    await h.advance(4)  # the alarm scheduler's backoff: 2 s, then 4 s
    p = h.env.PLANNER.get_by_name("reset")  # (a stub that reached a reset object stays broken)
    # The writes of the reset calls were rolled back with them: only the third call's entry stays.
    assert [e[0] for e in await p.log()] == ["aborter"]
    assert await p.schedules() == []


async def test_abort_without_retry_gives_up_what_is_due_and_keeps_the_rest(h, caplog):
    p = h.env.PLANNER.get_by_name("noretry")
    await p.schedule(1, "aborter", "no-retry", id="a")
    await p.schedule("* * * * *", "ping", None, id="tick")
    await p.schedule(90, "ping", "later", id="later")
    await h.advance(1)
    p = h.env.PLANNER.get_by_name("noretry")  # (a stub that reached a reset object stays broken)
    assert "given up for now" in caplog.text
    assert [s[0] for s in await p.schedules()] == ["tick", "later"]  # 'a' is given up
    await h.advance(120)
    assert [e[1] for e in await p.log() if e[0] == "ping"].count("later") == 1
    assert [e[0] for e in await p.log()].count("ping") >= 3


async def test_a_method_cancelling_another_due_schedule(h):
    p = h.env.PLANNER.get_by_name("cancelother")
    await p.schedule(1, "cancel_other", "victim", id="a")
    await p.schedule(1.001, "ping", "victim", id="victim")
    await h.advance(2)
    assert [e[0] for e in await p.log()] == ["cancel_other"]


async def test_delete_all_removes_schedules_and_the_alarm(h):
    p = h.env.PLANNER.get_by_name("wipe")
    await p.schedule(5, "ping")
    await p.set_alarm(h.now() + 5000)
    await p.delete_everything()
    assert await p.schedules() == [] and await p.get_alarm() is None
    await h.advance(10)
    assert await p.log() == []
    await p.schedule(1, "ping", "after")  # and schedules work again afterwards
    await h.advance(1)
    assert [e[1] for e in await p.log()] == ["after"]


async def test_a_schedule_rolls_back_with_its_transaction(h):
    p = h.env.PLANNER.get_by_name("txn")
    assert await p.schedule_then_fail() is None
    await h.advance(10)
    assert await p.log() == []


async def test_filters_and_a_method_without_parameters(h):
    p = h.env.PLANNER.get_by_name("filters")
    await p.schedule(10, "nothing", None, id="a")
    await p.schedule(100, "nothing", None, id="b")
    await p.schedule("0 0 1 1 *", "nothing", None, id="c")
    now = h.now()
    assert await p.schedules(time_range={"start": now + 50_000, "end": now + 200_000}) == \
        [("b", "nothing", None, "delayed", now + 100_000, None, "once")]
    assert await p.schedules_camel({"type": "delayed", "timeRange": {"end": now + 50_000}}) == ["a"]
    await h.advance(10)
    assert await p.log() == [["nothing"]]


async def test_a_failing_alarm_that_set_or_deleted_its_alarm_is_not_retried(h, caplog):
    p = h.env.PLANNER.get_by_name("touched")
    await p.schedule(3600, "ping")
    t = h.now() + 1000
    await p.set_alarm(t)
    await p.alarm_fails(1)
    await p.alarm_next(t + 10_000)  # alarm() sets the next alarm, then fails: the new one stands
    await h.advance(1)
    assert await p.get_alarm() == t + 10_000
    await h.advance(10)
    assert [e[1:] for e in await p.log() if e[0] == "alarm"] == [[t, 0], [t + 10_000, 0]]
    await p.set_alarm(h.now() + 1000)
    await p.alarm_delete_and_fail()  # alarm() deletes its alarm, then fails: no retry
    await h.advance(100)
    assert caplog.text.count("deleted, then failed") == 1  # called once (it fails before logging)
    assert await p.get_alarm() is None
