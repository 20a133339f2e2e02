"""Gates, write coalescing, RPC copying and errors, resets — on a real loop and real SQLite files."""

import asyncio

import pytest

from duro.errors import ObjectResetError, OverloadedError, RemoteError
from duro.testing import HeldBarrier

from ..waiting import wait_until


async def test_concurrent_read_modify_write_loses_nothing(gates):
    stub = gates.env.PROBE.get_by_name("rmw")
    results = await asyncio.gather(*(stub.rmw() for _ in range(100)))
    assert sorted(results) == list(range(1, 101))
    assert await stub.get_n() == 100


async def test_awaiting_non_storage_io_lets_events_interleave(gates):
    # The documented hazard: an await on something that is not storage opens the input gate.
    stub = gates.env.PROBE.get_by_name("interleave")
    results = await asyncio.gather(*(stub.rmw_with_sleep() for _ in range(20)))
    assert len(set(results)) < 20


async def test_rpc_copies_arguments_and_results(gates):
    stub = gates.env.PROBE.get_by_name("rpc")
    value = {"a": [1, 2, (3, 4)], "b": {1, 2}, "c": b"\x00"}
    out = await stub.echo(value)
    assert out == value and out is not value
    assert await stub.sync_method(1) == {"sum": 3, "args": (1, 2)}
    assert await stub.sync_method(1, b=5) == {"sum": 6, "args": (1, 5)}
    with pytest.raises(TypeError, match='"object"'):
        await stub.echo(object())  # refused at the caller, nothing delivered
    with pytest.raises(TypeError, match='"object"'):
        await stub.give_unencodable()


async def test_rpc_reserved_and_missing_methods(gates):
    stub = gates.env.PROBE.get_by_name("names")
    with pytest.raises(TypeError, match=r"^'alarm' is a reserved method and cannot be called over RPC\.$"):
        await stub.alarm()
    with pytest.raises(TypeError, match=r'^The RPC receiver does not implement the method "nope"\.$'):
        await stub.nope()
    with pytest.raises(TypeError, match='does not implement the method "_private"'):
        await stub._private()
    with pytest.raises(TypeError, match='does not implement the method "memory"'):
        await stub.memory()  # instance attributes are not methods


async def test_errors_reach_the_caller_with_type_message_and_flags(gates):
    stub = gates.env.PROBE.get_by_name("errors")
    with pytest.raises(ValueError, match="^bad value here$") as info:
        await stub.fail_builtin()
    assert info.value.remote is True and info.value.retryable is False and info.value.overloaded is False
    # An ordinary exception does not roll back the writes before it, nor reset the object.
    assert await stub.bump_memory() == 1
    assert await stub.echo(1) == 1
    with pytest.raises(gates.app.module.AppError, match="^custom failure$") as info:
        await stub.fail_custom()
    assert info.value.remote is True  # the project's own exception class, rebuilt for the caller
    with pytest.raises(RuntimeError) as info:
        await stub.fail_retryable()
    assert info.value.retryable is True
    assert await stub.bump_memory() == 2  # same instance throughout


async def test_abort_resets_and_poisons_the_stub(gates):
    stub = gates.env.PROBE.get_by_name("abort")
    assert await stub.bump_memory() == 1
    with pytest.raises(ObjectResetError, match="stop now") as info:
        await stub.do_abort()
    assert info.value.durable_object_reset and info.value.remote
    with pytest.raises(ObjectResetError):
        await stub.bump_memory()  # the old stub stays broken
    fresh = gates.env.PROBE.get_by_name("abort")
    assert await fresh.bump_memory() == 1  # new instance: memory lost
    assert await fresh.get_n() is None


async def test_failing_critical_section_resets(gates):
    stub = gates.env.PROBE.get_by_name("bcw")
    await stub.bump_memory()
    with pytest.raises(gates.app.module.AppError, match="inside critical section"):
        await stub.failing_critical()
    assert await gates.env.PROBE.get_by_name("bcw").bump_memory() == 1


async def test_constructor_critical_section_holds_events(gates):
    stub = gates.env.SLOW.get_by_name("s")
    assert await asyncio.gather(*(stub.is_ready() for _ in range(5))) == [True] * 5


