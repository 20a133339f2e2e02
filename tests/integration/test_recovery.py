"""Point-in-time recovery through ctx.storage on a real loop: bookmarks, a restore scheduled with
on_next_session_restore_bookmark() and ctx.abort(), seen by the next activation, then undone."""

import datetime
import pathlib

import pytest

from duro.clock import VirtualClock
from duro.errors import InvalidInputError, ObjectResetError
from duro.testing import LocalApp

PROJECT = pathlib.Path(__file__).parent / "projects" / "recovery"


@pytest.fixture
async def app(tmp_path):
    clock = VirtualClock()
    async with LocalApp(PROJECT, tmp_path / "data", clock=clock) as local:
        local.clock = clock
        yield local


async def restart(app, name):
    with pytest.raises(ObjectResetError, match="restart for restore"):
        await app.env.NOTES.get_by_name(name).do_abort()
    return app.env.NOTES.get_by_name(name)


async def test_restore_on_next_session_then_undo(app):
    stub = app.env.NOTES.get_by_name("n")
    b1 = await stub.add("first")
    await app.clock.advance(60)
    b2 = await stub.add("second")
    assert b1 < b2
    when = app.clock.now_ms() + 3_600_000
    await stub.set_alarm(when)
    before = await stub.state()
    assert before == {"notes": ["first", "second"], "last": "second", "alarm": when, "fired": None}

    undo = await stub.schedule_only(b1)
    assert undo >= b2
    assert (await stub.state())["notes"] == ["first", "second"]  # nothing changes in this session
    stub = await restart(app, "n")
    assert await stub.state() == {"notes": ["first"], "last": "first", "alarm": None, "fired": None}

    # The restore is a point in history: going back to the bookmark before it undoes it, alarm too.
    await stub.schedule_only(undo)
    stub = await restart(app, "n")
    assert await stub.state() == before
    await app.clock.advance(3600)
    await app.runtime.alarms.wait_idle()
    assert (await stub.state())["fired"] is True


async def test_restore_with_abort_in_the_same_call(app):
    stub = app.env.NOTES.get_by_name("m")
    b1 = await stub.add("x")
    await stub.add("y")
    with pytest.raises(ObjectResetError, match="restoring"):
        await stub.restore(b1)
    stub = app.env.NOTES.get_by_name("m")
    assert (await stub.state())["notes"] == ["x"]


async def test_bookmark_for_time(app):
    stub = app.env.NOTES.get_by_name("t")
    await stub.add("one")
    t1 = app.clock.now_ms()
    await app.clock.advance(10)
    await stub.add("two")
    b = await stub.bookmark_for_time(t1 + 5000)
    dt = datetime.datetime.fromtimestamp((t1 + 5000) / 1000, datetime.timezone.utc)
    assert await stub.bookmark_for_time(dt) == b
    await stub.schedule_only(b)
    stub = await restart(app, "t")
    assert (await stub.state())["notes"] == ["one"]


async def test_bad_input_is_a_clear_error_that_changes_nothing(app):
    stub = app.env.NOTES.get_by_name("bad")
    b1 = await stub.add("keep")
    with pytest.raises(InvalidInputError, match="^Invalid bookmark: 'garbage' is not a bookmark"):
        await stub.schedule_only("garbage")
    seq, ms, tag = b1.split("-")
    with pytest.raises(InvalidInputError, match="does not name a point in this object's history"):
        await stub.schedule_only(f"{int(seq, 16) + 50:016x}-{ms}-{tag}")
    with pytest.raises(InvalidInputError, match="outside the retention window"):
        await stub.bookmark_for_time(app.clock.now_ms() - 31 * 86_400_000)
    with pytest.raises(InvalidInputError, match="in the future"):
        await stub.bookmark_for_time(app.clock.now_ms() + 86_400_000)
    stub = await restart(app, "bad")
    assert (await stub.state())["notes"] == ["keep"]
    assert await stub.bookmark() == b1


async def test_the_pruner_drops_history_older_than_the_window(app):
    stub = app.env.NOTES.get_by_name("old")
    b1 = await stub.add("kept as the base")
    first = await stub.bookmark_for_time(app.clock.now_ms())
    assert first == b1
    pruner = next(s for s in app.runtime._services if type(s).__name__ == "HistoryPruner")
    assert pruner.statistics()["pruned"] == 0
    await app.clock.advance(31 * 86_400)  # the pruner's hourly pass runs on the runtime's clock
    assert pruner.statistics()["pruned"] == 1 and pruner.statistics()["failures"] == 0
    b2 = await stub.add("recent")
    assert await pruner.prune_all() == 0  # nothing more to drop
    b3 = await stub.add("after pruning")  # appends to the rewritten file
    assert b1 < b2 < b3
    await stub.schedule_only(b1)  # the state at the window's start is still there
    stub = await restart(app, "old")
    assert (await stub.state())["notes"] == ["kept as the base"]
