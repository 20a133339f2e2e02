"""The event-recording seam on a real loop (``runtime/events.py``): one record per event, lines
printed or logged during an event go to that event only, and a subscriber's queue is bounded."""

import asyncio
import pathlib

import pytest

from duro.errors import ObjectResetError, OverloadedError
from duro.runtime import RuntimeLimits
from duro.runtime.events import TailFilter
from duro.testing import LocalApp

from ..waiting import wait_until

PROJECT = pathlib.Path(__file__).parents[1] / "e2e" / "projects" / "observe"


@pytest.fixture
async def app(tmp_path):
    async with LocalApp(PROJECT, tmp_path / "data") as app:
        yield app


def _records(sub):
    return [r.to_json() for r in sub.take_nowait()]


async def test_each_event_keeps_its_own_lines_across_a_nested_rpc(app, capsys):
    hub = app.runtime.events
    sub = hub.subscribe()
    assert await app.env.COUNTER.get_by_name("a").relay("b") == "pong"
    recs = _records(sub)
    assert [(r["class"], r["name"], r["kind"], r["label"], r["status"]) for r in recs] == [
        ("Other", "b", "rpc", "ping", "ok"), ("Counter", "a", "rpc", "relay", "ok")]
    assert recs[0]["logs"] == ["ping"] and recs[0]["rows_written"] == 1
    assert recs[1]["logs"] == ["relay before", "relay after"]
    assert recs[1]["duration_ms"] >= recs[0]["duration_ms"]
    assert "relay before" in capsys.readouterr().out  # still printed
    sub.close()


async def test_statuses_and_counters(app):
    hub = app.runtime.events
    sub = hub.subscribe(TailFilter(statuses=frozenset({"error", "reset"})))
    stub = app.env.COUNTER.get_by_name("s")
    await stub.increment()
    with pytest.raises(ValueError):
        await stub.fail()
    with pytest.raises(ObjectResetError):
        await app.env.COUNTER.get_by_name("r").abort_me()
    recs = _records(sub)
    assert [(r["label"], r["status"], r["logs"][0]) for r in recs] == [
        ("fail", "error", "about to fail"), ("abort_me", "reset", "aborting")]
    assert recs[1]["error"].startswith("ObjectResetError")
    # duro's own log line about the reset is one of the event's lines too.
    assert recs[1]["logs"][1].startswith("WARNING duro.runtime: resetting observe-e2e-Counter/")
    assert hub.events.get(("Counter", "rpc", "ok")) == 1
    assert hub.events.get(("Counter", "rpc", "error")) == 1
    assert hub.events.get(("Counter", "rpc", "reset")) == 1
    assert hub.resets.get(("abort",)) == 1
    assert hub.rows_written.get(("Counter",)) >= 1
    sub.close()


async def test_a_full_subscription_drops_and_counts_and_never_waits(app):
    hub = app.runtime.events
    sub = hub.subscribe(maxsize=3)
    stub = app.env.COUNTER.get_by_name("q")
    await asyncio.gather(*(stub.increment() for _ in range(10)))
    assert len(sub.queue) == 3 and sub.dropped == 7 and hub.dropped.get() == 7
    assert [r.label for r in sub.take_nowait()] == ["increment"] * 3
    sub.close()
    assert not hub.capturing and hub.subscribers == []


async def test_no_subscriber_no_lines_kept(app):
    hub = app.runtime.events
    assert hub.begin_logs() is None  # nothing is collected while nobody listens
    await app.env.COUNTER.get_by_name("n").increment()
    assert hub.events.get(("Counter", "rpc", "ok")) == 1


async def test_an_event_refused_for_overload_is_recorded_with_its_bound(tmp_path):
    async with LocalApp(PROJECT, tmp_path / "data", limits=RuntimeLimits(max_queued_events=2)) as app:
        hub = app.runtime.events
        sub = hub.subscribe(TailFilter(statuses=frozenset({"overloaded"})))
        stub = app.env.COUNTER.get_by_name("busy")
        held = [asyncio.ensure_future(stub.hold(0.2)) for _ in range(2)]
        act = app.runtime.activation(stub._ns.unique_key, stub.id)
        await wait_until(lambda: act.inflight == 2)  # both running: the queue is full
        with pytest.raises(OverloadedError):
            await app.env.COUNTER.get_by_name("busy").increment()
        await asyncio.gather(*held)
        recs = _records(sub)
        assert [(r["label"], r["status"]) for r in recs] == [("increment", "overloaded")]
        assert recs[0]["error"] == "OverloadedError: Durable Object is overloaded. Too many requests queued."
        assert hub.overloaded.get(("queue",)) == 1
        sub.close()
