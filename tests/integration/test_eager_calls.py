"""Calls run when they are made: storage methods, transaction() and RPC on stubs do their work at
the call, awaited or not, in call order; the result is awaitable; a failure nobody awaited resets
the object (storage) or is logged (RPC), once. Over a real runtime and real SQLite."""

import asyncio
import logging
import pathlib

import pytest

from duro.errors import ObjectResetError
from duro.testing import HeldBarrier, LocalApp

from ..waiting import wait_until

PROJECT = pathlib.Path(__file__).parent / "projects" / "eager"


@pytest.fixture
async def eager(tmp_path):
    async with LocalApp(PROJECT, tmp_path / "data") as app:
        yield app


async def test_unawaited_put_is_stored(eager):
    stub = eager.env.E.get_by_name("put")
    assert await stub.put_unawaited("k", {"v": 1}) == "sent"
    assert await stub.put_unawaited_sync("s", 2) == "sent"
    assert await stub.stored() == {"k": {"v": 1}, "s": 2}


async def test_unawaited_put_survives_a_restart(tmp_path):
    async with LocalApp(PROJECT, tmp_path / "data") as app:
        assert await app.env.E.get_by_name("restart").put_unawaited("k", 7) == "sent"
    async with LocalApp(PROJECT, tmp_path / "data") as app:
        assert await app.env.E.get_by_name("restart").stored() == {"k": 7}


async def test_unawaited_calls_run_in_call_order(eager):
    stub = eager.env.E.get_by_name("order")
    assert await stub.in_order() == [2, {"a": 4, "b": 3}]


async def test_unawaited_set_alarm_and_delete_alarm(eager):
    stub = eager.env.E.get_by_name("alarm")
    when = eager.runtime.clock.now_ms() + 3_600_000
    assert await stub.alarm_unawaited(when) == "set"
    assert await stub.get_alarm() == when
    assert await stub.delete_alarm_unawaited() == "deleted"
    assert await stub.get_alarm() is None
    await stub.alarm_unawaited(1)  # in the past: fires at once
    await wait_until(lambda: stub.stored(), what="the alarm set without await to run")
    assert await stub.stored() == {"alarm_ran": True}


async def test_unawaited_delete_all_and_transaction(eager):
    stub = eager.env.E.get_by_name("txn")
    await stub.put_unawaited("k", 1)
    assert await stub.delete_all_unawaited() == "deleted"
    assert await stub.stored() == {}
    assert await stub.transaction_unawaited() == "started"
    assert await stub.stored() == {"t1": 1, "t2": 2}


async def test_results_work_with_create_task_and_gather(eager):
    assert await eager.env.E.get_by_name("task").as_task() == [1, None]  # the put ran at the call
    assert await eager.env.E.get_by_name("task").stored() == {"task": 1}


async def test_unawaited_failure_resets_the_object_and_is_logged_once(eager, caplog):
    stub = eager.env.E.get_by_name("fail")
    assert await stub.bump() == 1
    with caplog.at_level(logging.ERROR, logger="duro.runtime"):
        with pytest.raises(ObjectResetError, match="Unencodable"):
            await stub.fail_unawaited()
    reports = [r for r in caplog.records if "was never awaited" in r.getMessage()]
    assert len(reports) == 1 and "put()" in reports[0].getMessage()
    # The reset dropped the instance (its memory) and the write made in the same turn, which was
    # never acknowledged.
    fresh = eager.env.E.get_by_name("fail")
    assert await fresh.bump() == 1
    assert await fresh.stored() == {}


async def test_a_failure_awaited_later_raises_and_does_not_reset(eager, caplog):
    stub = eager.env.E.get_by_name("later")
    assert await stub.bump() == 1
    with caplog.at_level(logging.ERROR):
        first, second = await stub.fail_awaited_later()
    assert "Unencodable" in first and first == second
    assert not [r for r in caplog.records if "never awaited" in r.getMessage()]
    assert await stub.bump() == 2  # the same instance: no reset
    assert await stub.stored() == {"after": 1}


async def test_unawaited_failing_transaction_resets(eager, caplog):
    stub = eager.env.E.get_by_name("txnfail")
    assert await stub.bump() == 1
    with caplog.at_level(logging.ERROR, logger="duro.runtime"):
        await stub.fail_in_transaction_unawaited()
        await wait_until(lambda: stub._act.broken is not None, what="the failed transaction to reset the object")
    assert len([r for r in caplog.records if "transaction() failed" in r.getMessage()]) == 1
    assert await eager.env.E.get_by_name("txnfail").bump() == 1


