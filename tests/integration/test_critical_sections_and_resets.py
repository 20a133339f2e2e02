"""Review findings: each test reproduces a bug that was found in review and fixed."""

import asyncio
import pathlib

import pytest

from duro.testing import LocalApp

PROJECT = pathlib.Path(__file__).parent / "projects" / "review"


@pytest.fixture
async def review(tmp_path):
    async with LocalApp(PROJECT, tmp_path / "data") as app:
        yield app


async def test_transaction_closure_awaiting_another_object_finishes(review):
    stub = review.env.R.get_by_name("txn-a")
    assert await asyncio.wait_for(stub.txn_calls_other("txn-b"), 5) == 1
    assert await stub.get("in_txn") == 1
    assert await review.env.R.get_by_name("txn-b").get("from_txn") == 1


async def test_failed_transaction_then_more_transactions(review):
    stub = review.env.R.get_by_name("txn-raise")
    assert await stub.txn_raises() == {"after": 1, "second": 1}


async def test_exception_after_write_and_call_keeps_write(review):
    stub = review.env.R.get_by_name("exc-a")
    with pytest.raises(ValueError, match="after call"):
        await stub.write_then_call_then_raise("exc-b")
    assert await stub.get("w") == 1


async def test_object_calls_itself(review):
    stub = review.env.R.get_by_name("self")
    assert await asyncio.wait_for(stub.call_self(), 5) == 1


async def test_delete_all_then_write_same_turn(review):
    stub = review.env.R.get_by_name("del")
    assert await stub.delete_all_then_write() == {"b": 2}
    assert await stub.get("b") == 2


async def test_rpc_kwargs_and_defaults(review):
    stub = review.env.R.get_by_name("kw")
    assert await stub.kw(1) == [1, 2, 3]
    assert await stub.kw(1, c=9) == [1, 2, 9]
    assert await stub.kw(a=5, b=6) == [5, 6, 3]


async def test_concurrent_first_requests_construct_once(review):
    stubs = [review.env.R.get_by_name("first") for _ in range(20)]
    await asyncio.gather(*(s.put("k", i) for i, s in enumerate(stubs)))
    act = review.runtime.activation(review.env.R.unique_key, stubs[0].id)
    assert act.constructions == 1


async def test_constructor_bcw_then_raise_does_not_write(tmp_path):
    # The constructor failed: its critical section (still running after the reset) must not
    # write for the dead instance. Checked in the database file itself, after the app stopped.
    import sqlite3
    app = LocalApp(PROJECT, tmp_path / "data")
    async with app:
        stub = app.env.CTOR.get_by_name("c")
        with pytest.raises(RuntimeError, match="constructor failed"):
            await stub.get("from_bcw")
        path = app.runtime.db_path(app.env.CTOR.unique_key, stub.id)
        await asyncio.sleep(0.05)  # the critical section's put runs (and must be refused) meanwhile
        with pytest.raises(RuntimeError, match="constructor failed"):
            await app.env.CTOR.get_by_name("c").get("from_bcw")
        await asyncio.sleep(0.05)
    if path.exists():
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            rows = conn.execute("SELECT key FROM _cf_KV").fetchall() if "_cf_KV" in tables else []
        finally:
            conn.close()
        assert rows == []


async def test_caller_timeout_during_block_concurrency_while_does_not_reset(review):
    # A caller giving up (timeout, client gone) is not an exception inside the critical section:
    # on Cloudflare the callback runs to completion and the object is not reset.
    stub = review.env.R.get_by_name("bcw-cancel")
    first = await stub.instance_number()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(stub.bcw_slow(0.3), 0.05)
    assert await stub.instance_number() == first  # same stub still works, same instance
    assert await stub.get("bcw_done") == 1  # the critical section ran to its end


async def test_close_does_not_wait_forever_for_entrypoint_wait_until(tmp_path):
    app = LocalApp(PROJECT, tmp_path / "data")
    await app.__aenter__()
    assert (await app.fetch("/forever")).status == 200
    # Objects' wait_until work gets a grace period and is then cancelled; the entrypoint's too.
    await asyncio.wait_for(app.__aexit__(None, None, None), 10)