async def test_critical_section_blocks_other_events(gates):
    stub = gates.env.PROBE.get_by_name("critical")
    order = []

    async def crit():
        order.append(await stub.critical(0.05))

    async def other():
        reached = gates.app.module.REACHED
        await wait_until(lambda: ("critical", "critical") in reached, what="the critical section to start")
        order.append(await stub.bump_memory())
    await asyncio.gather(crit(), other())
    # bump_memory arrived while the critical section ran; it saw the section's effect.
    assert sorted(order, key=str) == [101, "done"]


async def test_constructor_failure_reaches_caller(gates):
    with pytest.raises(gates.app.module.AppError, match="constructor failed") as info:
        await gates.env.BROKEN.get_by_name("b").anything()
    assert info.value.remote is True


async def test_transactions_roll_back_everything_on_error(gates):
    stub = gates.env.PROBE.get_by_name("txn")
    with pytest.raises(gates.app.module.AppError, match="roll back"):
        await stub.txn_fail()
    assert await stub.txn_ok() == "ok"
    assert await stub.txn_state() == {"t1": None, "t2": 2, "table": 0}


async def test_fetch_through_stub(gates):
    resp = await gates.env.PROBE.get_by_name("f").fetch("http://do/some/path", method="POST")
    assert resp.status == 200 and await resp.text() == "fetched POST /some/path"


async def test_overload_is_refused_with_cloudflare_text(tmp_path):
    from duro.runtime import RuntimeLimits
    from duro.testing import LocalApp
    from tests.integration.conftest import PROJECTS
    async with LocalApp(PROJECTS / "gates", tmp_path / "d", limits=RuntimeLimits(max_queued_events=5)) as app:
        stub = app.env.PROBE.get_by_name("hot")
        results = await asyncio.gather(*(stub.critical(0.02) for _ in range(20)), return_exceptions=True)
        over = [r for r in results if isinstance(r, OverloadedError)]
        assert over and str(over[0]) == "Durable Object is overloaded. Too many requests queued."
        assert over[0].overloaded is True
        assert "done" in results




async def test_overload_by_bytes_and_by_age_is_refused_before_the_event_runs(tmp_path):
    from duro.runtime import RuntimeLimits
    from duro.testing import LocalApp
    from tests.integration.conftest import PROJECTS
    limits = RuntimeLimits(max_queued_bytes=10_000, max_queue_age=0.2)
    async with LocalApp(PROJECTS / "gates", tmp_path / "d", limits=limits) as app:
        stub = app.env.PROBE.get_by_name("bytes")
        slow = asyncio.ensure_future(stub.critical(0.5))  # locks the input gate for 0.5 s
        await wait_until(lambda: stub._act is not None and stub._act.in_gate.locks, what="the gate to lock")
        # 8 KB of arguments queue; 8 KB more would pass 10 KB.
        first = asyncio.ensure_future(stub.echo("x" * 8000))
        await wait_until(lambda: stub._act.waiting == 1, what="the first call to wait at the gate")
        with pytest.raises(OverloadedError, match=r"^Durable Object is overloaded\. Too much data queued\.$") as e:
            await stub.echo("y" * 8000)
        assert e.value.overloaded is True and e.value.remote is False
        # The first waited at the locked gate past max_queue_age: refused, never ran.
        with pytest.raises(OverloadedError, match=r"^Durable Object is overloaded\. Requests queued for too long\.$"):
            await first
        assert await slow == "done"
        before = await stub.get_n()
        # A refused rmw() never writes.
        slow = asyncio.ensure_future(stub.critical(0.5))
        await wait_until(lambda: stub._act.in_gate.locks, what="the gate to lock")
        with pytest.raises(OverloadedError, match="queued for too long"):
            await stub.rmw()
        await slow
        assert await stub.get_n() == before


async def test_response_waits_for_durability(gates):
    barrier = HeldBarrier()
    gates.runtime.barrier = barrier
    stub = gates.env.PROBE.get_by_name("outgate")
    task = asyncio.ensure_future(stub.rmw())
    await wait_until(lambda: barrier.held, what="the write to be submitted for durability")
    for _ in range(20):  # turns of the loop in which an early result would leave
        await asyncio.sleep(0)
    assert not task.done(), "the result left before its write was durable"
    # A read-only call made now also waits: it could have seen the undurable write.
    reader = asyncio.ensure_future(stub.get_n())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not reader.done()
    barrier.release_all()
    assert await task == 1 and await reader == 1