async def test_unawaited_write_waits_at_the_output_gate(eager):
    barrier = HeldBarrier()
    eager.runtime.barrier = barrier
    stub = eager.env.E.get_by_name("gate")
    call = asyncio.ensure_future(stub.put_unawaited("k", 1))
    await wait_until(lambda: barrier.held, what="the unawaited write to be submitted for durability")
    for _ in range(20):  # turns of the loop in which an early result would leave
        await asyncio.sleep(0)
    assert not call.done(), "the result left before the unawaited write was durable"
    barrier.release_all()
    assert await call == "sent"


async def test_transaction_texts_name_the_method(eager):
    stub = eager.env.E.get_by_name("texts")
    committed = await stub.escaped_txn("committed")
    assert committed[0] == ("Cannot call get() on transaction that has already committed: "
                            "did you move `txn` outside of the closure?")
    assert [t.split(" on ")[0] for t in committed] == [
        "Cannot call get()", "Cannot call put()", "Cannot call delete()", "Cannot call list()",
        "Cannot call getAlarm()", "Cannot call setAlarm()", "Cannot call deleteAlarm()"]
    rolled = await stub.escaped_txn("rolled back")
    assert rolled == [f"Cannot {op}() on rolled back transaction" for op in
                      ("get", "put", "delete", "list", "getAlarm", "setAlarm", "deleteAlarm")]


async def test_unawaited_rpc_calls_are_delivered_in_order(eager):
    caller = eager.env.E.get_by_name("caller")
    assert await caller.call_unawaited("callee") == "called"
    callee = eager.env.E.get_by_name("callee")
    await wait_until(lambda: callee.log(), what="the unawaited calls to arrive")
    await wait_until(lambda: _length(callee.log(), 3), what="all three calls")
    assert await callee.log() == ["first", "second", "third"]


async def _length(aw, n):
    return len(await aw or []) >= n


async def test_unawaited_rpc_failure_is_logged_once(eager, caplog):
    caller = eager.env.E.get_by_name("boom-caller")
    with caplog.at_level(logging.ERROR, logger="duro.rpc"):
        assert await caller.call_boom_unawaited("boom-callee") == "called"
        await wait_until(lambda: [r for r in caplog.records if "never awaited" in r.getMessage()],
                         what="the failure to be logged")
        for _ in range(20):
            await asyncio.sleep(0)
    reports = [r for r in caplog.records if "never awaited" in r.getMessage()]
    assert len(reports) == 1 and "boom()" in reports[0].getMessage() and "boom in the callee" in reports[0].getMessage()
    assert await caller.bump() == 1  # the caller was not reset


async def test_rpc_result_is_awaitable_later_and_as_a_task(eager):
    stub = eager.env.E.get_by_name("later-rpc")
    pending = stub.record("x")  # already on its way
    await wait_until(lambda: eager.env.E.get_by_name("later-rpc").log(), what="the call to run")
    assert await pending == 1
    assert await asyncio.create_task(stub.record("y")) == 2
    with pytest.raises(ValueError, match="boom in the callee"):
        await stub.boom()


async def test_unawaited_rpc_from_the_entrypoint(eager):
    resp = await eager.fetch("/from-entry")
    assert resp.status == 200
    stub = eager.env.E.get_by_name("from-entry")
    await wait_until(lambda: stub.log(), what="the entrypoint's unawaited call to arrive")
    assert await stub.log() == ["from the entrypoint"]


async def test_put_entries_takes_options_second(eager):
    # As measured on workerd: put(entries, options) ignores a third argument; a second argument
    # that is not options is refused with Cloudflare's text.
    stub = eager.env.E.get_by_name("entries")
    assert await stub.put_entries({}, {}) == "stored"
    assert await stub.put_entries({"allowUnconfirmed": False}) == "stored"
    assert await stub.put_entries("x") == (
        "put() may only be called with a single key-value pair and optional options as put(key, value, "
        "options) or with multiple key-value pairs and optional options as put(entries, options)")
    assert await stub.stored() == {"e": 1}


async def test_unawaited_block_concurrency_while_runs_and_a_failure_resets_once(eager, caplog):
    stub = eager.env.E.get_by_name("bcw")
    assert await stub.bump() == 1
    assert await stub.bcw_unawaited(False) == "called"
    assert await stub.stored() == {"in_bcw": 1}  # the next event waited for the critical section
    assert await stub.bump() == 2
    with caplog.at_level(logging.WARNING, logger="duro.runtime"):
        assert await stub.bcw_unawaited(True) == "called"
        await wait_until(lambda: stub._act.broken is not None, what="the failed critical section to reset")
    assert len([r for r in caplog.records if "critical section failed" in r.getMessage()]) == 1
    assert await eager.env.E.get_by_name("bcw").bump() == 1  # a new instance