async def test_failed_transaction_does_not_undo_another_events_acknowledged_write(review):
    stub = review.env.R.get_by_name("txn-lost")
    a = asyncio.ensure_future(stub.sleep_then_put("a_key", 0.05))
    await asyncio.sleep(0.01)  # a is waiting on its timer, the gate is open
    b = asyncio.ensure_future(stub.failing_txn(0.15))
    assert await a == "stored"  # acknowledged ...
    assert await b == "rolled back"
    assert await stub.get("a_key") == 1  # ... so it must be stored


async def test_sync_write_inside_another_events_failed_transaction_is_never_falsely_acknowledged(review):
    # The sync API cannot wait for the transaction to end; its write lands in the savepoint. When
    # the transaction then fails, the object is reset instead: that event's caller gets an error,
    # never "stored" for a write that was rolled back.
    from duro.errors import ObjectResetError
    stub = review.env.R.get_by_name("txn-sync-lost")
    a = asyncio.ensure_future(stub.sleep_then_sql(0.05))
    await asyncio.sleep(0.01)
    b = asyncio.ensure_future(review.env.R.get_by_name("txn-sync-lost").failing_txn(0.15))
    results = await asyncio.gather(a, b, return_exceptions=True)
    fresh = review.env.R.get_by_name("txn-sync-lost")
    stored = await fresh.side_rows()
    if results[0] == "stored":
        assert stored == 1
    else:
        assert isinstance(results[0], ObjectResetError) and stored == 0


async def test_tasks_started_inside_a_transaction_belong_to_it(review):
    stub = review.env.R.get_by_name("txn-gather")
    assert await stub.txn_with_gather() == [1, 2]


async def test_caller_cancelled_during_transaction_leaves_nothing_open(review):
    stub = review.env.R.get_by_name("txn-cancel")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(stub.slow_txn(0.5), 0.05)
    # The object still takes events and commits their writes.
    assert await asyncio.wait_for(stub.put("after", 2), 2) == 2
    assert await stub.get("after") == 2
    act = review.runtime.activation(review.env.R.unique_key, stub.id)
    await asyncio.sleep(0.01)
    assert act.out_gate.holds == 0 and act.in_gate.locks == 0 and act.db.in_transaction is False


async def test_reset_fails_the_events_waiting_at_the_gate(review):
    from duro.errors import ObjectResetError
    stub = review.env.R.get_by_name("gate-reset")
    await stub.put("kept", 1)
    failing = asyncio.ensure_future(stub.bcw_fail(0.1))
    await asyncio.sleep(0.02)
    waiters = [asyncio.ensure_future(review.env.R.get_by_name("gate-reset").put("w", i)) for i in range(5)]
    with pytest.raises(RuntimeError, match="critical section failed"):
        await failing
    results = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 5)
    assert all(isinstance(r, ObjectResetError) for r in results), results
    fresh = review.env.R.get_by_name("gate-reset")
    assert await fresh.get("kept") == 1 and await fresh.get("w") is None


async def test_put_without_a_value_is_refused(review):
    stub = review.env.R.get_by_name("put-undefined")
    assert await stub.put_without_value() == "put() called with undefined value."
    assert await stub.get("forgot") is None
    assert await stub.put("none", None) is None  # an explicit None (JavaScript null) is a value


async def test_evicted_instance_cannot_touch_storage(review):
    app_module = review.app.module
    stub = review.env.R.get_by_name("evicted")
    assert await stub.untracked_write_later(0.1) == "scheduled"
    act = review.runtime.find(review.env.R.unique_key, str(stub.id))
    assert review.runtime.sweep(now=act.last_used + 10_000) >= 1  # idle: evicted
    assert review.runtime.find(review.env.R.unique_key, str(stub.id)) is None
    fresh = review.env.R.get_by_name("evicted")
    assert await fresh.put("k", 1) == 1  # a new instance is live
    await asyncio.sleep(0.2)
    # The stale instance must get an exception, as on Cloudflare, not write beside the new one.
    assert app_module.LATE and app_module.LATE[0] != "stored"


async def test_workers_wait_until_takes_any_awaitable(review):
    stub = review.env.R.get_by_name("module-wait-until")
    assert await stub.module_wait_until() == "scheduled"
    await asyncio.sleep(0.1)
    assert await stub.get("from_coroutine") == 1 and await stub.get("from_task") == 1