async def test_failed_durability_resets_and_fails_waiting_callers(gates):
    barrier = HeldBarrier()
    gates.runtime.barrier = barrier
    stub = gates.env.PROBE.get_by_name("diskfail")
    task = asyncio.ensure_future(stub.rmw())
    await wait_until(lambda: barrier.held, what="the write to be submitted for durability")
    barrier.held[-1].set_exception(OSError("EIO"))
    with pytest.raises(OSError, match="^EIO$"):
        await task
    assert stub._act.broken is not None


async def test_entrypoint_error_is_a_500_not_a_crash(gates):
    from duro.http import AsgiFront
    front = AsgiFront(gates.app)
    from duro.api import Request
    resp = await front.run_entrypoint(Request("http://x/boom"))
    assert resp.status == 500 and front.errors == 1
    assert (await front.run_entrypoint(Request("http://x/ok"))).status == 200


async def test_idle_objects_are_evicted_and_storage_survives(gates):
    stub = gates.env.PROBE.get_by_name("evict")
    assert await stub.rmw() == 1
    assert await stub.bump_memory() == 1
    runtime = gates.runtime
    import time
    assert runtime.sweep(now=time.monotonic() + runtime.limits.idle_timeout + 1) >= 1
    assert await stub.bump_memory() == 1  # a fresh instance
    assert await stub.get_n() == 1


async def test_objects_call_each_other(gates):
    a = gates.env.PROBE.get_by_name("caller")
    assert await a.call_other("callee") == 1
    assert await gates.env.PROBE.get_by_name("callee").get_n() == 1


async def test_storage_errors_cross_the_stub_with_their_details(gates):
    from duro.errors import SqlError
    ns = gates.env.PROBE
    act = gates.runtime.activation(ns.unique_key, ns.id_from_name("sqlerr"))

    async def event(instance):
        instance.ctx.storage.sql.exec("CREATE TABLE u(id PRIMARY KEY)")
        instance.ctx.storage.sql.exec("INSERT INTO u VALUES (1)")
        instance.ctx.storage.sql.exec("INSERT INTO u VALUES (1)")
    with pytest.raises(SqlError) as info:
        await ns.get_by_name("sqlerr")._deliver(event)
    assert info.value.code == "SQLITE_CONSTRAINT" and info.value.remote is True
    assert info.value.extended == "SQLITE_CONSTRAINT_PRIMARYKEY"


async def test_sync_inside_transaction_returns(gates):
    ns = gates.env.PROBE
    act = gates.runtime.activation(ns.unique_key, ns.id_from_name("syncintxn"))

    async def event(instance):
        async def body(txn):
            await txn.put("a", 1)
            await instance.ctx.storage.sync()
            return "ok"
        return await instance.ctx.storage.transaction(body)
    assert await asyncio.wait_for(act.run(event), 5) == "ok"


async def test_sql_after_unconfirmed_put_still_waits_for_durability(gates):
    barrier = HeldBarrier()
    gates.runtime.barrier = barrier
    ns = gates.env.PROBE
    act = gates.runtime.activation(ns.unique_key, ns.id_from_name("unconfirmed"))

    async def event(instance):
        await instance.ctx.storage.put("a", 1, allow_unconfirmed=True)
        instance.ctx.storage.sql.exec("CREATE TABLE t(x)")
        return "sent"
    task = asyncio.ensure_future(act.run(event))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not task.done()
    barrier.release_all()
    assert await task == "sent"


async def test_unconfirmed_put_alone_does_not_wait(gates):
    barrier = HeldBarrier()
    gates.runtime.barrier = barrier
    ns = gates.env.PROBE
    act = gates.runtime.activation(ns.unique_key, ns.id_from_name("unconfirmed2"))

    async def event(instance):
        await instance.ctx.storage.put("a", 1, allowUnconfirmed=True)
        return "sent"
    assert await asyncio.wait_for(act.run(event), 5) == "sent"
    # The answer left before its write was durable; the write's flush is held (it may be submitted
    # a loop turn after the answer: on 3.12+ wait_for does not run the event in a task of its own).
    for _ in range(500):
        if barrier.held:
            break
        await asyncio.sleep(0.01)
    assert barrier.held
    barrier.release_all()
