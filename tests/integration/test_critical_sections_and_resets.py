"""Critical sections and resets: a constructor's critical section, a caller that gives up during one
or during a transaction, the events waiting at a gate when the object resets, an evicted instance,
and concurrent first requests constructing once."""

import asyncio
import pathlib

import pytest

from duro.testing import LocalApp

from ..waiting import wait_until

PROJECT = pathlib.Path(__file__).parent / "projects" / "review"


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


async def test_caller_cancelled_during_transaction_leaves_nothing_open(review):
    stub = review.env.R.get_by_name("txn-cancel")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(stub.slow_txn(0.5), 0.05)
    # The object still takes events and commits their writes.
    assert await asyncio.wait_for(stub.put("after", 2), 2) == 2
    assert await stub.get("after") == 2
    act = review.runtime.activation(review.env.R.unique_key, stub.id)
    await wait_until(lambda: act.out_gate.holds == 0 and act.in_gate.locks == 0 and act.db.in_transaction is False,
                     what="the cancelled transaction to close")


async def test_reset_fails_the_events_waiting_at_the_gate(review):
    from duro.errors import ObjectResetError
    stub = review.env.R.get_by_name("gate-reset")
    await stub.put("kept", 1)
    failing = asyncio.ensure_future(stub.bcw_fail(0.1))
    reached = review.app.module.REACHED
    await wait_until(lambda: ("bcw_fail", "gate-reset") in reached, what="the critical section to start")
    waiters = [asyncio.ensure_future(review.env.R.get_by_name("gate-reset").put("w", i)) for i in range(5)]
    with pytest.raises(RuntimeError, match="critical section failed"):
        await failing
    results = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 5)
    assert all(isinstance(r, ObjectResetError) for r in results), results
    fresh = review.env.R.get_by_name("gate-reset")
    assert await fresh.get("kept") == 1 and await fresh.get("w") is None


async def test_evicted_instance_cannot_touch_storage(review):
    app_module = review.app.module
    stub = review.env.R.get_by_name("evicted")
    assert await stub.untracked_write_later(0.1) == "scheduled"
    act = review.runtime.find(review.env.R.unique_key, str(stub.id))
    assert review.runtime.sweep(now=act.last_used + 10_000) >= 1  # idle: evicted
    assert review.runtime.find(review.env.R.unique_key, str(stub.id)) is None
    fresh = review.env.R.get_by_name("evicted")
    assert await fresh.put("k", 1) == 1  # a new instance is live
    # The stale instance must get an exception, as on Cloudflare, not write beside the new one.
    await wait_until(lambda: app_module.LATE, what="the stale instance's late write")
    assert app_module.LATE == ["ObjectResetError"]
