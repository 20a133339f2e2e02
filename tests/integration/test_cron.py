"""Cron triggers on a real loop, real SQLite and a virtual clock: ``scheduled(controller, env, ctx)``
runs at each matching minute (UTC) and not between, with Cloudflare's controller fields; a failing
run is logged and the next still runs; ``ctx.wait_until`` work is part of the run; a restart
neither fires a minute twice nor backfills the minutes it was down.

The project (projects/crons) triggers on "*/2 * * * *", "30 * * * *" and "15 * * * *" (whose
handler raises); every run is recorded in a Durable Object, read back over HTTP.
"""

import datetime
import json
import logging
import pathlib

import pytest

from duro.clock import VirtualClock
from duro.testing import LocalApp

PROJECT = pathlib.Path(__file__).parent / "projects" / "crons"
UTC = datetime.timezone.utc


def at(text):
    """Epoch seconds of a UTC time on the day the virtual clock starts (2023-11-14)."""
    return datetime.datetime.fromisoformat(f"2023-11-14T{text}").replace(tzinfo=UTC).timestamp()


def ms(text):
    return int(at(text) * 1000)


class Harness:
    def __init__(self, local, clock):
        self.local = local
        self.clock = clock
        self.crons = local.app.cron_scheduler

    async def advance_to(self, text):
        await self.local.advance(at(text) - self.clock.now())
        await self.crons.wait_idle()

    async def runs(self, via="handler"):
        rows = json.loads((await self.local.fetch("/")).body)
        return [(cron, at_ms) for cron, at_ms, v in rows if v == via]


async def started(tmp_path, clock_at):
    clock = VirtualClock(start=at(clock_at))
    local = LocalApp(PROJECT, tmp_path / "data", clock=clock, durability="os")
    await local.__aenter__()
    return Harness(local, clock)


async def test_fires_at_each_matching_minute_and_not_between(tmp_path):
    h = await started(tmp_path, "22:13:20")
    try:
        await h.advance_to("22:13:59")
        assert await h.runs() == []
        await h.advance_to("22:14:00")
        assert await h.runs() == [("*/2 * * * *", ms("22:14:00"))]
        await h.advance_to("22:15:59")  # 22:15 is the failing trigger: nothing recorded
        assert await h.runs() == [("*/2 * * * *", ms("22:14:00"))]
        await h.advance_to("22:20:30")
        assert await h.runs() == [("*/2 * * * *", ms(t)) for t in ("22:14:00", "22:16:00", "22:18:00", "22:20:00")]
    finally:
        await h.local.__aexit__(None, None, None)


async def test_two_expressions_due_at_the_same_minute_both_fire(tmp_path):
    h = await started(tmp_path, "22:29:10")
    try:
        await h.advance_to("22:31:00")
        assert sorted(await h.runs()) == [("*/2 * * * *", ms("22:30:00")), ("30 * * * *", ms("22:30:00"))]
    finally:
        await h.local.__aexit__(None, None, None)


async def test_a_failing_run_is_logged_and_the_next_runs_still_fire(tmp_path, caplog):
    h = await started(tmp_path, "22:14:30")
    try:
        with caplog.at_level(logging.ERROR, logger="duro.cron"):
            await h.advance_to("22:15:10")
        failures = [r for r in caplog.records if r.name == "duro.cron"]
        assert len(failures) == 1
        assert "'15 * * * *'" in failures[0].getMessage()
        assert "the quarter-past job failed" in str(failures[0].exc_info[1])
        await h.advance_to("22:16:00")
        assert ("*/2 * * * *", ms("22:16:00")) in await h.runs()
        assert h.crons.statistics()["failed"] == 1
    finally:
        await h.local.__aexit__(None, None, None)


async def test_wait_until_work_is_part_of_the_run(tmp_path):
    h = await started(tmp_path, "22:13:50")
    try:
        await h.advance_to("22:14:00")
        # wait_idle() returned: the run, and the write it handed to ctx.waitUntil, are done.
        assert await h.runs("wait_until") == [("*/2 * * * *", ms("22:14:00"))]
    finally:
        await h.local.__aexit__(None, None, None)


async def test_a_restart_within_the_minute_does_not_fire_it_twice(tmp_path):
    h = await started(tmp_path, "22:13:50")
    await h.advance_to("22:14:05")
    assert await h.runs() == [("*/2 * * * *", ms("22:14:00"))]
    await h.local.__aexit__(None, None, None)

    h = await started(tmp_path, "22:14:40")  # back up while 22:14 is still the current minute
    try:
        await h.advance_to("22:15:59")
        assert await h.runs() == [("*/2 * * * *", ms("22:14:00"))]
        await h.advance_to("22:16:00")
        assert await h.runs() == [("*/2 * * * *", ms("22:14:00")), ("*/2 * * * *", ms("22:16:00"))]
    finally:
        await h.local.__aexit__(None, None, None)


async def test_minutes_missed_while_down_are_not_backfilled(tmp_path):
    h = await started(tmp_path, "22:13:50")
    await h.advance_to("22:14:05")
    await h.local.__aexit__(None, None, None)

    # Down from 22:14:05 to 22:21:30: 22:16, 22:18 and 22:20 never run; 22:22 is the next run.
    h = await started(tmp_path, "22:21:30")
    try:
        await h.advance_to("22:22:00")
        assert await h.runs() == [("*/2 * * * *", ms("22:14:00")), ("*/2 * * * *", ms("22:22:00"))]
    finally:
        await h.local.__aexit__(None, None, None)


async def test_back_up_within_a_minute_that_was_not_fired_runs_it_late(tmp_path):
    # Started at 22:20:30 with no record of 22:20: the current minute still runs (late, as a
    # Cloudflare run may start a few seconds after its minute), with scheduled_time 22:20:00.
    h = await started(tmp_path, "22:20:30")
    try:
        await h.advance_to("22:20:31")
        assert await h.runs() == [("*/2 * * * *", ms("22:20:00"))]
    finally:
        await h.local.__aexit__(None, None, None)


async def test_the_controller_carries_cloudflare_fields(tmp_path):
    seen = []
    h = await started(tmp_path, "22:13:00")
    try:
        import workers  # the shim the project imports: its Default class is the entrypoint

        class Probe(h.local.app.entrypoint):
            async def scheduled(self, controller, env, ctx):
                seen.append((controller.cron, controller.scheduled_time, controller.scheduledTime, controller.type,
                             env is h.local.env, callable(ctx.wait_until), callable(ctx.waitUntil)))
                controller.noRetry()
                controller.no_retry()

        assert workers.WorkerEntrypoint in Probe.__mro__
        h.local.app.entrypoint = Probe
        await h.local.app.scheduled("5 4 * * sun", 1234)
        assert seen == [("5 4 * * sun", 1234, 1234, "scheduled", True, True, True)]
    finally:
        await h.local.__aexit__(None, None, None)


async def test_an_entrypoint_without_scheduled_fails_the_run_with_a_clear_error(tmp_path):
    h = await started(tmp_path, "22:13:00")
    try:
        h.local.app.entrypoint = type("NoCron", (), {"__init__": lambda self, ctx, env: None})
        with pytest.raises(TypeError, match="no scheduled\\(\\) handler"):
            await h.local.app.scheduled("* * * * *")
    finally:
        await h.local.__aexit__(None, None, None)
