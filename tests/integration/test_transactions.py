"""storage.transaction() on a real loop and real SQLite files: a closure that awaits another object,
failures that roll back only their own writes, and tasks started inside belonging to the transaction."""

import asyncio

from ..waiting import wait_until


async def test_transaction_closure_awaiting_another_object_finishes(review):
    stub = review.env.R.get_by_name("txn-a")
    assert await asyncio.wait_for(stub.txn_calls_other("txn-b"), 5) == 1
    assert await stub.get("in_txn") == 1
    assert await review.env.R.get_by_name("txn-b").get("from_txn") == 1


async def test_failed_transaction_then_more_transactions(review):
    stub = review.env.R.get_by_name("txn-raise")
    assert await stub.txn_raises() == {"after": 1, "second": 1}


async def test_failed_transaction_does_not_undo_another_events_acknowledged_write(review):
    stub = review.env.R.get_by_name("txn-lost")
    a = asyncio.ensure_future(stub.sleep_then_put("a_key", 0.05))
    reached = review.app.module.REACHED
    await wait_until(lambda: ("sleep_then_put", "txn-lost") in reached, what="a to wait on its timer")
    # a is waiting on its timer, the gate is open: b's transaction starts while a is parked.
    b = asyncio.ensure_future(stub.failing_txn(0.15))
    assert await a == "stored"  # acknowledged ...
    assert await b == "rolled back"
    assert await stub.get("a_key") == 1  # ... so it must be stored


async def test_unawaited_writes_during_another_events_transaction_wait_in_order(review):
    stub = review.env.R.get_by_name("txn-unawaited")
    a = asyncio.ensure_future(stub.sleep_then_put_unawaited("a_key", 0.05))
    reached = review.app.module.REACHED
    await wait_until(lambda: ("sleep_then_put_unawaited", "txn-unawaited") in reached, what="a to wait on its timer")
    b = asyncio.ensure_future(stub.failing_txn(0.15))
    assert await a == 2  # both writes ran after b's transaction, in the order they were made
    assert await b == "rolled back"
    assert await stub.get("a_key") == 2 and await stub.get("txn_key") is None


async def test_sync_write_inside_another_events_failed_transaction_is_never_falsely_acknowledged(review):
    # The sync API cannot wait for the transaction to end; its write lands in the savepoint. When
    # the transaction then fails, the object is reset instead: that event's caller gets an error,
    # never "stored" for a write that was rolled back.
    from duro.errors import ObjectResetError
    stub = review.env.R.get_by_name("txn-sync-lost")
    a = asyncio.ensure_future(stub.sleep_then_sql(0.05))
    reached = review.app.module.REACHED
    await wait_until(lambda: ("sleep_then_sql", "txn-sync-lost") in reached, what="a to wait on its timer")
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
